//! The pycriu calls `criu_rpc_python.rs` does not make, from a Python script written against
//! CRIU's pycriu (`tests/py/pycriu_more.py`) with our `criu/pycriu` on its path:
//!
//! - `use_sk`: a check and a dump (left running) through `criu service`;
//! - `use_fd` and `pre_dump`: the script starts `criu swrk FD` itself and pre-dumps a counter
//!   over that socket (memory written, the counter running on, criu gone after);
//! - `page_server_chld` and `wait_pid`: a page server as criu's child, a dump whose pages go to
//!   it, then `wait_pid` for the page server in the same session.
//!
//! Every test runs as root, under the test lock and as a child subreaper, and kills and reaps
//! what it started.

use std::path::Path;
use std::process::Command;

use compel_criu_tests::rpc_service::Service;
use compel_criu_tests::{
    become_subreaper, counts_on, criu_bin, open_dir, pid_exists, skip_if_not_root, spawn_counter,
    test_lock,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

fn have_python() -> bool {
    // Our pycriu is plain Python (its rpc_pb2 needs no protobuf package).
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: no python3");
    }
    ok
}

/// Runs the script in `mode`; its stdout lines, after asserting it succeeded.
fn script(mode: &str, where_: &Path, dir: &Path, pid: i32, logs: &[&Path]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("python3")
        .arg(root.join("py/pycriu_more.py"))
        .arg(mode)
        .arg(where_)
        .arg(dir)
        .arg(pid.to_string())
        .env("PYTHONPATH", root.join("../criu/pycriu"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut why = format!("{text}{}", String::from_utf8_lossy(&o.stderr));
    for l in logs {
        why.push_str(&std::fs::read_to_string(l).unwrap_or_default());
    }
    assert!(o.status.success(), "{mode}: {why}");
    text.lines().map(str::to_string).collect()
}

fn has_pages(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("pages-"))
}

#[test]
fn use_sk_dumps_through_criu_service() {
    skip_if_not_root!("use_sk_dumps_through_criu_service");
    if !have_python() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let svc = Service::start(d.path(), None);
    let lines = script("sk", &svc.addr, &img, v.pid(), &[&img.join("sk-dump.log")]);
    assert!(lines.iter().any(|l| l == "sk check ok"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "sk dumped restored=False"),
        "{lines:?}"
    );
    assert!(img.join("inventory.img").exists() && has_pages(&img));
    assert!(counts_on(d.path()), "left running, but it stopped");
    drop(svc);
    drop(v);
}

#[test]
fn use_fd_pre_dumps_over_the_script_s_own_swrk_socket() {
    skip_if_not_root!("use_fd_pre_dumps_over_the_script_s_own_swrk_socket");
    if !have_python() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let img = d.path().join("pre");
    std::fs::create_dir(&img).unwrap();
    let v = spawn_counter(COUNTER, d.path(), None);
    let lines = script(
        "fd",
        &criu_bin(),
        &img,
        v.pid(),
        &[&img.join("pre-dump.log")],
    );
    assert!(lines.iter().any(|l| l == "fd pre_dump ok"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "criu exited 0"), "{lines:?}");
    assert!(has_pages(&img), "the pre-dump wrote no pages");
    assert!(counts_on(d.path()), "a pre-dump stopped the victim");
    drop(v);
}

#[test]
fn page_server_chld_takes_a_dump_s_pages_and_wait_pid_reaps_it() {
    skip_if_not_root!("page_server_chld_takes_a_dump_s_pages_and_wait_pid_reaps_it");
    if !have_python() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let base = d.path().join("imgs");
    for sub in ["ps", "img"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    let v = spawn_counter(COUNTER, d.path(), None);
    let lines = script(
        "ps",
        &criu_bin(),
        &base,
        v.pid(),
        &[&base.join("ps/ps.log"), &base.join("img/dump.log")],
    );
    let ps: i32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("page server pid "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        lines.iter().any(|l| l == "dumped to the page server"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "page server exited True 0"),
        "{lines:?}"
    );
    assert!(!pid_exists(ps), "the page server was not reaped");
    // The pages went to the page server, the rest stayed with the dump.
    assert!(has_pages(&base.join("ps")), "no pages at the page server");
    assert!(!has_pages(&base.join("img")), "pages written locally");
    assert!(base.join("img/inventory.img").exists());
    assert!(counts_on(d.path()), "left running, but it stopped");
    drop(v);
}
