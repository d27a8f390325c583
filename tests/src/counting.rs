//! The counting victim's checks (`criu-victim-counter` appends the next number to `DIR/count`
//! every few milliseconds) and a restore that hands criu one descriptor of the test's, shared by
//! the `--join-ns` and `--external` namespace tests.
// Unsafe code: dup2 of a descriptor into criu between fork and exec.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::criu_bin;

/// The numbers counted into `d/count` so far.
pub fn counts(d: &Path) -> usize {
    std::fs::read_to_string(d.join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Waits (5 s at most) for the restored counter to count 20 past `past`, and checks the count
/// is unbroken.
///
/// # Panics
/// If it does not count on, or a number is missing or repeated.
pub fn counts_on(d: &Path, past: usize) {
    for _ in 0..250 {
        if counts(d) > past + 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(d.join("count")).unwrap_or_default();
    let n: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(n.len() > past + 20, "the restored counter does not count");
    for (i, v) in n.iter().enumerate() {
        assert_eq!(*v, i as u64 + 1, "the count is broken at line {}", i + 1);
    }
}

/// `criu restore -D IMG -o restore.log -v4 -d --pidfile restored.pid EXTRA`, with `fd` as
/// criu's descriptor 40 (for `--inherit-fd fd[40]:KEY`).
///
/// # Panics
/// If criu cannot be started.
pub fn restore_with_fd(img: &Path, fd: i32, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new(criu_bin());
    c.args([
        "restore",
        "-D",
        img.to_str().expect("utf-8 image path"),
        "-o",
        "restore.log",
        "-v4",
        "-d",
        "--pidfile",
        "restored.pid",
    ])
    .args(extra)
    .stdin(Stdio::null());
    // SAFETY: dup2 between fork and exec only duplicates a descriptor we hold.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(fd, 40) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().expect("run criu")
}
