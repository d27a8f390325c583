//! `criu dump` then `criu restore` of a process holding memfds: names, sizes, content (with a
//! hole and a page of zeros), seals, access modes, positions, close-on-exec, and descriptors
//! sharing one inode or one description all come back; the images are CRIU's (`memfd.img`,
//! `pagemap-shmem-SHMID.img`). A memfd also mapped shared comes back too (mappings in detail:
//! `criu_memfd_map.rs`).

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, test_lock, wait_file,
    workspace_bin,
};

fn spawn_victim(out: &Path, ready: &Path, log: &Path, extra: &[&str]) -> Spawned {
    let mut args = vec![out.to_str().unwrap(), ready.to_str().unwrap()];
    args.extend_from_slice(extra);
    Spawned::spawn(env!("CARGO_BIN_EXE_criu-victim-memfd"), &args, log, None)
}

/// Without a dump the victim's own check passes (so a `bad` after restore is the restore's).
#[test]
fn memfd_victim_checks_pass_untouched() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let v = spawn_victim(&out, &ready, &d.path().join("victim.log"), &[]);
    wait_file(&ready, Duration::from_secs(10));
    assert_eq!(ask_check(v.pid(), &out), "ok");
}

#[test]
fn memfd_content_seals_and_sharing_survive_dump_and_restore() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = spawn_victim(&out, &ready, &d.path().join("victim.log"), &[]);
    wait_file(&ready, Duration::from_secs(10));
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let inodes = criu_images::ImageDir::new(&img)
        .read_memfd()
        .expect("read memfd.img");
    let mut names: Vec<&str> = inodes.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["kinds-memfd", "kinds-plain"], "one inode per memfd");
    let big = inodes.iter().find(|i| i.name == "kinds-memfd").unwrap();
    assert_eq!(big.size, 6 * 4096 + 100);
    assert_eq!(big.seals, (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) as u32);
    let pm = criu_images::Pagemap::read(img.join(format!("pagemap-shmem-{}.img", big.shmid)))
        .expect("read the memfd's pagemap-shmem");
    // Pages 0..3, 5 and the tail page 6: the hole (3) and the page of zeros (4) are not saved.
    assert_eq!(pm.present_pages(), 5, "pages saved: {:?}", pm.entries);
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap_or_default();
    assert!(log.contains("memfd"), "the -v4 log does not name the memfd");
    // Our crit prints it in CRIU's JSON shape (as CRIU's crit printed the 4.2 fixture).
    let crit = std::process::Command::new(workspace_bin("crit", "crit"))
        .args(["decode", "--pretty", "-i"])
        .arg(img.join("memfd.img"))
        .output()
        .expect("run crit");
    let json = String::from_utf8_lossy(&crit.stdout);
    assert!(
        json.contains("\"magic\": \"MEMFD_INODE\"")
            && json.contains("\"name\": \"kinds-memfd\"")
            && json.contains("\"seals\": \"F_SEAL_SHRINK | F_SEAL_GROW\""),
        "crit decode of memfd.img: {json}"
    );
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(ask_check(r.pid(), &out), "ok");
}

#[test]
fn memfd_mapped_shared_comes_back() {
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let (out, ready) = (d.path().join("out"), d.path().join("ready"));
    let mut v = spawn_victim(&out, &ready, &d.path().join("victim.log"), &["map"]);
    wait_file(&ready, Duration::from_secs(10));
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid(), "restored with another pid");
    assert_eq!(ask_check(r.pid(), &out), "ok");
}
