//! Incremental dumps: `criu pre-dump` (the tree runs on) with memory tracked by userfaultfd
//! write-protection, then `criu dump --track-mem --prev-images-dir`, which writes only the
//! pages written since; restore from the chain; broken chains; crit reading our chains.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::fs;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, ask_check, assert_ok_log, become_subreaper, criu, criu_in, dirty_round,
    pid_exists, skip_if_not_root, test_lock, wait_exit_timeout, workspace_bin,
};
use criu_images::Pagemap;
use criu_images::pagemap::{PE_PARENT, PE_PRESENT};

const MIB: u64 = 64;
const PAGES: u64 = MIB * 256;

/// Pages stored in `dir`'s pagemap of `pid` and pages left to the parent.
fn counts(dir: &Path, pid: i32) -> (u64, u64) {
    let pm = Pagemap::read(dir.join(format!("pagemap-{pid}.img"))).unwrap();
    let mut present = 0;
    let mut parent = 0;
    for r in pm.runs().unwrap() {
        if r.flags & PE_PRESENT != 0 {
            present += r.nr_pages;
        }
        if r.flags & PE_PARENT != 0 {
            parent += r.nr_pages;
        }
    }
    (present, parent)
}

fn restore_from(img: &Path) -> std::process::Output {
    criu(&[
        "restore",
        "-d",
        "-D",
        img.to_str().unwrap(),
        "-o",
        "restore.log",
        "-v4",
    ])
}

/// Two pre-dumps (splice, then read mode) while the victim keeps writing, then the final dump:
/// each pre-dump leaves the victim running; the second pre-dump and the dump store only about
/// the 10 % written since (plus a little stack and heap), the rest as parent entries; the
/// tracking descriptor is in no image; the restore from the chain passes the victim's own
/// check of every byte. A chain with a missing parent pagemap is refused clearly.
#[test]
fn predumps_then_dump_store_only_what_changed_and_restore() {
    skip_if_not_root!("predumps_then_dump_store_only_what_changed_and_restore");
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

    criu_in(&d1, "pre-dump", &["pre-dump", "-t", &t]);
    assert!(pid_exists(pid), "pre-dump left the victim running");
    let (present, parent) = counts(&d1, pid);
    assert!(present >= PAGES, "first pre-dump stored {present} pages");
    assert_eq!(parent, 0);
    assert!(d1.join("inventory.img").exists());
    assert!(!d1.join("parent").exists());

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
            "--pre-dump-mode",
            "read",
        ],
    );
    assert!(pid_exists(pid));
    assert_eq!(fs::read_link(d2.join("parent")).unwrap(), Path::new("../1"));
    let (present, parent) = counts(&d2, pid);
    // 10 % of the area, the new 64 KiB area, and some stack, heap and libc data.
    assert!(
        (PAGES / 10..PAGES / 10 + 400).contains(&present),
        "second pre-dump stored {present} pages"
    );
    assert!(
        parent >= PAGES * 8 / 10,
        "{parent} pages left to the parent"
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
    let (present, parent) = counts(&d3, pid);
    assert!(
        (PAGES / 10..PAGES / 10 + 400).contains(&present),
        "the dump stored {present} pages"
    );
    assert!(
        parent >= PAGES * 8 / 10,
        "{parent} pages left to the parents"
    );
    // The tracking userfaultfd is not among the saved files.
    let files = fs::read(d3.join("files.img")).unwrap();
    assert!(
        !String::from_utf8_lossy(&files).contains("userfaultfd"),
        "the tracking descriptor was dumped"
    );

    // A parent without the task's pagemap: a clear error, nothing restored.
    let moved = d1.join("moved-away");
    fs::rename(d1.join(format!("pagemap-{pid}.img")), &moved).unwrap();
    let o = restore_from(&d3);
    assert!(!o.status.success(), "restore from a broken chain succeeded");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken parent images chain"), "{err}");
    assert!(!pid_exists(pid));
    fs::rename(&moved, d1.join(format!("pagemap-{pid}.img"))).unwrap();

    let o = restore_from(&d3);
    assert_ok_log(&o, "criu restore", &d3.join("restore.log"));
    let task = Spawned::guard(pid);
    let check = s.ready.with_extension("2");
    assert_eq!(ask_check(task.pid(), &check).trim(), "check ok");
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = fs::read_link(e.unwrap().path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("userfaultfd"),
            "{target:?}"
        );
    }
}

/// A dump whose parent link is missing or points nowhere fails the restore with a message
/// naming the chain, and crit shows our pagemaps with CRIU's flag names.
#[test]
fn chain_errors_and_crit() {
    skip_if_not_root!("chain_errors_and_crit");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-dirtier"),
        &["8", s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(30),
    );
    let pid = v.pid();
    let t = pid.to_string();
    let (d1, d2) = (s.img.join("1"), s.img.join("2"));
    criu_in(&d1, "pre-dump", &["pre-dump", "-t", &t]);
    dirty_round(pid, &s.ready, 1);
    criu_in(
        &d2,
        "dump",
        &["dump", "-t", &t, "--track-mem", "--prev-images-dir", "../1"],
    );
    let _ = wait_exit_timeout(pid, Duration::from_secs(5));
    v.mark_reaped();
    let (_, parent) = counts(&d2, pid);
    assert!(parent > 0);

    let crit = workspace_bin("crit", "crit");
    let o = std::process::Command::new(&crit)
        .args([
            "show",
            d2.join(format!("pagemap-{pid}.img")).to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("PE_PARENT") && out.contains("PE_PRESENT"),
        "{out}"
    );

    // The parent link gone.
    fs::remove_file(d2.join("parent")).unwrap();
    let o = restore_from(&d2);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken parent images chain") && err.contains("no parent link"),
        "{err}"
    );
    // A link that loops back on itself.
    std::os::unix::fs::symlink(".", d2.join("parent")).unwrap();
    let o = restore_from(&d2);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("loops"), "{err}");
    assert!(!pid_exists(pid));
}

/// `criu check --feature mem_dirty_track` says supported (this kernel has userfaultfd
/// write-protect tracking), and `--pre-dump-mode` takes only `read` and `splice`.
#[test]
fn feature_and_options() {
    let o = criu(&["check", "--feature", "mem_dirty_track"]);
    if compel_criu_tests::is_root() {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "mem_dirty_track is supported"
        );
    }
    let o = criu(&["pre-dump", "-t", "1", "--pre-dump-mode", "copy"]);
    assert!(!o.status.success());
}
