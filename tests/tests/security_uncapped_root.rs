//! A uid-0 client without capabilities is not root to `criu service` (issue 23).
//!
//! "Root clients keep today's behaviour": root means uid 0 with `CAP_SYS_ADMIN` and
//! `CAP_SYS_PTRACE` in its effective set (read from the `/proc/PID/status` of the
//! `SO_PEERCRED` pid, pinned by its pidfd). A process that is uid 0 but has dropped every
//! capability (`setpriv --inh-caps=-all --bounding-set=-all`, a container's "root" without
//! privileges) could not ptrace a privileged process, nor write where file permissions forbid,
//! so its requests get the rules of any other user. CRIU 4.2 gives it root's treatment (it
//! looks at the uid only).
//!
//! A root `criu service` is asked by a forked child that stays uid 0 with no capability
//! (`rpc_service::run_as_uncapped_root`):
//!
//! - to dump a root counter that has every capability: refused with `EPERM` naming the
//!   capabilities it lacks; the counter counts on, untraced, and no image is written;
//! - to dump its own kind of process (a counter started under `setpriv` without capabilities)
//!   into a directory of nobody's (`0700`): refused with `EACCES` (the path check runs without
//!   `CAP_DAC_OVERRIDE`), nothing written;
//! - the same dump into root's own directory: done, the counter counts on;
//! - to restore that dump edited to ask for capabilities: refused with `EPERM` naming the
//!   image, and no task runs with its pid.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compel_criu_tests::rpc_service::{Service, ask_with, run_as_uncapped_root};
use compel_criu_tests::{
    Spawned, UNPRIVILEGED_ID, become_subreaper, open_dir, skip_if_not_root, status_field, test_lock,
};
use criu_images::ImageDir;
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

fn ask_uncapped(addr: &Path, q: &CriuReq) -> CriuResp {
    ask_with(addr, q, None, run_as_uncapped_root)
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

/// A counter writing to `d/NAME.count`, started as root either with every capability or,
/// under `setpriv`, with none.
fn counter(d: &Path, name: &str, capable: bool) -> (Spawned, PathBuf) {
    let out = d.join(format!("{name}.count"));
    let ready = d.join(format!("{name}.ready"));
    let log = d.join(format!("{name}.log"));
    std::fs::File::create(&log).unwrap();
    let (o, r) = (out.to_str().unwrap(), ready.to_str().unwrap());
    let v = if capable {
        Spawned::spawn(COUNTER, &[o, r], &log, None)
    } else {
        Spawned::spawn(
            "setpriv",
            &["--inh-caps=-all", "--bounding-set=-all", COUNTER, o, r],
            &log,
            None,
        )
    };
    compel_criu_tests::wait_file(&ready, Duration::from_secs(10));
    (v, out)
}

fn counting_on(out: &Path) -> bool {
    let n = || {
        std::fs::read_to_string(out)
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

fn dir(d: &Path, name: &str, owner: u32) -> PathBuf {
    let p = d.join(name);
    std::fs::create_dir(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
    p
}

fn empty(p: &Path) -> bool {
    std::fs::read_dir(p).unwrap().next().is_none()
}

#[test]
fn a_uid0_client_without_capabilities_gets_the_rules_of_any_other_user() {
    skip_if_not_root!("a_uid0_client_without_capabilities_gets_the_rules_of_any_other_user");
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    // Root's socket, 0600: uid 0 may connect without capabilities (it owns it).
    let svc = Service::start(d.path(), None);

    // A root counter with every capability: not the uncapped client's to dump.
    let (root, root_out) = counter(d.path(), "root", true);
    let img = dir(d.path(), "img-root", 0);
    let r = ask_uncapped(
        &svc.addr,
        &request(CriuReqType::Dump, &img, Some(root.pid()), false),
    );
    assert_refused(&r, libc::EPERM, &format!("may not dump pid {}", root.pid()));
    assert!(
        r.cr_errmsg
            .as_deref()
            .unwrap_or("")
            .contains("capabilities"),
        "{r:?}"
    );
    assert!(counting_on(&root_out), "the root counter stopped");
    assert_eq!(status_field(root.pid(), "TracerPid:"), "0");
    assert!(
        !img.join("inventory.img").exists(),
        "images were written for a refused dump"
    );
    drop(root);

    // An uncapped counter is the client's kind, but nobody's directory is not its to write.
    let (v, out) = counter(d.path(), "plain", false);
    assert_eq!(status_field(v.pid(), "CapPrm:"), "0000000000000000");
    let theirs = dir(d.path(), "img-nobody", UNPRIVILEGED_ID);
    let r = ask_uncapped(
        &svc.addr,
        &request(CriuReqType::Dump, &theirs, Some(v.pid()), true),
    );
    assert_refused(&r, libc::EACCES, "cannot write images to");
    assert!(
        empty(&theirs),
        "something was written to nobody's directory"
    );
    assert!(counting_on(&out));

    // Into root's own directory (uid 0 owns it): done, and the counter counts on.
    let r = ask_uncapped(
        &svc.addr,
        &request(CriuReqType::Dump, &img, Some(v.pid()), true),
    );
    let log = std::fs::read_to_string(img.join("rpc.log")).unwrap_or_default();
    assert!(
        r.success,
        "the uncapped client's dump of its own kind: {r:?}\n{log}"
    );
    assert!(
        counting_on(&out),
        "the counter stopped after a leave_running dump"
    );
    assert_eq!(status_field(v.pid(), "TracerPid:"), "0");

    // Those images asking for a capability: not restored for this client.
    let pid = v.pid();
    drop(v);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let images = ImageDir::new(&img);
    let mut core = images.read_core(pid as u32).unwrap();
    let creds = core
        .thread_core
        .as_mut()
        .and_then(|t| t.creds.as_mut())
        .expect("the dump wrote creds");
    creds.cap_prm = vec![1 << 21, 0];
    creds.cap_eff = vec![1 << 21, 0];
    images.write_core(pid as u32, &core).unwrap();
    let r = ask_uncapped(&svc.addr, &request(CriuReqType::Restore, &img, None, false));
    assert_refused(&r, libc::EPERM, "capabilities");
    assert!(
        r.cr_errmsg
            .as_deref()
            .unwrap_or("")
            .contains(&format!("core-{pid}.img")),
        "{r:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "a task {pid} runs"
    );
}
