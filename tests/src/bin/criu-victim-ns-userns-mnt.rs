//! criu test victim: a counter whose root is root in a user namespace of its own (uid 0 inside,
//! 100000 outside) that also owns its mount, network, uts, ipc and pid namespaces.
//!
//! `criu-victim-ns-userns-mnt start READY ROOT BINS` clones a child into new user, mount, pid,
//! network, uts and ipc namespaces, writes its maps (`0 100000 65536` for uids and gids) and
//! waits until the counter inside is ready, then writes `ready HOSTPID` into READY and exits
//! (the counter is handed to the test, a subreaper). The child becomes uid and gid 0 inside
//! and runs a shell that, from inside the user namespace, binds ROOT onto itself, binds `/usr`
//! and BINS (the test binaries) into it, mounts proc and a tmpfs at `/data` (with a
//! subdirectory bound at `/bind`), sets the host name `userns-mnt`, brings the loopback up
//! with the address 10.99.0.1/32, pivots into ROOT and runs `criu-victim-ns-userns-mnt inner
//! /data` as pid 1.
//!
//! `inner DIR` records its maps, host name, mount table (modulo ids) and loopback addresses,
//! writes DIR/ready, and counts in DIR/count every 10 ms. On SIGUSR1 it checks that all of
//! these read as recorded, that it may still change its host name, mount a tmpfs and add an
//! address (its namespaces are owned by its user namespace), and writes `check ok` or `check
//! bad: WHY` into DIR/verdict.
//!
//! Exits 3 if the namespaces cannot be made.

use std::sync::atomic::{AtomicBool, Ordering};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const MAP: &str = "0 100000 65536";
const NAME: &str = "userns-mnt";
const ADDR: &str = "10.99.0.1";
const IP: &str = "/usr/sbin/ip";

const SCRIPT: &str = r#"set -e
R="$1"; B="$2"; SELF="$3"
mount --make-rprivate /
mount --bind "$R" "$R"
mount --bind /usr "$R/usr"
mount --bind "$B" "$R/t"
mount -t proc proc "$R/proc"
mount -t tmpfs -o size=1m,mode=755 data "$R/data"
mkdir "$R/data/sub"; echo sub > "$R/data/sub/f"
mount --bind "$R/data/sub" "$R/bind"
hostname userns-mnt
ip link set lo up
ip addr add 10.99.0.1/32 dev lo
cd "$R"; pivot_root . old; umount -l /old
exec "/t/$SELF" inner /data </data/sub/f >/data/log 2>&1
"#;

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

/// This process's mount table modulo ids: mount point, fs type, per-mount options, root,
/// propagation and super options, one line per mount.
fn table() -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f
            .iter()
            .position(|x| *x == "-")
            .ok_or(format!("mountinfo line {l:?}"))?;
        if f.len() < sep + 4 || sep < 6 {
            return Err(format!("mountinfo line {l:?}"));
        }
        out.push(format!(
            "{} {} {} {} [{}] {}",
            f[4],
            f[sep + 1],
            f[5],
            f[3],
            f[6..sep].join(" "),
            f[sep + 3]
        ));
    }
    out.sort();
    Ok(out)
}

/// The IPv4 addresses of the loopback, sorted.
fn lo_addrs() -> Result<Vec<String>, String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills our pointer with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(format!("getifaddrs: {}", std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p is a live node of the list getifaddrs made.
        let ifa = unsafe { &*p };
        // SAFETY: the name is a NUL-terminated string of the live node.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if name == "lo" && !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null address of the live node; its family says its layout.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string());
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs made, freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    Ok(out)
}

struct Baseline {
    maps: Vec<Vec<String>>,
    table: Vec<String>,
    addrs: Vec<String>,
}

fn maps() -> Result<Vec<Vec<String>>, String> {
    ["uid_map", "gid_map"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("/proc/self/{f}"))
                .map(|t| words(&t))
                .map_err(|e| format!("{f}: {e}"))
        })
        .collect()
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    // The root has no /dev: stdin is inherited, not /dev/null.
    let o = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

fn check(b: &Baseline, dir: &str) -> Result<(), String> {
    // SAFETY: getpid/getuid/getgid only ask.
    let (pid, uid, gid) = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
    if (pid, uid, gid) != (1, 0, 0) {
        return Err(format!("pid {pid} uid {uid} gid {gid} inside"));
    }
    let m = maps()?;
    if m != b.maps || m[0] != words(MAP) {
        return Err(format!("maps {m:?}, were {:?}", b.maps));
    }
    if hostname() != NAME {
        return Err(format!("host name {:?}", hostname()));
    }
    let t = table()?;
    if t != b.table {
        return Err(format!(
            "mount table\n{}\nwas\n{}",
            t.join("\n"),
            b.table.join("\n")
        ));
    }
    let a = lo_addrs()?;
    if a != b.addrs {
        return Err(format!("loopback addresses {a:?}, were {:?}", b.addrs));
    }
    if std::fs::read_to_string("/bind/f").map_err(|e| format!("/bind/f: {e}"))? != "sub\n" {
        return Err("/bind/f lost its content".into());
    }
    // What the owner of these namespaces may do.
    set_hostname("userns-again")?;
    set_hostname(NAME)?;
    let probe = format!("{dir}/probe");
    std::fs::create_dir_all(&probe).map_err(|e| e.to_string())?;
    run("/usr/bin/mount", &["-t", "tmpfs", "probe", &probe])?;
    run("/usr/bin/umount", &[&probe])?;
    std::fs::remove_dir(&probe).map_err(|e| e.to_string())?;
    run(IP, &["addr", "add", "10.99.0.2/32", "dev", "lo"])?;
    run(IP, &["addr", "del", "10.99.0.2/32", "dev", "lo"])?;
    Ok(())
}

fn publish(path: &str, text: &str) {
    let t = format!("{path}.tmp");
    std::fs::write(&t, text).unwrap();
    std::fs::rename(&t, path).unwrap();
}

fn inner(dir: &str) -> ! {
    let b = match (maps(), table(), lo_addrs()) {
        (Ok(maps), Ok(table), Ok(addrs)) => Baseline { maps, table, addrs },
        (a, b, c) => {
            eprintln!("baseline: {:?} {:?} {:?}", a.err(), b.err(), c.err());
            std::process::exit(4);
        }
    };
    if !b.addrs.iter().any(|a| a == ADDR) {
        eprintln!("no {ADDR} on lo: {:?}", b.addrs);
        std::process::exit(4);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    publish(&format!("{dir}/ready"), "up");
    let mut n: u64 = 0;
    loop {
        n += 1;
        publish(&format!("{dir}/count"), &n.to_string());
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&b, dir) {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("check bad: {e}"),
            };
            publish(&format!("{dir}/verdict"), &verdict);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn start(ready: &str, root: &str, bins: &str) {
    let mut p = [0; 2];
    // SAFETY: pipe writes two descriptors into our array.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        std::process::exit(2);
    }
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET
        | libc::SIGCHLD;
    // SAFETY: a fork-like clone (no CLONE_VM) into new namespaces of this single-threaded
    // process; the child only takes its ids and execs.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_long, 0, 0, 0, 0) };
    if pid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: the read end of our pipe into a one-byte local, then ids inside (mapped by
        // now) and exec.
        unsafe {
            libc::close(p[1]);
            libc::read(p[0], b.as_mut_ptr().cast(), 1);
            libc::close(p[0]);
            if libc::setresgid(0, 0, 0) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                libc::_exit(4);
            }
        }
        let me = std::env::args().next().unwrap_or_default();
        let me = std::path::Path::new(&me)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let e = std::os::unix::process::CommandExt::exec(
            std::process::Command::new("/bin/sh").args(["-c", SCRIPT, "sh", root, bins, &me]),
        );
        eprintln!("exec sh: {e}");
        // SAFETY: ends the child.
        unsafe { libc::_exit(4) };
    }
    if pid < 0 {
        eprintln!("clone: {}", std::io::Error::last_os_error());
        std::process::exit(3);
    }
    for f in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), format!("{MAP}\n")).unwrap();
    }
    // SAFETY: one byte from a live local into our pipe.
    unsafe { libc::write(p[1], b"g".as_ptr().cast(), 1) };
    let inner = format!("/proc/{pid}/root/data/ready");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::path::Path::new(&inner).exists() {
        let mut st = 0;
        // SAFETY: a non-blocking wait for our own child.
        if unsafe { libc::waitpid(pid as i32, &mut st, libc::WNOHANG) } == pid as i32 {
            eprintln!("the counter ended ({st:#x})");
            std::process::exit(5);
        }
        if std::time::Instant::now() > end {
            eprintln!("the counter did not get ready");
            std::process::exit(5);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    publish(ready, &format!("ready {pid}"));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("start") if args.len() == 5 => start(&args[2], &args[3], &args[4]),
        Some("inner") if args.len() == 3 => inner(&args[2]),
        _ => {
            eprintln!("usage: criu-victim-ns-userns-mnt start READY ROOT BINS | inner DIR");
            std::process::exit(2);
        }
    }
}
