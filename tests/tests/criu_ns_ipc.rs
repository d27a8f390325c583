//! `criu dump` then `criu restore` of a tree in an IPC namespace of its own: its SysV shared
//! memory segments (with content), message queues (with messages) and semaphore sets (with
//! values) come back under their ids and keys, in a new namespace the tree shares; `crit`
//! reads the images. A POSIX message queue in the namespace is refused by name.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu_dump, criu_victim, dump_and_reap, pid_exists,
    ready_numbers, restore_and_check, skip_if_not_root, test_lock, wait_exit_timeout,
    workspace_bin,
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

#[test]
fn posix_queue_in_the_ipc_namespace_is_refused_by_name() {
    skip_if_not_root!("posix_queue_in_the_ipc_namespace_is_refused_by_name");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    // A shell in a new IPC namespace that opens a POSIX queue and sleeps.
    let script = format!(
        "python3 -c 'import os,ctypes; l=ctypes.CDLL(\"librt.so.1\", use_errno=True); \
         assert l.mq_open(b\"/crtest\", os.O_CREAT|os.O_RDWR, 0o600, None) >= 0; \
         open(\"{r}.tmp\",\"w\").write(\"ready %d\" % os.getpid()); \
         os.rename(\"{r}.tmp\", \"{r}\"); import time; time.sleep(600)'",
        r = dir.ready.display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--ipc", "sh", "-c", &format!("exec {script}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let v = Spawned::from_child(cmd.spawn().unwrap());
    let said = compel_criu_tests::wait_file(&dir.ready, Duration::from_secs(20));
    let pid = ready_numbers(&said, 1)[0];
    assert_eq!(pid, v.pid());
    let o = criu_dump(pid, &dir.img, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "dumped a POSIX queue");
    assert!(err.contains("POSIX message queue /crtest"), "{err}");
    assert!(pid_exists(pid), "the victim died");
    assert!(!dir.img.join("inventory.img").exists());
}
