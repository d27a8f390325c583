//! runc with a terminal: a container whose process has `terminal: true` gets a pty slave as its
//! stdio, and runc hands the master to whoever listens on `--console-socket`. After `runc
//! checkpoint` and `runc restore -d --console-socket` with this criu (runc asks for
//! `orphan_pts_master` over RPC: the restored slave gets a new pty, whose master criu passes to
//! runc in the `orphan-pts-master` notification and runc to the console socket), the container
//! counts on and its terminal works: a line written to the new master is echoed by the line
//! discipline and answered by the container's shell. Twice. The container is deleted whatever
//! happens.

// Unsafe code: poll on the pty master, and owning the descriptors runc sends.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use compel_criu_tests::runc::{Container, assert_unbroken, runc_usable, wait_counting};
use compel_criu_tests::{become_subreaper, test_lock};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// A counter in the background, and a shell that answers every line of its terminal.
const TTY_COUNTER: &str = "(i=0; while :; do i=$((i+1)); echo $i >> /count; sleep 0.02; done) & \
    while read l; do echo \"got:$l\"; done";

/// A console socket (`--console-socket PATH`) of the test's own.
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new(c: &Container) -> ConsoleSocket {
        let path = c.path().join("console.sock");
        let listener = UnixListener::bind(&path).expect("bind the console socket");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        ConsoleSocket { path, listener }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// The pty master runc sends on its next connection; panics after 60 s.
    fn receive(&self) -> OwnedFd {
        let end = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("no connection on the console socket: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg on the console socket");
        for c in msg.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(fds) = c {
                let mut fds = fds.into_iter();
                let first = fds.next().expect("an fd in SCM_RIGHTS");
                for extra in fds {
                    // SAFETY: the kernel just installed these descriptors in this process;
                    // each is owned once.
                    drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(extra) });
                }
                // SAFETY: installed by the kernel in this process just now, owned once.
                return unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(first) };
            }
        }
        panic!("runc sent no descriptor on the console socket");
    }
}

/// Writes `line` to the pty master and waits (10 s at most) for the shell's answer; returns
/// all that came out of the master.
fn say(master: &OwnedFd, line: &str) -> String {
    let data = format!("{line}\n");
    let n = nix::unistd::write(master, data.as_bytes()).expect("write to the pty master");
    assert_eq!(n, data.len());
    let want = format!("got:{line}");
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live pollfd of a descriptor we own.
        if unsafe { libc::poll(&mut pfd, 1, 200) } == 1 {
            let mut b = [0u8; 512];
            match nix::unistd::read(master, &mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&b[..n]),
            }
        }
        if String::from_utf8_lossy(&seen).contains(&want) {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The terminal answers `line`: the echo of the line discipline and the shell's reply.
fn assert_answers(master: &OwnedFd, line: &str, when: &str) {
    let out = say(master, line);
    assert!(
        out.contains(&format!("got:{line}")),
        "{when}: the container's shell did not answer {line:?} (saw {out:?})"
    );
    assert!(
        out.contains(&format!("{line}\r\n")),
        "{when}: the terminal did not echo {line:?} (saw {out:?})"
    );
}

/// The container's shell has the slave of its own devpts as stdin, the one bound on its
/// `/dev/console`.
fn assert_console(c: &Container, round: usize) {
    use std::os::unix::fs::MetadataExt;
    let (_, pid) = c.state();
    let fd0 = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("stdin of the init");
    assert_eq!(
        fd0,
        std::path::Path::new("/dev/pts/0"),
        "round {round}: stdin of the restored init"
    );
    let tty = std::fs::metadata(format!("/proc/{pid}/fd/0")).expect("stat stdin");
    let console =
        std::fs::metadata(format!("/proc/{pid}/root/dev/console")).expect("stat /dev/console");
    assert_eq!(
        (tty.rdev(), tty.dev()),
        (console.rdev(), console.dev()),
        "round {round}: /dev/console is not the init's terminal"
    );
}

#[test]
fn runc_container_with_a_terminal_checkpoint_and_restore_twice() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let c = Container::new(None, TTY_COUNTER, &[], |v| {
        v["process"]["terminal"] = true.into();
    });
    let console = ConsoleSocket::new(&c);
    let mut master = std::thread::scope(|s| {
        let r = s.spawn(|| console.receive());
        c.ok(
            &["run", "-d", "--console-socket", console.path(), &c.id],
            None,
        );
        r.join().expect("console receiver")
    });
    wait_counting(&c, 0);
    assert_answers(&master, "before", "before the checkpoint");
    for round in 0..2 {
        let (_, pid) = c.state();
        c.checkpoint(round, &[]);
        drop(master);
        let at_dump = c.counts().len();
        master = std::thread::scope(|s| {
            let r = s.spawn(|| console.receive());
            c.restore(round, pid, &["--console-socket", console.path()]);
            r.join().expect("console receiver")
        });
        wait_counting(&c, at_dump);
        assert_unbroken(&c);
        assert_console(&c, round);
        assert_answers(&master, &format!("after{round}"), "after the restore");
    }
    drop(master);
    drop(c);
}
