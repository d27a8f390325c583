//! criu test victim: an AIO context (`io_setup`), whose ring is mapped in the task.
//!
//! `criu-victim-aio OUT READY` sets up an AIO context for 8 requests and completes three
//! writes through it into `OUT.data` (reaped with `io_getevents`, so the ring's head and tail
//! are 3), keeping the context. Writes `ready PID` into READY. On SIGUSR1 it checks that the
//! context still answers under the same id: nothing is waiting (`io_getevents` without
//! waiting finds nothing), then a write and a read submitted with `io_submit` complete with
//! their full lengths and the read sees what was written. Writes `ok` or `bad: WHY` into OUT.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

/// `struct iocb` (linux/aio_abi.h, little-endian).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: i32,
    lio_opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const PREAD: u16 = 0;
const PWRITE: u16 = 1;

/// Submits one request and waits (up to 5 s) for its completion; returns its result.
fn one(
    ctx: libc::c_ulong,
    op: u16,
    fd: i32,
    buf: *mut u8,
    len: usize,
    off: i64,
) -> Result<i64, String> {
    let cb = Iocb {
        data: 0x5eed,
        lio_opcode: op,
        fildes: fd as u32,
        buf: buf as u64,
        nbytes: len as u64,
        offset: off,
        ..Default::default()
    };
    let ptrs = [&cb as *const Iocb];
    // SAFETY: io_submit reads one pointer to a live iocb whose buffer outlives the request
    // (it is waited for below).
    let r = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, ptrs.as_ptr()) };
    if r != 1 {
        return Err(format!(
            "io_submit: {r} ({})",
            std::io::Error::last_os_error()
        ));
    }
    let mut ev = [IoEvent::default(); 1];
    let t = libc::timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    // SAFETY: io_getevents writes at most one event into a live buffer, reading a live
    // timespec.
    let n = unsafe { libc::syscall(libc::SYS_io_getevents, ctx, 1, 1, ev.as_mut_ptr(), &t) };
    if n != 1 || ev[0].data != 0x5eed {
        return Err(format!(
            "io_getevents: {n} ({})",
            std::io::Error::last_os_error()
        ));
    }
    Ok(ev[0].res)
}

fn check(ctx: libc::c_ulong, fd: i32) -> Result<(), String> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut ev = [IoEvent::default(); 8];
    // SAFETY: io_getevents writes at most 8 events into a live buffer of that size, reading
    // a live timespec.
    let n = unsafe { libc::syscall(libc::SYS_io_getevents, ctx, 0, 8, ev.as_mut_ptr(), &zero) };
    if n != 0 {
        return Err(format!(
            "io_getevents: {n} ({})",
            std::io::Error::last_os_error()
        ));
    }
    let mut w = *b"after the restore";
    let r = one(ctx, PWRITE, fd, w.as_mut_ptr(), w.len(), 100)?;
    if r != w.len() as i64 {
        return Err(format!("write: {r}"));
    }
    let mut back = [0u8; 17];
    let r = one(ctx, PREAD, fd, back.as_mut_ptr(), back.len(), 100)?;
    if r != back.len() as i64 || back != w {
        return Err(format!("read: {r} {:?}", String::from_utf8_lossy(&back)));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: criu-victim-aio OUT READY");
        std::process::exit(2);
    }
    let (out, ready) = (&args[1], &args[2]);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(format!("{out}.data"))
        .unwrap();
    let fd = file.as_raw_fd();
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes one aio_context_t into a live local.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx as *mut libc::c_ulong) };
    assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
    for k in 0..3 {
        let mut b = *b"before";
        assert_eq!(one(ctx, PWRITE, fd, b.as_mut_ptr(), 6, k * 6), Ok(6));
    }
    // SAFETY: installs an async-signal-safe handler that only stores an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(ctx, fd) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
