//! The huge page pool (`/proc/sys/vm/nr_hugepages`) grown for one test and given back on drop,
//! also when the test fails.

/// The huge page pool grown for a test, given back on drop (also when the test fails).
pub struct HugePool {
    old: String,
}

impl HugePool {
    const PATH: &str = "/proc/sys/vm/nr_hugepages";

    /// At least `n` free 2 MiB huge pages in the pool, or `None` (the pool is as it was) when
    /// the kernel cannot find them or 2 MiB is not the default huge page size.
    pub fn grow(n: u64) -> Option<HugePool> {
        if meminfo("Hugepagesize:")? != 2048 {
            return None;
        }
        let old = std::fs::read_to_string(Self::PATH).ok()?;
        let had: u64 = old.trim().parse().ok()?;
        let pool = HugePool { old };
        std::fs::write(Self::PATH, (had + n).to_string()).ok()?;
        (meminfo("HugePages_Free:")? >= n).then_some(pool)
    }

    /// The pool's free huge pages now (`HugePages_Free`).
    pub fn free() -> Option<u64> {
        meminfo("HugePages_Free:")
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.old.trim());
    }
}

/// A number of `/proc/meminfo` (its `kB` dropped).
fn meminfo(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
