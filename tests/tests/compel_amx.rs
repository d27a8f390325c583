//! AMX tile data, the xsave state the kernel gives a task only when it asks (its xsave buffer
//! grows then), survives an infection and cure: the parasite's `rt_sigreturn` frame must carry
//! the whole area for such a task, and only the default part for any other (see
//! `compel_arch::xsave_frame_extent`).

use std::os::unix::fs::FileExt;
use std::time::Duration;

use compel::Task;
use compel::infect::{InfectOptions, Parasite};
use compel_criu_tests::{Exit, Victim, become_subreaper, skip_unless, test_lock};
use parasite_blobs::testkit;
use testkit::proto::{self as tk, Args};

const T: Duration = Duration::from_secs(10);

/// Starts victim-amx; `None` when this machine has no AMX.
fn spawn() -> Option<(Victim, i32, u64)> {
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-amx"), &[]).unwrap();
    let line = v.expect_line("", T).unwrap();
    if line == "no amx" {
        assert_eq!(v.wait(T), Some(Exit::Code(2)));
        return None;
    }
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[0], "ready", "{line}");
    let pid = f[1].parse().unwrap();
    let flag = u64::from_str_radix(f[2], 16).unwrap();
    // Let it load its tile and start spinning.
    std::thread::sleep(Duration::from_millis(50));
    Some((v, pid, flag))
}

fn release(mut v: Victim, pid: i32, flag: u64) {
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    mem.write_all_at(&1u32.to_le_bytes(), flag).unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("ok"));
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn amx_tiles_survive_infection_and_cure() {
    let _g = test_lock();
    become_subreaper();
    // The victim's own check works without us.
    let first = spawn();
    skip_unless!(first.is_some(), "the CPU or kernel has no AMX");
    let (v, pid, flag) = first.unwrap();
    release(v, pid, flag);
    let (v, pid, flag) = spawn().expect("AMX was there a moment ago");
    let mut task = Task::seize(pid).unwrap();
    let bv = task.xsave(pid).unwrap().xstate_bv();
    assert_ne!(bv & (1 << 18), 0, "tile data in use: xstate_bv {bv:#x}");
    let mut p = Parasite::infect(&mut task, &testkit::blob(), InfectOptions::default()).unwrap();
    let a = Args {
        a: 1,
        b: 2,
        ..Args::default()
    };
    let r: Args = p.call_with(tk::CMD_ADD, &a).unwrap();
    assert_eq!(r.r, 3);
    p.cure().unwrap();
    task.detach().unwrap();
    release(v, pid, flag);
}
