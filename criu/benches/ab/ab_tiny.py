#!/usr/bin/env python3
"""A B A B whole-command timing of `criu dump` (kill) and `criu restore -d` of a tiny counter.

usage: ab_tiny.py ROUNDS COUNTER_VICTIM A_CRIU B_CRIU  (a binary may be PATH@K=V,K2=V2: run with that environment)
AB_V4=1 also prints the time the -v4 logs account for (the engine), apart from start-up and exit.
Runs under PR_SET_CHILD_SUBREAPER and reaps every restored task. Prints medians and ratios.
"""
import ctypes, os, resource, shutil, signal, statistics, subprocess, sys, time

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

rounds = int(sys.argv[1])
victim = sys.argv[2]
bins = {"A": sys.argv[3], "B": sys.argv[4]}
work = "/dev/shm/ab-tiny"


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_file(p, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            s = open(p).read()
            if s.startswith("ready"):
                return int(s.split()[1])
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise SystemExit("victim not ready")


cpu = {}


def spec(b):
    path, _, env = b.partition("@")
    e = dict(os.environ)
    for kv in filter(None, env.split(",")):
        k, _, v = kv.partition("=")
        e[k] = v
    return path, e


def run(cmd, env=None):
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = (time.perf_counter() - t) * 1000
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c = (ru2.ru_utime + ru2.ru_stime - ru.ru_utime - ru.ru_stime) * 1000
    cpu.setdefault((cmd[0] + str(sorted((env or {}).items())), cmd[1]), []).append(c)
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed: {r.stderr.decode()[-500:]}")
    return dt


res = {k: {"dump": [], "restore": []} for k in bins}
for i in range(rounds):
    for k in ("A", "B") if i % 2 == 0 else ("B", "A"):
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work + "/img")
        out, ready = work + "/out", work + "/ready"
        v = subprocess.Popen([victim, out, ready], stdin=subprocess.DEVNULL)
        pid = wait_file(ready)
        time.sleep(0.02)
        vv = ["-v4"] if os.environ.get("AB_V4") else []
        path, env = spec(bins[k])
        res[k]["dump"].append(run([path, "dump", "-t", str(pid), "-D", work + "/img", "-o", "d.log"] + vv, env))
        v.wait()
        res[k]["restore"].append(run([path, "restore", "-D", work + "/img", "-d", "-o", "r.log"] + vv, env))
        if vv:
            for w, f in (("dump", "d.log"), ("restore", "r.log")):
                last = [l for l in open(work + "/img/" + f) if l.startswith("(")][-1]
                res[k].setdefault(w + "-logged", []).append(float(last[1:10]) * 1000)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)
        reap_all()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        reap_all()
shutil.rmtree(work, ignore_errors=True)
for w in ("dump", "restore") + (("dump-logged", "restore-logged") if os.environ.get("AB_V4") else ()):
    a = statistics.median(res["A"][w])
    b = statistics.median(res["B"][w])
    print(f"{w:8} A {a:7.3f} ms  B {b:7.3f} ms  B/A {b / a:.3f}  (n={rounds})")
    ka = [k for k in cpu if k[1] == w and k[0].startswith(spec(bins["A"])[0] + str(sorted(spec(bins["A"])[1].items())))]
    kb = [k for k in cpu if k[1] == w and k[0].startswith(spec(bins["B"])[0] + str(sorted(spec(bins["B"])[1].items())))]
    if not ka or not kb:
        continue
    ca = statistics.median(cpu[ka[0]])
    cb = statistics.median(cpu[kb[0]])
    print(f"{w:8} cpu A {ca:7.3f} ms  B {cb:7.3f} ms  B/A {cb / ca:.3f}")
