//! The rest of what a non-root client may not have a root `criu service` do (issue 23), next to
//! `criu_security.rs` (dump of root's process, uid-0 images, `..` paths, umask) and
//! `security_uncapped_root.rs` (uid 0 without capabilities). A client forked as `nobody`:
//!
//! - `PRE_DUMP` of a root process: refused with `EPERM` like a dump, the process untouched;
//! - `DUMP` of its own process that made itself non-dumpable (`PR_SET_DUMPABLE` 0, so its
//!   `/proc` files are root's): refused, "not dumpable", the process runs on untraced (the
//!   check used the owner of `/proc/PID`, which recent kernels leave to the task's uid: such a
//!   process was let through before);
//! - `RESTORE` of its own dump whose executable was pointed at a setuid-root program
//!   (`/usr/bin/su`): refused naming the file and its owner; the same dump with a deleted
//!   character device to make again (`ghost-file-*.img`): refused, "a device node to make".
//!   Nothing runs either time.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::rpc_service::{Service, ask_with};
use compel_criu_tests::{
    Exit, Spawned, UNPRIVILEGED_ID, become_subreaper, open_dir, pid_exists, run_as_user,
    skip_if_not_root, spawn_counter, status_field, test_lock, unprivileged_dir, wait_exit_timeout,
};
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp, GhostFileEntry};
use criu_images::{ImageDir, ImageWriter, magic, names};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");
const NOBODY: u32 = UNPRIVILEGED_ID;

/// perl: not dumpable, then `ready` made, then a line every 10 ms into `count`.
const NON_DUMPABLE_COUNTER: &str = r#"syscall(157, 4, 0, 0, 0, 0) == 0 or die "prctl";
open(my $r, ">", $ARGV[1]) or die; close($r);
open(my $f, ">>", $ARGV[0]) or die; $f->autoflush(1);
while (1) { print $f "1\n"; select(undef, undef, undef, 0.01); }"#;

fn ask_as_nobody(addr: &Path, q: &CriuReq) -> CriuResp {
    ask_with(addr, q, None, |f| run_as_user(NOBODY, NOBODY, f))
}

fn request(ty: CriuReqType, img: &Path, pid: Option<i32>, leave_running: bool) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts: Some(CriuOpts {
            images_dir_fd: -1,
            images_dir: Some(img.display().to_string()),
            pid,
            leave_running: Some(leave_running),
            log_file: Some("rpc.log".into()),
            log_level: Some(4),
            ..Default::default()
        }),
        ..Default::default()
    }
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
fn nobody_may_not_pre_dump_a_root_process() {
    skip_if_not_root!("nobody_may_not_pre_dump_a_root_process");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    let img = unprivileged_dir(d.path(), "img");
    let v = spawn_counter(COUNTER, d.path(), None);
    let r = ask_as_nobody(
        &svc.addr,
        &request(CriuReqType::PreDump, &img, Some(v.pid()), false),
    );
    assert_refused(&r, libc::EPERM, &format!("may not dump pid {}", v.pid()));
    assert!(counting_on(d.path()), "the root counter stopped");
    assert_eq!(status_field(v.pid(), "TracerPid:"), "0");
    assert_eq!(
        std::fs::read_dir(&img)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".img"))
            })
            .count(),
        0,
        "images were written"
    );
}

#[test]
fn nobody_may_not_dump_its_own_process_once_it_is_not_dumpable() {
    skip_if_not_root!("nobody_may_not_dump_its_own_process_once_it_is_not_dumpable");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    // A counter that makes itself non-dumpable (prctl(PR_SET_DUMPABLE, 0), x86-64's syscall
    // 157) before it says it is ready.
    let perl = Path::new("/usr/bin/perl");
    if !perl.exists() {
        eprintln!("skipped: no {}", perl.display());
        return;
    }
    let (out, ready) = (d.path().join("count"), d.path().join("ready"));
    let child = std::process::Command::new(perl)
        .arg("-e")
        .arg(NON_DUMPABLE_COUNTER)
        .arg(&out)
        .arg(&ready)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.path().join("perl.err")).unwrap())
        .spawn()
        .unwrap();
    let v = Spawned::from_child(child);
    let t0 = std::time::Instant::now();
    while !ready.exists() {
        let err = std::fs::read_to_string(d.path().join("perl.err")).unwrap_or_default();
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the counter did not start: {err}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = v.pid();
    assert!(status_field(pid, "Uid:").starts_with(&NOBODY.to_string()));
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(format!("/proc/{pid}/status")).unwrap()
        ),
        0,
        "the counter is still dumpable"
    );
    let img = unprivileged_dir(d.path(), "img");
    let r = ask_as_nobody(
        &svc.addr,
        &request(CriuReqType::Dump, &img, Some(pid), true),
    );
    assert_refused(&r, libc::EPERM, "not dumpable");
    assert!(counting_on(d.path()), "the counter stopped");
    assert_eq!(status_field(pid, "TracerPid:"), "0");
}

#[test]
fn nobody_may_not_restore_a_setuid_root_executable_or_a_device_node() {
    skip_if_not_root!("nobody_may_not_restore_a_setuid_root_executable_or_a_device_node");
    let setuid = Path::new("/usr/bin/su");
    if std::fs::metadata(setuid).map_or(true, |m| m.permissions().mode() & 0o4000 == 0) {
        eprintln!("skipped: no setuid {}", setuid.display());
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let svc = Service::start(d.path(), Some(NOBODY));
    let img = unprivileged_dir(d.path(), "img");
    let mut v = spawn_counter(COUNTER, d.path(), Some(NOBODY));
    let pid = v.pid();
    let r = ask_as_nobody(
        &svc.addr,
        &request(CriuReqType::Dump, &img, Some(pid), false),
    );
    let log = std::fs::read_to_string(img.join("rpc.log")).unwrap_or_default();
    assert!(r.success, "nobody's dump of its own counter: {r:?}\n{log}");
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();

    // The executable pointed at a setuid-root program.
    let dir = ImageDir::new(&img);
    let files = dir.read_files().unwrap();
    let exe_id = dir.read_mm(pid as u32).unwrap().exe_file_id;
    let mut edited = files.clone();
    let exe = edited
        .iter_mut()
        .filter_map(|f| f.reg.as_mut())
        .find(|r| r.id == exe_id)
        .expect("the executable in files.img");
    exe.name = setuid.display().to_string();
    dir.write_files(&edited).unwrap();
    let r = ask_as_nobody(&svc.addr, &request(CriuReqType::Restore, &img, None, false));
    assert_refused(&r, libc::EPERM, "a setuid/setgid executable of uid 0");
    assert!(r.cr_errmsg.unwrap().contains("/usr/bin/su"));
    assert!(!pid_exists(pid), "a task {pid} runs");
    dir.write_files(&files).unwrap();

    // A deleted character device (/dev/null's numbers) to make again.
    let ghost = names::ghost_file(0x99);
    let mut w = ImageWriter::create_in(&img, &ghost, magic::GHOST_FILE).unwrap();
    w.write_entry(&GhostFileEntry {
        uid: NOBODY,
        gid: NOBODY,
        mode: libc::S_IFCHR | 0o666,
        rdev: Some((1 << 8) | 3),
        ..Default::default()
    })
    .unwrap();
    w.finish().unwrap();
    std::os::unix::fs::chown(img.join(&ghost), Some(NOBODY), Some(NOBODY)).unwrap();
    let r = ask_as_nobody(&svc.addr, &request(CriuReqType::Restore, &img, None, false));
    assert_refused(&r, libc::EPERM, "a device node to make");
    assert!(r.cr_errmsg.unwrap().contains(&ghost));
    assert!(!pid_exists(pid), "a task {pid} runs");
}
