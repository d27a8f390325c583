"""pycriu with its native image module: dumps PID into DIR over RPC, reads the images back with
pycriu.images (the task's pid in pstree.img, its command name in core-PID.img, every image
re-encoded to the same bytes), refuses bytes that are no image, then (after a line on stdin: the
test reaps the dumped process) restores it. One line per step on stdout.

usage: pycriu_images_client.py CRIU DIR PID
"""
import os
import sys

import pycriu

criu_bin, img, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("native %s" % pycriu.images._images.__file__.endswith(".so"), flush=True)
c = pycriu.criu()
c.use_binary(criu_bin)
dirfd = os.open(img, os.O_DIRECTORY)
c.opts.images_dir_fd = dirfd
c.opts.log_file = "dump.log"
c.opts.log_level = 4
c.opts.pid = pid
c.dump()
print("dumped", flush=True)

with open(os.path.join(img, "pstree.img"), "rb") as f:
    tree = pycriu.images.load(f)
print("pstree %s pid %d" % (tree["magic"], tree["entries"][0]["pid"]), flush=True)
with open(os.path.join(img, "core-%d.img" % pid), "rb") as f:
    core = pycriu.images.load(f)
print("comm %s" % core["entries"][0]["tc"]["comm"], flush=True)
with open(os.path.join(img, "inventory.img"), "rb") as f:
    print("inventory count %d" % pycriu.images.info(f)["count"], flush=True)

same = 0
for name in sorted(os.listdir(img)):
    if not name.endswith(".img") or name.startswith("pages-"):
        continue
    with open(os.path.join(img, name), "rb") as f:
        raw = f.read()
    doc = pycriu.images.loads(raw)
    if pycriu.images.dumps(doc) != raw:
        print("re-encoding %s changed it" % name, flush=True)
        sys.exit(1)
    same += 1
print("re-encoded %d images" % same, flush=True)

try:
    pycriu.images.loads(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    print("garbage decoded", flush=True)
except pycriu.images.MagicException:
    print("garbage refused", flush=True)

sys.stdin.readline()
c.opts.ClearField("pid")
c.opts.log_file = "restore.log"
resp = c.restore()
print("restored %d" % resp.pid, flush=True)
