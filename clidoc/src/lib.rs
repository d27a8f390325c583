//! Man pages and bash completions generated from the option tables the binaries parse, so that
//! an option added to a parser appears in its page and its completion (one source of truth).
//!
//! `criu` describes its table with [`Opt`] rows (its parser is its own); `compel` and `crit`
//! hand over their `clap::Command` ([`Page::from_clap`]).
#![forbid(unsafe_code)]

use std::fmt::Write;

/// One option as a page lists it.
#[derive(Clone, Debug, Default)]
pub struct Opt {
    /// The long name without dashes.
    pub long: String,
    /// The short letter.
    pub short: Option<char>,
    /// The argument's name, if it takes one.
    pub value: Option<String>,
    /// The argument may be left out (`--opt[=VALUE]`).
    pub optional_value: bool,
    /// A `--no-NAME` form exists.
    pub negatable: bool,
    /// What it does (may be empty).
    pub help: String,
}

impl Opt {
    /// How the option is written, e.g. `-t, --tree PID` or `--cpu-cap[=CAPS]`.
    pub fn spec(&self) -> String {
        let mut s = String::new();
        if let Some(c) = self.short {
            let _ = write!(s, "-{c}, ");
        }
        let _ = write!(s, "--{}", self.long);
        match (&self.value, self.optional_value) {
            (Some(v), true) => {
                let _ = write!(s, "[={v}]");
            }
            (Some(v), false) => {
                let _ = write!(s, " {v}");
            }
            (None, _) => {}
        }
        if self.negatable {
            let _ = write!(s, ", --no-{}", self.long);
        }
        s
    }
}

/// A man page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The program's name.
    pub name: String,
    /// The manual section (`1`, `8`).
    pub section: String,
    /// The version shown in the footer.
    pub version: String,
    /// One line for NAME.
    pub summary: String,
    /// SYNOPSIS lines.
    pub synopsis: Vec<String>,
    /// DESCRIPTION paragraphs.
    pub description: Vec<String>,
    /// COMMANDS: (name, what it does).
    pub commands: Vec<(String, String)>,
    /// OPTIONS.
    pub options: Vec<Opt>,
    /// Further sections: (title, paragraphs).
    pub sections: Vec<(String, Vec<String>)>,
}

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a request.
pub fn escape(text: &str) -> String {
    let s = text.replace('\\', "\\e");
    let mut out = String::new();
    for (i, line) in s.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(line);
    }
    out
}

/// A dash in an option name, as roff wants it (a real minus, so it can be searched and copied).
fn dashes(text: &str) -> String {
    escape(text).replace('-', "\\-")
}

impl Page {
    /// The page in roff (man macros).
    pub fn roff(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(
            r,
            ".TH {} {} \"\" \"{} {}\" \"User Commands\"",
            self.name.to_uppercase(),
            self.section,
            self.name,
            self.version
        );
        let _ = writeln!(r, ".SH NAME\n{} \\- {}", self.name, escape(&self.summary));
        r.push_str(".SH SYNOPSIS\n");
        for (i, line) in self.synopsis.iter().enumerate() {
            if i > 0 {
                r.push_str(".br\n");
            }
            let _ = writeln!(r, "{}", dashes(line));
        }
        paragraphs(&mut r, "DESCRIPTION", &self.description);
        if !self.commands.is_empty() {
            r.push_str(".SH COMMANDS\n");
            for (name, help) in &self.commands {
                let _ = writeln!(r, ".TP\n.B {}\n{}", escape(name), escape(help));
            }
        }
        if !self.options.is_empty() {
            r.push_str(".SH OPTIONS\n");
            for o in &self.options {
                let _ = writeln!(r, ".TP\n.B {}", dashes(&o.spec()));
                if !o.help.is_empty() {
                    let _ = writeln!(r, "{}", escape(&o.help));
                }
            }
        }
        for (title, paras) in &self.sections {
            paragraphs(&mut r, title, paras);
        }
        r
    }

    /// A page for a clap command: its about text, its subcommands (hidden ones left out) and
    /// the options of the command and of every subcommand.
    pub fn from_clap(cmd: &clap::Command, section: &str) -> Self {
        let name = cmd.get_name().to_owned();
        let mut page = Page {
            name: name.clone(),
            section: section.to_owned(),
            version: cmd.get_version().unwrap_or_default().to_owned(),
            summary: cmd.get_about().map(|a| a.to_string()).unwrap_or_default(),
            ..Page::default()
        };
        page.options = clap_opts(cmd);
        let subs: Vec<&clap::Command> =
            cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
        if subs.is_empty() {
            page.synopsis.push(format!("{name} [OPTIONS]"));
        } else {
            page.synopsis
                .push(format!("{name} [OPTIONS] COMMAND [ARGS]"));
        }
        for sub in subs {
            let mut usage = sub.get_name().to_owned();
            for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if a.is_positional() {
                    let v = a
                        .get_value_names()
                        .and_then(|v| v.first())
                        .map_or_else(|| a.get_id().as_str().to_uppercase(), ToString::to_string);
                    usage.push(' ');
                    usage.push_str(&if a.is_required_set() {
                        v
                    } else {
                        format!("[{v}]")
                    });
                } else if !a.is_global_set() && a.get_long().is_some() {
                    usage.push_str(" [OPTIONS]");
                    break;
                }
            }
            let help = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            page.commands.push((usage, help));
            for o in clap_opts(sub) {
                if !page.options.iter().any(|p| p.long == o.long) {
                    page.options.push(o);
                }
            }
        }
        page
    }

    /// A bash completion script: the commands as the first word, the options everywhere.
    pub fn bash(&self) -> String {
        let words: Vec<String> = self
            .commands
            .iter()
            .filter_map(|(c, _)| c.split_whitespace().next().map(str::to_owned))
            .collect();
        let mut opts = Vec::new();
        for o in &self.options {
            if let Some(c) = o.short {
                opts.push(format!("-{c}"));
            }
            opts.push(format!("--{}", o.long));
            if o.negatable {
                opts.push(format!("--no-{}", o.long));
            }
        }
        let func = format!("_{}", self.name.replace('-', "_"));
        format!(
            "# bash completion for {name}, generated from its option table\n\
             {func}() {{\n\
             \tlocal cur=${{COMP_WORDS[COMP_CWORD]}} i have_cmd=\n\
             \tfor ((i = 1; i < COMP_CWORD; i++)); do\n\
             \t\tcase \" {words} \" in *\" ${{COMP_WORDS[i]}} \"*) have_cmd=1 ;; esac\n\
             \tdone\n\
             \tif [[ $cur == -* ]]; then\n\
             \t\tCOMPREPLY=($(compgen -W '{opts}' -- \"$cur\"))\n\
             \telif [[ -z $have_cmd ]]; then\n\
             \t\tCOMPREPLY=($(compgen -W '{words}' -- \"$cur\"))\n\
             \telse\n\
             \t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n\
             \tfi\n\
             }}\n\
             complete -o filenames -F {func} {name}\n",
            name = self.name,
            words = words.join(" "),
            opts = opts.join(" "),
        )
    }
}

/// The first sentence of a help text, on one line.
fn first_sentence(help: &str) -> String {
    let one = help.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.find(". ") {
        Some(i) => one[..i].to_owned(),
        None => one.trim_end_matches('.').to_owned(),
    }
}

/// The first word of each command line (`dump`, `restore`, ...) with its help.
fn command_words(page: &Page) -> Vec<(String, String)> {
    page.commands
        .iter()
        .filter_map(|(c, h)| Some((c.split_whitespace().next()?.to_owned(), first_sentence(h))))
        .collect()
}

impl Page {
    /// A zsh completion script (`#compdef`, for a directory on `$fpath` as `_NAME`): the
    /// commands with their help as the first word, every option with its help and whether it
    /// takes a value, file names elsewhere.
    pub fn zsh(&self) -> String {
        // Inside '...' in zsh: a quote is '\''; inside an _arguments spec [..] and :..: need
        // their brackets and colons escaped.
        let q = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('[', "\\[")
                .replace(']', "\\]")
                .replace(':', "\\:")
                .replace('\'', "'\\''")
        };
        let func = format!("_{}", self.name.replace('-', "_"));
        let mut r = format!(
            "#compdef {name}\n# zsh completion for {name}, generated from its option table\n\n\
             {func}() {{\n\tlocal -a commands\n\tcommands=(\n",
            name = self.name
        );
        for (w, h) in command_words(self) {
            let _ = writeln!(r, "\t\t'{}:{}'", q(&w), q(&h));
        }
        r.push_str("\t)\n\t_arguments -s \\\n");
        for o in &self.options {
            let help = q(&first_sentence(&o.help));
            let arg = match (&o.value, o.optional_value) {
                (Some(v), true) => format!("::{}:_files", q(v)),
                (Some(v), false) => format!(":{}:_files", q(v)),
                (None, _) => String::new(),
            };
            let eq = match (&o.value, o.optional_value) {
                (Some(_), true) => "=-",
                (Some(_), false) => "=",
                (None, _) => "",
            };
            let _ = writeln!(r, "\t\t'--{}{eq}[{help}]{arg}' \\", o.long);
            if let Some(c) = o.short {
                let plus = if o.value.is_some() && !o.optional_value {
                    "+"
                } else {
                    ""
                };
                let _ = writeln!(r, "\t\t'-{c}{plus}[{help}]{arg}' \\");
            }
            if o.negatable {
                let _ = writeln!(r, "\t\t'--no-{}[{help}]' \\", o.long);
            }
        }
        if self.commands.is_empty() {
            r.push_str("\t\t'*:file:_files'\n");
        } else {
            r.push_str("\t\t'1:command:{_describe command commands}' \\\n\t\t'*:file:_files'\n");
        }
        let _ = write!(r, "}}\n\n{func} \"$@\"\n");
        r
    }

    /// A fish completion script (for `vendor_completions.d/NAME.fish`): the commands with their
    /// help while none is given, every option with its help and whether it takes a value.
    pub fn fish(&self) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        let name = &self.name;
        let mut r = format!("# fish completion for {name}, generated from its option table\n");
        let words = command_words(self);
        if !words.is_empty() {
            let all: Vec<&str> = words.iter().map(|(w, _)| w.as_str()).collect();
            let cond = q(&format!(
                "not __fish_seen_subcommand_from {}",
                all.join(" ")
            ));
            for (w, h) in &words {
                let _ = writeln!(r, "complete -c {name} -f -n {cond} -a {} -d {}", q(w), q(h));
            }
        }
        for o in &self.options {
            let mut line = format!("complete -c {name}");
            if let Some(c) = o.short {
                let _ = write!(line, " -s {c}");
            }
            let _ = write!(line, " -l {}", o.long);
            if o.value.is_some() && !o.optional_value {
                line.push_str(" -r");
            }
            let help = first_sentence(&o.help);
            if !help.is_empty() {
                let _ = write!(line, " -d {}", q(&help));
            }
            let _ = writeln!(r, "{line}");
            if o.negatable {
                let _ = writeln!(r, "complete -c {name} -l no-{} -d {}", o.long, q(&help));
            }
        }
        r
    }
}

fn paragraphs(r: &mut String, title: &str, paras: &[String]) {
    if paras.is_empty() {
        return;
    }
    let _ = writeln!(r, ".SH {}", escape(&title.to_uppercase()));
    for (i, p) in paras.iter().enumerate() {
        if i > 0 {
            r.push_str(".PP\n");
        }
        if p.starts_with("  ") {
            // Indented text (examples) is kept as written.
            let _ = writeln!(r, ".nf\n{}\n.fi", escape(p));
        } else {
            let _ = writeln!(r, "{}", escape(p));
        }
    }
}

/// The named options of a clap command (not positionals, not hidden ones), with `--help` and
/// `--version` that clap adds.
fn clap_opts(cmd: &clap::Command) -> Vec<Opt> {
    let mut cmd = cmd.clone();
    cmd.build();
    cmd.get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .filter_map(|a| {
            let long = a.get_long()?.to_owned();
            let takes = a.get_num_args().is_some_and(|n| n.takes_values());
            let value = takes.then(|| {
                a.get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| a.get_id().as_str().to_uppercase(), ToString::to_string)
            });
            Some(Opt {
                long,
                short: a.get_short(),
                value,
                optional_value: a.get_num_args().is_some_and(|n| n.min_values() == 0) && takes,
                negatable: false,
                help: a.get_help().map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_requests_and_backslashes() {
        assert_eq!(escape(".x\n'y\na\\b"), "\\&.x\n\\&'y\na\\eb");
    }

    #[test]
    fn option_specs() {
        let o = Opt {
            long: "tree".into(),
            short: Some('t'),
            value: Some("PID".into()),
            ..Opt::default()
        };
        assert_eq!(o.spec(), "-t, --tree PID");
        let o = Opt {
            long: "cpu-cap".into(),
            value: Some("CAPS".into()),
            optional_value: true,
            ..Opt::default()
        };
        assert_eq!(o.spec(), "--cpu-cap[=CAPS]");
    }

    #[test]
    fn clap_pages_list_every_option_of_every_subcommand() {
        let cmd = clap::Command::new("demo")
            .about("a demo")
            .arg(
                clap::Arg::new("verbose")
                    .short('v')
                    .long("verbose")
                    .action(clap::ArgAction::SetTrue),
            )
            .subcommand(
                clap::Command::new("run").about("run it").arg(
                    clap::Arg::new("out")
                        .short('o')
                        .long("out")
                        .value_name("FILE"),
                ),
            );
        let page = Page::from_clap(&cmd, "1");
        let roff = page.roff();
        assert!(roff.contains(".B \\-v, \\-\\-verbose\n"), "{roff}");
        assert!(roff.contains(".B \\-o, \\-\\-out FILE\n"), "{roff}");
        assert!(roff.contains(".B run [OPTIONS]\nrun it\n"), "{roff}");
        let bash = page.bash();
        assert!(bash.contains("--out") && bash.contains("complete -o filenames -F _demo demo"));
    }
}
