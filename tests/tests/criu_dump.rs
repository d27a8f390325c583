//! `criu dump` on real victims: the images decode with criu-images and hold the victims' state,
//! the victim is killed (or left running / stopped), and failures leave it running untouched.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{
    Exit, Spawned, UNPRIVILEGED_ID, ask_check, assert_ok, become_subreaper, criu, criu_dump,
    criu_env, criu_victim, open_dir, proc_state, signal, test_lock, tracer_pid, wait_exit,
    wait_exit_timeout, wait_file,
};
use criu_images::pb::{CoreEntry, FdTypes, FileEntry, GhostFileEntry, RemapFilePathEntry};
use criu_images::{ImageDir, ImageReader, magic, names, sigaction_slot};
use nix::sys::signal::Signal;

fn lines_of(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

fn images(d: &Path) -> PathBuf {
    let p = d.join("img");
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn reg_by_name<'a>(files: &'a [FileEntry], name: &str) -> Vec<&'a FileEntry> {
    files
        .iter()
        .filter(|f| f.reg.as_ref().is_some_and(|r| r.name == name))
        .collect()
}

/// vaddr -> offset in pages-N.img, per page.
fn page_index(img: &ImageDir, pid: i32) -> (BTreeMap<u64, u64>, Vec<u8>) {
    let pm = img.read_pagemap(pid as u32).unwrap();
    let pages = std::fs::read(img.pages_path(pm.pages_id)).unwrap();
    let mut idx = BTreeMap::new();
    for run in pm.runs().unwrap() {
        for i in 0..run.nr_pages {
            idx.insert(run.vaddr + i * 4096, run.file_offset + i * 4096);
        }
    }
    (idx, pages)
}

#[test]
fn dump_kills_counter_and_images_decode() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let mut v = Spawned::spawn_dying_with_us(
        criu_victim("counter"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-o", "dump.log", "-v4"]);
    assert_ok(&o, "dump");
    // Killed by the dump.
    assert_eq!(
        v.wait(Duration::from_secs(5)),
        Some(Exit::Signal(libc::SIGKILL))
    );
    let dir = ImageDir::new(&img);
    assert!(img.join(names::INVENTORY).exists());
    assert!(!img.join(criu::INCOMPLETE_MARKER).exists());
    let inv = dir.read_inventory().unwrap();
    assert_eq!(inv.img_version, 2);
    let tree = dir.read_pstree().unwrap();
    assert_eq!(tree.len(), 1);
    assert_eq!(
        (tree[0].pid, tree[0].ppid, &tree[0].threads),
        (v.pid() as u32, 0, &vec![v.pid() as u32])
    );
    let core: CoreEntry = dir.read_core(v.pid() as u32).unwrap();
    let tc = core.tc.as_ref().unwrap();
    assert_eq!(tc.comm, "criu-victim-cou");
    assert_eq!(tc.sigactions.len(), 62);
    let ti = core.thread_info.as_ref().unwrap();
    assert_ne!(ti.gpregs.ip, 0);
    assert_ne!(ti.gpregs.fs_base, 0);
    assert_eq!(ti.fpregs.xmm_space.len(), 64);
    // The output file: open for appending at its end (the victim wrote nothing after the dump).
    let files = dir.read_files().unwrap();
    let outs = reg_by_name(&files, out.to_str().unwrap());
    assert_eq!(outs.len(), 1, "{files:?}");
    let reg = outs[0].reg.as_ref().unwrap();
    let size = std::fs::metadata(&out).unwrap().len();
    assert_eq!(reg.pos, size);
    assert_eq!(
        reg.flags & (libc::O_ACCMODE | libc::O_APPEND) as u32,
        (libc::O_WRONLY | libc::O_APPEND) as u32
    );
    let ids = dir.read_ids(v.pid() as u32).unwrap();
    let fds = dir.read_fdinfo(ids.files_id).unwrap();
    let fd_of_out: Vec<_> = fds.iter().filter(|f| f.id == outs[0].id).collect();
    assert_eq!(fd_of_out.len(), 1);
    assert_eq!(fd_of_out[0].r#type, FdTypes::Reg as i32);
    // stdin/stdout/stderr are there too.
    for fd in 0..3 {
        assert!(fds.iter().any(|f| f.fd == fd), "fd {fd} missing: {fds:?}");
    }
    // Memory: VMAs, the executable, pages.
    let mm = dir.read_mm(v.pid() as u32).unwrap();
    let exe = files.iter().find(|f| f.id == mm.exe_file_id).unwrap();
    assert_eq!(exe.reg.as_ref().unwrap().name, criu_victim("counter"));
    assert!(mm.vmas.iter().any(|v| v.status & (1 << 3) != 0), "no vdso");
    assert!(mm.vmas.iter().any(|v| v.status & (1 << 12) != 0), "no vvar");
    let pm = dir.read_pagemap(v.pid() as u32).unwrap();
    let pages = std::fs::metadata(dir.pages_path(pm.pages_id))
        .unwrap()
        .len();
    assert_eq!(pages, pm.present_pages() * 4096);
    assert!(pm.present_pages() > 3);
    // Every dumped page lies inside a private VMA (runs may span adjacent VMAs, as CRIU's do).
    for run in pm.runs().unwrap() {
        for p in 0..run.nr_pages {
            let a = run.vaddr + p * 4096;
            assert!(
                mm.vmas
                    .iter()
                    .any(|v| v.start <= a && a < v.end && v.flags & libc::MAP_PRIVATE as u32 != 0),
                "page {a:#x} outside the private vmas"
            );
        }
    }
    let fs = dir.read_fs(v.pid() as u32).unwrap();
    let cwd = files.iter().find(|f| f.id == fs.cwd_id).unwrap();
    assert!(cwd.reg.as_ref().unwrap().mode.unwrap() & libc::S_IFMT == libc::S_IFDIR);
    // The log: every line timestamped and with our pid.
    let log = std::fs::read_to_string(img.join("dump.log")).unwrap();
    assert!(!log.is_empty());
    for l in log.lines() {
        let b = l.as_bytes();
        assert!(
            b.len() > 12 && b[0] == b'(' && b[3] == b'.' && b[10] == b')',
            "untimestamped log line {l:?}"
        );
    }
}

#[test]
fn leave_running_and_leave_stopped() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let v = Spawned::spawn_dying_with_us(
        criu_victim("counter"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump -R");
    assert_eq!(tracer_pid(v.pid()), Some(0));
    let n = lines_of(&out);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        lines_of(&out) > n,
        "the victim stopped counting after dump -R"
    );
    assert!(img.join(names::INVENTORY).exists());

    let img2 = d.path().join("img2");
    std::fs::create_dir(&img2).unwrap();
    let o = criu_dump(v.pid(), &img2, &["--leave-stopped"]);
    assert_ok(&o, "dump -s");
    let end = Instant::now() + Duration::from_secs(5);
    while proc_state(v.pid()) != Some('T') && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(proc_state(v.pid()), Some('T'));
    assert_eq!(tracer_pid(v.pid()), Some(0));
    let n = lines_of(&out);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(lines_of(&out), n, "a stopped victim kept counting");
}

#[test]
fn memory_patterns_are_in_the_pages() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let data = d.path().join("data");
    let ready = d.path().join("ready");
    let v = Spawned::spawn_dying_with_us(
        criu_victim("memory"),
        &[data.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    let r = wait_file(&ready, Duration::from_secs(10));
    let regions: BTreeMap<String, (u64, u64)> = r
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                (
                    u64::from_str_radix(&f[1][2..], 16).unwrap(),
                    f[2].parse().unwrap(),
                ),
            )
        })
        .collect();
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump");
    let dir = ImageDir::new(&img);
    let (idx, pages) = page_index(&dir, v.pid());
    let pat = |i: u64, seed: u8| (i as u8).wrapping_mul(7).wrapping_add(seed);
    let check_page = |addr: u64, base: u64, seed: u8| {
        let off = *idx
            .get(&addr)
            .unwrap_or_else(|| panic!("page {addr:#x} not dumped")) as usize;
        for k in 0..4096u64 {
            assert_eq!(
                pages[off + k as usize],
                pat(addr - base + k, seed),
                "byte {k} of page {addr:#x}"
            );
        }
    };
    // Heap: every whole page of the buffer.
    let (h, hl) = regions["heap"];
    let mut a = (h + 4095) & !4095;
    while a + 4096 <= h + hl {
        check_page(a, h, 1);
        a += 4096;
    }
    // Anonymous: touched (even) pages present, untouched (odd) pages absent.
    let (an, al) = regions["anon"];
    for p in 0..al / 4096 {
        let addr = an + p * 4096;
        if p % 2 == 0 {
            check_page(addr, an, 2);
        } else {
            assert!(!idx.contains_key(&addr), "untouched page {addr:#x} dumped");
        }
    }
    // A 1 TiB PROT_NONE reservation is one vma and no pages (and does not make the dump slow).
    let (res, res_len) = regions["reserve"];
    let mm0 = dir.read_mm(v.pid() as u32).unwrap();
    let rv = mm0.vmas.iter().find(|x| x.start == res).unwrap();
    assert_eq!((rv.end - rv.start, rv.prot), (res_len, 0));
    assert!(idx.range(res..res + res_len).next().is_none());
    // Pages only ever read (the zero page) are not saved.
    let (z, _) = regions["zero"];
    for p in 0..4 {
        assert!(!idx.contains_key(&(z + p * 4096)), "zero page {p} dumped");
    }
    // PROT_NONE pages with data.
    let (pn, _) = regions["prot_none"];
    check_page(pn, pn, 3);
    check_page(pn + 4096, pn, 3);
    // Private file mapping: the written page is dumped, the clean one is not.
    let (cow, _) = regions["file_cow"];
    check_page(cow, cow, 4);
    assert!(!idx.contains_key(&(cow + 4096)), "clean file page dumped");
    // Shared file mapping: no pages, a FILE_SHARED vma on the data file.
    let (sh, _) = regions["shared"];
    assert!(!idx.contains_key(&sh));
    let mm = dir.read_mm(v.pid() as u32).unwrap();
    let vma = mm.vmas.iter().find(|x| x.start == sh).unwrap();
    assert_eq!(vma.status & (1 << 7), 1 << 7, "not VMA_FILE_SHARED");
    assert_eq!(vma.fdflags, Some(libc::O_RDWR as u32));
    let files = dir.read_files().unwrap();
    let f = files.iter().find(|f| f.id as u64 == vma.shmid).unwrap();
    assert_eq!(f.reg.as_ref().unwrap().name, data.to_str().unwrap());
    // Shared anonymous memory: an ANON_SHARED vma and the object's written pages (by offset in
    // the object) in pagemap-shmem-SHMID.img.
    let (sa, _) = regions["shared_anon"];
    let sa_vma = mm.vmas.iter().find(|x| x.start == sa).unwrap();
    assert_eq!(sa_vma.status & (1 << 8), 1 << 8, "not VMA_ANON_SHARED");
    assert_eq!(
        sa_vma.flags & libc::MAP_SHARED as u32,
        libc::MAP_SHARED as u32
    );
    assert!(
        !idx.contains_key(&sa),
        "shared pages in the private pagemap"
    );
    let spm = criu_images::Pagemap::read(img.join(names::pagemap_shmem(sa_vma.shmid))).unwrap();
    let sp = std::fs::read(dir.pages_path(spm.pages_id)).unwrap();
    let offs: Vec<u64> = spm
        .runs()
        .unwrap()
        .iter()
        .flat_map(|r| (0..r.nr_pages).map(move |i| r.vaddr + i * 4096))
        .collect();
    assert_eq!(offs, vec![0, 4096, 3 * 4096]);
    assert_eq!(sp.len(), 3 * 4096);
    for (k, &o) in offs.iter().enumerate() {
        for b in 0..4096u64 {
            assert_eq!(
                sp[k * 4096 + b as usize],
                pat(o + b, 6),
                "shared byte {b} at {o:#x}"
            );
        }
    }
    let pn_vma = mm.vmas.iter().find(|x| x.start == pn).unwrap();
    assert_eq!(pn_vma.prot, 0);
    // The victim is untouched: its own check passes.
    let res = ask_check(v.pid(), &d.path().join("ready.2"));
    assert_eq!(res, "check ok");
}

fn check_state_core(core: &CoreEntry, ready: &str, uid: u32) {
    let f: Vec<&str> = ready.split(' ').collect();
    let handler = u64::from_str_radix(&f[2][2..], 16).unwrap();
    let alt = u64::from_str_radix(&f[3][2..], 16).unwrap();
    let timer_id: u32 = f[4].parse().unwrap();
    let tc = core.tc.as_ref().unwrap();
    let th = core.thread_core.as_ref().unwrap();
    let usr1 = &tc.sigactions[sigaction_slot(libc::SIGUSR1 as u32).unwrap()];
    assert_eq!(usr1.sigaction, handler);
    assert_eq!(
        usr1.flags & (libc::SA_RESTART | libc::SA_SIGINFO) as u64,
        (libc::SA_RESTART | libc::SA_SIGINFO) as u64
    );
    assert_eq!(usr1.mask, 1 << (libc::SIGUSR2 - 1));
    assert_ne!(usr1.restorer, 0);
    let usr2 = &tc.sigactions[sigaction_slot(libc::SIGUSR2 as u32).unwrap()];
    assert_eq!(usr2.sigaction, libc::SIG_IGN as u64);
    assert_eq!(
        tc.blk_sigset & (1 << (libc::SIGHUP - 1)),
        1 << (libc::SIGHUP - 1)
    );
    let timers = tc.timers.as_ref().unwrap();
    assert_eq!(timers.real.isec, 500);
    assert!(
        (900..=1000).contains(&timers.real.vsec),
        "{:?}",
        timers.real
    );
    assert_eq!(timers.posix.len(), 1);
    let pt = &timers.posix[0];
    assert_eq!(pt.it_id, timer_id);
    assert_eq!(pt.clock_id, libc::CLOCK_MONOTONIC as u32);
    assert_eq!(pt.si_signo, (libc::SIGRTMIN() + 1) as u32);
    assert_eq!(pt.sival_ptr, 0x1234);
    assert_eq!(pt.isec, 400);
    assert!((700..=800).contains(&pt.vsec));
    let rl = &tc.rlimits.as_ref().unwrap().rlimits;
    assert_eq!(rl.len(), 16);
    assert_eq!(rl[libc::RLIMIT_NOFILE as usize].cur, 1000);
    assert_eq!(rl[libc::RLIMIT_CORE as usize].cur, 0);
    assert_eq!(tc.comm, "statevic");
    assert_eq!(tc.child_subreaper, Some(true));
    let sas = th.sas.as_ref().unwrap();
    assert_eq!((sas.ss_sp, sas.ss_size), (alt, 64 << 10));
    assert_eq!(th.pdeath_sig, Some(libc::SIGWINCH as u32));
    let creds = th.creds.as_ref().unwrap();
    assert_eq!((creds.uid, creds.euid, creds.gid), (uid, uid, uid));
    assert_eq!(creds.no_new_privs, Some(1));
    assert!(th.rseq_entry.is_some(), "glibc registers rseq");
}

#[test]
fn handlers_timers_limits_and_creds() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let ready = d.path().join("ready");
    let mut v = Spawned::spawn_dying_with_us(
        criu_victim("state"),
        &[ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    let r = wait_file(&ready, Duration::from_secs(10));
    // A blocked signal pending for the process: it must be in the image, not lost.
    signal(v.pid(), Signal::SIGHUP);
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R", "-v4", "-o", "d.log"]);
    assert_ok(&o, "dump");
    let dir = ImageDir::new(&img);
    let core = dir.read_core(v.pid() as u32).unwrap();
    check_state_core(&core, &r, 0);
    assert_eq!(dir.read_fs(v.pid() as u32).unwrap().umask, Some(0o027));
    let shared = &core
        .tc
        .as_ref()
        .unwrap()
        .signals_s
        .as_ref()
        .unwrap()
        .signals;
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0].siginfo.len(), 128);
    assert_eq!(
        &shared[0].siginfo[..4],
        &(libc::SIGHUP as u32).to_le_bytes()
    );
    let own = &core
        .thread_core
        .as_ref()
        .unwrap()
        .signals_p
        .as_ref()
        .unwrap()
        .signals;
    assert!(own.is_empty());
    // Still pending in the task after the dump (peeked, not taken).
    let status = std::fs::read_to_string(format!("/proc/{}/status", v.pid())).unwrap();
    assert!(status.contains("ShdPnd:\t0000000000000001"), "{status}");
    let maps_before = std::fs::read_to_string(format!("/proc/{}/maps", v.pid())).unwrap();
    let log = std::fs::read_to_string(img.join("d.log")).unwrap();
    assert!(
        log.contains("inside state read by the dump parasite"),
        "{log}"
    );
    // The remote-syscall way (the fallback) reads the same state.
    let img3 = d.path().join("img3");
    std::fs::create_dir(&img3).unwrap();
    let o = criu_env(
        &[
            "dump",
            "-t",
            &v.pid().to_string(),
            "-D",
            img3.to_str().unwrap(),
            "-R",
            "-v4",
            "-o",
            "d.log",
        ],
        &[(criu::INSIDE_METHOD_ENV, "syscalls")],
    );
    assert_ok(&o, "dump with remote syscalls");
    let log = std::fs::read_to_string(img3.join("d.log")).unwrap();
    assert!(
        log.contains("inside state read with remote syscalls"),
        "{log}"
    );
    let core3 = ImageDir::new(&img3).read_core(v.pid() as u32).unwrap();
    check_state_core(&core3, &r, 0);
    let (tc, tc3) = (core.tc.as_ref().unwrap(), core3.tc.as_ref().unwrap());
    assert_eq!(tc.sigactions, tc3.sigactions);
    assert_eq!(tc.rlimits, tc3.rlimits);
    assert_eq!(tc.child_subreaper, tc3.child_subreaper);
    let (th, th3) = (
        core.thread_core.as_ref().unwrap(),
        core3.thread_core.as_ref().unwrap(),
    );
    assert_eq!((&th.sas, th.pdeath_sig), (&th3.sas, th3.pdeath_sig));
    assert_eq!(
        core.thread_info.as_ref().unwrap().clear_tid_addr,
        core3.thread_info.as_ref().unwrap().clear_tid_addr
    );
    // Neither way leaves anything mapped in the task.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/maps", v.pid())).unwrap(),
        maps_before
    );
    assert_eq!(ask_check(v.pid(), &d.path().join("ready.2")), "check ok");
    // A default dump of it kills it.
    let img2 = d.path().join("img2");
    std::fs::create_dir(&img2).unwrap();
    assert_ok(&criu_dump(v.pid(), &img2, &[]), "dump");
    assert_eq!(
        v.wait(Duration::from_secs(5)),
        Some(Exit::Signal(libc::SIGKILL))
    );
}

#[test]
fn other_uid_without_cap_sys_resource() {
    let _g = test_lock();
    compel_criu_tests::skip_if_not_root!("other_uid_without_cap_sys_resource");
    become_subreaper();
    let d = open_dir();
    let ready = d.path().join("ready");
    let v = Spawned::spawn_dying_with_us(
        criu_victim("state"),
        &[ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        Some(UNPRIVILEGED_ID),
    );
    let r = wait_file(&ready, Duration::from_secs(10));
    // prlimit on another uid's process needs CAP_SYS_RESOURCE; this machine's root lacks it, so
    // the limits must come from inside the task.
    let mut rl = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 reads into rl, which we own.
    let direct =
        unsafe { libc::prlimit64(v.pid(), libc::RLIMIT_NOFILE, std::ptr::null(), &mut rl) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    if cap_eff & (1 << CAP_SYS_RESOURCE) == 0 {
        // The situation CRIU 4.2 fails in: reading the limits from outside is refused.
        assert_eq!(direct, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM)
        );
    } else {
        eprintln!("note: this run has CAP_SYS_RESOURCE, so prlimit from outside works too");
    }
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump of another uid");
    let core = ImageDir::new(&img).read_core(v.pid() as u32).unwrap();
    check_state_core(&core, &r, UNPRIVILEGED_ID);
    assert_eq!(ask_check(v.pid(), &d.path().join("ready.2")), "check ok");
}

#[test]
fn files_at_offsets_and_a_deleted_file() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let fdir = d.path().join("files");
    std::fs::create_dir(&fdir).unwrap();
    let ready = d.path().join("ready");
    let v = Spawned::spawn_dying_with_us(
        criu_victim("files"),
        &[fdir.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump");
    let dir = ImageDir::new(&img);
    let files = dir.read_files().unwrap();
    let fds = dir
        .read_fdinfo(dir.read_ids(v.pid() as u32).unwrap().files_id)
        .unwrap();
    let file_of = |fd: u32| {
        let e = fds
            .iter()
            .find(|e| e.fd == fd)
            .unwrap_or_else(|| panic!("fd {fd} missing"));
        let f = files.iter().find(|f| f.id == e.id).unwrap();
        (e, f.reg.clone().unwrap())
    };
    let p = |n: &str| fdir.join(n).to_str().unwrap().to_string();
    let acc = |flags: u32| flags & libc::O_ACCMODE as u32;
    let (e10, r10) = file_of(10);
    assert_eq!(
        (r10.name.as_str(), r10.pos, acc(r10.flags)),
        (p("a").as_str(), 3, libc::O_RDONLY as u32)
    );
    assert_eq!(e10.flags, 0);
    let (_, r11) = file_of(11);
    assert_eq!((r11.name.as_str(), r11.pos), (p("b").as_str(), 3));
    assert_eq!(
        r11.flags & (libc::O_APPEND | libc::O_ACCMODE) as u32,
        (libc::O_APPEND | libc::O_WRONLY) as u32
    );
    let (e12, r12) = file_of(12);
    let (e13, _) = file_of(13);
    assert_eq!(e12.id, e13.id, "dup'ed fds share one file entry");
    assert_eq!((r12.pos, acc(r12.flags)), (5, libc::O_RDWR as u32));
    let (_, r14) = file_of(14);
    assert_eq!(r14.name, fdir.to_str().unwrap());
    assert_eq!(r14.mode.unwrap() & libc::S_IFMT, libc::S_IFDIR);
    let (_, r15) = file_of(15);
    assert_eq!(r15.name, "/dev/null");
    assert_eq!(r15.mode.unwrap() & libc::S_IFMT, libc::S_IFCHR);
    let (e16, r16) = file_of(16);
    assert_eq!((r16.name.as_str(), r16.pos), (p("gone").as_str(), 2));
    let (e17, r17) = file_of(17);
    assert_eq!(e17.flags, libc::FD_CLOEXEC as u32);
    assert_eq!((r17.name.as_str(), r17.pos), (p("a").as_str(), 0));
    assert_ne!(e17.id, e10.id);
    // The deleted file: a ghost with its contents.
    let remaps: Vec<RemapFilePathEntry> =
        criu_images::read_all(img.join(names::REMAP_FPATH), magic::REMAP_FPATH).unwrap();
    let rp = remaps
        .iter()
        .find(|r| r.orig_id == e16.id)
        .expect("remap for the deleted file");
    let mut rd =
        ImageReader::open_expect(img.join(names::ghost_file(rp.remap_id)), magic::GHOST_FILE)
            .unwrap();
    let g: GhostFileEntry = rd.read_one().unwrap();
    assert_eq!(g.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(rd.read_rest().unwrap(), b"ghost data 42");
    assert_eq!(ask_check(v.pid(), &d.path().join("ready.2")), "check ok");
}

fn script(d: &Path, name: &str, body: &str) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn action_scripts_see_stage_pid_and_images() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let mut v = Spawned::spawn_dying_with_us(
        criu_victim("counter"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let rec = d.path().join("record");
    let s = script(
        d.path(),
        "hook",
        &format!(
            "echo \"$CRTOOLS_SCRIPT_ACTION $CRTOOLS_INIT_PID $(ls $CRTOOLS_IMAGE_DIR | grep -c '^core-')\" >> {}\necho hook-output",
            rec.display()
        ),
    );
    let img = images(d.path());
    let o = criu_dump(
        v.pid(),
        &img,
        &["-o", "d.log", "--action-script", s.to_str().unwrap()],
    );
    assert_ok(&o, "dump");
    assert_eq!(
        std::fs::read_to_string(&rec).unwrap(),
        format!("pre-dump {0} 0\npost-dump {0} 1\n", v.pid())
    );
    assert!(
        std::fs::read_to_string(img.join("d.log"))
            .unwrap()
            .contains("hook-output")
    );
    assert_eq!(
        v.wait(Duration::from_secs(5)),
        Some(Exit::Signal(libc::SIGKILL))
    );
}

#[test]
fn failing_scripts_leave_the_victim_running() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let v = Spawned::spawn_dying_with_us(
        criu_victim("counter"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    for (stage, body) in [
        ("pre-dump", "exit 3"),
        ("post-dump", "[ \"$CRTOOLS_SCRIPT_ACTION\" != post-dump ]"),
    ] {
        let s = script(d.path(), stage, body);
        let img = d.path().join(format!("img-{stage}"));
        std::fs::create_dir(&img).unwrap();
        // A stale inventory from an earlier dump must not survive a failed one.
        std::fs::write(img.join(names::INVENTORY), b"stale").unwrap();
        let o = criu_dump(
            v.pid(),
            &img,
            &["-o", "d.log", "--action-script", s.to_str().unwrap()],
        );
        assert!(!o.status.success(), "{stage}: dump succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{stage} action script failed")),
            "{stage}: {err}"
        );
        // Not killed, not traced, still counting.
        assert_eq!(tracer_pid(v.pid()), Some(0));
        let n = lines_of(&out);
        std::thread::sleep(Duration::from_millis(100));
        assert!(lines_of(&out) > n, "{stage}: the victim stopped counting");
        assert!(
            !img.join(names::INVENTORY).exists(),
            "{stage}: inventory left behind"
        );
        let marker = std::fs::read_to_string(img.join(criu::INCOMPLETE_MARKER)).unwrap();
        assert!(marker.contains("action script"), "{marker}");
    }
}

#[test]
fn dead_pid_fails_clearly() {
    let _g = test_lock();
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let d = open_dir();
    let img = images(d.path());
    let o = criu_dump(pid, &img, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("no process {pid}")), "{err}");
    assert!(!img.join(names::INVENTORY).exists());
    assert!(img.join(criu::INCOMPLETE_MARKER).exists());
    // A zombie is refused.
    let child = Command::new("true").spawn().unwrap();
    let zpid = child.id() as i32;
    let end = Instant::now() + Duration::from_secs(5);
    while proc_state(zpid) != Some('Z') && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    let o = criu_dump(zpid, &img, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("zombie"));
    assert_eq!(wait_exit(zpid), Ok(Exit::Code(0)));
    drop(child);
    // A missing images directory is refused before anything happens.
    let o = criu(&[
        "dump",
        "-t",
        "1",
        "-D",
        d.path().join("nope").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("image dir"));
}

#[test]
fn stopped_task_is_dumped_as_stopped() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    let v = Spawned::spawn_dying_with_us(
        criu_victim("counter"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    signal(v.pid(), Signal::SIGSTOP);
    let end = Instant::now() + Duration::from_secs(5);
    while proc_state(v.pid()) != Some('T') && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump of a stopped task");
    let core = ImageDir::new(&img).read_core(v.pid() as u32).unwrap();
    let tc = core.tc.as_ref().unwrap();
    assert_eq!(tc.task_state, 3, "TASK_STOPPED");
    assert_eq!(tc.stop_signo, Some(libc::SIGSTOP as u32));
    // Left as it was: stopped, not traced.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(proc_state(v.pid()), Some('T'));
    assert_eq!(tracer_pid(v.pid()), Some(0));
}

#[test]
fn pipes_are_dumped_with_their_waiting_bytes() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    // stdin and stdout are pipes to this test; stdin holds bytes the victim never reads.
    let mut v = compel_criu_tests::Victim::spawn(
        criu_victim("counter"),
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
    )
    .unwrap();
    wait_file(&ready, Duration::from_secs(10));
    v.write_stdin(b"hello pipe").unwrap();
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump with pipes");
    let dir = ImageDir::new(&img);
    let files = dir.read_files().unwrap();
    let fds = dir
        .read_fdinfo(dir.read_ids(v.pid() as u32).unwrap().files_id)
        .unwrap();
    let pipe_of = |fd: u32| {
        let e = fds.iter().find(|e| e.fd == fd).unwrap();
        assert_eq!(e.r#type, FdTypes::Pipe as i32);
        files
            .iter()
            .find(|f| f.id == e.id)
            .unwrap()
            .pipe
            .clone()
            .unwrap()
    };
    let stdin = pipe_of(0);
    let stdout = pipe_of(1);
    assert_eq!(stdin.flags & libc::O_ACCMODE as u32, libc::O_RDONLY as u32);
    assert_eq!(stdout.flags & libc::O_ACCMODE as u32, libc::O_WRONLY as u32);
    assert_ne!(stdin.pipe_id, stdout.pipe_id);
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/proc/{}/fd/0", v.pid()))
        .unwrap()
        .ino();
    assert_eq!(u64::from(stdin.pipe_id), ino);
    let mut r = ImageReader::open_expect(img.join(names::PIPES_DATA), magic::PIPES_DATA).unwrap();
    let e: criu_images::pb::PipeDataEntry = r.read_one().unwrap();
    assert_eq!((e.pipe_id, e.bytes), (stdin.pipe_id, 10));
    assert_eq!(r.read_extra(10).unwrap(), b"hello pipe");
    // The bytes are still in the pipe for the task: read them back through /proc.
    use std::io::Read;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .open(format!("/proc/{}/fd/0", v.pid()))
        .unwrap();
    let mut buf = [0u8; 10];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello pipe");
}

#[test]
fn threads_each_get_a_core() {
    let _g = test_lock();
    become_subreaper();
    let mut v =
        compel_criu_tests::Victim::spawn(env!("CARGO_BIN_EXE_victim-threads"), &["2"]).unwrap();
    v.expect_line("ready", Duration::from_secs(10)).unwrap();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let l = v.expect_line("tid", Duration::from_secs(10)).unwrap();
        workers.push(l[4..].trim().parse::<u32>().unwrap());
    }
    let d = open_dir();
    let img = images(d.path());
    let pid = v.pid() as u32;
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump of a threaded process");
    let dir = ImageDir::new(&img);
    let tree = dir.read_pstree().unwrap();
    assert_eq!(tree[0].threads[0], pid, "the leader comes first");
    let mut got = tree[0].threads[1..].to_vec();
    got.sort();
    workers.sort();
    assert_eq!(got, workers);
    let leader = dir.read_core(pid).unwrap();
    assert!(leader.tc.is_some());
    assert_eq!(leader.thread_core.as_ref().unwrap().blk_sigset, None);
    for &t in &workers {
        let c = dir.read_core(t).unwrap();
        assert!(c.tc.is_none(), "thread {t} has a task core");
        let th = c.thread_core.as_ref().unwrap();
        assert!(th.blk_sigset.is_some());
        assert!(th.creds.is_some());
        let ti = c.thread_info.as_ref().unwrap();
        // Each worker has its own stack and TLS.
        assert_ne!(ti.gpregs.sp, leader.thread_info.as_ref().unwrap().gpregs.sp);
        assert_ne!(
            ti.gpregs.fs_base,
            leader.thread_info.as_ref().unwrap().gpregs.fs_base
        );
        assert_ne!(ti.clear_tid_addr, 0);
        assert!(th.rseq_entry.is_some());
    }
    // It runs on untouched: its threads still count.
    assert_eq!(tracer_pid(v.pid()), Some(0));
    v.write_stdin(b"count\n").unwrap();
    v.expect_line("counts", Duration::from_secs(10)).unwrap();
    assert!(img.join(names::INVENTORY).exists());
    // A default dump kills every thread.
    let img2 = d.path().join("img2");
    std::fs::create_dir(&img2).unwrap();
    assert_ok(&criu_dump(v.pid(), &img2, &[]), "dump");
    assert_eq!(
        v.wait(Duration::from_secs(5)),
        Some(Exit::Signal(libc::SIGKILL))
    );
}

/// A task under a seccomp filter is dumped with it (seccomp mode and filter in its core, the
/// program in `seccomp.img`) and, with `-R`, runs on under the same filter, untraced.
#[test]
fn seccomp_task_is_dumped_with_its_filter_and_runs_on() {
    let _g = test_lock();
    become_subreaper();
    let mut v =
        compel_criu_tests::Victim::spawn(env!("CARGO_BIN_EXE_victim-seccomp"), &[]).unwrap();
    v.expect_line("ready", Duration::from_secs(10)).unwrap();
    let d = open_dir();
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump -R");
    let dir = ImageDir::new(&img);
    let th = dir.read_core(v.pid() as u32).unwrap().thread_core.unwrap();
    assert_eq!((th.seccomp_mode, th.seccomp_filter), (Some(2), Some(0)));
    let filters = dir.read_seccomp().unwrap().seccomp_filters;
    assert_eq!(filters.len(), 1);
    // The victim's program: 7 instructions of 8 bytes.
    assert_eq!(filters[0].filter.len(), 7 * 8);
    assert_eq!(filters[0].prev, None);
    assert_eq!(tracer_pid(v.pid()), Some(0));
    // Its filter is still in force and it still answers.
    v.write_stdin(b"getpid\n").unwrap();
    assert_eq!(
        v.expect_line("getpid", Duration::from_secs(10)).unwrap(),
        "getpid -1 1"
    );
}

#[test]
fn eventfd_epoll_timerfd_signalfd() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let ready = d.path().join("ready");
    let v = Spawned::spawn_dying_with_us(
        env!("CARGO_BIN_EXE_criu-victim-anonfd"),
        &[ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    let r = wait_file(&ready, Duration::from_secs(10));
    let f: Vec<u32> = r.split(' ').skip(2).map(|x| x.parse().unwrap()).collect();
    let (efd, epfd, tfd, sfd) = (f[0], f[1], f[2], f[3]);
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump");
    let dir = ImageDir::new(&img);
    let files = dir.read_files().unwrap();
    let fds = dir
        .read_fdinfo(dir.read_ids(v.pid() as u32).unwrap().files_id)
        .unwrap();
    let entry = |fd: u32, ty: FdTypes| {
        let e = fds.iter().find(|e| e.fd == fd).unwrap();
        assert_eq!(e.r#type, ty as i32, "fd {fd}");
        (
            e.clone(),
            files.iter().find(|f| f.id == e.id).unwrap().clone(),
        )
    };
    let (_, ef) = entry(efd, FdTypes::Eventfd);
    let efe = ef.efd.unwrap();
    assert_eq!(efe.counter, 5);
    assert_eq!(efe.flags & libc::O_NONBLOCK as u32, libc::O_NONBLOCK as u32);
    let (epe, ep) = entry(epfd, FdTypes::Eventpoll);
    assert_eq!(epe.flags, libc::FD_CLOEXEC as u32);
    let ep = ep.epfd.unwrap();
    assert_eq!(ep.tfd.len(), 1);
    // The kernel always adds EPOLLERR | EPOLLHUP to what was asked.
    assert_eq!(
        (ep.tfd[0].tfd, ep.tfd[0].events & !0x18, ep.tfd[0].data),
        (efd, libc::EPOLLIN as u32, 0xabc)
    );
    let (_, tf) = entry(tfd, FdTypes::Timerfd);
    let t = tf.tfd.unwrap();
    assert_eq!(t.clockid, libc::CLOCK_MONOTONIC as u32);
    assert_eq!((t.isec, t.insec), (3, 0));
    assert!((90..=100).contains(&t.vsec), "{t:?}");
    let (_, sf) = entry(sfd, FdTypes::Signalfd);
    assert_eq!(sf.sgfd.unwrap().sigmask, 1 << (libc::SIGUSR2 - 1));
}

#[test]
fn vector_registers_are_in_the_core_image() {
    let _g = test_lock();
    become_subreaper();
    let mut v = compel_criu_tests::Victim::spawn(env!("CARGO_BIN_EXE_victim-avx"), &[]).unwrap();
    let line = v.expect_line("", Duration::from_secs(10)).unwrap();
    compel_criu_tests::skip_unless!(line.starts_with("ready"), "the CPU has no AVX: {line}");
    let f: Vec<&str> = line.split(' ').collect();
    let flag = u64::from_str_radix(f[2], 16).unwrap();
    let avx512 = f[3] == "avx512";
    // Let it load its registers and start spinning.
    std::thread::sleep(Duration::from_millis(200));
    let d = open_dir();
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &["-R"]);
    assert_ok(&o, "dump");
    let core = ImageDir::new(&img).read_core(v.pid() as u32).unwrap();
    let fp = core.thread_info.unwrap().fpregs;
    let xs = fp.xsave.expect("xsave state in the image");
    let le32 = |v: &[u32]| v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    let le64 = |v: &[u64]| v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    let (xmm, ymmh) = (le32(&fp.xmm_space), le32(&xs.ymmh_space));
    let (zmmh, hi16) = (le64(&xs.zmm_upper), le64(&xs.hi16_zmm));
    let width = if avx512 { 64 } else { 32 };
    let nregs = if avx512 { 32 } else { 16 };
    for r in 0..nregs {
        for b in 0..width {
            let got = match (r, b) {
                (0..16, 0..16) => xmm[r * 16 + b],
                (0..16, 16..32) => ymmh[r * 16 + b - 16],
                (0..16, _) => zmmh[r * 32 + b - 32],
                _ => hi16[(r - 16) * 64 + b],
            };
            assert_eq!(
                got,
                compel_criu_tests::avx_pattern(r, b),
                "register {r} byte {b}"
            );
        }
    }
    if avx512 {
        for k in 1..8 {
            assert_eq!(
                xs.opmask_reg[k],
                u64::from(compel_criu_tests::avx_kmask(k)),
                "k{k}"
            );
        }
    }
    // The victim, left running, still holds them: set its flag and let it check.
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", v.pid()))
        .unwrap();
    use std::os::unix::fs::FileExt;
    mem.write_all_at(&1u32.to_le_bytes(), flag).unwrap();
    assert_eq!(v.expect_line("", Duration::from_secs(10)).unwrap(), "ok");
}

#[test]
fn a_process_tree() {
    let _g = test_lock();
    become_subreaper();
    let d = open_dir();
    let data = d.path().join("data");
    let ready = d.path().join("ready");
    let mut v = Spawned::spawn_dying_with_us(
        env!("CARGO_BIN_EXE_criu-victim-tree"),
        &[data.to_str().unwrap(), ready.to_str().unwrap()],
        &d.path().join("victim.log"),
        None,
    );
    let r = wait_file(&ready, Duration::from_secs(10));
    let p: Vec<i32> = r.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
    let (root, c1, c2, c3) = (p[0], p[1], p[2], p[3]);
    // The children become ours when the root dies; reap them then.
    struct Kids(i32, i32, i32);
    impl Drop for Kids {
        fn drop(&mut self) {
            for k in [self.0, self.1, self.2] {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(k),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = wait_exit_timeout(k, Duration::from_secs(5));
            }
        }
    }
    let _kids = Kids(c1, c2, c3);
    let img = images(d.path());
    let o = criu_dump(root, &img, &["-R"]);
    assert_ok(&o, "dump of a tree");
    let dir = ImageDir::new(&img);
    let tree = dir.read_pstree().unwrap();
    assert_eq!(tree.len(), 4, "{tree:?}");
    assert_eq!((tree[0].pid, tree[0].ppid), (root as u32, 0));
    let e = |pid: i32| tree.iter().find(|t| t.pid == pid as u32).unwrap();
    assert_eq!(e(c1).ppid, root as u32);
    assert_eq!(e(c2).ppid, root as u32);
    assert_eq!(e(c1).pgid, tree[0].pgid);
    assert_eq!(e(c2).pgid, c2 as u32, "child 2 leads its own group");
    // The zombie: in the tree with a core that holds its end only.
    assert_eq!(e(c3).ppid, root as u32);
    let zc = dir.read_core(c3 as u32).unwrap();
    let ztc = zc.tc.as_ref().unwrap();
    assert_eq!(ztc.task_state, 2, "TASK_DEAD");
    assert_eq!(ztc.exit_code, 7 << 8, "the wait status of exit(7)");
    assert!(zc.thread_info.is_none());
    assert!(!img.join(names::mm(c3 as u32)).exists());
    // One descriptor table each, and an fdinfo image for each.
    let ids: Vec<_> = [root, c1, c2]
        .iter()
        .map(|&p| dir.read_ids(p as u32).unwrap())
        .collect();
    let mut tables: Vec<u32> = ids.iter().map(|i| i.files_id).collect();
    tables.sort();
    tables.dedup();
    assert_eq!(tables.len(), 3);
    let files = dir.read_files().unwrap();
    let fdinfo = |k: usize| dir.read_fdinfo(ids[k].files_id).unwrap();
    // The inherited data file is one open file description: one file id in all three.
    let data_ids: Vec<u32> = (0..3)
        .map(|k| {
            fdinfo(k)
                .iter()
                .find(|e| {
                    files.iter().any(|f| {
                        f.id == e.id
                            && f.reg
                                .as_ref()
                                .is_some_and(|r| r.name == data.to_str().unwrap())
                    })
                })
                .unwrap()
                .id
        })
        .collect();
    assert!(data_ids.iter().all(|&i| i == data_ids[0]), "{data_ids:?}");
    let reg = files
        .iter()
        .find(|f| f.id == data_ids[0])
        .unwrap()
        .reg
        .clone()
        .unwrap();
    assert_eq!(reg.pos, 7);
    // The pipe between the root (read end) and child 1 (write end), with its unread bytes.
    let pipe_of = |k: usize| {
        fdinfo(k)
            .iter()
            .filter(|e| e.r#type == FdTypes::Pipe as i32)
            .map(|e| {
                files
                    .iter()
                    .find(|f| f.id == e.id)
                    .unwrap()
                    .pipe
                    .clone()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let (rp, wp) = (pipe_of(0), pipe_of(1));
    assert_eq!((rp.len(), wp.len()), (1, 1));
    assert_eq!(rp[0].pipe_id, wp[0].pipe_id);
    assert_ne!(rp[0].id, wp[0].id);
    let mut rd = ImageReader::open_expect(img.join(names::PIPES_DATA), magic::PIPES_DATA).unwrap();
    let pd: criu_images::pb::PipeDataEntry = rd.read_one().unwrap();
    assert_eq!((pd.pipe_id, pd.bytes), (rp[0].pipe_id, 2));
    assert_eq!(rd.read_extra(2).unwrap(), b"hi");
    // The shared anonymous page: one object mapped by all three, saved once.
    let shmids: Vec<u64> = [root, c1, c2]
        .iter()
        .map(|&p| {
            dir.read_mm(p as u32)
                .unwrap()
                .vmas
                .iter()
                .find(|v| v.status & (1 << 8) != 0)
                .unwrap()
                .shmid
        })
        .collect();
    assert!(shmids.iter().all(|&s| s == shmids[0]));
    let spm = criu_images::Pagemap::read(img.join(names::pagemap_shmem(shmids[0]))).unwrap();
    assert_eq!(spm.present_pages(), 1);
    let sp = std::fs::read(dir.pages_path(spm.pages_id)).unwrap();
    assert!(sp.len() == 4096 && sp.iter().all(|&b| b == 0x42));
    // Each process has its own pages file.
    let mut page_files: Vec<u32> = [root, c1, c2]
        .iter()
        .map(|&p| dir.read_pagemap(p as u32).unwrap().pages_id)
        .collect();
    page_files.push(spm.pages_id);
    page_files.sort();
    page_files.dedup();
    assert_eq!(page_files.len(), 4);
    // All three run on untouched.
    for p in [root, c1, c2] {
        assert_eq!(tracer_pid(p), Some(0), "{p}");
        assert_ne!(proc_state(p), Some('T'));
    }
    // A default dump kills the whole tree.
    let img2 = d.path().join("img2");
    std::fs::create_dir(&img2).unwrap();
    assert_ok(&criu_dump(root, &img2, &[]), "dump");
    assert_eq!(
        v.wait(Duration::from_secs(5)),
        Some(Exit::Signal(libc::SIGKILL))
    );
    assert_eq!(
        wait_exit_timeout(c3, Duration::from_secs(5)).unwrap(),
        Some(Exit::Code(7)),
        "the zombie"
    );
    for k in [c1, c2] {
        assert_eq!(
            wait_exit_timeout(k, Duration::from_secs(5)).unwrap(),
            Some(Exit::Signal(libc::SIGKILL)),
            "child {k}"
        );
    }
}

#[test]
fn own_namespace_is_refused_and_runs_on() {
    let _g = test_lock();
    compel_criu_tests::skip_if_not_root!("own_namespace_is_refused_and_runs_on");
    become_subreaper();
    let d = open_dir();
    let out = d.path().join("count");
    let ready = d.path().join("ready");
    // The counter in a user namespace with a mount namespace of its own holding a mount
    // made over another one (overmounts are not restored, so refused; the namespace kinds
    // criu dumps, user and mount ones included, have their own tests).
    let path = criu_victim("counter");
    let over = d.path().join("over");
    std::fs::create_dir(&over).unwrap();
    let over = std::ffi::CString::new(over.to_str().unwrap()).unwrap();
    let mut cmd = Command::new(&path);
    cmd.args([out.to_str().unwrap(), ready.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: unshare, mount and close_range are async-signal-safe syscalls on the child
    // itself, with NUL-terminated strings made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for _ in 0..2 {
                if libc::mount(
                    c"tmpfs".as_ptr(),
                    over.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let v = Spawned::from_child(child);
    wait_file(&ready, Duration::from_secs(10));
    let img = images(d.path());
    let o = criu_dump(v.pid(), &img, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("overmounts are not restored"), "{err}");
    assert_eq!(tracer_pid(v.pid()), Some(0));
    let n = lines_of(&out);
    std::thread::sleep(Duration::from_millis(100));
    assert!(lines_of(&out) > n);
}
