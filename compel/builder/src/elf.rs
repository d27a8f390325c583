//! Reading a linked parasite image (a static-PIE ELF) into a [`Blob`].

use crate::{Blob, ElfError};
use compel_proto::blob::{BLOB_PAGE_SIZE, EXPORT_PREFIX};
use object::elf::{self, FileHeader64, ProgramHeader64, SectionHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader, Rela, SectionHeader, SectionTable, Sym};
use object::{Endianness, FileKind};

type Header = FileHeader64<Endianness>;
type Phdr = ProgramHeader64<Endianness>;
type Shdr = SectionHeader64<Endianness>;

/// The most memory a blob may occupy (parasites are a few pages; this bounds what a malformed
/// image can make the reader allocate).
const MAX_MEM: u64 = 64 << 20;

/// A loadable segment, reduced to what the layout needs.
struct Seg {
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    offset: u64,
    flags: u32,
}

/// The name of an x86_64 relocation type.
pub(crate) fn reloc_name(r_type: u32) -> &'static str {
    match r_type {
        elf::R_X86_64_NONE => "R_X86_64_NONE",
        elf::R_X86_64_64 => "R_X86_64_64",
        elf::R_X86_64_PC32 => "R_X86_64_PC32",
        elf::R_X86_64_GOT32 => "R_X86_64_GOT32",
        elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
        elf::R_X86_64_COPY => "R_X86_64_COPY",
        elf::R_X86_64_GLOB_DAT => "R_X86_64_GLOB_DAT",
        elf::R_X86_64_JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        elf::R_X86_64_RELATIVE => "R_X86_64_RELATIVE",
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        elf::R_X86_64_32 => "R_X86_64_32",
        elf::R_X86_64_32S => "R_X86_64_32S",
        elf::R_X86_64_16 => "R_X86_64_16",
        elf::R_X86_64_PC16 => "R_X86_64_PC16",
        elf::R_X86_64_8 => "R_X86_64_8",
        elf::R_X86_64_PC8 => "R_X86_64_PC8",
        elf::R_X86_64_DTPMOD64 => "R_X86_64_DTPMOD64",
        elf::R_X86_64_DTPOFF64 => "R_X86_64_DTPOFF64",
        elf::R_X86_64_TPOFF64 => "R_X86_64_TPOFF64",
        elf::R_X86_64_PC64 => "R_X86_64_PC64",
        elf::R_X86_64_SIZE64 => "R_X86_64_SIZE64",
        elf::R_X86_64_TLSDESC => "R_X86_64_TLSDESC",
        elf::R_X86_64_IRELATIVE => "R_X86_64_IRELATIVE",
        _ => "R_X86_64_?",
    }
}

struct Image<'d> {
    endian: Endianness,
    data: &'d [u8],
    sections: SectionTable<'d, Header, &'d [u8]>,
}

impl Image<'_> {
    /// The names of the allocated sections overlapping `[addr, addr + size)`, comma-separated.
    fn sections_in(&self, addr: u64, size: u64) -> String {
        let mut names = Vec::new();
        for sh in self.sections.iter() {
            let (a, s) = (sh.sh_addr(self.endian), sh.sh_size(self.endian));
            let alloc = sh.sh_flags(self.endian) & u64::from(elf::SHF_ALLOC) != 0;
            if alloc && s > 0 && a < addr.saturating_add(size.max(1)) && addr < a.saturating_add(s)
            {
                names.push(self.name(sh));
            }
        }
        if names.is_empty() {
            "?".to_owned()
        } else {
            names.join(",")
        }
    }

    fn name(&self, sh: &Shdr) -> String {
        self.sections
            .section_name(self.endian, sh)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|_| "?".to_owned())
    }

    fn section_at(&self, addr: u64) -> String {
        self.sections_in(addr, 1)
    }
}

impl Blob {
    /// Reads a linked parasite image: an x86_64 static-PIE ELF (`ET_DYN`, no interpreter, no
    /// shared libraries, no TLS), whose loadable segments are code (read-only or executable)
    /// followed by data (writable), never both writable and executable.
    ///
    /// The segments are laid out into one flat image (NOBITS zero-filled, the last segment's tail
    /// left as bss); dynamic relocations are resolved against the image and kept as offsets of
    /// words to which the load base is added; symbols named `__export_*` are exported. The entry
    /// point is the ELF entry (`ld -e`).
    ///
    /// Accepted relocations: `R_X86_64_RELATIVE`, `SHT_RELR` packed relative relocations, and
    /// `R_X86_64_64`, `R_X86_64_GLOB_DAT`, `R_X86_64_JUMP_SLOT` against defined symbols
    /// (`R_X86_64_NONE` is skipped). Anything else is an error naming the type, symbol and
    /// section.
    ///
    /// # Errors
    /// An [`ElfError`] naming what is wrong; the input is untrusted and fully checked.
    pub fn from_elf(data: &[u8]) -> Result<Blob, ElfError> {
        match FileKind::parse(data) {
            Ok(FileKind::Elf64) => {}
            Ok(FileKind::Elf32) => return Err(ElfError::Elf32),
            _ if data.starts_with(&elf::ELFMAG) => {
                if data.get(4 /* EI_CLASS */) == Some(&elf::ELFCLASS32) {
                    return Err(ElfError::Elf32);
                }
                return Err(ElfError::Format {
                    what: "unknown ELF class or header too short",
                });
            }
            _ => return Err(ElfError::NotElf),
        }
        let header = Header::parse(data)?;
        let endian = header.endian()?;
        let machine = header.e_machine(endian);
        if machine != elf::EM_X86_64 {
            return Err(ElfError::WrongMachine { machine });
        }
        match header.e_type(endian) {
            elf::ET_DYN => {}
            elf::ET_REL => return Err(ElfError::Relocatable),
            e_type => return Err(ElfError::NotPie { e_type }),
        }
        let img = Image {
            endian,
            data,
            sections: header.sections(endian, data)?,
        };
        let phdrs: &[Phdr] = header.program_headers(endian, data)?;

        let mut segs = Vec::new();
        for ph in phdrs {
            match ph.p_type(endian) {
                elf::PT_LOAD => segs.push(Seg {
                    vaddr: ph.p_vaddr(endian),
                    filesz: ph.p_filesz(endian),
                    memsz: ph.p_memsz(endian),
                    offset: ph.p_offset(endian),
                    flags: ph.p_flags(endian),
                }),
                elf::PT_INTERP => return Err(ElfError::DynamicLinker),
                elf::PT_TLS => {
                    let (a, s) = (ph.p_vaddr(endian), ph.p_memsz(endian));
                    return Err(ElfError::Tls {
                        section: img.sections_in(a, s),
                    });
                }
                _ => {}
            }
        }
        for sh in img.sections.iter() {
            if sh.sh_flags(endian) & u64::from(elf::SHF_TLS) != 0 {
                return Err(ElfError::Tls {
                    section: img.name(sh),
                });
            }
        }
        segs.sort_by_key(|s| s.vaddr);
        let blob = layout(&img, &segs, header.e_entry(endian))?;
        let mut blob = blob;
        relocate(&img, &mut blob)?;
        blob.symbols = exports(&img, blob.mem_size() as u64)?;
        check_needed(&img)?;
        Ok(blob)
    }
}

fn layout(img: &Image<'_>, segs: &[Seg], entry: u64) -> Result<Blob, ElfError> {
    let Some(last) = segs.last() else {
        return Err(ElfError::BadSize { size: 0 });
    };
    let mem_end = segs
        .iter()
        .map(|s| s.vaddr.saturating_add(s.memsz))
        .max()
        .unwrap_or(0);
    if mem_end == 0 || mem_end > MAX_MEM {
        return Err(ElfError::BadSize { size: mem_end });
    }
    // Text: every segment before the first writable one. Data: the rest, all writable.
    let mut text_end = 0u64;
    let mut data_start = None;
    for s in segs {
        let writable = s.flags & elf::PF_W != 0;
        if writable && s.flags & elf::PF_X != 0 {
            return Err(ElfError::WritableExec {
                addr: s.vaddr,
                sections: img.sections_in(s.vaddr, s.memsz),
            });
        }
        if s.filesz > s.memsz {
            return Err(ElfError::Layout {
                what: "segment larger in the file than in memory",
                addr: s.vaddr,
                sections: img.sections_in(s.vaddr, s.memsz),
            });
        }
        match (writable, data_start) {
            (false, None) => text_end = text_end.max(s.vaddr + s.memsz),
            (true, None) => data_start = Some(s.vaddr),
            (true, Some(_)) => {}
            (false, Some(_)) => {
                return Err(ElfError::Layout {
                    what: "read-only segment after writable data",
                    addr: s.vaddr,
                    sections: img.sections_in(s.vaddr, s.memsz),
                });
            }
        }
    }
    let page = BLOB_PAGE_SIZE as u64;
    let text_size = match data_start {
        Some(start) => {
            let text_size = text_end.div_ceil(page) * page;
            if start < text_size || start % page != 0 {
                return Err(ElfError::Layout {
                    what: "writable segment shares a page with code",
                    addr: start,
                    sections: img.sections_in(start, 1),
                });
            }
            if text_size == 0 {
                return Err(ElfError::Layout {
                    what: "no code before the writable segment",
                    addr: start,
                    sections: img.sections_in(start, 1),
                });
            }
            start
        }
        None => text_end,
    };
    if entry >= text_end
        || !segs
            .iter()
            .any(|s| s.flags & elf::PF_X != 0 && (s.vaddr..s.vaddr + s.memsz).contains(&entry))
    {
        return Err(ElfError::BadEntry { entry });
    }
    // File-backed bytes: up to the end of the last segment's file part, or of any earlier
    // segment's memory (its NOBITS tail is zero-filled inside the image).
    let image_end = segs[..segs.len() - 1]
        .iter()
        .map(|s| s.vaddr + s.memsz)
        .chain([last.vaddr + last.filesz, text_size])
        .max()
        .unwrap_or(0);
    let mut image = vec![0u8; image_end as usize];
    for s in segs {
        let bytes = usize::try_from(s.offset)
            .ok()
            .zip(usize::try_from(s.filesz).ok())
            .and_then(|(o, n)| img.data.get(o..o.checked_add(n)?))
            .ok_or(ElfError::Format {
                what: "segment extends past the end of the file",
            })?;
        let at = s.vaddr as usize;
        image[at..at + bytes.len()].copy_from_slice(bytes);
    }
    Ok(Blob {
        image,
        text_size: text_size as usize,
        bss_size: (mem_end - image_end) as usize,
        entry: entry as usize,
        relocs: Vec::new(),
        symbols: Vec::new(),
    })
}

/// Resolves the dynamic relocations into the image and records the words needing the base.
fn relocate(img: &Image<'_>, blob: &mut Blob) -> Result<(), ElfError> {
    let endian = img.endian;
    let mut sites: Vec<(u64, &'static str)> = Vec::new();
    for sh in img.sections.iter() {
        if sh.sh_flags(endian) & u64::from(elf::SHF_ALLOC) == 0 {
            continue; // static relocations of a non-loaded section (e.g. debug info)
        }
        match sh.sh_type(endian) {
            elf::SHT_REL => {
                return Err(ElfError::UnsupportedReloc {
                    kind: "SHT_REL",
                    r_type: 0,
                    symbol: String::new(),
                    offset: sh.sh_addr(endian),
                    section: img.name(sh),
                });
            }
            elf::SHT_RELR => {
                let Some(relr) = sh.relr(endian, img.data)? else {
                    continue;
                };
                for offset in relr {
                    // RELR keeps the addend in the word itself: only check it is in the image.
                    word_mut(&mut blob.image, offset, "R_X86_64_RELATIVE (RELR)")?;
                    sites.push((offset, "RELR"));
                }
            }
            elf::SHT_RELA => {
                let Some((relas, link)) = sh.rela(endian, img.data)? else {
                    continue;
                };
                let symtab = img
                    .sections
                    .symbol_table_by_index(endian, img.data, link)
                    .ok();
                for rela in relas {
                    let r_type = rela.r_type(endian, false);
                    let offset = rela.r_offset(endian);
                    let addend = rela.r_addend(endian);
                    let sym_index = rela.r_sym(endian, false);
                    // (name, value, defined, weak, absolute); symbol 0 is "no symbol": S = 0.
                    let (sym_name, sym_value, sym_defined, sym_weak, sym_abs) =
                        match symtab.as_ref().filter(|_| sym_index != 0) {
                            Some(t) => {
                                let sym = t.symbol(object::SymbolIndex(sym_index as usize))?;
                                let name = sym.name(endian, t.strings())?;
                                (
                                    String::from_utf8_lossy(name).into_owned(),
                                    sym.st_value(endian),
                                    !sym.is_undefined(endian),
                                    sym.st_bind() == elf::STB_WEAK,
                                    sym.is_absolute(endian),
                                )
                            }
                            None if sym_index != 0 => {
                                return Err(ElfError::Format {
                                    what: "relocation refers to a symbol without a symbol table",
                                });
                            }
                            None => (String::new(), 0, true, false, true),
                        };
                    let kind = reloc_name(r_type);
                    let addend = if r_type == elf::R_X86_64_64 {
                        addend as u64
                    } else {
                        0
                    };
                    let (value, relative) = match r_type {
                        elf::R_X86_64_NONE => continue,
                        elf::R_X86_64_RELATIVE => (rela.r_addend(endian) as u64, true),
                        elf::R_X86_64_64 | elf::R_X86_64_GLOB_DAT | elf::R_X86_64_JUMP_SLOT => {
                            if !sym_defined && !sym_weak {
                                return Err(ElfError::UndefinedSymbol {
                                    symbol: sym_name,
                                    offset: Some(offset),
                                    section: img.section_at(offset),
                                });
                            }
                            // An undefined weak symbol is 0, an absolute one is its value: the
                            // word does not move with the image.
                            let s = if sym_defined { sym_value } else { 0 };
                            (s.wrapping_add(addend), sym_defined && !sym_abs)
                        }
                        _ => {
                            return Err(ElfError::UnsupportedReloc {
                                kind,
                                r_type,
                                symbol: sym_name,
                                offset,
                                section: img.section_at(offset),
                            });
                        }
                    };
                    let word = word_mut(&mut blob.image, offset, kind)?;
                    word.copy_from_slice(&value.to_le_bytes());
                    if relative {
                        sites.push((offset, kind));
                    }
                }
            }
            _ => {}
        }
    }
    sites.sort_unstable();
    for pair in sites.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(ElfError::DuplicateReloc {
                offset: pair[0].0,
                section: img.section_at(pair[0].0),
            });
        }
    }
    blob.relocs = sites.into_iter().map(|(o, _)| o as u32).collect();
    Ok(())
}

fn word_mut<'i>(
    image: &'i mut [u8],
    offset: u64,
    kind: &'static str,
) -> Result<&'i mut [u8], ElfError> {
    usize::try_from(offset)
        .ok()
        .and_then(|o| image.get_mut(o..o.checked_add(8)?))
        .ok_or(ElfError::RelocOutsideImage { kind, offset })
}

/// The `__export_*` symbols (from `.symtab`, or `.dynsym` if stripped), sorted by name; a
/// global undefined symbol anywhere is an error.
fn exports(img: &Image<'_>, mem_size: u64) -> Result<Vec<(String, usize)>, ElfError> {
    let endian = img.endian;
    let mut out: Vec<(String, usize)> = Vec::new();
    for kind in [elf::SHT_SYMTAB, elf::SHT_DYNSYM] {
        let table = img.sections.symbols(endian, img.data, kind)?;
        if table.is_empty() {
            continue;
        }
        for sym in table.iter().skip(1) {
            let name = sym.name(endian, table.strings())?;
            if sym.is_undefined(endian) {
                if sym.st_bind() == elf::STB_GLOBAL && !name.is_empty() {
                    return Err(ElfError::UndefinedSymbol {
                        symbol: String::from_utf8_lossy(name).into_owned(),
                        offset: None,
                        section: String::new(),
                    });
                }
                continue;
            }
            let Some(export) = name.strip_prefix(EXPORT_PREFIX.as_bytes()) else {
                continue;
            };
            if export.is_empty()
                || !matches!(
                    sym.st_type(),
                    elf::STT_FUNC | elf::STT_OBJECT | elf::STT_NOTYPE
                )
            {
                continue;
            }
            let name = String::from_utf8_lossy(name).into_owned();
            let value = sym.st_value(endian);
            if value > mem_size {
                return Err(ElfError::Layout {
                    what: "exported symbol outside the image",
                    addr: value,
                    sections: name,
                });
            }
            match out.iter().find(|(n, _)| *n == name) {
                Some((_, v)) if *v as u64 == value => {}
                Some(_) => return Err(ElfError::DuplicateSymbol { name }),
                None => out.push((name, value as usize)),
            }
        }
        if kind == elf::SHT_SYMTAB {
            break; // the static table has everything the dynamic one has
        }
    }
    out.sort();
    Ok(out)
}

/// Rejects images that need shared libraries.
fn check_needed(img: &Image<'_>) -> Result<(), ElfError> {
    let endian = img.endian;
    for sh in img.sections.iter() {
        let Some((dynamic, link)) = sh.dynamic(endian, img.data)? else {
            continue;
        };
        let strings = img.sections.strings(endian, img.data, link)?;
        for d in dynamic {
            if d.d_tag(endian) == u64::from(elf::DT_NEEDED) {
                let name = d
                    .string(endian, strings)
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                return Err(ElfError::NeedsLibrary { name });
            }
        }
    }
    Ok(())
}
