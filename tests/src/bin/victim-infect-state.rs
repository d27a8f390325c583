//! Victim for the infection tests: holds state that an infection must leave untouched, and
//! checks it itself.
//!
//! `victim-infect-state [DIR]`: changes into DIR (if given), installs an alternate signal stack,
//! blocks SIGUSR2 and SIGWINCH, installs a SIGUSR1 handler that runs on the alternate stack and
//! counts, opens a pipe holding the bytes `pipe-data` (write end closed) and a file under DIR (or
//! the current directory) holding `file-data`, and starts a worker thread that bumps a counter
//! every millisecond. Prints
//! `ready PID COUNTER_ADDR PIPE_FD FILE_FD` (COUNTER_ADDR in hex), then reads commands from stdin
//! (the main thread sits in `read(0)`):
//! - `check`: compares the signal mask, the alternate stack and the SIGUSR1 disposition with what
//!   it set up and that the worker still counts; prints `ok check N` (N = counter) or
//!   `bad WHAT`;
//! - `usr1`: prints `usr1 N`, the number of SIGUSR1 the handler saw (and whether each ran on the
//!   alternate stack: `usr1 N offstack M`);
//! - `quit` or end of input: runs `check` once more, then exits 0 if every check passed, 1 if not.

use std::ffi::CString;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The counter the worker bumps; its address is printed for samplers.
static COUNTER: AtomicU64 = AtomicU64::new(0);
static USR1: AtomicU64 = AtomicU64::new(0);
static USR1_OFFSTACK: AtomicU64 = AtomicU64::new(0);
static ALT_LO: AtomicU64 = AtomicU64::new(0);
static ALT_HI: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

const ALT_SIZE: usize = 64 * 1024;

extern "C" fn on_usr1(_sig: libc::c_int) {
    let here = &raw const _sig as u64;
    if here < ALT_LO.load(Ordering::Relaxed) || here >= ALT_HI.load(Ordering::Relaxed) {
        USR1_OFFSTACK.fetch_add(1, Ordering::Relaxed);
    }
    USR1.fetch_add(1, Ordering::Relaxed);
}

struct Expected {
    mask: libc::sigset_t,
    alt: libc::stack_t,
}

fn current_mask() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigprocmask with a null new set only fills `old`.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
        old
    }
}

fn current_alt() -> libc::stack_t {
    // SAFETY: stack_t is plain data; sigaltstack with a null new stack only fills `old`.
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut old);
        old
    }
}

fn check(exp: &Expected, last: &mut u64) -> Result<u64, String> {
    let mask = current_mask();
    for sig in 1..=64 {
        // SAFETY: both sets are initialised; sigismember only reads them.
        let (a, b) = unsafe {
            (
                libc::sigismember(&mask, sig),
                libc::sigismember(&exp.mask, sig),
            )
        };
        if a != b {
            return Err(format!("sigmask signal {sig}: now {a}, was {b}"));
        }
    }
    let alt = current_alt();
    if alt.ss_sp != exp.alt.ss_sp
        || alt.ss_size != exp.alt.ss_size
        || alt.ss_flags != exp.alt.ss_flags
    {
        return Err(format!(
            "sigaltstack now {:?}/{}/{}, was {:?}/{}/{}",
            alt.ss_sp, alt.ss_size, alt.ss_flags, exp.alt.ss_sp, exp.alt.ss_size, exp.alt.ss_flags
        ));
    }
    // SAFETY: sigaction with a null new action only fills `old`.
    let handler = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut old);
        old.sa_sigaction
    };
    if handler != on_usr1 as *const () as usize {
        return Err(format!("SIGUSR1 handler now {handler:#x}"));
    }
    let before = COUNTER.load(Ordering::Relaxed);
    let mut now = before;
    for _ in 0..200 {
        now = COUNTER.load(Ordering::Relaxed);
        if now > before && now > *last {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if now <= *last || now <= before {
        return Err(format!("worker stopped counting at {now}"));
    }
    *last = now;
    Ok(now)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(dir) = args.get(1) {
        std::env::set_current_dir(dir).expect("chdir");
    }
    // Alternate signal stack.
    let alt_mem = Box::leak(vec![0u8; ALT_SIZE].into_boxed_slice());
    ALT_LO.store(alt_mem.as_ptr() as u64, Ordering::Relaxed);
    ALT_HI.store(alt_mem.as_ptr() as u64 + ALT_SIZE as u64, Ordering::Relaxed);
    let alt = libc::stack_t {
        ss_sp: alt_mem.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: ALT_SIZE,
    };
    // SAFETY: alt describes leaked memory that lives for the whole process.
    assert_eq!(unsafe { libc::sigaltstack(&alt, std::ptr::null_mut()) }, 0);
    // SIGUSR1 handler on the alternate stack.
    // SAFETY: the handler only touches atomics (async-signal-safe); sigaction is plain data.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        sa.sa_flags = libc::SA_ONSTACK | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    // Worker thread (spawned before the mask change: it keeps the default mask).
    let worker = std::thread::spawn(|| {
        // The alternate stack is the main thread's only (sigaltstack is per thread): keep
        // process-directed SIGUSR1 away from the worker so the handler always runs on it.
        // SAFETY: a sigset_t on the stack, filled by sigemptyset/sigaddset before use; changing
        // this thread's own mask has no other effect.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        while !STOP.load(Ordering::Relaxed) {
            COUNTER.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    // Block SIGUSR2 and SIGWINCH in the main thread.
    // SAFETY: plain sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigaddset(&mut set, libc::SIGWINCH);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // A pipe with data in it, write end closed.
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 returns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fds[1] is the pipe's write end we own; the buffer is 9 valid bytes.
    unsafe {
        assert_eq!(libc::write(fds[1], b"pipe-data".as_ptr().cast(), 9), 9);
        libc::close(fds[1]);
    }
    let name = format!("victim-infect-state.{}", std::process::id());
    std::fs::write(&name, b"file-data").expect("write file");
    let cname = CString::new(name.clone()).expect("name");
    // SAFETY: cname is a valid NUL-terminated path.
    let file_fd = unsafe { libc::open(cname.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(file_fd >= 0);
    std::fs::remove_file(&name).expect("unlink file");

    let exp = Expected {
        mask: current_mask(),
        alt: current_alt(),
    };
    println!(
        "ready {} {:#x} {} {}",
        std::process::id(),
        &raw const COUNTER as usize,
        fds[0],
        file_fd
    );
    std::io::stdout().flush().ok();

    let mut all_ok = true;
    let mut last = 0;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let line = match lines.next() {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                println!("bad stdin {e}");
                all_ok = false;
                break;
            }
            None => break,
        };
        match line.trim() {
            "check" => match check(&exp, &mut last) {
                Ok(n) => println!("ok check {n}"),
                Err(e) => {
                    all_ok = false;
                    println!("bad {e}");
                }
            },
            "usr1" => println!(
                "usr1 {} offstack {}",
                USR1.load(Ordering::Relaxed),
                USR1_OFFSTACK.load(Ordering::Relaxed)
            ),
            "quit" => break,
            other => println!("unknown {other}"),
        }
        std::io::stdout().flush().ok();
    }
    if let Err(e) = check(&exp, &mut last) {
        println!("bad {e}");
        all_ok = false;
    }
    STOP.store(true, Ordering::Relaxed);
    worker.join().ok();
    println!("done {}", if all_ok { "ok" } else { "bad" });
    std::io::stdout().flush().ok();
    std::process::exit(if all_ok { 0 } else { 1 });
}
