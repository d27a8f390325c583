//! Victim: a single-threaded busy loop. Prints `ready PID`, spins (pure user-mode arithmetic,
//! polling a non-blocking stdin now and then), answers `ping` with `pong ROUNDS`, and on `quit`
//! or end of input prints `done ROUNDS CHECK` and exits 0. CHECK is recomputed at the end from
//! the round count: a mismatch (state corrupted while seized) prints `corrupt` and exits 1.

use std::io::Write;

fn step(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

fn main() {
    // SAFETY: fcntl on fd 0 only changes its file status flags.
    unsafe {
        let fl = libc::fcntl(0, libc::F_GETFL);
        libc::fcntl(0, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    let mut rounds: u64 = 0;
    let mut x: u64 = 1;
    let mut pending = Vec::new();
    'outer: loop {
        for _ in 0..20_000 {
            x = std::hint::black_box(step(x));
        }
        rounds += 1;
        let mut buf = [0u8; 256];
        // SAFETY: read into a local buffer of the given size.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            break;
        }
        if n > 0 {
            pending.extend_from_slice(&buf[..n as usize]);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                match std::str::from_utf8(&line).unwrap_or("").trim() {
                    "quit" => break 'outer,
                    "ping" => {
                        writeln!(out, "pong {rounds}").unwrap();
                        out.flush().unwrap();
                    }
                    _ => {}
                }
            }
        }
    }
    let mut y: u64 = 1;
    for _ in 0..rounds * 20_000 {
        y = step(y);
    }
    if y != x {
        writeln!(out, "corrupt").unwrap();
        std::process::exit(1);
    }
    writeln!(out, "done {rounds} {x:x}").unwrap();
}
