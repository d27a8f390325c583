//! A user namespace whose setgroups is denied (`/proc/PID/setgroups` reads `deny`, written
//! before its maps): the dump saves the state (`userns-ID.setgroups`) and the restored
//! namespace denies setgroups again, with the same maps and a tree that checks itself.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Scratch, Spawned, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    restore_detached, skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};

fn setgroups(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/setgroups"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn user_namespace_keeps_setgroups_deny() {
    skip_if_not_root!("user_namespace_keeps_setgroups_deny");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // The victim writes its verdicts as uid 100000.
    std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut starter = Spawned::spawn(
        criu_victim("ns-user"),
        &[dir.ready.to_str().unwrap(), "deny"],
        &dir.path("victim.log"),
        None,
    );
    let log = || std::fs::read_to_string(dir.path("victim.log")).unwrap_or_default();
    match starter.wait(Duration::from_secs(10)) {
        Some(Exit::Code(0)) => {}
        Some(Exit::Code(3)) => {
            eprintln!("skipped: no user namespace here: {}", log());
            return;
        }
        other => panic!("the starter ended with {other:?}: {}", log()),
    }
    let said = wait_file(&dir.ready, Duration::from_secs(10));
    let init = ready_numbers(&said, 1)[0];
    let mut v = Spawned::guard(init);
    assert_eq!(setgroups(init), "deny");
    dump_and_reap(&mut v, &dir.img, &[]);
    let user = criu_images::ImageDir::new(&dir.img)
        .read_ids(1)
        .unwrap()
        .user_ns_id
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.img.join(format!("userns-{user}.setgroups")))
            .unwrap()
            .trim(),
        "deny"
    );
    let root = restore_detached(&dir.img, &[]);
    let r = Spawned::guard(root);
    assert_eq!(
        setgroups(root),
        "deny",
        "the restored namespace's setgroups"
    );
    let uid_map = std::fs::read_to_string(format!("/proc/{root}/uid_map")).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    let check = dir.ready.with_extension("2");
    let _ = std::fs::remove_file(&check);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(root),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let verdict = wait_file(&check, Duration::from_secs(20));
    assert_eq!(verdict.trim(), "check ok");
    drop(r);
    let _ = wait_exit_timeout(root, Duration::from_secs(1));
}
