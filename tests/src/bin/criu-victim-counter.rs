//! criu test victim: a counter that keeps counting into a file.
//!
//! `criu-victim-counter OUT READY`: opens OUT for appending and writes `1\n`, `2\n`, ... every
//! 5 ms; after the first line it writes `ready PID` into READY. After a dump and restore it keeps
//! counting from where it was, so OUT holds an unbroken sequence.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(out), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-counter OUT READY");
        std::process::exit(2);
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .expect("open output");
    let mut n: u64 = 0;
    loop {
        n += 1;
        writeln!(f, "{n}").expect("write");
        if n == 1 {
            std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
