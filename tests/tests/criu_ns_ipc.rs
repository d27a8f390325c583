//! `criu dump` then `criu restore` of a tree in an IPC namespace of its own: its SysV shared
//! memory segments (with content), message queues (with messages) and semaphore sets (with
//! values) come back under their ids and keys, in a new namespace the tree shares; `crit`
//! reads the images. POSIX message queues: `criu_mqueue.rs`.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu_victim, dump_and_reap, ready_numbers,
    restore_and_check, skip_if_not_root, test_lock, wait_exit_timeout, workspace_bin,
};

fn outer() -> String {
    std::fs::metadata("/proc/self/ns/ipc")
        .unwrap()
        .ino()
        .to_string()
}

#[test]
fn sysv_objects_come_back_in_their_ipc_namespace() {
    skip_if_not_root!("sysv_objects_come_back_in_their_ipc_namespace");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let outer = outer();
    let (mut v, said) = dir.spawn_victim(
        &criu_victim("ns-ipc"),
        &[dir.ready.to_str().unwrap(), &outer],
        None,
        Duration::from_secs(10),
    );
    let n = ready_numbers(&said, 1);
    // The child (the dumped one, then the restored one) is killed and reaped whatever happens.
    let _child = Spawned::guard(n[1]);
    dump_and_reap(&mut v, &dir.img, &[]);
    let _ = wait_exit_timeout(n[1], Duration::from_secs(5));
    let d = criu_images::ImageDir::new(&dir.img);
    let id = d.read_ids(n[0] as u32).unwrap().ipc_ns_id.unwrap();
    for f in ["ipcns-var", "ipcns-shm", "ipcns-msg", "ipcns-sem"] {
        let path = dir.img.join(format!("{f}-{id}.img"));
        assert!(path.exists(), "{f}-{id}.img");
        let o = std::process::Command::new(workspace_bin("crit", "crit"))
            .args(["show", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "crit show {f}: {o:?}");
        let text = String::from_utf8_lossy(&o.stdout);
        if f == "ipcns-sem" {
            assert!(text.contains("300"), "{text}");
        }
        if f == "ipcns-msg" {
            assert!(text.contains("\"mtype\": 42"), "{text}");
        }
    }
    restore_and_check(n[0], &dir.img, &dir.ready);
}
