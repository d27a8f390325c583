//! RPC requests as untrusted input, fuzzed: valid `criu_req` messages of every type, encoded
//! and then mutated (bit flips, interesting bytes, truncation, insertion, splicing), sent to
//! `criu swrk` one packet each. Every answer must be a well-formed `criu_resp` or a clean
//! close, within the timeout (no hang), and criu must exit normally (no panic, no signal).
//!
//! Requests that decode are made harmless before they are sent: they name only pids that
//! cannot exist, an empty images directory, no log file, root, exec command or page server,
//! and page-server requests become version requests, so a mutation can never dump, kill or
//! restore a real process or write outside the test's directory.
//!
//! The suite runs a fixed seed and a bounded count; the bench runs longer:
//! `FUZZ_ITERATIONS=5000 cargo test -p compel-criu-tests --test criu_rpc_fuzz -- --ignored --nocapture`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::criu_bin;
use compel_criu_tests::rng::Rng;
use criu_images::pb::{CriuFeatures, CriuOpts, CriuReq, CriuReqType, CriuResp};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

/// How long one answer may take: a hang fails the run.
const ANSWER: Duration = Duration::from_secs(20);
/// Requests sent in one swrk session before it is closed and a new one started.
const PER_SESSION: usize = 25;

/// Pids no process can have (above any pid_max, or negative).
const NO_PIDS: [i32; 3] = [0x3fff_fff0, i32::MAX, -7];

/// The requests mutations start from: every type, with options set.
fn seeds(dir: &str) -> Vec<Vec<u8>> {
    let opts = |pid: i32| CriuOpts {
        images_dir_fd: -1,
        images_dir: Some(dir.to_string()),
        pid: Some(pid),
        leave_running: Some(true),
        log_level: Some(4),
        shell_job: Some(true),
        tcp_established: Some(true),
        ext_unix_sk: Some(true),
        file_locks: Some(true),
        track_mem: Some(true),
        parent_img: Some("../parent".into()),
        cpu_cap: Some(u32::MAX),
        ..Default::default()
    };
    let mut out = Vec::new();
    for ty in 0..=13 {
        let req = CriuReq {
            r#type: ty,
            opts: Some(opts(NO_PIDS[ty as usize % NO_PIDS.len()])),
            notify_success: Some(ty % 2 == 0),
            keep_open: Some(true),
            features: Some(CriuFeatures {
                mem_track: Some(true),
                lazy_pages: Some(true),
                pidfd_store: Some(true),
            }),
            pid: Some(NO_PIDS[0] as u32),
        };
        out.push(req.encode_to_vec());
    }
    out.push(
        CriuReq {
            r#type: CriuReqType::Version as i32,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    out
}

const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x08, 0x10, 0x0a];

/// A mutated copy of one seed (sometimes spliced with another).
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => d.truncate(rng.below(len + 1)),
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.bits() as u8).collect();
                d.splice(at..at, bytes);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let at = rng.below(len + 1);
                d.splice(at..at, other[from..].iter().copied());
            }
            5 if len > 0 => {
                // A varint field made huge (a length or a number).
                let at = rng.below(len);
                d.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            _ => d.extend_from_slice(&[0x0a, 0x00]),
        }
    }
    d
}

/// Makes a request that decodes harmless (see the module documentation); `None` keeps the
/// bytes as they are (they do not decode, and criu must say so).
fn defuse(bytes: &[u8], dir: &str, rng: &mut Rng) -> Option<Vec<u8>> {
    let mut r = CriuReq::decode(bytes).ok()?;
    if r.r#type == CriuReqType::PageServer as i32 || r.r#type == CriuReqType::PageServerChld as i32
    {
        r.r#type = CriuReqType::Version as i32;
    }
    let no_pid = NO_PIDS[rng.below(NO_PIDS.len())];
    if r.pid.is_some() {
        r.pid = Some(no_pid as u32);
    }
    let mut o = r.opts.take().unwrap_or_default();
    o.pid = Some(no_pid);
    o.images_dir_fd = -1;
    o.images_dir = Some(dir.to_string());
    o.work_dir_fd = None;
    o.log_file = None;
    o.root = None;
    o.exec_cmd.clear();
    o.ps = None;
    o.lsm_profile = None;
    o.lsm_mount_context = None;
    o.config_file = None;
    o.cgroup_yard = None;
    o.freeze_cgroup = None;
    o.inherit_fd.clear();
    o.external.clear();
    r.opts = Some(o);
    Some(r.encode_to_vec())
}

/// A `criu swrk` session on a socketpair, with answers read without panicking.
struct Session {
    sk: OwnedFd,
    child: Child,
}

enum Answer {
    Resp,
    Closed,
}

impl Session {
    fn start() -> Session {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let fd = nix::unistd::dup(&theirs).unwrap();
        let child = Command::new(criu_bin())
            .arg("swrk")
            .arg(fd.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        drop(fd);
        drop(theirs);
        let tv = TimeVal::new(ANSWER.as_secs() as _, 0);
        setsockopt(&ours, sockopt::ReceiveTimeout, &tv).unwrap();
        Session { sk: ours, child }
    }

    /// Sends one packet; false when criu has closed its end.
    fn send(&self, bytes: &[u8]) -> bool {
        match send(self.sk.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => true,
            Err(Errno::EPIPE | Errno::ECONNRESET) => false,
            Err(e) => panic!("sending a request: {e}"),
        }
    }

    /// The answer: a `criu_resp` that decodes, or a clean close. Panics on a hang or on
    /// bytes that are not a `criu_resp`.
    fn answer(&self, req: &[u8]) -> Answer {
        let mut buf = vec![0u8; 256 * 1024];
        match recv(self.sk.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(Errno::ECONNRESET) => Answer::Closed,
            Ok(n) => match CriuResp::decode(&buf[..n]) {
                Ok(_) => Answer::Resp,
                Err(e) => panic!("answer to {req:02x?} is not a criu_resp: {e}"),
            },
            Err(Errno::EAGAIN) => panic!("no answer within {ANSWER:?} to {req:02x?}"),
            Err(e) => panic!("receiving the answer to {req:02x?}: {e}"),
        }
    }

    /// Closes our end; criu must exit by itself, normally (a Rust panic exits 101).
    fn finish(mut self, last: &[u8]) {
        drop(self.sk);
        let t0 = Instant::now();
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > ANSWER {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("criu swrk did not exit after {last:02x?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        match st.code() {
            Some(101) => panic!("criu swrk panicked after {last:02x?}"),
            Some(_) => {}
            None => panic!("criu swrk was killed by a signal ({st}) after {last:02x?}"),
        }
    }
}

/// Sends `n` mutated requests from seed `seed`; returns (answers, closes).
fn fuzz(seed: u64, n: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let seeds = seeds(&dir_s);
    let mut rng = Rng(seed);
    let (mut answers, mut closes) = (0, 0);
    let mut session = Session::start();
    let mut in_session = 0;
    let mut last = Vec::new();
    for _ in 0..n {
        let raw = mutate(&mut rng, &seeds);
        let bytes = defuse(&raw, &dir_s, &mut rng).unwrap_or(raw);
        let answered = session.send(&bytes) && matches!(session.answer(&bytes), Answer::Resp);
        last = bytes;
        in_session += 1;
        if answered {
            answers += 1;
        } else {
            closes += 1;
        }
        if !answered || in_session == PER_SESSION {
            session.finish(&last);
            session = Session::start();
            in_session = 0;
        }
    }
    session.finish(&last);
    // No images were written for the pids that do not exist: only logs, the marker a failed
    // dump leaves (README: an incomplete dump says so) and what CPUINFO_DUMP writes.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name();
        let name = name.to_string_lossy();
        assert!(
            name.ends_with(".log") || name == "criu-dump-incomplete" || name == "cpuinfo.img",
            "criu left {name} in the images dir"
        );
    }
    (answers, closes)
}

#[test]
fn mutated_requests_get_an_answer_or_a_clean_close() {
    let (answers, closes) = fuzz(0x5eed_c0de, 150);
    eprintln!("{answers} answers, {closes} clean closes");
    // Most mutated requests still decode and are answered.
    assert!(answers > 50, "{answers} answers, {closes} closes");
}

#[test]
#[ignore = "long fuzzing run: FUZZ_ITERATIONS=N, run with --ignored --nocapture"]
fn mutated_requests_long_run() {
    let n = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0bad_5eed);
    let (answers, closes) = fuzz(seed, n);
    eprintln!("seed {seed:#x}: {answers} answers, {closes} clean closes");
}
