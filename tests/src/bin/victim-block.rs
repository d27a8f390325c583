//! Victim: blocks in one kind of syscall, so tests can seize it while it sleeps inside the kernel
//! and check that the syscall completes or restarts correctly afterwards.
//!
//! `victim-block MODE [MS]`, MODE one of:
//! - `read`: loops in `read(0)`; prints `got LINE` per line, `eof` and exits 0 at end of input;
//!   a read failing with EINTR prints `eintr` and exits 3.
//! - `read-sig`: like `read`, with `SA_RESTART` handlers counting SIGUSR1 and SIGRTMIN+1
//!   deliveries; prints `got LINE usr1=A rt=B`.
//! - `nanosleep MS`: sleeps MS ms; prints `slept ELAPSED_MS` and exits 0, or exits 3 on EINTR and
//!   4 if it woke early.
//! - `futex MS`: `FUTEX_WAIT` with an MS timeout on a word that nobody changes; prints
//!   `timedout ELAPSED_MS` and exits 0 on ETIMEDOUT, 3 on EINTR, 4 if early, 5 otherwise.
//! - `futex-flag`: prints `flag ADDR` (hex) and waits without timeout until the word at ADDR
//!   becomes non-zero (a tester writes it); prints `flagged WAITS` and exits 0; EINTR exits 3.
//! - `epoll`: `epoll_wait(-1)` on stdin; prints `got LINE eintr=N` per line (N = EINTR returns
//!   seen so far, which the kernel allows for epoll after a stop), `eof` and exits 0.
//!
//! Every mode prints `ready PID` first.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

fn say(s: &str) {
    let mut out = std::io::stdout();
    writeln!(out, "{s}").unwrap();
    out.flush().unwrap();
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn lines(pending: &mut Vec<u8>, buf: &[u8]) -> Vec<String> {
    pending.extend_from_slice(buf);
    let mut out = Vec::new();
    while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=pos).collect();
        out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    out
}

static WORD: AtomicU32 = AtomicU32::new(0);
static USR1: AtomicU32 = AtomicU32::new(0);
static RT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        USR1.fetch_add(1, Ordering::SeqCst);
    } else {
        RT.fetch_add(1, Ordering::SeqCst);
    }
}

fn install_counters() {
    for sig in [libc::SIGUSR1, libc::SIGRTMIN() + 1] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches atomics.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("read");
    let ms: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500);
    if mode == "read-sig" {
        install_counters();
    }
    say(&format!("ready {}", std::process::id()));
    match mode {
        "read" | "read-sig" => {
            let mut pending = Vec::new();
            loop {
                let mut buf = [0u8; 256];
                // SAFETY: read into a local buffer of the given size.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    say(if errno() == libc::EINTR {
                        "eintr"
                    } else {
                        "error"
                    });
                    std::process::exit(3);
                }
                if n == 0 {
                    say("eof");
                    return;
                }
                for l in lines(&mut pending, &buf[..n as usize]) {
                    if mode == "read-sig" {
                        let (u, r) = (USR1.load(Ordering::SeqCst), RT.load(Ordering::SeqCst));
                        say(&format!("got {l} usr1={u} rt={r}"));
                    } else {
                        say(&format!("got {l}"));
                    }
                }
            }
        }
        "nanosleep" => {
            let req = libc::timespec {
                tv_sec: (ms / 1000) as libc::time_t,
                tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
            };
            let t0 = Instant::now();
            // SAFETY: req is valid; rem may be null.
            let rc = unsafe { libc::nanosleep(&req, std::ptr::null_mut()) };
            let el = t0.elapsed().as_millis() as u64;
            if rc != 0 {
                say(&format!("nanosleep errno {}", errno()));
                std::process::exit(3);
            }
            say(&format!("slept {el}"));
            if el < ms {
                std::process::exit(4);
            }
        }
        "futex" => {
            let ts = libc::timespec {
                tv_sec: (ms / 1000) as libc::time_t,
                tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
            };
            let t0 = Instant::now();
            // SAFETY: FUTEX_WAIT on a static word with a valid relative timeout.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    WORD.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    0u32,
                    &ts as *const libc::timespec,
                )
            };
            let el = t0.elapsed().as_millis() as u64;
            let e = errno();
            if rc == 0 || e != libc::ETIMEDOUT {
                say(&format!("futex rc {rc} errno {e}"));
                std::process::exit(if e == libc::EINTR { 3 } else { 5 });
            }
            say(&format!("timedout {el}"));
            if el < ms {
                std::process::exit(4);
            }
        }
        "futex-flag" => {
            say(&format!("flag {:x}", WORD.as_ptr() as usize));
            let mut waits = 0;
            while WORD.load(Ordering::SeqCst) == 0 {
                waits += 1;
                // SAFETY: FUTEX_WAIT on a static word, no timeout.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        WORD.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        0u32,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
                if rc < 0 && errno() == libc::EINTR {
                    say("eintr");
                    std::process::exit(3);
                }
            }
            say(&format!("flagged {waits}"));
        }
        "epoll" => {
            // SAFETY: plain epoll setup on fd 0.
            let ep = unsafe { libc::epoll_create1(0) };
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            // SAFETY: ev is valid for the call.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, 0, &mut ev) };
            let mut eintr = 0;
            let mut pending = Vec::new();
            loop {
                let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
                // SAFETY: out has room for one event.
                let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, -1) };
                if n < 0 {
                    if errno() == libc::EINTR {
                        eintr += 1;
                        continue;
                    }
                    say("error");
                    std::process::exit(5);
                }
                let mut buf = [0u8; 256];
                // SAFETY: read into a local buffer.
                let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if r <= 0 {
                    say("eof");
                    return;
                }
                for l in lines(&mut pending, &buf[..r as usize]) {
                    say(&format!("got {l} eintr={eintr}"));
                }
            }
        }
        other => {
            say(&format!("unknown mode {other}"));
            std::process::exit(2);
        }
    }
}
