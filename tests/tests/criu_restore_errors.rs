//! criu restore failures: a busy pid, damaged, truncated or missing images and a step failing
//! inside the new task end the restore cleanly, say what went wrong and leave nothing behind.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::path::PathBuf;

use compel_criu_tests::{
    SINGLE_PID, become_subreaper, copy_dir, detached, fixture_usable, fixtures_dir,
    install_fixture_binary, pid_exists, skip_if_not_root, test_lock,
};
use criu::{RestoreError, restore};

#[test]
fn busy_pid_fails_before_anything_runs() {
    skip_if_not_root!("busy_pid_fails_before_anything_runs");
    let _g = test_lock();
    // Our own pid is certainly taken: point a copy of the fixture at it.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&fixtures_dir().join("single"), t.path());
    let me = std::process::id();
    let pstree = criu_images::pb::PstreeEntry {
        pid: me,
        ppid: 0,
        pgid: me,
        sid: me,
        threads: vec![me],
    };
    let d = criu_images::ImageDir::new(t.path());
    d.write_pstree(&[pstree]).unwrap();
    for name in ["core", "mm", "ids", "fs", "pagemap"] {
        fs::rename(
            t.path().join(format!("{name}-{SINGLE_PID}.img")),
            t.path().join(format!("{name}-{me}.img")),
        )
        .unwrap();
    }
    let _bin = install_fixture_binary();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(
        matches!(err, RestoreError::PidBusy { pid } if pid == me as i32),
        "{err:?}"
    );
    assert!(err.to_string().contains(&me.to_string()));
}

#[test]
fn corrupt_or_truncated_images_fail_cleanly() {
    skip_if_not_root!("corrupt_or_truncated_images_fail_cleanly");
    let _g = test_lock();
    let _bin = install_fixture_binary();
    let src = fixtures_dir().join("single");
    // (file, damage, what the message must name)
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "core-12791.img",
            |b| b.truncate(b.len() / 2),
            "core-12791.img",
        ),
        ("mm-12791.img", |b| b[0] ^= 0xff, "mm-12791.img"),
        ("pagemap-12791.img", |b| b.truncate(20), "pagemap-12791.img"),
        ("pages-1.img", |b| b.truncate(4096), "pages-1.img"),
        ("inventory.img", |b| b.clear(), "inventory.img"),
    ];
    for (file, damage, needle) in cases {
        let t = tempfile::tempdir().unwrap();
        copy_dir(&src, t.path());
        let p = t.path().join(file);
        let mut b = fs::read(&p).unwrap();
        damage(&mut b);
        fs::write(&p, &b).unwrap();
        let err = restore(&detached(t.path()), None).expect_err(file);
        let msg = err.to_string();
        assert!(msg.contains(needle), "{file}: {msg}");
        assert!(!pid_exists(SINGLE_PID) || !matches!(err, RestoreError::Task { .. }));
    }
    // A missing image.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    fs::remove_file(t.path().join("fs-12791.img")).unwrap();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(err.to_string().contains("fs-12791.img"), "{err}");
}

#[test]
fn damaged_images_never_panic_the_reader() {
    // Deterministic pseudo-random damage (xorshift) to every image but the raw pages: reading
    // must end in a result, never a panic.
    let _g = test_lock();
    let _bin = install_fixture_binary();
    let src = fixtures_dir().join("single");
    assert!(criu::images_plan::load(&src, false).is_ok());
    let files: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pages-")
        })
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    let mut errors = 0;
    for round in 0..300 {
        let f = &files[(next() % files.len() as u64) as usize];
        let name = f.file_name().unwrap();
        let orig = fs::read(f).unwrap();
        let mut b = orig.clone();
        match round % 3 {
            0 => b.truncate((next() % (b.len() as u64 + 1)) as usize),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() % b.len().max(1) as u64) as usize;
                    if let Some(v) = b.get_mut(i) {
                        *v ^= (next() % 255 + 1) as u8;
                    }
                }
            }
            _ => {
                let i = (next() % (b.len() as u64 + 1)) as usize;
                let junk: Vec<u8> = (0..next() % 16).map(|_| next() as u8).collect();
                b.splice(i..i, junk);
            }
        }
        fs::write(t.path().join(name), &b).unwrap();
        let r = std::panic::catch_unwind(|| criu::images_plan::load(t.path(), false));
        let r =
            r.unwrap_or_else(|_| panic!("the reader panicked on damaged {name:?} (round {round})"));
        errors += r.is_err() as usize;
        fs::write(t.path().join(name), &orig).unwrap();
    }
    assert!(
        errors > 100,
        "only {errors} of 300 damaged image sets were refused"
    );
    assert!(
        errors < 300,
        "every damaged set was refused: the undamaged parts never loaded"
    );
}

#[test]
fn failures_inside_the_new_task_name_the_step_and_leave_nothing() {
    skip_if_not_root!("failures_inside_the_new_task_name_the_step_and_leave_nothing");
    let _g = test_lock();
    become_subreaper();
    let Some(_bin) = fixture_usable() else {
        return;
    };
    let src = fixtures_dir().join("single");

    // A working directory that is gone: the child fails while setting up its directories.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    let d = criu_images::ImageDir::new(t.path());
    let mut files = d.read_files().unwrap();
    let cwd = files.iter_mut().find(|f| f.id == 9).unwrap();
    cwd.reg.as_mut().unwrap().name = "/nonexistent-criu-cwd".into();
    d.write_files(&files).unwrap();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(
        matches!(&err, RestoreError::Task { stage, .. } if *stage == "root, cwd and umask"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ENOENT"), "{err}");
    assert!(!pid_exists(SINGLE_PID), "the failed task was left behind");

    // A POSIX timer on a clock that does not exist: the restorer fails at its timers.
    let t = tempfile::tempdir().unwrap();
    copy_dir(&src, t.path());
    let d = criu_images::ImageDir::new(t.path());
    let mut core = d.read_core(SINGLE_PID as u32).unwrap();
    core.tc
        .as_mut()
        .unwrap()
        .timers
        .as_mut()
        .unwrap()
        .posix
        .push(criu_images::pb::PosixTimerEntry {
            it_id: 0,
            clock_id: 99,
            si_signo: libc::SIGALRM as u32,
            it_sigev_notify: 0,
            sival_ptr: 0,
            overrun: 0,
            isec: 0,
            insec: 0,
            vsec: 1,
            vnsec: 0,
            notify_thread_id: None,
        });
    d.write_core(SINGLE_PID as u32, &core).unwrap();
    let err = restore(&detached(t.path()), None).unwrap_err();
    assert!(
        matches!(&err, RestoreError::Task { stage, .. } if *stage == "posix timers"),
        "{err:?}"
    );
    assert!(!pid_exists(SINGLE_PID), "the failed task was left behind");
}
