//! RPC requests as untrusted input, fuzzed: valid `criu_req` messages of every type, encoded
//! and then mutated (bit flips, interesting bytes, truncation, insertion, splicing), sent to
//! `criu swrk` one packet each. Every answer must be a well-formed `criu_resp` or a clean
//! close, within the timeout (no hang), and criu must exit normally (no panic, no signal).
//!
//! Requests that decode are made harmless before they are sent (`rpc_fuzz::defuse`): they name
//! only pids that cannot exist, an empty images directory, no log file, root, exec command or
//! page server, and page-server requests become version requests, so a mutation can never
//! dump, kill or restore a real process or write outside the test's directory. criu's stderr
//! must not say "panicked".
//!
//! The suite runs a fixed seed and a bounded count; the bench runs longer:
//! `FUZZ_ITERATIONS=5000 cargo test -p compel-criu-tests --test criu_rpc_fuzz -- --ignored --nocapture`.

use compel_criu_tests::rng::Rng;
use compel_criu_tests::rpc_fuzz::{Answer, NO_PIDS, Session, defuse};
use criu_images::pb::{CriuFeatures, CriuOpts, CriuReq, CriuReqType};
use prost::Message;

/// Requests sent in one swrk session before it is closed and a new one started.
const PER_SESSION: usize = 25;

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

/// Sends `n` mutated requests from seed `seed`; returns (answers, closes).
fn fuzz(seed: u64, n: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let seeds = seeds(&dir_s);
    let mut rng = Rng(seed);
    let (mut answers, mut closes) = (0, 0);
    let stderr = dir.path().join("swrk.err");
    let mut session = Session::start(&stderr);
    let mut in_session = 0;
    let mut last = Vec::new();
    for _ in 0..n {
        let raw = mutate(&mut rng, &seeds);
        let bytes = defuse(&raw, &dir_s, &mut rng).unwrap_or(raw);
        let answered = session.send(&bytes) && matches!(session.answer(&bytes), Answer::Resp(_));
        // criu ends the session after answering a request without keep_open (or one that
        // does not decode): the next request goes to a new session, so it is not lost.
        let ends = CriuReq::decode(bytes.as_slice()).map_or(true, |r| r.keep_open != Some(true));
        last = bytes;
        in_session += 1;
        if answered {
            answers += 1;
        } else {
            closes += 1;
        }
        if !answered || ends || in_session == PER_SESSION {
            session.finish(&last);
            session = Session::start(&stderr);
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
            name.ends_with(".log")
                || name == "criu-dump-incomplete"
                || name == "cpuinfo.img"
                || name == "swrk.err",
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
