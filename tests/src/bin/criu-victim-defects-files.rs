//! criu test victim: files and directories a checkpoint must keep (issue 20, items 1 to 10).
//!
//! `criu-victim-defects-files MODE DIR OUT READY`: sets up the state MODE names with files under
//! DIR (a scratch directory of the test), writes `ready PID` into READY, and on SIGUSR1 checks
//! it from the inside, writing `ok` or `bad: WHY` into OUT (opened before the setup, so that a
//! chrooted victim can still write it). Then it sleeps until killed. Modes:
//! - `tmpfile`: a file opened with `O_TMPFILE`, holding data;
//! - `chroot`: the victim chroots into DIR/root, its cwd in a directory below;
//! - `ghost`: a deleted file with its own owner, mode and times, opened twice;
//! - `sparse`: a deleted sparse file with data at 0 and past 1.5 GiB;
//! - `rmdir`: cwd and an open descriptor on a directory that was removed;
//! - `hardlink`: an open file whose name was unlinked while another hard link remains;
//! - `devnode`: a device node (`/dev/null`'s numbers) deleted while open;
//! - `mapdel`: a file mapped shared and private, then deleted;
//! - `procself`: a descriptor on `/proc/self/status`;
//! - `mapzero`: shared anonymous memory mapped again `MAP_PRIVATE` through
//!   `/proc/self/map_files`.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

fn c(p: &str) -> CString {
    CString::new(p).unwrap()
}

fn fstat(fd: i32) -> libc::stat {
    // SAFETY: stat is plain old data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a live stat.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0, "fstat {fd}");
    st
}

fn open(p: &str, flags: i32, mode: u32) -> i32 {
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c(p).as_ptr(), flags, mode) };
    assert!(fd >= 0, "open {p}: {}", std::io::Error::last_os_error());
    fd
}

fn pwrite(fd: i32, data: &[u8], off: i64) {
    // SAFETY: writes from a live slice.
    let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) };
    assert_eq!(n, data.len() as isize, "pwrite");
}

fn pread(fd: i32, len: usize, off: i64) -> Vec<u8> {
    let mut b = vec![0u8; len];
    // SAFETY: reads into a live buffer of len bytes.
    let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), len, off) };
    b.truncate(n.max(0) as usize);
    b
}

fn tmpfile(dir: &str) -> Check {
    let fd = open(dir, libc::O_TMPFILE | libc::O_RDWR, 0o600);
    pwrite(fd, b"unnamed data", 0);
    Box::new(move || {
        let st = fstat(fd);
        if st.st_nlink != 0 {
            return Err(format!("tmpfile has {} links", st.st_nlink));
        }
        if pread(fd, 12, 0) != b"unnamed data" {
            return Err("tmpfile lost its data".into());
        }
        // SAFETY: F_GETFL takes no pointer.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl & libc::O_ACCMODE != libc::O_RDWR {
            return Err(format!("tmpfile flags {fl:o}"));
        }
        Ok(())
    })
}

fn chroot(dir: &str) -> Check {
    let root = format!("{dir}/root");
    std::fs::create_dir_all(format!("{root}/sub")).unwrap();
    std::fs::write(format!("{root}/marker"), "inside").unwrap();
    std::env::set_current_dir(format!("{root}/sub")).unwrap();
    // SAFETY: chroot with a NUL-terminated path.
    assert_eq!(unsafe { libc::chroot(c(&root).as_ptr()) }, 0, "chroot");
    Box::new(move || {
        let cwd = std::env::current_dir().map_err(|e| format!("getcwd: {e}"))?;
        if cwd != std::path::Path::new("/sub") {
            return Err(format!("cwd is {}", cwd.display()));
        }
        match std::fs::read_to_string("/marker") {
            Ok(s) if s == "inside" => Ok(()),
            other => Err(format!("/marker in the chroot: {other:?}")),
        }
    })
}

const ATIME: i64 = 1_000_000_000;
const MTIME: i64 = 1_100_000_000;

fn ghost(dir: &str) -> Check {
    let p = format!("{dir}/ghost");
    let a = open(&p, libc::O_CREAT | libc::O_RDWR, 0o600);
    pwrite(a, b"ghost data", 0);
    let b = open(&p, libc::O_RDONLY, 0);
    // SAFETY: plain calls on our own descriptor with a live timespec array.
    unsafe {
        assert_eq!(libc::fchown(a, 1234, 5678), 0, "fchown");
        assert_eq!(libc::fchmod(a, 0o640), 0, "fchmod");
        let t = [
            libc::timespec {
                tv_sec: ATIME,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: MTIME,
                tv_nsec: 0,
            },
        ];
        assert_eq!(libc::futimens(a, t.as_ptr()), 0, "futimens");
    }
    std::fs::remove_file(&p).unwrap();
    Box::new(move || {
        let (sa, sb) = (fstat(a), fstat(b));
        if (sa.st_uid, sa.st_gid) != (1234, 5678) {
            return Err(format!("owner {}:{}", sa.st_uid, sa.st_gid));
        }
        if sa.st_mode & 0o7777 != 0o640 {
            return Err(format!("mode {:o}", sa.st_mode));
        }
        if (sa.st_atime, sa.st_mtime) != (ATIME, MTIME) {
            return Err(format!("times {} {}", sa.st_atime, sa.st_mtime));
        }
        if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino) {
            return Err("the two opens are two files".into());
        }
        if sa.st_nlink != 0 {
            return Err(format!("{} links", sa.st_nlink));
        }
        pwrite(a, b"GHOST", 0);
        if pread(b, 10, 0) != b"GHOST data" {
            return Err("a write through one open is not seen through the other".into());
        }
        Ok(())
    })
}

const FAR: i64 = 3 << 29; // 1.5 GiB

fn sparse(dir: &str) -> Check {
    let p = format!("{dir}/sparse");
    let fd = open(&p, libc::O_CREAT | libc::O_RDWR, 0o600);
    pwrite(fd, &[b'a'; 4096], 0);
    pwrite(fd, &[b'z'; 4096], FAR);
    std::fs::remove_file(&p).unwrap();
    Box::new(move || {
        let st = fstat(fd);
        if st.st_size != FAR + 4096 {
            return Err(format!("size {}", st.st_size));
        }
        if st.st_blocks * 512 > 1 << 20 {
            return Err(format!("{} bytes allocated", st.st_blocks * 512));
        }
        // SAFETY: lseek on our own descriptor.
        let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
        if hole != 4096 {
            return Err(format!("first hole at {hole}"));
        }
        if pread(fd, 4096, 0) != [b'a'; 4096] || pread(fd, 4096, FAR) != [b'z'; 4096] {
            return Err("data lost".into());
        }
        if pread(fd, 4, 1 << 30) != [0; 4] {
            return Err("hole is not zeros".into());
        }
        Ok(())
    })
}

fn rmdir(dir: &str) -> Check {
    let p = format!("{dir}/gone");
    std::fs::create_dir(&p).unwrap();
    std::env::set_current_dir(&p).unwrap();
    let fd = open(&p, libc::O_RDONLY | libc::O_DIRECTORY, 0);
    std::fs::remove_dir(&p).unwrap();
    Box::new(move || {
        let st = fstat(fd);
        let cwd = std::fs::metadata(".").map_err(|e| format!("stat cwd: {e}"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR || !cwd.is_dir() {
            return Err("not directories".into());
        }
        if (cwd.dev(), cwd.ino()) != (st.st_dev, st.st_ino) {
            return Err("cwd and fd are different directories".into());
        }
        if st.st_nlink != 0 {
            return Err(format!("removed directory has {} links", st.st_nlink));
        }
        Ok(())
    })
}

fn hardlink(dir: &str) -> Check {
    let (a, b) = (format!("{dir}/first"), format!("{dir}/second"));
    std::fs::write(&a, "linked").unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    let fd = open(&a, libc::O_RDWR, 0);
    std::fs::remove_file(&a).unwrap();
    Box::new(move || {
        if pread(fd, 6, 0) != b"linked" {
            return Err("content lost".into());
        }
        if std::fs::metadata(&a).is_ok() {
            return Err("the unlinked name is back".into());
        }
        Ok(())
    })
}

fn devnode(dir: &str) -> Check {
    let p = format!("{dir}/null");
    // SAFETY: mknod with a NUL-terminated path.
    let r = unsafe { libc::mknod(c(&p).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(r, 0, "mknod");
    let fd = open(&p, libc::O_RDWR, 0);
    std::fs::remove_file(&p).unwrap();
    Box::new(move || {
        let st = fstat(fd);
        if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
            return Err(format!("mode {:o} rdev {:x}", st.st_mode, st.st_rdev));
        }
        // SAFETY: writes one byte from a live local.
        if unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) } != 1 {
            return Err("write to the null device".into());
        }
        Ok(())
    })
}

fn map(fd: i32, flags: i32) -> *mut u8 {
    // SAFETY: a new mapping of one page wherever the kernel likes.
    let a = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(a, libc::MAP_FAILED, "mmap");
    a.cast()
}

fn page(a: usize, len: usize) -> Vec<u8> {
    // SAFETY: `a` is a live mapping of at least one page, never unmapped.
    unsafe { std::slice::from_raw_parts(a as *const u8, len) }.to_vec()
}

fn mapdel(dir: &str) -> Check {
    let p = format!("{dir}/mapped");
    let fd = open(&p, libc::O_CREAT | libc::O_RDWR, 0o600);
    let mut data = vec![b'm'; 4096];
    data[..11].copy_from_slice(b"mapped data");
    pwrite(fd, &data, 0);
    let sh = map(fd, libc::MAP_SHARED) as usize;
    let pr = map(fd, libc::MAP_PRIVATE) as usize;
    // SAFETY: closing our own descriptor; the mappings keep the file.
    unsafe { libc::close(fd) };
    std::fs::remove_file(&p).unwrap();
    Box::new(move || {
        if page(sh, 4096) != data || page(pr, 4096) != data {
            return Err("a mapping of the deleted file lost its content".into());
        }
        Ok(())
    })
}

fn mapzero(_dir: &str) -> Check {
    let sh = map(-1, libc::MAP_SHARED | libc::MAP_ANONYMOUS);
    // SAFETY: `sh` is a live writable page.
    unsafe { std::ptr::copy_nonoverlapping(b"shared anon".as_ptr(), sh, 11) };
    let a = sh as usize;
    let fd = open(
        &format!("/proc/self/map_files/{:x}-{:x}", a, a + 4096),
        libc::O_RDWR,
        0,
    );
    let pr = map(fd, libc::MAP_PRIVATE) as usize;
    // SAFETY: closing our own descriptor; the mapping keeps the object.
    unsafe { libc::close(fd) };
    Box::new(move || {
        let got = page(pr, 11);
        if got != b"shared anon" {
            return Err(format!("private copy reads {got:?}"));
        }
        Ok(())
    })
}

fn procself(_dir: &str) -> Check {
    let fd = open("/proc/self/status", libc::O_RDONLY, 0);
    let me = std::process::id();
    Box::new(move || {
        let text = String::from_utf8_lossy(&pread(fd, 4096, 0)).into_owned();
        if !text.lines().any(|l| l == format!("Pid:\t{me}")) {
            return Err("the descriptor is not on this process's status".into());
        }
        Ok(())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, dir, out, ready] = &args[..] else {
        eprintln!("usage: criu-victim-defects-files MODE DIR OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let mut out = std::fs::File::create(out).expect("out");
    let mut ready_file = std::fs::File::create(ready).expect("ready");
    let check = match mode.as_str() {
        "tmpfile" => tmpfile(dir),
        "chroot" => chroot(dir),
        "ghost" => ghost(dir),
        "sparse" => sparse(dir),
        "rmdir" => rmdir(dir),
        "hardlink" => hardlink(dir),
        "devnode" => devnode(dir),
        "mapdel" => mapdel(dir),
        "mapzero" => mapzero(dir),
        "procself" => procself(dir),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    write!(ready_file, "ready {}", std::process::id()).expect("ready");
    drop(ready_file);
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let verdict = match check() {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("bad: {e}"),
    };
    out.write_all(verdict.as_bytes()).expect("out");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
