//! One thread's extended register state as ptrace hands it over.

/// The 512-byte-aligned extended register state of one thread (`NT_X86_XSTATE`: the standard
/// xsave format, legacy FPU/SSE area, header, then the components at their CPUID offsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xsave {
    pub(super) bytes: Vec<u8>,
}

impl Xsave {
    /// The raw area.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The raw area, writable (write it back with [`Task::set_xsave`]).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// `XSTATE_BV`: which components hold non-initial state.
    pub fn xstate_bv(&self) -> u64 {
        let off = compel_arch::XSTATE_BV_OFFSET;
        self.bytes
            .get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    }

    /// The bytes of component `n` (2 and up: 2 = upper ymm halves, 5 = opmasks, 6 = upper zmm
    /// halves of zmm0..15, 7 = zmm16..31), if the CPU has it and the area holds it.
    pub fn component(&self, n: u32) -> Option<&[u8]> {
        let (off, size) = compel_arch::xsave_component(n)?;
        self.bytes.get(off..off + size)
    }

    /// Component `n`, writable.
    pub fn component_mut(&mut self, n: u32) -> Option<&mut [u8]> {
        let (off, size) = compel_arch::xsave_component(n)?;
        self.bytes.get_mut(off..off + size)
    }

    /// xmm register `i` (0..16) from the legacy area.
    pub fn xmm(&self, i: usize) -> Option<&[u8]> {
        let off = 160 + 16 * i;
        if i >= 16 {
            None
        } else {
            self.bytes.get(off..off + 16)
        }
    }
}
