"""pycriu: drive criu from Python over its RPC protocol, with the interface of CRIU's pycriu.

``pycriu.criu`` is the client class, ``pycriu.rpc`` the protocol's messages, ``pycriu.images``
reads and writes image files as crit's dicts (on the native module ``pycriu._images``).

    import pycriu
    c = pycriu.criu()
    c.use_binary('/path/to/criu')
    c.opts.pid = pid
    c.opts.images_dir_fd = os.open('/tmp/img', os.O_DIRECTORY)
    c.dump()
"""

from . import images
from . import rpc_pb2 as rpc
from .criu import (CRIUException, CRIUExceptionExternal, CRIUExceptionInternal, criu)

__all__ = ['images', 'rpc', 'criu', 'CRIUException', 'CRIUExceptionInternal', 'CRIUExceptionExternal']
