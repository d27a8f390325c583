//! `criu-doc man|bash|zsh|fish`: criu(8) in roff, or criu's bash, zsh or fish completion, generated from the option
//! table `criu` parses ([`criu::option_specs`]) and the help text it prints ([`criu::USAGE`]),
//! so an option added to the table appears in both. `make` runs it; it is not installed.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clidoc::{Opt, Page};
use criu::{Command, USAGE};

/// The help of each option and command in [`USAGE`]: (names, argument name, help).
fn usage_entries(section: &str) -> Vec<(Vec<String>, Option<String>, String)> {
    let mut out: Vec<(Vec<String>, Option<String>, String)> = Vec::new();
    let mut inside = false;
    for line in USAGE.lines() {
        if !line.starts_with(' ') {
            inside = line.trim_end_matches(':') == section;
            continue;
        }
        if !inside {
            continue;
        }
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if indent > 2 {
            if let Some(last) = out.last_mut() {
                last.2.push(' ');
                last.2.push_str(body);
            }
            continue;
        }
        let (spec, help) = body.split_once("  ").unwrap_or((body, ""));
        let mut names = Vec::new();
        let mut value = None;
        for word in spec.split(['|', ' ', '[', '=']) {
            if let Some(long) = word.strip_prefix("--") {
                names.push(long.trim_end_matches(']').to_owned());
            } else if !word.starts_with('-')
                && !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '.' || c == ']')
            {
                value.get_or_insert_with(|| word.trim_end_matches(']').to_owned());
            } else if section == "Commands" && !word.starts_with('-') && !word.is_empty() {
                names.push(word.to_owned());
            }
        }
        out.push((names, value, help.trim().to_owned()));
    }
    out
}

fn page() -> Page {
    let options_help = usage_entries("Options");
    let commands_help = usage_entries("Commands");
    let options = criu::option_specs()
        .map(|s| {
            let known = options_help
                .iter()
                .find(|(names, _, _)| names.iter().any(|n| n == s.long));
            Opt {
                long: s.long.to_owned(),
                short: s.short,
                value: s.takes_value.then(|| {
                    known
                        .and_then(|k| k.1.clone())
                        .unwrap_or_else(|| "VALUE".to_owned())
                }),
                optional_value: s.optional_value,
                negatable: s.negatable,
                help: known.map(|k| k.2.clone()).unwrap_or_else(|| {
                    "Accepted as criu(8) spells it; see the README for what this criu does with it."
                        .to_owned()
                }),
            }
        })
        .collect();
    let commands = Command::ALL
        .iter()
        .map(|c| {
            let help = commands_help
                .iter()
                .find(|(names, _, _)| names.iter().any(|n| n == c.word()))
                .map_or_else(|| "not supported yet".to_owned(), |k| k.2.clone());
            (c.word().to_owned(), help)
        })
        .collect();
    Page {
        name: "criu".to_owned(),
        section: "8".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        summary: "checkpoint/restore in userspace".to_owned(),
        synopsis: vec![
            "criu dump|pre-dump -t PID [OPTIONS]".to_owned(),
            "criu restore [OPTIONS]".to_owned(),
            "criu check [--feature FEATURE]".to_owned(),
        ],
        description: vec![
            "criu freezes a running process tree and writes its state (memory, registers, files, \
             sockets, ...) into image files in a directory, and restores a tree from those \
             images, on this machine or another. It speaks CRIU's image format and options, so \
             tools written for CRIU (container runtimes, crit, libcriu) work with it."
                .to_owned(),
            "Options may also come from configuration files: /etc/criu/default.conf and \
             ~/.criu/default.conf, one option per line without the leading dashes, unless \
             --no-default-config or --config FILE is given."
                .to_owned(),
        ],
        commands,
        options,
        sections: vec![
            (
                "Action scripts".to_owned(),
                vec![
                    "Each --action-script program runs at every stage of a dump or restore, \
                     directly (not through a shell), with stdin closed and its output in the \
                     log. A stage fails when a script exits non-zero. Its environment:"
                        .to_owned(),
                    "  CRTOOLS_SCRIPT_ACTION  the stage: pre-dump, post-dump, pre-restore,\n    \
                     post-restore, pre-resume, post-resume, network-lock, network-unlock, ...\n  \
                     CRTOOLS_IMAGE_DIR      the images directory (as /proc/PID/fd/N)\n  \
                     CRTOOLS_INIT_PID       the pid of the tree's root, once known"
                        .to_owned(),
                ],
            ),
            (
                "Examples".to_owned(),
                vec![
                    "  criu check\n  \
                     criu dump -t 1234 -D /tmp/img -j -v4 -o dump.log\n  \
                     criu restore -D /tmp/img -j -d --pidfile /tmp/img/pid\n  \
                     crit x /tmp/img ps"
                        .to_owned(),
                ],
            ),
            (
                "Exit status".to_owned(),
                vec![
                    "0 on success, 1 on any error (the message is on stderr or in the log file)."
                        .to_owned(),
                ],
            ),
            ("See also".to_owned(), vec!["crit(1), compel(1)".to_owned()]),
        ],
    }
}

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("man") => print!("{}", page().roff()),
        Some("bash") => print!("{}", page().bash()),
        Some("zsh") => print!("{}", page().zsh()),
        Some("fish") => print!("{}", page().fish()),
        _ => {
            eprintln!("usage: criu-doc man|bash|zsh|fish");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
