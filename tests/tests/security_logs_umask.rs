//! Logs and image files criu creates, from the command line (issue 23; the service's clients
//! are covered by `criu_security.rs::images_written_for_a_client_get_its_umask`):
//!
//! - a log file is created `0600` whatever the umask (even `000`), and never through a
//!   symlink: a link planted at the log's path (in the images/work directory, or given as an
//!   absolute `-o`) makes the dump or restore fail naming the log, the link's target is left
//!   as it was, the dumped process runs on, a refused restore starts nothing;
//! - image files get the caller's umask (`0600` under `077`, `0664` under `002`, `0644` under
//!   `022`) and are never written through a symlink (`security_symlinks.rs` plants links at
//!   every image name a dump writes first).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use compel_criu_tests::{
    Spawned, become_subreaper, criu_bin, dump_and_reap, open_dir, pid_exists, spawn_counter,
    test_lock,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// `criu ARGS` run under umask `mask`.
fn criu_with_umask(mask: u32, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {mask:03o}; exec \"$0\" \"$@\""))
        .arg(criu_bin())
        .args(args)
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn counting_on(d: &Path) -> bool {
    let n = || {
        std::fs::read_to_string(d.join("count"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = n();
    std::thread::sleep(Duration::from_millis(200));
    n() > before + 5
}

/// A file outside the images directory, and a link to it at `link`.
fn plant(link: &Path, target: &Path) {
    std::fs::write(target, "precious\n").unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn logs_are_0600_and_images_follow_the_umask() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let v = spawn_counter(COUNTER, d.path(), None);
    let pid = v.pid().to_string();
    for (i, (mask, want)) in [
        (0o077u32, 0o600u32),
        (0o002, 0o664),
        (0o022, 0o644),
        (0, 0o666),
    ]
    .into_iter()
    .enumerate()
    {
        let img = d.path().join(format!("img{i}"));
        std::fs::create_dir(&img).unwrap();
        let o = criu_with_umask(
            mask,
            &[
                "dump",
                "-t",
                &pid,
                "-D",
                img.to_str().unwrap(),
                "-o",
                "dump.log",
                "--leave-running",
            ],
        );
        assert!(
            o.status.success(),
            "dump under umask {mask:03o}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for f in [
            format!("core-{pid}.img"),
            "inventory.img".into(),
            "pstree.img".into(),
            "pages-1.img".into(),
        ] {
            assert_eq!(mode(&img.join(&f)), want, "{f} under umask {mask:03o}");
        }
        assert_eq!(
            mode(&img.join("dump.log")),
            0o600,
            "the log under umask {mask:03o}"
        );
    }
    assert!(counting_on(d.path()));
}

#[test]
fn a_symlink_at_the_log_path_stops_the_dump_and_its_target_is_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let v = spawn_counter(COUNTER, d.path(), None);
    let pid = v.pid().to_string();
    // In the images directory (the log's directory when -o is relative).
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let target = d.path().join("precious");
    plant(&img.join("dump.log"), &target);
    let o = criu_with_umask(
        0o022,
        &[
            "dump",
            "-t",
            &pid,
            "-D",
            img.to_str().unwrap(),
            "-o",
            "dump.log",
            "--leave-running",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the dump logged through a link");
    assert!(
        err.contains("dump.log"),
        "the refusal does not name the log: {err}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(!img.join("inventory.img").exists(), "images were written");
    assert!(counting_on(d.path()), "the counter stopped");
    // An absolute -o naming a link.
    let img2 = d.path().join("img2");
    std::fs::create_dir(&img2).unwrap();
    let link = d.path().join("abs.log");
    let target2 = d.path().join("precious2");
    plant(&link, &target2);
    let o = criu_with_umask(
        0o022,
        &[
            "dump",
            "-t",
            &pid,
            "-D",
            img2.to_str().unwrap(),
            "-o",
            link.to_str().unwrap(),
            "--leave-running",
        ],
    );
    assert!(!o.status.success(), "the dump logged through a link");
    assert_eq!(std::fs::read_to_string(&target2).unwrap(), "precious\n");
    assert!(counting_on(d.path()), "the counter stopped");
    drop(v);
}

#[test]
fn a_symlink_at_the_log_path_stops_the_restore_before_anything_runs() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let pid = v.pid();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let target = d.path().join("precious");
    plant(&img.join("restore.log"), &target);
    let o = criu_with_umask(
        0o022,
        &[
            "restore",
            "-D",
            img.to_str().unwrap(),
            "-o",
            "restore.log",
            "-d",
        ],
    );
    let restored = Spawned::guard(pid);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the restore logged through a link");
    assert!(
        err.contains("restore.log"),
        "the refusal does not name the log: {err}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(!pid_exists(pid), "a task {pid} runs");
    drop(restored);
}
