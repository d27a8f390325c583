#!/usr/bin/env python3
"""A B A B whole-command timing of `criu dump` (kill) and `criu restore -d` of a 50-process tree.

usage: ab_tree.py ROUNDS SLEEPER_POOL_BIN A_CRIU B_CRIU [N]
Runs under PR_SET_CHILD_SUBREAPER and kills + reaps every restored task. Prints medians of wall
time and of the criu process's CPU time (user+sys from wait4), and B/A ratios.
AB_V4=1 keeps -v4 logs in /dev/shm/ab-tree-logs/{A,B}-{dump,restore}-ROUND.log.
"""
import ctypes, os, resource, shutil, signal, statistics, subprocess, sys, time

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

rounds = int(sys.argv[1])
victim = sys.argv[2]
bins = {"A": sys.argv[3], "B": sys.argv[4]}
n = int(sys.argv[5]) if len(sys.argv) > 5 else 50
work = "/dev/shm/ab-tree"
logs = "/dev/shm/ab-tree-logs"
v4 = bool(os.environ.get("AB_V4"))
if v4:
    os.makedirs(logs, exist_ok=True)


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_file(p, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            s = open(p).read()
            if s.startswith("ready"):
                return [int(x) for x in s.split()[1:]]
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise SystemExit("victim not ready")


def run(cmd):
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = (time.perf_counter() - t) * 1000
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read()
    c = (ru.ru_utime + ru.ru_stime) * 1000
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed: {err.decode()[-800:]}")
    return dt, c


res = {k: {w: [] for w in ("dump", "restore", "dump-cpu", "restore-cpu")} for k in bins}
for i in range(rounds):
    for k in ("A", "B") if i % 2 == 0 else ("B", "A"):
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work + "/img")
        ready = work + "/ready"
        v = subprocess.Popen([victim, "tree", str(n), ready], stdin=subprocess.DEVNULL)
        pids = wait_file(ready)
        time.sleep(0.05)
        vv = ["-v4"] if v4 else []
        d, dc = run([bins[k], "dump", "-t", str(pids[0]), "-D", work + "/img", "-o", "d.log"] + vv)
        v.wait()
        time.sleep(0.02)
        reap_all()
        r, rc = run([bins[k], "restore", "-D", work + "/img", "-d", "-o", "r.log"] + vv)
        res[k]["dump"].append(d)
        res[k]["restore"].append(r)
        res[k]["dump-cpu"].append(dc)
        res[k]["restore-cpu"].append(rc)
        if v4:
            shutil.copy(work + "/img/d.log", f"{logs}/{k}-dump-{i}.log")
            shutil.copy(work + "/img/r.log", f"{logs}/{k}-restore-{i}.log")
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
        reap_all()
        time.sleep(0.02)
        reap_all()
shutil.rmtree(work, ignore_errors=True)
print(f"load {os.getloadavg()}")
for w in ("dump", "restore", "dump-cpu", "restore-cpu"):
    a = statistics.median(res["A"][w])
    b = statistics.median(res["B"][w])
    print(f"{w:12} A {a:8.2f} ms  B {b:8.2f} ms  B/A {b / a:.3f}  (n={rounds}; A {min(res['A'][w]):.1f}-{max(res['A'][w]):.1f}, B {min(res['B'][w]):.1f}-{max(res['B'][w]):.1f})")
