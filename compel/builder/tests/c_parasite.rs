//! A C parasite built only with the flags and archive `compel cflags/ldflags/plugins` print
//! (CSupport) produces a working blob, and the C header hgen writes for it works in a C host.

mod common;

use common::Placed;
use compel_builder::{CSupport, Lang, Sources, Toolchain, hgen_file, read_elf_file};
use std::path::Path;
use std::process::Command;

const PARASITE: &str = r#"
#include <compel/plugins/std.h>
#include <compel/plugins/fds.h>
#include <compel/plugins/shmem.h>

static const char *names[] = { "zero", "one", "two" };
int __export_counter;

/* Depends on absolute addresses: a pointer table into .rodata, a global. */
int __export_describe(char *buf, unsigned long len, int i)
{
	const char *n = names[i % 3];
	unsigned long l = strlen(n);

	__export_counter++;
	if (l + 3 > len)
		return -1;
	memcpy(buf, n, l);
	buf[l] = '#';
	buf[l + 1] = '0' + __export_counter;
	buf[l + 2] = 0;
	if (strcmp(buf, "one#1") == 0 && memcmp(buf, "one", 3) == 0)
		buf[0] = 'O';
	return (int)l + 2;
}

int compel_parasite_handle(unsigned int cmd, void *payload, unsigned long len)
{
	if (cmd == COMPEL_CMD_USER && len >= 8) {
		*(long *)payload = sys_getpid();
		return 0;
	}
	if (cmd == COMPEL_CMD_USER + 1)
		return compel_send_fd(0) ?: (compel_shmem_create(4096) ? 0 : -12);
	return -38;
}
"#;

const HOST: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include "parasite.h"

int main(void)
{
	struct compel_blob_desc d;
	unsigned long size;
	unsigned char *mem;
	int (*describe)(char *, unsigned long, int);
	char buf[64];
	int n;

	cpar_get_blob_desc(&d);
	size = (d.image_size + d.bss_size + 4095) & ~4095UL;
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || compel_blob_place(&d, mem, (unsigned long)mem))
		return 1;
	if (mprotect(mem, d.text_size, PROT_READ | PROT_EXEC))
		return 2;
	describe = (void *)(mem + cpar_sym__export_describe);
	n = describe(buf, sizeof(buf), 1);
	printf("%d %s\n", n, buf);
	n = describe(buf, sizeof(buf), 5);
	printf("%d %s %d\n", n, buf, *(int *)(mem + cpar_sym__export_counter));
	return 0;
}
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn build_c_parasite(dir: &Path) -> std::path::PathBuf {
    let cache = dir.join("cache");
    let support =
        CSupport::ensure(&Toolchain::from_env(), &Sources::from_workspace(), &cache).unwrap();
    std::fs::write(dir.join("parasite.c"), PARASITE).unwrap();
    run(Command::new("gcc")
        .args(support.cflags())
        .arg("-Wall")
        .arg("-Werror")
        .arg("-c")
        .arg(dir.join("parasite.c"))
        .arg("-o")
        .arg(dir.join("parasite.o")));
    let plugins = support
        .plugins(&["std".into(), "fds".into(), "shmem".into()])
        .unwrap();
    run(Command::new("ld")
        .args(support.ldflags())
        .arg("-o")
        .arg(dir.join("parasite.elf"))
        .arg(dir.join("parasite.o"))
        .args(plugins));
    // A second call finds the cached archive instead of building it again.
    let again =
        CSupport::ensure(&Toolchain::from_env(), &Sources::from_workspace(), &cache).unwrap();
    assert_eq!(again.archive, support.archive);
    dir.join("parasite.elf")
}

#[test]
fn c_parasite_runs_at_a_random_address() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build_c_parasite(dir.path());
    let blob = read_elf_file(&elf).unwrap();
    assert!(!blob.relocs.is_empty());
    assert_eq!(blob.entry, blob.symbol("__export_parasite_head").unwrap());
    let describe = blob.symbol("__export_describe").unwrap();
    let counter = blob.symbol("__export_counter").unwrap();
    let placed = Placed::new(&blob.desc());
    type Describe = unsafe extern "C" fn(*mut u8, usize, i32) -> i32;
    // SAFETY: the placed, relocated blob's __export_describe has this C signature.
    let f: Describe = unsafe { std::mem::transmute::<usize, Describe>(placed.addr(describe)) };
    let mut buf = [0u8; 32];
    for (i, want) in [(1, "One#1"), (2, "two#2"), (3, "zero#3")] {
        // SAFETY: buf is valid for its length.
        let n = unsafe { f(buf.as_mut_ptr().cast(), buf.len(), i) };
        assert_eq!(&buf[..n as usize], want.as_bytes());
    }
    // SAFETY: the counter is an int in the placed blob's data.
    let count = unsafe { std::ptr::read_volatile(placed.addr(counter) as *const i32) };
    assert_eq!(count, 3);
}

#[test]
fn c_header_from_hgen_works_in_a_c_host() {
    let dir = tempfile::tempdir().unwrap();
    let elf = build_c_parasite(dir.path());
    hgen_file(&elf, &dir.path().join("parasite.h"), Lang::C, "cpar").unwrap();
    std::fs::write(dir.path().join("host.c"), HOST).unwrap();
    let include = Sources::from_workspace().include_dir();
    run(Command::new("gcc")
        .arg("-Wall")
        .arg("-Werror")
        .arg(format!("-I{}", include.display()))
        .arg(format!("-I{}", dir.path().display()))
        .arg(dir.path().join("host.c"))
        .arg("-o")
        .arg(dir.path().join("host")));
    let out = Command::new(dir.path().join("host")).output().unwrap();
    assert!(out.status.success(), "host exited with {}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5 One#1\n5 two#2 2\n");
}

#[test]
fn thread_local_storage_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let support = CSupport::ensure(
        &Toolchain::from_env(),
        &Sources::from_workspace(),
        &dir.path().join("cache"),
    )
    .unwrap();
    let src = "__thread int per_thread = 3;\nint __export_get(void) { return per_thread; }\n\
               int compel_parasite_handle(unsigned int c, void *p, unsigned long l) { return per_thread; }\n";
    std::fs::write(dir.path().join("tls.c"), src).unwrap();
    run(Command::new("gcc")
        .args(support.cflags())
        .arg("-c")
        .arg(dir.path().join("tls.c"))
        .arg("-o")
        .arg(dir.path().join("tls.o")));
    let elf = dir.path().join("tls.elf");
    let out = Command::new("ld")
        .args(support.ldflags())
        .arg("-o")
        .arg(&elf)
        .arg(dir.path().join("tls.o"))
        .args(support.plugins(&[]).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = read_elf_file(&elf).unwrap_err().to_string();
    assert!(err.contains("thread-local storage in section .t"), "{err}");
}
