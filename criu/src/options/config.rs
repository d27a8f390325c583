//! Configuration files: which ones criu reads (see the [module docs](super) for the order) and
//! how one file's text becomes command-line style arguments.

use std::path::{Path, PathBuf};

use super::OptionsError;

/// CRIU's default configuration files, in reading order, for a given `$HOME`.
pub fn default_config_files(home: Option<&Path>) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/criu/default.conf")];
    if let Some(h) = home {
        v.push(h.join(".criu/default.conf"));
    }
    v
}

/// Parses one configuration file's text into command-line style arguments (`--name`, `value`).
///
/// # Errors
/// [`OptionsError::ConfigSyntax`] for a lone quote or an unterminated quoted value.
pub fn parse_config_text(path: &Path, text: &str) -> Result<Vec<String>, OptionsError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i + 1..].trim_start()),
            None => (line.trim_end(), ""),
        };
        out.push(format!("--{name}"));
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let bad = || OptionsError::ConfigSyntax {
            path: path.to_path_buf(),
            line: n + 1,
        };
        if let Some(q) = rest.strip_prefix('"') {
            // A quoted value: `\"` escapes a quote; anything after the closing quote must be
            // blank or a comment.
            let mut val = String::new();
            let mut chars = q.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('"') => val.push('"'),
                        Some(o) => {
                            val.push('\\');
                            val.push(o);
                        }
                        None => val.push('\\'),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    o => val.push(o),
                }
            }
            if !closed {
                return Err(bad());
            }
            let tail = chars.as_str().trim_start();
            if !(tail.is_empty() || tail.starts_with('#')) {
                return Err(bad());
            }
            out.push(val);
        } else {
            let word = rest.split([' ', '\t']).next().unwrap_or("");
            let tail = rest[word.len()..].trim_start();
            if !(tail.is_empty() || tail.starts_with('#')) {
                return Err(bad());
            }
            out.push(word.to_string());
        }
    }
    Ok(out)
}

pub(super) fn read_config(
    path: &Path,
    must_exist: bool,
) -> Result<Option<Vec<String>>, OptionsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config_text(path, &text).map(Some),
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(OptionsError::ConfigRead {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl super::Options {
    /// Applies the configuration file `path` over these options, as if its lines came after
    /// what set them (CRIU reads an RPC request's `config_file` this way, after the request's
    /// own options). Returns whether the file was there: a missing one is skipped.
    ///
    /// # Errors
    /// [`OptionsError::ConfigRead`] for a file that exists but cannot be read,
    /// [`OptionsError::ConfigSyntax`] and the option errors of the command line for its lines.
    pub fn apply_config_file(&mut self, path: &Path) -> Result<bool, OptionsError> {
        match read_config(path, false)? {
            Some(args) => {
                self.apply(&args, false)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FinalState, Options};
    use super::*;

    #[test]
    fn config_text() {
        let t = "# comment\n\n  tree 42\nleave-running\nlog-file \"a \\\"b\\\" c\" # trailing\n\tverbosity\t4\n";
        let args = parse_config_text(Path::new("x"), t).unwrap();
        assert_eq!(
            args,
            vec![
                "--tree",
                "42",
                "--leave-running",
                "--log-file",
                "a \"b\" c",
                "--verbosity",
                "4"
            ]
        );
        assert!(parse_config_text(Path::new("x"), "log-file \"open\n").is_err());
        assert!(parse_config_text(Path::new("x"), "tree 1 2\n").is_err());
    }

    #[test]
    fn config_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".criu")).unwrap();
        std::fs::write(home.join(".criu/default.conf"), "tree 7\nverbosity 1\n").unwrap();
        let envf = dir.path().join("env.conf");
        std::fs::write(&envf, "verbosity 3\nleave-running\n").unwrap();
        let cmdf = dir.path().join("cmd.conf");
        std::fs::write(&cmdf, "timeout 99\n").unwrap();
        let run = |args: &[&str]| {
            let mut v = vec!["criu".to_string()];
            v.extend(args.iter().map(|s| s.to_string()));
            Options::parse_with(v, Some(&home), Some(&envf)).unwrap()
        };
        // User file, then env file (overrides verbosity), then the command line.
        let o = run(&["dump"]);
        assert_eq!(
            (o.tree, o.log_level, o.final_state),
            (Some(7), 3, FinalState::Alive)
        );
        let o = run(&["dump", "-t", "8"]);
        assert_eq!(o.tree, Some(8));
        // --no-default-config skips the user file but not CRIU_CONFIG_FILE.
        let o = run(&["dump", "--no-default-config"]);
        assert_eq!((o.tree, o.log_level), (None, 3));
        // --config also skips the default files.
        let cfg = cmdf.to_str().unwrap();
        let o = run(&["dump", "--config", cfg]);
        assert_eq!((o.tree, o.timeout, o.log_level), (None, 99, 3));
        // A missing --config file is an error; a missing default file is not.
        let mut v = vec![
            "criu".to_string(),
            "dump".into(),
            "--config=/nonexistent/x".into(),
        ];
        v.truncate(3);
        let e = Options::parse_with(v, Some(&home), None).unwrap_err();
        assert!(matches!(e, OptionsError::ConfigRead { .. }), "{e}");
        assert_eq!(e.errno(), libc::ENOENT);
    }
}
