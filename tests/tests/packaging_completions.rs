//! zsh and fish completions generated from the option tables (`criu-doc zsh|fish`,
//! `compel generate zsh|fish`, `crit generate zsh|fish`): each script parses in its shell, the
//! zsh ones register their command with `compinit`, and fish completes commands and options
//! from them (an option added to a parser appears there).

use std::path::Path;
use std::process::Command;

use compel_criu_tests::workspace_bin;

fn has(shell: &str) -> bool {
    Command::new(shell)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn generate(prog: &str, shell: &str) -> String {
    let o = match prog {
        "criu" => Command::new(workspace_bin("criu", "criu-doc"))
            .arg(shell)
            .output()
            .unwrap(),
        "crit" => Command::new(workspace_bin("crit", "crit"))
            .args(["generate", shell])
            .output()
            .unwrap(),
        _ => Command::new(workspace_bin("compel-cli", "compel"))
            .args(["generate", shell])
            .output()
            .unwrap(),
    };
    assert!(o.status.success(), "{prog} {shell}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

fn shell(cmd: &str, script: &str) -> String {
    let o = Command::new(cmd).args(["-c", script]).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} -c {script}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn zsh_completions_parse_and_register() {
    if !has("zsh") {
        eprintln!("skipped: no zsh");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    for prog in ["criu", "crit", "compel"] {
        let text = generate(prog, "zsh");
        assert!(text.starts_with(&format!("#compdef {prog}\n")), "{text}");
        let f = d.path().join(format!("_{prog}"));
        std::fs::write(&f, &text).unwrap();
        shell("zsh", &format!("zsh -n {}", f.display()));
    }
    // The options of the tables are there, with their help.
    let criu = generate("criu", "zsh");
    assert!(criu.contains("'--tree=[checkpoint the process tree rooted at PID]:PID:_files'"));
    assert!(criu.contains("'restore:restore a process tree'"));
    assert!(criu.contains("'cpuinfo:"));
    assert!(generate("compel", "zsh").contains("'--version["));
    let out = shell(
        "zsh",
        &format!(
            "fpath=({} $fpath); autoload -Uz compinit; compinit -u -d {}; \
             print -r -- $_comps[criu] $_comps[crit] $_comps[compel]",
            d.path().display(),
            d.path().join("zcompdump").display()
        ),
    );
    assert_eq!(out.trim(), "_criu _crit _compel");
}

fn fish_complete(dir: &Path, prog: &str, line: &str) -> Vec<String> {
    let out = shell(
        "fish",
        &format!(
            "source {}; complete -C'{line}'",
            dir.join(format!("{prog}.fish")).display()
        ),
    );
    out.lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn fish_completions_complete_commands_and_options() {
    if !has("fish") {
        eprintln!("skipped: no fish");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    for prog in ["criu", "crit", "compel"] {
        std::fs::write(
            d.path().join(format!("{prog}.fish")),
            generate(prog, "fish"),
        )
        .unwrap();
    }
    let cmds = fish_complete(d.path(), "criu", "criu ");
    for c in ["dump", "restore", "check", "cpuinfo", "swrk"] {
        assert!(cmds.iter().any(|x| x == c), "{c} not in {cmds:?}");
    }
    let opts = fish_complete(d.path(), "criu", "criu dump --leave-r");
    assert_eq!(opts, ["--leave-running"]);
    let opts = fish_complete(d.path(), "criu", "criu restore --restore-sib");
    assert_eq!(opts, ["--restore-sibling"]);
    let crit = fish_complete(d.path(), "crit", "crit ");
    assert!(crit.iter().any(|x| x == "decode"), "{crit:?}");
    let compel = fish_complete(d.path(), "compel", "compel ");
    assert!(compel.iter().any(|x| x == "hgen"), "{compel:?}");
}
