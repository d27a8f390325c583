//! One `criu restore` of an images directory in a throwaway namespace, for the fuzz tests
//! (issue 23): a new pid + mount + net namespace (`unshare`), in which every mount (of the
//! namespace's own `/proc`, `/proc/sys`) is made read-only and a scratch tmpfs holding the
//! images, the fixture's program and a copy of criu is put over `/tmp`. Whatever a damaged
//! image makes criu do stays inside: the namespace's pid 1 takes every task with it, the tmpfs
//! every file.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{criu_bin, fixture_needs_cpu_cap_none, fixtures_dir};

/// How long one restore may take before it counts as a hang.
pub const RUN: Duration = Duration::from_secs(30);

/// The script run as the namespace's first process: every mount read-only (of `/proc`, the
/// namespace's own, only `/proc/sys`); a tmpfs with the images and the fixture's program put
/// over `/tmp` (the program where the images say it was, `/tmp/fx/single`), with a copy of criu
/// (the checkout itself may live under `/tmp`); then criu as pid 1 of the new pid namespace,
/// its log in the tmpfs.
const IN_NS: &str = r#"set -e
mount -n --make-rprivate /
awk '$2 != "/proc" {print $2}' /proc/self/mounts | while read -r m; do
	mount -n -o remount,bind,ro "$m" 2>/dev/null || true
done
mount -n --bind /proc/sys /proc/sys
mount -n -o remount,bind,ro /proc/sys
mount -n -t tmpfs -o size=128m fuzz "$SCRATCH"
cp -r "$IMAGES" "$SCRATCH/img"
mkdir "$SCRATCH/fx"
cp "$PROGRAM" "$SCRATCH/fx/single"
cp "$CRIU" "$SCRATCH/criu"
mount -n --move "$SCRATCH" /tmp
exec /tmp/criu restore -D /tmp/img -d -W /tmp/fx -o restore.log -v4 $CPU_CAP
"#;

/// Restores `images` (a copy of CRIU 4.2's `single` fixture, maybe damaged) in a fresh
/// namespace; `images.ns` must be an empty directory (the tmpfs goes there first) and criu's
/// stderr is kept in `images.err`. Returns criu's exit code; `Err` for a hang, a signal, or a
/// Rust panic (exit code 101 or "panicked" on stderr).
pub fn restore_in_ns(images: &Path) -> Result<i32, String> {
    let err_file = images.with_extension("err");
    let mut child = Command::new("unshare")
        .args([
            "--pid",
            "--mount",
            "--net",
            "--fork",
            "--kill-child",
            "--mount-proc",
        ])
        .args(["sh", "-c", IN_NS])
        .env("PROGRAM", fixtures_dir().join("programs/single"))
        .env("CRIU", criu_bin())
        .env("IMAGES", images)
        .env("SCRATCH", images.with_extension("ns"))
        .env(
            "CPU_CAP",
            if fixture_needs_cpu_cap_none() {
                "--cpu-cap=none"
            } else {
                ""
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file).map_err(|e| format!("stderr file: {e}"))?)
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if t0.elapsed() > RUN {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("criu restore hung for {RUN:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    if stderr.contains("panicked") {
        return Err(format!("criu panicked: {stderr}"));
    }
    match (st.code(), st.signal()) {
        (Some(101), _) => Err(format!("criu exited 101 (a panic): {stderr}")),
        (Some(c), _) => Ok(c),
        (None, Some(s)) => Err(format!("criu was killed by signal {s}")),
        _ => Err(format!("criu ended oddly: {st}")),
    }
}
