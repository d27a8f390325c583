//! `criu_opts` fields of issue 16 that change how a run is set up, over `criu swrk`:
//!
//! - `config_file`: a configuration file (criu(8)'s syntax) read over the request's options:
//!   its `leave-running` keeps the victim running, its `action-script` runs at every stage
//!   after the client's own notification, its `log-file` replaces the request's;
//! - `exec_cmd`: once a restore has answered, criu becomes the command, the restored tree its
//!   children, its output in the log;
//! - `lsm_profile` / `lsm_mount_context`: checked as CRIU checks them on a host with no LSM.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, counts_on, open_dir, pid_exists, req, skip_if_not_root,
    spawn_counter, swrk_once, test_lock, wait_exit_timeout,
};
use criu_images::pb::{CriuOpts, CriuReqType};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// An action script that appends `ACTION PID` to `DIR/actions`.
fn recording_script(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION ${{CRTOOLS_INIT_PID:-}}\" >> {}/actions\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn actions(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("actions"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_config_file_s_options_and_action_scripts_apply_over_rpc() {
    skip_if_not_root!("a_config_file_s_options_and_action_scripts_apply_over_rpc");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let script = recording_script(d.path());
    let conf = d.path().join("rpc.conf");
    std::fs::write(
        &conf,
        format!(
            "# as runc.conf\nleave-running\naction-script {}\nlog-file \"{}\"\n",
            script.display(),
            d.path().join("from-config.log").display()
        ),
    )
    .unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();
    // The request says neither leave_running nor where the log goes: the file does.
    let s = Swrk::start(Duration::from_secs(60));
    let (r, seen) = s.call_acking(&req(
        CriuReqType::Dump,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(v.pid()),
            notify_scripts: Some(true),
            log_file: Some("dump.log".into()),
            log_level: Some(4),
            config_file: Some(conf.display().to_string()),
            ..Default::default()
        },
    ));
    assert_eq!(s.finish(), Some(0));
    let log = std::fs::read_to_string(d.path().join("from-config.log")).unwrap_or_default();
    assert!(r.success, "dump: {r:?}\n{log}");
    assert!(!img.join("dump.log").exists(), "the file's log-file wins");
    assert!(log.contains("dump"), "{log}");
    // leave-running from the file: the victim counts on.
    assert!(pid_exists(v.pid()));
    assert!(counts_on(d.path()), "the victim stopped");
    // The client was told every stage, and the file's script ran at each one too.
    assert_eq!(
        seen.first().map(String::as_str),
        Some("pre-dump"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("post-dump"),
        "{seen:?}"
    );
    let ran = actions(d.path());
    assert_eq!(ran.first().map(String::as_str), Some("pre-dump"), "{ran:?}");
    assert_eq!(ran.last().map(String::as_str), Some("post-dump"), "{ran:?}");
    drop(v);

    // A restore from the same images with the same file: the scripts run there too, and the
    // client is asked first each time.
    std::fs::remove_file(d.path().join("actions")).unwrap();
    let s = Swrk::start(Duration::from_secs(60));
    let (r, seen) = s.call_acking(&req(
        CriuReqType::Restore,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            notify_scripts: Some(true),
            config_file: Some(conf.display().to_string()),
            ..Default::default()
        },
    ));
    assert_eq!(s.finish(), Some(0));
    assert!(r.success, "restore: {r:?}");
    let restored = Spawned::guard(r.restore.as_ref().map_or(-1, |x| x.pid));
    assert!(counts_on(d.path()), "the restored victim does not count");
    let ran = actions(d.path());
    for a in ["pre-restore", "post-restore", "pre-resume", "post-resume"] {
        assert!(seen.iter().any(|x| x == a), "{a} not notified: {seen:?}");
        assert!(ran.iter().any(|x| x == a), "{a} script not run: {ran:?}");
    }
    drop(restored);
}

#[test]
fn a_failing_script_from_the_config_file_stops_the_dump_and_the_victim_runs_on() {
    skip_if_not_root!(
        "a_failing_script_from_the_config_file_stops_the_dump_and_the_victim_runs_on"
    );
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let script = d.path().join("fail.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-dump ] && exit 3\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = d.path().join("rpc.conf");
    std::fs::write(&conf, format!("action-script {}\n", script.display())).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();
    let (r, code) = swrk_once(&req(
        CriuReqType::Dump,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(v.pid()),
            log_file: Some("dump.log".into()),
            config_file: Some(conf.display().to_string()),
            ..Default::default()
        },
    ));
    assert_eq!(code, Some(0));
    assert!(!r.success, "{r:?}");
    assert!(
        r.cr_errmsg.as_deref().unwrap_or("").contains("post-dump"),
        "{r:?}"
    );
    assert!(counts_on(d.path()), "the victim does not run on");
    // A file that does not parse is refused before anything is touched.
    std::fs::write(&conf, "leave-running\nno-such-option 1\n").unwrap();
    let (r, _) = swrk_once(&req(
        CriuReqType::Dump,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(v.pid()),
            config_file: Some(conf.display().to_string()),
            ..Default::default()
        },
    ));
    assert!(!r.success, "{r:?}");
    assert_eq!(r.cr_errno, Some(libc::EBADRQC), "{r:?}");
    assert!(
        r.cr_errmsg
            .as_deref()
            .unwrap_or("")
            .contains("no-such-option"),
        "{r:?}"
    );
    assert!(counts_on(d.path()), "the victim does not run on");
    drop(v);
}

#[test]
fn exec_cmd_makes_criu_the_command_with_the_restored_tree_as_its_children() {
    skip_if_not_root!("exec_cmd_makes_criu_the_command_with_the_restored_tree_as_its_children");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();
    let (r, code) = swrk_once(&req(
        CriuReqType::Dump,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            pid: Some(v.pid()),
            log_file: Some("dump.log".into()),
            ..Default::default()
        },
    ));
    assert!(r.success && code == Some(0), "dump: {r:?}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    // The command names its own children (it is criu, exec'd) and exits 7.
    let s = Swrk::start(Duration::from_secs(60));
    let criu_pid = s.pid();
    let r = s.call(&req(
        CriuReqType::Restore,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some("restore.log".into()),
            exec_cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo \"exec'd as $$ children: $(cat /proc/$$/task/$$/children)\"; exit 7".into(),
            ],
            ..Default::default()
        },
    ));
    assert!(r.success, "restore: {r:?}");
    let restored = Spawned::guard(r.restore.as_ref().map_or(-1, |x| x.pid));
    assert_eq!(restored.pid(), v.pid());
    assert_eq!(s.finish(), Some(7), "criu did not become the command");
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap();
    assert!(
        log.contains(&format!(
            "exec'd as {criu_pid} children: {}",
            restored.pid()
        )),
        "{log}"
    );
    assert!(counts_on(d.path()), "the restored victim does not count");
    drop(restored);
}

#[test]
fn lsm_options_are_checked_as_criu_checks_them_without_an_lsm() {
    skip_if_not_root!("lsm_options_are_checked_as_criu_checks_them_without_an_lsm");
    if Path::new("/sys/kernel/security/apparmor").exists()
        || Path::new("/sys/fs/selinux/enforce").exists()
    {
        eprintln!("skipped: this host runs an LSM");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(COUNTER, d.path(), None);
    let dir = std::fs::File::open(&img).unwrap();
    let dump = |profile: &str| {
        swrk_once(&req(
            CriuReqType::Dump,
            CriuOpts {
                images_dir_fd: dir.as_raw_fd(),
                pid: Some(v.pid()),
                log_file: Some("dump.log".into()),
                lsm_profile: Some(profile.into()),
                ..Default::default()
            },
        ))
        .0
    };
    for (profile, msg) in [
        (
            "apparmor:criu-test",
            "apparmor LSM specified but apparmor not supported by kernel",
        ),
        (
            "selinux:system_u:system_r:container_t:s0",
            "selinux LSM specified but selinux not supported by kernel",
        ),
        ("smack:x", "unknown lsm smack"),
        ("apparmor", "invalid argument apparmor for --lsm-profile"),
    ] {
        let r = dump(profile);
        assert!(!r.success, "{profile}: {r:?}");
        assert_eq!(r.cr_errmsg.as_deref(), Some(msg), "{r:?}");
        assert!(counts_on(d.path()), "{profile}: the victim does not run on");
    }
    // `none:` is no profile; the mount context changes nothing without SELinux mounts.
    let r = dump("none:");
    assert!(r.success, "{r:?}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    let (r, _) = swrk_once(&req(
        CriuReqType::Restore,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some("restore.log".into()),
            lsm_profile: Some("none:".into()),
            lsm_mount_context: Some("system_u:object_r:container_file_t:s0".into()),
            ..Default::default()
        },
    ));
    assert!(r.success, "{r:?}");
    let restored = Spawned::guard(r.restore.as_ref().map_or(-1, |x| x.pid));
    assert!(counts_on(d.path()), "the restored victim does not count");
    // A restore with a profile of an LSM the kernel does not run is refused before anything.
    drop(restored);
    let (r, _) = swrk_once(&req(
        CriuReqType::Restore,
        CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some("restore2.log".into()),
            lsm_profile: Some("apparmor:x".into()),
            ..Default::default()
        },
    ));
    assert!(!r.success, "{r:?}");
    assert!(!pid_exists(v.pid()), "something was restored");
}
