//! The rest of CRIU compel's host API on ours, from a C host built with nothing but
//! `compel includes` and `compel --static libs`: the seize-time helpers
//! (`compel_interrupt_task`, `compel_wait_task` with its parent check), registers
//! (`compel_get_leader_ip`/`_sp`, `compel_get_thread_regs` in CRIU's `user_regs_struct_t`,
//! `compel_mode_native`, `compel_task_size`), running the task's own code
//! (`compel_run_at` up to an `int3`, `compel_unmap` up to its `munmap`,
//! `compel_parse_stop_signo`), and the `<compel/ptrace.h>` memory helpers. The victim carries on
//! afterwards, its page unmapped by its own code.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::c_host::{compel_with_libcompel, run_ok};
use compel_criu_tests::{Exit, Victim, become_subreaper, test_lock, wait_state};

const T: Duration = Duration::from_secs(10);

/// A victim with two pieces of code a host runs in it: `probe` (rax = 42, then a trap) and
/// `unmapper` (munmap of its page, then a trap); it prints their addresses and the page's.
const VICTIM: &str = r#"#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

void *page;
void probe(void);
void unmapper(void);
__asm__(".text\n.globl probe\nprobe:\n\tmov $42, %eax\n\tint3\n"
	".globl unmapper\nunmapper:\n\tmov page(%rip), %rdi\n\tmov $4096, %esi\n"
	"\tmov $11, %eax\n\tsyscall\n\tint3\n");

int main(void)
{
	char line[256];

	setvbuf(stdout, NULL, _IONBF, 0);
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	printf("ready %d %lx %lx %lx\n", getpid(), (unsigned long)probe, (unsigned long)unmapper,
	       (unsigned long)page);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		printf("echo %s\n", line);
	}
	return 0;
}
"#;

const SPY: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <compel/infect.h>
#include <compel/ptrace.h>

static int seen_native, seen_fcw;
static unsigned long seen_ip;

static int save(void *arg, void *r, void *fp)
{
	user_regs_struct_t *regs = r;

	seen_native = user_regs_native(regs);
	seen_ip = regs->native.ip;
	seen_fcw = *(unsigned short *)fp;
	*(int *)arg = 7;
	return 0;
}

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), state, arg = 0;
	unsigned long probe = strtoul(argv[2], NULL, 16), unmapper = strtoul(argv[3], NULL, 16);
	struct seize_task_status st;
	struct parasite_ctl *ctl;
	struct parasite_thread_ctl *tctl;
	user_regs_struct_t at;
	unsigned long word, mine = 0x1122334455667788UL, sp;

	if (compel_interrupt_task(pid))
		return 1;
	state = compel_wait_task(pid, -1, NULL, NULL, &st, NULL);
	printf("wait %d state %c ppid-ok %d\n", state, st.state, st.ppid > 0);
	printf("wrong parent %d\n", compel_wait_task(pid, 1, NULL, NULL, &st, NULL) < 0);
	ctl = compel_prepare(pid);
	if (!ctl)
		return 2;
	sp = compel_get_leader_sp(ctl);
	printf("native %d task_size %lx ip-set %d\n", compel_mode_native(ctl), compel_task_size(),
	       compel_get_leader_ip(ctl) != 0 && sp != 0);

	tctl = compel_prepare_thread(ctl, pid);
	if (compel_get_thread_regs(tctl, save, &arg))
		return 3;
	printf("thread regs native %d ip-same %d fcw %x arg %d\n", seen_native,
	       seen_ip == compel_get_leader_ip(ctl), seen_fcw, arg);
	compel_release_thread(tctl);

	/* A word below the stack's red zone: swap ours in, read it, swap the old one back. */
	if (ptrace_swap_area(pid, (void *)(sp - 1024), &mine, sizeof(mine)))
		return 4;
	if (ptrace_peek_area(pid, &word, (void *)(sp - 1024), sizeof(word)))
		return 5;
	printf("swapped %d\n", word == 0x1122334455667788UL);
	if (ptrace_poke_area(pid, &mine, (void *)(sp - 1024), sizeof(mine)))
		return 6;
	printf("odd length %d\n", ptrace_peek_area(pid, &word, (void *)sp, 3) < 0);

	memset(&at, 0, sizeof(at));
	if (compel_run_at(ctl, probe, &at))
		return 7;
	printf("run_at rax %lu native %d stop %d ip-back %d\n", (unsigned long)at.native.ax,
	       user_regs_native(&at), compel_parse_stop_signo(pid), compel_get_leader_sp(ctl) == sp);
	if (compel_unmap(ctl, unmapper))
		return 8;
	printf("unmapped\n");
	if (compel_cure(ctl) || compel_resume_task_sig(pid, state, state, 0))
		return 9;
	return 0;
}
"#;

fn words(compel: &Path, arg: &[&str]) -> Vec<String> {
    run_ok(Command::new(compel).args(arg))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn criu_style_registers_run_at_unmap_and_ptrace_areas() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let c = compel_with_libcompel();
    let victim = work.path().join("victim");
    std::fs::write(work.path().join("victim.c"), VICTIM).unwrap();
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Werror", "-no-pie", "-o"])
            .arg(&victim)
            .arg(work.path().join("victim.c")),
    );
    let spy = work.path().join("spy");
    std::fs::write(work.path().join("spy.c"), SPY).unwrap();
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Werror"])
            .args(words(&c, &["includes"]))
            .arg("-o")
            .arg(&spy)
            .arg(work.path().join("spy.c"))
            .args(words(&c, &["--static", "libs"])),
    );

    let mut v = Victim::spawn(&victim, &[]).unwrap();
    let ready = v.expect_line("ready ", T).unwrap();
    let f: Vec<&str> = ready.split_whitespace().collect();
    let (pid, probe, unmapper, page) = (f[1], f[2], f[3], f[4]);
    assert_eq!(pid, v.pid().to_string());
    wait_state(v.pid(), "S", T);
    std::thread::sleep(Duration::from_millis(20));
    let maps = || std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps().lines().any(|l| l.starts_with(page)),
        "no page {page}"
    );

    let out = run_ok(Command::new(&spy).args([pid, probe, unmapper]));
    assert_eq!(
        out,
        "wait 1 state S ppid-ok 1\n\
         wrong parent 1\n\
         native 1 task_size 7ffffffff000 ip-set 1\n\
         thread regs native 1 ip-same 1 fcw 37f arg 7\n\
         swapped 1\n\
         odd length 1\n\
         run_at rax 42 native 1 stop 5 ip-back 1\n\
         unmapped\n"
    );
    // The victim's own code unmapped its page; the victim runs on and exits on EOF.
    assert!(
        !maps().lines().any(|l| l.starts_with(page)),
        "page {page} still mapped"
    );
    v.write_stdin(b"after\n").unwrap();
    assert_eq!(v.expect_line("echo", T).unwrap(), "echo after");
    v.close_stdin();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}
