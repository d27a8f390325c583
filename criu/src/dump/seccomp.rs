//! Seccomp: the filters each thread runs under, read with ptrace, and the tree's table of them as
//! `seccomp.img` holds it (each filter once, chained to the one installed before it).

use std::collections::HashMap;

use criu_images::pb::SeccompFilter;

use super::error::DumpError;

/// The seccomp filters of the tree as `seccomp.img` lists them: each once, naming the filter
/// installed before it (`prev`); chains that start alike share their entries.
#[derive(Default)]
pub(super) struct SeccompTable {
    pub(super) filters: Vec<SeccompFilter>,
    index: HashMap<FilterKey, u32>,
}

/// A filter as the table knows it: program, the filter before it, flags.
type FilterKey = (Vec<u8>, Option<u32>, Option<u32>);

impl SeccompTable {
    /// Adds a thread's chain (oldest first); returns the index of its newest filter.
    pub(super) fn add(&mut self, chain: &[SeccompFilter]) -> Option<u32> {
        let mut prev = None;
        for f in chain {
            let key = (f.filter.clone(), prev, f.flags);
            let i = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    let i = self.filters.len() as u32;
                    self.filters.push(SeccompFilter {
                        filter: f.filter.clone(),
                        prev,
                        flags: f.flags,
                    });
                    self.index.insert(key, i);
                    i
                }
            };
            prev = Some(i);
        }
        prev
    }
}

/// The seccomp filters of the stopped thread `tid`, oldest first (the kernel numbers them from
/// the first installed), with their flags (`PTRACE_SECCOMP_GET_FILTER` and `_GET_METADATA`,
/// which need CAP_SYS_ADMIN).
pub(super) fn filters(tid: i32) -> Result<Vec<SeccompFilter>, DumpError> {
    let fail = |request: &'static str, errno: nix::errno::Errno| DumpError::SeccompUnreadable {
        tid,
        request,
        errno,
    };
    let mut out = Vec::new();
    for i in 0u64.. {
        let prog = match compel::ptrace::seccomp_filter(tid, i) {
            Ok(p) => p,
            Err(nix::errno::Errno::ENOENT) if i > 0 => break,
            Err(e) => return Err(fail("PTRACE_SECCOMP_GET_FILTER", e)),
        };
        let flags = compel::ptrace::seccomp_filter_flags(tid, i)
            .map_err(|e| fail("PTRACE_SECCOMP_GET_METADATA", e))?;
        if notifies_user_space(&prog) {
            return Err(DumpError::SeccompUserNotif { tid, filter: i });
        }
        out.push(SeccompFilter {
            filter: prog,
            prev: None,
            flags: (flags != 0).then_some(flags as u32),
        });
    }
    Ok(out)
}

/// Whether a seccomp program (`struct sock_filter`s: u16 code, u8 jt, u8 jf, u32 k) can
/// return `SECCOMP_RET_USER_NOTIF`: a `BPF_RET | BPF_K` with that action.
fn notifies_user_space(prog: &[u8]) -> bool {
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
    const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
    prog.chunks_exact(8).any(|i| {
        let code = u16::from_le_bytes([i[0], i[1]]);
        let k = u32::from_le_bytes([i[4], i[5], i[6], i[7]]);
        code == BPF_RET_K && k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_USER_NOTIF
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_notification_filters_are_recognised() {
        let insn = |code: u16, k: u32| {
            let mut b = code.to_le_bytes().to_vec();
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&k.to_le_bytes());
            b
        };
        let allow = [insn(0x20, 0), insn(0x06, 0x7fff_0000)].concat();
        let errno = [insn(0x20, 0), insn(0x06, 0x0005_0001)].concat();
        let notif = [
            insn(0x20, 0),
            insn(0x06, 0x7fc0_0000),
            insn(0x06, 0x7fff_0000),
        ]
        .concat();
        // A load whose constant looks like the action is no return.
        let load = insn(0x00, 0x7fc0_0000);
        assert!(!notifies_user_space(&allow));
        assert!(!notifies_user_space(&errno));
        assert!(!notifies_user_space(&load));
        assert!(notifies_user_space(&notif));
    }
}
