//! `--ext-mount-map auto` and `--enable-external-masters` (criu(8); the newer spellings
//! `--external mnt[]` and `--external mnt[]:m`). A counter in a mount namespace of its own
//! (made with `unshare -m --propagation slave`, root bound from a directory and pivoted) with
//! `/usr` and the test binaries bound from the host, not named external, and `/ext`: a bind of
//! a shared tmpfs of the test's, a slave of its peer group outside the namespace.
//!
//! Auto-detection finds the host mounts each of them comes from; with external masters `/ext`
//! comes back a slave of the same host group again, so that a mount the test makes under the
//! host tmpfs after the restore shows up in the restored namespace. Twice, once with each
//! spelling. Without `auto` the dump is refused naming the mount; without the masters flag it
//! is refused naming the master group (and the counter runs on); a restore without `auto` of
//! images made with it fails naming the option.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::mounts::table;
use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu, dump_and_reap, restore_detached, skip_if_not_root,
    test_lock, wait_file,
};

fn sh(script: &str) {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The test's shared tmpfs, unmounted (with what was mounted under it) on drop.
struct Shared(PathBuf);

impl Shared {
    fn new(at: PathBuf) -> Shared {
        std::fs::create_dir_all(&at).unwrap();
        let s = Shared(at);
        let p = s.0.display();
        sh(&format!(
            "mount -t tmpfs -o size=1m crtest-ext {p} && mount --make-shared {p} && \
             mkdir {p}/sub && echo host > {p}/file"
        ));
        s
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(&self.0)
            .status();
    }
}

fn counter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_criu-victim-counter"))
}

fn spawn(d: &Path, root: &Path, shared: &Path) -> Spawned {
    let bins = counter_bin().parent().unwrap().to_path_buf();
    for dir in ["usr", "t", "proc", "data", "ext", "old"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for l in ["bin", "sbin", "lib", "lib64"] {
        let _ = std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l));
    }
    let script = r#"set -e
R="$1"; B="$2"; S="$3"
mount --bind "$R" "$R"
mount --bind /usr "$R/usr"
mount --bind "$B" "$R/t"
mount -t proc proc "$R/proc"
mount -t tmpfs -o size=1m data "$R/data"
echo in > "$R/data/in"
mount --bind "$S" "$R/ext"
cd "$R"; pivot_root . old; umount -l /old
exec /t/criu-victim-counter /data/count /data/ready </data/in >/data/log 2>&1
"#;
    let v = Spawned::spawn(
        "/usr/bin/unshare",
        &[
            "-m",
            "--propagation",
            "slave",
            "sh",
            "-c",
            script,
            "sh",
            root.to_str().unwrap(),
            bins.to_str().unwrap(),
            shared.to_str().unwrap(),
        ],
        &d.join("victim.log"),
        None,
    );
    wait_file(
        &PathBuf::from(format!("/proc/{}/root/data/ready", v.pid())),
        Duration::from_secs(10),
    );
    v
}

fn counts(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/root/data/count"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// The optional fields of `/ext` in `pid`'s mountinfo (`master:N`, ...).
fn ext_propagation(pid: i32) -> String {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let l = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/ext"))
        .unwrap()
        .to_string();
    let f: Vec<&str> = l.split(' ').collect();
    let sep = f.iter().position(|x| *x == "-").unwrap();
    f[6..sep].join(" ")
}

/// A dump that must fail; returns its log.
fn dump_refused(v: &Spawned, img: &Path, extra: &[&str]) -> String {
    std::fs::create_dir_all(img).unwrap();
    let pid = v.pid().to_string();
    let mut args = vec![
        "dump",
        "-t",
        &pid,
        "-D",
        img.to_str().unwrap(),
        "-o",
        "dump.log",
    ];
    args.extend_from_slice(extra);
    let o = criu(&args);
    assert!(!o.status.success(), "the dump succeeded with {extra:?}");
    std::fs::read_to_string(img.join("dump.log")).unwrap_or_default()
}

#[test]
fn external_mounts_found_automatically_and_external_masters_twice() {
    skip_if_not_root!("external_mounts_found_automatically_and_external_masters_twice");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let shared = Shared::new(dir.path("shared"));
    let root = dir.path("root");
    let mut v = spawn(dir.root(), &root, &shared.0);
    let before = table(v.pid());
    let master = ext_propagation(v.pid());
    assert!(master.starts_with("master:"), "/ext is {master:?}");

    // Refusals: the tree runs on.
    let log = dump_refused(&v, &dir.path("img-plain"), &[]);
    assert!(log.contains("cannot be made again"), "{log}");
    let log = dump_refused(&v, &dir.path("img-nomasters"), &["--ext-mount-map", "auto"]);
    assert!(
        log.contains("at /ext is a slave of peer group")
            && log.contains("--enable-external-masters"),
        "{log}"
    );
    let n = counts(v.pid());
    std::thread::sleep(Duration::from_millis(100));
    assert!(counts(v.pid()) > n, "the counter stopped");

    let spellings: [(&[&str], &[&str]); 2] = [
        (
            &["--ext-mount-map", "auto", "--enable-external-masters"],
            &["--ext-mount-map", "auto", "--enable-external-masters"],
        ),
        (&["--external", "mnt[]:m"], &["--external", "mnt[]:m"]),
    ];
    for (round, (dump_opts, restore_opts)) in spellings.iter().enumerate() {
        let img = dir.path(&format!("img{round}"));
        let at_dump = counts(v.pid());
        dump_and_reap(&mut v, &img, dump_opts);
        if round == 0 {
            // Without auto, the restore names the option, before any task exists.
            let o = criu(&[
                "restore",
                "-D",
                img.to_str().unwrap(),
                "-o",
                "restore-noauto.log",
                "-d",
                "--root",
                root.to_str().unwrap(),
            ]);
            assert!(!o.status.success(), "restored without --ext-mount-map auto");
            let log = std::fs::read_to_string(img.join("restore-noauto.log")).unwrap_or_default();
            assert!(log.contains("restore with --ext-mount-map auto"), "{log}");
        }
        let mut args = vec!["--root", root.to_str().unwrap()];
        args.extend_from_slice(restore_opts);
        let pid = restore_detached(&img, &args);
        v = Spawned::guard(pid);
        std::thread::sleep(Duration::from_millis(200));
        assert!(counts(pid) > at_dump, "the count did not go on");
        assert_eq!(table(pid), before, "the mount table changed");
        assert_eq!(ext_propagation(pid), master, "/ext's master group");
        let rd = |p: &str| std::fs::read_to_string(format!("/proc/{pid}/root{p}")).unwrap();
        assert_eq!(rd("/ext/file"), "host\n");
        // A mount made outside under the shared tmpfs reaches the restored /ext.
        let sub = shared.0.join("sub");
        sh(&format!(
            "mount -t tmpfs -o size=64k crtest-ext-sub {0} && echo r{round} > {0}/f",
            sub.display()
        ));
        let seen = std::fs::read_to_string(format!("/proc/{pid}/root/ext/sub/f"));
        sh(&format!("umount {}", sub.display()));
        assert_eq!(
            seen.unwrap_or_default(),
            format!("r{round}\n"),
            "propagation"
        );
    }
    drop(v);
}
