//! criu restore victim: threads under seccomp in each way a program can be.
//!
//! `criu-victim-seccomp-threads READY`:
//! - an `early` thread is started before any filter and stays free;
//! - a `strict` thread enters strict mode and blocks reading a pipe nobody writes;
//! - the process sets no_new_privs and installs two filters: the first makes `getppid` fail
//!   with ENOTTY, the second (with `SECCOMP_FILTER_FLAG_LOG`) makes `getpgid` fail with EMLINK;
//! - a `late` thread is started after them and inherits both, and so does a child process.
//!
//! It writes `ready PID EARLY LATE STRICT CHILD` (thread ids, the child's pid) into READY and
//! sleeps. On `SIGUSR1`
//! the main thread checks that both filters still bind it and that other calls work, and writes
//! `check ok` (or what differs) into READY.2.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static CHECK: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    CHECK.store(true, Ordering::SeqCst);
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;

fn insn(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// A filter that makes system call `nr` fail with `errno` and allows everything else.
fn deny(nr: libc::c_long, errno: i32) -> Vec<libc::sock_filter> {
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    vec![
        insn(ld, 4, 0, 0), // seccomp_data.arch
        insn(jeq, AUDIT_ARCH_X86_64, 1, 0),
        insn(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
        insn(ld, 0, 0, 0), // seccomp_data.nr
        insn(jeq, nr as u32, 0, 1),
        insn(ret, libc::SECCOMP_RET_ERRNO | errno as u32, 0, 0),
        insn(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ]
}

fn install(prog: &[libc::sock_filter], flags: libc::c_ulong) {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut _,
    };
    // SAFETY: seccomp reads the program, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}

/// Starts a thread running `f` after it stored its tid; returns the tid.
fn thread(f: impl FnOnce() + Send + 'static) -> i32 {
    let tid = std::sync::Arc::new(AtomicI32::new(0));
    let t = tid.clone();
    std::thread::spawn(move || {
        // SAFETY: gettid has no arguments.
        t.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        f();
    });
    loop {
        let v = tid.load(Ordering::SeqCst);
        if v != 0 {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn sleep_forever() {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1000));
    }
}

/// `(return value, errno)` of a raw system call without arguments but `arg`.
fn call(nr: libc::c_long, arg: libc::c_long) -> (i64, i32) {
    // SAFETY: the calls used here (getppid, getpgid, getpid) only read their integer argument.
    let r = unsafe { libc::syscall(nr, arg) };
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    (r, if r < 0 { e } else { 0 })
}

fn main() {
    let Some(ready) = std::env::args().nth(1) else {
        eprintln!("usage: criu-victim-seccomp-threads READY");
        std::process::exit(2);
    };
    let early = thread(sleep_forever);
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let rd = fds[0];
    let strict = thread(move || {
        // SAFETY: strict mode, then a read into a live buffer; in strict mode only read, write,
        // exit and sigreturn are allowed, and nothing else runs on this thread.
        unsafe {
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_STRICT);
            let mut b = [0u8; 1];
            libc::read(rd, b.as_mut_ptr().cast(), 1);
            libc::syscall(libc::SYS_exit, 0);
        }
    });
    // SAFETY: a prctl with plain integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_NO_NEW_PRIVS");
    install(&deny(libc::SYS_getppid, libc::ENOTTY), 0);
    install(
        &deny(libc::SYS_getpgid, libc::EMLINK),
        SECCOMP_FILTER_FLAG_LOG,
    );
    let late = thread(sleep_forever);
    // SAFETY: the child only sleeps (pause) until it is killed; nothing else runs in it.
    let child = unsafe { libc::fork() };
    if child == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    assert!(child > 0, "fork");
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    std::fs::write(
        &ready,
        format!(
            "ready {} {early} {late} {strict} {child}",
            std::process::id()
        ),
    )
    .expect("ready");
    loop {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if CHECK.swap(false, Ordering::SeqCst) {
            let got = [
                call(libc::SYS_getppid, 0),
                call(libc::SYS_getpgid, 0),
                call(libc::SYS_getpid, 0),
            ];
            let want_err = [libc::ENOTTY, libc::EMLINK];
            let ok = got[0] == (-1, want_err[0])
                && got[1] == (-1, want_err[1])
                && got[2] == (i64::from(std::process::id() as i32), 0);
            let verdict = if ok {
                "check ok".to_string()
            } else {
                format!("check bad {got:?}")
            };
            std::fs::write(format!("{ready}.2"), verdict).expect("verdict");
        }
    }
}
