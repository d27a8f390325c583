//! A program that uses criu's library to dump and restore a fork of itself: the restored task
//! runs the program's own executable, which the restoring process also runs. The kernel refuses
//! to change a task's executable while the old one is still mapped (`PR_SET_MM_MAP` fails with
//! EBUSY), so the restore keeps the executable it already has when it is the same file.

use std::time::Duration;

use compel_criu_tests::{Exit, become_subreaper, skip_if_not_root, test_lock, wait_exit_timeout};
use criu::{DumpOptions, FinalState, RestoreOptions, RestoreOutcome};

extern "C" fn on_usr1(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(42) }
}

/// Forks a child of this test binary that waits for SIGUSR1 (then exits 42), its stdio on
/// /dev/null and no other descriptor.
fn fork_sleeper() -> i32 {
    let mut ready = [0i32; 2];
    // SAFETY: pipe writes two descriptors into a live array.
    assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
    // SAFETY: the child makes raw system calls only (no allocation, no locks) until it dies.
    match unsafe { libc::fork() } {
        // SAFETY: raw system calls on the child's own descriptors and a live local.
        0 => unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::dup2(ready[1], 3);
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
            libc::write(3, b"r".as_ptr().cast(), 1);
            libc::close(3);
            loop {
                libc::pause();
            }
        },
        pid => {
            assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
            // SAFETY: closing our write end, reading one byte into a live local.
            unsafe {
                libc::close(ready[1]);
                let mut b = 0u8;
                assert_eq!(libc::read(ready[0], (&mut b as *mut u8).cast(), 1), 1);
                libc::close(ready[0]);
            }
            pid
        }
    }
}

#[test]
fn library_restores_a_fork_of_its_own_program() {
    skip_if_not_root!("library_restores_a_fork_of_its_own_program");
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let pid = fork_sleeper();
    let dumped = criu::dump(
        &DumpOptions {
            final_state: FinalState::Dead,
            ..DumpOptions::new(pid, dir.path())
        },
        None,
    );
    if dumped.is_err() {
        // SAFETY: kill and reap our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = wait_exit_timeout(pid, Duration::from_secs(10));
    dumped.expect("dump of our own fork");
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    for round in 0..2 {
        let out = criu::restore(
            &RestoreOptions {
                detach: true,
                ..RestoreOptions::new(dir.path())
            },
            None,
        )
        .unwrap_or_else(|e| panic!("restore {round} of our own fork: {e}"));
        let RestoreOutcome::Detached { pid: p } = out else {
            panic!("restore {round}: {out:?}");
        };
        assert_eq!(p, pid, "the restored pid");
        assert_eq!(
            std::fs::read_link(format!("/proc/{p}/exe")).unwrap(),
            me,
            "the restored task runs this test's program"
        );
        // SAFETY: signalling the restored task, a child of ours (subreaper).
        unsafe { libc::kill(p, libc::SIGUSR1) };
        assert_eq!(
            wait_exit_timeout(p, Duration::from_secs(10)).unwrap(),
            Some(Exit::Code(42)),
            "round {round}: the restored task runs its handler"
        );
    }
}
