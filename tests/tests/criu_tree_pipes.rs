//! `criu dump` then `criu restore` of a process whose pipes hold unread data: the restored pipes
//! hold the same bytes in the same order (including a pipe grown past the default size), and an
//! empty pipe stays empty.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{Exit, become_subreaper, test_lock, wait_exit_timeout, workspace_bin};

/// Kills and reaps `pid` on drop unless it is already reaped (by pid; the `Child`, if any, is
/// kept only so that std closes nothing early).
struct Reap(i32, bool, #[allow(dead_code)] Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if !self.1 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = wait_exit_timeout(self.0, Duration::from_secs(5));
        }
    }
}

fn wait_file(p: &Path, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(p)
            && !s.is_empty()
        {
            return s;
        }
        assert!(Instant::now() < end, "{} did not appear", p.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn criu(args: &[&str]) -> Output {
    Command::new(workspace_bin("criu", "criu"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_ok(o: &Output, what: &str, log: &Path) {
    assert!(
        o.status.success(),
        "{what}: {:?}\nstderr: {}\nlog: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn spawn_victim(out: &Path, ready: &Path, log: &Path) -> Reap {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_criu-tvictim-pipe"));
    cmd.args([out.to_str().unwrap(), ready.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: the closure only makes an async-signal-safe syscall in the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    Reap(child.id() as i32, false, Some(child))
}

fn usr1(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn pipe_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let v = spawn_victim(&out, &ready, &d.path().join("victim.log"));
    wait_file(&ready, Duration::from_secs(10));
    usr1(v.0);
    assert_eq!(wait_file(&out, Duration::from_secs(10)), "ok");
}

#[test]
fn pipe_data_survives_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = spawn_victim(&out, &ready, &d.path().join("victim.log"));
    wait_file(&ready, Duration::from_secs(10));
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let pid = v.0.to_string();
    let o = criu(&[
        "dump",
        "-t",
        &pid,
        "-D",
        img.to_str().unwrap(),
        "-o",
        "dump.log",
        "-v4",
    ]);
    assert_ok(&o, "dump", &img.join("dump.log"));
    assert_eq!(
        wait_exit_timeout(v.0, Duration::from_secs(5)).unwrap(),
        Some(Exit::Signal(libc::SIGKILL)),
        "the dump did not kill the victim"
    );
    v.1 = true;
    assert!(
        img.join("pipes-data.img").exists(),
        "the dump wrote no pipe data"
    );
    let o = criu(&[
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-o",
        "restore.log",
        "-v4",
        "-d",
        "--pidfile",
        "restored.pid",
    ]);
    assert_ok(&o, "restore", &img.join("restore.log"));
    let restored: i32 = std::fs::read_to_string(img.join("restored.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let r = Reap(restored, false, None);
    assert_eq!(restored, v.0, "restored with another pid");
    usr1(r.0);
    assert_eq!(wait_file(&out, Duration::from_secs(10)), "ok");
}
