//! CRIU's page-server wire format: every command is one `struct page_server_iov` (32 bytes in
//! the host's byte order: `u32 cmd`, 4 bytes of padding, `u64 nr_pages`, `u64 vaddr`,
//! `u64 dst_id`), page contents follow `PS_IOV_ADD_F` commands whose flags have `PE_PRESENT`.
//! `cmd` holds the command in its low 16 bits and the pagemap flags above; `dst_id` names the
//! pagemap: the pid (or shmem id) shifted left by 8, with the type in the low byte.

/// Opens a pagemap (old form, no answer).
pub const PS_IOV_OPEN: u32 = 3;
/// Opens a pagemap; the server answers one byte: whether it has a parent for it.
pub const PS_IOV_OPEN2: u32 = 4;
/// Asks whether the server has a parent pagemap; the answer is an `int`.
pub const PS_IOV_PARENT: u32 = 5;
/// Adds present pages (old form).
pub const PS_IOV_ADD: u32 = 1;
/// Adds pages that are in the parent (old form).
pub const PS_IOV_HOLE: u32 = 2;
/// Adds an entry with the flags in the command's high bits.
pub const PS_IOV_ADD_F: u32 = 6;
/// Asks for pages (lazy restore).
pub const PS_IOV_GET: u32 = 7;
/// Ends the session; the server answers an `i32` status.
pub const PS_IOV_CLOSE: u32 = 0x1023;
/// Ends the session and the server (its socket may stay open elsewhere).
pub const PS_IOV_FORCE_CLOSE: u32 = 0x1024;

/// `dst_id` type of a process's pagemap.
pub const PS_TYPE_PID: u64 = 1;
/// `dst_id` type of a shared memory pagemap.
pub const PS_TYPE_SHMEM: u64 = 2;

/// Size of one command on the wire.
pub const IOV_SIZE: usize = 32;

/// One `page_server_iov`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PsIov {
    /// Command and flags.
    pub cmd: u32,
    /// Number of pages.
    pub nr_pages: u64,
    /// First address.
    pub vaddr: u64,
    /// Which pagemap.
    pub dst_id: u64,
}

impl PsIov {
    /// A command with flags.
    pub fn new(cmd: u32, flags: u32, nr_pages: u64, vaddr: u64, dst_id: u64) -> Self {
        PsIov {
            cmd: (flags << 16) | cmd,
            nr_pages,
            vaddr,
            dst_id,
        }
    }

    /// The command (low 16 bits).
    pub fn command(&self) -> u32 {
        self.cmd & 0xffff
    }

    /// The flags (high 16 bits).
    pub fn flags(&self) -> u32 {
        self.cmd >> 16
    }

    /// The wire bytes.
    pub fn encode(&self) -> [u8; IOV_SIZE] {
        let mut b = [0u8; IOV_SIZE];
        b[0..4].copy_from_slice(&self.cmd.to_ne_bytes());
        b[8..16].copy_from_slice(&self.nr_pages.to_ne_bytes());
        b[16..24].copy_from_slice(&self.vaddr.to_ne_bytes());
        b[24..32].copy_from_slice(&self.dst_id.to_ne_bytes());
        b
    }

    /// The command in `b`.
    pub fn decode(b: &[u8; IOV_SIZE]) -> Self {
        let w = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        PsIov {
            cmd: u32::from_ne_bytes(b[0..4].try_into().unwrap_or([0; 4])),
            nr_pages: w(8),
            vaddr: w(16),
            dst_id: w(24),
        }
    }
}

/// The `dst_id` of a process's pagemap.
pub fn pid_dst(pid: u32) -> u64 {
    (u64::from(pid) << 8) | PS_TYPE_PID
}

/// What a `dst_id` names: `(true, pid)` for a process, `(false, shmid)` for shared memory;
/// `None` for a type this server does not know (CRIU's older type numbers included).
pub fn decode_dst(dst: u64) -> Option<(bool, u64)> {
    let id = dst >> 8;
    match dst & 0xff {
        PS_TYPE_PID | 10 | 11 | 16 | 17 => Some((true, id)),
        PS_TYPE_SHMEM | 27 | 28 | 29 | 32 | 33 | 34 => Some((false, id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iov_round_trip_and_layout() {
        let i = PsIov::new(PS_IOV_ADD_F, 4, 3, 0x7000_0000, pid_dst(42));
        let b = i.encode();
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 0x0004_0006);
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert_eq!(PsIov::decode(&b), i);
        assert_eq!(i.command(), PS_IOV_ADD_F);
        assert_eq!(i.flags(), 4);
        assert_eq!(decode_dst(pid_dst(42)), Some((true, 42)));
        assert_eq!(decode_dst((7 << 8) | 2), Some((false, 7)));
        assert_eq!(decode_dst(99), None);
    }
}
