//! Victim: installs a seccomp filter that makes `getpid` fail with EPERM (everything else is
//! allowed), prints `ready PID`, then reads stdin: on the line `getpid` it calls getpid itself
//! and prints `getpid RET ERRNO` (the filter still in force shows as `getpid -1 1`); `eof` and
//! exit 0 at end of input. Exits 2 if the filter cannot be installed.

use std::io::Write;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn main() {
    let pid = std::process::id();
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        stmt(ld, 4), // seccomp_data.arch
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, 0), // seccomp_data.nr
        jump(jeq, libc::SYS_getpid as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with a valid filter program that outlives the call.
    let ok = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) == 0
    };
    if !ok {
        eprintln!("seccomp: {}", std::io::Error::last_os_error());
        std::process::exit(2);
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready {pid}").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.trim() == "getpid" {
            // SAFETY: getpid has no arguments.
            let r = unsafe { libc::syscall(libc::SYS_getpid) };
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            writeln!(out, "getpid {r} {}", if r < 0 { e } else { 0 }).unwrap();
            out.flush().unwrap();
        }
    }
    writeln!(out, "eof").unwrap();
}
