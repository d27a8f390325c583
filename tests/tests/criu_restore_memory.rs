//! criu dump and restore of memory: private and shared anonymous memory, large areas filled by a
//! helper, huge pages, image directories on small or huge-page tmpfs.
//!
//! Every test runs as root, under the test lock and as a child subreaper, checks what a user
//! would check in /proc and in the task's memory, then kills and reaps what it started. The
//! shared helpers (fixtures, [`Scratch`](compel_criu_tests::Scratch), `restore_and_check`, ...)
//! are the tests crate's.

use std::fs;
use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    OwnTmpfs, Scratch, Spawned, ask_check, assert_ok, become_subreaper, criu_dump, criu_env,
    dump_and_reap, restore_and_check, restore_d, skip_if_not_root, test_lock,
};

#[test]
fn dump_then_restore_memory_victim() {
    skip_if_not_root!("dump_then_restore_memory_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let data = dir.path("data");
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-memory"),
        &[data.to_str().unwrap(), dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::from_millis(50),
    );
}

/// 96 MiB of saved pages: the restore shares the fill with a helper process (above 64 MiB),
/// and every byte must still land where it belongs.
#[test]
fn dump_then_restore_a_big_memory_victim() {
    skip_if_not_root!("dump_then_restore_a_big_memory_victim");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["96", dir.ready.to_str().unwrap()],
        Duration::from_secs(30),
        Duration::ZERO,
    );
}

/// One area as /proc/PID/smaps shows it: flags, resident and huge-page kB.
#[derive(Debug, PartialEq)]
struct AreaSmaps {
    flags: String,
    rss_kb: u64,
    huge_kb: u64,
}

/// The smaps entry of the area `start..end` of `pid` (it must be an area of its own).
fn area_smaps(pid: i32, start: u64, end: u64) -> AreaSmaps {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let head = format!("{start:x}-{end:x} ");
    // The entry: its header line, then `Key: value` lines up to and including VmFlags.
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .scan(false, |done, l| {
            let take = !*done;
            *done |= l.starts_with("VmFlags:");
            take.then_some(l)
        })
        .collect();
    assert!(!body.is_empty(), "no area {head}in\n{text}");
    let kb = |key: &str| {
        body.iter()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
    };
    AreaSmaps {
        flags: body
            .iter()
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .unwrap()
            .trim()
            .to_string(),
        rss_kb: kb("Rss:"),
        huge_kb: kb("AnonHugePages:"),
    }
}

/// The 2 MiB blocks of `start..end` that hold no hole of criu-victim-big-memory's `holes` pattern
/// (page 700 of every 1024), in kB: what can come back on huge pages.
fn whole_blocks_kb(start: u64, end: u64) -> u64 {
    const BLOCK: u64 = 2 << 20;
    let hole_in = |b: u64| {
        (b..b + BLOCK)
            .step_by(4096)
            .any(|a| ((a - start) / 4096) % 1024 == 700)
    };
    (start.next_multiple_of(BLOCK)..end & !(BLOCK - 1))
        .step_by(BLOCK as usize)
        .filter(|&b| !hole_in(b))
        .count() as u64
        * 2048
}

/// A 40 MiB area with a hole in every 4 MiB comes back with wholly saved 2 MiB blocks on huge
/// pages and the blocks with a hole on small pages: the same flags (nothing like `hg` added),
/// the same resident size, every byte (and hole) intact, no userfaultfd left open. With
/// `CRIU_RESTORE_THP=0` it comes back on small pages only, filled with `UFFDIO_COPY` and,
/// with `CRIU_RESTORE_UFFD=0` too, by faulting pages in and reading into them.
#[test]
fn whole_blocks_of_saved_memory_come_back_on_huge_pages() {
    skip_if_not_root!("whole_blocks_of_saved_memory_come_back_on_huge_pages");
    let _g = test_lock();
    become_subreaper();
    let thp = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"));
    let dir = Scratch::new();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["40", dir.ready.to_str().unwrap(), "holes"],
        None,
        Duration::from_secs(30),
    );
    let start = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
    let end = start + (40 << 20);
    let before = area_smaps(v.pid(), start, end);
    assert_eq!(before.rss_kb, 40 * 1024 - 10 * 4, "{before:?}");
    dump_and_reap(&mut v, &dir.img, &[]);
    let check = dir.ready.with_extension("2");
    let variants: [&[(&str, &str)]; 3] = [
        &[],
        &[("CRIU_RESTORE_THP", "0")],
        &[("CRIU_RESTORE_THP", "0"), ("CRIU_RESTORE_UFFD", "0")],
    ];
    for env in variants {
        let small_only = !env.is_empty();
        let o = criu_env(&["restore", "-d", "-D", dir.img.to_str().unwrap()], env);
        assert_ok(&o, "criu restore -d");
        let task = Spawned::guard(v.pid());
        let after = area_smaps(task.pid(), start, end);
        assert_eq!(after.flags, before.flags, "{env:?}");
        assert_eq!(after.rss_kb, before.rss_kb, "{env:?}");
        if thp && !small_only {
            // Blocks with a hole never; whole blocks until huge pages come dearer than small
            // ones (a host that must back them first), so at least the first.
            let whole = whole_blocks_kb(start, end);
            assert!(
                after.huge_kb <= whole && after.huge_kb >= whole.min(2048),
                "{after:?}, whole blocks {whole} kB"
            );
        } else {
            assert_eq!(after.huge_kb, 0, "{env:?}: {after:?}");
        }
        let _ = fs::remove_file(&check);
        assert_eq!(ask_check(task.pid(), &check).trim(), "check ok", "{env:?}");
        // The userfaultfd that filled small pages is gone.
        for e in fs::read_dir(format!("/proc/{}/fd", task.pid())).unwrap() {
            let target = fs::read_link(e.unwrap().path()).unwrap_or_default();
            assert!(
                !target.to_string_lossy().contains("userfaultfd"),
                "{env:?}: {target:?}"
            );
        }
        drop(task);
    }
}

/// The pages `img` saved for `pid` in all, and the saved bytes of its 40 MiB area at `start`
/// in address order.
fn saved_area(img: &Path, pid: i32, start: u64) -> (u64, Vec<u8>) {
    let pm = criu_images::Pagemap::read(img.join(format!("pagemap-{pid}.img"))).unwrap();
    let pages = fs::read(img.join(pm.pages_file_name())).unwrap();
    let mut area = Vec::new();
    for r in pm.runs().unwrap() {
        let (lo, hi) = (
            r.vaddr.max(start),
            (r.vaddr + r.len()).min(start + (40 << 20)),
        );
        if lo < hi && r.flags & criu_images::pagemap::PE_PRESENT != 0 {
            let off = (r.file_offset + lo - r.vaddr) as usize;
            area.extend_from_slice(&pages[off..off + (hi - lo) as usize]);
        }
    }
    (pm.present_pages(), area)
}

/// Runs `f` on a thread of its own in a new mount namespace where a tmpfs with `opts` is
/// mounted on `at` ([`OwnTmpfs`]); the namespace goes away with the last task in it.
fn in_own_tmpfs(at: &Path, opts: &str, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _tmpfs = OwnTmpfs::mount(at, opts).unwrap();
            f();
        });
    });
}

/// A dump whose image file system fills up (a 16 MiB tmpfs for 40 MiB of pages; with huge
/// pages the pages file is allocated whole and fails there, without them a write fails) says
/// so, marks the images incomplete and leaves the victim running untouched.
#[test]
fn a_dump_onto_a_full_tmpfs_fails_and_the_victim_runs_on() {
    skip_if_not_root!("a_dump_onto_a_full_tmpfs_fails_and_the_victim_runs_on");
    let _g = test_lock();
    become_subreaper();
    for opts in ["huge=within_size,size=16m", "size=16m"] {
        let dir = Scratch::new();
        let small = dir.path("small");
        in_own_tmpfs(&small, opts, || {
            let (v, _) = dir.spawn_victim(
                env!("CARGO_BIN_EXE_criu-victim-big-memory"),
                &["40", dir.ready.to_str().unwrap()],
                None,
                Duration::from_secs(30),
            );
            let o = criu_dump(v.pid(), &small, &[]);
            assert!(!o.status.success(), "{opts}: the dump succeeded");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("pages-1.img") && err.contains("No space left"),
                "{opts}: {err}"
            );
            let marker = small.join(criu::INCOMPLETE_MARKER);
            assert!(marker.exists(), "{opts}: no {marker:?}");
            assert!(!small.join("inventory.img").exists(), "{opts}");
            // The partial pages file is gone, so the marker could say why.
            assert!(!small.join("pages-1.img").exists(), "{opts}");
            let why = fs::read_to_string(&marker).unwrap();
            assert!(why.contains("No space left"), "{opts}: {why}");
            assert_eq!(compel_criu_tests::tracer_pid(v.pid()), Some(0), "{opts}");
            let check = dir.ready.with_extension("2");
            assert_eq!(ask_check(v.pid(), &check).trim(), "check ok", "{opts}");
            drop(v);
        });
    }
}

/// A dump onto a tmpfs mounted with huge folios (`huge=within_size`) fills its pages file through
/// a shared mapping, two threads at a time: the images must hold exactly the bytes a dump that
/// writes them with write(2) saves, and restore.
#[test]
fn a_dump_onto_a_huge_page_tmpfs_saves_the_same_bytes() {
    skip_if_not_root!("a_dump_onto_a_huge_page_tmpfs_saves_the_same_bytes");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let huge = dir.path("huge");
    in_own_tmpfs(&huge, "huge=within_size,size=256m", || {
        let (mut v, said) = dir.spawn_victim(
            env!("CARGO_BIN_EXE_criu-victim-big-memory"),
            &["40", dir.ready.to_str().unwrap(), "holes"],
            None,
            Duration::from_secs(30),
        );
        let pid = v.pid();
        let start = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
        // The reference, written with write(2): the scratch directory is not on tmpfs.
        assert_ok(&criu_dump(pid, &dir.img, &["-R"]), "criu dump -R");
        let img = huge.join("img");
        fs::create_dir(&img).unwrap();
        dump_and_reap(&mut v, &img, &["-v4", "-o", "dump.log"]);
        let log = fs::read_to_string(img.join("dump.log")).unwrap();
        assert!(
            log.contains("pages-1.img filled through a mapping"),
            "{log}"
        );
        // The victim ran on between the dumps (its stack may differ): the 40 MiB area it
        // leaves alone must be saved byte for byte the same, and as many pages in all.
        let (written, mapped) = (
            saved_area(&dir.img, pid, start),
            saved_area(&img, pid, start),
        );
        assert_eq!(written.0, mapped.0, "pages in all");
        assert_eq!(
            written.1.len(),
            (40 << 20) - 10 * 4096,
            "the area without its holes"
        );
        assert!(written.1 == mapped.1, "the area's saved bytes differ");
        restore_and_check(pid, &img, &dir.ready);
    });
}

/// A process that turned huge pages off for itself (PR_SET_THP_DISABLE) gets none from the
/// restore either, and still has them off.
#[test]
fn a_process_without_huge_pages_gets_none_back() {
    skip_if_not_root!("a_process_without_huge_pages_gets_none_back");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (mut v, said) = dir.spawn_victim(
        env!("CARGO_BIN_EXE_criu-victim-big-memory"),
        &["16", dir.ready.to_str().unwrap(), "nothp"],
        None,
        Duration::from_secs(30),
    );
    let start = u64::from_str_radix(said.split_whitespace().nth(2).unwrap(), 16).unwrap();
    let thp_line = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .map(str::to_string)
    };
    let before = thp_line(v.pid());
    dump_and_reap(&mut v, &dir.img, &[]);
    let task = restore_d(&dir.img, v.pid());
    let after = area_smaps(task.pid(), start, start + (16 << 20));
    assert_eq!(after.huge_kb, 0, "{after:?}");
    assert_eq!(after.rss_kb, 16 << 10);
    assert_eq!(thp_line(task.pid()), before);
    let check = dir.ready.with_extension("2");
    let _ = fs::remove_file(&check);
    assert_eq!(ask_check(task.pid(), &check).trim(), "check ok");
}

#[test]
fn dump_then_restore_shared_anonymous_memory() {
    skip_if_not_root!("dump_then_restore_shared_anonymous_memory");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    dir.round_trip(
        env!("CARGO_BIN_EXE_criu-victim-shared-anon"),
        &[dir.ready.to_str().unwrap()],
        Duration::from_secs(10),
        Duration::ZERO,
    );
}
