//! The task's memory work: where each premapped area and shared object goes in the
//! reservation, the page runs read into them, and the share of a fill helper.

use crate::restore::layout::{HUGE, PAGE, page_up};
use crate::restore::ops::{CowArea, FillOp, PremapOp, TaskCtx};
use crate::restore::plan::{TaskPlan, Vma, VmaKind};

/// The `MAP_HUGE_*` bits of `mmap`'s flags: the log2 of the huge page size.
const MAP_HUGE_MASK: i32 = 0x3f << 26;

/// `MAP_HUGETLB` and its page size bits for an anonymous hugetlb area, 0 for any other.
pub(crate) fn hugetlb_flags(v: &Vma) -> i32 {
    if v.flags & libc::MAP_HUGETLB != 0 && matches!(v.kind, VmaKind::AnonPrivate) {
        v.flags & (libc::MAP_HUGETLB | MAP_HUGE_MASK)
    } else {
        0
    }
}

/// Whether area `v` can be shared copy-on-write with a parent's or a child's same area:
/// plain private anonymous memory (not a stack growing down, not hugetlb, not droppable).
fn cow_eligible(v: &Vma) -> bool {
    matches!(v.kind, VmaKind::AnonPrivate)
        && v.flags & 0x0f == libc::MAP_PRIVATE
        && v.flags & (libc::MAP_GROWSDOWN | libc::MAP_HUGETLB) == 0
}

/// `runs` less `minus` (both sorted, disjoint `[start, end)`).
fn subtract(runs: &[(u64, u64)], minus: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in runs {
        let mut a = s;
        for &(ms, me) in minus {
            if me <= a || ms >= e {
                continue;
            }
            if ms > a {
                out.push((a, ms));
            }
            a = a.max(me);
            if a >= e {
                break;
            }
        }
        if a < e {
            out.push((a, e));
        }
    }
    out
}

/// Fills of at least this many bytes are shared with a helper process.
pub(crate) const HELPER_MIN_FILL: u64 = 64 << 20;
/// Shared anonymous objects mapped by more than one area of this task and not made by the
/// engine: `(shmid, size)`. They are made once and shared by every area that maps them; an
/// object mapped by one area is just that area.
pub(super) fn shared_objects(premapped: &[&Vma], ctx: &TaskCtx) -> Vec<(u64, u64)> {
    let mut seen: Vec<(u64, u64, usize)> = Vec::new();
    for v in premapped {
        if let VmaKind::AnonShared { shmid } = v.kind
            && !ctx.shm.contains_key(&shmid)
        {
            let end = v.pgoff + v.len();
            match seen.iter_mut().find(|o| o.0 == shmid) {
                Some(o) => {
                    o.1 = o.1.max(end);
                    o.2 += 1;
                }
                None => seen.push((shmid, end, 1)),
            }
        }
    }
    seen.into_iter()
        .filter(|o| o.2 > 1)
        .map(|o| (o.0, page_up(o.1)))
        .collect()
}

/// Where each premapped area and each shared object goes, as offsets from the 2 MiB aligned
/// base of the reservation, and the size of it all. An area of 2 MiB or more is placed at the
/// same offset within a 2 MiB block as its final address, so that moving it into place moves
/// whole page tables and huge pages instead of splitting them.
pub(super) fn premap_layout(
    premapped: &[&Vma],
    objects: &[(u64, u64)],
) -> (Vec<u64>, Vec<u64>, u64) {
    let mut off = 0;
    let mut areas = Vec::with_capacity(premapped.len());
    for v in premapped {
        if v.len() >= HUGE {
            off += (v.start.wrapping_sub(off)) & (HUGE - 1);
        }
        areas.push(off);
        off += v.len();
    }
    let mut objs = Vec::with_capacity(objects.len());
    for (_, size) in objects {
        objs.push(off);
        off += size;
    }
    (areas, objs, off)
}

/// The 2 MiB blocks (premap addresses, merged into sorted ranges) that the fills cover whole
/// inside areas `eligible` accepts: these get a huge page each before they are filled.
fn huge_chunks(
    fills: &[FillOp],
    fill_area: &[usize],
    eligible: impl Fn(usize) -> bool,
) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (f, &i) in fills.iter().zip(fill_area) {
        if !eligible(i) {
            continue;
        }
        match spans.last_mut() {
            Some(s) if s.1 == f.addr => s.1 += f.len,
            _ => spans.push((f.addr, f.addr + f.len)),
        }
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in spans {
        let (a, b) = (s.next_multiple_of(HUGE), e & !(HUGE - 1));
        if a < b {
            out.push((a, b - a));
        }
    }
    out.sort_unstable();
    out
}

/// Splits the fills in two halves of about the same bytes for the task and its fill helper,
/// cutting a run at a 2 MiB boundary when one straddles the middle; returns where the
/// helper's half starts.
fn split_fills(fills: &mut Vec<FillOp>) -> usize {
    let total: u64 = fills.iter().map(|f| f.len).sum();
    let mut acc = 0;
    for k in 0..fills.len() {
        let f = &fills[k];
        if (acc + f.len) * 2 <= total {
            acc += f.len;
            continue;
        }
        let cut = (f.addr + (total / 2 - acc)) & !(HUGE - 1);
        if cut <= f.addr {
            return k;
        }
        if cut >= f.addr + f.len {
            return k + 1;
        }
        let head = cut - f.addr;
        let tail = FillOp {
            file: f.file,
            offset: f.offset + head,
            addr: cut,
            len: f.len - head,
            anon: f.anon,
        };
        fills[k].len = head;
        fills.insert(k + 1, tail);
        return k + 1;
    }
    fills.len()
}
/// The task's memory work: the areas to premap and the page runs to read into them.
pub(super) struct MemoryPlan {
    /// Premap addresses of the premapped areas, in order.
    pub(super) premap_addr: Vec<u64>,
    /// The areas and temporary shared objects to premap.
    pub(super) premap: Vec<PremapOp>,
    /// The page runs.
    pub(super) fills: Vec<FillOp>,
    /// The page runs into areas taken over from the parent.
    pub(super) cow_fills: Vec<FillOp>,
    /// Ranges of those areas to empty.
    pub(super) cow_zero: Vec<(u64, u64)>,
    /// This task's areas its children may take over.
    pub(super) cow_areas: Vec<CowArea>,
    /// Whole 2 MiB blocks to give a huge page first.
    pub(super) collapse: Vec<(u64, u64)>,
    /// The fill helper's pid, when the fill is big enough to share.
    pub(super) helper: Option<i32>,
    /// The helper's share: the runs from this index on.
    pub(super) helper_from: usize,
    /// Guard ranges (`MADV_GUARD_INSTALL`) at the premapped copies of their areas.
    pub(super) guards: Vec<(u64, u64)>,
}

/// Lays out the premapped areas of the task at `base` and splits its page runs over them.
pub(super) fn memory_plan(
    plan: &TaskPlan,
    ctx: &TaskCtx,
    premapped: &[&Vma],
    base: u64,
) -> MemoryPlan {
    // Premap addresses, in order; then the shared objects that several areas map.
    let objects = shared_objects(premapped, ctx);
    let (area_off, object_off, _) = premap_layout(premapped, &objects);
    let premap_addr: Vec<u64> = area_off.iter().map(|o| base + o).collect();
    let object_addr: std::collections::HashMap<u64, u64> = objects
        .iter()
        .zip(&object_off)
        .map(|((shmid, _), o)| (*shmid, base + o))
        .collect();
    let shared_at = |v: &Vma| match v.kind {
        VmaKind::AnonShared { shmid } => object_addr
            .get(&shmid)
            .or(ctx.shm.get(&shmid))
            .map(|a| a + v.pgoff),
        _ => None,
    };
    // Objects the engine made and filled for the whole tree.
    let engine_filled = |v: &Vma| match v.kind {
        VmaKind::AnonShared { shmid } => ctx.shm.contains_key(&shmid),
        _ => false,
    };
    // Where the bytes for `addr` go: the area's premapped copy, or its shared object.
    let to_premap = |addr: u64| -> Option<(usize, u64)> {
        premapped
            .iter()
            .position(|v| v.start <= addr && addr < v.end)
            .map(|i| {
                let v = premapped[i];
                let at = shared_at(v).unwrap_or(premap_addr[i]);
                (i, at + (addr - v.start))
            })
    };

    // Areas taken over from the parent: the same area, premapped and filled there.
    let inherit: Vec<Option<&CowArea>> = premapped
        .iter()
        .map(|v| {
            if !cow_eligible(v) {
                return None;
            }
            ctx.cow_from
                .iter()
                .find(|c| c.start == v.start && c.end == v.end && c.flags == v.flags)
                .filter(|c| !c.pages.is_empty())
        })
        .collect();

    // Guard ranges, at the premapped copies of their areas (mremap moves the guards along).
    let mut guards = Vec::new();
    for &(s, e) in &plan.guards {
        for (i, v) in premapped.iter().enumerate() {
            let (a, b) = (s.max(v.start), e.min(v.end));
            if a < b {
                guards.push((premap_addr[i] + (a - v.start), b - a));
            }
        }
    }

    // Page runs, split at area boundaries.
    let mut fills = Vec::new();
    let mut cow_fills = Vec::new();
    // Each area's runs of saved pages (final addresses).
    let mut own_runs: Vec<Vec<(u64, u64)>> = vec![Vec::new(); premapped.len()];
    let mut filled = vec![false; premapped.len()];
    let mut fill_bytes = 0u64;
    let mut fill_area = Vec::new();
    for run in &plan.pages {
        let mut a = run.vaddr;
        let end = run.vaddr + run.nr_pages * PAGE;
        while a < end {
            let Some((i, pa)) = to_premap(a) else {
                // A special area (vdso): its pages are the kernel's.
                a = plan
                    .vmas
                    .iter()
                    .find(|v| v.start <= a && a < v.end)
                    .map_or(end, |v| v.end.min(end));
                continue;
            };
            let v = premapped[i];
            let b = v.end.min(end);
            if inherit[i].is_some() {
                own_runs[i].push((a, b));
                cow_fills.push(FillOp {
                    file: run.file,
                    offset: run.offset + (a - run.vaddr),
                    addr: pa,
                    len: b - a,
                    anon: false,
                });
                filled[i] = true;
            } else if !matches!(v.kind, VmaKind::FileShared { .. }) && !engine_filled(v) {
                own_runs[i].push((a, b));
                fills.push(FillOp {
                    file: run.file,
                    offset: run.offset + (a - run.vaddr),
                    addr: pa,
                    len: b - a,
                    anon: matches!(v.kind, VmaKind::AnonPrivate)
                        && v.flags & (libc::MAP_GROWSDOWN | libc::MAP_HUGETLB) == 0,
                });
                fill_area.push(i);
                filled[i] = true;
                fill_bytes += b - a;
            }
            a = b;
        }
    }
    // What the parent saved and this task did not reads as zeros here again.
    let mut cow_zero = Vec::new();
    for (i, c) in inherit.iter().enumerate() {
        if let Some(c) = c {
            let mut mine = own_runs[i].clone();
            mine.sort_unstable();
            for (a, b) in subtract(&c.pages, &mine) {
                cow_zero.push((premap_addr[i] + (a - premapped[i].start), b - a));
            }
        }
    }
    let cow_areas: Vec<CowArea> = premapped
        .iter()
        .enumerate()
        .filter(|&(i, v)| cow_eligible(v) && !own_runs[i].is_empty())
        .map(|(i, v)| {
            let mut pages = own_runs[i].clone();
            pages.sort_unstable();
            CowArea {
                start: v.start,
                end: v.end,
                flags: v.flags,
                addr: premap_addr[i],
                pages,
            }
        })
        .collect();
    let helper = ctx.helper_pid.filter(|_| fill_bytes >= HELPER_MIN_FILL);
    // Not for a process that turned huge pages off for itself (PR_SET_THP_DISABLE).
    let collapse = if ctx.huge_pages && plan.thp_disabled != Some(true) {
        huge_chunks(&fills, &fill_area, |i| {
            let v = premapped[i];
            matches!(v.kind, VmaKind::AnonPrivate)
                && v.flags & (libc::MAP_GROWSDOWN | libc::MAP_HUGETLB) == 0
                && v.madv & (1 << libc::MADV_NOHUGEPAGE) == 0
        })
    } else {
        Vec::new()
    };
    let helper_from = if helper.is_some() {
        split_fills(&mut fills)
    } else {
        fills.len()
    };
    let mut premap: Vec<PremapOp> = premapped
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let grows = v.flags & libc::MAP_GROWSDOWN;
            // Anonymous hugetlb memory: MAP_HUGETLB and the page size, as dumped.
            let huge = hugetlb_flags(v);
            // Locked (mlock, MAP_LOCKED) areas are locked again once filled.
            let locked = v.flags & libc::MAP_LOCKED;
            let (map_flags, file) = match &v.kind {
                VmaKind::AnonShared { .. } => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, None),
                VmaKind::FilePrivate { path } => {
                    (libc::MAP_PRIVATE, Some((path.clone(), libc::O_RDONLY)))
                }
                VmaKind::FileShared { path, writable } => (
                    libc::MAP_SHARED,
                    Some((
                        path.clone(),
                        if *writable {
                            libc::O_RDWR
                        } else {
                            libc::O_RDONLY
                        },
                    )),
                ),
                // MAP_DROPPABLE (0x08) is a mapping type of its own.
                _ if v.flags & 0x0f == 0x08 => (0x08 | libc::MAP_ANONYMOUS, None),
                _ => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | grows | huge, None),
            };
            PremapOp {
                addr: premap_addr[i],
                len: v.len(),
                prot: v.prot,
                map_flags: map_flags | locked,
                file,
                pgoff: v.pgoff,
                fill: filled[i],
                dup_of: shared_at(v),
                temporary: false,
                madv: v.madv,
                inherit_from: inherit[i].map(|c| c.addr),
            }
        })
        .collect();
    for (shmid, size) in &objects {
        premap.push(PremapOp {
            addr: object_addr[shmid],
            len: *size,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            map_flags: libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            file: None,
            pgoff: 0,
            fill: true,
            madv: 0,
            dup_of: None,
            temporary: true,
            inherit_from: None,
        });
    }

    MemoryPlan {
        premap_addr,
        premap,
        fills,
        cow_fills,
        cow_zero,
        cow_areas,
        collapse,
        helper,
        helper_from,
        guards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn run(addr: u64, len: u64) -> FillOp {
        FillOp {
            file: 0,
            offset: addr,
            addr,
            len,
            anon: true,
        }
    }

    #[test]
    fn huge_chunks_are_whole_covered_blocks_of_eligible_areas() {
        let m = 1 << 20;
        // Area 0: runs 1..4 MiB and 4..9 MiB (contiguous), then 11..13.5 MiB; area 1 not
        // eligible.
        let fills = [
            run(m, 3 * m),
            run(4 * m, 5 * m),
            run(11 * m, 5 * m / 2),
            run(20 * m, 4 * m),
        ];
        let got = huge_chunks(&fills, &[0, 0, 0, 1], |i| i == 0);
        // 2..8 MiB from the first span; 12..13.5 MiB holds no whole block.
        assert_eq!(got, vec![(2 * m, 6 * m)]);
        assert!(huge_chunks(&fills, &[0, 0, 0, 1], |_| false).is_empty());
    }

    #[test]
    fn a_child_takes_over_its_parents_same_area_and_writes_only_its_own_pages() {
        let m = 1 << 20;
        let area = Vma {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0000_0000 + 4 * m,
            pgoff: 0,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            flags: libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            madv: 0,
            kind: VmaKind::AnonPrivate,
        };
        let s = area.start;
        // The child saved the first 2 MiB; the parent saved all 4 MiB.
        let plan = TaskPlan {
            vmas: vec![area.clone()],
            pages: vec![crate::restore::plan::PageRun {
                vaddr: s,
                nr_pages: 2 * m / PAGE,
                file: 0,
                offset: 0,
            }],
            ..TaskPlan::default()
        };
        let parent = CowArea {
            start: area.start,
            end: area.end,
            flags: area.flags,
            addr: 0x1000_0000,
            pages: vec![(s, s + 4 * m)],
        };
        let ctx = TaskCtx {
            cow_from: vec![parent],
            ..TaskCtx::default()
        };
        let base = 0x2000_0000;
        let mp = memory_plan(&plan, &ctx, &[&area], base);
        assert_eq!(mp.premap[0].inherit_from, Some(0x1000_0000));
        assert!(mp.premap[0].fill);
        assert!(mp.fills.is_empty());
        assert_eq!(mp.cow_fills.len(), 1);
        assert_eq!((mp.cow_fills[0].addr, mp.cow_fills[0].len), (base, 2 * m));
        assert_eq!(mp.cow_zero, vec![(base + 2 * m, 2 * m)]);
        assert_eq!(mp.cow_areas.len(), 1);
        assert_eq!(mp.cow_areas[0].pages, vec![(s, s + 2 * m)]);
        // A stack (growing down) is never taken over.
        let stack = Vma {
            flags: area.flags | libc::MAP_GROWSDOWN,
            ..area.clone()
        };
        let mp = memory_plan(&plan, &ctx, &[&stack], base);
        assert_eq!(mp.premap[0].inherit_from, None);
        assert_eq!(mp.fills.len(), 1);
        assert!(mp.cow_fills.is_empty() && mp.cow_zero.is_empty());
    }

    #[test]
    fn subtract_leaves_what_the_other_runs_do_not_cover() {
        let got = subtract(&[(0, 10), (20, 30)], &[(2, 4), (8, 22), (25, 26)]);
        assert_eq!(got, vec![(0, 2), (4, 8), (22, 25), (26, 30)]);
        assert_eq!(subtract(&[(0, 10)], &[]), vec![(0, 10)]);
        assert!(subtract(&[(5, 10)], &[(0, 20)]).is_empty());
    }

    #[test]
    fn split_fills_halves_at_a_block_boundary() {
        let m = 1 << 20;
        let mut fills = vec![run(3 * m, 100 * m)];
        let k = split_fills(&mut fills);
        assert_eq!(k, 1);
        assert_eq!(fills.len(), 2);
        assert_eq!(fills[1].addr % HUGE, 0);
        assert_eq!(fills[0].len + fills[1].len, 100 * m);
        assert_eq!(fills[1].offset, fills[1].addr);
        assert!(fills[0].len.abs_diff(fills[1].len) <= HUGE * 2);
        // Many small runs: cut between them.
        let mut fills: Vec<FillOp> = (0..10).map(|i| run(i * 8 * m, 4096)).collect();
        assert_eq!(split_fills(&mut fills), 5);
        assert_eq!(fills.len(), 10);
    }

    #[test]
    fn big_areas_keep_their_offset_within_a_block() {
        let m = 1 << 20;
        let vma = |start: u64, len: u64| Vma {
            start,
            end: start + len,
            pgoff: 0,
            prot: 0,
            flags: 0,
            madv: 0,
            kind: VmaKind::AnonPrivate,
        };
        let (a, b, c) = (
            vma(0x1000, 0x3000),
            vma(0x7f00_0012_3000, 64 * m),
            vma(0x7f10_0000_5000, 0x2000),
        );
        let (areas, objs, total) = premap_layout(&[&a, &b, &c], &[(7, 4 * m)]);
        assert_eq!(areas[0], 0);
        assert_eq!(areas[1] % HUGE, b.start % HUGE);
        assert!(areas[1] >= 0x3000);
        assert_eq!(areas[2], areas[1] + 64 * m);
        assert_eq!(objs, vec![areas[2] + 0x2000]);
        assert_eq!(total, objs[0] + 4 * m);
    }
}
