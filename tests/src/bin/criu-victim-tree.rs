//! criu test victim: a small process tree.
//!
//! `criu-victim-tree DATAFILE READY`: the parent maps one shared anonymous page (filled with
//! `0x42`), opens a pipe and DATAFILE (at offset 7, inherited by the children), then forks
//!
//! - child 1, which writes `hi` into the pipe (the parent never reads it) and sleeps;
//! - child 2, which moves to its own process group and sleeps;
//! - child 3, which exits with status 7 at once (the parent never reaps it: a zombie);
//!
//! and writes `ready PID CHILD1 CHILD2 CHILD3` into READY, and sleeps.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(data), Some(ready)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: criu-victim-tree DATAFILE READY");
        std::process::exit(2);
    };
    std::fs::write(data, "0123456789").unwrap();
    let f = std::fs::File::open(data).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut pipe = [0i32; 2];
    // SAFETY: plain libc calls on this process's own descriptors and a fresh mapping.
    let shared = unsafe {
        libc::lseek(fd, 7, libc::SEEK_SET);
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        assert!(p as *mut libc::c_void != libc::MAP_FAILED);
        std::ptr::write_bytes(p, 0x42, 4096);
        p
    };
    let sleep_forever = || -> ! {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    };
    // SAFETY: the parent is single-threaded here; each child only makes plain syscalls.
    let c1 = unsafe { libc::fork() };
    if c1 == 0 {
        // SAFETY: writing into the child's own pipe end, closing the other.
        unsafe {
            libc::close(pipe[0]);
            libc::write(pipe[1], b"hi".as_ptr() as *const libc::c_void, 2);
        }
        sleep_forever();
    }
    // SAFETY: the root is single-threaded; the child only calls setpgid and sleeps.
    let c2 = unsafe { libc::fork() };
    if c2 == 0 {
        // SAFETY: setpgid on ourselves.
        unsafe { libc::setpgid(0, 0) };
        sleep_forever();
    }
    // SAFETY: the root is single-threaded; the child exits at once.
    let c3 = unsafe { libc::fork() };
    if c3 == 0 {
        // SAFETY: ending the child without running the parent's exit handlers.
        unsafe { libc::_exit(7) };
    }
    // SAFETY: the parent keeps only the read end.
    unsafe { libc::close(pipe[1]) };
    std::hint::black_box((shared, &f));
    // Let child 2 move to its group and child 1 write before saying ready.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {} {c1} {c2} {c3}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    sleep_forever();
}
