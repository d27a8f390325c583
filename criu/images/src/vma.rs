//! Facts of `mm-PID.img`'s `vma_entry`: the status bits CRIU sets in `status` (what kind of
//! area it is and how it is restored), and the top of the user address space the areas live
//! under.

use crate::pagemap::PAGE_SIZE;
use crate::pb::VmaEntry;

/// The top of the x86_64 user address space with 4-level page tables (`TASK_SIZE`): areas above
/// it (`[vsyscall]`) are the kernel's.
pub const TASK_SIZE: u64 = (1 << 47) - PAGE_SIZE;

/// CRIU's VMA status bits (`vma_entry.status`, `VMA_AREA_*` / `VMA_*` in CRIU).
pub mod status {
    /// A mapping criu dumps and restores (`VMA_AREA_REGULAR`).
    pub const REGULAR: u32 = 1 << 0;
    /// The stack (`VMA_AREA_STACK`).
    pub const STACK: u32 = 1 << 1;
    /// `[vsyscall]` (`VMA_AREA_VSYSCALL`).
    pub const VSYSCALL: u32 = 1 << 2;
    /// `[vdso]` (`VMA_AREA_VDSO`).
    pub const VDSO: u32 = 1 << 3;
    /// `[heap]` (`VMA_AREA_HEAP`).
    pub const HEAP: u32 = 1 << 5;
    /// Private file mapping (`VMA_FILE_PRIVATE`).
    pub const FILE_PRIVATE: u32 = 1 << 6;
    /// Shared file mapping (`VMA_FILE_SHARED`).
    pub const FILE_SHARED: u32 = 1 << 7;
    /// Shared anonymous mapping (`VMA_ANON_SHARED`).
    pub const ANON_SHARED: u32 = 1 << 8;
    /// Private anonymous mapping (`VMA_ANON_PRIVATE`).
    pub const ANON_PRIVATE: u32 = 1 << 9;
    /// SysV shared memory (`VMA_AREA_SYSVIPC`).
    pub const SYSVIPC: u32 = 1 << 10;
    /// A mapped socket, e.g. a packet ring (`VMA_AREA_SOCKET`).
    pub const SOCKET: u32 = 1 << 11;
    /// `[vvar]` (and `[vvar_vclock]`) (`VMA_AREA_VVAR`).
    pub const VVAR: u32 = 1 << 12;
    /// An AIO ring (`VMA_AREA_AIORING`).
    pub const AIORING: u32 = 1 << 13;
    /// memfd-backed mapping (`VMA_AREA_MEMFD`).
    pub const MEMFD: u32 = 1 << 14;
    /// A shadow stack (`VMA_AREA_SHSTK`).
    pub const SHSTK: u32 = 1 << 15;
    /// Not an area: a range of `MADV_GUARD_INSTALL` guard pages inside the areas
    /// (`VMA_AREA_GUARD`); such entries come after every real area.
    pub const GUARD: u32 = 1 << 16;
    /// `[uprobes]` (`VMA_AREA_UPROBES`).
    pub const UPROBES: u32 = 1 << 17;
    /// An area CRIU could not classify (`VMA_UNSUPP`).
    pub const UNSUPP: u32 = 1 << 31;
}

impl VmaEntry {
    /// Whether every bit of `bits` ([`status`]) is set in `status`.
    pub fn has_status(&self, bits: u32) -> bool {
        self.status & bits == bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_size_is_the_47_bit_top() {
        assert_eq!(TASK_SIZE, 0x7fff_ffff_f000);
        let e = VmaEntry {
            status: status::REGULAR | status::ANON_PRIVATE,
            ..VmaEntry::default()
        };
        assert!(e.has_status(status::REGULAR));
        assert!(e.has_status(status::REGULAR | status::ANON_PRIVATE));
        assert!(!e.has_status(status::REGULAR | status::VDSO));
    }
}
