//! criu restore of sessions and parents: a session leader gets its terminal back, a detached
//! restore outlives criu despite a parent-death signal.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu_bin, dump_and_reap, pid_exists, restore_d,
    skip_if_not_root, status_field, test_lock, tty_nr, wait_exit_timeout, wait_file, wait_resumed,
    wait_state,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn a_session_leader_gets_its_terminal_back() {
    skip_if_not_root!("a_session_leader_gets_its_terminal_back");
    let _g = test_lock();
    become_subreaper();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into live locals; name, termios, winsize are null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0);
    let pts = fs::read_link(format!("/proc/self/fd/{slave}")).unwrap();
    let dir = Scratch::new();
    let out = dir.path("out");
    let v_pid = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_criu-victim-counter"));
        cmd.args([out.to_str().unwrap(), dir.ready.to_str().unwrap()]);
        // SAFETY: only async-signal-safe syscalls in the child: a new session whose
        // controlling terminal is the pty, on fds 0..2, nothing else inherited.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::ioctl(slave, libc::TIOCSCTTY, 0);
                for fd in 0..3 {
                    libc::dup2(slave, fd);
                }
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        cmd.spawn().unwrap().id() as i32
    };
    // SAFETY: the slave end is the child's now; the master stays open for the whole test.
    unsafe { libc::close(slave) };
    let mut v = Spawned::guard(v_pid);
    wait_file(&dir.ready, Duration::from_secs(10));
    let tty = tty_nr(v.pid());
    assert_ne!(tty, 0);
    // A task on a terminal is dumped as a shell job (its terminal saved by path).
    dump_and_reap(&mut v, &dir.img, &["--shell-job"]);
    let task = restore_d(&dir.img, v.pid());
    assert_eq!(
        fs::read_link(format!("/proc/{}/fd/0", task.pid())).unwrap(),
        pts
    );
    assert_eq!(
        tty_nr(task.pid()),
        tty,
        "the terminal is not its controlling terminal again"
    );
    assert_eq!(status_field(task.pid(), "NSsid:"), task.pid().to_string());
    drop(task);

    // As a shell job: criu runs in the terminal's session and the task joins it.
    let mut criu = {
        use std::os::unix::process::CommandExt;
        let path = std::ffi::CString::new(pts.as_os_str().as_encoded_bytes()).unwrap();
        let mut cmd = std::process::Command::new(criu_bin());
        cmd.args([
            "restore",
            "--shell-job",
            "-D",
            dir.img.to_str().unwrap(),
            "-o",
            "restore.log",
        ])
        .stdin(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls: a new session with the pty as its terminal.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                let fd = libc::open(path.as_ptr(), libc::O_RDWR);
                libc::ioctl(fd, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    };
    wait_resumed(v.pid(), &dir.img, &mut criu);
    assert_eq!(status_field(v.pid(), "NSsid:"), criu.id().to_string());
    assert_eq!(tty_nr(v.pid()), tty);
    assert_eq!(
        fs::read_link(format!("/proc/{}/fd/1", v.pid())).unwrap(),
        pts
    );
    kill(Pid::from_raw(v.pid()), Signal::SIGKILL).unwrap();
    assert_eq!(criu.wait().unwrap().code(), Some(128 + libc::SIGKILL));
    assert!(!pid_exists(v.pid()));
    // SAFETY: closing our master end.
    unsafe { libc::close(master) };
}

#[test]
fn detached_restore_survives_criu_exit_despite_a_parent_death_signal() {
    skip_if_not_root!("detached_restore_survives_criu_exit_despite_a_parent_death_signal");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // The state victim sets PR_SET_PDEATHSIG(SIGKILL) on itself.
    let (mut v, _) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-state"),
        &[dir.ready.to_str().unwrap()],
        None,
        Duration::from_secs(10),
    );
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        wait_exit_timeout(task.pid(), Duration::from_millis(10)),
        Ok(None),
        "the task died"
    );
    assert!(matches!(
        wait_state(task.pid(), "S", Duration::from_secs(5)),
        Some('S')
    ));
    assert_eq!(status_field(task.pid(), "Name:"), "statevic");
    drop(task);
}
