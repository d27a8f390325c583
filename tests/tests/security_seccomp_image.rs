//! Seccomp programs from an image are checked before use (issue 23: "seccomp program
//! lengths"): CRIU 4.2's `single` fixture, its task put in filter mode, with `seccomp.img`
//! holding a program of 0 bytes, of a length that is not whole instructions, of more than
//! `BPF_MAXINSNS` (4096) instructions, a chain of filters that loops, a filter index past the
//! table, or flags the kernel's metadata never reports: the restore's image loading
//! (`criu::images_plan::load`, everything a restore checks before it makes a task) refuses
//! each with an error naming `seccomp.img`; a one-instruction program loads. (Root, under the
//! suite lock: the fixture's program is installed at `/tmp/fx` for the loading's file checks.)

use std::path::Path;

use compel_criu_tests::{copy_dir, fixture_usable, fixtures_dir, skip_if_not_root, test_lock};
use criu_images::pb::{SeccompEntry, SeccompFilter};
use criu_images::{ImageDir, ImageWriter, magic, names};

/// `BPF_RET | BPF_K` returning `SECCOMP_RET_ALLOW`.
const ALLOW: [u8; 8] = [0x06, 0, 0, 0, 0, 0, 0xff, 0x7f];

fn with_filters(dir: &Path, newest: u32, filters: Vec<SeccompFilter>) -> Result<(), String> {
    let d = ImageDir::new(dir);
    let pid = d.read_pstree().unwrap()[0].pid;
    let mut core = d.read_core(pid).unwrap();
    let tc = core.thread_core.as_mut().expect("a thread core");
    tc.seccomp_mode = Some(2);
    tc.seccomp_filter = Some(newest);
    d.write_core(pid, &core).unwrap();
    let _ = std::fs::remove_file(d.file(names::SECCOMP));
    let mut w = ImageWriter::create_in(dir, names::SECCOMP, magic::SECCOMP).unwrap();
    w.write_entry(&SeccompEntry {
        seccomp_filters: filters,
    })
    .unwrap();
    w.finish().unwrap();
    criu::images_plan::load(dir, false)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn filter(bytes: Vec<u8>, prev: Option<u32>, flags: Option<u32>) -> SeccompFilter {
    SeccompFilter {
        filter: bytes,
        prev,
        flags,
    }
}

#[test]
fn crafted_seccomp_programs_are_refused_before_a_restore_makes_anything() {
    skip_if_not_root!("crafted_seccomp_programs_are_refused_before_a_restore_makes_anything");
    let _g = test_lock();
    // The fixture's program where its images say it is (the loading checks its files).
    let Some(_fx) = fixture_usable() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    std::fs::create_dir(&dir).unwrap();
    copy_dir(&fixtures_dir().join("single"), &dir);
    // Control: one instruction loads.
    with_filters(&dir, 0, vec![filter(ALLOW.to_vec(), None, None)])
        .expect("a one-instruction program");
    let huge: Vec<u8> = ALLOW.iter().copied().cycle().take(8 * 4097).collect();
    let cases: Vec<(&str, u32, Vec<SeccompFilter>, &str)> = vec![
        ("empty", 0, vec![filter(vec![], None, None)], "of 0 bytes"),
        (
            "partial instruction",
            0,
            vec![filter(ALLOW[..7].to_vec(), None, None)],
            "of 7 bytes",
        ),
        (
            "4097 instructions",
            0,
            vec![filter(huge, None, None)],
            "of 32776 bytes",
        ),
        (
            "a loop",
            1,
            vec![
                filter(ALLOW.to_vec(), Some(1), None),
                filter(ALLOW.to_vec(), Some(0), None),
            ],
            "loops",
        ),
        (
            "past the table",
            5,
            vec![filter(ALLOW.to_vec(), None, None)],
            "filter 5 of 1",
        ),
        (
            "TSYNC flag",
            0,
            vec![filter(ALLOW.to_vec(), None, Some(1))],
            "flags 0x1",
        ),
    ];
    for (what, newest, filters, says) in cases {
        let e = with_filters(&dir, newest, filters).expect_err(what);
        assert!(e.contains("seccomp.img"), "{what}: {e}");
        assert!(e.contains(says), "{what}: {e}");
    }
}
