//! What a C parasite build links: the plugins as a static archive, built on demand into a cache
//! directory keyed by the toolchain and the plugin sources, and compel's linker script.

use crate::BuildError;
use crate::compile::{Sources, Toolchain, build_plugin_crates, write_if_changed};
use crate::link::{LINKER_SCRIPT, cflags, ldflags};
use compel_proto::blob::DEFAULT_ENTRY;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugins a C parasite can ask for (all live in one archive; `std` is always needed).
pub const PLUGINS: [&str; 3] = ["std", "fds", "shmem"];

/// Where an installed compel keeps its plugin archive and linker script, under the prefix.
pub const INSTALLED_LIB_DIR: &str = "lib/compel";
/// Where an installed compel keeps its C headers, under the prefix.
pub const INSTALLED_INCLUDE_DIR: &str = "include/compel";

/// The files a C parasite build uses.
#[derive(Clone, Debug)]
pub struct CSupport {
    /// The plugin archive (std, fds and shmem; unused parts are dropped by `--gc-sections`).
    pub archive: PathBuf,
    /// compel's linker script.
    pub script: PathBuf,
    /// compel's include directory.
    pub include: PathBuf,
}

impl CSupport {
    /// Finds or builds the C support files under `cache_root` (see [`default_cache_dir`]). The
    /// directory is named after a hash of the compiler's version and the plugin sources, built
    /// under a temporary name and renamed into place, so concurrent callers are safe.
    ///
    /// # Errors
    /// The cache directory cannot be written or the plugins do not compile.
    pub fn ensure(
        tc: &Toolchain,
        sources: &Sources,
        cache_root: &Path,
    ) -> Result<Self, BuildError> {
        let key = cache_key(tc, sources)?;
        let dir = cache_root.join(format!("c-{key:016x}"));
        let support = Self {
            archive: dir.join("libcompel_plugins.a"),
            script: dir.join("compel.lds"),
            include: sources.include_dir(),
        };
        if support.archive.is_file() && support.script.is_file() {
            return Ok(support);
        }
        std::fs::create_dir_all(cache_root).map_err(BuildError::io(cache_root))?;
        let tmp = cache_root.join(format!(".tmp-{}-{key:016x}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = build_plugin_crates(tc, sources, &tmp, &["rlib", "staticlib"])
            .and_then(|()| write_if_changed(&tmp.join("compel.lds"), LINKER_SCRIPT.as_bytes()));
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if std::fs::rename(&tmp, &dir).is_err() {
            // Someone else finished first: theirs is as good as ours.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        if !support.archive.is_file() {
            return Err(BuildError::Io {
                path: support.archive,
                cause: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        tracing::info!(dir = %dir.display(), "built compel plugins for C");
        Ok(support)
    }

    /// The C support files of an installed compel under `prefix` (what `make install` puts
    /// there: `lib/compel/{libcompel_plugins.a,compel.lds}` and `include/compel/`), if they
    /// are all there.
    pub fn installed(prefix: &Path) -> Option<Self> {
        let dir = prefix.join(INSTALLED_LIB_DIR);
        let support = Self {
            archive: dir.join("libcompel_plugins.a"),
            script: dir.join("compel.lds"),
            include: prefix.join(INSTALLED_INCLUDE_DIR),
        };
        (support.archive.is_file() && support.script.is_file() && support.include.is_dir())
            .then_some(support)
    }

    /// `gcc` flags for C parasite code.
    pub fn cflags(&self) -> Vec<String> {
        cflags(&self.include)
    }

    /// `ld` flags for linking C parasite objects (before the objects and the archive).
    pub fn ldflags(&self) -> Vec<String> {
        ldflags(&self.script, DEFAULT_ENTRY)
    }

    /// What to link after the objects for the given plugins (all of them if `names` is empty).
    ///
    /// # Errors
    /// [`BuildError::UnknownPlugin`] for a name not in [`PLUGINS`].
    pub fn plugins(&self, names: &[String]) -> Result<Vec<PathBuf>, BuildError> {
        if let Some(bad) = names.iter().find(|n| !PLUGINS.contains(&n.as_str())) {
            return Err(BuildError::UnknownPlugin { name: bad.clone() });
        }
        Ok(vec![self.archive.clone()])
    }
}

/// The cache directory: `$COMPEL_CACHE_DIR`, else `$XDG_CACHE_HOME/compel`, else
/// `$HOME/.cache/compel`, else a directory in the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    let var = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("COMPEL_CACHE_DIR") {
        return d;
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return d.join("compel");
    }
    if let Some(d) = var("HOME") {
        return d.join(".cache/compel");
    }
    std::env::temp_dir().join("compel-cache")
}

/// FNV-1a over the compiler's version, the linker script and every plugin source file.
fn cache_key(tc: &Toolchain, sources: &Sources) -> Result<u64, BuildError> {
    let mut h = Fnv::default();
    let version = Command::new(&tc.rustc)
        .arg("-vV")
        .output()
        .map_err(|cause| BuildError::Spawn {
            tool: tc.rustc.display().to_string(),
            env: "RUSTC",
            cause,
        })?;
    h.write(&version.stdout);
    h.write(LINKER_SCRIPT.as_bytes());
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    for dir in sources.dirs() {
        let mut files = Vec::new();
        collect_files(&dir, &mut files)?;
        files.sort();
        for f in files {
            h.write(f.to_string_lossy().as_bytes());
            h.write(&std::fs::read(&f).map_err(BuildError::io(&f))?);
        }
    }
    Ok(h.0)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    for entry in std::fs::read_dir(dir).map_err(BuildError::io(dir))? {
        let path = entry.map_err(BuildError::io(dir))?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate fields so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}
