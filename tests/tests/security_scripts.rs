//! Action scripts inherit none of criu's descriptors (issue 23): a script given to a real
//! `criu dump` and `criu restore` lists `/proc/self/fd` at every stage; each listing holds only
//! stdout (the listing itself) and stderr (criu's log), stdin being closed, and no images
//! directory, log, socket or pipe of criu's. The images directory is reached through
//! `CRTOOLS_IMAGE_DIR` (`/proc/<criu>/fd/N`), as documented.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, become_subreaper, dump_and_reap, open_dir, restore_detached, test_lock, wait_file,
};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// The descriptors each stage's script had, by stage: `fd -> target`, without the one `ls`
/// opens to read the directory.
fn listings(dir: &Path) -> BTreeMap<String, BTreeMap<u32, String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stage) = name.strip_prefix("fds-") else {
            continue;
        };
        let text = std::fs::read_to_string(e.path()).unwrap();
        let mut fds = BTreeMap::new();
        for line in text.lines() {
            // "lr-x------ 1 root root 64 ... 3 -> /proc/1234/fd"
            let Some((left, target)) = line.split_once(" -> ") else {
                continue;
            };
            let fd: u32 = left.split_whitespace().last().unwrap().parse().unwrap();
            if target.starts_with("/proc/") && target.ends_with("/fd") {
                continue;
            }
            fds.insert(fd, target.to_string());
        }
        out.insert(stage.to_string(), fds);
    }
    out
}

#[test]
fn action_scripts_get_only_their_standard_descriptors() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let lists = d.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    let script = d.path().join("list-fds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -d \"$CRTOOLS_IMAGE_DIR\" ] || echo no-image-dir >&2\n\
             exec ls -l /proc/self/fd/ > {}/fds-$CRTOOLS_SCRIPT_ACTION\n",
            lists.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = script.to_str().unwrap();

    let (out, ready) = (d.path().join("count"), d.path().join("ready"));
    let mut v = Spawned::spawn(
        COUNTER,
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &["--action-script", s]);
    let pid = restore_detached(&img, &["--action-script", s]);
    let _r = Spawned::guard(pid);

    let got = listings(&lists);
    for stage in [
        "pre-dump",
        "post-dump",
        "pre-restore",
        "post-restore",
        "pre-resume",
        "post-resume",
    ] {
        let fds = got
            .get(stage)
            .unwrap_or_else(|| panic!("no listing for {stage}: {got:?}"));
        let numbers: Vec<u32> = fds.keys().copied().collect();
        assert_eq!(numbers, [1, 2], "{stage}: {fds:?}");
        assert!(
            fds[&1].ends_with(&format!("fds-{stage}")),
            "{stage}: {fds:?}"
        );
        // stderr is criu's log, the one documented descriptor.
        assert!(fds[&2].ends_with(".log"), "{stage}: {fds:?}");
    }
    for log in ["dump.log", "restore.log"] {
        let text = std::fs::read_to_string(img.join(log)).unwrap();
        assert!(!text.contains("no-image-dir"), "{log}: {text}");
    }
}
