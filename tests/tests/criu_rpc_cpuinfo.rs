//! `criu cpuinfo dump|check` and the RPC `CPUINFO_DUMP`/`CPUINFO_CHECK`: this CPU into CRIU's
//! `cpuinfo.img`, read back by crit, checked against this CPU; an image of a CPU with more
//! instructions, or a bigger xsave frame, fails the check with the reason.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compel_criu_tests::{criu, criu_bin, open_dir, stderr_text, workspace_bin};
use criu_images::magic;
use criu_images::pb::{CpuinfoEntry, CriuOpts, CriuReq, CriuReqType, CriuResp};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, recv, send, setsockopt, socketpair, sockopt,
};
use nix::sys::time::TimeVal;
use prost::Message;

fn read_entry(dir: &std::path::Path) -> CpuinfoEntry {
    criu_images::image::read_single(dir.join("cpuinfo.img"), magic::CPUINFO).unwrap()
}

fn write_entry(dir: &std::path::Path, e: &CpuinfoEntry) {
    criu_images::image::write_all(dir.join("cpuinfo.img"), magic::CPUINFO, [e]).unwrap();
}

#[test]
fn cpuinfo_dump_writes_this_cpu_and_check_accepts_it() {
    let d = open_dir();
    let dir = d.path().to_str().unwrap();
    let o = criu(&["cpuinfo", "dump", "-D", dir]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let e = read_entry(d.path());
    assert_eq!(e.x86_entry.len(), 1);
    let x = &e.x86_entry[0];
    assert_eq!((x.capability_ver, x.capability.len()), (2, 19));
    // Facts /proc/cpuinfo shows too: the family, and fpu and sse2 among the flags.
    let proc = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let field = |k: &str| {
        proc.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(field("cpu family"), x.cpu_family.to_string());
    assert_eq!(field("model\t"), x.model.to_string());
    let flags = field("flags");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    assert_eq!(has("fpu"), x.capability[0] & 1 != 0);
    assert_eq!(has("sse2"), x.capability[0] & (1 << 26) != 0);
    assert_eq!(has("avx2"), x.capability[9] & (1 << 5) != 0);
    assert!(x.xfeatures_mask.unwrap_or(0) & 3 == 3, "{x:?}");

    // crit decodes it.
    let crit = workspace_bin("crit", "crit");
    let o = Command::new(crit)
        .args(["decode", "-i"])
        .arg(d.path().join("cpuinfo.img"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("\"CPUINFO\"") && text.contains("x86_entry"),
        "{text}"
    );

    let o = criu(&["cpuinfo", "check", "-D", dir]);
    assert!(o.status.success(), "{}", stderr_text(&o));
}

#[test]
fn an_image_of_a_richer_cpu_fails_the_check_with_the_reason() {
    let d = open_dir();
    let dir = d.path().to_str().unwrap();
    assert!(criu(&["cpuinfo", "dump", "-D", dir]).status.success());
    let mine = read_entry(d.path());

    // Every instruction word full: something this CPU lacks (AVX-512 4FMAPS at least).
    let mut richer = mine.clone();
    richer.x86_entry[0].capability[18] |= 0xc;
    if richer != mine {
        write_entry(d.path(), &richer);
        let o = criu(&["cpuinfo", "check", "-D", dir]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr_text(&o).contains("instruction features"),
            "{}",
            stderr_text(&o)
        );
        // --cpu-cap=fpu does not look at those instructions.
        let o = criu(&["cpuinfo", "check", "-D", dir, "--cpu-cap=fpu"]);
        assert!(o.status.success(), "{}", stderr_text(&o));
    }

    let mut bigger = mine.clone();
    bigger.x86_entry[0].xsave_size = Some(bigger.x86_entry[0].xsave_size.unwrap_or(0) + 64);
    write_entry(d.path(), &bigger);
    let o = criu(&["cpuinfo", "check", "-D", dir, "--cpu-cap=fpu"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_text(&o).contains("xsave size"),
        "{}",
        stderr_text(&o)
    );
    let o = criu(&["cpuinfo", "check", "-D", dir, "--cpu-cap=ins"]);
    assert!(o.status.success(), "{}", stderr_text(&o));

    // A malformed entry: a capability word short.
    let mut short = mine.clone();
    short.x86_entry[0].capability.pop();
    write_entry(d.path(), &short);
    let o = criu(&["cpuinfo", "check", "-D", dir]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_text(&o).contains("capability words"),
        "{}",
        stderr_text(&o)
    );

    // No action, an unknown one, one word too many.
    for args in [
        &["cpuinfo", "-D", dir][..],
        &["cpuinfo", "frob", "-D", dir],
        &["cpuinfo", "check", "more", "-D", dir],
    ] {
        let o = criu(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
    }
}

fn swrk_call(reqs: &[CriuReq]) -> Vec<CriuResp> {
    let (ours, theirs): (OwnedFd, OwnedFd) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let fd = nix::unistd::dup(&theirs).unwrap();
    let mut child: Child = Command::new(criu_bin())
        .arg("swrk")
        .arg(fd.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    drop(fd);
    drop(theirs);
    setsockopt(&ours, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).unwrap();
    let mut out = Vec::new();
    for q in reqs {
        send(ours.as_raw_fd(), &q.encode_to_vec(), MsgFlags::empty()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = recv(ours.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        out.push(CriuResp::decode(&buf[..n]).unwrap());
    }
    drop(ours);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "criu swrk did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}

#[test]
fn rpc_cpuinfo_dump_and_check() {
    let d = open_dir();
    let dir = std::fs::File::open(d.path()).unwrap();
    let req = |ty: CriuReqType, cap: Option<u32>| CriuReq {
        r#type: ty as i32,
        keep_open: Some(true),
        opts: Some(CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            cpu_cap: cap,
            log_file: Some("cpuinfo.log".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A check before any dump: no image.
    let r = swrk_call(&[req(CriuReqType::CpuinfoCheck, None)]);
    assert!(!r[0].success);
    assert!(
        r[0].cr_errmsg
            .as_deref()
            .unwrap_or("")
            .contains("cpuinfo.img"),
        "{:?}",
        r[0]
    );
    let r = swrk_call(&[
        req(CriuReqType::CpuinfoDump, None),
        req(CriuReqType::CpuinfoCheck, None),
    ]);
    assert!(r[0].success, "{:?}", r[0]);
    assert_eq!(r[0].r#type, CriuReqType::CpuinfoDump as i32);
    assert!(r[1].success, "{:?}", r[1]);
    assert_eq!(read_entry(d.path()).x86_entry.len(), 1);

    // A bigger xsave frame in the image: refused with cpu_cap fpu (1), accepted with ins (4).
    let mut e = read_entry(d.path());
    e.x86_entry[0].xsave_size = Some(e.x86_entry[0].xsave_size.unwrap_or(0) + 64);
    write_entry(d.path(), &e);
    let r = swrk_call(&[
        req(CriuReqType::CpuinfoCheck, Some(1)),
        req(CriuReqType::CpuinfoCheck, Some(4)),
    ]);
    assert!(!r[0].success);
    assert!(
        r[0].cr_errmsg
            .as_deref()
            .unwrap_or("")
            .contains("xsave size")
    );
    assert!(r[1].success, "{:?}", r[1]);
}
