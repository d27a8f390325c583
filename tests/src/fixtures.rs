//! CRIU 4.2's fixture images and the scratch file systems tests mount.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use criu::{CpuCap, RestoreOptions};

use crate::process::pid_exists;

/// A tmpfs mounted with `opts` on a directory in a new mount namespace of the calling thread:
/// only this thread and what it starts from then on (victims, criu) see it. Dropping it
/// unmounts it and removes the directory.
pub struct OwnTmpfs {
    at: PathBuf,
}

impl OwnTmpfs {
    /// Creates `at` and mounts the tmpfs there (after moving this thread to a mount namespace
    /// of its own, whose mounts do not propagate back).
    ///
    /// # Errors
    /// A description of the step that failed (the directory is removed again).
    pub fn mount(at: &Path, opts: &str) -> Result<OwnTmpfs, String> {
        Self::mount_fs(at, "tmpfs", opts)
    }

    /// As [`OwnTmpfs::mount`], with a file system of type `fstype` (`ramfs`, ...) instead.
    ///
    /// # Errors
    /// A description of the step that failed (the directory is removed again).
    pub fn mount_fs(at: &Path, fstype: &str, opts: &str) -> Result<OwnTmpfs, String> {
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
            .map_err(|e| format!("make / private: {e}"))?;
        std::fs::create_dir_all(at).map_err(|e| format!("mkdir {}: {e}", at.display()))?;
        let fs = Some(fstype);
        if let Err(e) = mount(fs, at, fs, MsFlags::empty(), Some(opts)) {
            let _ = std::fs::remove_dir(at);
            return Err(format!("mount {fstype} ({opts}) on {}: {e}", at.display()));
        }
        Ok(OwnTmpfs {
            at: at.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }
}

impl Drop for OwnTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.at);
    }
}

/// The CRIU 4.2 fixture directory (`criu-4.2`): `CRIU_FIXTURES` if set, else `shared/` beside
/// this checkout, else `/work/shared` (where a clone made elsewhere still finds it).
///
/// # Panics
/// Naming every place looked at, if none exists.
pub fn fixtures_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CRIU_FIXTURES") {
        return p.into();
    }
    let tried = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/criu-4.2"),
        PathBuf::from("/work/shared/fixtures/criu-4.2"),
    ];
    match tried.iter().find(|p| p.is_dir()) {
        Some(p) => p.clone(),
        None => panic!("fixtures not found at {tried:?} (set CRIU_FIXTURES)"),
    }
}

/// The pid of the task in CRIU 4.2's `single` fixture (its images are named for it).
pub const SINGLE_PID: i32 = 12791;

/// CRIU's fixture program `NAME` put where its images say it was (`/tmp/fx/NAME`), same
/// bytes. Dropping it removes the file again if this test put it there, and `/tmp/fx` once it
/// is empty, also when the test fails.
pub struct FixtureBinary {
    path: PathBuf,
    created: bool,
}

impl FixtureBinary {
    /// Installs fixture program `name` (see the type).
    ///
    /// # Panics
    /// If the fixture program cannot be read or written there.
    pub fn install(name: &str) -> FixtureBinary {
        let path = Path::new("/tmp/fx").join(name);
        let want = fs::read(fixtures_dir().join("programs").join(name)).expect("fixture binary");
        let created = fs::read(&path).ok().as_deref() != Some(&want[..]);
        if created {
            fs::create_dir_all("/tmp/fx").unwrap();
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            fs::write(&tmp, &want).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&tmp, &path).unwrap();
        }
        FixtureBinary { path, created }
    }
}

impl Drop for FixtureBinary {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_dir("/tmp/fx");
        }
    }
}

/// [`FixtureBinary::install`] of the `single` fixture's program.
pub fn install_fixture_binary() -> FixtureBinary {
    FixtureBinary::install("single")
}

/// Whether the `single` fixture can be restored here: its pid is free and its saved register
/// state fits this CPU, leaving out what this CPU has no registers for (it was written on an
/// AVX-512 machine; its restores pass `--cpu-cap=none` where needed: it sits in pause(), where
/// vector registers are dead). Says why not. Installs the fixture's binary; the guard returned
/// when it is usable removes it again.
pub fn fixture_usable() -> Option<FixtureBinary> {
    if pid_exists(SINGLE_PID) {
        eprintln!("skipped: pid {SINGLE_PID} recorded in the fixture is taken");
        return None;
    }
    let bin = install_fixture_binary();
    let dir = fixtures_dir().join("single");
    let tree = criu::images_plan::load(&dir, false).expect("fixture images load");
    if let Some(reason) = fpu_misfit(&tree) {
        eprintln!("skipped: the fixture's FPU state does not fit this CPU: {reason}");
        return None;
    }
    Some(bin)
}

/// Why the tasks of `tree` cannot be restored on this CPU even with `--cpu-cap=none` (saved
/// register state this CPU lays out differently), if they cannot.
pub fn fpu_misfit(tree: &criu::images_plan::TreePlan) -> Option<String> {
    criu::images_plan::fpu_misfit(tree).expect("read our own maps")
}

/// Whether this CPU lacks registers the `single` fixture has saved state for (it was written
/// on an AVX-512 machine): its restores then need `--cpu-cap=none`. Worked out once.
pub fn fixture_needs_cpu_cap_none() -> bool {
    static NEEDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NEEDS.get_or_init(|| needs_cpu_cap_none(&fixtures_dir().join("single")))
}

/// Whether a task or thread in the images in `dir` has saved state for registers this CPU
/// lacks (false if the images do not load: the restore then fails on its own).
pub fn needs_cpu_cap_none(dir: &Path) -> bool {
    criu::images_plan::load(dir, false)
        .is_ok_and(|tree| criu::images_plan::needs_cpu_cap_none(&tree))
}

/// `--cpu-cap=none` when the fixture needs it, else nothing.
pub fn fixture_cpu_cap() -> &'static [&'static str] {
    if fixture_needs_cpu_cap_none() {
        &["--cpu-cap=none"]
    } else {
        &[]
    }
}

/// Detached restore options for a fixture's images (with `--cpu-cap=none` where this CPU needs
/// it).
pub fn detached(dir: &Path) -> RestoreOptions {
    RestoreOptions {
        images_dir: dir.to_path_buf(),
        detach: true,
        cpu_cap: if needs_cpu_cap_none(dir) {
            CpuCap(CpuCap::NONE)
        } else {
            CpuCap::default()
        },
        ..Default::default()
    }
}

/// Copies the regular files of directory `from` into `to` (mode 0644), e.g. a fixture's images
/// into a scratch directory before damaging them.
///
/// # Panics
/// If a file cannot be read or written.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
            fs::set_permissions(to.join(e.file_name()), fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// The `single` fixture ready to be edited and restored: the guard of its installed binary
/// ([`fixture_usable`]), a scratch copy of its images and that copy opened. `None` (with the
/// reason printed) when the fixture cannot be restored here.
///
/// # Panics
/// If the scratch directory cannot be made or the images cannot be copied.
pub fn single_fixture_copy() -> Option<(FixtureBinary, tempfile::TempDir, criu_images::ImageDir)> {
    let bin = fixture_usable()?;
    let t = tempfile::tempdir().expect("create a scratch directory");
    copy_dir(&fixtures_dir().join("single"), t.path());
    let d = criu_images::ImageDir::new(t.path());
    Some((bin, t, d))
}
