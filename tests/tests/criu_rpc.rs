//! criu as a service: real RPC clients drive our `criu` binary.
//!
//! - `rust-criu` (crates.io, what youki uses) starts `criu swrk`, asks for the version, dumps a
//!   counting victim and restores it; the victim counts on with the same pid.
//! - A raw client (a socketpair, `criu swrk FD`, hand-made packets) checks the answers to bad
//!   input: a packet that is no `criu_req`, an unknown request type, a request for something
//!   not built yet, a dump without an images directory; and `keep_open` sessions.
//! - Notifications (`notify_scripts`): rust-criu sees every stage of a dump and a restore and
//!   acknowledges it; a raw client that refuses `post-dump`, or goes away at `pre-dump`, stops
//!   the dump and the victim runs on.
//! - `criu service` listens on a 0600 socket, serves a connection, and removes the socket file
//!   when told to stop.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{
    Exit, Spawned, Swrk, become_subreaper, criu_bin, recv_resp, test_lock, wait_exit_timeout,
    wait_file,
};
use criu_images::pb::{CriuFeatures, CriuOpts, CriuReq, CriuReqType, CriuResp};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, setsockopt, socket,
    sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Starts the counter victim in `d` and waits until it counts.
fn spawn_counter(d: &Path) -> Spawned {
    let out = d.join("count");
    let ready = d.join("ready");
    let v = Spawned::spawn(
        COUNTER,
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(30));
    v
}

/// Asserts the counter in `d` keeps counting with an unbroken sequence.
fn assert_counting_on(d: &Path) {
    let out = d.join("count");
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&out).unwrap();
    let nums: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        nums.len() > before + 5,
        "not counting after restore: {before} -> {}",
        nums.len()
    );
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the sequence broke across dump/restore");
    }
}

fn rust_criu() -> rust_criu::Criu {
    rust_criu::Criu::new_with_criu_path(criu_bin().display().to_string()).unwrap()
}

#[test]
fn rust_criu_reads_the_version() {
    // The CRIU release matched, 4.2, as a release build (no git id) reports it.
    assert_eq!(rust_criu().get_criu_version().unwrap(), 40200);
}

#[test]
fn rust_criu_dumps_and_restores_a_counter() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(d.path());
    let dir = std::fs::File::open(&img).unwrap();

    let mut c = rust_criu();
    c.set_pid(v.pid());
    c.set_images_dir_fd(dir.as_raw_fd());
    c.set_log_file("dump.log".into());
    c.set_log_level(4);
    let dumped = c.dump();
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    assert!(dumped.is_ok(), "dump over RPC: {dumped:?}\nlog:\n{log}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL))),
        "the dump did not kill the victim"
    );
    v.mark_reaped();
    assert!(img.join("inventory.img").exists());

    c.set_images_dir_fd(dir.as_raw_fd());
    c.set_log_file("restore.log".into());
    c.set_log_level(4);
    let restored = c.restore();
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap_or_default();
    assert!(
        restored.is_ok(),
        "restore over RPC: {restored:?}\nlog:\n{log}"
    );
    // criu swrk has exited: the restored victim, same pid, is now this subreaper's child.
    let r = Spawned::guard(v.pid());
    assert!(
        Path::new(&format!("/proc/{}", v.pid())).exists(),
        "no process {} after the restore",
        v.pid()
    );
    assert_counting_on(d.path());
    drop(r);
}

fn req(ty: CriuReqType) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        ..Default::default()
    }
}

#[test]
fn a_packet_that_is_not_a_request_gets_an_error_reply() {
    let s = Swrk::start(Duration::from_secs(10));
    // Field 1 as a length-delimited field with a length past the end.
    s.send_raw(&[0x0a, 0x7f, 0x01]);
    let r = s.recv().expect("an answer");
    assert!(!r.success);
    assert_eq!(r.r#type, CriuReqType::Empty as i32);
    assert_eq!(r.cr_errno, Some(libc::EBADMSG));
    assert!(
        r.cr_errmsg
            .as_deref()
            .unwrap_or("")
            .contains("cannot decode"),
        "{r:?}"
    );
    assert_eq!(s.finish(), Some(0));
}

#[test]
fn an_unknown_request_type_gets_an_error_reply() {
    let s = Swrk::start(Duration::from_secs(10));
    let mut q = req(CriuReqType::Empty);
    q.r#type = 99;
    s.send(&q);
    let r = s.recv().expect("an answer");
    assert!(!r.success);
    assert_eq!(r.r#type, CriuReqType::Empty as i32);
    assert_eq!(r.cr_errno, Some(libc::EBADRQC));
    assert!(r.cr_errmsg.unwrap().contains("99"));
    assert_eq!(s.finish(), Some(0));
}

#[test]
fn requests_not_built_yet_are_refused_and_keep_open_serves_the_next() {
    let s = Swrk::start(Duration::from_secs(10));
    // Every request type is served now (PRE_DUMP and PAGE_SERVER: tests/tests/criu_rpc_live.rs):
    // keep_open still serves the next request.
    let mut q = req(CriuReqType::FeatureCheck);
    q.keep_open = Some(true);
    q.features = Some(CriuFeatures {
        mem_track: Some(true),
        lazy_pages: Some(true),
        pidfd_store: None,
    });
    s.send(&q);
    let r = s.recv().expect("an answer");
    assert!(r.success);
    let f = r.features.unwrap();
    // Memory tracking (pre-dump) and lazy pages are there on this kernel.
    assert_eq!((f.mem_track, f.lazy_pages), (Some(true), Some(true)));
    // The last request has no keep_open: criu answers it and exits.
    s.send(&req(CriuReqType::Version));
    let r = s.recv().expect("an answer");
    assert!(r.success);
    let v = r.version.unwrap();
    assert_eq!((v.major_number, v.minor_number), (4, 2));
    assert!(
        s.recv().is_none(),
        "criu went on after a request without keep_open"
    );
    assert_eq!(s.finish(), Some(0));
}

#[test]
fn a_dump_without_an_images_directory_is_refused() {
    let s = Swrk::start(Duration::from_secs(10));
    let mut q = req(CriuReqType::Dump);
    q.opts = Some(CriuOpts {
        images_dir_fd: -1,
        pid: Some(1),
        ..Default::default()
    });
    s.send(&q);
    let r = s.recv().expect("an answer");
    assert_eq!(r.r#type, CriuReqType::Dump as i32);
    assert!(!r.success);
    assert_eq!(r.cr_errno, Some(libc::EBADRQC));
    assert!(r.cr_errmsg.unwrap().contains("images_dir"));
    assert_eq!(r.dump.and_then(|d| d.restored), Some(false));
    assert_eq!(s.finish(), Some(0));
}

#[test]
fn a_dump_of_a_missing_process_fails_with_the_reason() {
    let d = open_dir();
    let dir = std::fs::File::open(d.path()).unwrap();
    let s = Swrk::start(Duration::from_secs(10));
    let mut q = req(CriuReqType::Dump);
    q.opts = Some(CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(i32::MAX - 1),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    s.send(&q);
    let r = s.recv().expect("an answer");
    assert!(!r.success);
    let msg = r.cr_errmsg.unwrap();
    assert!(msg.contains(&(i32::MAX - 1).to_string()), "{msg}");
    let log = std::fs::read_to_string(d.path().join("dump.log")).unwrap();
    assert!(
        log.contains("--rpc"),
        "the request's log file was not used: {log}"
    );
    assert_eq!(s.finish(), Some(0));
}

#[test]
fn swrk_refuses_a_descriptor_that_is_not_a_seqpacket_socket() {
    let o = Command::new(criu_bin())
        .args(["swrk", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SOCK_SEQPACKET"), "{err}");
}

#[test]
fn the_service_serves_connections_on_a_private_socket_and_removes_it_on_exit() {
    let d = open_dir();
    let addr = d.path().join("criu.sk");
    let svc = start_service(d.path(), &addr);
    let mode = std::fs::metadata(&addr).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the service socket is open to others");
    for _ in 0..2 {
        let sk = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        connect(sk.as_raw_fd(), &UnixAddr::new(&addr).unwrap()).unwrap();
        setsockopt(&sk, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).unwrap();
        send(
            sk.as_raw_fd(),
            &req(CriuReqType::Version).encode_to_vec(),
            MsgFlags::empty(),
        )
        .unwrap();
        let r = recv_resp(sk.as_fd()).expect("an answer");
        assert!(r.success);
        assert_eq!(r.version.unwrap().major_number, 4);
        // A restore with inherited descriptors needs swrk: the service refuses it.
        let sk2 = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        connect(sk2.as_raw_fd(), &UnixAddr::new(&addr).unwrap()).unwrap();
        setsockopt(&sk2, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).unwrap();
        let dir = std::fs::File::open(d.path()).unwrap();
        let mut q = req(CriuReqType::Restore);
        q.opts = Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            inherit_fd: vec![criu_images::pb::InheritFd {
                key: "k".into(),
                fd: 3,
            }],
            ..Default::default()
        });
        send(sk2.as_raw_fd(), &q.encode_to_vec(), MsgFlags::empty()).unwrap();
        let r = recv_resp(sk2.as_fd()).expect("an answer");
        assert!(!r.success);
        assert!(r.cr_errmsg.unwrap().contains("standalone service"));
    }
    svc.stop();
    assert!(!addr.exists(), "the socket file is left behind");
}

/// The stages rust-criu's callback saw (a plain `fn` pointer: it cannot capture).
static SEEN: std::sync::Mutex<Vec<(String, i32)>> = std::sync::Mutex::new(Vec::new());

fn record(
    script: &str,
    n: &rust_criu::rust_criu_protobuf::rpc::Criu_notify,
    _fd: Option<i32>,
) -> i32 {
    SEEN.lock().unwrap().push((script.to_string(), n.pid()));
    0
}

fn take_seen() -> Vec<String> {
    std::mem::take(&mut *SEEN.lock().unwrap())
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// Asserts `want` appears in `seen` in this order (other stages may come between).
fn assert_in_order(seen: &[String], want: &[&str]) {
    let mut it = seen.iter();
    for w in want {
        assert!(
            it.any(|s| s == w),
            "stage {w} missing or out of order in {seen:?}"
        );
    }
}

#[test]
fn rust_criu_sees_and_acknowledges_every_stage() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(d.path());
    let dir = std::fs::File::open(&img).unwrap();

    let mut c = rust_criu();
    c.set_pid(v.pid());
    c.set_images_dir_fd(dir.as_raw_fd());
    c.set_log_file("dump.log".into());
    c.set_log_level(4);
    c.set_notify_scripts(true);
    c.set_notify_cb(record);
    take_seen();
    let dumped = c.dump();
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    assert!(dumped.is_ok(), "dump over RPC: {dumped:?}\nlog:\n{log}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    assert_in_order(&take_seen(), &["pre-dump", "post-dump"]);

    c.set_images_dir_fd(dir.as_raw_fd());
    c.set_log_file("restore.log".into());
    c.set_log_level(4);
    c.set_notify_scripts(true);
    c.set_notify_cb(record);
    let restored = c.restore();
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap_or_default();
    assert!(
        restored.is_ok(),
        "restore over RPC: {restored:?}\nlog:\n{log}"
    );
    let r = Spawned::guard(v.pid());
    let seen = take_seen();
    assert_in_order(
        &seen,
        &["pre-restore", "post-restore", "pre-resume", "post-resume"],
    );
    assert_counting_on(d.path());
    drop(r);
}

/// Sends a DUMP of `pid` into `dir` with notifications and leave_running.
fn dump_with_notify(s: &Swrk, pid: i32, dir: &std::fs::File) {
    let mut q = req(CriuReqType::Dump);
    q.opts = Some(CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(pid),
        leave_running: Some(true),
        notify_scripts: Some(true),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    s.send(&q);
}

fn expect_notify(s: &Swrk, action: &str) {
    let r = s.recv().expect("a notification");
    assert_eq!(r.r#type, CriuReqType::Notify as i32, "{r:?}");
    assert!(r.success);
    assert_eq!(r.notify.and_then(|n| n.script).as_deref(), Some(action));
}

fn ack(s: &Swrk, ok: bool) {
    let mut q = req(CriuReqType::Notify);
    q.notify_success = Some(ok);
    s.send(&q);
}

#[test]
fn a_client_that_refuses_post_dump_stops_the_dump_and_the_victim_runs_on() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(d.path());
    let dir = std::fs::File::open(&img).unwrap();
    let s = Swrk::start(Duration::from_secs(10));
    dump_with_notify(&s, v.pid(), &dir);
    expect_notify(&s, "pre-dump");
    ack(&s, true);
    // Asked once the tree is frozen, as CRIU does (an answer without opts adds nothing).
    expect_notify(&s, "query-ext-files");
    ack(&s, true);
    expect_notify(&s, "post-dump");
    ack(&s, false);
    let r = s.recv().expect("the dump's answer");
    assert_eq!(r.r#type, CriuReqType::Dump as i32);
    assert!(!r.success);
    let msg = r.cr_errmsg.unwrap_or_default();
    assert!(msg.contains("post-dump"), "{msg}");
    assert_eq!(s.finish(), Some(0));
    assert!(
        !img.join("inventory.img").exists(),
        "a refused dump left a complete image set"
    );
    assert_counting_on(d.path());
    drop(v);
}

#[test]
fn a_client_that_goes_away_at_pre_dump_leaves_the_victim_running() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(d.path());
    let dir = std::fs::File::open(&img).unwrap();
    let s = Swrk::start(Duration::from_secs(10));
    dump_with_notify(&s, v.pid(), &dir);
    expect_notify(&s, "pre-dump");
    s.finish();
    assert!(!img.join("inventory.img").exists());
    assert_counting_on(d.path());
    drop(v);
}

#[test]
fn the_service_goes_to_the_background_with_daemon_and_writes_its_pidfile() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let addr = d.path().join("criu.sk");
    let pidfile = d.path().join("service.pid");
    let mut starter = Command::new(criu_bin())
        .arg("service")
        .arg("--address")
        .arg(&addr)
        .arg("--daemon")
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("-W")
        .arg(d.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = starter.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        let _ = tx.send(s);
    });
    assert!(starter.wait().unwrap().success());
    let pid: i32 = wait_file(&pidfile, Duration::from_secs(10))
        .trim()
        .parse()
        .unwrap();
    // Whatever happens below, the service does not outlive the test.
    let service = Spawned::guard(pid);
    // The daemon let go of the starter's stderr (its log went to stderr).
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the daemon still holds the stderr of the process that started it"
    );
    let sk = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(sk.as_raw_fd(), &UnixAddr::new(&addr).unwrap()).unwrap();
    setsockopt(&sk, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).unwrap();
    let mut q = req(CriuReqType::Check);
    q.keep_open = Some(true);
    send(sk.as_raw_fd(), &q.encode_to_vec(), MsgFlags::empty()).unwrap();
    let r = recv_resp(sk.as_fd()).expect("an answer");
    assert_eq!(r.r#type, CriuReqType::Check as i32);
    send(
        sk.as_raw_fd(),
        &req(CriuReqType::Version).encode_to_vec(),
        MsgFlags::empty(),
    )
    .unwrap();
    assert!(recv_resp(sk.as_fd()).expect("an answer").success);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        wait_exit_timeout(pid, Duration::from_secs(5)),
        Ok(Some(Exit::Code(0)))
    );
    let mut service = service;
    service.mark_reaped();
    assert!(!addr.exists(), "the socket file is left behind");
}

/// A `criu service` child: stopped with SIGTERM by [`Service::stop`], killed if a test fails
/// before that.
struct Service(Option<Child>);

impl Service {
    /// SIGTERM, then its exit status must be success.
    fn stop(mut self) {
        let mut c = self.0.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = c.wait().unwrap();
        assert!(st.success(), "criu service ended with {st:?}");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `criu service` at `addr` as a child of the test and waits for its socket.
fn start_service(d: &Path, addr: &Path) -> Service {
    let svc = Command::new(criu_bin())
        .arg("service")
        .arg("--address")
        .arg(addr)
        .arg("-W")
        .arg(d)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !addr.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    Service(Some(svc))
}

fn service_request(addr: &Path, q: &CriuReq) -> CriuResp {
    let sk = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(sk.as_raw_fd(), &UnixAddr::new(addr).unwrap()).unwrap();
    setsockopt(&sk, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).unwrap();
    send(sk.as_raw_fd(), &q.encode_to_vec(), MsgFlags::empty()).unwrap();
    recv_resp(sk.as_fd()).expect("an answer")
}

#[test]
fn the_service_dumps_and_restores_with_the_client_s_images_descriptor() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let addr = d.path().join("criu.sk");
    let svc = start_service(d.path(), &addr);
    let mut v = spawn_counter(d.path());
    let dir = std::fs::File::open(&img).unwrap();
    let opts = |pid: Option<i32>, log: &str| CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid,
        log_file: Some(log.into()),
        log_level: Some(4),
        ..Default::default()
    };
    let mut q = req(CriuReqType::Dump);
    q.opts = Some(opts(Some(v.pid()), "dump.log"));
    let r = service_request(&addr, &q);
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    assert!(r.success, "{r:?}\n{log}");
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();
    let mut q = req(CriuReqType::Restore);
    q.opts = Some(opts(None, "restore.log"));
    let r = service_request(&addr, &q);
    let restored = Spawned::guard(v.pid());
    let log = std::fs::read_to_string(img.join("restore.log")).unwrap_or_default();
    assert!(r.success, "{r:?}\n{log}");
    assert_eq!(r.restore.map(|x| x.pid), Some(v.pid()));
    assert_counting_on(d.path());
    drop(restored);
    svc.stop();
}

#[test]
fn a_client_that_refuses_pre_restore_gets_nothing_restored() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(d.path());
    let dir = std::fs::File::open(&img).unwrap();
    let mut c = rust_criu();
    c.set_pid(v.pid());
    c.set_images_dir_fd(dir.as_raw_fd());
    c.set_log_file("dump.log".into());
    assert!(c.dump().is_ok());
    assert_eq!(
        wait_exit_timeout(v.pid(), Duration::from_secs(5)),
        Ok(Some(Exit::Signal(libc::SIGKILL)))
    );
    v.mark_reaped();

    let s = Swrk::start(Duration::from_secs(10));
    let mut q = req(CriuReqType::Restore);
    q.opts = Some(CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        notify_scripts: Some(true),
        log_file: Some("restore.log".into()),
        log_level: Some(4),
        ..Default::default()
    });
    s.send(&q);
    expect_notify(&s, "pre-restore");
    ack(&s, false);
    let r = s.recv().expect("the restore's answer");
    assert_eq!(r.r#type, CriuReqType::Restore as i32);
    assert!(!r.success);
    assert_eq!(r.restore.map(|x| x.pid), Some(-1));
    assert!(r.cr_errmsg.unwrap_or_default().contains("pre-restore"));
    assert_eq!(s.finish(), Some(0));
    assert!(
        !Path::new(&format!("/proc/{}", v.pid())).exists(),
        "a refused restore brought the process back"
    );
}
