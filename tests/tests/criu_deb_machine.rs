//! The installed binaries at work (issue 21): what a user does after installing.
//!
//! - `make install PREFIX=<temporary directory>` (no DESTDIR): the installed `criu check`
//!   passes, `man` finds criu(8) under the prefix, and the installed `criu` and `crit`
//!   checkpoint, inspect and restore a counting process; `make uninstall` leaves the prefix
//!   empty.
//! - The .deb (`make deb`) installed into this machine with `dpkg -i` as root: `criu` on `PATH`
//!   is `/usr/sbin/criu`, `criu check`, `man criu`, `pkg-config criu`, a checkpoint and restore
//!   of a counter with the installed binaries, then `dpkg --purge` and nothing of it is left. It
//!   refuses to run (skips, saying why) when a package named `criu` or `compel-criu` is
//!   installed or a file the package holds exists already, so that it never replaces what the
//!   machine has; a guard purges the package if the test fails half-way.
//! - The same round trip in a copy-on-write view of this machine (its root under an
//!   overlayfs in a private mount namespace, chrooted into): it runs where the machine has a
//!   `criu` package (that package is purged in the view only), and the machine is untouched
//!   whatever happens, because the view goes away with its mount namespace.
//!
//! The Makefile runs with the test's own profile (`PROFILE=debug` under `cargo test`), so it
//! reuses target/ and builds nothing in release.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use compel_criu_tests::{
    Exit, Spawned, become_subreaper, bin_dir, pid_exists, skip_if_not_root, spawn_counter,
    test_lock, wait_exit_timeout,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn make(args: &[&str]) -> String {
    let profile = bin_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(root())
        .arg(format!("PROFILE={profile}"))
        .args(args)
        .env("CARGO_TARGET_DIR", bin_dir().parent().unwrap())
        .env_remove("MAKEFLAGS"))
}

/// `make` once per test process.
fn built() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        make(&[]);
        *done = true;
    }
}

/// Lines of `f` as a number list; how many there are.
fn count_lines(f: &Path) -> usize {
    std::fs::read_to_string(f)
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn installed_binaries_check_checkpoint_and_restore_a_counter() {
    skip_if_not_root!("installed_binaries_check_checkpoint_and_restore_a_counter");
    let _g = test_lock();
    become_subreaper();
    built();
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    make(&["install", &format!("PREFIX={}", p.display())]);
    let criu = p.join("sbin/criu");
    let crit = p.join("bin/crit");
    assert!(run(Command::new(&criu).arg("--version")).contains(VERSION));
    assert_eq!(run(Command::new(&criu).arg("check")).trim(), "Looks good.");
    // `man` finds the installed page under the prefix.
    let page = run(Command::new("man")
        .args(["-w", "criu"])
        .env("MANPATH", p.join("share/man")));
    assert_eq!(
        page.trim(),
        p.join("share/man/man8/criu.8").display().to_string()
    );

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let img = w.join("img");
    std::fs::create_dir(&img).unwrap();
    let mut v = spawn_counter(COUNTER, w, None);
    let pid = v.pid();
    // The demo's injection step with the installed compel: getpid() run inside the victim.
    assert_eq!(
        run(Command::new(p.join("bin/compel")).args(["syscall", "-t", &pid.to_string(), "getpid"]))
            .trim(),
        pid.to_string()
    );
    let out = Command::new(&criu)
        .args(["dump", "-t", &pid.to_string(), "-D", img.to_str().unwrap()])
        .args(["-o", "dump.log", "-v4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "installed criu dump: {}\n{}",
        text(&out),
        std::fs::read_to_string(img.join("dump.log")).unwrap_or_default()
    );
    assert_eq!(
        v.wait(Duration::from_secs(5)),
        Some(Exit::Signal(libc::SIGKILL))
    );
    let shown = run(Command::new(&crit)
        .arg("show")
        .arg(img.join(format!("core-{pid}.img"))));
    assert!(shown.contains("\"magic\": \"CORE\""), "{shown}");
    let before = count_lines(&w.join("count"));
    let out = Command::new(&criu)
        .args(["restore", "-d", "-D", img.to_str().unwrap()])
        .args(["-o", "restore.log", "-v4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "installed criu restore: {}\n{}",
        text(&out),
        std::fs::read_to_string(img.join("restore.log")).unwrap_or_default()
    );
    let restored = Spawned::guard(pid);
    std::thread::sleep(Duration::from_millis(500));
    assert!(pid_exists(pid));
    assert!(
        count_lines(&w.join("count")) > before,
        "the restored counter counts on"
    );
    drop(restored);

    make(&["uninstall", &format!("PREFIX={}", p.display())]);
    let left: Vec<_> = std::fs::read_dir(p).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `make deb` once per test process; the package's path.
fn deb() -> PathBuf {
    static DEB: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut d = DEB.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = d.as_ref().filter(|p| p.exists()) {
        return p.clone();
    }
    built();
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    let p = bin_dir()
        .parent()
        .unwrap()
        .join(format!("compel-criu_{VERSION}_{}.deb", arch.trim()));
    make(&["deb", "DEB_FLAGS=-Zgzip -z1"]);
    assert!(p.exists(), "{} not built", p.display());
    *d = Some(p.clone());
    p
}

/// The round trip, run as root by `sh` on the machine or in the view of it: install the
/// package, use it as a user would, purge it, check nothing is left. Arguments: the .deb, a
/// work directory, the counter victim, the version, and `purge-criu` to purge a `criu`
/// package first (in the view only). Prints `RESTORED <pid>` (the restored counter, killed
/// here, reaped by the test: its subreaper) and `ALL-OK` at the end.
const ROUND_TRIP: &str = r#"set -eu
DEB=$1 W=$2 COUNTER=$3 VERSION=$4 PURGE=${5:-}
fail() { echo "FAIL: $*"; for f in "$W"/*.log "$W"/img/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }; done; exit 1; }
if [ "$PURGE" = purge-criu ]; then
    dpkg --purge --force-depends criu >/dev/null 2>&1 || fail "purge criu in the view"
fi
dpkg -i "$DEB" >"$W/dpkg-i.log" 2>&1 || fail "dpkg -i"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
[ "$(command -v criu)" = /usr/sbin/criu ] || fail "criu on PATH is $(command -v criu)"
for b in criu crit compel; do
    $b --version | grep -q "$VERSION" || fail "$b --version: $($b --version)"
done
[ "$(criu check)" = "Looks good." ] || fail "criu check: $(criu check 2>&1)"
[ "$(man -w criu)" = /usr/share/man/man8/criu.8.gz ] || fail "man -w criu: $(man -w criu 2>&1)"
man criu 2>/dev/null | grep -q 'checkpoint' || fail "man criu shows no checkpoint"
[ "$(pkg-config --modversion criu)" = "$VERSION" ] || fail "pkg-config criu"
[ "$(compel plugins)" = /usr/lib/compel/libcompel_plugins.a ] || fail "compel plugins: $(compel plugins)"
mkdir -p "$W/img"
"$COUNTER" "$W/count" "$W/ready" </dev/null >"$W/victim.log" 2>&1 &
pid=$!
i=0; while [ ! -e "$W/ready" ]; do i=$((i+1)); [ $i -lt 1000 ] || fail "victim not ready"; sleep 0.01; done
# The demo's injection step with the installed compel: getpid() run inside the victim.
[ "$(compel syscall -t "$pid" getpid)" = "$pid" ] || fail "compel syscall getpid"
criu dump -t "$pid" -D "$W/img" -o dump.log -v4 || fail "criu dump"
wait "$pid" 2>/dev/null || true
crit show "$W/img/core-$pid.img" | grep -q '"magic": "CORE"' || fail "crit show"
before=$(wc -l <"$W/count")
criu restore -d -D "$W/img" -o restore.log -v4 || fail "criu restore"
echo "RESTORED $pid"
sleep 0.5
after=$(wc -l <"$W/count")
kill -9 "$pid"
[ "$after" -gt "$before" ] || fail "the restored counter does not count ($before -> $after)"
dpkg --purge compel-criu >"$W/dpkg-purge.log" 2>&1 || fail "dpkg --purge"
for f in /usr/sbin/criu /usr/bin/crit /usr/bin/compel /usr/lib/libcriu.so /usr/lib/libcompel.so \
         /usr/include/criu/criu.h /usr/lib/pkgconfig/criu.pc /usr/share/man/man8/criu.8.gz \
         /usr/share/doc/compel-criu /usr/lib/compel; do
    [ ! -e "$f" ] || fail "$f left after the purge"
done
if dpkg-query -W compel-criu >/dev/null 2>&1; then fail "dpkg still knows compel-criu"; fi
echo ALL-OK
"#;

/// Reaps the counter the round trip restored (it names it), checking the script's verdict.
fn verdict(out: &Output) {
    let said = text(out);
    let pid = said
        .lines()
        .find_map(|l| l.strip_prefix("RESTORED "))
        .and_then(|p| p.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|p| *p > 0) {
        // Killed by the script; a zombie of ours (its subreaper) until here.
        let _ = wait_exit_timeout(pid, Duration::from_secs(5));
    }
    assert!(
        out.status.success() && said.lines().any(|l| l == "ALL-OK"),
        "{said}"
    );
}

/// Whether dpkg has package `name` in any state but "not installed".
fn dpkg_knows(name: &str) -> Option<String> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status} ${Version}", name])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.success() && !s.contains("not-installed")).then_some(s)
}

/// Purges `compel-criu` from the machine on drop if dpkg knows it (a test that failed after
/// `dpkg -i`).
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if dpkg_knows("compel-criu").is_some() {
            let _ = Command::new("dpkg")
                .args(["--purge", "compel-criu"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn deb_installs_into_this_machine_checkpoints_and_purges_cleanly() {
    skip_if_not_root!("deb_installs_into_this_machine_checkpoints_and_purges_cleanly");
    let _g = test_lock();
    become_subreaper();
    let deb = deb();
    // Never replace what the machine has.
    for pkg in ["criu", "compel-criu"] {
        if let Some(st) = dpkg_knows(pkg) {
            eprintln!(
                "deb_installs_into_this_machine_checkpoints_and_purges_cleanly: skipped: package \
                 {pkg} is on this machine ({st}); installing compel-criu would replace its files. \
                 The round trip runs in a view of the machine instead \
                 (deb_round_trip_in_a_copy_on_write_view_of_this_machine)."
            );
            return;
        }
    }
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for line in listing.lines().filter(|l| l.starts_with('-')) {
        let Some(f) = line.split_whitespace().last() else {
            continue;
        };
        let f = f.trim_start_matches('.');
        if Path::new(f).exists() {
            eprintln!(
                "deb_installs_into_this_machine_checkpoints_and_purges_cleanly: skipped: {f} \
                 exists on this machine and installing compel-criu would replace it"
            );
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let _purge = PurgeOnDrop;
    let out = Command::new("sh")
        .arg("-c")
        .arg(ROUND_TRIP)
        .arg("round-trip")
        .arg(&deb)
        .arg(work.path())
        .arg(COUNTER)
        .arg(VERSION)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    verdict(&out);
    assert!(dpkg_knows("compel-criu").is_none());
}

#[test]
fn deb_round_trip_in_a_copy_on_write_view_of_this_machine() {
    skip_if_not_root!("deb_round_trip_in_a_copy_on_write_view_of_this_machine");
    let _g = test_lock();
    become_subreaper();
    let deb = deb();
    let purge = if dpkg_knows("criu").is_some() {
        "purge-criu"
    } else {
        ""
    };
    let view = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The view: a tmpfs for the overlay's upper layer, the machine's root as its lower one,
    // /proc, /dev and /sys bound in; all of it goes with the mount namespace when sh ends.
    let setup = r#"set -eu
V=$1; shift
mount -t tmpfs view "$V"
mkdir "$V/upper" "$V/work" "$V/root"
mount -t overlay view -o lowerdir=/,upperdir="$V/upper",workdir="$V/work" "$V/root"
for d in proc dev sys; do mount --rbind "/$d" "$V/root/$d"; done
exec chroot "$V/root" sh -c "$@"
"#;
    let before = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            setup,
            "view",
        ])
        .arg(view.path())
        .arg(ROUND_TRIP)
        .arg("round-trip")
        .arg(&deb)
        .arg(work.path())
        .arg(COUNTER)
        .arg(VERSION)
        .arg(purge)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    verdict(&out);
    // The machine saw none of it.
    assert_eq!(
        std::fs::read_to_string("/var/lib/dpkg/status").unwrap(),
        before,
        "the machine's dpkg database changed"
    );
    assert!(
        std::fs::read_dir(work.path()).unwrap().next().is_none(),
        "the view wrote through to the machine"
    );
    if purge.is_empty() {
        assert!(!Path::new("/usr/sbin/criu").exists());
    } else {
        assert!(
            dpkg_knows("criu").is_some(),
            "the machine's criu is still installed"
        );
    }
}
