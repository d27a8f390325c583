//! criu test victim: a tree whose root is root in a user namespace of its own and unprivileged
//! outside.
//!
//! `criu-victim-ns-user READY` clones a child into new user, pid and uts namespaces, writes
//! its maps (`0 100000 65536` for uids and gids: root inside is uid 100000 outside) and exits
//! once the child is ready (the child is handed to the test, a subreaper). The child, pid 1
//! inside, becomes uid and gid 0 inside, sets its host name to `userns-victim`, makes itself a
//! session leader and forks pid 2, which becomes uid and gid 1000 inside and sleeps. The init
//! writes `ready HOSTPID` into READY. On SIGUSR1 it checks that it is pid 1 with uid and gid 0,
//! that its maps read as written, that pid 2 is there with uid 1000, that its host name is
//! kept and that it may still change it (the uts namespace is owned by its user namespace),
//! and writes `check ok` or `check bad: WHY` into READY.2.
//!
//! Exits 3 if the namespaces cannot be made.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const MAP: &str = "0 100000 65536";
const NAME: &str = "userns-victim";

fn sleep_forever() -> ! {
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

/// The `/proc/HOST/status` (ids as this namespace sees them) of our child `vpid`, found
/// through `/proc/self/task/*/children` (the mounted /proc is the outer one: host pids).
fn status_of(vpid: i32) -> Result<String, String> {
    for t in std::fs::read_dir("/proc/self/task")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for k in kids.split_whitespace() {
            let Ok(st) = std::fs::read_to_string(format!("/proc/{k}/status")) else {
                continue;
            };
            let last = st
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|w| w.parse::<i32>().ok());
            if last == Some(vpid) {
                return Ok(st);
            }
        }
    }
    Err(format!("pid {vpid} is not our child"))
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn hostname() -> String {
    let mut buf = [0u8; 65];
    // SAFETY: gethostname writes at most 64 bytes and a NUL into our buffer.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), 64) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(64);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn set_hostname(name: &str) -> Result<(), String> {
    // SAFETY: sethostname reads `len` bytes of a live string.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(format!(
            "sethostname {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn check() -> Result<(), String> {
    // SAFETY: getpid/getuid/getgid/kill(pid, 0) only ask.
    let (pid, uid, gid, euid) = unsafe {
        (
            libc::getpid(),
            libc::getuid(),
            libc::getgid(),
            libc::geteuid(),
        )
    };
    if (pid, uid, gid, euid) != (1, 0, 0, 0) {
        return Err(format!("pid {pid} uid {uid} euid {euid} gid {gid} inside"));
    }
    for f in ["uid_map", "gid_map"] {
        let text = std::fs::read_to_string(format!("/proc/self/{f}")).map_err(|e| e.to_string())?;
        if words(&text) != words(MAP) {
            return Err(format!("{f} reads {text:?}"));
        }
    }
    let st = status_of(2)?;
    let uid_line = st.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    if words(uid_line) != ["Uid:", "1000", "1000", "1000", "1000"] {
        return Err(format!("pid 2: {uid_line:?}"));
    }
    let gid_line = st.lines().find(|l| l.starts_with("Gid:")).unwrap_or("");
    if words(gid_line) != ["Gid:", "1000", "1000", "1000", "1000"] {
        return Err(format!("pid 2: {gid_line:?}"));
    }
    if hostname() != NAME {
        return Err(format!("host name {:?}", hostname()));
    }
    set_hostname("userns-again")?;
    if hostname() != "userns-again" {
        return Err(format!("host name {:?} after a change", hostname()));
    }
    set_hostname(NAME)
}

fn init(ready: &str, go: libc::c_int) -> ! {
    let mut b = [0u8; 1];
    // SAFETY: read into a one-byte local; the parent writes once the maps are written.
    unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) };
    // SAFETY: closing our end of the pipe, used only above.
    unsafe { libc::close(go) };
    // SAFETY: credential calls on this single-threaded process; the children only sleep.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0
            || (!deny_setgroups() && libc::setgroups(0, std::ptr::null()) != 0)
            || libc::setresuid(0, 0, 0) != 0
        {
            eprintln!("ids inside: {}", std::io::Error::last_os_error());
            libc::_exit(4);
        }
    }
    if let Err(e) = set_hostname(NAME) {
        eprintln!("{e}");
        std::process::exit(4);
    }
    // SAFETY: this process is single-threaded, so the forked child may run anything; it only
    // changes its own ids and sleeps. The handler only stores to an atomic.
    unsafe {
        libc::setsid();
        if libc::fork() == 0 {
            if libc::setresgid(1000, 1000, 1000) != 0 || libc::setresuid(1000, 1000, 1000) != 0 {
                libc::_exit(5);
            }
            sleep_forever();
        }
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    let t = format!("{ready}.inner.tmp");
    std::fs::write(&t, "up").unwrap();
    std::fs::rename(&t, format!("{ready}.inner")).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check() {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("check bad: {e}"),
            };
            let out = format!("{ready}.2");
            let t = format!("{out}.tmp");
            std::fs::write(&t, verdict).unwrap();
            std::fs::rename(&t, out).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `criu-victim-ns-user READY deny`: the namespace denies setgroups (`/proc/PID/setgroups`).
fn deny_setgroups() -> bool {
    std::env::args().nth(2).as_deref() == Some("deny")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: criu-victim-ns-user READY");
        std::process::exit(2);
    }
    let ready = args[1].clone();
    let mut p = [0; 2];
    // SAFETY: pipe writes two descriptors into our array.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        std::process::exit(2);
    }
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::SIGCHLD;
    // SAFETY: a fork-like clone (no CLONE_VM) into new namespaces; the child runs `init`.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_long, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: closing the write end we do not use.
        unsafe { libc::close(p[1]) };
        init(&ready, p[0]);
    }
    if pid < 0 {
        eprintln!("clone(CLONE_NEWUSER): {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    if deny_setgroups() {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").unwrap();
    }
    for f in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), format!("{MAP}\n")).unwrap();
    }
    // SAFETY: one byte from a live local into our pipe.
    unsafe { libc::write(p[1], b"g".as_ptr().cast(), 1) };
    let inner = format!("{ready}.inner");
    while !std::path::Path::new(&inner).exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let t = format!("{ready}.tmp");
    std::fs::write(&t, format!("ready {pid}")).unwrap();
    std::fs::rename(&t, &ready).unwrap();
}
