"""The pycriu calls pycriu_client.py does not make, written against CRIU's pycriu interface.
One line per step on stdout for the test to check.

  pycriu_more.py sk ADDR DIR PID     use_sk: dumps PID (left running) into DIR through the
                                     `criu service` at ADDR
  pycriu_more.py fd CRIU DIR PID     use_fd: starts `CRIU swrk FD` itself and pre-dumps PID
                                     into DIR over that socket (pre_dump)
  pycriu_more.py ps CRIU DIR PID     page_server_chld into DIR/ps, a dump of PID (left
                                     running) into DIR/img whose pages go to it, then wait_pid
                                     for the page server
"""

import os
import socket
import subprocess
import sys

import pycriu


def dir_fd(path):
    return os.open(path, os.O_DIRECTORY)


def main():
    mode, where, base, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = pycriu.criu()
    if mode == "sk":
        c.use_sk(where)
        c.opts.pid = pid
        c.opts.images_dir_fd = dir_fd(base)
        c.opts.leave_running = True
        c.opts.log_file = "sk-dump.log"
        c.check()
        print("sk check ok")
        r = c.dump()
        print("sk dumped restored=%s" % r.restored)
    elif mode == "fd":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        criu = subprocess.Popen([where, "swrk", str(theirs.fileno())], pass_fds=[theirs.fileno()])
        theirs.close()
        c.use_fd(ours.fileno())
        c.opts.pid = pid
        c.opts.images_dir_fd = dir_fd(base)
        c.opts.log_file = "pre-dump.log"
        c.pre_dump()
        print("fd pre_dump ok")
        ours.close()
        print("criu exited %d" % criu.wait())
    elif mode == "ps":
        c.use_binary(where)
        c.opts.images_dir_fd = dir_fd(os.path.join(base, "ps"))
        c.opts.log_file = "ps.log"
        c.opts.ps.address = "127.0.0.1"
        c.opts.ps.port = 0
        ps = c.page_server_chld()
        print("page server pid %d port %d" % (ps.pid, ps.port))
        d = pycriu.criu()
        d.use_binary(where)
        d.opts.pid = pid
        d.opts.images_dir_fd = dir_fd(os.path.join(base, "img"))
        d.opts.leave_running = True
        d.opts.log_file = "dump.log"
        d.opts.ps.address = "127.0.0.1"
        d.opts.ps.port = ps.port
        d.dump()
        print("dumped to the page server")
        status = c.wait_pid(ps.pid)
        print("page server exited %s %d" % (os.WIFEXITED(status), os.WEXITSTATUS(status)))
    else:
        sys.exit(2)


if __name__ == "__main__":
    main()
