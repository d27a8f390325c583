//! The flags and the linker script that turn parasite objects into one static-PIE image.

use std::path::Path;

/// compel's linker script: code and read-only data from address 0 (one R+X segment), then, on
/// its own page, everything written at run time (one R+W segment). Sections named
/// `*.__export_*` are kept whether referenced or not; unwind tables and notes are dropped.
pub const LINKER_SCRIPT: &str = r#"/* compel parasite layout: text (R+X) from 0, then data (R+W) on its own page. */
PHDRS
{
	text PT_LOAD FLAGS(5);
	data PT_LOAD FLAGS(6);
	dynamic PT_DYNAMIC FLAGS(6);
}

SECTIONS
{
	. = 0;
	.text : {
		*(.text.compel_parasite_head)
		KEEP(*(.text.__export_*))
		*(.text .text.*)
	} :text
	.rodata : {
		KEEP(*(.rodata.__export_*))
		*(.rodata .rodata.*)
	} :text
	.dynsym : { *(.dynsym) } :text
	.dynstr : { *(.dynstr) } :text
	.hash : { *(.hash) } :text
	.gnu.hash : { *(.gnu.hash) } :text
	.rela.dyn : { *(.rela.*) } :text
	.relr.dyn : { *(.relr.dyn) } :text

	. = ALIGN(0x1000);
	.data.rel.ro : { *(.data.rel.ro .data.rel.ro.*) } :data
	.dynamic : { *(.dynamic) } :data :dynamic
	.got : { *(.got) *(.igot) } :data
	.got.plt : { *(.got.plt) *(.igot.plt) } :data
	.data : {
		KEEP(*(.data.__export_*))
		*(.data .data.*)
	} :data
	.bss : {
		KEEP(*(.bss.__export_*))
		*(.bss .bss.*)
		*(COMMON)
	} :data

	/DISCARD/ : {
		*(.eh_frame) *(.eh_frame_hdr) *(.note .note.*) *(.comment) *(.interp)
		*(.gnu.version*)
	}
}
"#;

/// The `ld` flags that link parasite objects into an image [`Blob::from_elf`](crate::Blob::from_elf)
/// accepts: static PIE without a dynamic linker, compel's linker script (written at `script`),
/// unused sections dropped, `entry` as the entry point.
pub fn ldflags(script: &Path, entry: &str) -> Vec<String> {
    [
        "-static",
        "-pie",
        "--no-dynamic-linker",
        "-z",
        "noexecstack",
        "-z",
        "max-page-size=0x1000",
        "-z",
        "norelro",
        "--build-id=none",
        "--hash-style=gnu",
        "--gc-sections",
        "--no-undefined",
        "-T",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        script.display().to_string(),
        "-e".to_owned(),
        entry.to_owned(),
    ])
    .collect()
}

/// The gcc flags that compile C parasite code: position independent, freestanding, no stack
/// protector, no unwind tables, one section per function (so `--gc-sections` trims), and the
/// plugin headers (`include` is compel's include directory).
pub fn cflags(include: &Path) -> Vec<String> {
    [
        "-O2",
        "-fpie",
        "-ffreestanding",
        "-fno-stack-protector",
        "-fno-stack-clash-protection",
        "-fcf-protection=none",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
        "-fno-exceptions",
        "-fno-common",
        "-ffunction-sections",
        "-fdata-sections",
        "-nostdlib",
        "-mno-tls-direct-seg-refs",
    ]
    .into_iter()
    .map(str::to_owned)
    // The second directory lets a parasite written for CRIU's compel say `#include <infect-rpc.h>`.
    .chain([
        format!("-I{}", include.display()),
        format!("-I{}", include.join("compel").display()),
    ])
    .collect()
}
