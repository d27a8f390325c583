//! Who may make a root `criu service` do what (issue 23).
//!
//! A root `criu service` listens on a socket handed to user `nobody` for the test (chown: the
//! service itself makes it 0600). A client forked here drops to `nobody` and asks:
//!
//! - to dump a root-owned counter: refused with `EPERM` naming the rule, the counter counts on
//!   and no image is written;
//! - to dump its own counter (`leave_running`): done, the counter counts on;
//! - to restore its own dump whose core image was edited to ask for uid 0 and every
//!   capability: refused with `EPERM` before anything runs (the pid stays free);
//! - to restore its own dump whose files image names a path with `..`: refused, nothing runs;
//! - and, as a control, to restore the untouched dump: done, the counter counts on as nobody.
//!
//! From the command line, as root: images asking for root in a world-writable directory are
//! restored with a warning naming them (none for root's own directory); a file path with `..`
//! in `files.img` is refused before anything runs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::rpc_service::{Service, ask_with};
use compel_criu_tests::{
    Exit, Spawned, UNPRIVILEGED_ID, become_subreaper, criu, dump_and_reap, open_dir,
    restore_detached, run_as_user, status_field, test_lock, unprivileged_dir, wait_exit_timeout,
};
use criu_images::ImageDir;
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");
const NOBODY: u32 = UNPRIVILEGED_ID;

/// Sends `q` to the service from a child running as nobody and returns the answer.
fn ask_as_nobody(addr: &Path, q: &CriuReq) -> CriuResp {
    ask_as_nobody_with_umask(addr, q, None)
}

/// [`ask_as_nobody`], the client's umask set to `umask` if given.
fn ask_as_nobody_with_umask(addr: &Path, q: &CriuReq, umask: Option<u32>) -> CriuResp {
    ask_with(addr, q, umask, |f| run_as_user(NOBODY, NOBODY, f))
}

fn request(ty: CriuReqType, opts: CriuOpts) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts: Some(opts),
        ..Default::default()
    }
}

fn opts(img: &Path, pid: Option<i32>, log: &str) -> CriuOpts {
    CriuOpts {
        images_dir_fd: -1,
        images_dir: Some(img.display().to_string()),
        pid,
        log_file: Some(log.into()),
        log_level: Some(4),
        ..Default::default()
    }
}

/// Starts the counter in `d` (as `uid` if given, its files then nobody's) and waits until it
/// counts.
fn spawn_counter(d: &Path, uid: Option<u32>) -> Spawned {
    compel_criu_tests::spawn_counter(COUNTER, d, uid)
}

/// The counter in `d` counts on.
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

fn assert_refused(r: &CriuResp, errno: i32, says: &str) {
    assert!(!r.success, "the service did it: {r:?}");
    assert_eq!(r.cr_errno, Some(errno), "{r:?}");
    let msg = r.cr_errmsg.as_deref().unwrap_or("");
    assert!(
        msg.contains(says),
        "the refusal does not say {says:?}: {msg}"
    );
}

#[test]
fn nobody_may_not_dump_a_root_process_through_a_root_service() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    let img = unprivileged_dir(d.path(), "img");
    let v = spawn_counter(d.path(), None);
    let r = ask_as_nobody(
        &svc.addr,
        &request(CriuReqType::Dump, opts(&img, Some(v.pid()), "d.log")),
    );
    assert_refused(&r, libc::EPERM, &format!("may not dump pid {}", v.pid()));
    assert!(counting_on(d.path()), "the root counter stopped");
    assert_eq!(status_field(v.pid(), "TracerPid:"), "0");
    assert!(
        !img.join("inventory.img").exists() && !img.join(format!("core-{}.img", v.pid())).exists(),
        "images were written"
    );
}

#[test]
fn nobody_may_not_have_images_written_where_it_cannot_write() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    // Root's directory, 0755: nobody cannot write there.
    let img = d.path().join("root-img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(d.path(), Some(NOBODY));
    let mut o = opts(&img, Some(v.pid()), "d.log");
    o.leave_running = Some(true);
    let r = ask_as_nobody(&svc.addr, &request(CriuReqType::Dump, o));
    assert_refused(&r, libc::EACCES, "cannot write images to");
    assert!(counting_on(d.path()));
    assert_eq!(
        std::fs::read_dir(&img).unwrap().count(),
        0,
        "something was written"
    );
}

/// Nobody dumps its own counter through the service; returns the images and the dead
/// counter's pid.
fn nobody_dumps_its_counter(d: &Path, svc: &Service, leave_running: bool) -> (PathBuf, Spawned) {
    let img = unprivileged_dir(d, "img");
    let mut v = spawn_counter(d, Some(NOBODY));
    let mut o = opts(&img, Some(v.pid()), "dump.log");
    o.leave_running = Some(leave_running);
    let r = ask_as_nobody(&svc.addr, &request(CriuReqType::Dump, o));
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    assert!(r.success, "nobody's dump of its own counter: {r:?}\n{log}");
    assert!(img.join(format!("core-{}.img", v.pid())).exists());
    if !leave_running {
        assert_eq!(
            wait_exit_timeout(v.pid(), Duration::from_secs(5)),
            Ok(Some(Exit::Signal(libc::SIGKILL)))
        );
        v.mark_reaped();
    }
    (img, v)
}

#[test]
fn nobody_dumps_its_own_process_and_it_runs_on() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    let (_img, v) = nobody_dumps_its_counter(d.path(), &svc, true);
    assert!(
        counting_on(d.path()),
        "nobody's counter stopped after a leave_running dump"
    );
    assert_eq!(status_field(v.pid(), "TracerPid:"), "0");
}

#[test]
fn a_restore_asking_for_root_is_refused_before_anything_runs_and_the_honest_one_works() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    let (img, v) = nobody_dumps_its_counter(d.path(), &svc, false);
    let pid = v.pid();

    // The same images, the leader's core asking for uid 0 and every capability.
    let evil = unprivileged_dir(d.path(), "evil");
    for e in std::fs::read_dir(&img).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".img") {
            std::fs::copy(e.path(), evil.join(e.file_name())).unwrap();
        }
    }
    let dir = ImageDir::new(&evil);
    let mut core = dir.read_core(pid as u32).unwrap();
    let creds = core
        .thread_core
        .as_mut()
        .and_then(|t| t.creds.as_mut())
        .expect("the dump wrote creds");
    (creds.uid, creds.euid, creds.suid, creds.fsuid) = (0, 0, 0, 0);
    creds.cap_prm = vec![u32::MAX, 0x1ff];
    creds.cap_eff = vec![u32::MAX, 0x1ff];
    dir.write_core(pid as u32, &core).unwrap();
    let r = ask_as_nobody(
        &svc.addr,
        &request(CriuReqType::Restore, opts(&evil, None, "r.log")),
    );
    assert_refused(&r, libc::EPERM, "uid 0");
    assert!(r.cr_errmsg.unwrap().contains(&format!("core-{pid}.img")));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "a task {pid} runs"
    );

    // The untouched images: restored, the counter runs on as nobody.
    let r = ask_as_nobody(
        &svc.addr,
        &request(CriuReqType::Restore, opts(&img, None, "r.log")),
    );
    let restored = Spawned::guard(pid);
    let log = std::fs::read_to_string(img.join("r.log")).unwrap_or_default();
    assert!(r.success, "nobody's honest restore: {r:?}\n{log}");
    assert!(counting_on(d.path()), "the restored counter does not count");
    assert!(status_field(pid, "Uid:").starts_with(&NOBODY.to_string()));
    drop(restored);
}

#[test]
fn a_restore_whose_files_climb_with_dot_dot_is_refused() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    let (img, v) = nobody_dumps_its_counter(d.path(), &svc, false);
    let pid = v.pid();
    let dir = ImageDir::new(&img);
    let mut files = dir.read_files().unwrap();
    let reg = files
        .iter_mut()
        .filter_map(|f| f.reg.as_mut())
        .find(|r| r.name.ends_with("/count"))
        .expect("the counter's file in files.img");
    let climbing = reg.name.replace("/count", "/../../etc/count");
    reg.name = climbing.clone();
    dir.write_files(&files).unwrap();
    let r = ask_as_nobody(
        &svc.addr,
        &request(CriuReqType::Restore, opts(&img, None, "r.log")),
    );
    assert_refused(&r, libc::EPERM, "'..'");
    assert!(r.cr_errmsg.unwrap().contains(&climbing));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "a task {pid} runs"
    );
}

#[test]
fn root_restoring_root_images_from_a_world_writable_dir_is_warned() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut v = spawn_counter(d.path(), None);
    let pid = v.pid();
    dump_and_reap(&mut v, &img, &[]);
    let warning = "ask for root";
    // Root's own directory: no warning.
    let restored = Spawned::guard(restore_detached(&img, &[]));
    assert!(counting_on(d.path()));
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap();
    assert!(
        !log.contains(warning),
        "warned for root's own directory:\n{log}"
    );
    drop(restored);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // The same images in a directory everyone may write: warned, naming the image.
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::remove_file(img.join("restored.pid")).unwrap();
    let restored = Spawned::guard(restore_detached(&img, &[]));
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap();
    assert!(
        log.contains(warning) && log.contains(&format!("core-{pid}.img")),
        "no warning for root images in a world-writable directory:\n{log}"
    );
    drop(restored);
}

#[test]
fn a_command_line_restore_of_a_file_path_with_dot_dot_is_refused() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    let mut v = spawn_counter(d.path(), None);
    let pid = v.pid();
    dump_and_reap(&mut v, &img, &[]);
    let dir = ImageDir::new(&img);
    let mut files = dir.read_files().unwrap();
    let reg = files
        .iter_mut()
        .filter_map(|f| f.reg.as_mut())
        .find(|r| r.name.ends_with("/count"))
        .expect("the counter's file in files.img");
    reg.name = reg.name.replace("/count", "/../../etc/count");
    dir.write_files(&files).unwrap();
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-o",
        "restore.log",
        "-d",
    ]);
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap_or_default();
    assert!(!o.status.success(), "the restore went through:\n{log}");
    assert!(
        log.contains("'..' component"),
        "the refusal does not say why:\n{log}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "a task {pid} runs"
    );
}

/// The images a root service writes for nobody get nobody's umask (CRIU 4.2 uses the
/// service's own): 0600 with umask 077, 0664 with umask 002, while the service runs with the
/// test's (022). The log stays 0600 either way.
#[test]
fn images_written_for_a_client_get_its_umask() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    let v = spawn_counter(d.path(), Some(NOBODY));
    for (i, (mask, want)) in [(0o077u32, 0o600u32), (0o002, 0o664)]
        .into_iter()
        .enumerate()
    {
        let img = unprivileged_dir(d.path(), &format!("img{i}"));
        let mut o = opts(&img, Some(v.pid()), "dump.log");
        o.leave_running = Some(true);
        let r = ask_as_nobody_with_umask(&svc.addr, &request(CriuReqType::Dump, o), Some(mask));
        assert!(r.success, "{r:?}");
        let mode = |f: &str| std::fs::metadata(img.join(f)).unwrap().permissions().mode() & 0o777;
        for f in [
            format!("core-{}.img", v.pid()),
            "inventory.img".into(),
            "pstree.img".into(),
        ] {
            assert_eq!(mode(&f), want, "{f} with umask {mask:03o}");
        }
        assert_eq!(mode("dump.log"), 0o600);
    }
    assert!(counting_on(d.path()));
}
