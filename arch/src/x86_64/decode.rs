//! Machine code read as instructions, not bytes (feature `decode`, host side only): a `0f 05`
//! pair is a `syscall` only where an instruction starts there, never inside the immediate or
//! displacement of a longer one. Decoding is by iced-x86, built without its VEX, EVEX, XOP and
//! 3DNow! tables (the vDSO is compiled without vector extensions, and building those tables
//! cost each `criu` run 0.35 ms): such an instruction ends a search as an invalid one does, so
//! a `syscall` after it is not taken (never one that is not an instruction).

use iced_x86::{Code, Decoder, DecoderOptions};

/// The offset in `code` of the first `syscall` instruction met when decoding `code` linearly
/// from its first byte, which must be an instruction boundary (a function's entry). `ip` is
/// the address of `code[0]` in the task (it only affects decoded branch targets). Decoding stops at the first byte sequence that is not a valid instruction.
pub fn first_syscall_insn(code: &[u8], ip: u64) -> Option<usize> {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    while d.can_decode() {
        let at = d.position();
        let insn = d.decode();
        if insn.is_invalid() {
            return None;
        }
        if insn.code() == Code::Syscall {
            return Some(at);
        }
    }
    None
}

/// Whether the instruction that starts at `code[0]` is a `syscall`.
pub fn is_syscall_insn(code: &[u8]) -> bool {
    let mut d = Decoder::new(64, code, DecoderOptions::NONE);
    d.can_decode() && d.decode().code() == Code::Syscall
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syscall_pair_inside_an_immediate_is_not_a_syscall() {
        // mov rax, 0x050f; syscall; ret
        let code = [
            0x48, 0xb8, 0x0f, 0x05, 0, 0, 0, 0, 0, 0, // mov rax, imm64 holding 0f 05
            0x0f, 0x05, // syscall
            0xc3, // ret
        ];
        let scanned = code.windows(2).position(|w| w == [0x0f, 0x05]);
        assert_eq!(scanned, Some(2), "a byte scan is fooled");
        assert_eq!(first_syscall_insn(&code, 0x1000), Some(10));
        assert!(is_syscall_insn(&code[10..]));
        assert!(!is_syscall_insn(&code[..]));
        // The same pair as a displacement: mov eax, [rip + 0x050f]; ret.
        let code = [0x8b, 0x05, 0x0f, 0x05, 0, 0, 0xc3];
        assert_eq!(first_syscall_insn(&code, 0), None);
        // Garbage ends the search.
        assert_eq!(first_syscall_insn(&[0x06, 0x0f, 0x05], 0), None);
        // So does a VEX instruction (vzeroupper) before the syscall.
        assert_eq!(first_syscall_insn(&[0xc5, 0xf8, 0x77, 0x0f, 0x05], 0), None);
    }
}
