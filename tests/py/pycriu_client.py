"""A pycriu client written against CRIU's pycriu interface: it checks, gets the error a dump of
a missing process earns, then dumps PID into DIR and (after a line on stdin: the test reaps
the dumped process) restores it. One line per step on stdout.

usage: pycriu_client.py CRIU DIR PID
"""
import os
import sys

import pycriu

criu_bin, img, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = pycriu.criu()
c.use_binary(criu_bin)
c.check()
print("check ok", flush=True)

dirfd = os.open(img, os.O_DIRECTORY)
c.opts.images_dir_fd = dirfd
c.opts.log_file = "dump.log"
c.opts.log_level = 4
c.opts.pid = 2**31 - 2
try:
    c.dump()
    print("dump of a missing process succeeded", flush=True)
except pycriu.CRIUExceptionExternal as e:
    print("missing process: %s" % pycriu.rpc.criu_req_type.Name(e.typ), flush=True)

c.opts.pid = pid
resp = c.dump()
print("dumped restored=%s" % resp.restored, flush=True)
sys.stdin.readline()

c.opts.ClearField("pid")
c.opts.log_file = "restore.log"
resp = c.restore()
print("restored %d" % resp.pid, flush=True)
