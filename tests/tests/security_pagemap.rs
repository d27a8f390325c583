//! Pagemaps as untrusted input: a restore refuses entries that overlap the one before them or
//! lie outside the task's memory areas, with a typed error naming the file and the address,
//! before anything is created (no task with the dumped pid appears).

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, become_subreaper, criu, dump_and_reap, open_dir, pid_exists, stderr_text, test_lock,
    wait_file,
};
use criu_images::{ImageDir, pagemap::PE_PRESENT};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

fn dumped(d: &Path) -> (ImageDir, u32) {
    let (out, ready) = (d.join("count"), d.join("ready"));
    let mut v = Spawned::spawn(
        COUNTER,
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let img = d.join("img");
    dump_and_reap(&mut v, &img, &[]);
    (ImageDir::new(&img), v.pid() as u32)
}

fn restore_fails_with(img: &ImageDir, pid: u32, want: &str) {
    let log = img.path().join("restore.log");
    let _ = std::fs::remove_file(&log);
    let o = criu(&[
        "restore",
        "-D",
        img.path().to_str().unwrap(),
        "-d",
        "-o",
        "restore.log",
    ]);
    let err = stderr_text(&o) + &std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(want), "wanted {want:?}: {err}");
    assert!(err.contains(&format!("pagemap-{pid}.img")), "{err}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(!pid_exists(pid as i32), "a task {pid} was left behind");
}

#[test]
fn overlapping_and_stray_pagemap_entries_are_refused() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let (img, pid) = dumped(d.path());
    let orig = img.read_pagemap(pid).unwrap();
    let present: Vec<usize> = (0..orig.entries.len())
        .filter(|&i| orig.entries[i].effective_flags() & PE_PRESENT != 0)
        .collect();
    assert!(present.len() >= 2, "{orig:?}");

    // An entry repeated: its pages would be written twice.
    let mut pm = orig.clone();
    let k = present[1];
    let dup = pm.entries[k].clone();
    pm.entries.insert(k + 1, dup);
    img.write_pagemap(pid, &pm).unwrap();
    restore_fails_with(&img, pid, "overlap the entry before");

    // One starting inside the previous one.
    let mut pm = orig.clone();
    let prev = pm.entries[present[0]].clone();
    if prev.pages() >= 2 {
        let mut e = prev.clone();
        e.vaddr += 4096;
        e.nr_pages = Some(1);
        pm.entries.insert(present[0] + 1, e);
        img.write_pagemap(pid, &pm).unwrap();
        restore_fails_with(&img, pid, "overlap the entry before");
    }

    // A page where the task has no memory (below mmap_min_addr).
    let mut pm = orig.clone();
    pm.entries
        .insert(0, criu_images::pb::PagemapEntry::new(0x1000, 1, PE_PRESENT));
    img.write_pagemap(pid, &pm).unwrap();
    restore_fails_with(&img, pid, "lie outside the task's areas");

    // A page that is not page-aligned (the image reader refuses it already).
    let mut pm = orig;
    pm.entries[present[0]].vaddr += 8;
    img.write_pagemap(pid, &pm).unwrap();
    restore_fails_with(&img, pid, "not page aligned");
}
