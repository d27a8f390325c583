//! Issue 20, item 10: private anonymous `MAP_HUGETLB` memory is dumped like other private
//! anonymous memory (MAP_HUGETLB and the page size in its VMA flags, as CRIU writes them) and
//! comes back as hugetlb memory with its page size and contents; shared anonymous hugetlb
//! memory is still refused by name at dump, and the process runs on.
//!
//! Each test grows the huge page pool (`/proc/sys/vm/nr_hugepages`) for its victim and gives
//! it back on drop, also when the test fails. Runs as root, under the test lock and as a child
//! subreaper.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached, skip_if_not_root,
    test_lock, wait_file,
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

/// The huge page pool grown for a test, given back on drop (also when the test fails).
struct HugePool {
    old: String,
}

impl HugePool {
    const PATH: &str = "/proc/sys/vm/nr_hugepages";

    /// At least `n` free 2 MiB huge pages in the pool, or `None` (the pool is as it was) when
    /// the kernel cannot find them or 2 MiB is not the default huge page size.
    fn grow(n: u64) -> Option<HugePool> {
        let meminfo = |key: &str| -> Option<u64> {
            std::fs::read_to_string("/proc/meminfo")
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        if meminfo("Hugepagesize:")? != 2048 {
            return None;
        }
        let old = std::fs::read_to_string(Self::PATH).ok()?;
        let had: u64 = old.trim().parse().ok()?;
        let pool = HugePool { old };
        std::fs::write(Self::PATH, (had + n).to_string()).ok()?;
        (meminfo("HugePages_Free:")? >= n).then_some(pool)
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.old.trim());
    }
}

/// Private hugetlb memory: dumped, restored, still 2 MiB hugetlb pages with the contents
/// the victim wrote (the victim checks from inside; the dump freed its pages for the restore).
#[test]
fn private_hugetlb_memory_comes_back_with_its_page_size_and_contents() {
    skip_if_not_root!("private_hugetlb_memory_comes_back_with_its_page_size_and_contents");
    let _g = test_lock();
    become_subreaper();
    let Some(pool) = HugePool::grow(2) else {
        eprintln!("skipped: the kernel found no two 2 MiB huge pages for the pool");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn("hugetlb", d.path());
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid());
    assert_eq!(ask_check(r.pid(), &d.path().join("out")), "ok");
    drop(r);
    drop(pool);
}

/// Shared hugetlb memory is refused by name at dump, and the process runs on.
#[test]
fn shared_hugetlb_memory_is_refused_by_name() {
    skip_if_not_root!("shared_hugetlb_memory_is_refused_by_name");
    let _g = test_lock();
    become_subreaper();
    let Some(pool) = HugePool::grow(1) else {
        eprintln!("skipped: the kernel found no 2 MiB huge page for the pool");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let v = spawn("hugetlb-shared", d.path());
    let img = d.path().join("img");
    std::fs::create_dir(&img).unwrap();
    let o = compel_criu_tests::criu_dump(v.pid(), &img, &[]);
    let err = compel_criu_tests::stderr_text(&o);
    assert!(!o.status.success(), "the dump succeeded");
    assert!(
        err.contains("shared anonymous MAP_HUGETLB mapping"),
        "{err}"
    );
    assert_eq!(ask_check(v.pid(), &d.path().join("out")), "ok");
    drop(v);
    drop(pool);
}
