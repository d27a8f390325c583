//! compel's memory and socket hygiene at every step of an infection (issue 23), complementing
//! `security_compel.rs` (which looks once, while the parasite runs).
//!
//! `InfectOptions::hook` is called at each `Stage` of the infection's life (state saved,
//! region mapped, blob loaded, parasite started, command sent, `FINI` sent, task returned,
//! cured); at each one the test reads the task's `/proc/PID/maps` and requires that no mapping
//! is writable and executable at once, for both ways of sharing the region (a memfd made in the
//! task, shared anonymous memory opened through `map_files`). After the last stage the
//! region is gone from the maps.
//!
//! The control socket: the host's end of it (and of the log channel) is close-on-exec, so no
//! program the host runs inherits a line into the parasite, and it is an unnamed socket (no
//! path, no abstract name: nothing in `/proc/net/unix` another process could connect to).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use compel::Task;
use compel::infect::{InfectOptions, Parasite, ShmMethod, Stage};
use compel_criu_tests::{Victim, become_subreaper, skip_if_not_root, test_lock, wait_state};
use parasite_blobs::testkit::{self, proto as tk};

const T: Duration = Duration::from_secs(10);
const BLOCK: &str = env!("CARGO_BIN_EXE_victim-block");

/// A stage of the infection and the `W+X` lines of the maps at it.
type Seen = (Stage, Vec<String>);

/// The `W+X` lines of task `pid`'s maps (empty when there are none).
fn writable_and_executable(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| {
            let perms = l.split_whitespace().nth(1).unwrap_or("");
            perms.contains('w') && perms.contains('x')
        })
        .map(str::to_string)
        .collect()
}

/// This process's socket fds and whether each is close-on-exec.
fn own_sockets() -> Vec<(i32, bool)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !link.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap();
        out.push((fd, flags & libc::O_CLOEXEC as u32 != 0));
    }
    out
}

fn infect_and_watch(shm: ShmMethod) {
    let mut v = Victim::spawn(BLOCK, &["read"]).unwrap();
    v.expect_line("ready", T).unwrap();
    let pid = v.pid();
    wait_state(pid, "S", T);
    let seen: Rc<RefCell<Vec<Seen>>> = Rc::default();
    let log = Rc::clone(&seen);
    let opts = InfectOptions {
        shm,
        hook: Some(Box::new(move |s| {
            log.borrow_mut().push((s, writable_and_executable(pid)))
        })),
        ..InfectOptions::default()
    };
    let sockets_before = own_sockets();
    let mut task = Task::seize(pid).unwrap();
    let mut p = Parasite::infect(&mut task, &testkit::blob(), opts).unwrap();
    let base = format!("{:x}-", p.remote_base().get());
    let r: tk::Args = p
        .call_with(
            tk::CMD_ADD,
            &tk::Args {
                a: 40,
                b: 2,
                ..tk::Args::default()
            },
        )
        .unwrap();
    assert_eq!(r.r, 42);
    // The host's ends into the parasite: new sockets, all close-on-exec.
    let new: Vec<(i32, bool)> = own_sockets()
        .into_iter()
        .filter(|s| !sockets_before.iter().any(|b| b.0 == s.0))
        .collect();
    assert!(!new.is_empty(), "no socket to the parasite in the host");
    for (fd, cloexec) in &new {
        assert!(
            cloexec,
            "the host's fd {fd} into the parasite is inherited by exec"
        );
    }
    // Unnamed: none of them is bound to a path or an abstract name.
    for (fd, _) in &new {
        let addr: nix::sys::socket::UnixAddr = nix::sys::socket::getsockname(*fd).unwrap();
        assert!(
            addr.path().is_none() && addr.as_abstract().is_none(),
            "the host's socket {fd} has a name: {addr:?}"
        );
    }
    p.cure().unwrap();
    task.detach().unwrap();
    let seen = seen.borrow();
    let stages: Vec<Stage> = seen.iter().map(|s| s.0).collect();
    for want in [
        Stage::Saved,
        Stage::Mapped,
        Stage::Loaded,
        Stage::Started,
        Stage::FiniSent,
        Stage::Returned,
        Stage::Cured,
    ] {
        assert!(stages.contains(&want), "no {want:?} stage in {stages:?}");
    }
    assert!(
        stages.iter().any(|s| matches!(s, Stage::CommandSent(_))),
        "{stages:?}"
    );
    for (stage, wx) in seen.iter() {
        assert!(
            wx.is_empty(),
            "{shm:?}: writable and executable at {stage:?}: {wx:#?}"
        );
    }
    // Cured: the region is gone.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps.lines().any(|l| l.starts_with(&base)),
        "the parasite's region is still mapped"
    );
    v.write_stdin(b"x\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got x"));
    v.expect_eof_exit(T);
}

#[test]
fn no_mapping_is_writable_and_executable_at_any_stage_with_a_memfd() {
    let _g = test_lock();
    become_subreaper();
    infect_and_watch(ShmMethod::Memfd);
}

#[test]
fn no_mapping_is_writable_and_executable_at_any_stage_with_map_files() {
    skip_if_not_root!("no_mapping_is_writable_and_executable_at_any_stage_with_map_files");
    let _g = test_lock();
    become_subreaper();
    infect_and_watch(ShmMethod::MapFiles);
}
