//! Address-space arithmetic for a restore: this process's own mappings, the special mappings of
//! this kernel, and a place free both here and in the restored task's layout where the premapped
//! memory and the restorer live until everything moves into place.

use super::error::RestoreError;

/// Page size.
pub const PAGE: u64 = 4096;
/// The top of the 47-bit user address space.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Lowest address a reservation may use.
const LOW_LIMIT: u64 = 0x1000_0000;
/// Distance kept from any neighbour (stack guard gaps are 1 MiB).
const MARGIN: u64 = 2 << 20;

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The name column (path or `[vdso]`-style tag), possibly empty.
    pub name: String,
}

/// Parses `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<MapLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(range) = it.next() else { continue };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        // perms, offset, dev, inode, then the name (which may contain spaces).
        let name = line
            .splitn(6, char::is_whitespace)
            .nth(5)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        out.push(MapLine { start, end, name });
    }
    out
}

/// This process's mappings.
///
/// # Errors
/// [`RestoreError::Io`] when `/proc/self/maps` cannot be read.
pub fn self_maps() -> Result<Vec<MapLine>, RestoreError> {
    let text = compel::proc::read_text("/proc/self/maps").map_err(|e| RestoreError::Io {
        what: "/proc/self/maps".into(),
        error: e,
    })?;
    Ok(parse_maps(&text))
}

/// This kernel's special mappings in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Special {
    /// `[vvar]`.
    pub vvar: Option<(u64, u64)>,
    /// `[vvar_vclock]` (kernels since 6.13 split it from `[vvar]`).
    pub vvar_vclock: Option<(u64, u64)>,
    /// `[vdso]`.
    pub vdso: Option<(u64, u64)>,
}

impl Special {
    /// Finds the special mappings in `maps`.
    pub fn from_maps(maps: &[MapLine]) -> Special {
        let find = |n: &str| maps.iter().find(|m| m.name == n).map(|m| (m.start, m.end));
        Special {
            vvar: find("[vvar]"),
            vvar_vclock: find("[vvar_vclock]"),
            vdso: find("[vdso]"),
        }
    }

    /// The whole data area: `[vvar]` through `[vvar_vclock]` when they are adjacent.
    pub fn vvar_span(&self) -> Option<(u64, u64)> {
        match (self.vvar, self.vvar_vclock) {
            (Some(a), Some(b)) if a.1 == b.0 => Some((a.0, b.1)),
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(b),
            (Some(a), Some(_)) => Some(a),
            (None, None) => None,
        }
    }
}

/// Finds `size` bytes (page multiple) free of every range in `busy`, with a 2 MiB margin on both
/// sides, searching from the top of the address space down.
///
/// # Errors
/// [`RestoreError::NoRoom`] when no gap is large enough.
pub fn find_gap(busy: &[(u64, u64)], size: u64) -> Result<u64, RestoreError> {
    let mut v: Vec<(u64, u64)> = busy.iter().copied().filter(|r| r.0 < TASK_SIZE).collect();
    v.sort_unstable();
    // Walk gaps from the top: between each range's end and the next range's start.
    let mut upper = TASK_SIZE;
    for r in v.iter().rev() {
        let lower = r.1.max(LOW_LIMIT);
        if let Some(addr) = fit(lower, upper, size) {
            return Ok(addr);
        }
        upper = upper.min(r.0);
    }
    fit(LOW_LIMIT, upper, size).ok_or(RestoreError::NoRoom { size })
}

fn fit(lower: u64, upper: u64, size: u64) -> Option<u64> {
    let need = size.checked_add(2 * MARGIN)?;
    if upper <= lower || upper - lower < need {
        return None;
    }
    // Highest fitting address, 2 MiB aligned (keeps huge-page alignment of what moves through).
    let addr = (upper - MARGIN - size) & !(MARGIN - 1);
    (addr >= lower + MARGIN).then_some(addr)
}

/// Rounds up to a page multiple.
pub fn page_up(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

/// The PMD size on x86_64: what one huge page or one page table covers.
pub const HUGE: u64 = 2 << 20;

/// The fill helper's stack (see [`super::ops::FillHelper`]).
pub const HELPER_STACK: u64 = 32 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse_names_and_ranges() {
        let t = "55d1c000-55d1d000 r--p 00000000 fe:00 12 /usr/bin/a b\n\
                 7f3b1f181000-7f3b1f185000 r--p 00000000 00:00 0                          [vvar]\n\
                 7f3b1f185000-7f3b1f187000 r--p 00000000 00:00 0  [vvar_vclock]\n\
                 7f3b1f187000-7f3b1f189000 r-xp 00000000 00:00 0 [vdso]\n\
                 7f00-7f10 rw-p 00000000 00:00 0\n";
        let m = parse_maps(t);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].name, "/usr/bin/a b");
        assert_eq!(m[4].name, "");
        let s = Special::from_maps(&m);
        assert_eq!(s.vdso, Some((0x7f3b1f187000, 0x7f3b1f189000)));
        assert_eq!(s.vvar_span(), Some((0x7f3b1f181000, 0x7f3b1f187000)));
    }

    #[test]
    fn gap_avoids_every_busy_range() {
        let busy = [
            (0x5555_0000_0000, 0x5555_0010_0000),
            (0x7f00_0000_0000, 0x7fff_ffff_0000),
        ];
        let size = 64 << 20;
        let a = find_gap(&busy, size).unwrap();
        for b in busy {
            assert!(
                a + size + MARGIN <= b.0 || a >= b.1 + MARGIN,
                "{a:#x} overlaps {b:x?}"
            );
        }
        assert!(a >= LOW_LIMIT);
        // Nothing fits when the whole space is busy.
        assert!(find_gap(&[(0, TASK_SIZE)], PAGE).is_err());
    }
}
