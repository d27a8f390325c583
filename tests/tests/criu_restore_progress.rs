//! Progress of a big restore (issue 21): `criu restore` of a 320 MiB process with stderr on a
//! terminal draws "pid ROOT: N of TOTAL pages restored (P %)" there at the default verbosity and
//! above, up to all of them, through the same meter a dump draws its progress with; at `-v1`,
//! or with stderr on a pipe at `-v4`, it draws nothing. The restored process finds every byte
//! of its memory in place.
//!
//! Runs as root, under the test lock and as a child subreaper, and kills and reaps what it
//! started.

use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, assert_ok_log, become_subreaper, criu, criu_on_terminal, dump_and_reap,
    signal, skip_if_not_root, stderr_text, test_lock, wait_file,
};
use nix::sys::signal::Signal;

const MIB: u64 = 320;

/// The pid in the images' pidfile, guarded (killed and reaped on drop).
fn restored(s: &Scratch) -> Spawned {
    let text = std::fs::read_to_string(s.img.join("restored.pid")).expect("read the pidfile");
    let _ = std::fs::remove_file(s.img.join("restored.pid"));
    Spawned::guard(text.trim().parse().expect("a pid in the pidfile"))
}

/// `criu restore -D IMG -d --pidfile restored.pid -o LOG EXTRA...`.
fn restore_args<'a>(img: &'a str, log: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "restore",
        "-D",
        img,
        "-d",
        "--pidfile",
        "restored.pid",
        "-o",
        log,
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn a_big_restore_shows_progress_on_a_terminal_only() {
    skip_if_not_root!("a_big_restore_shows_progress_on_a_terminal_only");
    let _g = test_lock();
    become_subreaper();
    let s = Scratch::new();
    let (mut v, _) = s.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &[&MIB.to_string(), s.ready.to_str().unwrap()],
        None,
        Duration::from_secs(60),
    );
    let pid = v.pid();
    dump_and_reap(&mut v, &s.img, &[]);
    let img = s.img.to_str().unwrap();

    // A terminal, but -v1: nothing drawn.
    let (st, quiet) = criu_on_terminal(&restore_args(img, "r1.log", &["-v1"]));
    assert!(st.success(), "restore -v1: {quiet}");
    drop(restored(&s));
    assert!(
        !quiet.contains("pages restored"),
        "-v1 draws no progress: {quiet:?}"
    );

    // -v4, stderr on a pipe: nothing drawn either.
    let o = criu(&restore_args(img, "r2.log", &["-v4"]));
    assert_ok_log(&o, "criu restore -v4", &s.img.join("r2.log"));
    drop(restored(&s));
    let err = stderr_text(&o);
    assert!(
        !err.contains("pages restored"),
        "no progress without a terminal: {err:?}"
    );

    // The default verbosity on a terminal: the progress, ending at every page.
    let (st, drawn) = criu_on_terminal(&restore_args(img, "r3.log", &[]));
    assert!(
        st.success(),
        "restore: {drawn}\n{}",
        std::fs::read_to_string(s.img.join("r3.log")).unwrap_or_default()
    );
    let back = restored(&s);
    assert_eq!(back.pid(), pid, "restored with its pid");
    let reports: Vec<(u64, u64)> = drawn
        .split(['\r', '\n'])
        .filter(|l| l.contains("pages restored"))
        .map(|l| {
            let rest = l
                .strip_prefix(&format!("pid {pid}: "))
                .unwrap_or_else(|| panic!("report {l:?} names the root"));
            let w: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(w.get(1), Some(&"of"), "{l}");
            (w[0].parse().unwrap(), w[2].parse().unwrap())
        })
        .collect();
    assert!(!reports.is_empty(), "progress drawn: {drawn:?}");
    // The line is ended once all is in (the terminal turns "\n" into "\r\n").
    assert!(
        drawn.replace("\r\n", "\n").ends_with("(100 %)\n"),
        "ended at 100 %: {drawn:?}"
    );
    let total = reports[0].1;
    assert!(total >= MIB * 256, "{total} pages to restore");
    assert!(reports.iter().all(|r| r.1 == total), "{reports:?}");
    assert!(
        reports.windows(2).all(|w| w[0].0 <= w[1].0),
        "never backwards: {reports:?}"
    );
    assert_eq!(reports.last().unwrap().0, total, "{reports:?}");
    // The memory the meter counted is the victim's own, every byte in place (a debug-built
    // victim checks 320 MiB byte by byte: give it time on a loaded machine).
    signal(pid, Signal::SIGUSR1);
    let verdict = wait_file(&s.ready.with_extension("2"), Duration::from_secs(120));
    assert_eq!(verdict.trim(), "check ok");
    drop(back);
}
