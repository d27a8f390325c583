//! The `criu` command line: parse options, set up the work dir and the log, run the command.
// Unsafe code is refused; the one exception (ignoring SIGPIPE at startup) says why.
#![deny(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use criu::{
    Command, DirRef, DumpOptions, InsideMethod, Options, OptionsError, PidMethod, RestoreOptions,
    USAGE,
};

fn main() -> ExitCode {
    // Writing into a closed log pipe must fail a write, not kill criu.
    // SAFETY: setting SIGPIPE to SIG_IGN installs no handler code and is process-wide state
    // this single-threaded startup owns.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN)
    };
    let opts = match Options::parse(std::env::args()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("Error: {e}");
            eprint!("{USAGE}");
            return ExitCode::from(1);
        }
    };
    if opts.help {
        print!("{USAGE}");
        println!(
            "\nFeatures for check --feature (or list):\n  {}",
            criu::feature_names().join(", ")
        );
        return ExitCode::SUCCESS;
    }
    if opts.version {
        // CRIU's first line, with the release matched (what clients parse), then ours.
        println!("Version: {}", criu::service::criu_release());
        println!("Implementation: {}", criu::service::implementation());
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = opts.command else {
        eprintln!("Error: {}", OptionsError::NoCommand);
        eprint!("{USAGE}");
        return ExitCode::from(1);
    };
    match run(cmd, opts) {
        Ok(code) => code,
        Err((e, logged)) => {
            match logged {
                Logged::Not => eprintln!("Error: {e:#}"),
                Logged::ToStderr => tracing::error!("{e:#}"),
                Logged::To(path) => {
                    tracing::error!("{e:#}");
                    eprintln!("Error: {e:#} (log: {})", path.display());
                }
            }
            ExitCode::from(1)
        }
    }
}

/// Where a failure has been (or will be) logged.
enum Logged {
    /// The log is not set up yet.
    Not,
    /// The log is stderr.
    ToStderr,
    /// The log is this file.
    To(std::path::PathBuf),
}

type Failure = (anyhow::Error, Logged);

fn run(cmd: Command, mut opts: Options) -> Result<ExitCode, Failure> {
    // The images directory is resolved before changing into the work dir, as CRIU opens it first.
    if matches!(
        cmd,
        Command::Dump
            | Command::PreDump
            | Command::Restore
            | Command::CpuInfo
            | Command::PageServer
            | Command::LazyPages
            | Command::Dedup
    ) {
        let dir = std::fs::canonicalize(opts.images_dir.path())
            .with_context(|| format!("couldn't open image dir {}", opts.images_dir))
            .map_err(|e| (e, Logged::Not))?;
        if opts.work_dir.is_none() {
            opts.work_dir = Some(DirRef::Path(dir.clone()));
        }
        opts.images_dir = DirRef::Path(dir);
    }
    // The work dir is made absolute before changing into it, so that paths derived from it
    // later (pidfile, log) do not apply it twice.
    let work = std::fs::canonicalize(opts.effective_work_dir())
        .with_context(|| {
            format!(
                "can't change directory to {}",
                opts.effective_work_dir().display()
            )
        })
        .map_err(|e| (e, Logged::Not))?;
    opts.work_dir = Some(DirRef::Path(work.clone()));
    std::env::set_current_dir(&work)
        .with_context(|| format!("can't change directory to {}", work.display()))
        .map_err(|e| (e, Logged::Not))?;
    let sink = criu::LogSink::open(opts.log_file.as_deref())
        .context("cannot set up the log")
        .map_err(|e| (e, Logged::Not))?;
    criu::install_log(opts.log_level, &sink);
    // Progress of big dumps and restores on a terminal, at the default verbosity and above.
    if opts.log_level >= 2
        && matches!(cmd, Command::Dump | Command::PreDump | Command::Restore)
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        criu::stats::set_progress(show_progress);
    }
    let logged_to = sink.path().map(|p| work.join(p));
    let fail = |e: anyhow::Error| match &logged_to {
        Some(p) => (e, Logged::To(p.clone())),
        None => (e, Logged::ToStderr),
    };
    tracing::info!(
        "criu {} {} (work dir {})",
        env!("CARGO_PKG_VERSION"),
        cmd.word(),
        work.display()
    );
    for (name, value) in &opts.ignored {
        match value {
            Some(v) => tracing::info!("option --{name}={v} accepted, it changes nothing here"),
            None => tracing::info!("option --{name} accepted, it changes nothing here"),
        }
    }
    criu::apply_privilege(&mut opts).map_err(|e| fail(e.into()))?;
    match cmd {
        Command::Check => {
            if let Some(f) = &opts.feature {
                if f == "list" {
                    // CRIU 3.x's `--feature list`: every name followed by a space.
                    let mut line = String::new();
                    for n in criu::feature_names() {
                        line.push_str(n);
                        line.push(' ');
                    }
                    println!("{line}");
                    return Ok(ExitCode::SUCCESS);
                }
                criu::check_feature(f).map_err(|e| fail(e.into()))?;
                println!("{f} is supported");
            } else {
                criu::check_all().map_err(|e| fail(e.into()))?;
                println!("Looks good.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump => {
            let mut dopts = DumpOptions::from_options(&opts);
            if std::env::var(criu::INSIDE_METHOD_ENV).is_ok_and(|m| m == "syscalls") {
                dopts.inside_method = InsideMethod::Syscalls;
            }
            dopts.validate().map_err(|e| fail(e.into()))?;
            let scripts =
                criu::ActionScripts::new(opts.action_scripts.clone(), &dopts.images_dir, &sink)
                    .context("setting up action scripts")
                    .map_err(fail)?;
            criu::dump(&dopts, Some(&scripts))
                .map_err(|e| fail(anyhow::Error::new(e).context("dump failed")))?;
            tracing::info!("Dumping finished successfully");
            if opts.display_stats {
                criu::stats::show(&dopts.images_dir, criu::stats::Kind::Dump);
            }
            if let Some(kb) = peak_rss_kb() {
                tracing::debug!("peak memory of this criu: {kb} kB (VmHWM)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::PreDump => {
            let dopts = DumpOptions::from_options(&opts);
            dopts.validate().map_err(|e| fail(e.into()))?;
            let s = criu::pre_dump(&dopts)
                .map_err(|e| fail(anyhow::Error::new(e).context("pre-dump failed")))?;
            tracing::info!(
                "Pre-dumping finished successfully ({} pages written, frozen {} us)",
                s.pages_written,
                s.frozen_us
            );
            if opts.display_stats {
                criu::stats::show(&dopts.images_dir, criu::stats::Kind::Dump);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::PageServer => {
            let so = criu::PageServerOptions {
                dir: opts.images_dir.path(),
                address: opts.live.address.clone(),
                port: opts.live.port.unwrap_or(0),
                daemon: opts.restore_detached,
                status_fd: opts.status_fd,
                pidfile: opts.pidfile.clone(),
                prev_images_dir: opts.prev_images_dir.clone(),
                lazy: opts.live.lazy_pages,
                tls: opts.live.tls.clone(),
            };
            let scripts = criu::ActionScripts::new(opts.action_scripts.clone(), &so.dir, &sink)
                .context("setting up action scripts")
                .map_err(fail)?;
            criu::run_page_server_with(&so, &scripts).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::LazyPages => {
            let lo = criu::lazy::LazyOptions {
                dir: opts.images_dir.path(),
                work_dir: opts.effective_work_dir(),
                page_server: opts.live.page_server.then(|| {
                    (
                        opts.live
                            .address
                            .clone()
                            .unwrap_or_else(|| "127.0.0.1".into()),
                        opts.live.port.unwrap_or(0),
                    )
                }),
                tls: opts.live.tls.clone(),
                status_fd: opts.status_fd,
                push: std::env::var("CRIU_LAZY_PUSH").as_deref() != Ok("0"),
            };
            let scripts = criu::ActionScripts::new(opts.action_scripts.clone(), &lo.dir, &sink)
                .context("setting up action scripts")
                .map_err(fail)?;
            criu::lazy::run_lazy_pages_with(&lo, &scripts)
                .map_err(|e| fail(anyhow::Error::new(e).context("lazy-pages failed")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dedup => {
            let st = criu::dedup(&opts.images_dir.path())
                .map_err(|e| fail(anyhow::Error::new(e).context("dedup failed")))?;
            tracing::info!(
                "Deduplication finished ({} bytes punched out of the parent images)",
                st.punched
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore => restore(&opts, &sink).map_err(fail),
        Command::Swrk => {
            let fd = opts.command_args.first().map_or("", String::as_str);
            criu::service::swrk(fd).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Service => {
            let address = opts.live.address.as_deref().map(std::path::Path::new);
            let service = criu::service::ServiceOptions {
                address: criu::service::address_or_default(address),
                daemon: opts.restore_detached,
                pidfile: opts.pidfile.clone(),
            };
            criu::service::run(&service, &sink).map_err(|e| fail(e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CpuInfo => {
            let dir = opts.images_dir.path();
            match opts.command_args.first().map(String::as_str) {
                Some("dump") => criu::cpuinfo::dump(&dir).map_err(|e| fail(e.into()))?,
                Some("check") => criu::cpuinfo::check(&dir, criu::cpuinfo::check_cap(opts.cpu_cap))
                    .map_err(|e| fail(e.into()))?,
                other => {
                    return Err(fail(anyhow::anyhow!(
                        "cpuinfo: {} (dump or check)",
                        other.map_or("no action".to_string(), |a| format!("unknown action {a}"))
                    )));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--display-stats`: the statistics the run wrote into the images directory, on stdout.
/// Draws a dump's or restore's progress on one line of the terminal (stderr), ended when the
/// copy is done.
fn show_progress(p: criu::stats::Progress) {
    use std::io::Write;
    let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
    let end = if p.done >= p.total { "\n" } else { "" };
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\rpid {}: {} of {} pages {} ({pct} %){end}",
        p.pid,
        p.done,
        p.total,
        p.kind.word()
    );
    let _ = err.flush();
}

/// This process's peak resident memory (`VmHWM`), in kB.
fn peak_rss_kb() -> Option<u64> {
    let st = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = st.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn restore(opts: &Options, sink: &criu::LogSink) -> anyhow::Result<ExitCode> {
    let mut ropts = RestoreOptions::from_options(opts);
    restore_switches_from_env(&mut ropts);
    // `--exec-cmd`: criu does not wait for the tree; it becomes the command, the tree's parent.
    if !opts.exec_cmd.is_empty() {
        ropts.detach = true;
    }
    ropts.validate()?;
    let scripts = criu::ActionScripts::new(opts.action_scripts.clone(), &ropts.images_dir, sink)
        .context("setting up action scripts")?;
    let outcome = criu::restore(&ropts, Some(&scripts)).context("restore failed")?;
    if opts.display_stats {
        criu::stats::show(&ropts.images_dir, criu::stats::Kind::Restore);
    }
    tracing::info!("restore finished: {outcome:?}");
    if let Some((prog, args)) = opts.exec_cmd.split_first() {
        use std::os::unix::process::CommandExt;
        tracing::info!("exec {:?}", opts.exec_cmd);
        let e = std::process::Command::new(prog).args(args).exec();
        return Err(anyhow::Error::new(e).context(format!("--exec-cmd: exec {prog}")));
    }
    Ok(ExitCode::from(outcome.exit_code().clamp(0, 255) as u8))
}

/// The environment variables that tune a restore (for measuring and debugging), mapped into
/// its options: `CRIU_RESTORE_FILL_HELPER=0`, `CRIU_RESTORE_UFFD=0`, `CRIU_RESTORE_THP=0`,
/// `CRIU_RESTORE_PID_METHOD=ns_last_pid`, `CRIU_RESTORER_BLOB=FILE`.
fn restore_switches_from_env(r: &mut RestoreOptions) {
    let zero = |name: &str| std::env::var_os(name).is_some_and(|v| v == "0");
    if zero("CRIU_RESTORE_FILL_HELPER") {
        r.fill_helpers = false;
    }
    if zero("CRIU_RESTORE_UFFD") {
        r.uffd = false;
    }
    if zero("CRIU_RESTORE_THP") {
        r.huge_pages = false;
    }
    if std::env::var_os("CRIU_RESTORE_PID_METHOD").is_some_and(|m| m == "ns_last_pid") {
        r.pid_method = PidMethod::NsLastPid;
    }
    if let Some(blob) = std::env::var_os("CRIU_RESTORER_BLOB") {
        r.restorer_blob = Some(blob.into());
    }
}
