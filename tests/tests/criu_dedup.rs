//! `--auto-dedup` and `criu dedup`: once a newer dump of a chain holds pages itself, their old
//! copies are punched out of the parents' pages files (which shrink on disk, keeping their
//! size and offsets), and the chain still restores.
//!
//! The test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, become_subreaper, criu_in, dirty_round, pid_exists, restore_and_check,
    skip_if_not_root, test_lock, wait_exit_timeout,
};

const MIB: usize = 16;

/// Bytes on disk (`st_blocks` * 512) and the size of the pages file of `pid` in `dir`.
fn pages_file(dir: &Path, pid: i32) -> (u64, u64) {
    let pm = criu_images::Pagemap::read(dir.join(format!("pagemap-{pid}.img"))).unwrap();
    let md = fs::metadata(dir.join(pm.pages_file_name())).unwrap();
    (md.blocks() * 512, md.len())
}

/// Pre-dump, pre-dump with `--auto-dedup` (the first one's pages file gives back about the
/// 10 % the second one holds), dump, `criu dedup` (the second one's gives back what the dump
/// holds); the chain restores and the victim's check of every byte passes.
#[test]
fn auto_dedup_and_dedup_shrink_parents_and_the_chain_restores() {
    skip_if_not_root!("auto_dedup_and_dedup_shrink_parents_and_the_chain_restores");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-dirtier"),
        &[&MIB.to_string(), s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let t = pid.to_string();
    let (d1, d2, d3) = (s.img.join("1"), s.img.join("2"), s.img.join("3"));
    let tenth = ((MIB as u64) << 20) / 10;

    criu_in(&d1, "pre-dump", &["pre-dump", "-t", &t]);
    let (disk1, len1) = pages_file(&d1, pid);
    assert!(disk1 >= (MIB as u64) << 20, "{disk1} bytes on disk");

    dirty_round(pid, &s.ready, 1);
    criu_in(
        &d2,
        "pre-dump",
        &[
            "pre-dump",
            "-t",
            &t,
            "--track-mem",
            "--prev-images-dir",
            "../1",
            "--auto-dedup",
        ],
    );
    let (disk1b, len1b) = pages_file(&d1, pid);
    assert_eq!(len1b, len1, "the parent's pages file keeps its size");
    // The victim rewrote 10 % (1.6 MiB) of its area: at least that much was punched.
    assert!(
        disk1 - disk1b >= tenth * 8 / 10,
        "the parent gave back {} bytes ({disk1} -> {disk1b})",
        disk1 - disk1b
    );

    dirty_round(pid, &s.ready, 2);
    criu_in(
        &d3,
        "dump",
        &["dump", "-t", &t, "--track-mem", "--prev-images-dir", "../2"],
    );
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(5)),
        Ok(Some(compel_criu_tests::Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    let (disk2, _) = pages_file(&d2, pid);
    criu_in(&d3, "dedup", &["dedup"]);
    let (disk2b, _) = pages_file(&d2, pid);
    let (disk1c, _) = pages_file(&d1, pid);
    assert!(
        disk2 > disk2b && disk1b >= disk1c,
        "criu dedup gave nothing back: {disk2} -> {disk2b}, {disk1b} -> {disk1c}"
    );
    assert!(!pid_exists(pid));
    restore_and_check(pid, &d3, &s.ready);
}
