//! The `criu` command line as tools drive it: `check`, options and their odd spellings, the log,
//! configuration files.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use compel_criu_tests::{stderr_text, stdout_text, workspace_bin};

fn criu_in(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(workspace_bin("criu", "criu"));
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("CRIU_CONFIG_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn criu(args: &[&str]) -> Output {
    criu_in(args, &[])
}

#[test]
fn check_says_looks_good() {
    let o = criu(&["check"]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert_eq!(stdout_text(&o), "Looks good.\n");
}

#[test]
fn check_features() {
    let o = criu(&["check", "--feature", "seccomp_filters"]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert_eq!(stdout_text(&o), "seccomp_filters is supported\n");
    let o = criu(&["check", "--feature=clone3_set_tid"]);
    assert!(o.status.success());
    // No soft-dirty here, but userfaultfd write-protect tracking, which pre-dump uses.
    let o = criu(&["check", "--feature", "mem_dirty_track"]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert_eq!(stdout_text(&o), "mem_dirty_track is supported\n");
    // Lazy pages are handled (a userfaultfd with the non-cooperative events).
    let o = criu(&["check", "--feature", "uffd-noncoop"]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert_eq!(stdout_text(&o), "uffd-noncoop is supported\n");
    // Tun devices are not handled yet.
    let o = criu(&["check", "--feature", "tun"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_text(&o).contains("tun is not supported"),
        "{}",
        stderr_text(&o)
    );
    let o = criu(&["check", "--feature", "no_such_feature"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_text(&o).contains("unknown feature no_such_feature"));
    let o = criu(&["check", "--feature", "list"]);
    assert!(stdout_text(&o).contains("timens") && stdout_text(&o).contains("pidfd_store"));
}

#[test]
fn help_version_and_bad_usage() {
    let o = criu(&["--help"]);
    assert!(o.status.success());
    assert!(stdout_text(&o).contains("criu dump"));
    let o = criu(&["-V"]);
    assert!(o.status.success());
    assert!(stdout_text(&o).starts_with("Version: "));
    let o = criu(&["check", "--bogus-option"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_text(&o).contains("unrecognized option '--bogus-option'"));
    let o = criu(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_text(&o).contains("unknown command"));
    let o = criu(&["dump", "extra", "-D", "/tmp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_text(&o).contains("excessive parameter"));
    let o = criu(&[]);
    assert_eq!(o.status.code(), Some(1));
    let d = tempfile::tempdir().unwrap();
    let o = criu(&["dump", "-D", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_text(&o).contains("-t PID"), "{}", stderr_text(&o));
}

fn log_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn log_file_is_relative_to_the_work_dir_and_timestamped() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("work");
    std::fs::create_dir(&w).unwrap();
    let o = criu(&["check", "-W", w.to_str().unwrap(), "-o", "check.log", "-v4"]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let lines = log_lines(&w.join("check.log"));
    assert!(lines.len() >= 3, "{lines:?}");
    let pid_field = |l: &str| l.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
    for l in &lines {
        let b = l.as_bytes();
        assert!(b[0] == b'(' && b[3] == b'.' && b[10] == b')', "{l}");
        assert!(pid_field(l).is_some(), "no pid in {l}");
    }
    // -v0 (and the -verbosity=0 spelling) logs nothing; -v2 (default) no debug lines.
    for quiet in ["-v0", "-verbosity=0", "--verbosity=0"] {
        let o = criu(&["check", "-W", w.to_str().unwrap(), "-o", "quiet.log", quiet]);
        assert!(o.status.success());
        assert_eq!(
            std::fs::read_to_string(w.join("quiet.log")).unwrap(),
            "",
            "{quiet}"
        );
    }
    let o = criu(&["check", "-W", w.to_str().unwrap(), "-o", "default.log"]);
    assert!(o.status.success());
    assert!(
        !std::fs::read_to_string(w.join("default.log"))
            .unwrap()
            .contains("DEBUG")
    );
    // Options real runtimes pass are accepted and logged.
    let o = criu(&[
        "check",
        "-W",
        w.to_str().unwrap(),
        "-o",
        "opts.log",
        "-v4",
        "--manage-cgroups=ignore",
        "--tcp-established",
        "--file-locks",
        "--ext-unix-sk",
        "--evasive-devices",
        "-j",
        "--timeout",
        "30",
        "--no-default-config",
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let log = std::fs::read_to_string(w.join("opts.log")).unwrap();
    // The ones that change nothing here are said to (the others act on dumps and restores).
    assert!(
        log.contains("option --evasive-devices accepted, it changes nothing here"),
        "{log}"
    );
}

#[test]
fn configuration_files() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir_all(home.join(".criu")).unwrap();
    let w = d.path().join("w");
    std::fs::create_dir(&w).unwrap();
    std::fs::write(
        home.join(".criu/default.conf"),
        format!(
            "# user defaults\nwork-dir {}\nlog-file home.log\nverbosity 4\n",
            w.display()
        ),
    )
    .unwrap();
    // $HOME/.criu/default.conf is read.
    let o = criu_in(&["check"], &[("HOME", &home)]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert!(
        log_lines(&w.join("home.log"))
            .iter()
            .any(|l| l.contains("DEBUG"))
    );
    // --no-default-config skips it.
    std::fs::remove_file(w.join("home.log")).unwrap();
    let o = criu_in(
        &["check", "--no-default-config", "-W", w.to_str().unwrap()],
        &[("HOME", &home)],
    );
    assert!(o.status.success());
    assert!(!w.join("home.log").exists());
    // CRIU_CONFIG_FILE is read after the default files and overrides them.
    let env_cfg = d.path().join("env.conf");
    std::fs::write(&env_cfg, "log-file \"env file.log\"\n").unwrap();
    let o = criu_in(
        &["check"],
        &[("HOME", &home), ("CRIU_CONFIG_FILE", &env_cfg)],
    );
    assert!(o.status.success());
    assert!(w.join("env file.log").exists());
    assert!(!w.join("home.log").exists());
    // --config FILE is read (and the default files are not); the command line wins over it.
    let cfg = d.path().join("cmd.conf");
    std::fs::write(
        &cfg,
        format!("work-dir {}\nlog-file cfg.log\n", w.display()),
    )
    .unwrap();
    let o = criu_in(
        &["check", "--config", cfg.to_str().unwrap()],
        &[("HOME", &home)],
    );
    assert!(o.status.success());
    assert!(w.join("cfg.log").exists());
    assert!(!w.join("home.log").exists());
    let o = criu_in(
        &["check", "--config", cfg.to_str().unwrap(), "-o", "cli.log"],
        &[("HOME", &home)],
    );
    assert!(o.status.success());
    assert!(w.join("cli.log").exists());
    // A broken configuration file is an error that names it.
    std::fs::write(&cfg, "log-file \"unterminated\n").unwrap();
    let o = criu_in(
        &["check", "--config", cfg.to_str().unwrap()],
        &[("HOME", &home)],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_text(&o).contains("cmd.conf"), "{}", stderr_text(&o));
}

/// A restore from a directory without images says which file is missing and why, once: the
/// printed chain of causes does not repeat itself.
#[test]
fn restore_from_an_empty_directory_says_what_is_missing_once() {
    let d = tempfile::tempdir().unwrap();
    let o = criu(&["restore", "-D", d.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr_text(&o);
    assert!(
        err.contains("inventory.img: open failed: No such file or directory"),
        "{err}"
    );
    assert_eq!(err.matches("open failed").count(), 1, "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}
