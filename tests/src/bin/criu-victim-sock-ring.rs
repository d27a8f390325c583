//! criu test victim: packet sockets with mapped rings (run it in a network namespace of its
//! own: it sends frames on `lo`).
//!
//! `criu-victim-sock-ring OUT READY` makes, bound to `lo` for ethertype 0x88b5:
//! - socket A, TPACKET_V2, with an RX ring and a TX ring (4 blocks of 16 KiB, 2 KiB frames
//!   each), both mapped with one `mmap`;
//! - socket B, TPACKET_V3, with an RX ring of 2 blocks of 64 KiB (10 ms block timeout), mapped;
//! - socket C without a ring, to send frames.
//!
//! Writes `ready PID` into READY. On SIGUSR1 it checks that each ring is still mapped at its
//! address with its length (`socket:[INO]` of the socket in /proc/self/maps), sends a frame
//! from C and reads it from A's RX ring and B's block ring, then sends a frame through A's TX
//! ring and reads it from B's; writes `check ok` or `bad: WHY` into OUT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static GO: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GO.store(true, Ordering::SeqCst);
}

const PROTO: u16 = 0x88b5;
const V2_BLOCK: u32 = 16 << 10;
const V2_BLOCKS: u32 = 4;
const FRAME: u32 = 2048;
const V3_BLOCK: u32 = 64 << 10;
const V3_BLOCKS: u32 = 2;

struct Ring {
    fd: i32,
    base: *mut u8,
    len: usize,
}

struct State {
    a: Ring,
    b: Ring,
    c: i32,
    /// Next frame of A's RX ring, next slot of its TX ring, next block of B's ring.
    a_rx: u32,
    a_tx: u32,
    b_blk: u32,
    round: u32,
}

fn lo() -> i32 {
    // SAFETY: a NUL-terminated constant name.
    unsafe { libc::if_nametoindex(c"lo".as_ptr()) as i32 }
}

fn packet_socket(version: Option<i32>) -> i32 {
    // SAFETY: socket/setsockopt/bind with live locals of the sizes given.
    unsafe {
        let s = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(PROTO.to_be()));
        assert!(s >= 0, "packet socket: {}", std::io::Error::last_os_error());
        if let Some(v) = version {
            assert_eq!(
                libc::setsockopt(
                    s,
                    libc::SOL_PACKET,
                    libc::PACKET_VERSION,
                    (&v as *const i32).cast(),
                    4
                ),
                0
            );
        }
        s
    }
}

fn bind_lo(s: i32) {
    // SAFETY: a zeroed sockaddr_ll is valid; bind reads it.
    unsafe {
        let mut a: libc::sockaddr_ll = std::mem::zeroed();
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = PROTO.to_be();
        a.sll_ifindex = lo();
        let r = libc::bind(
            s,
            (&a as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    }
}

fn ring(s: i32, opt: i32, block: u32, blocks: u32, tmo: u32) {
    let req = libc::tpacket_req3 {
        tp_block_size: block,
        tp_block_nr: blocks,
        tp_frame_size: FRAME,
        tp_frame_nr: block / FRAME * blocks,
        tp_retire_blk_tov: tmo,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    // SAFETY: setsockopt reads a live tpacket_req3.
    let r = unsafe {
        libc::setsockopt(
            s,
            libc::SOL_PACKET,
            opt,
            (&req as *const libc::tpacket_req3).cast(),
            std::mem::size_of::<libc::tpacket_req3>() as u32,
        )
    };
    assert_eq!(r, 0, "ring: {}", std::io::Error::last_os_error());
}

fn map(fd: i32, len: usize) -> Ring {
    // SAFETY: maps the rings of our own socket; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    Ring {
        fd,
        base: p.cast(),
        len,
    }
}

fn rd32(p: *const u8) -> u32 {
    // SAFETY: callers pass addresses inside a live ring mapping, 4-byte aligned.
    unsafe { std::ptr::read_volatile(p.cast::<u32>()) }
}

fn wr32(p: *mut u8, v: u32) {
    // SAFETY: as rd32.
    unsafe { std::ptr::write_volatile(p.cast::<u32>(), v) }
}

fn rd16(p: *const u8) -> u16 {
    // SAFETY: as rd32, 2-byte aligned.
    unsafe { std::ptr::read_volatile(p.cast::<u16>()) }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&PROTO.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Whether the frame `data` of `len` bytes carries `payload` after its Ethernet header.
fn carries(data: *const u8, len: usize, payload: &[u8]) -> bool {
    if len < 14 + payload.len() {
        return false;
    }
    // SAFETY: `len` bytes at `data` are inside the ring, as the kernel's header says.
    let got = unsafe { std::slice::from_raw_parts(data.add(14), payload.len()) };
    got == payload
}

/// Reads A's RX ring (TPACKET_V2 frames) until `payload` arrives, handing each frame back.
fn a_rx_expect(s: &mut State, payload: &[u8]) -> Result<(), String> {
    let frames = V2_BLOCK / FRAME * V2_BLOCKS;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        // SAFETY: frame `a_rx` lies inside the RX part of A's mapping.
        let f = unsafe { s.a.base.add((s.a_rx * FRAME) as usize) };
        let st = rd32(f);
        if st & libc::TP_STATUS_USER == 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let snap = rd32(f.wrapping_add(8)) as usize;
        let mac = rd16(f.wrapping_add(12)) as usize;
        let found = carries(f.wrapping_add(mac), snap, payload);
        wr32(f, libc::TP_STATUS_KERNEL);
        s.a_rx = (s.a_rx + 1) % frames;
        if found {
            return Ok(());
        }
    }
    Err(format!(
        "A's RX ring: {:?} did not arrive",
        String::from_utf8_lossy(payload)
    ))
}

/// Reads B's block ring (TPACKET_V3) until `payload` arrives, handing each block back.
fn b_expect(s: &mut State, payload: &[u8]) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        // SAFETY: block `b_blk` lies inside B's mapping.
        let blk = unsafe { s.b.base.add((s.b_blk * V3_BLOCK) as usize) };
        if rd32(blk.wrapping_add(8)) & libc::TP_STATUS_USER == 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let n = rd32(blk.wrapping_add(12));
        let mut p = blk.wrapping_add(rd32(blk.wrapping_add(16)) as usize);
        let mut found = false;
        for _ in 0..n {
            let snap = rd32(p.wrapping_add(12)) as usize;
            let mac = rd16(p.wrapping_add(24)) as usize;
            found |= carries(p.wrapping_add(mac), snap, payload);
            p = p.wrapping_add(rd32(p) as usize);
        }
        wr32(blk.wrapping_add(8), libc::TP_STATUS_KERNEL);
        s.b_blk = (s.b_blk + 1) % V3_BLOCKS;
        if found {
            return Ok(());
        }
    }
    Err(format!(
        "B's block ring: {:?} did not arrive",
        String::from_utf8_lossy(payload)
    ))
}

/// Sends `payload` through A's TX ring.
fn a_tx(s: &mut State, payload: &[u8]) -> Result<(), String> {
    let frames = V2_BLOCK / FRAME * V2_BLOCKS;
    let f = frame(payload);
    // SAFETY: slot `a_tx` lies inside the TX part of A's mapping (after the RX part); the
    // frame's data goes 32 bytes in (the aligned tpacket2_hdr), well within the slot.
    unsafe {
        let slot =
            s.a.base
                .add((V2_BLOCK * V2_BLOCKS + s.a_tx * FRAME) as usize);
        if rd32(slot) != libc::TP_STATUS_AVAILABLE {
            return Err(format!("TX slot {} busy: {:#x}", s.a_tx, rd32(slot)));
        }
        std::ptr::copy_nonoverlapping(f.as_ptr(), slot.add(32), f.len());
        wr32(slot.add(4), f.len() as u32);
        wr32(slot, libc::TP_STATUS_SEND_REQUEST);
        let n = libc::send(s.a.fd, std::ptr::null(), 0, 0);
        if n != f.len() as isize {
            return Err(format!(
                "send through the TX ring: {n} ({})",
                std::io::Error::last_os_error()
            ));
        }
    }
    s.a_tx = (s.a_tx + 1) % frames;
    Ok(())
}

fn mapped(r: &Ring, what: &str) -> Result<(), String> {
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", r.fd))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| e.to_string())?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let want = format!("{:x}-{:x}", r.base as usize, r.base as usize + r.len);
    let line = maps
        .lines()
        .find(|l| l.starts_with(&want))
        .ok_or(format!("{what}: no mapping {want}"))?;
    if !line.ends_with(&format!("socket:[{ino}]")) {
        return Err(format!("{what}: {line} is not socket:[{ino}]"));
    }
    Ok(())
}

fn check(s: &mut State) -> Result<(), String> {
    mapped(&s.a, "A")?;
    mapped(&s.b, "B")?;
    s.round += 1;
    let c = format!("from-c-{}", s.round);
    let f = frame(c.as_bytes());
    // SAFETY: send from a live buffer on our own bound socket.
    if unsafe { libc::send(s.c, f.as_ptr().cast(), f.len(), 0) } != f.len() as isize {
        return Err(format!("send from C: {}", std::io::Error::last_os_error()));
    }
    a_rx_expect(s, c.as_bytes())?;
    b_expect(s, c.as_bytes())?;
    let t = format!("from-tx-{}", s.round);
    a_tx(s, t.as_bytes())?;
    b_expect(s, t.as_bytes())?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, ready] = &args[..] else {
        eprintln!("usage: criu-victim-sock-ring OUT READY");
        std::process::exit(2);
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let a = packet_socket(Some(libc::tpacket_versions::TPACKET_V2 as i32));
    ring(a, libc::PACKET_RX_RING, V2_BLOCK, V2_BLOCKS, 0);
    ring(a, libc::PACKET_TX_RING, V2_BLOCK, V2_BLOCKS, 0);
    bind_lo(a);
    let a = map(a, 2 * (V2_BLOCK * V2_BLOCKS) as usize);
    let b = packet_socket(Some(libc::tpacket_versions::TPACKET_V3 as i32));
    ring(b, libc::PACKET_RX_RING, V3_BLOCK, V3_BLOCKS, 10);
    bind_lo(b);
    let b = map(b, (V3_BLOCK * V3_BLOCKS) as usize);
    let c = packet_socket(None);
    bind_lo(c);
    let mut st = State {
        a,
        b,
        c,
        a_rx: 0,
        a_tx: 0,
        b_blk: 0,
        round: 0,
    };
    let tmp = format!("{ready}.tmp");
    std::fs::write(&tmp, format!("ready {}", std::process::id())).unwrap();
    std::fs::rename(&tmp, ready).unwrap();
    loop {
        if GO.swap(false, Ordering::SeqCst) {
            let verdict = match check(&mut st) {
                Ok(()) => "check ok".to_string(),
                Err(e) => format!("bad: {e}"),
            };
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, verdict).unwrap();
            std::fs::rename(&tmp, out).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
