//! `criu dump` then `criu restore` of a process holding descriptors of its own (criu's)
//! namespaces: they come back as descriptors of the same namespaces. A descriptor of another
//! namespace is refused by name, and the tree runs on.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, is_root, pid_exists,
    restore_detached, test_lock, wait_file,
};

fn spawn_victim(d: &Path, extra: &[&str]) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(extra);
    let v = Spawned::spawn(
        env!("CARGO_BIN_EXE_criu-victim-nsfd"),
        &args,
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

#[test]
fn own_namespace_fds_survive_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_victim(d.path(), &[]);
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
    std::fs::remove_file(d.path().join("out")).unwrap();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let files = criu_images::ImageDir::new(&img)
        .read_files()
        .expect("read files.img");
    let mut kinds: Vec<u32> = files
        .iter()
        .filter_map(|e| e.nsf.as_ref())
        .map(|n| n.ns_cflag)
        .collect();
    kinds.sort();
    let mut want = vec![libc::CLONE_NEWNET as u32, libc::CLONE_NEWUTS as u32];
    want.sort();
    assert_eq!(kinds, want);
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
}

#[test]
fn other_namespace_fd_is_refused_by_name_and_the_tree_runs_on() {
    if !is_root() {
        eprintln!("skipped: making a network namespace needs root");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let v = spawn_victim(d.path(), &["other"]);
    let img = d.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log"]);
    assert!(!o.status.success(), "another namespace's fd was dumped");
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    let text = format!("{}{log}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("net:[") && text.contains("namespace other than criu's"),
        "the refusal does not name the namespace fd: {text}"
    );
    assert!(pid_exists(v.pid()), "the victim died");
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
}
