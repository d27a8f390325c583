//! Compiling parasites: `rustc` for Rust crates (plus the plugin crates they link), `ld` with
//! compel's linker script, then [`Blob::from_elf`].

use crate::link::{LINKER_SCRIPT, ldflags};
use crate::{Blob, BuildError};
use compel_proto::blob::DEFAULT_ENTRY;
use std::cell::OnceCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The external tools the builder runs.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// The Rust compiler: `$RUSTC` (set by cargo for build scripts), else `rustc`.
    pub rustc: PathBuf,
    /// The linker: `$COMPEL_LD`, else `ld` (GNU ld).
    pub ld: PathBuf,
}

impl Toolchain {
    /// The tools named by the environment, or their usual names on `PATH`.
    pub fn from_env() -> Self {
        let get = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| default.into())
        };
        Self {
            rustc: get("RUSTC", "rustc"),
            ld: get("COMPEL_LD", "ld"),
        }
    }
}

impl Default for Toolchain {
    fn default() -> Self {
        Self::from_env()
    }
}

/// Where the sources of the crates linked into every Rust parasite are: `compel-arch`,
/// `compel-proto` and `compel-plugins`. They must stay free of external dependencies (the
/// builder compiles them with `rustc` alone).
#[derive(Clone, Debug)]
pub struct Sources {
    /// The workspace root (holding `arch/`, `compel/proto/`, `compel-plugins/`).
    pub root: PathBuf,
}

impl Sources {
    /// The sources of the workspace this builder was compiled from.
    pub fn from_workspace() -> Self {
        // compel/builder -> compel -> the workspace root.
        let builder = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = builder.parent().and_then(Path::parent).unwrap_or(builder);
        Self {
            root: root.to_owned(),
        }
    }

    /// The crate roots: `(crate name, lib.rs)` in dependency order.
    pub fn crates(&self) -> [(&'static str, PathBuf); 3] {
        [
            ("compel_arch", self.root.join("arch/src/lib.rs")),
            ("compel_proto", self.root.join("compel/proto/src/lib.rs")),
            (
                "compel_plugins",
                self.root.join("compel-plugins/src/lib.rs"),
            ),
        ]
    }

    /// The source directories to watch (`cargo::rerun-if-changed`).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.crates()
            .iter()
            .filter_map(|(_, p)| p.parent().map(Path::to_path_buf))
            .collect()
    }

    /// compel's C include directory (the plugin headers and `<compel/blob.h>`).
    pub fn include_dir(&self) -> PathBuf {
        self.root.join("compel/include")
    }
}

impl Default for Sources {
    fn default() -> Self {
        Self::from_workspace()
    }
}

/// How to build one Rust parasite.
#[derive(Clone, Debug)]
pub struct ParasiteOptions {
    /// The blob's name (and crate name, `-` becoming `_`); by default the directory's name.
    pub name: Option<String>,
    /// The entry symbol (`ld -e`): [`DEFAULT_ENTRY`], the compel-plugins `std` entry stub, unless
    /// the parasite brings its own.
    pub entry: String,
    /// `rustc -C opt-level` (2 or more: parasites have small stacks).
    pub opt_level: u8,
}

impl Default for ParasiteOptions {
    fn default() -> Self {
        Self {
            name: None,
            entry: DEFAULT_ENTRY.to_owned(),
            opt_level: 2,
        }
    }
}

/// A built parasite.
#[derive(Clone, Debug)]
pub struct Built {
    /// Its name.
    pub name: String,
    /// The linked image.
    pub elf: PathBuf,
    /// The blob read from it.
    pub blob: Blob,
    /// Every source file the compiler read (for `cargo::rerun-if-changed`).
    pub sources: Vec<PathBuf>,
    /// Compiler warnings, one per entry (for `cargo::warning=`).
    pub warnings: Vec<String>,
}

/// Builds Rust parasites into blobs, with all outputs under one directory.
///
/// ```no_run
/// let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
/// let builder = compel_builder::Builder::new(&out);
/// let built = builder.build_rust("parasites/demo".as_ref(), &Default::default()).unwrap();
/// std::fs::write(out.join("demo.rs"), built.blob.to_rust("", "demo")).unwrap();
/// ```
#[derive(Debug)]
pub struct Builder {
    toolchain: Toolchain,
    sources: Sources,
    out_dir: PathBuf,
    deps: OnceCell<PathBuf>,
}

impl Builder {
    /// A builder writing under `out_dir`, with the tools from the environment and the plugin
    /// sources of this workspace.
    pub fn new(out_dir: &Path) -> Self {
        Self::with(out_dir, Toolchain::from_env(), Sources::from_workspace())
    }

    /// A builder with explicit tools and sources.
    pub fn with(out_dir: &Path, toolchain: Toolchain, sources: Sources) -> Self {
        Self {
            toolchain,
            sources,
            out_dir: out_dir.to_owned(),
            deps: OnceCell::new(),
        }
    }

    /// The plugin sources this builder compiles.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Compiles `compel-arch`, `compel-proto` and `compel-plugins` (with `--cfg
    /// compel_parasite`) for parasite use, once; returns the directory holding the rlibs.
    ///
    /// # Errors
    /// The compiler could not run or failed.
    pub fn plugin_rlibs(&self) -> Result<&Path, BuildError> {
        if let Some(d) = self.deps.get() {
            return Ok(d);
        }
        let deps = self.out_dir.join("compel-deps");
        build_plugin_crates(&self.toolchain, &self.sources, &deps, &["rlib"])?;
        Ok(self.deps.get_or_init(|| deps))
    }

    /// Compiles the parasite crate in `crate_dir` (`src/lib.rs` or `src/main.rs`, `#![no_std]`,
    /// with `compel_plugins`, `compel_proto` and `compel_arch` available as extern crates),
    /// links it with compel's linker script and reads the blob.
    ///
    /// # Errors
    /// A [`BuildError`] saying which step failed and why.
    pub fn build_rust(
        &self,
        crate_dir: &Path,
        opts: &ParasiteOptions,
    ) -> Result<Built, BuildError> {
        let name = match &opts.name {
            Some(n) => n.clone(),
            None => crate_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(BuildError::BadName { name });
        }
        let crate_name = name.replace('-', "_");
        // Canonical paths, so that the source paths rustc records (panic locations) match the
        // remapping and the blob does not depend on how the directory was named.
        let crate_dir = &crate_dir
            .canonicalize()
            .unwrap_or_else(|_| crate_dir.to_owned());
        let root = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|r| crate_dir.join(r))
            .find(|p| p.is_file())
            .ok_or_else(|| BuildError::NoCrateRoot {
                dir: crate_dir.to_owned(),
            })?;
        let deps = self.plugin_rlibs()?.to_owned();
        let work = self.out_dir.join("compel-parasites").join(&name);
        std::fs::create_dir_all(&work).map_err(BuildError::io(&work))?;

        let mut cmd = rustc_base(&self.toolchain, opts.opt_level);
        cmd.arg("--crate-name").arg(&crate_name).args([
            "--crate-type",
            "staticlib",
            "-C",
            "lto=fat",
        ]);
        cmd.arg("--emit=link,dep-info").arg("--out-dir").arg(&work);
        cmd.arg(remap(crate_dir, &name));
        for (krate, _) in self.sources.crates() {
            let mut ext = OsString::from(format!("{krate}="));
            ext.push(deps.join(format!("lib{krate}.rlib")));
            cmd.arg("--extern").arg(ext);
        }
        cmd.arg("-L").arg(dependency_dir(&deps)).arg(&root);
        let warnings = run(cmd, "rustc", "RUSTC", &name)?;
        let archive = work.join(format!("lib{crate_name}.a"));
        let sources = dep_info(&work.join(format!("{crate_name}.d")));

        let script = work.join("compel.lds");
        write_if_changed(&script, LINKER_SCRIPT.as_bytes())?;
        let elf = work.join(format!("{name}.elf"));
        let mut ld = Command::new(&self.toolchain.ld);
        ld.args(ldflags(&script, &opts.entry))
            .arg("-o")
            .arg(&elf)
            .arg(&archive);
        run(ld, "ld", "COMPEL_LD", &name).map_err(|e| match e {
            BuildError::Tool { tool, what, message } if message.contains("undefined reference to `compel_parasite_handle'") => {
                BuildError::Tool {
                    tool,
                    what,
                    message: format!(
                        "the parasite defines no command handler for the standard entry `{}`: use \
                         `compel_plugins::parasite_handler!`, or name the parasite's own entry point \
                         (ParasiteOptions::entry; in parasite-blobs: `entry = \"symbol\"` in compel.toml)",
                        opts.entry
                    ),
                }
            }
            e => e,
        })?;

        let data = std::fs::read(&elf).map_err(BuildError::io(&elf))?;
        let blob = Blob::from_elf(&data).map_err(|cause| BuildError::Elf {
            path: elf.clone(),
            cause,
        })?;
        tracing::debug!(parasite = %name, image = blob.image.len(), relocs = blob.relocs.len(), "built parasite");
        Ok(Built {
            name,
            elf,
            blob,
            sources,
            warnings,
        })
    }
}

/// Compiles the plugin crates into `deps` as the given crate types (the last crate,
/// compel-plugins, only; its dependencies are always rlibs).
pub(crate) fn build_plugin_crates(
    tc: &Toolchain,
    sources: &Sources,
    deps: &Path,
    plugin_types: &[&str],
) -> Result<(), BuildError> {
    std::fs::create_dir_all(deps).map_err(BuildError::io(deps))?;
    let crates = sources.crates();
    for (i, (krate, root)) in crates.iter().enumerate() {
        let root = &root.canonicalize().unwrap_or_else(|_| root.clone());
        let mut cmd = rustc_base(tc, 2);
        cmd.arg("--crate-name").arg(krate);
        if i + 1 == crates.len() {
            for t in plugin_types {
                cmd.args(["--crate-type", t]);
            }
        } else {
            cmd.args(["--crate-type", "rlib"]);
        }
        cmd.args(["--cfg", "compel_parasite"])
            .arg("--out-dir")
            .arg(deps);
        if let Some(dir) = root.parent().and_then(Path::parent) {
            cmd.arg(remap(dir, krate));
        }
        for (dep, _) in &crates[..i] {
            let mut ext = OsString::from(format!("{dep}="));
            ext.push(deps.join(format!("lib{dep}.rlib")));
            cmd.arg("--extern").arg(ext);
        }
        cmd.arg("-L").arg(dependency_dir(deps)).arg(root);
        run(cmd, "rustc", "RUSTC", krate)?;
    }
    Ok(())
}

/// `rustc` with everything a parasite needs: the host target (the only one installed), no
/// unwinding, position-independent code, no debug info, deterministic metadata.
fn rustc_base(tc: &Toolchain, opt_level: u8) -> Command {
    let mut cmd = Command::new(&tc.rustc);
    cmd.args(["--edition", "2024", "--target", "x86_64-unknown-linux-gnu"]);
    cmd.args([
        "-C",
        "panic=abort",
        "-C",
        "relocation-model=pie",
        "-C",
        "force-unwind-tables=no",
    ]);
    cmd.arg("-C").arg(format!("opt-level={}", opt_level.max(2)));
    cmd.args([
        "-C",
        "debuginfo=0",
        "-C",
        "codegen-units=1",
        "-C",
        "metadata=compel-parasite",
    ]);
    cmd.args(["-C", "overflow-checks=off", "-C", "debug-assertions=off"]);
    // A wrapper or flags meant for the outer build must not leak into the parasite's.
    cmd.env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

fn remap(dir: &Path, name: &str) -> OsString {
    let mut arg = OsString::from("--remap-path-prefix=");
    arg.push(dir.canonicalize().unwrap_or_else(|_| dir.to_owned()));
    arg.push(format!("={name}"));
    arg
}

fn dependency_dir(deps: &Path) -> OsString {
    let mut arg = OsString::from("dependency=");
    arg.push(deps);
    arg
}

/// Runs a tool; on failure returns its stderr (trimmed) as the error, on success its warnings.
fn run(
    mut cmd: Command,
    tool: &str,
    env: &'static str,
    what: &str,
) -> Result<Vec<String>, BuildError> {
    tracing::debug!(?cmd, "running");
    let out = cmd.output().map_err(|cause| BuildError::Spawn {
        tool: cmd.get_program().to_string_lossy().into_owned(),
        env,
        cause,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let mut message: String = stderr.trim().chars().take(6000).collect();
        if message.is_empty() {
            message = format!("exited with {}", out.status);
        }
        return Err(BuildError::Tool {
            tool: tool.to_owned(),
            what: what.to_owned(),
            message,
        });
    }
    Ok(stderr
        .split("\n\n")
        .map(str::trim)
        .filter(|w| w.starts_with("warning"))
        .map(str::to_owned)
        .collect())
}

/// The source files listed in a `rustc --emit=dep-info` file.
fn dep_info(path: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.strip_suffix(':'))
        .filter(|l| !l.is_empty())
        .map(|l| PathBuf::from(l.replace("\\ ", " ")))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Writes `data` to `path` unless it already holds exactly that.
pub(crate) fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    std::fs::write(path, data).map_err(BuildError::io(path))
}
