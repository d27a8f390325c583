//! One task the lazy-pages daemon serves: where its areas are now against where the images
//! had them (`mremap` moves them), and which saved pages it still misses.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use super::images::TaskLazy;

/// One area of a task, where it is now and where it was in the images.
#[derive(Clone, Copy, Debug)]
pub(super) struct Area {
    pub(super) cur: u64,
    pub(super) len: u64,
    pub(super) img: u64,
}

/// One userfaultfd being served.
pub(super) struct Task {
    pub(super) fd: OwnedFd,
    /// The pid whose images hold its pages.
    pub(super) pid: i32,
    /// A pidfd of the restored task (none for a fork: its pid is not known), readable once it
    /// ended.
    pub(super) pidfd: Option<OwnedFd>,
    pub(super) areas: Vec<Area>,
    /// Image ranges whose saved pages are still to come: start -> end.
    pub(super) pending: BTreeMap<u64, u64>,
}

impl Task {
    pub(super) fn new(fd: OwnedFd, pid: i32, tl: &TaskLazy) -> Task {
        Task {
            fd,
            pid,
            pidfd: crate::pidfd::open(pid).ok(),
            areas: tl
                .areas
                .iter()
                .map(|&(s, e)| Area {
                    cur: s,
                    len: e - s,
                    img: s,
                })
                .collect(),
            pending: tl.pages.iter().copied().collect(),
        }
    }

    /// The image address of `cur` and the end of its area (image addresses).
    pub(super) fn to_img(&self, cur: u64) -> Option<(u64, u64)> {
        self.areas
            .iter()
            .find(|a| a.cur <= cur && cur < a.cur + a.len)
            .map(|a| (a.img + (cur - a.cur), a.img + a.len))
    }

    /// Where image address `img` is now, and the end of that piece (image addresses).
    pub(super) fn to_cur(&self, img: u64) -> Option<(u64, u64)> {
        self.areas
            .iter()
            .find(|a| a.img <= img && img < a.img + a.len)
            .map(|a| (a.cur + (img - a.img), a.img + a.len))
    }

    /// The pending range holding `img`, cut to `[img, limit)`.
    pub(super) fn pending_at(&self, img: u64, limit: u64) -> Option<u64> {
        let (_, &e) = self.pending.range(..=img).next_back()?;
        (e > img).then(|| e.min(limit))
    }

    /// Marks image range `[a, b)` as no longer pending.
    pub(super) fn done(&mut self, a: u64, b: u64) {
        let mut cut = Vec::new();
        for (&s, &e) in self.pending.range(..b) {
            if e > a {
                cut.push((s, e));
            }
        }
        for (s, e) in cut {
            self.pending.remove(&s);
            if s < a {
                self.pending.insert(s, a);
            }
            if e > b {
                self.pending.insert(b, e);
            }
        }
    }

    /// The task moved `[from, from + len)` to `to`: pieces of areas inside move along.
    /// Moves of nothing we know (the restorer putting a premapped area in place) change
    /// nothing.
    pub(super) fn remap(&mut self, from: u64, to: u64, len: u64) {
        let end = from + len;
        let mut out = Vec::with_capacity(self.areas.len() + 2);
        for a in &self.areas {
            let (s, e) = (a.cur, a.cur + a.len);
            let (x, y) = (s.max(from), e.min(end));
            if x >= y {
                out.push(*a);
                continue;
            }
            if s < x {
                out.push(Area {
                    cur: s,
                    len: x - s,
                    img: a.img,
                });
            }
            out.push(Area {
                cur: to + (x - from),
                len: y - x,
                img: a.img + (x - s),
            });
            if y < e {
                out.push(Area {
                    cur: y,
                    len: e - y,
                    img: a.img + (y - s),
                });
            }
        }
        self.areas = out;
    }

    /// `[a, b)` was unmapped (`unmap`) or emptied: what was to come there is dropped.
    pub(super) fn remove(&mut self, a: u64, b: u64, unmap: bool) {
        let mut drop = Vec::new();
        for ar in &self.areas {
            let (x, y) = (ar.cur.max(a), (ar.cur + ar.len).min(b));
            if x < y {
                drop.push((ar.img + (x - ar.cur), ar.img + (y - ar.cur)));
            }
        }
        for (x, y) in drop {
            self.done(x, y);
        }
        if unmap {
            // Keep the pieces outside [a, b): a remap of nothing we know is harmless, so
            // model the unmap as a move far away and a drop.
            let mut out = Vec::new();
            for ar in &self.areas {
                let (s, e) = (ar.cur, ar.cur + ar.len);
                if e <= a || s >= b {
                    out.push(*ar);
                    continue;
                }
                if s < a {
                    out.push(Area {
                        cur: s,
                        len: a - s,
                        img: ar.img,
                    });
                }
                if e > b {
                    out.push(Area {
                        cur: b,
                        len: e - b,
                        img: ar.img + (b - s),
                    });
                }
            }
            self.areas = out;
        }
    }
}
