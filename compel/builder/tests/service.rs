//! The parasite side of the RPC, end to end without ptrace: the demo parasite is built, placed in
//! this process, and a forked child runs its service loop (`__export_parasite_main`, daemon
//! mode) as an infected task would, while the test plays the host on a SEQPACKET socket: log fd,
//! hello (pid and cwd), fds both ways, shared memory both ways, an unknown command, FINI.

mod common;

#[path = "../../../parasite-blobs/parasites/demo/src/proto.rs"]
#[allow(dead_code)]
mod proto;

use common::{Placed, build};
use compel_builder::Sources;
use compel_proto::rpc::{
    ARGS_PAYLOAD_OFFSET, CMD_FINI, CMD_PING, CMD_SET_LOG, CtlMsg, FdsMsg, LOG_DEBUG, MODE_DAEMON,
    ParasiteInit, ShmemMsg,
};
use compel_proto::{as_bytes, read_plain, write_plain};
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, accept, bind, listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
};
use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

static FORK_LOCK: Mutex<()> = Mutex::new(());
const ARGS_SIZE: usize = 64 * 1024;

/// A child that is killed and reaped if the test fails before reaping it.
struct Child(libc::pid_t);

impl Child {
    fn wait(mut self) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own child only.
        let r = unsafe { libc::waitpid(self.0, &mut status, libc::__WALL) };
        assert_eq!(r, self.0);
        self.0 = 0;
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        libc::WEXITSTATUS(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: kills and reaps our own child only.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), libc::__WALL);
            }
        }
    }
}

/// The args area: shared anonymous memory, so that the child's writes are seen here.
struct Args {
    base: *mut u8,
}

impl Args {
    fn new() -> Args {
        // SAFETY: a fresh shared anonymous mapping replaces nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ARGS_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Args { base: p.cast() }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is ARGS_SIZE bytes, alive as long as self; the child only writes
        // it while a command runs, when this side does not look.
        unsafe { std::slice::from_raw_parts_mut(self.base, ARGS_SIZE) }
    }

    fn payload(&mut self) -> &mut [u8] {
        &mut self.bytes()[ARGS_PAYLOAD_OFFSET..]
    }
}

impl Drop for Args {
    fn drop(&mut self) {
        // SAFETY: our mapping, no longer used.
        unsafe { libc::munmap(self.base.cast(), ARGS_SIZE) };
    }
}

/// Starts the demo's service loop in a forked child, connected to a fresh listening socket.
fn start(placed: &Placed, main_off: usize, args: &mut Args) -> (Child, OwnedFd) {
    let name = format!(
        "compel-builder-test-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    );
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        listener.as_raw_fd(),
        &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
    )
    .unwrap();
    listen(&listener, Backlog::new(1).unwrap()).unwrap();

    let mut init = ParasiteInit::new();
    init.mode = MODE_DAEMON;
    init.payload_size = (ARGS_SIZE - ARGS_PAYLOAD_OFFSET) as u64;
    let mut path = vec![0u8];
    path.extend_from_slice(name.as_bytes());
    assert!(init.set_unix_addr(&path));
    assert!(write_plain(args.bytes(), &init));

    type Main = unsafe extern "C" fn(*mut ParasiteInit) -> u64;
    // SAFETY: main_off is __export_parasite_main of the placed, relocated blob.
    let main: Main = unsafe { std::mem::transmute::<usize, Main>(placed.addr(main_off)) };
    // SAFETY: the child only runs the parasite (raw syscalls, no allocation, no locks) and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: the args area is mapped and initialised above; sigframe 0 makes main return.
        let ret = unsafe { main(args.base.cast()) };
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ret == 0 { 0 } else { 3 }) };
    }
    let child = Child(pid);
    let mut fds = [libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: polls one valid fd.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) };
    assert_eq!(ready, 1, "the parasite did not connect");
    // SAFETY: accept returned a new fd that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(accept(listener.as_raw_fd()).unwrap()) };
    setsockopt(
        &conn,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(10, 0),
    )
    .unwrap();
    (child, conn)
}

fn send(sock: &OwnedFd, data: &[u8], fds: &[RawFd]) {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

fn recv(sock: &OwnedFd) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: SCM_RIGHTS gave us new fds that nothing else owns.
            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let n = msg.bytes;
    (buf[..n].to_vec(), fds)
}

/// Sends a command (and then `fds`, if any, as an FdsMsg) and returns the answer's errno.
fn call(sock: &OwnedFd, cmd: u32, fds: &[RawFd]) -> i32 {
    send(sock, as_bytes(&CtlMsg::cmd(cmd)), &[]);
    if !fds.is_empty() {
        send(
            sock,
            as_bytes(&FdsMsg {
                count: fds.len() as u32,
                reserved: 0,
            }),
            fds,
        );
    }
    answer(sock, cmd)
}

fn answer(sock: &OwnedFd, cmd: u32) -> i32 {
    let (data, fds) = recv(sock);
    assert!(fds.is_empty());
    let msg: CtlMsg = read_plain(&data).expect("an answer");
    assert_eq!(data.len(), 12);
    assert_eq!((msg.cmd, msg.ack), (cmd, cmd));
    msg.err
}

fn memfd(name: &str, data: &[u8]) -> OwnedFd {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    nix::unistd::write(&fd, data).unwrap();
    fd
}

fn map_shared(fd: RawFd, len: usize) -> &'static mut [u8] {
    // SAFETY: a new shared mapping of a memfd replaces nothing; leaked for the test's duration.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the mapping is len bytes and never unmapped.
    unsafe { std::slice::from_raw_parts_mut(p.cast(), len) }
}

fn demo() -> (compel_builder::Built, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let built = build(
        &Sources::from_workspace()
            .root
            .join("parasite-blobs/parasites/demo"),
        out.path(),
    );
    (built, out)
}

#[test]
fn demo_serves_hello_fds_shmem_and_fini() {
    let _lock = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (built, _out) = demo();
    let main_off = built.blob.symbol("__export_parasite_main").unwrap();
    let placed = Placed::new(&built.blob.desc());
    let mut args = Args::new();
    let secret = memfd("secret", b"the parasite's secret");
    let (child, sock) = start(&placed, main_off, &mut args);

    // Log channel: a pipe, level DEBUG.
    let (log_r, log_w) = nix::unistd::pipe().unwrap();
    write_plain(args.payload(), &LOG_DEBUG);
    assert_eq!(call(&sock, CMD_SET_LOG, &[log_w.as_raw_fd()]), 0);
    drop(log_w);
    assert_eq!(call(&sock, CMD_PING, &[]), 0);

    // Hello: pid and cwd of the task.
    assert_eq!(call(&sock, proto::CMD_HELLO, &[]), 0);
    let hello: proto::HelloReply = read_plain(args.payload()).unwrap();
    assert_eq!(hello.pid, child.0);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        &hello.cwd[..hello.cwd_len as usize],
        cwd.as_os_str().as_encoded_bytes()
    );

    // Steal an fd of the task: the fd message comes before the answer.
    write_plain(
        args.payload(),
        &proto::FdArgs {
            fd: secret.as_raw_fd(),
            reserved: 0,
        },
    );
    send(&sock, as_bytes(&CtlMsg::cmd(proto::CMD_SEND_FD)), &[]);
    let (data, mut fds) = recv(&sock);
    assert_eq!(read_plain::<FdsMsg>(&data).unwrap().count, 1);
    assert_eq!(answer(&sock, proto::CMD_SEND_FD), 0);
    let mut stolen = std::fs::File::from(fds.pop().unwrap());
    let mut text = String::new();
    std::io::Seek::seek(&mut stolen, std::io::SeekFrom::Start(0)).unwrap();
    stolen.read_to_string(&mut text).unwrap();
    assert_eq!(text, "the parasite's secret");

    // Give the task an fd: it stays open there under the number the parasite reports.
    let (_keep_r, gift) = nix::unistd::pipe().unwrap();
    assert_eq!(call(&sock, proto::CMD_RECV_FD, &[gift.as_raw_fd()]), 0);
    let got: proto::FdArgs = read_plain(args.payload()).unwrap();
    let theirs = std::fs::read_link(format!("/proc/{}/fd/{}", child.0, got.fd)).unwrap();
    let ours = std::fs::read_link(format!("/proc/self/fd/{}", gift.as_raw_fd())).unwrap();
    assert_eq!(theirs, ours);

    // Shared memory made by the parasite.
    write_plain(
        args.payload(),
        &proto::ShmemArgs {
            len: 8192,
            fill: 0x5a,
            sum: 0,
        },
    );
    send(&sock, as_bytes(&CtlMsg::cmd(proto::CMD_SHMEM_CREATE)), &[]);
    let (data, mut fds) = recv(&sock);
    let msg: ShmemMsg = read_plain(&data).unwrap();
    assert_eq!(msg.len, 8192);
    assert_eq!(answer(&sock, proto::CMD_SHMEM_CREATE), 0);
    let region = fds.pop().unwrap();
    let shared = map_shared(region.as_raw_fd(), 8192);
    assert!(shared.iter().all(|&b| b == 0x5a));

    // Shared memory made by the host: the parasite sums it and writes into it.
    let content: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let mine = memfd("host-shmem", &content);
    let view = map_shared(mine.as_raw_fd(), 4096);
    write_plain(
        args.payload(),
        &proto::ShmemArgs {
            len: 0,
            fill: 0x77,
            sum: 0,
        },
    );
    send(&sock, as_bytes(&CtlMsg::cmd(proto::CMD_SHMEM_SUM)), &[]);
    send(
        &sock,
        as_bytes(&ShmemMsg { addr: 0, len: 4096 }),
        &[mine.as_raw_fd()],
    );
    assert_eq!(answer(&sock, proto::CMD_SHMEM_SUM), 0);
    let sum: proto::ShmemArgs = read_plain(args.payload()).unwrap();
    assert_eq!(sum.sum, content.iter().map(|&b| u64::from(b)).sum::<u64>());
    assert_eq!(view[0], 0x77, "the parasite's write is seen by the host");

    // An unknown command fails with ENOSYS and the loop goes on.
    assert_eq!(call(&sock, 999, &[]), libc::ENOSYS);
    assert_eq!(call(&sock, CMD_FINI, &[]), 0);
    assert_eq!(child.wait(), 0, "main returned 0 (no sigframe) after FINI");

    let mut log = String::new();
    std::fs::File::from(log_r).read_to_string(&mut log).unwrap();
    assert!(
        log.contains(&format!("pie: {}: hello from pid {}", hello.pid, hello.pid)),
        "{log}"
    );
    assert!(log.contains("fini"), "{log}");
}

#[test]
fn parasite_cures_itself_when_the_host_goes_away() {
    let _lock = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (built, _out) = demo();
    let main_off = built.blob.symbol("__export_parasite_main").unwrap();
    let placed = Placed::new(&built.blob.desc());
    let mut args = Args::new();
    let (child, sock) = start(&placed, main_off, &mut args);
    assert_eq!(call(&sock, CMD_PING, &[]), 0);
    drop(sock);
    let started = std::time::Instant::now();
    assert_eq!(child.wait(), 0);
    assert!(started.elapsed() < Duration::from_secs(10));
}
