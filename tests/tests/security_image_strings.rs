//! Strings from images of any length (issue 23: "string lengths"): CRIU 4.2's `single`
//! fixture restored by `criu restore -d` in a throwaway pid + mount + net namespace
//! (`fuzz_ns::restore_in_ns`) with
//!
//! - a 4 KiB thread name in `core-PID.img`: restored (the name is cut to the kernel's 15 bytes
//!   when it is handed to the restorer, never copied whole);
//! - an 8 KiB path for the executable in `files.img`: the restore fails (the kernel's
//!   `ENAMETOOLONG`), cleanly;
//! - a 64 KiB path: the same.
//!
//! criu never panics (exit code, "panicked" on stderr) and leaves no task behind. Unix socket
//! names over 108 bytes and memfd names over 249 are refused while the images are read (unit
//! tests in `files::unix::image` and `files::memfd` cover their rules).

use std::path::Path;

use compel_criu_tests::fuzz_ns::restore_in_ns;
use compel_criu_tests::{
    SINGLE_PID, become_subreaper, copy_dir, fixture_usable, fixtures_dir, our_children, pid_exists,
    skip_if_not_root, test_lock,
};
use criu_images::ImageDir;

/// A copy of the `single` fixture in `work/name`, edited by `edit`, restored in a namespace;
/// returns criu's exit code.
fn restore_edited(work: &Path, name: &str, edit: impl FnOnce(&ImageDir, u32)) -> i32 {
    let images = work.join(name);
    std::fs::create_dir(&images).unwrap();
    std::fs::create_dir(images.with_extension("ns")).unwrap();
    copy_dir(&fixtures_dir().join("single"), &images);
    let d = ImageDir::new(&images);
    let pid = d.read_pstree().unwrap()[0].pid;
    edit(&d, pid);
    let code = restore_in_ns(&images).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(our_children(), Vec::<i32>::new(), "{name}: children left");
    assert!(!pid_exists(SINGLE_PID), "{name}: pid {SINGLE_PID} left");
    assert_eq!(
        std::fs::read_dir(images.with_extension("ns"))
            .unwrap()
            .count(),
        0,
        "{name}: files left"
    );
    code
}

fn long_exe_path(d: &ImageDir, pid: u32, len: usize) {
    let exe = d.read_mm(pid).unwrap().exe_file_id;
    let mut files = d.read_files().unwrap();
    let reg = files
        .iter_mut()
        .filter_map(|f| f.reg.as_mut())
        .find(|r| r.id == exe)
        .expect("the executable in files.img");
    let seg = "d".repeat(200);
    let mut p = String::new();
    while p.len() < len {
        p.push('/');
        p.push_str(&seg);
    }
    reg.name = p;
    d.write_files(&files).unwrap();
}

#[test]
fn long_strings_in_images_are_cut_or_refused_cleanly() {
    skip_if_not_root!("long_strings_in_images_are_cut_or_refused_cleanly");
    let _g = test_lock();
    become_subreaper();
    let Some(_fx) = fixture_usable() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let code = restore_edited(work.path(), "comm", |d, pid| {
        let mut core = d.read_core(pid).unwrap();
        core.thread_core.as_mut().expect("a thread core").comm = Some("c".repeat(4096));
        if let Some(tc) = core.tc.as_mut() {
            tc.comm = "c".repeat(4096);
        }
        d.write_core(pid, &core).unwrap();
    });
    let err = std::fs::read_to_string(work.path().join("comm.err")).unwrap_or_default();
    assert_eq!(code, 0, "a 4 KiB thread name: {err}");
    for (name, len) in [("path8k", 8192), ("path64k", 65536)] {
        let code = restore_edited(work.path(), name, |d, pid| long_exe_path(d, pid, len));
        assert_ne!(
            code, 0,
            "{name}: restored with an executable path of {len} bytes"
        );
    }
}
