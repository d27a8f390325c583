//! `join_ns` over RPC (`criu_opts.join_ns`: `ns`, `ns_file`, `extra_opt`, what libcriu's
//! `criu_join_ns_add` sends): the restored tree goes into the given namespace instead of a new
//! one, as with `--join-ns` on the command line; a kind criu cannot join is refused by name.

use std::os::fd::AsRawFd;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, Swrk, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    skip_if_not_root, spawn_uts_holder, test_lock, uts_ns, wait_exit_timeout,
};
use criu_images::pb::{CriuOpts, CriuReq, CriuReqType, JoinNamespace};

fn restore_request(dir: &std::fs::File, ns: &str, file: String, log: &str) -> CriuReq {
    CriuReq {
        r#type: CriuReqType::Restore as i32,
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some(log.into()),
            log_level: Some(4),
            join_ns: vec![JoinNamespace {
                ns: ns.into(),
                ns_file: file,
                extra_opt: None,
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn join_ns_over_rpc_puts_the_tree_into_a_given_uts_namespace() {
    skip_if_not_root!("join_ns_over_rpc_puts_the_tree_into_a_given_uts_namespace");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let outer = uts_ns(std::process::id() as i32).to_string();
    let (mut v, said) = dir.spawn_victim(
        &criu_victim("ns-uts"),
        &[
            dir.ready.to_str().unwrap(),
            "crtest-rpc",
            "crtest.rpc",
            &outer,
        ],
        None,
        Duration::from_secs(10),
    );
    let pids = ready_numbers(&said, 1);
    let _child = Spawned::guard(pids[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = wait_exit_timeout(pids[1], Duration::from_secs(5));
    // A namespace to join, held by a sleeper.
    let holder = spawn_uts_holder();
    let images = std::fs::File::open(&dir.img).unwrap();
    let log = |name: &str| std::fs::read_to_string(dir.img.join(name)).unwrap_or_default();

    // A kind criu cannot join: refused by name, nothing restored.
    let s = Swrk::start(Duration::from_secs(20));
    let r = s.call(&restore_request(
        &images,
        "bogus",
        "/proc/1/ns/user".into(),
        "restore0.log",
    ));
    assert!(!r.success, "joining a bogus namespace was accepted");
    assert!(
        log("restore0.log").contains("unknown namespace kind \"bogus\""),
        "{}",
        log("restore0.log")
    );
    let _ = s.finish();
    assert!(!std::path::Path::new(&format!("/proc/{}", pids[0])).exists());

    let s = Swrk::start(Duration::from_secs(20));
    let file = format!("/proc/{}/ns/uts", holder.pid());
    let r = s.call(&restore_request(&images, "uts", file, "restore.log"));
    let root = Spawned::guard(pids[0]);
    assert!(r.success, "{r:?}\n{}", log("restore.log"));
    assert_eq!(r.restore.map(|x| x.pid), Some(pids[0]));
    assert_eq!(s.finish(), Some(0));
    assert_eq!(
        uts_ns(pids[0]),
        uts_ns(holder.pid()),
        "the root's uts namespace"
    );
    assert_eq!(
        uts_ns(pids[1]),
        uts_ns(holder.pid()),
        "the child's uts namespace"
    );
    drop(root);
}
