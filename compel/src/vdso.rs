//! The vDSO read as code: where in it compel finds a `syscall` instruction to borrow.
//!
//! The vDSO is an ELF image the kernel maps into every task. Its exported functions are
//! decoded instruction by instruction from their entry points (by
//! [`compel_arch::first_syscall_insn`]), so a `syscall` found here starts an instruction: the
//! bytes `0f 05` inside a longer instruction (an immediate, a displacement) are never taken.

use object::read::elf::{ElfFile64, FileHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol, SymbolKind};

/// The largest vDSO image compel reads (today's are two pages).
pub const MAX_IMAGE: usize = 64 * 1024;

/// The length of the ELF image whose first bytes are `header` (at least the 64-byte ELF
/// header): up to the end of its section headers, which the kernel maps with the code. `None`
/// if `header` is not a 64-bit ELF header or the image would exceed [`MAX_IMAGE`].
pub fn image_len(header: &[u8]) -> Option<usize> {
    let h = object::elf::FileHeader64::<Endianness>::parse(header).ok()?;
    let e = h.endian().ok()?;
    let sh_end = h
        .e_shoff(e)
        .checked_add(u64::from(h.e_shnum(e)) * u64::from(h.e_shentsize(e)))?;
    let ph_end = h
        .e_phoff(e)
        .checked_add(u64::from(h.e_phnum(e)) * u64::from(h.e_phentsize(e)))?;
    let len = usize::try_from(sh_end.max(ph_end)).ok()?;
    (len <= MAX_IMAGE).then_some(len)
}

/// The exported functions of the vDSO `image` as `(offset, size)` in the image, by offset
/// (empty when the image cannot be parsed).
pub fn functions(image: &[u8]) -> Vec<(usize, usize)> {
    let Ok(file) = ElfFile64::<Endianness>::parse(image) else {
        return Vec::new();
    };
    let mut funcs: Vec<(usize, usize)> = file
        .dynamic_symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.size() > 0)
        .filter_map(|s| {
            // The image is mapped from file offset 0: a function's place in memory is its
            // place in the file, found through the section that holds it.
            let sec = file.section_by_index(s.section_index()?).ok()?;
            let (sec_off, _) = sec.file_range()?;
            let off = s
                .address()
                .checked_sub(sec.address())?
                .checked_add(sec_off)?;
            Some((usize::try_from(off).ok()?, usize::try_from(s.size()).ok()?))
        })
        .collect();
    funcs.sort_unstable();
    funcs.dedup();
    funcs
}

/// The offset, from the start of the vDSO `image`, of a `syscall` instruction in one of its
/// exported functions (the lowest such function first), or `None` when the image cannot be
/// parsed or none of its functions makes a system call.
pub fn syscall_offset(image: &[u8]) -> Option<usize> {
    functions(image).into_iter().find_map(|(off, size)| {
        let code = image.get(off..off.checked_add(size)?)?;
        compel_arch::first_syscall_insn(code, off as u64).map(|i| off + i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::RemoteMem;

    /// This process's own vDSO image.
    fn own_vdso() -> Vec<u8> {
        let me = std::process::id() as i32;
        let base = crate::proc::auxv_vdso(me).unwrap().expect("a vdso");
        let mut mem = RemoteMem::new(me);
        let mut header = [0u8; 64];
        mem.read(base, &mut header).unwrap();
        let mut img = vec![0u8; image_len(&header).expect("an ELF header")];
        mem.read(base, &mut img).unwrap();
        img
    }

    #[test]
    fn this_machines_vdso_has_a_syscall_at_an_instruction_boundary() {
        let img = own_vdso();
        let off = syscall_offset(&img).expect("a syscall in the vdso");
        assert_eq!(&img[off..off + 2], &compel_arch::SYSCALL_INSN);
        assert!(compel_arch::is_syscall_insn(&img[off..]));
        // It lies inside an exported function, as decoded from that function's entry.
        let funcs = functions(&img);
        assert!(funcs.len() >= 4, "{funcs:?}");
        let inside = funcs.iter().any(|&(start, size)| {
            (start..start + size).contains(&off)
                && compel_arch::first_syscall_insn(&img[start..off + 2], 0) == Some(off - start)
        });
        assert!(inside, "syscall at {off:#x} is not in an exported function");
    }

    #[test]
    fn not_an_elf_image() {
        assert_eq!(image_len(&[0u8; 64]), None);
        assert_eq!(syscall_offset(&[0x0f, 0x05, 0xc3]), None);
    }
}
