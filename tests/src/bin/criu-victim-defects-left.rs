//! criu test victim: what a dump and restore must keep (issue 20, items 3, 10 and 28).
//!
//! `criu-victim-defects-left MODE OUT READY`: sets up the state MODE names, writes the pids
//! of the processes it made into `OUT.pids` (space separated; the test guards and reaps
//! them), then `ready PID` into READY, and on SIGUSR1 checks it from the inside, writing `ok`
//! into OUT or `bad: WHY`. Then it sleeps until killed. Modes:
//! - `session`: the victim becomes a child subreaper and forks A; A calls `setsid` and forks
//!   B (in A's group), C (leading a group of its own) and C's child D (which joins A's group),
//!   then A exits and the victim reaps it: B and C are the victim's, in a session (and B and
//!   D in a group) whose leader is gone (`OUT.pids`: `A B C D`);
//! - `hugetlb`: 4 MiB of written private anonymous `MAP_HUGETLB` memory (two 2 MiB huge
//!   pages from the pool, `/proc/sys/vm/nr_hugepages`), checked for its content and for
//!   still being hugetlb memory with 2 MiB pages;
//! - `hugetlb-shared`: 2 MiB of written shared anonymous `MAP_HUGETLB` memory (one page);
//! - `cow`: 32 MiB of private anonymous memory written, then a child C forked that changes
//!   page 5 and empties page 7: the other pages are shared copy-on-write. The check (which
//!   needs root, to read page frame numbers) wants the same frames for every other page in
//!   both, each process's own contents, and, once C wrote page 0 on request, C's page 0 a
//!   copy that the victim does not see (`OUT.pids`: `C`);
//! - `cow-tree:N:MIB`: MIB MiB of private anonymous memory written, then N children forked
//!   that only sleep (`OUT.pids`: theirs); the check looks at the victim's own contents.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Forks a child that runs `f` (which should never return: the child then exits); the
/// child's pid in the parent.
fn fork_child(f: impl FnOnce()) -> i32 {
    // SAFETY: the victim is single-threaded here; the child only runs `f`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        f();
        // SAFETY: ends the child without the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}

/// A pipe (read end, write end).
fn pipe() -> (i32, i32) {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into a live local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}

fn send(fd: i32, v: &[i32]) {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
    // SAFETY: writes from a live buffer.
    let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    assert_eq!(n, b.len() as isize);
}

fn recv(fd: i32, n: usize) -> Vec<i32> {
    let mut b = vec![0u8; n * 4];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: reads into the live rest of the buffer.
        let r = unsafe { libc::read(fd, b[got..].as_mut_ptr().cast(), b.len() - got) };
        assert!(r > 0, "read");
        got += r as usize;
    }
    b.chunks(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The parent pid, group and session of `pid` from `/proc/PID/stat` (-1 each when gone).
fn ids(pid: i32) -> (i32, i32, i32) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<i32> = st
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .skip(1)
                .take(3)
                .flat_map(|w| w.parse())
                .collect()
        })
        .unwrap_or_default();
    match rest[..] {
        [pp, pg, si] => (pp, pg, si),
        _ => (-1, -1, -1),
    }
}

fn session() -> (Check, Vec<i32>) {
    // SAFETY: prctl on our own flag.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let (r, w) = pipe();
    let a = fork_child(|| {
        // SAFETY: setsid on this fresh child, which leads no group.
        assert!(unsafe { libc::setsid() } > 0, "setsid");
        let b = fork_child(|| sleep_forever());
        let (dr, dw) = pipe();
        let c = fork_child(|| {
            // SAFETY: setpgid of this process.
            assert_eq!(unsafe { libc::setpgid(0, 0) }, 0, "setpgid C");
            fork_child(|| {
                // SAFETY: D joins the session's first group (B keeps it alive): its own
                // group may change to one of its session.
                assert_eq!(unsafe { libc::setpgid(0, libc::getsid(0)) }, 0, "setpgid D");
                // SAFETY: getpid takes nothing.
                send(dw, &[unsafe { libc::getpid() }]);
                sleep_forever()
            });
            sleep_forever()
        });
        let d = recv(dr, 1)[0];
        send(w, &[b, c, d]);
    });
    let v = recv(r, 3);
    let (b, c, d) = (v[0], v[1], v[2]);
    // SAFETY: reaps our own child A.
    let reaped = unsafe { libc::waitpid(a, std::ptr::null_mut(), 0) };
    assert_eq!(reaped, a, "reap A");
    // SAFETY: getpid takes nothing.
    let me = unsafe { libc::getpid() };
    let check: Check = Box::new(move || {
        let want = [(b, (me, a, a)), (c, (me, c, a)), (d, (c, a, a))];
        for (pid, w) in want {
            let got = ids(pid);
            if got != w {
                return Err(format!("{pid}: ppid, pgid, sid {got:?}, not {w:?}"));
            }
        }
        if std::path::Path::new(&format!("/proc/{a}")).exists() {
            return Err(format!("the session leader {a} exists"));
        }
        // SAFETY: signal 0 to a group only checks that it exists.
        if unsafe { libc::kill(-a, 0) } != 0 {
            return Err(format!("group {a} cannot be signalled"));
        }
        Ok(())
    });
    (check, vec![a, b, c, d])
}

/// The `KernelPageSize` (kB) and `VmFlags` of our own area at `addr` in `/proc/self/smaps`.
fn own_area(addr: usize) -> Option<(u64, String)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    let mut kps = None;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            inside = a <= addr && addr < b;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(v) = l.strip_prefix("KernelPageSize:") {
            kps = v.trim().trim_end_matches("kB").trim().parse().ok();
        }
        if let Some(v) = l.strip_prefix("VmFlags:") {
            return Some((kps?, v.trim().to_string()));
        }
    }
    None
}

fn hugetlb(shared: bool) -> (Check, Vec<i32>) {
    let len: usize = if shared { 2 << 20 } else { 4 << 20 };
    let kind = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    // SAFETY: a fresh mapping chosen by the kernel; nothing of ours is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | (21 << libc::MAP_HUGE_SHIFT),
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap MAP_HUGETLB");
    let a = p as usize;
    let pattern = |i: usize| (i / 4096 * 7 + i % 251) as u8;
    // SAFETY: the mapping is ours and `len` bytes long.
    let mem = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
    for (i, b) in mem.iter_mut().enumerate() {
        *b = pattern(i);
    }
    let check: Check = Box::new(move || {
        // SAFETY: the mapping is still ours (the victim never unmaps it).
        let mem = unsafe { std::slice::from_raw_parts_mut(a as *mut u8, len) };
        if let Some(i) = (0..len).find(|&i| mem[i] != pattern(i)) {
            return Err(format!("byte {i} is {}, not {}", mem[i], pattern(i)));
        }
        match own_area(a) {
            Some((2048, flags)) if flags.split_whitespace().any(|f| f == "ht") => {}
            other => return Err(format!("not 2 MiB hugetlb memory: {other:?}")),
        }
        mem[len - 1] = 0xee;
        if mem[len - 1] != 0xee {
            return Err("a write after the restore did not stick".into());
        }
        Ok(())
    });
    (check, Vec::new())
}

const COW_LEN: usize = 32 << 20;
const PAGE: usize = 4096;

/// The byte a page of the `cow` area starts with in the victim (the rest of the page is
/// that byte plus the offset, wrapping).
fn cow_byte(page: usize) -> u8 {
    (page * 13 + 1) as u8
}

fn cow_page(page: usize) -> Vec<u8> {
    (0..PAGE)
        .map(|k| cow_byte(page).wrapping_add(k as u8))
        .collect()
}

/// The page frame numbers of `pages` pages from `addr` in `pid` (0 for a page not present).
fn frames(pid: i32, addr: usize, pages: usize) -> Result<Vec<u64>, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap")).map_err(|e| e.to_string())?;
    let mut b = vec![0u8; pages * 8];
    f.read_exact_at(&mut b, (addr / PAGE * 8) as u64)
        .map_err(|e| e.to_string())?;
    Ok(b.chunks(8)
        .map(|c| {
            let v = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
            if v >> 63 == 1 { v & ((1 << 55) - 1) } else { 0 }
        })
        .collect())
}

/// `len` bytes at `addr` of process `pid`, read through `/proc/PID/mem` (which does not
/// unshare a page shared copy-on-write, as a pinning `process_vm_readv` would).
fn peek(pid: i32, addr: usize, len: usize) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|e| e.to_string())?;
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, addr as u64)
        .map_err(|e| format!("reading the memory of {pid}: {e}"))?;
    Ok(b)
}

fn cow() -> (Check, Vec<i32>) {
    // The area between two PROT_NONE pages, so that it never merges with a neighbour.
    // SAFETY: a fresh mapping chosen by the kernel; nothing of ours is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            COW_LEN + 2 * PAGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    let a = p as usize + PAGE;
    // SAFETY: the middle of our own fresh mapping.
    let r = unsafe {
        libc::mprotect(
            a as *mut libc::c_void,
            COW_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    assert_eq!(r, 0, "mprotect");
    // SAFETY: the area is ours, readable and writable, COW_LEN bytes long.
    let mem = unsafe { std::slice::from_raw_parts_mut(a as *mut u8, COW_LEN) };
    for (i, page) in mem.chunks_mut(PAGE).enumerate() {
        page.copy_from_slice(&cow_page(i));
    }
    let (req_r, req_w) = pipe();
    let (ack_r, ack_w) = pipe();
    let c = fork_child(|| {
        // SAFETY: the area is ours in the child too.
        let mem = unsafe { std::slice::from_raw_parts_mut(a as *mut u8, COW_LEN) };
        mem[5 * PAGE..6 * PAGE].fill(0xc5);
        // SAFETY: empties one page of our own private area.
        unsafe {
            libc::madvise(
                (a + 7 * PAGE) as *mut libc::c_void,
                PAGE,
                libc::MADV_DONTNEED,
            )
        };
        send(ack_w, &[1]);
        // Waits for the request to write page 0, writes it and says so.
        recv(req_r, 1);
        mem[..PAGE].fill(0xc0);
        send(ack_w, &[2]);
        sleep_forever()
    });
    assert_eq!(recv(ack_r, 1), [1], "child ready");
    let pages = COW_LEN / PAGE;
    let check: Check = Box::new(move || {
        let mine = |page: usize| -> Vec<u8> {
            // SAFETY: the area is still ours and COW_LEN bytes long.
            unsafe { std::slice::from_raw_parts((a + page * PAGE) as *const u8, PAGE) }.to_vec()
        };
        let child = peek(c, a, COW_LEN)?;
        for i in 0..pages {
            if mine(i) != cow_page(i) {
                return Err(format!("the victim's page {i} changed"));
            }
            let theirs = &child[i * PAGE..(i + 1) * PAGE];
            let want = match i {
                5 => vec![0xc5; PAGE],
                7 => vec![0; PAGE],
                _ => cow_page(i),
            };
            if theirs != want {
                return Err(format!("the child's page {i} is not what it held"));
            }
        }
        let (fm, fc) = (
            frames(std::process::id() as i32, a, pages)?,
            frames(c, a, pages)?,
        );
        let apart: Vec<usize> = (0..pages)
            .filter(|&i| i != 5 && i != 7 && (fm[i] == 0 || fm[i] != fc[i]))
            .collect();
        if !apart.is_empty() {
            return Err(format!(
                "{} of {pages} pages are not shared (first: page {}, frames {:#x} {:#x})",
                apart.len(),
                apart[0],
                fm[apart[0]],
                fc[apart[0]]
            ));
        }
        if fm[5] == fc[5] {
            return Err("page 5 is shared although the child changed it".into());
        }
        send(req_w, &[1]);
        if recv(ack_r, 1) != [2] {
            return Err("the child did not write page 0".into());
        }
        if mine(0) != cow_page(0) {
            return Err("the child's write shows in the victim".into());
        }
        if peek(c, a, PAGE)? != vec![0xc0; PAGE] {
            return Err("the child's write is not in the child".into());
        }
        let (fm, fc) = (frames(std::process::id() as i32, a, 1)?, frames(c, a, 1)?);
        if fm[0] == fc[0] {
            return Err("page 0 is still shared after the child wrote it".into());
        }
        Ok(())
    });
    (check, vec![c])
}

fn cow_tree(n: usize, mib: usize) -> (Check, Vec<i32>) {
    let len = mib << 20;
    let mut mem = vec![0u8; len];
    for (i, page) in mem.chunks_mut(PAGE).enumerate() {
        page.copy_from_slice(&cow_page(i));
    }
    let pids = (0..n).map(|_| fork_child(|| sleep_forever())).collect();
    let check: Check = Box::new(move || {
        for (i, page) in mem.chunks(PAGE).enumerate() {
            if page != cow_page(i) {
                return Err(format!("page {i} changed"));
            }
        }
        Ok(())
    });
    (check, pids)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(out), Some(ready)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: criu-victim-defects-left MODE OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let (check, pids) = match mode.as_str() {
        "session" => session(),
        "hugetlb" => hugetlb(false),
        "hugetlb-shared" => hugetlb(true),
        "cow" => cow(),
        m if m.starts_with("cow-tree:") => {
            let w: Vec<usize> = m.split(':').skip(1).flat_map(|x| x.parse()).collect();
            cow_tree(
                w.first().copied().unwrap_or(50),
                w.get(1).copied().unwrap_or(16),
            )
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    std::fs::write(format!("{out}.pids"), pids.join(" ")).expect("pids");
    std::fs::write(ready, format!("ready {}", std::process::id())).expect("ready");
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let verdict = match check() {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    std::fs::write(out, verdict).expect("out");
    sleep_forever()
}
