//! `make install` / `make uninstall` (the top-level Makefile) into a temporary DESTDIR, and what
//! a user does with the result: the installed compel prints paths under the prefix, C programs
//! build against the installed headers and libraries through pkg-config and the installed
//! compel and run, man pages list every option their parser knows and render without warnings,
//! bash completions load and complete. The Makefile runs with the test's own profile
//! (`PROFILE=debug` under `cargo test`), so it reuses target/ and builds nothing in release.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use compel_criu_tests::{Exit, Victim, become_subreaper, bin_dir, test_lock, wait_state};

const T: Duration = Duration::from_secs(10);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn profile() -> String {
    bin_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn make(args: &[&str]) -> String {
    let mut cmd = Command::new("make");
    cmd.arg("-s")
        .arg("-C")
        .arg(root())
        .arg(format!("PROFILE={}", profile()))
        .args(args)
        .env("CARGO_TARGET_DIR", bin_dir().parent().unwrap())
        .env_remove("MAKEFLAGS");
    run(&mut cmd)
}

/// `make` (build and generate) once per test process; the tests share its output.
fn built() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        make(&[]);
        *done = true;
    }
}

/// A `make install PREFIX=/usr DESTDIR=<temp>`; uninstalled and removed on drop.
struct Installed {
    dir: tempfile::TempDir,
}

impl Installed {
    fn new() -> Self {
        built();
        let dir = tempfile::tempdir().unwrap();
        let d = format!("DESTDIR={}", dir.path().display());
        make(&["install", "PREFIX=/usr", &d]);
        Self { dir }
    }

    fn destdir(&self) -> &Path {
        self.dir.path()
    }

    fn usr(&self) -> PathBuf {
        self.dir.path().join("usr")
    }

    fn uninstall(&self) {
        let d = format!("DESTDIR={}", self.destdir().display());
        make(&["uninstall", "PREFIX=/usr", &d]);
    }

    fn compel(&self, args: &[&str]) -> String {
        run(Command::new(self.usr().join("bin/compel"))
            .args(args)
            .env_remove("COMPEL_CACHE_DIR"))
        .trim()
        .to_owned()
    }

    fn pkg_config(&self, args: &[&str]) -> String {
        run(Command::new("pkg-config")
            .args(args)
            .env("PKG_CONFIG_SYSROOT_DIR", self.destdir())
            .env("PKG_CONFIG_LIBDIR", self.usr().join("lib/pkgconfig"))
            .env_remove("PKG_CONFIG_PATH"))
        .trim()
        .to_owned()
    }
}

/// Every regular file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(format!("/{}", p.strip_prefix(base).unwrap().display()));
            }
        }
    }
    let mut out = BTreeSet::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

#[test]
fn install_puts_everything_under_the_prefix_and_uninstall_removes_exactly_that() {
    let inst = Installed::new();
    let files = files_under(inst.destdir());
    for want in [
        "/usr/sbin/criu",
        "/usr/bin/crit",
        "/usr/bin/compel",
        "/usr/lib/libcompel.so",
        "/usr/lib/libcompel.a",
        "/usr/lib/libcriu.so",
        "/usr/lib/libcriu.a",
        "/usr/lib/compel/libcompel_plugins.a",
        "/usr/lib/compel/compel.lds",
        "/usr/lib/pkgconfig/compel.pc",
        "/usr/lib/pkgconfig/criu.pc",
        "/usr/include/compel/compel.h",
        "/usr/include/compel/compel/infect.h",
        "/usr/include/criu/criu.h",
        "/usr/share/man/man8/criu.8",
        "/usr/share/man/man1/crit.1",
        "/usr/share/man/man1/compel.1",
        "/usr/share/bash-completion/completions/criu",
        "/usr/share/bash-completion/completions/crit",
        "/usr/share/bash-completion/completions/compel",
    ] {
        assert!(files.contains(want), "{want} not installed: {files:?}");
    }
    // The manifest names every installed file, and nothing else.
    let manifest = std::fs::read_to_string(
        inst.destdir()
            .join("usr/share/compel-criu/install-manifest"),
    )
    .unwrap();
    let listed: BTreeSet<String> = manifest.lines().map(str::to_owned).collect();
    assert_eq!(listed, files);
    // The installed binaries run, and all three name the package's version.
    for bin in ["sbin/criu", "bin/crit", "bin/compel"] {
        let v = run(Command::new(inst.usr().join(bin)).arg("--version"));
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{bin}: {v}");
    }

    // Something of the user's next to ours survives the uninstall.
    let mine = inst.usr().join("bin/mine");
    std::fs::write(&mine, "x").unwrap();
    inst.uninstall();
    assert_eq!(
        files_under(inst.destdir()),
        BTreeSet::from(["/usr/bin/mine".to_owned()])
    );
    std::fs::remove_file(&mine).unwrap();
    inst.uninstall_is_refused_twice();
}

impl Installed {
    fn uninstall_is_refused_twice(&self) {
        let out = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(root())
            .arg("uninstall")
            .arg("PREFIX=/usr")
            .arg(format!("DESTDIR={}", self.destdir().display()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "a second uninstall has no manifest");
    }
}

#[test]
fn installed_compel_prints_paths_under_its_prefix() {
    let inst = Installed::new();
    let usr = inst.usr();
    let u = usr.display().to_string();
    assert_eq!(
        inst.compel(&["plugins"]),
        format!("{u}/lib/compel/libcompel_plugins.a")
    );
    assert!(
        inst.compel(&["ldflags"])
            .contains(&format!(" -T {u}/lib/compel/compel.lds ")),
        "{}",
        inst.compel(&["ldflags"])
    );
    assert_eq!(inst.compel(&["includes"]), format!("-I{u}/include/compel"));
    assert_eq!(inst.compel(&["libs"]), format!("-L{u}/lib -lcompel"));
    assert!(
        inst.compel(&["--static", "libs"])
            .starts_with(&format!("{u}/lib/libcompel.a "))
    );
    let cflags = inst.compel(&["cflags"]);
    assert!(
        cflags.contains(&format!("-I{u}/include/compel ")),
        "{cflags}"
    );
    // Nothing points back into the checkout or a cache.
    let checkout = root().display().to_string();
    for args in [
        &["plugins"][..],
        &["ldflags"],
        &["includes"],
        &["libs"],
        &["cflags"],
    ] {
        let out = inst.compel(args);
        assert!(
            !out.contains(&checkout) && !out.contains("cache"),
            "{args:?}: {out}"
        );
        for word in out.split_whitespace() {
            let path = word
                .strip_prefix("-I")
                .or(word.strip_prefix("-L"))
                .unwrap_or(word);
            if path.starts_with('/') {
                assert!(Path::new(path).exists(), "{args:?}: {path} missing");
            }
        }
    }
    inst.uninstall();
}

const VICTIM: &str = r#"#include <stdio.h>
#include <unistd.h>

int main(void)
{
	char line[64];

	setvbuf(stdout, NULL, _IONBF, 0);
	printf("ready %d\n", getpid());
	while (fgets(line, sizeof(line), stdin))
		printf("sid %d\n", (int)getsid(0));
	return 0;
}
"#;

const PARASITE: &str = r#"#include <compel/infect-rpc.h>

int parasite_trap_cmd(int cmd, void *args)
{
	return 0;
}

void parasite_cleanup(void)
{
}

int parasite_daemon_cmd(int cmd, void *args)
{
	return 0;
}
"#;

/// A host that includes the parasite's header (built by the installed compel) and runs a
/// syscall in the victim through libcompel, found by pkg-config.
const HOST: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>

#include <compel/log.h>
#include <compel/infect.h>
#include "parasite.h"

int main(int argc, char **argv)
{
	int pid = atoi(argv[1]), state;
	struct parasite_ctl *ctl;
	long ret = -1000;

	(void)parasite_setup_c_header;
	state = compel_stop_task(pid);
	if (state < 0)
		return 1;
	ctl = compel_prepare(pid);
	if (!ctl)
		return 2;
	if (compel_syscall(ctl, __NR_setsid, &ret, 0, 0, 0, 0, 0, 0) < 0)
		return 3;
	printf("setsid %ld\n", ret);
	if (compel_cure(ctl) || compel_resume_task(pid, state, state))
		return 4;
	return 0;
}
"#;

/// libcriu against the installed criu: the service binary is the installed one.
const CRIU_CLIENT: &str = r#"#include <stdio.h>
#include <criu.h>

int main(int argc, char **argv)
{
	if (criu_init_opts() < 0)
		return 1;
	if (criu_set_service_binary(argv[1]) < 0)
		return 2;
	printf("version %d\n", criu_get_version());
	return 0;
}
"#;

fn gcc(work: &Path, args: &[String]) {
    run(Command::new("gcc").current_dir(work).args(args));
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn c_programs_build_with_pkg_config_and_the_installed_compel_and_run() {
    let _g = test_lock();
    become_subreaper();
    let inst = Installed::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    for (name, text) in [
        ("victim.c", VICTIM),
        ("parasite.c", PARASITE),
        ("host.c", HOST),
        ("client.c", CRIU_CLIENT),
    ] {
        std::fs::write(w.join(name), text).unwrap();
    }
    gcc(w, &words("-O2 -o victim victim.c"));

    // The parasite: only the installed compel's flags and files.
    let mut args = words("-O2 -Wall -c -o parasite.o parasite.c");
    args.extend(words(&inst.compel(&["cflags"])));
    gcc(w, &args);
    run(Command::new("ld")
        .current_dir(w)
        .args(words(&inst.compel(&["ldflags"])))
        .args(["-o", "parasite.po", "parasite.o"])
        .args(words(&inst.compel(&["plugins"]))));
    run(Command::new(inst.usr().join("bin/compel"))
        .current_dir(w)
        .args(["hgen", "-f", "parasite.po", "-o", "parasite.h"]));

    // The host: pkg-config only.
    let rpath = format!("-Wl,-rpath,{}", inst.usr().join("lib").display());
    let mut args = words("-O2 -Wall -Werror -o host host.c");
    args.extend(words(&inst.pkg_config(&["--cflags", "--libs", "compel"])));
    args.push(rpath.clone());
    gcc(w, &args);

    let mut v = Victim::spawn(w.join("victim"), &[]).unwrap();
    let pid = v.pid();
    v.expect_line("ready ", T).unwrap();
    wait_state(pid, "S", T);
    let out = run(Command::new(w.join("host")).arg(pid.to_string()));
    assert_eq!(out, format!("setsid {pid}\n"));
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(v.expect_line("sid", T).unwrap(), format!("sid {pid}"));
    v.close_stdin();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));

    // libcriu, linked with pkg-config, talking to the installed criu.
    let mut args = words("-O2 -Wall -Werror -o client client.c");
    args.extend(words(&inst.pkg_config(&["--cflags", "--libs", "criu"])));
    args.push(rpath);
    gcc(w, &args);
    let out = run(Command::new(w.join("client")).arg(inst.usr().join("sbin/criu")));
    let version: i32 = out
        .trim()
        .strip_prefix("version ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(version > 0, "{out}");
    inst.uninstall();
}

/// Every `--long` option the binary's `--help` (and each command's) names.
fn help_options(bin: &Path, commands: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut texts = vec![run(Command::new(bin).arg("--help"))];
    for c in commands {
        texts.push(run(Command::new(bin).args([c, "--help"])));
    }
    for t in texts {
        for w in t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if w.len() > 2 && w.starts_with("--") && !w.starts_with("---") {
                out.insert(w.to_owned());
            }
        }
    }
    out
}

fn man_renders(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--warnings=all", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.is_empty(),
        "{}: {err}",
        page.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_pages_list_every_option_and_render() {
    let inst = Installed::new();
    let man = inst.usr().join("share/man");

    // criu(8): every row of the option table criu parses.
    let page = std::fs::read_to_string(man.join("man8/criu.8")).unwrap();
    let text = man_renders(&man.join("man8/criu.8"));
    let specs: Vec<criu::OptionSpec> = criu::option_specs().collect();
    assert!(specs.len() > 50, "{}", specs.len());
    for s in &specs {
        let roff = format!("\\-\\-{}", s.long.replace('-', "\\-"));
        assert!(page.contains(&roff), "criu.8 lacks --{}", s.long);
        assert!(
            text.contains(&format!("--{}", s.long)),
            "rendered criu.8 lacks --{}",
            s.long
        );
        if let Some(c) = s.short {
            assert!(text.contains(&format!("-{c}, --{}", s.long)), "-{c}");
        }
        if s.negatable {
            assert!(
                text.contains(&format!("--no-{}", s.long)),
                "--no-{}",
                s.long
            );
        }
    }
    for want in [
        "COMMANDS",
        "OPTIONS",
        "ACTION SCRIPTS",
        "CRTOOLS_SCRIPT_ACTION",
        "EXAMPLES",
        "EXIT STATUS",
    ] {
        assert!(text.contains(want), "criu.8 lacks {want}");
    }

    // compel(1) and crit(1): every option their clap parsers print in --help.
    for (bin, page, commands) in [
        (
            "bin/compel",
            "man1/compel.1",
            &[
                "syscall", "hgen", "pack", "cflags", "ldflags", "plugins", "includes", "libs",
            ][..],
        ),
        (
            "bin/crit",
            "man1/crit.1",
            &["decode", "encode", "info", "x", "show"][..],
        ),
    ] {
        let text = man_renders(&man.join(page));
        let opts = help_options(&inst.usr().join(bin), commands);
        assert!(opts.len() > 3, "{bin}: {opts:?}");
        for o in opts {
            assert!(text.contains(&o), "{page} lacks {o}");
        }
        for c in commands {
            assert!(
                text.contains(&format!("\n       {c}")),
                "{page} lacks command {c}"
            );
        }
        assert!(
            !text.contains("\n       generate"),
            "{page} shows the hidden command"
        );
    }
    inst.uninstall();
}

#[test]
fn bash_completions_load_and_complete_options_and_commands() {
    let inst = Installed::new();
    let dir = inst.usr().join("share/bash-completion/completions");
    let complete = |prog: &str, words: &[&str]| -> String {
        let script = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _{prog}; echo \"${{COMPREPLY[*]}}\"",
            dir.join(prog).display(),
            words.join(" "),
            words.len() - 1
        );
        run(Command::new("bash").args(["--norc", "-c", &script]))
            .trim()
            .to_owned()
    };
    assert_eq!(complete("criu", &["criu", "--tre"]), "--tree");
    assert_eq!(complete("criu", &["criu", "res"]), "restore");
    assert_eq!(
        complete("criu", &["criu", "--no-default-con"]),
        "--no-default-config"
    );
    assert_eq!(complete("compel", &["compel", "hg"]), "hgen");
    assert_eq!(
        complete("compel", &["compel", "hgen", "--outp"]),
        "--output"
    );
    assert_eq!(complete("crit", &["crit", "sh"]), "show");
    assert_eq!(complete("crit", &["crit", "show", "--no"]), "--nopl");
    inst.uninstall();
}

#[test]
fn deb_installs_into_a_dpkg_root_runs_and_removes_cleanly() {
    built();
    let deb = bin_dir().parent().unwrap().join(format!(
        "compel-criu_{}_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    let _ = std::fs::remove_file(&deb);
    make(&["deb", "DEB_FLAGS=-Zgzip -z1"]);
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: compel-criu"), "{info}");
    assert!(info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))));

    // A dpkg database of our own, so the machine's packages are not touched.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        run(Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args([
                "--force-depends",
                "--force-script-chrootless",
                "--force-not-root",
            ])
            .args(args))
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    let v = run(Command::new(r.join("usr/sbin/criu")).arg("--version"));
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    assert_eq!(
        run(Command::new(r.join("usr/bin/compel")).arg("plugins")).trim(),
        r.join("usr/lib/compel/libcompel_plugins.a")
            .display()
            .to_string()
    );
    man_renders(&r.join("usr/share/man/man8/criu.8.gz"));
    dpkg(&["-r", "compel-criu"]);
    let left: Vec<String> = files_under(&r.join("usr")).into_iter().collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_file(&deb).unwrap();
}
