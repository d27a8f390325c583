//! What the RPC front end costs: `VERSION` over `criu swrk` (spawn to reply), and a tiny
//! process dumped and restored over RPC against the same through the command line, in one run.
//!
//! `cargo bench -p criu --bench rpc` (full: 15 rounds of each); run without `--bench` (as
//! `cargo test --benches` does) it makes two quick rounds. Prints medians and the difference.
//! The victim is `/bin/sleep`; dumps kill it, restores bring it back detached (this bench is a
//! child subreaper, so it reaps what it restored).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, CriuResp};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use prost::Message;

const CRIU: &str = env!("CARGO_BIN_EXE_criu");

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One request over a fresh `criu swrk`: spawn, send, read the answer, wait for criu's exit.
fn swrk(req: &CriuReq) -> CriuResp {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let fd: OwnedFd = nix::unistd::dup(&theirs).unwrap();
    let mut child = Command::new(CRIU)
        .arg("swrk")
        .arg(fd.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    drop(fd);
    drop(theirs);
    send(ours.as_raw_fd(), &req.encode_to_vec(), MsgFlags::empty()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = recv(ours.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    drop(ours);
    child.wait().unwrap();
    CriuResp::decode(&buf[..n]).unwrap()
}

fn rpc(ty: CriuReqType, opts: Option<CriuOpts>) -> Duration {
    let req = CriuReq {
        r#type: ty as i32,
        opts,
        ..Default::default()
    };
    let t = Instant::now();
    let r = swrk(&req);
    let d = t.elapsed();
    assert!(r.success, "{ty:?} over RPC: {r:?}");
    d
}

fn cli(args: &[&str]) -> Duration {
    let t = Instant::now();
    let o = Command::new(CRIU)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let d = t.elapsed();
    assert!(o.status.success(), "criu {args:?}: {o:?}");
    d
}

fn reap(pid: i32) {
    // SAFETY: waits for our own child (the victim, or a restored task reparented to us).
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

fn kill(pid: i32) {
    // SAFETY: signals the process this bench started or restored.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

/// Dumps `pid` (killing it) and restores it, through the CLI or RPC; returns the two times.
fn round(pid: i32, dir: &Path, over_rpc: bool) -> (Duration, Duration) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.to_str().unwrap();
    let p = pid.to_string();
    let images = std::fs::File::open(dir).unwrap();
    let opts = |pid: Option<i32>| CriuOpts {
        images_dir_fd: images.as_raw_fd(),
        pid,
        log_file: Some("rpc.log".into()),
        ..Default::default()
    };
    let dump = if over_rpc {
        rpc(CriuReqType::Dump, Some(opts(Some(pid))))
    } else {
        cli(&["dump", "-t", &p, "-D", d, "-o", "cli.log"])
    };
    reap(pid);
    let restore = if over_rpc {
        rpc(CriuReqType::Restore, Some(opts(None)))
    } else {
        cli(&["restore", "-D", d, "-d", "-o", "cli.log"])
    };
    (dump, restore)
}

/// Kills the victim (whichever incarnation) if the bench fails half way.
struct Guard(i32);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: signals the process this bench started or restored; harmless if gone.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 15 } else { 2 };
    // SAFETY: prctl sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let img = dir.path().join("img");

    let mut version: Vec<Duration> = (0..rounds)
        .map(|_| rpc(CriuReqType::Version, None))
        .collect();
    let mut help: Vec<Duration> = (0..rounds).map(|_| cli(&["--version"])).collect();

    let mut cmd = Command::new("sleep");
    cmd.arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: close_range is a raw syscall, safe between fork and exec; the victim keeps no
    // descriptor of ours (a lock file a caller's `flock` holds would be one).
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    // Reaped by pid (`reap`, `kill`): after the first restore it is no longer this Child.
    #[allow(clippy::zombie_processes)]
    let victim = cmd.spawn().unwrap();
    let pid = victim.id() as i32;
    let _guard = Guard(pid);
    std::thread::sleep(Duration::from_millis(20));
    let (mut cd, mut cr, mut rd, mut rr) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (d, r) = round(pid, &img, false);
        cd.push(d);
        cr.push(r);
        let (d, r) = round(pid, &img, true);
        rd.push(d);
        rr.push(r);
    }
    kill(pid);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (cd, cr, rd, rr) = (
        median(&mut cd),
        median(&mut cr),
        median(&mut rd),
        median(&mut rr),
    );
    println!("rpc bench, {rounds} rounds, medians:");
    println!(
        "  VERSION over swrk (spawn to reply): {:.2} ms   (criu --version: {:.2} ms)",
        ms(median(&mut version)),
        ms(median(&mut help))
    );
    println!(
        "  tiny dump:    CLI {:.2} ms, RPC {:.2} ms, RPC adds {:+.2} ms",
        ms(cd),
        ms(rd),
        ms(rd) - ms(cd)
    );
    println!(
        "  tiny restore: CLI {:.2} ms, RPC {:.2} ms, RPC adds {:+.2} ms",
        ms(cr),
        ms(rr),
        ms(rr) - ms(cr)
    );
}
