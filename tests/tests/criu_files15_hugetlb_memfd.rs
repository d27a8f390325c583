//! Issue 15: hugetlb memfds (`MFD_HUGETLB`), a descriptor with a shared mapping and a memfd
//! mapped private whose descriptor was closed, dumped as CRIU 4.2 writes them (`hugetlb_flag`
//! = `MFD_HUGETLB | MFD_HUGE_2MB` in `memfd.img`, the areas with `MAP_HUGETLB` and the page
//! size bits) and restored as hugetlb memfds with their content, seals and position.
//!
//! The test grows the huge page pool (`/proc/sys/vm/nr_hugepages`) for its victim and gives it
//! back on drop, also when the test fails; without free huge pages it is skipped with a message.

use compel_criu_tests::{
    HugePool, Spawned, ask_check, become_subreaper, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready_with, test_lock,
};

const BIN: &str = env!("CARGO_BIN_EXE_criu-victim-files15");

/// `MFD_HUGETLB | MFD_HUGE_2MB`, as CRIU writes `hugetlb_flag`.
const FLAG_2MB: u32 = libc::MFD_HUGETLB | (21 << 26);

#[test]
fn hugetlb_memfd_descriptor_and_mappings_come_back_with_content_and_seals() {
    skip_if_not_root!("hugetlb_memfd_descriptor_and_mappings_come_back_with_content_and_seals");
    let _g = test_lock();
    become_subreaper();
    // huge-a: 2 pages; huge-b: 1 page and its private copy: 1 page.
    let Some(pool) = HugePool::grow(4) else {
        eprintln!("skipped: the kernel found no 4 free 2 MiB huge pages for the pool");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready_with(BIN, d.path(), &["hugetlb-memfd"], &[]);
    let out = d.path().join("out");
    assert_eq!(ask_check(v.pid(), &out), "ok");
    std::fs::remove_file(&out).unwrap();
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let inodes = criu_images::ImageDir::new(&img).read_memfd().unwrap();
    let names: Vec<(&str, Option<u32>, u64)> = inodes
        .iter()
        .map(|i| (i.name.as_str(), i.hugetlb_flag, i.size))
        .collect();
    assert!(
        names.contains(&("huge-a", Some(FLAG_2MB), 4 << 20)),
        "{names:?}"
    );
    assert!(
        names.contains(&("huge-b", Some(FLAG_2MB), 2 << 20)),
        "{names:?}"
    );
    let mm = criu_images::ImageDir::new(&img)
        .read_mm(v.pid() as u32)
        .unwrap();
    let huge_areas = mm
        .vmas
        .iter()
        .filter(|a| a.flags & libc::MAP_HUGETLB as u32 != 0)
        .inspect(|a| assert_eq!(a.flags >> 26 & 0x3f, 21, "page size bits of {a:?}"))
        .count();
    assert_eq!(huge_areas, 2, "the two hugetlb memfd areas");
    let restored = restore_detached(&img, &[]);
    let r = Spawned::guard(restored);
    assert_eq!(restored, v.pid());
    assert_eq!(ask_check(r.pid(), &out), "ok");
    std::fs::remove_file(&out).unwrap();
    assert_eq!(ask_check(r.pid(), &out), "ok");
    drop(r);
    drop(pool);
}

/// A hugetlb memfd image whose flag names no page size `memfd_create` takes fails the restore
/// before any task runs, naming `memfd.img`.
#[test]
fn hugetlb_memfd_with_a_bad_flag_is_refused() {
    skip_if_not_root!("hugetlb_memfd_with_a_bad_flag_is_refused");
    let _g = test_lock();
    become_subreaper();
    let Some(pool) = HugePool::grow(4) else {
        eprintln!("skipped: the kernel found no 4 free 2 MiB huge pages for the pool");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready_with(BIN, d.path(), &["hugetlb-memfd"], &[]);
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    drop(pool);
    let dir = criu_images::ImageDir::new(&img);
    let mut inodes = dir.read_memfd().unwrap();
    for i in &mut inodes {
        i.hugetlb_flag = Some(libc::MFD_HUGETLB | (63 << 26));
    }
    dir.write_memfd(&inodes).unwrap();
    let o = compel_criu_tests::criu(&["restore", "-d", "-D", img.to_str().unwrap()]);
    let err = compel_criu_tests::stderr_text(&o);
    assert!(!o.status.success(), "the restore succeeded");
    assert!(
        err.contains("memfd") && err.contains("hugetlb flag"),
        "{err}"
    );
    assert!(!std::path::Path::new(&format!("/proc/{}", v.pid())).exists());
}
