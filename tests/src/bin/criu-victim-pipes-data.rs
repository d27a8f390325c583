//! criu test victim: pipes holding unread data across a dump and restore.
//!
//! `criu-victim-pipes-data OUT READY`: makes three pipes, fills the first with 5000 bytes, grows
//! the second to 256 KiB and fills it with 200000 bytes, leaves the third empty, and writes
//! `ready PID` into READY. On SIGUSR1 it drains every pipe and writes `ok` into OUT if each held
//! exactly its bytes in order (and the second is still large enough), else `bad: WHY`. Then it
//! sleeps until killed.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + salt as usize) % 251) as u8)
        .collect()
}

fn pipe() -> [i32; 2] {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), 0) }, 0, "pipe2");
    p
}

fn write_all(fd: i32, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writes from a live slice to our own pipe.
        let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        assert!(n > 0, "write to pipe");
        off += n as usize;
    }
}

fn drain(fd: i32) -> Vec<u8> {
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: reads into a live buffer of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

fn check(a: i32, b: i32, c: i32) -> Result<(), String> {
    // SAFETY: fcntl on our own descriptor.
    let size = unsafe { libc::fcntl(b, libc::F_GETPIPE_SZ) };
    if size < 200_000 {
        return Err(format!("second pipe holds only {size} bytes"));
    }
    for (fd, len, salt) in [(a, 5000, 1u8), (b, 200_000, 2)] {
        let got = drain(fd);
        if got != pattern(len, salt) {
            return Err(format!(
                "pipe at fd {fd}: {} bytes, not its {len}",
                got.len()
            ));
        }
    }
    let rest = drain(c);
    if !rest.is_empty() {
        return Err(format!("empty pipe holds {} bytes", rest.len()));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(out), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-pipes-data OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let a = pipe();
    let b = pipe();
    let c = pipe();
    // SAFETY: fcntl on our own descriptor.
    let sz = unsafe { libc::fcntl(b[1], libc::F_SETPIPE_SZ, 256 * 1024) };
    assert!(sz >= 200_000, "F_SETPIPE_SZ");
    write_all(a[1], &pattern(5000, 1));
    write_all(b[1], &pattern(200_000, 2));
    std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let verdict = match check(a[0], b[0], c[0]) {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    std::fs::write(out, verdict).expect("out");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
