//! `crit`: decode, encode and explore CRIU checkpoint images.
//!
//! A thin command line over the `criu-images` crate (the format layer), compatible with CRIU's
//! own `crit`: the JSON it prints has the same shape (field names, hex and flag formatting, enum
//! names, base64 payloads, the `"magic"` key), so scripts written for CRIU's crit work with it,
//! and `encode` turns that JSON back into the identical binary image.
//!
//! ```text
//! crit decode [-i IN] [-o OUT] [--pretty]   binary image -> JSON (stdin/stdout by default)
//! crit encode [-i IN] [-o OUT]              JSON -> binary image
//! crit show IN [--nopl]                     decode --pretty to stdout (--nopl: payload sizes only)
//! crit info IN                              {"magic": ..., "count": entries}; raw pages-N.img too
//! crit x DIR ps|fds|mems|rss                explore an image directory: process tree, open
//!                                           files, memory maps, resident (saved) pages
//! ```
//!
//! Example: `crit show /tmp/img/core-42.img`, or to edit an image,
//! `crit decode -i fs-42.img --pretty -o fs.json`, edit, `crit encode -i fs.json -o fs-42.img`.
//!
//! Errors are one line on stderr naming the file and the offset (or JSON location) at fault,
//! and the exit status is 1.
#![forbid(unsafe_code)]

mod explore;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use criu_images::json::{self, DecodeOptions, JsonError};
use criu_images::{ImageError, pagemap::PAGE_SIZE};

/// CRiu Image Tool.
#[derive(Parser, Debug)]
#[command(
    name = "crit",
    version,
    about = "CRiu Image Tool: decode, encode and explore CRIU images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Convert a criu image from binary to JSON.
    Decode {
        /// Multiline with indents and some numerical fields in field-specific format.
        #[arg(long)]
        pretty: bool,
        /// Image in binary format to decode (stdin by default).
        #[arg(short = 'i', long = "in")]
        input: Option<PathBuf>,
        /// Where to put the JSON (stdout by default).
        #[arg(short = 'o', long = "out")]
        output: Option<PathBuf>,
    },
    /// Convert a criu image from JSON to binary.
    Encode {
        /// Image in JSON to encode (stdin by default).
        #[arg(short = 'i', long = "in")]
        input: Option<PathBuf>,
        /// Where to put the binary image (stdout by default).
        #[arg(short = 'o', long = "out")]
        output: Option<PathBuf>,
    },
    /// Show information about an image: its type and number of entries.
    Info {
        /// The image file.
        #[arg(value_name = "IN")]
        input: PathBuf,
    },
    /// Explore an image directory.
    X {
        /// The image directory.
        dir: PathBuf,
        /// What to show.
        what: Explorer,
    },
    /// Convert a criu image from binary to human-readable JSON.
    Show {
        /// The image file.
        #[arg(value_name = "IN")]
        input: PathBuf,
        /// Do not show entry payloads, only their sizes.
        #[arg(long)]
        nopl: bool,
    },
    /// Print this program's man page (roff) or shell completion (bash, zsh, fish), generated from this parser.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generate,
    },
}

/// What `crit generate` prints.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Generate {
    /// crit(1) in roff.
    Man,
    /// A bash completion script.
    Bash,
    /// A zsh completion script.
    Zsh,
    /// A fish completion script.
    Fish,
}

/// crit(1), from the parser above.
fn page() -> clidoc::Page {
    let mut page = clidoc::Page::from_clap(&Cli::command(), "1");
    page.summary = "decode, encode and explore CRIU checkpoint images".to_owned();
    page.description = vec![
        "crit turns the binary images criu writes into JSON and back, and explores an image \
         directory (process tree, files, memory maps, saved pages). Its JSON has the shape of \
         CRIU's crit, so scripts written for it work."
            .to_owned(),
        "For x, the second argument is one of ps, fds, mems, rss.".to_owned(),
    ];
    page.sections = vec![
        (
            "Examples".to_owned(),
            vec![
                "  crit show /tmp/img/core-42.img\n  \
                 crit decode -i fs-42.img --pretty -o fs.json\n  \
                 crit encode -i fs.json -o fs-42.img\n  \
                 crit x /tmp/img ps"
                    .to_owned(),
            ],
        ),
        (
            "Exit status".to_owned(),
            vec![
                "0 on success; 1 on an error, printed as one line on stderr naming the file \
                 and the offset at fault; 2 on a usage error."
                    .to_owned(),
            ],
        ),
    ];
    page
}

/// The explorers of `crit x`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Explorer {
    /// Process tree with pid, pgid, sid and comm.
    Ps,
    /// Each task's file descriptors with paths, and its cwd and root.
    Fds,
    /// Each task's memory map.
    Mems,
    /// Each task's saved (resident) pages against its memory map.
    Rss,
}

fn read_input(input: Option<&Path>) -> Result<(Vec<u8>, PathBuf)> {
    let mut buf = Vec::new();
    match input {
        Some(p) => {
            buf = std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
            Ok((buf, p.to_path_buf()))
        }
        None => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .context("<stdin>: cannot read")?;
            Ok((buf, PathBuf::from("<stdin>")))
        }
    }
}

fn write_output(output: Option<&Path>, data: &[u8]) -> Result<()> {
    match output {
        Some(p) => {
            std::fs::write(p, data).with_context(|| format!("{}: cannot write", p.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)
                .and_then(|()| out.flush())
                .context("<stdout>: cannot write")
        }
    }
}

fn decode(input: Option<&Path>, output: Option<&Path>, opts: DecodeOptions) -> Result<()> {
    let (bytes, name) = read_input(input)?;
    let doc = json::decode_image(&bytes, &name, opts)?;
    let mut text = json::to_crit_string(&doc, opts.pretty);
    if output.is_none() {
        text.push('\n');
    }
    write_output(output, text.as_bytes())
}

fn encode(input: Option<&Path>, output: Option<&Path>) -> Result<()> {
    let (text, name) = read_input(input)?;
    let doc = json::parse_json(&text, &name)?;
    let bytes = json::encode_image(&doc, &name)?;
    if output.is_none() && std::io::stdout().is_terminal() {
        anyhow::bail!("refusing to write a binary image to a terminal: use -o FILE or a pipe");
    }
    write_output(output, &bytes)
}

fn is_raw_pages(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("pages-") && n.ends_with(".img"))
}

fn info(input: &Path) -> Result<()> {
    let (bytes, name) = read_input(Some(input))?;
    let doc = match json::info(&bytes, &name) {
        Ok(d) => d,
        Err(JsonError::Image(ImageError::UnknownMagic { .. })) if is_raw_pages(input) => {
            // Raw page contents: no magic, no entries; report the pages they hold.
            let mut m = serde_json::Map::new();
            m.insert("magic".into(), "PAGES".into());
            m.insert("count".into(), (bytes.len() as u64 / PAGE_SIZE).into());
            m.insert("size".into(), (bytes.len() as u64).into());
            if !(bytes.len() as u64).is_multiple_of(PAGE_SIZE) {
                anyhow::bail!(
                    "{}: offset {}: raw pages image is not a whole number of pages",
                    name.display(),
                    bytes.len() as u64 / PAGE_SIZE * PAGE_SIZE
                );
            }
            serde_json::Value::Object(m)
        }
        Err(e) => return Err(e.into()),
    };
    let mut text = json::to_crit_string(&doc, true);
    text.push('\n');
    write_output(None, text.as_bytes())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Decode {
            pretty,
            input,
            output,
        } => decode(
            input.as_deref(),
            output.as_deref(),
            DecodeOptions {
                pretty,
                no_payload: false,
            },
        ),
        Cmd::Encode { input, output } => encode(input.as_deref(), output.as_deref()),
        Cmd::Info { input } => info(&input),
        Cmd::Show { input, nopl } => decode(
            Some(&input),
            None,
            DecodeOptions {
                pretty: true,
                no_payload: nopl,
            },
        ),
        Cmd::X { dir, what } => {
            let mut out = Vec::new();
            let x = explore::Explorer::new(&dir);
            match what {
                Explorer::Ps => x.ps(&mut out)?,
                Explorer::Fds => x.fds(&mut out)?,
                Explorer::Mems => x.mems(&mut out)?,
                Explorer::Rss => x.rss(&mut out)?,
            }
            write_output(None, &out)
        }
        Cmd::Generate { what } => {
            let page = page();
            let text = match what {
                Generate::Man => page.roff(),
                Generate::Bash => page.bash(),
                Generate::Zsh => page.zsh(),
                Generate::Fish => page.fish(),
            };
            write_output(None, text.as_bytes())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined with ": ".
            let _ = writeln!(std::io::stderr(), "crit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_crit_spellings() {
        let c = Cli::try_parse_from(["crit", "decode", "-i", "a.img", "--pretty", "-o", "b.json"])
            .unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Decode {
                pretty: true,
                input: Some(_),
                output: Some(_)
            }
        ));
        let c = Cli::try_parse_from(["crit", "encode", "--in", "a.json"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Encode {
                input: Some(_),
                output: None
            }
        ));
        let c = Cli::try_parse_from(["crit", "x", "/d", "rss"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::X {
                what: Explorer::Rss,
                ..
            }
        ));
        let c = Cli::try_parse_from(["crit", "show", "a.img", "--nopl"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Show { nopl: true, .. }));
        assert!(Cli::try_parse_from(["crit", "x", "/d", "bogus"]).is_err());
        assert!(Cli::try_parse_from(["crit", "info"]).is_err());
    }

    #[test]
    fn raw_pages_names() {
        assert!(is_raw_pages(Path::new("/d/pages-1.img")));
        assert!(!is_raw_pages(Path::new("/d/pagemap-1.img")));
    }
}
