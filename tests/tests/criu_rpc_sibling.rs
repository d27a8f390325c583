//! What runc needs of criu's RPC: `rst_sibling` (the restored tree becomes the client's child,
//! not criu's, and keeps its parent-death signal) and the version (the CRIU release matched,
//! 4.2, in the `VERSION` reply and in `criu --version`).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, criu, open_dir, stat_ids, stdout_text, test_lock,
    wait_exit_timeout, wait_file,
};
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

fn request(ty: CriuReqType, opts: Option<CriuOpts>, keep_open: bool) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts,
        keep_open: Some(keep_open),
        ..Default::default()
    }
}

fn opts(dir: &std::fs::File, pid: Option<i32>, log: &str) -> CriuOpts {
    CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid,
        log_file: Some(log.into()),
        log_level: Some(4),
        ..Default::default()
    }
}

fn log(img: &Path, name: &str) -> String {
    std::fs::read_to_string(img.join(name)).unwrap_or_default()
}

/// Dumps `v` over swrk into `img` and reaps it.
fn dump_over_rpc(v: &mut Spawned, dir: &std::fs::File, img: &Path) {
    let s = Swrk::start(Duration::from_secs(20));
    let r = s.call(&request(
        CriuReqType::Dump,
        Some(opts(dir, Some(v.pid()), "dump.log")),
        false,
    ));
    assert!(r.success, "{r:?}\n{}", log(img, "dump.log"));
    assert_eq!(s.finish(), Some(0));
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
}

fn counting(d: &Path) -> usize {
    std::fs::read_to_string(d.join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn rst_sibling_makes_the_restored_root_the_client_s_child() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let (out, ready) = (d.path().join("count"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        COUNTER,
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let dir = std::fs::File::open(&img).unwrap();
    dump_over_rpc(&mut v, &dir, &img);

    // Without rst_sibling the root is criu's child while criu runs (the session is kept open
    // to look): the reference point.
    let s = Swrk::start(Duration::from_secs(20));
    let r = s.call(&request(
        CriuReqType::Restore,
        Some(opts(&dir, None, "restore1.log")),
        true,
    ));
    let guard = Spawned::guard(v.pid());
    assert!(r.success, "{r:?}\n{}", log(&img, "restore1.log"));
    assert_eq!(r.restore.map(|x| x.pid), Some(v.pid()));
    assert_eq!(stat_ids(v.pid()).map(|s| s.1), Some(s.pid()));
    assert_eq!(s.finish(), Some(0));
    drop(guard);
    assert!(!Path::new(&format!("/proc/{}", v.pid())).exists());

    // With it, the root is ours at once, while criu still runs, and counts on.
    let s = Swrk::start(Duration::from_secs(20));
    let mut o = opts(&dir, None, "restore2.log");
    o.rst_sibling = Some(true);
    let r = s.call(&request(CriuReqType::Restore, Some(o), true));
    let mut restored = Spawned::guard(v.pid());
    assert!(r.success, "{r:?}\n{}", log(&img, "restore2.log"));
    assert_eq!(r.restore.map(|x| x.pid), Some(v.pid()));
    assert_eq!(
        stat_ids(v.pid()).map(|s| s.1),
        Some(std::process::id() as i32),
        "the restored root is not the client's child"
    );
    let before = counting(d.path());
    std::thread::sleep(Duration::from_millis(150));
    assert!(counting(d.path()) > before + 5, "not counting on");
    // criu answers the next request and exits; the root stays ours.
    let r = s.call(&request(CriuReqType::Version, None, false));
    assert!(r.success);
    assert_eq!(s.finish(), Some(0));
    assert_eq!(
        stat_ids(v.pid()).map(|s| s.1),
        Some(std::process::id() as i32)
    );
    // Ours to reap: it is our child.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(v.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    restored.mark_reaped();
}

#[test]
fn a_sibling_keeps_its_parent_death_signal() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let (out, ready) = (d.path().join("count"), d.path().join("ready"));
    // PR_SET_PDEATHSIG(SIGKILL), part of the dumped state.
    let mut v = Spawned::spawn_dying_with_us(
        COUNTER,
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let dir = std::fs::File::open(&img).unwrap();
    dump_over_rpc(&mut v, &dir, &img);

    // A thread of ours is the client; the restored root's parent is that thread, and the
    // signal fires when it ends (criu has exited before).
    let raw = dir.as_raw_fd();
    let pid = std::thread::spawn(move || {
        let s = Swrk::start(Duration::from_secs(20));
        let mut o = CriuOpts {
            images_dir_fd: raw,
            log_file: Some("restore.log".into()),
            log_level: Some(4),
            ..Default::default()
        };
        o.rst_sibling = Some(true);
        let r = s.call(&request(CriuReqType::Restore, Some(o), false));
        assert_eq!(s.finish(), Some(0));
        r
    })
    .join()
    .unwrap();
    let mut restored = Spawned::guard(v.pid());
    assert!(pid.success, "{pid:?}\n{}", log(&img, "restore.log"));
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL))),
        "the restored root did not get its parent-death signal when its parent thread ended"
    );
    restored.mark_reaped();
}

#[test]
fn restore_sibling_on_the_command_line_needs_restore_detached() {
    // As with CRIU: a sibling is never waited for.
    let d = open_dir();
    let o = criu(&["restore", "-S", "-D", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--restore-detached"),
        "{o:?}"
    );
}

#[test]
fn version_reports_the_criu_release_matched_and_our_own_version_apart() {
    let _g = test_lock();
    let s = Swrk::start(Duration::from_secs(20));
    let r = s.call(&request(CriuReqType::Version, None, false));
    assert_eq!(s.finish(), Some(0));
    assert!(r.success);
    let v = r.version.unwrap();
    assert_eq!((v.major_number, v.minor_number), (4, 2));
    assert_eq!(v.sublevel, Some(0));
    // No git id: clients would count it as the next minor in development.
    assert_eq!(v.gitid, None);
    assert_eq!(
        v.name.as_deref(),
        Some(concat!("compel-criu ", env!("CARGO_PKG_VERSION")))
    );

    let o = criu(&["--version"]);
    assert!(o.status.success());
    let text = stdout_text(&o);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Version: 4.2"));
    assert_eq!(
        lines.next(),
        Some(concat!(
            "Implementation: compel-criu ",
            env!("CARGO_PKG_VERSION")
        ))
    );
}
