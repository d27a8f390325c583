//! `--network-lock iptables|nftables|skip` on a counter in a network namespace of its own
//! (loopback only, with a table of its own that must survive). An action script records the
//! `network-lock`/`network-unlock` stages and, at `post-dump` and `post-restore` (the tree
//! frozen / not yet resumed), the namespace's `nft list ruleset` and `iptables-save`: the lock
//! is there then, and gone once `criu dump -R` or `criu restore` has finished, or once a dump
//! failed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, assert_ok_log, become_subreaper, criu_dump, dump_and_reap, is_root, restore_detached,
    test_lock, wait_file,
};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn usable() -> bool {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return false;
    }
    if !(have("nft") && have("iptables") && have("nsenter")) {
        eprintln!("skipped: needs nft, iptables and nsenter");
        return false;
    }
    true
}

/// A counter in a new network namespace with `lo` up and a table `inet mine`.
fn spawn_in_netns(d: &Path) -> Spawned {
    let ready = d.join("ready");
    let script = format!(
        "set -e
ip link set lo up
nft add table inet mine
nft add chain inet mine input '{{ type filter hook input priority 0; }}'
exec {} {} {}\n",
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        d.join("out").display(),
        ready.display()
    );
    let v = Spawned::spawn(
        "/usr/bin/unshare",
        &["-n", "sh", "-c", &script],
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// The action script: stages into `actions`, the rules at post-dump/post-restore into
/// `STAGE.rules`; fails the stage named in a file `fail-STAGE`.
fn action_script(d: &Path) -> String {
    let path = d.join("action.sh");
    let dir = d.display();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh
a=$CRTOOLS_SCRIPT_ACTION
case $a in
network-lock|network-unlock) echo $a >> {dir}/actions ;;
post-dump|post-restore)
  {{ nsenter -t $CRTOOLS_INIT_PID -n nft list ruleset
     nsenter -t $CRTOOLS_INIT_PID -n iptables-save; }} > {dir}/$a.rules 2>&1 ;;
esac
[ -e {dir}/fail-$a ] && exit 1
exit 0
"
        ),
    )
    .unwrap();
    Command::new("chmod")
        .args(["+x", path.to_str().unwrap()])
        .status()
        .unwrap();
    path.to_str().unwrap().to_string()
}

/// The namespace's rules now (nft ruleset and iptables-save).
fn rules(pid: i32) -> String {
    let t = pid.to_string();
    let mut s = String::new();
    for cmd in [&["nft", "list", "ruleset"][..], &["iptables-save"][..]] {
        let o = Command::new("nsenter")
            .args(["-t", &t, "-n"])
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        s.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    s
}

/// Whether `rules` hold the lock of `method`.
fn locked(method: &str, rules: &str) -> bool {
    match method {
        "nftables" => rules.contains("table inet CRIU") && rules.contains("policy drop"),
        "iptables" => rules.contains("-A INPUT -j CRIU") && rules.contains("-A CRIU -j DROP"),
        _ => unreachable!(),
    }
}

fn no_lock_left(rules: &str) {
    assert!(!rules.contains("CRIU"), "a lock rule is left:\n{rules}");
    assert!(
        rules.contains("table inet mine"),
        "our table is gone:\n{rules}"
    );
}

fn take(d: &Path, name: &str) -> String {
    let p = d.join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_default();
    let _ = std::fs::remove_file(p);
    s
}

fn counted(d: &Path) -> usize {
    std::fs::read_to_string(d.join("out"))
        .unwrap()
        .lines()
        .count()
}

fn round_trip(method: &str) {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let script = action_script(d);
    let lock = ["--network-lock", method, "--action-script", &script];

    // dump -R: locked while frozen, unlocked after, the tree runs on.
    let mut v = spawn_in_netns(d);
    let img = d.join("img-r");
    std::fs::create_dir(&img).unwrap();
    let o = criu_dump(
        v.pid(),
        &img,
        &[&["-R", "-o", "dump.log"][..], &lock].concat(),
    );
    assert_ok_log(&o, "criu dump -R", &img.join("dump.log"));
    let at = take(d, "post-dump.rules");
    assert!(locked(method, &at), "no {method} lock at post-dump:\n{at}");
    assert_eq!(take(d, "actions"), "network-lock\nnetwork-unlock\n");
    no_lock_left(&rules(v.pid()));

    // dump (the tree dies locked), restore: locked until post-restore, unlocked after.
    let img = d.join("img");
    dump_and_reap(&mut v, &img, &lock);
    assert_eq!(take(d, "actions"), "network-lock\n");
    let pid = restore_detached(&img, &lock);
    let _r = Spawned::guard(pid);
    let at = take(d, "post-restore.rules");
    assert!(
        locked(method, &at),
        "no {method} lock at post-restore:\n{at}"
    );
    assert_eq!(take(d, "actions"), "network-unlock\n");
    no_lock_left(&rules(pid));
    let n = counted(d);
    std::thread::sleep(Duration::from_millis(300));
    assert!(counted(d) > n, "the restored counter does not count");
}

#[test]
fn nftables_lock_holds_while_frozen_and_goes_after() {
    if usable() {
        round_trip("nftables");
    }
}

#[test]
fn iptables_lock_holds_while_frozen_and_goes_after() {
    if usable() {
        round_trip("iptables");
    }
}

#[test]
fn skip_runs_the_scripts_and_adds_no_rule() {
    if !usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let script = action_script(d);
    let v = spawn_in_netns(d);
    let img = d.join("img");
    std::fs::create_dir(&img).unwrap();
    let o = criu_dump(
        v.pid(),
        &img,
        &[
            "-R",
            "-o",
            "dump.log",
            "--network-lock",
            "skip",
            "--action-script",
            &script,
        ],
    );
    assert_ok_log(&o, "criu dump -R", &img.join("dump.log"));
    assert_eq!(take(d, "actions"), "network-lock\nnetwork-unlock\n");
    no_lock_left(&take(d, "post-dump.rules"));
}

#[test]
fn a_failed_dump_leaves_no_lock() {
    if !usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let script = action_script(d);
    std::fs::write(d.join("fail-post-dump"), "").unwrap();
    let v = spawn_in_netns(d);
    for method in ["nftables", "iptables"] {
        let img = d.join(format!("img-{method}"));
        std::fs::create_dir(&img).unwrap();
        let o = criu_dump(
            v.pid(),
            &img,
            &[
                "-o",
                "dump.log",
                "--network-lock",
                method,
                "--action-script",
                &script,
            ],
        );
        assert!(!o.status.success(), "the dump succeeded");
        let at = take(d, "post-dump.rules");
        assert!(locked(method, &at), "no {method} lock at post-dump:\n{at}");
        no_lock_left(&rules(v.pid()));
        let n = counted(d);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            counted(d) > n,
            "the tree did not run on after a failed dump"
        );
    }
}

#[test]
fn a_bad_method_is_refused() {
    // A pid that cannot exist and a throwaway directory: should the option ever be accepted,
    // the dump finds nothing to take (never init into `/`).
    let d = tempfile::tempdir().unwrap();
    let o = compel_criu_tests::criu(&[
        "dump",
        "-t",
        "1073741808",
        "-D",
        d.path().to_str().unwrap(),
        "--network-lock",
        "ipfw",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("network-lock"), "{err}");
}
