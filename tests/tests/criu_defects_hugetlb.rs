//! Issue 20, item 10: anonymous `MAP_HUGETLB` memory, private and shared, is dumped like other
//! anonymous memory (MAP_HUGETLB and the page size in its VMA flags, as CRIU writes them) and
//! comes back as hugetlb memory with its page size and contents.
//!
//! Each test grows the huge page pool (`/proc/sys/vm/nr_hugepages`) for its victim and gives
//! it back on drop, also when the test fails. Runs as root, under the test lock and as a child
//! subreaper.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    HugePool, Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-defects-left");

/// The victim of `mode` in `d`, ready.
fn spawn(mode: &str, d: &Path) -> Spawned {
    let (out, ready) = (d.join("out"), d.join("ready"));
    let v = Spawned::spawn(
        BIN,
        &[mode, out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    v
}

/// Private hugetlb memory: dumped, restored, still 2 MiB hugetlb pages with the contents
/// the victim wrote (the victim checks from inside; the dump freed its pages for the restore).
#[test]
fn private_hugetlb_memory_comes_back_with_its_page_size_and_contents() {
    skip_if_not_root!("private_hugetlb_memory_comes_back_with_its_page_size_and_contents");
    let _g = test_lock();
    become_subreaper();
    round_trip_in_pool("hugetlb", 2);
}

/// Dumps the victim of `mode` with `pages` huge pages added to the pool, restores it and has it
/// check itself; the pool is put back afterwards. Skipped when the kernel finds no such pages.
fn round_trip_in_pool(mode: &str, pages: u64) {
    let Some(pool) = HugePool::grow(pages) else {
        eprintln!("skipped: the kernel found no {pages} free 2 MiB huge page(s) for the pool");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn(mode, d.path());
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid());
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
    drop(r);
    drop(pool);
}

/// Shared hugetlb memory (one mapping of the object): dumped as shared anonymous memory with
/// MAP_HUGETLB, restored as hugetlb memory with 2 MiB pages and its contents.
#[test]
fn shared_hugetlb_memory_comes_back_with_its_page_size_and_contents() {
    skip_if_not_root!("shared_hugetlb_memory_comes_back_with_its_page_size_and_contents");
    let _g = test_lock();
    become_subreaper();
    round_trip_in_pool("hugetlb-shared", 1);
}

/// Shared hugetlb memory mapped by two processes is dumped, and refused by name at restore
/// (one object cannot be mapped again from another mapping of hugetlb memory) before any
/// process was created.
#[test]
fn shared_hugetlb_memory_of_two_processes_is_refused_at_restore() {
    skip_if_not_root!("shared_hugetlb_memory_of_two_processes_is_refused_at_restore");
    let _g = test_lock();
    become_subreaper();
    let Some(pool) = HugePool::grow(1) else {
        eprintln!("skipped: the kernel found no 2 MiB huge page for the pool");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn("hugetlb-shared-fork", d.path());
    let child: i32 = std::fs::read_to_string(d.path().join("out.pids"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let img = d.path().join("img");
    {
        let _child = Spawned::guard(child);
        dump_and_reap(&mut v, &img, &[]);
    }
    let o = compel_criu_tests::criu(&["restore", "-d", "-D", img.to_str().unwrap()]);
    let err = compel_criu_tests::stderr_text(&o);
    assert!(!o.status.success(), "the restore succeeded");
    assert!(err.contains("mapped by several processes"), "{err}");
    for pid in [v.pid(), child] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} exists after the refused restore"
        );
    }
    drop(pool);
}
