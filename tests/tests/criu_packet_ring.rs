//! Packet sockets with `PACKET_RX_RING` / `PACKET_TX_RING` rings mapped in the task
//! (TPACKET_V2 with both rings, TPACKET_V3 with a block ring), in a network namespace the
//! test makes (loopback only): dumped as CRIU writes them (`packet_ring` entries, a
//! `VMA_AREA_SOCKET` area whose shmid is the socket's file id), restored with the rings set up
//! again and mapped at the same address; the victim then receives and sends through them.

use std::path::PathBuf;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, spawn_ready_with, test_lock,
};
use criu_images::pb::{FdTypes, FileEntry, MmEntry};
use criu_images::vma::status;
use criu_images::{magic, names};

const VICTIM: &str = env!("CARGO_BIN_EXE_criu-victim-sock-ring");

#[test]
fn ring_victim_checks_pass_untouched() {
    skip_if_not_root!("ring_victim_checks_pass_untouched");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let d = tempfile::tempdir().unwrap();
        let v = spawn_ready_with(VICTIM, d.path(), &[], &[]);
        assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
        let _ = std::fs::remove_file(d.path().join("out"));
        assert_eq!(ask_check(v.pid(), &d.path().join("out")), "check ok");
    });
}

#[test]
fn packet_rings_come_back_mapped_at_the_same_address() {
    skip_if_not_root!("packet_rings_come_back_mapped_at_the_same_address");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let d = tempfile::tempdir().unwrap();
        let mut v = spawn_ready_with(VICTIM, d.path(), &[], &[]);
        let pid = v.pid();
        let img: PathBuf = d.path().join("img");
        dump_and_reap(&mut v, &img, &[]);

        // CRIU's shape: two packet sockets with rings, two socket areas naming them.
        let files: Vec<FileEntry> =
            criu_images::read_all(img.join(names::FILES), magic::FILES).unwrap();
        let psk: Vec<_> = files
            .iter()
            .filter(|f| f.r#type == FdTypes::Packetsk as i32)
            .filter_map(|f| f.psk.as_ref())
            .collect();
        let v2 = psk
            .iter()
            .find(|p| p.version == 1)
            .expect("the TPACKET_V2 socket");
        let rx = v2.rx_ring.as_ref().expect("its rx ring");
        assert_eq!(
            (rx.block_size, rx.block_nr, rx.frame_size),
            (16384, 4, 2048)
        );
        assert!(v2.tx_ring.is_some(), "its tx ring");
        let v3 = psk.iter().find(|p| p.version == 2).expect("the V3 socket");
        assert_eq!(v3.rx_ring.as_ref().map(|r| r.retire_tmo), Some(10));
        let mm: Vec<MmEntry> =
            criu_images::read_all(img.join(format!("mm-{pid}.img")), magic::MM).unwrap();
        let areas: Vec<_> = mm[0]
            .vmas
            .iter()
            .filter(|a| a.status & status::SOCKET != 0)
            .collect();
        assert_eq!(areas.len(), 2, "socket areas");
        for a in &areas {
            assert!(
                psk.iter().any(|p| u64::from(p.id) == a.shmid),
                "area {:#x} names file id {}",
                a.start,
                a.shmid
            );
        }

        let r = restore_detached(&img, &[]);
        assert_eq!(r, pid);
        let rv = Spawned::guard(r);
        assert_eq!(ask_check(rv.pid(), &d.path().join("out")), "check ok");
    });
}
