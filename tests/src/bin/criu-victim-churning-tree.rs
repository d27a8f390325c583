//! Dump victim: a process that never stops changing its tree. Its main loop forks a child
//! (which forks and reaps a grandchild every other round, then exits with a known code) and
//! starts a thread (which returns a known value), reaps and joins them and checks both results.
//! A second thread keeps starting and joining short threads of its own. The number of rounds
//! done is written (as text) to the file given as the first argument; the victim exits 3 if a
//! result is ever wrong.

use std::io::{Seek, SeekFrom, Write};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: criu-victim-churning-tree COUNTER_FILE");
        std::process::exit(2);
    };
    let mut out = std::fs::File::create(&path).expect("counter file");
    std::thread::spawn(|| {
        let mut n: u64 = 0;
        loop {
            let h = std::thread::spawn(move || n.wrapping_mul(3));
            if h.join().ok() != Some(n.wrapping_mul(3)) {
                std::process::exit(3);
            }
            n += 1;
        }
    });
    let mut round: u64 = 0;
    loop {
        let code = (round % 50) as i32;
        let nested = round.is_multiple_of(2);
        // SAFETY: the child only makes async-signal-safe calls (fork, waitpid, _exit).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            if nested {
                // SAFETY: the child is single-threaded and the grandchild only calls _exit.
                let g = unsafe { libc::fork() };
                if g == 0 {
                    // SAFETY: _exit ends the grandchild at once.
                    unsafe { libc::_exit(0) };
                }
                let mut st = 0;
                // SAFETY: waits for its own child g only.
                if g < 0 || unsafe { libc::waitpid(g, &mut st, 0) } != g {
                    // SAFETY: _exit ends the child at once, without the parent's exit handlers.
                    unsafe { libc::_exit(99) };
                }
            }
            // SAFETY: _exit ends the child without running the parent's handlers.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            std::process::exit(4);
        }
        let r = round;
        let t = std::thread::spawn(move || r.wrapping_add(7));
        let mut st = 0;
        // SAFETY: waits for the child just forked only.
        let w = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
        if w != pid || !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != code {
            eprintln!("round {round}: child {pid} status {st:#x}");
            std::process::exit(3);
        }
        if t.join().ok() != Some(round.wrapping_add(7)) {
            std::process::exit(3);
        }
        round += 1;
        if round.is_multiple_of(16) {
            let _ = out.seek(SeekFrom::Start(0));
            let _ = writeln!(out, "{round:20}");
        }
    }
}
