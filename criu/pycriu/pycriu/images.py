"""CRIU images as Python dicts, with the interface of CRIU's ``pycriu.images``.

``load(f)``/``loads(s)`` read a binary image (a file object opened ``'rb'``, or bytes) into
the dict crit prints (``{'magic': 'PSTREE', 'entries': [...]}``); ``dump(img, f)``/
``dumps(img)`` write such a dict back as the binary image; ``info(f)`` gives the magic and the
entry count. The work is done by ``pycriu._images``, a native module built from the same Rust
image crate as our crit, so the dicts are exactly crit's documents.

    import pycriu
    with open('/tmp/img/pstree.img', 'rb') as f:
        tree = pycriu.images.load(f)
    print(tree['entries'][0]['pid'])
"""

import json

try:
    from . import _images
except ImportError as e:  # the native module is not built: RPC still works, images do not
    _images = None
    _why = e


class MagicException(Exception):
    """The data is no CRIU image (or one of a kind not known), as in CRIU's pycriu."""

    def __init__(self, magic):
        Exception.__init__(self, magic)
        self.magic = magic


def _native():
    if _images is None:
        raise ImportError("pycriu.images needs the native module pycriu._images "
                          "(pip install the package, or build it with maturin): %s" % _why)
    return _images


def _wrap(call, *args):
    try:
        return call(*args)
    except ValueError as e:
        if 'magic' in str(e):
            raise MagicException(str(e))
        raise


def loads(s, pretty=False, nopl=False):
    """The image in bytes ``s`` as a dict."""
    return json.loads(_wrap(_native().decode, bytes(s), pretty, nopl))


def load(f, pretty=False, nopl=False):
    """The image read from the binary file object ``f`` as a dict."""
    return loads(f.read(), pretty, nopl)


def info(f):
    """``{'magic': ..., 'count': ...}`` of the image in file object ``f``."""
    return json.loads(_wrap(_native().info, f.read()))


def dumps(img):
    """The dict ``img`` as the binary image (bytes)."""
    return _wrap(_native().encode, json.dumps(img))


def dump(img, f):
    """Writes the dict ``img`` as the binary image into file object ``f``."""
    f.write(dumps(img))
