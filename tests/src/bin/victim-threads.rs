//! Victim: `victim-threads N` starts N worker threads that each loop on a 1 ms nanosleep and
//! count rounds, while the main thread reads stdin. Prints `ready PID`, then `tid TID` for every
//! worker; on the line `count` prints `counts C1 C2 ...`; at end of input stops the workers,
//! joins them and prints `done`, exit 0.
//!
//! `victim-threads churn`: one thread keeps creating short-lived threads (each exits at once)
//! while the main thread reads stdin; at end of input prints `done CREATED` and exits 0.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

fn churn() {
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let spawner = {
        let (stop, created) = (stop.clone(), created.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let hs: Vec<_> = (0..4).map(|_| std::thread::spawn(|| ())).collect();
                for h in hs {
                    h.join().unwrap();
                    created.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    spawner.join().unwrap();
    writeln!(out, "done {}", created.load(Ordering::Relaxed)).unwrap();
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("churn") {
        return churn();
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..n {
        let stop = stop.clone();
        let counts = counts.clone();
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            tx.send(unsafe { libc::gettid() }).unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(1));
                counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", std::process::id()).unwrap();
    for _ in 0..n {
        writeln!(out, "tid {}", rx.recv().unwrap()).unwrap();
    }
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "count" {
            let c: Vec<String> = counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed).to_string())
                .collect();
            writeln!(out, "counts {}", c.join(" ")).unwrap();
            out.flush().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    writeln!(out, "done").unwrap();
}
