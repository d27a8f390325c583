//! C programs written the way CRIU's compel test programs (compel/test/infect, rsys, fdspy) are
//! written, against CRIU's header names and API, built by Makefiles that only know
//! `COMPEL=<path>` (`compel includes/cflags/ldflags/plugins/--static libs/hgen`), run against a
//! live C victim that must carry on afterwards. The programs are our own; only the API they use
//! is CRIU's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::c_host::{compel_with_libcompel, run_ok};
use compel_criu_tests::{Exit, Victim, become_subreaper, test_lock, wait_state};

const T: Duration = Duration::from_secs(10);

/// A victim that answers every stdin line with its session id, and lets a parasite write to
/// its stdout (unbuffered, so lines stay in order).
const VICTIM: &str = r#"#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
	char line[256];

	setvbuf(stdout, NULL, _IONBF, 0);
	printf("ready %d\n", getpid());
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		printf("echo %s sid %d\n", line, (int)getsid(0));
	}
	return 0;
}
"#;

/// The Makefile rules CRIU's compel/test/*/Makefile use, COMPEL= being the only knob.
const MAKEFILE: &str = "CC\t:= gcc
CFLAGS\t?= -O2 -g -Wall -Werror
COMPEL\t:= compel

all: spy

spy: spy.c parasite.h
\t$(CC) $(CFLAGS) $(shell $(COMPEL) includes) -o $@ $< $(shell $(COMPEL) --static libs)

parasite.h: parasite.po
\t$(COMPEL) hgen -o $@ -f $<

parasite.po: parasite.o
\tld $(shell $(COMPEL) ldflags) -o $@ $^ $(shell $(COMPEL) plugins)

parasite.o: parasite.c
\t$(CC) $(CFLAGS) -c $(shell $(COMPEL) cflags) -o $@ $^
";

/// A host without a parasite (CRIU's rsys): only includes and libs.
const MAKEFILE_NO_PARASITE: &str = "CC\t:= gcc
CFLAGS\t?= -O2 -g -Wall -Werror
COMPEL\t:= compel

spy: spy.c
\t$(CC) $(CFLAGS) $(shell $(COMPEL) includes) -o $@ $^ $(shell $(COMPEL) --static libs)
";

/// A counting parasite: the std plugin's entry points, user commands, sys_* and std_printf
/// into the victim's stdout, print_on_level to the host's log.
const INFECT_PARASITE: &str = r#"#include <errno.h>

#include <compel/plugins/std.h>
#include <infect-rpc.h>

int parasite_trap_cmd(int cmd, void *args)
{
	return 0;
}

void parasite_cleanup(void)
{
}

#define CMD_INC PARASITE_USER_CMDS
#define CMD_DEC (PARASITE_USER_CMDS + 1)
#define CMD_FAIL (PARASITE_USER_CMDS + 2)

int parasite_daemon_cmd(int cmd, void *args)
{
	int *v = args;

	switch (cmd) {
	case CMD_INC:
		*v += 1;
		break;
	case CMD_DEC:
		*v -= 1;
		break;
	case CMD_FAIL:
		return 1;
	default:
		return -EINVAL;
	}
	std_printf("parasite %d in %ld\n", *v, sys_getpid());
	print_on_level(COMPEL_LOG_INFO, "counted to %d\n", *v);
	return 0;
}
"#;

/// Its host: two whole infection cycles from one process.
const INFECT_SPY: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <compel/log.h>
#include <compel/infect-rpc.h>

#include "parasite.h"

#define CMD_INC PARASITE_USER_CMDS
#define CMD_DEC (PARASITE_USER_CMDS + 1)
#define CMD_FAIL (PARASITE_USER_CMDS + 2)

static int counted;

static void log_cb(unsigned int lvl, const char *fmt, va_list ap)
{
	char buf[512];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (strstr(buf, "counted to"))
		counted++;
}

#define die(msg)                              \
	do {                                  \
		fprintf(stderr, "%s\n", msg); \
		return -1;                    \
	} while (0)

static int infect_once(int pid)
{
	struct parasite_ctl *ctl;
	struct infect_ctx *ictx;
	int state, *arg;

	state = compel_stop_task(pid);
	if (state < 0)
		die("stop");
	ctl = compel_prepare(pid);
	if (!ctl)
		die("prepare");
	ictx = compel_infect_ctx(ctl);
	ictx->log_fd = STDERR_FILENO;
	parasite_setup_c_header(ctl);
	if (compel_infect(ctl, 1, sizeof(int)))
		die("infect");
	arg = compel_parasite_args(ctl, int);
	*arg = 137;
	if (compel_rpc_call_sync(CMD_INC, ctl))
		die("inc");
	printf("inc %d\n", *arg);
	*arg = 404;
	if (compel_rpc_call_sync(CMD_DEC, ctl))
		die("dec");
	printf("dec %d\n", *arg);
	printf("fail %s\n", compel_rpc_call_sync(CMD_FAIL, ctl) ? "reported" : "missed");
	if (compel_cure(ctl))
		die("cure");
	if (compel_resume_task(pid, state, state))
		die("resume");
	return 0;
}

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]);

	compel_log_init(log_cb, COMPEL_LOG_DEBUG);
	if (infect_once(pid) || infect_once(pid))
		return 1;
	printf("state %d log %d\n", compel_stop_task(pid), counted);
	return 0;
}
"#;

/// Remote syscalls without a parasite.
const RSYS_SPY: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

#include <compel/log.h>
#include <compel/infect.h>

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), state;
	struct parasite_ctl *ctl;
	long ret = -1000;

	state = compel_stop_task(pid);
	if (state < 0)
		return 1;
	ctl = compel_prepare(pid);
	if (!ctl)
		return 2;
	if (compel_syscall(ctl, __NR_getpid, &ret, 0, 0, 0, 0, 0, 0) < 0)
		return 3;
	printf("getpid %ld\n", ret);
	if (compel_syscall(ctl, __NR_setsid, &ret, 0, 0, 0, 0, 0, 0) < 0)
		return 4;
	printf("setsid %ld\n", ret);
	if (compel_cure(ctl) || compel_resume_task(pid, state, state))
		return 5;
	return 0;
}
"#;

/// A parasite that hands one of the victim's fds to the host (the fds plugin).
const FDSPY_PARASITE: &str = r#"#include <compel/infect-rpc.h>
#include <compel/plugins/plugin-fds.h>

int parasite_trap_cmd(int cmd, void *args)
{
	return 0;
}

void parasite_cleanup(void)
{
}

int parasite_daemon_cmd(int cmd, void *args)
{
	if (cmd == PARASITE_USER_CMDS)
		return fds_send_fd(*(int *)args) < 0;
	return 0;
}
"#;

const FDSPY_SPY: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <compel/log.h>
#include <compel/infect-rpc.h>
#include <compel/infect-util.h>

#include "parasite.h"

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), state, fd = -1;
	struct parasite_ctl *ctl;
	struct stat a, b;
	char path[64];
	const char *msg = "stolen fd works\n";

	state = compel_stop_task(pid);
	ctl = compel_prepare(pid);
	if (state < 0 || !ctl)
		return 1;
	parasite_setup_c_header(ctl);
	if (compel_infect(ctl, 1, sizeof(int)))
		return 2;
	if (fstat(compel_rpc_sock(ctl), &a) || !S_ISSOCK(a.st_mode))
		return 9;
	*compel_parasite_args(ctl, int) = 1;
	if (compel_rpc_call(PARASITE_USER_CMDS, ctl))
		return 3;
	if (compel_util_recv_fd(ctl, &fd))
		return 4;
	if (compel_rpc_sync(PARASITE_USER_CMDS, ctl))
		return 5;
	if (compel_cure(ctl) || compel_resume_task(pid, state, state))
		return 6;
	snprintf(path, sizeof(path), "/proc/%d/fd/1", pid);
	if (fstat(fd, &a) || stat(path, &b))
		return 7;
	printf("same %d\n", a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	if (write(fd, msg, strlen(msg)) != (ssize_t)strlen(msg))
		return 8;
	return 0;
}
"#;

/// A victim with a second thread that sleeps in pause(); prints both ids. Each thread blocks
/// a different signal.
const VICTIM_THREADS: &str = r#"#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

static int fds[2];

static void *sleeper(void *arg)
{
	int tid = (int)syscall(SYS_gettid);
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (write(fds[1], &tid, sizeof(tid)) != sizeof(tid))
		return NULL;
	for (;;)
		pause();
	return arg;
}

int main(void)
{
	char line[256];
	pthread_t t;
	int tid;

	setvbuf(stdout, NULL, _IONBF, 0);
	sigset_t set;

	if (pipe(fds) || pthread_create(&t, NULL, sleeper, NULL) ||
	    read(fds[0], &tid, sizeof(tid)) != sizeof(tid))
		return 1;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	printf("ready %d %d\n", getpid(), tid);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		printf("echo %s sid %d\n", line, (int)getsid(0));
	}
	return 0;
}
"#;

/// A parasite that says which thread runs a command, as daemon or trap command.
const THREADS_PARASITE: &str = r#"#include <compel/plugins/std.h>
#include <infect-rpc.h>

struct where {
	long tid;
	long trap;
};

int parasite_trap_cmd(int cmd, void *args)
{
	struct where *w = args;

	w->tid = sys_gettid();
	w->trap = cmd;
	return 0;
}

void parasite_cleanup(void)
{
}

int parasite_daemon_cmd(int cmd, void *args)
{
	struct where *w = args;

	w->tid = sys_gettid();
	w->trap = 0;
	return 0;
}
"#;

const THREADS_SPY: &str = r#"#include <stdio.h>
#include <stdlib.h>

#include <compel/infect.h>
#include <compel/infect-rpc.h>

#include "parasite.h"

struct where {
	long tid;
	long trap;
};

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), tid = atoi(argv[2]), state;
	struct parasite_thread_ctl *tctl;
	struct parasite_ctl *ctl;
	struct where *w;

	state = compel_stop_task(pid);
	ctl = compel_prepare(pid);
	if (state < 0 || !ctl)
		return 1;
	parasite_setup_c_header(ctl);
	if (compel_infect(ctl, 2, sizeof(*w)))
		return 2;
	w = compel_parasite_args(ctl, struct where);
	if (compel_rpc_call_sync(PARASITE_USER_CMDS, ctl))
		return 3;
	printf("daemon %ld %ld\n", w->tid, w->trap);
	tctl = compel_prepare_thread(ctl, tid);
	if (!tctl || compel_run_in_thread(tctl, PARASITE_USER_CMDS + 7))
		return 4;
	printf("trap %ld %ld\n", w->tid, w->trap);
	printf("masks %lx %lx\n", compel_task_sigmask(ctl)->sig[0], compel_thread_sigmask(tctl)->sig[0]);
	compel_release_thread(tctl);
	if (compel_cure(ctl) || compel_resume_task(pid, state, state))
		return 5;
	return 0;
}
"#;

/// A parasite that reports where its stack is (CRIU's compel/test/stack checks the same).
const STACK_PARASITE: &str = r#"#include <compel/plugins/std.h>
#include <infect-rpc.h>

int parasite_trap_cmd(int cmd, void *args)
{
	return 0;
}

void parasite_cleanup(void)
{
}

int parasite_daemon_cmd(int cmd, void *args)
{
	volatile char local[64];

	local[0] = (char)cmd;
	*(unsigned long *)args = (unsigned long)&local[0];
	return 0;
}
"#;

/// Its host: the stack lies in the parasite's own mapping (below compel_get_stack()'s start,
/// where it grows down from), not in the task's [stack].
const STACK_SPY: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <compel/infect.h>
#include <compel/infect-rpc.h>

#include "parasite.h"

static int in_mapping(int pid, unsigned long addr, char *name, size_t n)
{
	char path[64], line[512];
	unsigned long lo, hi;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo <= addr && addr < hi) {
			char *p = strrchr(line, ' ');

			snprintf(name, n, "%s", p ? p + 1 : "");
			name[strcspn(name, "\n")] = 0;
			fclose(f);
			return 1;
		}
	}
	fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), state;
	void *rstack = NULL, *rtstack = NULL;
	struct parasite_ctl *ctl;
	unsigned long *arg, sp;
	char name[256];

	state = compel_stop_task(pid);
	ctl = compel_prepare(pid);
	if (state < 0 || !ctl)
		return 1;
	parasite_setup_c_header(ctl);
	if (compel_infect_no_daemon(ctl, 1, sizeof(*arg)))
		return 2;
	compel_get_stack(ctl, &rstack, &rtstack);
	if (!rstack || !rtstack || compel_start_daemon(ctl))
		return 3;
	arg = compel_parasite_args(ctl, unsigned long);
	if (compel_rpc_call_sync(PARASITE_USER_CMDS, ctl))
		return 4;
	sp = *arg;
	printf("below start %d\n", sp < (unsigned long)rstack && (unsigned long)rstack - sp < (1UL << 20));
	printf("mapped %d\n", in_mapping(pid, sp, name, sizeof(name)));
	printf("task stack %d\n", strcmp(name, "[stack]") == 0);
	if (compel_cure(ctl) || compel_resume_task(pid, state, state))
		return 5;
	printf("gone %d\n", !in_mapping(pid, sp, name, sizeof(name)));
	return 0;
}
"#;

/// The smallest parasite for timing a whole cycle.
const BENCH_PARASITE: &str = r#"#include <compel/plugins/std.h>
#include <infect-rpc.h>

int parasite_trap_cmd(int cmd, void *args)
{
	return 0;
}

void parasite_cleanup(void)
{
}

int parasite_daemon_cmd(int cmd, void *args)
{
	*(int *)args += 1;
	return 0;
}
"#;

/// Times N whole cycles (stop, prepare, infect, one command, cure, resume). One line per cycle:
/// ns spent in stop+prepare, infect, the command, the cure (remote and local), and the total.
const BENCH_SPY: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "parasite.h"

static long now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), n = atoi(argv[2]), i, state;
	struct parasite_ctl *ctl;
	int *arg;

	for (i = 0; i < n; i++) {
		long t0 = now(), t1, t2, t3, t4;

		state = compel_stop_task(pid);
		ctl = compel_prepare(pid);
		if (state < 0 || !ctl)
			return 1;
		t1 = now();
		parasite_setup_c_header(ctl);
		if (compel_infect(ctl, 1, sizeof(int)))
			return 2;
		t2 = now();
		arg = compel_parasite_args(ctl, int);
		*arg = i;
		if (compel_rpc_call_sync(PARASITE_USER_CMDS, ctl) || *arg != i + 1)
			return 3;
		t3 = now();
		if (compel_cure(ctl) || compel_resume_task(pid, state, state))
			return 4;
		t4 = now();
		printf("%ld %ld %ld %ld %ld\n", t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0);
	}
	return 0;
}
"#;

/// Writes `files` into `dir` and runs `make COMPEL=<our compel>` there; returns `dir/spy`.
fn make(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(dir)
            .arg(format!("COMPEL={}", compel_with_libcompel().display())),
    );
    dir.join("spy")
}

fn build_victim(work: &Path) -> PathBuf {
    build_c(work, "victim", VICTIM)
}

fn build_c(work: &Path, name: &str, text: &str) -> PathBuf {
    let src = work.join(format!("{name}.c"));
    std::fs::write(&src, text).unwrap();
    let out = work.join(name);
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Werror", "-pthread", "-o"])
            .arg(&out)
            .arg(&src),
    );
    out
}

/// Starts the victim and waits until it sleeps in read(2); returns it and its pid.
fn start_victim(path: &Path) -> (Victim, i32) {
    let (v, ids) = start_victim_ids(path);
    (v, ids[0])
}

/// The same, with every id the victim's ready line gives (its pid first).
fn start_victim_ids(path: &Path) -> (Victim, Vec<i32>) {
    let mut v = Victim::spawn(path, &[]).unwrap();
    let ready = v.expect_line("ready ", T).unwrap();
    let ids: Vec<i32> = ready["ready ".len()..]
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let pid = ids[0];
    assert_eq!(pid, v.pid());
    wait_state(pid, "S", T);
    std::thread::sleep(Duration::from_millis(20));
    (v, ids)
}

/// The victim answers a line afterwards (it runs on, its stdin and stdout intact) and exits
/// normally on EOF.
fn victim_carries_on(mut v: Victim, sid: i32) {
    v.write_stdin(b"after\n").unwrap();
    assert_eq!(
        v.expect_line("echo", T).unwrap(),
        format!("echo after sid {sid}")
    );
    v.close_stdin();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

fn our_sid() -> i32 {
    // SAFETY: getsid(0) only reads the caller's session id.
    unsafe { libc::getsid(0) }
}

#[test]
fn criu_style_infect_counts_through_user_commands_twice_from_one_host() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let victim = build_victim(work.path());
    let spy = make(
        &work.path().join("infect"),
        &[
            ("Makefile", MAKEFILE),
            ("parasite.c", INFECT_PARASITE),
            ("spy.c", INFECT_SPY),
        ],
    );
    let (mut v, pid) = start_victim(&victim);
    let out = run_ok(Command::new(&spy).arg(pid.to_string()));
    assert_eq!(
        out,
        "inc 138\ndec 403\nfail reported\ninc 138\ndec 403\nfail reported\nstate 1 log 4\n"
    );
    for want in [138, 403, 138, 403] {
        assert_eq!(
            v.expect_line("parasite", T).unwrap(),
            format!("parasite {want} in {pid}")
        );
    }
    victim_carries_on(v, our_sid());
}

#[test]
fn criu_style_rsys_runs_syscalls_without_a_parasite() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let victim = build_victim(work.path());
    let spy = make(
        &work.path().join("rsys"),
        &[("Makefile", MAKEFILE_NO_PARASITE), ("spy.c", RSYS_SPY)],
    );
    let (mut v, pid) = start_victim(&victim);
    v.write_stdin(b"before\n").unwrap();
    assert_eq!(
        v.expect_line("echo", T).unwrap(),
        format!("echo before sid {}", our_sid())
    );
    let out = run_ok(Command::new(&spy).arg(pid.to_string()));
    assert_eq!(out, format!("getpid {pid}\nsetsid {pid}\n"));
    victim_carries_on(v, pid);
}

#[test]
fn criu_style_fdspy_steals_an_fd_through_the_fds_plugin() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let victim = build_victim(work.path());
    let spy = make(
        &work.path().join("fdspy"),
        &[
            ("Makefile", MAKEFILE),
            ("parasite.c", FDSPY_PARASITE),
            ("spy.c", FDSPY_SPY),
        ],
    );
    let (mut v, pid) = start_victim(&victim);
    let out = run_ok(Command::new(&spy).arg(pid.to_string()));
    assert_eq!(out, "same 1\n");
    // The host wrote into the victim's stdout through the fd it took.
    assert_eq!(v.expect_line("stolen", T).unwrap(), "stolen fd works");
    victim_carries_on(v, our_sid());
}

#[test]
fn criu_style_run_in_thread_reaches_the_trap_command() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let victim = build_c(work.path(), "victim-threads", VICTIM_THREADS);
    let spy = make(
        &work.path().join("threads"),
        &[
            ("Makefile", MAKEFILE),
            ("parasite.c", THREADS_PARASITE),
            ("spy.c", THREADS_SPY),
        ],
    );
    let (v, ids) = start_victim_ids(&victim);
    let (pid, tid) = (ids[0], ids[1]);
    let out = run_ok(Command::new(&spy).args([pid.to_string(), tid.to_string()]));
    // Blocked by the victim: SIGUSR2 (12) in the main thread, SIGUSR1 (10) in the other.
    assert_eq!(
        out,
        format!("daemon {pid} 0\ntrap {tid} 71\nmasks 800 200\n")
    );
    victim_carries_on(v, our_sid());
}

/// A C-API infection and cure (two of them) keep the whole AVX-512 state of a task asleep in
/// read(2): the victim compares its registers after the read and says `ok N` or `mismatch`.
#[test]
fn criu_style_cure_keeps_the_avx512_state() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let spy = make(
        &work.path().join("infect"),
        &[
            ("Makefile", MAKEFILE),
            ("parasite.c", INFECT_PARASITE),
            ("spy.c", INFECT_SPY),
        ],
    );
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-infect-avx"), &[]).unwrap();
    let Ok(ready) = v.expect_line("ready", T) else {
        // Exit code 2: no AVX-512 on this CPU, nothing to check.
        assert_eq!(v.wait(T), Some(Exit::Code(2)));
        return;
    };
    let pid: i32 = ready["ready ".len()..].trim().parse().unwrap();
    wait_state(pid, "S", T);
    std::thread::sleep(Duration::from_millis(20));
    let out = run_ok(Command::new(&spy).arg(pid.to_string()));
    assert!(out.ends_with("state 1 log 4\n"), "{out}");
    for want in [138, 403, 138, 403] {
        assert_eq!(
            v.expect_line("parasite", T).unwrap(),
            format!("parasite {want} in {pid}")
        );
    }
    v.write_stdin(b"after\n").unwrap();
    assert_eq!(v.expect_line("", T).unwrap(), "ok 6");
    v.close_stdin();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn criu_style_stack_parasite_runs_on_its_own_stack() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let victim = build_victim(work.path());
    let spy = make(
        &work.path().join("stack"),
        &[
            ("Makefile", MAKEFILE),
            ("parasite.c", STACK_PARASITE),
            ("spy.c", STACK_SPY),
        ],
    );
    let (v, pid) = start_victim(&victim);
    let out = run_ok(Command::new(&spy).arg(pid.to_string()));
    assert_eq!(out, "below start 1\nmapped 1\ntask stack 0\ngone 1\n");
    victim_carries_on(v, our_sid());
}

/// The phases both sides time: stop+prepare (seize), infect, one command, cure (with the
/// release of the task), and the whole cycle.
const PHASES: [&str; 5] = ["seize", "infect", "command", "cure", "cycle"];

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Pins task `pid` (0: the calling thread) to CPU `cpu`; false if the machine has no such CPU.
fn pin(pid: i32, cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid and CPU_SET writes inside it; sched_setaffinity only
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Bench, not run by default (timing on a shared machine): the C API's whole cycle (stop,
/// prepare, infect, one command, cure, resume) against the Rust API's with the same parasite,
/// rounds alternating so that load drift hits both alike, with the host and the victim pinned
/// to the same CPU and then to different CPUs (the C host inherits the test thread's
/// affinity). Prints the per-phase medians of both and the ratio of the cycles (the issue's
/// target: within 10 %); checks only that every command ran.
/// `cargo test -p compel-criu-tests --test compel_c_compat -- --ignored --nocapture`
#[test]
#[ignore = "timing bench: run alone with --ignored --nocapture"]
fn criu_style_cycle_costs_what_the_rust_api_costs() {
    use compel::Task;
    use compel::infect::{InfectOptions, Parasite};
    use compel_proto::blob::BlobDesc;
    use std::time::Instant;

    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 20;

    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let victim = build_victim(work.path());
    let dir = work.path().join("bench");
    let spy = make(
        &dir,
        &[
            ("Makefile", MAKEFILE),
            ("parasite.c", BENCH_PARASITE),
            ("spy.c", BENCH_SPY),
        ],
    );
    let packed = dir.join("parasite.blob");
    run_ok(
        Command::new(compel_with_libcompel())
            .args(["pack", "-f"])
            .arg(dir.join("parasite.po"))
            .arg("-o")
            .arg(&packed),
    );
    let bytes = std::fs::read(&packed).unwrap();
    let blob = BlobDesc::parse(&bytes).unwrap();
    let (v, pid) = start_victim(&victim);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let us = |ns: u64| ns as f64 / 1000.0;
    for (label, host_cpu, victim_cpu) in [("same CPU", 0, 0), ("cross CPU", 0, 1)] {
        if victim_cpu >= ncpu || !pin(0, host_cpu) || !pin(pid, victim_cpu) {
            eprintln!("{label}: skipped ({ncpu} CPUs)");
            continue;
        }
        let mut c: [Vec<u64>; 5] = Default::default();
        let mut rust: [Vec<u64>; 5] = Default::default();
        for _round in 0..ROUNDS {
            // One cold cycle per C process (its first touches of the library's pages) is
            // left out, as the Rust side's warm-up is.
            let out =
                run_ok(Command::new(&spy).args([pid.to_string(), (PER_ROUND + 1).to_string()]));
            for line in out.lines().skip(1) {
                let ns: Vec<u64> = line.split(' ').map(|w| w.parse().unwrap()).collect();
                assert_eq!(ns.len(), 5, "{line}");
                for (k, n) in ns.into_iter().enumerate() {
                    c[k].push(n);
                }
            }
            for i in 0..=PER_ROUND as i32 {
                let t0 = Instant::now();
                let task = Task::seize(pid).unwrap();
                let t1 = Instant::now();
                let opts = InfectOptions {
                    payload_size: 64,
                    ..InfectOptions::default()
                };
                let mut p = Parasite::infect(task, &blob, opts).unwrap();
                let t2 = Instant::now();
                p.payload_mut()[..4].copy_from_slice(&i.to_ne_bytes());
                p.call(64).unwrap();
                assert_eq!(p.payload()[..4], (i + 1).to_ne_bytes());
                let t3 = Instant::now();
                p.cure().unwrap();
                let t4 = Instant::now();
                if i == 0 {
                    continue;
                }
                let ns = |a: Instant, b: Instant| (b - a).as_nanos() as u64;
                for (k, n) in [ns(t0, t1), ns(t1, t2), ns(t2, t3), ns(t3, t4), ns(t0, t4)]
                    .into_iter()
                    .enumerate()
                {
                    rust[k].push(n);
                }
            }
        }
        assert_eq!(c[4].len(), ROUNDS * PER_ROUND);
        assert_eq!(rust[4].len(), ROUNDS * PER_ROUND);
        eprintln!("{label} (host on CPU {host_cpu}, victim on CPU {victim_cpu}), median us:");
        for (k, name) in PHASES.iter().enumerate() {
            let (cm, rm) = (median(&mut c[k]), median(&mut rust[k]));
            eprintln!(
                "  {name:<8} C API {:>7.1}  Rust API {:>7.1}  ratio {:.2}",
                us(cm),
                us(rm),
                cm as f64 / rm.max(1) as f64
            );
        }
    }
    // Unpin the test thread again for whatever runs next in this process.
    // SAFETY: a zeroed cpu_set_t is valid and CPU_SET writes inside it; sched_setaffinity
    // only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..ncpu {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    victim_carries_on(v, our_sid());
}
