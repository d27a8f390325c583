//! `--unprivileged` over RPC (`criu_opts.unprivileged`): `criu swrk` run as a non-root user
//! whose only capability is CAP_CHECKPOINT_RESTORE (ambient, through `setpriv`) applies the same
//! rules as the command line: a dump without `unprivileged` is refused by name and the process
//! runs on; with it the user's own counter is dumped and restored (cgroups left alone, as
//! CRIU), and counts on; without the capability the request is refused by name.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, Swrk, become_subreaper, criu_bin, criu_victim, have_setpriv, make_world_executable,
    pid_exists, skip_if_not_root, spawn_counter, test_lock, unprivileged_scratch,
    wait_exit_timeout,
};
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};

const NOBODY: u32 = 65534;

/// `criu swrk` as uid/gid `NOBODY`, with CAP_CHECKPOINT_RESTORE (ambient) if `cap`.
fn swrk_as_nobody(cap: bool) -> Swrk {
    make_world_executable(&criu_bin()).unwrap();
    let id = NOBODY.to_string();
    let mut w = vec!["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"];
    if cap {
        w.extend([
            "--inh-caps=-all,+checkpoint_restore",
            "--ambient-caps=+checkpoint_restore",
        ]);
    } else {
        w.push("--inh-caps=-all");
    }
    // Its own home: root's is not readable to it (criu reads ~/.criu/default.conf).
    w.extend(["--", "env", "HOME=/nonexistent"]);
    Swrk::start_under(Duration::from_secs(30), Stdio::inherit(), &w)
}

/// One request of type `ty` over a fresh `criu swrk` as `NOBODY`.
fn call(
    ty: CriuReqType,
    img: &Path,
    log: &str,
    cap: bool,
    f: impl FnOnce(&mut CriuOpts),
) -> CriuResp {
    let mut opts = CriuOpts {
        images_dir_fd: -1,
        images_dir: Some(img.display().to_string()),
        log_file: Some(log.into()),
        log_level: Some(4),
        ..Default::default()
    };
    f(&mut opts);
    let s = swrk_as_nobody(cap);
    let r = s.call(&CriuReq {
        r#type: ty as i32,
        opts: Some(opts),
        ..Default::default()
    });
    let _ = s.finish();
    r
}

fn count(d: &Path) -> usize {
    std::fs::read_to_string(d.join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn swrk_applies_the_unprivileged_rules() {
    skip_if_not_root!("swrk_applies_the_unprivileged_rules");
    if !have_setpriv() {
        eprintln!("skipped: no setpriv");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let t = unprivileged_scratch();
    let d = t.path();
    let img = d.join("img");
    let mut v = spawn_counter(&criu_victim("counter"), d, Some(NOBODY));
    let pid = v.pid();
    let log = |n: &str| std::fs::read_to_string(img.join(n)).unwrap_or_default();

    // Not told `unprivileged`: refused by name, the counter runs on.
    let r = call(CriuReqType::Dump, &img, "dump0.log", true, |o| {
        o.pid = Some(pid);
    });
    assert!(
        !r.success,
        "a non-root dump without unprivileged was accepted"
    );
    let msg = r.cr_errmsg.clone().unwrap_or_default();
    assert!(
        msg.contains("requires --unprivileged"),
        "{msg}\n{}",
        log("dump0.log")
    );
    assert_eq!(r.cr_errno, Some(libc::EPERM));
    // Without the capability: refused by name.
    let r = call(CriuReqType::Dump, &img, "dump1.log", false, |o| {
        o.pid = Some(pid);
        o.unprivileged = Some(true);
    });
    assert!(
        !r.success,
        "a dump without CAP_CHECKPOINT_RESTORE was accepted"
    );
    let msg = r.cr_errmsg.clone().unwrap_or_default();
    assert!(msg.contains("CAP_CHECKPOINT_RESTORE"), "{msg}");
    assert!(pid_exists(pid), "a refused dump touched the counter");
    let n = count(d);
    std::thread::sleep(Duration::from_millis(100));
    assert!(count(d) > n, "the counter stopped after the refusals");

    let r = call(CriuReqType::Dump, &img, "dump.log", true, |o| {
        o.pid = Some(pid);
        o.unprivileged = Some(true);
    });
    assert!(r.success, "{r:?}\n{}", log("dump.log"));
    assert!(
        wait_exit_timeout(pid, Duration::from_secs(5))
            .unwrap()
            .is_some()
    );
    v.mark_reaped();
    let before = count(d);
    let r = call(CriuReqType::Restore, &img, "restore.log", true, |o| {
        o.unprivileged = Some(true);
    });
    let _r = Spawned::guard(pid);
    assert!(r.success, "{r:?}\n{}", log("restore.log"));
    assert_eq!(r.restore.map(|x| x.pid), Some(pid));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap_or_default();
    assert!(
        uid.split_whitespace().all(|u| u == NOBODY.to_string()),
        "the restored counter's ids: {uid}"
    );
    for _ in 0..250 {
        if count(d) > before + 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        count(d) > before + 20,
        "the restored counter does not count"
    );
}
