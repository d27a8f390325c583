//! CRIU compel's CPU/FPU queries (`<compel/cpu.h>`), TLS getters, hardware breakpoints,
//! `compel_stop_on_syscall()` and `compel_relocs_apply()`, from C programs built with nothing
//! but `compel includes`/`--static libs` (and `hgen` for the blob), checked against the CPU's
//! own report (`/proc/cpuinfo`) and against a live victim that carries on afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use compel_criu_tests::c_host::{build_c_host, compel_with_libcompel, run_ok};
use compel_criu_tests::{Exit, Victim, become_subreaper, test_lock, wait_state};

const T: Duration = Duration::from_secs(10);

/// Prints what the CPU queries answer, and what clearing a feature does.
const CPU_C: &str = r#"#include <stdio.h>
#include <string.h>
#include <compel/cpu.h>

int main(void)
{
	compel_cpuinfo_t a, b;

	if (compel_cpuid(&a))
		return 1;
	printf("size %zu\n", sizeof(compel_cpuinfo_t));
	printf("vendor %s\n", a.x86_vendor_id);
	printf("model %s\n", a.x86_model_id);
	printf("family %d\n", a.x86_family);
	printf("fpu %d lm %d sse2 %d avx %d avx2 %d avx512f %d\n", compel_cpu_has_feature(X86_FEATURE_FPU),
	       compel_cpu_has_feature(X86_FEATURE_LM), compel_cpu_has_feature(X86_FEATURE_XMM2),
	       compel_cpu_has_feature(X86_FEATURE_AVX), compel_cpu_has_feature(X86_FEATURE_AVX2),
	       compel_cpu_has_feature(X86_FEATURE_AVX512F));
	printf("ymm %d %u %u\n", compel_fpu_has_feature(XFEATURE_YMM), compel_fpu_feature_size(XFEATURE_YMM),
	       compel_fpu_feature_offset(XFEATURE_YMM));
	printf("zmm %d %u\n", compel_fpu_has_feature(XFEATURE_Hi16_ZMM), compel_fpu_feature_size(XFEATURE_Hi16_ZMM));
	printf("sse %u %u xsave %u\n", compel_fpu_feature_size(XFEATURE_SSE), compel_fpu_feature_offset(XFEATURE_SSE),
	       a.xsave_size);
	compel_cpu_clear_feature(X86_FEATURE_XMM2);
	compel_cpu_copy_cpuinfo(&b);
	printf("cleared %d copy %d fresh %d\n", compel_cpu_has_feature(X86_FEATURE_XMM2),
	       !!(b.x86_capability[0] & (1 << 26)), !!(a.x86_capability[0] & (1 << 26)));
	printf("same_rest %d\n", !memcmp(a.x86_capability + 1, b.x86_capability + 1, sizeof(uint32_t) * (NCAPINTS - 1)));
	return 0;
}
"#;

/// Sets a GDT TLS entry when the kernel lets a 64-bit task do it (32-bit emulation), then
/// calls marker() for each stdin line before echoing it.
const VICTIM_C: &str = r#"#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <asm/ldt.h>
#include <sys/syscall.h>

__attribute__((noinline)) void marker(const char *line)
{
	__asm__ volatile("" ::"r"(line) : "memory");
}

int main(void)
{
	struct user_desc d;
	char line[256];

	memset(&d, 0, sizeof(d));
	d.entry_number = -1;
	d.base_addr = 0x12345000;
	d.limit = 0xfff;
	d.seg_32bit = 1;
	d.useable = 1;
	if (syscall(SYS_set_thread_area, &d))
		d.entry_number = 0;
	setvbuf(stdout, NULL, _IONBF, 0);
	printf("ready %d %u %p\n", getpid(), d.entry_number, (void *)marker);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		marker(line);
		printf("echo %s\n", line);
	}
	return 0;
}
"#;

/// Seizes the victim; reports its TLS entry, relocates a copy of the blob, stops the victim
/// at marker() with a hardware breakpoint, follows it to the end of its write(2), cures.
const HOST_C: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <compel/infect.h>
#include <compel/ptrace.h>
#include "parasite.h"

#define die(msg)                                                         \
	do {                                                             \
		fprintf(stderr, "%s: %s\n", msg, compel_last_error());  \
		return 1;                                                \
	} while (0)

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), entry = atoi(argv[2]), st, i, ok = 0;
	void *marker = (void *)strtoul(argv[3], NULL, 16);
	struct user_regs_struct regs;
	struct parasite_blob_desc *pbd;
	struct parasite_ctl *ctl;
	k_rtsigset_t mask;
	unsigned char *copy;
	tls_t tls;

	setvbuf(stdout, NULL, _IONBF, 0);
	ctl = compel_prepare(pid);
	if (!ctl)
		die("prepare");

	compel_arch_get_tls_task(ctl, &tls);
	for (i = 0; i < GDT_ENTRY_TLS_NUM; i++)
		if (tls.desc[i].entry_number == (unsigned)entry && !tls.desc[i].seg_not_present)
			printf("tls %u %#x\n", tls.desc[i].entry_number, tls.desc[i].base_addr);

	parasite_setup_c_header(ctl);
	pbd = compel_parasite_blob_desc(ctl);
	copy = malloc(pbd->desc.image_size);
	memcpy(copy, pbd->desc.image, pbd->desc.image_size);
	compel_relocs_apply(copy, (void *)0x100000, pbd);
	for (i = 0; i < (int)pbd->desc.nr_relocs; i++) {
		unsigned long o, n;

		memcpy(&o, pbd->desc.image + pbd->desc.relocs[i], 8);
		memcpy(&n, copy + pbd->desc.relocs[i], 8);
		ok += n == o + 0x100000;
	}
	printf("relocs %d of %lu\n", ok, pbd->desc.nr_relocs);

	mask = *compel_task_sigmask(ctl);
	if (ptrace_set_breakpoint(pid, marker) != 1)
		die("breakpoint");
	printf("armed\n");
	if (waitpid(pid, &st, __WALL) != pid || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP)
		die("trap");
	ptrace(PTRACE_GETREGS, pid, NULL, &regs);
	printf("hit %d\n", regs.rip == (unsigned long)marker);
	if (ptrace_flush_breakpoints(pid))
		die("flush");
	if (ptrace(PTRACE_SETSIGMASK, pid, sizeof(mask), &mask))
		die("mask");

	if (ptrace(PTRACE_SYSCALL, pid, NULL, NULL))
		die("syscall");
	if (compel_stop_on_syscall(1, __NR_write, 0))
		die("stop on write");
	ptrace(PTRACE_GETREGS, pid, NULL, &regs);
	printf("write %llu %lld\n", regs.orig_rax, (long long)regs.rax);
	if (compel_cure(ctl))
		die("cure");
	return 0;
}
"#;

const PARASITE_C: &str = r#"#include <compel/plugins/std.h>
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
	return 0;
}
"#;

const MAKEFILE: &str = "CC\t:= gcc
CFLAGS\t?= -O2 -g -Wall -Werror
COMPEL\t:= compel

host: host.c parasite.h
\t$(CC) $(CFLAGS) $(shell $(COMPEL) includes) -o $@ $< $(shell $(COMPEL) --static libs)

parasite.h: parasite.po
\t$(COMPEL) hgen -o $@ -f $<

parasite.po: parasite.o
\tld $(shell $(COMPEL) ldflags) -o $@ $^ $(shell $(COMPEL) plugins)

parasite.o: parasite.c
\t$(CC) $(CFLAGS) -c $(shell $(COMPEL) cflags) -o $@ $^
";

/// The flags line of /proc/cpuinfo has `flag`.
fn cpuinfo_has(flag: &str) -> bool {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("flags")).unwrap();
    line.split_whitespace().any(|w| w == flag)
}

fn cpuinfo_field(key: &str) -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let line = text.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_once(':').unwrap().1.trim().to_string()
}

#[test]
fn cpu_queries_match_what_the_kernel_reports() {
    let work = tempfile::tempdir().unwrap();
    let bin = build_c_host(work.path(), "cpu", CPU_C);
    let out = run_ok(&mut Command::new(bin));
    let get = |k: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    // gcc's size of CRIU's compel_cpuinfo_t is the library's.
    assert_eq!(get("size"), "376");
    assert_eq!(get("vendor"), cpuinfo_field("vendor_id"));
    assert_eq!(get("model"), cpuinfo_field("model name"));
    assert_eq!(get("family"), cpuinfo_field("cpu family"));
    let b = |f: &str| u8::from(cpuinfo_has(f));
    assert_eq!(
        get("fpu"),
        format!(
            "1 lm {} sse2 {} avx {} avx2 {} avx512f {}",
            b("lm"),
            b("sse2"),
            b("avx"),
            b("avx2"),
            b("avx512f")
        )
    );
    // The YMM component: 256 bytes right after the legacy area and the xsave header.
    if cpuinfo_has("avx") {
        assert_eq!(get("ymm"), "1 256 576");
    } else {
        assert!(get("ymm").starts_with("0 "));
    }
    if cpuinfo_has("avx512f") {
        assert_eq!(get("zmm"), "1 1024");
    }
    let sse = get("sse");
    assert!(sse.starts_with("256 160 xsave "), "{sse}");
    let xsave: u32 = sse.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(xsave >= 512, "{xsave}");
    // Clearing SSE2 changes the queries' copy only; compel_cpuid() reads the CPU again.
    assert_eq!(get("cleared"), "0 copy 0 fresh 1");
    assert_eq!(get("same_rest"), "1");
}

#[test]
fn breakpoint_stop_on_syscall_tls_and_relocs_on_a_live_victim() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("Makefile", MAKEFILE),
        ("parasite.c", PARASITE_C),
        ("host.c", HOST_C),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    run_ok(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&dir)
            .arg(format!("COMPEL={}", compel_with_libcompel().display())),
    );
    let victim = work.path().join("victim");
    std::fs::write(work.path().join("victim.c"), VICTIM_C).unwrap();
    run_ok(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Werror", "-o"])
            .arg(&victim)
            .arg(work.path().join("victim.c")),
    );
    let mut v = Victim::spawn(&victim, &[]).unwrap();
    let ready = v.expect_line("ready ", T).unwrap();
    let f: Vec<&str> = ready.split_whitespace().collect();
    let (pid, entry, marker) = (f[1], f[2], f[3].trim_start_matches("0x"));
    assert_eq!(pid.parse::<i32>().unwrap(), v.pid());
    wait_state(v.pid(), "S", T);
    let mut host = Command::new(dir.join("host"))
        .args([pid, entry, marker])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(host.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    if entry != "0" {
        // The victim could set a TLS entry (the kernel has 32-bit emulation).
        assert_eq!(next(), format!("tls {entry} 0x12345000"));
    }
    let relocs = next();
    let (ok, all) = relocs["relocs ".len()..].split_once(" of ").unwrap();
    assert_eq!(ok, all, "{relocs}");
    assert_ne!(all, "0");
    assert_eq!(next(), "armed");
    // The victim runs into marker() once it reads a line.
    v.write_stdin(b"hello\n").unwrap();
    assert_eq!(next(), "hit 1");
    // Stopped at the end of its write(2) of "echo hello\n": syscall 1, 11 bytes.
    assert_eq!(next(), "write 1 11");
    assert!(host.wait().unwrap().success());
    assert_eq!(v.expect_line("echo", T).unwrap(), "echo hello");
    // Released: it answers again, with no breakpoint left.
    v.write_stdin(b"again\n").unwrap();
    assert_eq!(v.expect_line("echo", T).unwrap(), "echo again");
    v.close_stdin();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}
