//! Every image CRIU 4.2 wrote for the fixture programs decodes with our typed messages, and
//! re-encodes to the same bytes.

mod fixture_dir;
use fixture_dir::fixtures;

use criu_images::pb::*;
use criu_images::{ImageReader, ImageWriter, Pagemap, magic, names, pagemap, read_single};

/// Decodes all entries of an image as `M` and re-encodes them: the bytes must be identical.
fn roundtrip<M: criu_images::Described>(path: &std::path::Path, magic: u32) -> Vec<M> {
    let bytes = std::fs::read(path).unwrap();
    let mut r = ImageReader::new(bytes.as_slice(), path)
        .unwrap()
        .expect_magic(magic)
        .unwrap();
    let header = r.header().to_vec();
    let entries: Vec<M> = r.read_entries().unwrap_or_else(|e| panic!("{e}"));
    let mut w = ImageWriter::with_header(Vec::new(), path, &header).unwrap();
    for e in &entries {
        w.write_entry(e).unwrap();
    }
    assert_eq!(
        w.finish().unwrap(),
        bytes,
        "{} does not re-encode identically",
        path.display()
    );
    entries
}

fn pids(dir: &std::path::Path) -> Vec<u32> {
    let ps: Vec<PstreeEntry> = roundtrip(&dir.join(names::PSTREE), magic::PSTREE);
    ps.iter().flat_map(|p| p.threads.clone()).collect()
}

#[test]
fn single_process_images_decode() {
    let dir = fixtures().join("single");
    let inv: InventoryEntry = read_single(dir.join(names::INVENTORY), magic::INVENTORY).unwrap();
    assert_eq!(inv.img_version, magic::IMAGES_V1_1);
    assert_eq!(inv.lsmtype(), Lsmtype::NoLsm);

    let ps: Vec<PstreeEntry> = roundtrip(&dir.join(names::PSTREE), magic::PSTREE);
    assert_eq!(ps.len(), 1);
    let pid = ps[0].pid;
    assert_eq!(
        (ps[0].ppid, ps[0].pgid, ps[0].sid, ps[0].threads.clone()),
        (0, pid, pid, vec![pid])
    );

    let core: Vec<CoreEntry> = roundtrip(&dir.join(names::core(pid)), magic::CORE);
    let core = &core[0];
    assert_eq!(core.mtype(), CoreEntryMarch::X8664);
    let tc = core.tc.as_ref().unwrap();
    assert_eq!(tc.comm, "single");
    // SIGHUP (1) blocked.
    assert_eq!(tc.blk_sigset, 1);
    // One sigaction per signal 1..=64 but SIGKILL and SIGSTOP: SIGUSR1 (10) is at index 8 and
    // has a handler with SA_RESTART (0x10000000); SIGALRM (14), at index 12, is ignored (SIG_IGN).
    let sa = &tc.sigactions;
    assert_eq!(sa.len(), 62);
    assert_ne!(sa[8].sigaction, 0);
    assert_ne!(sa[8].flags & 0x1000_0000, 0);
    assert_eq!(sa[12].sigaction, 1);
    let real = tc.timers.as_ref().unwrap().real.clone();
    assert_eq!((real.isec, real.iusec), (100, 0));
    let ti = core.thread_info.as_ref().unwrap();
    assert_eq!(ti.gpregs.cs, 0x33);
    assert!(ti.fpregs.xsave.is_some());

    let mm: Vec<MmEntry> = roundtrip(&dir.join(names::mm(pid)), magic::MM);
    let mm = &mm[0];
    // The 3-page anonymous mapping with a PROT_NONE page in the middle: rw-, ---, rw- VMAs.
    let prots: Vec<u32> = mm.vmas.iter().map(|v| v.prot).collect();
    assert!(prots.windows(3).any(|w| w == [3, 0, 3]), "{prots:?}");

    let ids: Vec<TaskKobjIdsEntry> = roundtrip(&dir.join(names::ids(pid)), magic::IDS);
    let files_id = ids[0].files_id;
    let fds: Vec<FdinfoEntry> = roundtrip(&dir.join(names::fdinfo(files_id)), magic::FDINFO);
    let files: Vec<FileEntry> = roundtrip(&dir.join(names::FILES), magic::FILES);
    // /etc/hostname open at offset 3.
    let host = files
        .iter()
        .find(|f| f.reg.as_ref().is_some_and(|r| r.name == "/etc/hostname"))
        .unwrap();
    assert_eq!(host.reg.as_ref().unwrap().pos, 3);
    assert!(fds.iter().any(|fd| fd.id == host.id && fd.fd == 3));
    assert_eq!(FdTypes::try_from(host.r#type).unwrap(), FdTypes::Reg);

    let _: Vec<FsEntry> = roundtrip(&dir.join(names::fs(pid)), magic::FS);
    let _: Vec<SeccompEntry> = roundtrip(&dir.join(names::SECCOMP), magic::SECCOMP);
    let _: Vec<TimensEntry> = roundtrip(&dir.join(names::timens(0)), magic::TIMENS);
    let _: Vec<StatsEntry> = roundtrip(&dir.join(names::STATS_DUMP), magic::STATS);

    let pm = Pagemap::read(dir.join(names::pagemap(pid))).unwrap();
    let pages_len = std::fs::metadata(dir.join(pm.pages_file_name()))
        .unwrap()
        .len();
    assert_eq!(pm.present_pages() * pagemap::PAGE_SIZE, pages_len);
    // The heap pattern (0x42) and the anonymous mapping pattern (0x17) are in the pages file.
    let pages = std::fs::read(dir.join(pm.pages_file_name())).unwrap();
    let runs = pm.runs().unwrap();
    let m_vma = mm
        .vmas
        .iter()
        .zip(mm.vmas.iter().skip(1))
        .find(|(a, b)| a.prot == 3 && b.prot == 0 && a.end == b.start)
        .unwrap()
        .0;
    let run = runs
        .iter()
        .find(|r| r.vaddr <= m_vma.start && m_vma.start < r.vaddr + r.len())
        .unwrap();
    let off = (run.file_offset + (m_vma.start - run.vaddr)) as usize;
    assert!(pages[off..off + 4096].iter().all(|&b| b == 0x17));
}

#[test]
fn tree_images_decode() {
    let dir = fixtures().join("tree");
    let ps: Vec<PstreeEntry> = roundtrip(&dir.join(names::PSTREE), magic::PSTREE);
    assert_eq!(ps.len(), 3);
    let leader = &ps[0];
    assert_eq!(leader.threads.len(), 2);
    assert_eq!(leader.sid, leader.pid);
    assert!(
        ps[1..]
            .iter()
            .all(|p| p.ppid == leader.pid && p.sid == leader.pid)
    );
    assert_eq!(ps[1..].iter().filter(|p| p.pgid == p.pid).count(), 1);
    for tid in pids(&dir) {
        let core: Vec<CoreEntry> = roundtrip(&dir.join(names::core(tid)), magic::CORE);
        assert!(core[0].thread_info.is_some());
    }
    for p in &ps {
        let _: Vec<MmEntry> = roundtrip(&dir.join(names::mm(p.pid)), magic::MM);
        let _: Vec<TaskKobjIdsEntry> = roundtrip(&dir.join(names::ids(p.pid)), magic::IDS);
        let _: Vec<FsEntry> = roundtrip(&dir.join(names::fs(p.pid)), magic::FS);
        Pagemap::read(dir.join(names::pagemap(p.pid))).unwrap();
    }
    let memfd: Vec<MemfdInodeEntry> = roundtrip(&dir.join(names::MEMFD), magic::MEMFD_INODE);
    let shmid = memfd[0].shmid;
    let pm = Pagemap::read(dir.join(names::pagemap_shmem(shmid.into()))).unwrap();
    let pages = std::fs::read(dir.join(pm.pages_file_name())).unwrap();
    // The shared page holds `*shared = 7`.
    assert_eq!(&pages[..4], &7i32.to_le_bytes());
}

#[test]
fn pagemap_roundtrip_and_push_merges() {
    let mut pm = Pagemap {
        pages_id: 3,
        entries: vec![],
    };
    pm.push(0x1000, 1, pagemap::PE_PRESENT);
    pm.push(0x2000, 2, pagemap::PE_PRESENT);
    pm.push(0x5000, 1, pagemap::PE_PRESENT | pagemap::PE_LAZY);
    assert_eq!(pm.entries.len(), 2);
    assert_eq!(pm.entries[0].pages(), 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(names::pagemap(1));
    pm.write(&path).unwrap();
    assert_eq!(Pagemap::read(&path).unwrap(), pm);
    assert_eq!(pm.runs().unwrap()[1].file_offset, 3 * 4096);
}
