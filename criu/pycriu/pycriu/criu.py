"""The criu client: how to reach criu (``use_binary``, ``use_sk``, ``use_fd``), the options of
the next request (``opts``, an ``rpc.criu_opts``), and one method per request."""

import errno
import os
import socket
import struct

from . import rpc_pb2 as rpc

CR_DEFAULT_SERVICE_ADDRESS = "./criu_service.socket"


class _Swrk:
    """criu started as ``BINARY swrk FD`` on one end of a socketpair, for one request."""

    def __init__(self, binary):
        self.binary = binary
        self.pid = None
        self.sk = None
        self.detached = False

    def connect(self, detach):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.set_inheritable(theirs.fileno(), True)
        self.detached = detach
        child = os.fork()
        if child == 0:
            try:
                ours.close()
                if detach:
                    # A self-dump: criu must outlive this process.
                    if os.fork() != 0:
                        os._exit(0)
                    os.setsid()
                theirs.send(struct.pack('i', os.getpid()))
                os.execvp(self.binary, [self.binary, 'swrk', str(theirs.fileno())])
            finally:
                os._exit(1)
        theirs.close()
        if detach:
            os.waitpid(child, 0)
        got = ours.recv(4)
        if len(got) != 4:
            ours.close()
            raise OSError(errno.ECOMM, 'criu swrk did not start: %s' % self.binary)
        self.pid = struct.unpack('i', got)[0]
        self.sk = ours
        return ours

    def disconnect(self):
        self.sk.close()
        if not self.detached and self.pid:
            os.waitpid(self.pid, 0)


class _Service:
    """A connection to ``criu service`` at a socket path."""

    def __init__(self, path):
        self.path = path
        self.sk = None

    def connect(self, detach):
        self.sk = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sk.connect(self.path)
        return self.sk

    def disconnect(self):
        self.sk.close()


class _Fd:
    """A socket the caller connected to criu."""

    def __init__(self, fd):
        self.fd = fd
        self.sk = None

    def connect(self, detach):
        self.sk = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=os.dup(self.fd))
        return self.sk

    def disconnect(self):
        self.sk.close()


class CRIUException(Exception):
    """A request that failed; ``typ`` is the request type."""

    typ = None
    _str = None

    def __str__(self):
        return self._str


class CRIUExceptionInternal(CRIUException):
    """The conversation with criu failed (criu not started, socket closed, bad answer)."""

    def __init__(self, typ, s):
        self.typ = typ
        self._str = "%s failed with internal error: %s" % (rpc.criu_req_type.Name(typ), s)


class CRIUExceptionExternal(CRIUException):
    """criu answered that the request failed; ``errno`` is its ``cr_errno``."""

    def __init__(self, req_typ, resp_typ, err):
        self.typ = req_typ
        self.resp_typ = resp_typ
        self.errno = err
        what = {errno.EBADRQC: "Bad options"}.get(err, "Unknown")
        if req_typ == rpc.DUMP and err == errno.ESRCH:
            what = "No process with such pid"
        elif req_typ == rpc.RESTORE and err == errno.EEXIST:
            what = "Process with requested pid already exists"
        s = "%s failed: " % rpc.criu_req_type.Name(req_typ)
        if req_typ != resp_typ:
            s += "Unexpected response type %d: " % resp_typ
        self._str = s + "Error(%d): %s" % (err, what)


class criu:
    """A criu client. By default each request starts ``criu swrk`` from ``$PATH``."""

    def __init__(self):
        self.use_binary('criu')
        self.opts = rpc.criu_opts(images_dir_fd=-1)
        self.sk = None

    def use_sk(self, sk_name=CR_DEFAULT_SERVICE_ADDRESS):
        """Talk to ``criu service`` at the socket ``sk_name``."""
        self._comm = _Service(sk_name)

    def use_fd(self, fd):
        """Talk to criu over the connected socket ``fd``."""
        self._comm = _Fd(fd)

    def use_binary(self, bin_name):
        """Start ``bin_name swrk FD`` for each request."""
        self._comm = _Swrk(bin_name)

    def _send_req_and_recv_resp(self, req):
        detach = req.type == rpc.DUMP and not req.opts.HasField('pid')
        try:
            s = self.sk or self._comm.connect(detach)
            if req.keep_open:
                self.sk = s
            s.send(req.SerializeToString())
            size = len(s.recv(1, socket.MSG_PEEK | socket.MSG_TRUNC))
            buf = s.recv(size)
            if not req.keep_open:
                self._comm.disconnect()
                self.sk = None
            if not buf:
                raise OSError(errno.ECOMM, 'criu closed the connection')
            resp = rpc.criu_resp()
            resp.ParseFromString(buf)
        except Exception as e:
            raise CRIUExceptionInternal(req.type, str(e))
        return resp

    def _request(self, typ, **fields):
        req = rpc.criu_req(type=typ, **fields)
        if typ != rpc.WAIT_PID:
            req.opts.MergeFrom(self.opts)
        resp = self._send_req_and_recv_resp(req)
        if not resp.success:
            raise CRIUExceptionExternal(req.type, resp.type, resp.cr_errno)
        return resp

    def check(self):
        """Raises unless the kernel has what criu needs."""
        self._request(rpc.CHECK)

    def dump(self):
        """Dumps the tree of ``opts.pid``; returns the ``criu_dump_resp``."""
        return self._request(rpc.DUMP).dump

    def pre_dump(self):
        """Pre-dumps the tree of ``opts.pid``; returns the ``criu_dump_resp``."""
        return self._request(rpc.PRE_DUMP).dump

    def restore(self):
        """Restores the tree; returns the ``criu_restore_resp`` (``.pid``)."""
        return self._request(rpc.RESTORE).restore

    def page_server_chld(self):
        """Starts a page server as criu's child; returns the ``criu_page_server_info``."""
        return self._request(rpc.PAGE_SERVER_CHLD, keep_open=True).ps

    def wait_pid(self, pid):
        """Waits for ``pid`` (a child of criu's); returns its wait status."""
        return self._request(rpc.WAIT_PID, pid=pid).status
