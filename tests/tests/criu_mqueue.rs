//! POSIX message queues of a dumped IPC namespace come back with their messages (CRIU 4.2
//! refuses them): a process in an IPC namespace of its own makes a queue with five slots of 64
//! bytes, mode 0640, sends three messages of two priorities and closes it; after `criu dump`
//! and `criu restore` a reader in the restored namespace finds the queue with its attributes,
//! mode and messages, in priority order and in order within a priority.

use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu_dump, ready_numbers, restore_detached,
    skip_if_not_root, test_lock, wait_exit_timeout, wait_file,
};

/// ctypes' view of `struct mq_attr` and librt.
const PY_PRELUDE: &str = "import os,ctypes,time,errno; \
    l=ctypes.CDLL('librt.so.1',use_errno=True); \
    A=type('A',(ctypes.Structure,),{'_fields_':[('f',ctypes.c_long),('m',ctypes.c_long),\
    ('s',ctypes.c_long),('c',ctypes.c_long),('r',ctypes.c_long*4)]}); ";

#[test]
fn posix_queue_comes_back_with_its_messages() {
    skip_if_not_root!("posix_queue_comes_back_with_its_messages");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let r = dir.ready.display();
    let script = format!(
        "{PY_PRELUDE}a=A(0,5,64,0); os.umask(0); \
         fd=l.mq_open(b'/crtest', os.O_CREAT|os.O_RDWR, 0o640, ctypes.byref(a)); \
         assert fd>=0, ctypes.get_errno(); \
         [l.mq_send(fd,m,len(m),p) for p,m in [(1,b'low'),(7,b'high'),(1,b'low two')]]; \
         os.close(fd); \
         open('{r}.tmp','w').write('ready %d' % os.getpid()); os.rename('{r}.tmp','{r}'); \
         time.sleep(600)"
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--ipc", "python3", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut v = Spawned::from_child(cmd.spawn().unwrap());
    let said = wait_file(&dir.ready, Duration::from_secs(20));
    let pid = ready_numbers(&said, 1)[0];
    assert_eq!(pid, v.pid());
    let o = criu_dump(pid, &dir.img, &["-o", "dump.log", "-v4"]);
    assert!(
        o.status.success(),
        "criu dump: {}",
        std::fs::read_to_string(dir.img.join("dump.log")).unwrap_or_default()
    );
    let _ = wait_exit_timeout(pid, Duration::from_secs(5));
    v.mark_reaped();
    let saved = std::fs::read_dir(&dir.img)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("ipcns-posixmq-")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .expect("no ipcns-posixmq image");
    assert!(saved.contains("\"crtest\""), "{saved}");
    let root = restore_detached(&dir.img, &[]);
    let _r = Spawned::guard(root);
    assert_eq!(root, pid);
    // Read the queue from inside the restored namespace (this empties it: the victim never
    // looks).
    let reader = format!(
        "{PY_PRELUDE}fd=l.mq_open(b'/crtest', os.O_RDONLY|os.O_NONBLOCK); \
         assert fd>=0, ctypes.get_errno(); a=A(); l.mq_getattr(fd, ctypes.byref(a)); \
         out=['max=%d size=%d cur=%d mode=%o' % (a.m, a.s, a.c, os.fstat(fd).st_mode & 0o777)]; \
         b=ctypes.create_string_buffer(64); p=ctypes.c_uint(); \
         exec('while True:\\n n=l.mq_receive(fd,b,64,ctypes.byref(p))\\n if n<0: break\\n \
         out.append(\"%d:%s\" % (p.value, b.raw[:n].decode()))'); \
         print(' '.join(out))"
    );
    let o = std::process::Command::new("nsenter")
        .args(["-t", &root.to_string(), "--ipc", "python3", "-c", &reader])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "reader: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "max=5 size=64 cur=3 mode=640 7:high 1:low 1:low two"
    );
}
