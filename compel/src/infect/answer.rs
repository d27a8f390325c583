//! Reading a command's answer from the parasite: fds batches ([`FdsMsg`]) then the answer
//! header ([`CtlMsg`]). Everything here comes from the victim, which may be buggy or hostile:
//! sizes, counts and command numbers are checked, the number of fds one answer may carry is
//! bounded, and every bad reply is a typed error, never a panic or an endless loop.

use std::os::fd::OwnedFd;

use compel_proto::read_plain;
use compel_proto::rpc::{CtlMsg, FDS_PER_MSG, FdsMsg};
use nix::errno::Errno;

use super::RpcError;
use super::ctl::Ctl;

/// The most fds one answer may bring (in batches of [`FDS_PER_MSG`]); a parasite that sends
/// more is not answering, it is flooding the host's fd table.
pub(crate) const MAX_ANSWER_FDS: usize = 4096;

impl Ctl {
    /// Receives the answer to `cmd`: the fds batches sent before it, then its header.
    ///
    /// # Errors
    /// [`RpcError::Failed`] with the parasite's errno; [`RpcError::BadFds`] or
    /// [`RpcError::BadReply`] for a malformed reply; a transport error.
    pub(crate) fn collect_answer(&mut self, cmd: u32) -> Result<Vec<OwnedFd>, RpcError> {
        let pid = self.pid;
        let mut fds = Vec::new();
        loop {
            let got = self.recv("an answer")?;
            if got.bytes.len() == std::mem::size_of::<FdsMsg>() {
                let hdr: FdsMsg = read_plain(&got.bytes).ok_or(RpcError::BadFds {
                    pid,
                    what: "short fds message",
                })?;
                if hdr.count as usize != got.fds.len()
                    || got.fds.is_empty()
                    || got.fds.len() > FDS_PER_MSG
                {
                    return Err(RpcError::BadFds {
                        pid,
                        what: "fd count does not match the attached fds",
                    });
                }
                if fds.len() + got.fds.len() > MAX_ANSWER_FDS {
                    return Err(RpcError::BadFds {
                        pid,
                        what: "too many fds in one answer",
                    });
                }
                fds.extend(got.fds);
                continue;
            }
            if got.bytes.len() != std::mem::size_of::<CtlMsg>() {
                return Err(RpcError::BadReply {
                    pid,
                    cmd,
                    what: "a message of the wrong size",
                });
            }
            let msg: CtlMsg = read_plain(&got.bytes).ok_or(RpcError::BadReply {
                pid,
                cmd,
                what: "short message",
            })?;
            if msg.cmd != cmd || msg.ack != cmd {
                return Err(RpcError::BadReply {
                    pid,
                    cmd,
                    what: "answer to another command",
                });
            }
            if !got.fds.is_empty() {
                return Err(RpcError::BadReply {
                    pid,
                    cmd,
                    what: "fds attached to the answer header",
                });
            }
            if msg.err != 0 {
                return Err(RpcError::Failed {
                    pid,
                    cmd,
                    errno: Errno::from_raw(msg.err),
                });
            }
            return Ok(fds);
        }
    }
}

/// Crafted replies, as a lying parasite would send them, fed to the host's parsing.
#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
    use std::time::{Duration, Instant};

    use compel_proto::as_bytes;
    use compel_proto::rpc::{CtlMsg, FdsMsg};
    use nix::sys::socket::{
        AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
    };

    use super::super::RpcError;
    use super::super::ctl::Ctl;

    /// A host end (a `Ctl` watching no thread of ours) and the parasite's end.
    fn pair() -> (Ctl, OwnedFd) {
        let (host, parasite) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // No thread of ours has this id as a child: the thread watch finds nothing.
        let me = std::process::id() as i32;
        (
            Ctl::new(me, me, host, None, Duration::from_millis(500)),
            parasite,
        )
    }

    fn send(sk: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(
            sk.as_raw_fd(),
            &[std::io::IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    fn ack(cmd: u32, err: i32) -> CtlMsg {
        CtlMsg { cmd, ack: cmd, err }
    }

    fn what(e: RpcError) -> String {
        e.to_string()
    }

    #[test]
    fn a_good_answer_with_fds_is_accepted() {
        let (mut ctl, p) = pair();
        let f = std::fs::File::open("/dev/null").unwrap();
        send(
            &p,
            as_bytes(&FdsMsg {
                count: 2,
                reserved: 0,
            }),
            &[f.as_fd(), f.as_fd()],
        );
        send(&p, as_bytes(&ack(7, 0)), &[]);
        assert_eq!(ctl.collect_answer(7).unwrap().len(), 2);
    }

    #[test]
    fn malformed_answers_are_typed_errors() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            // Too short, too long, empty.
            (vec![1, 2, 3], 0, "wrong size"),
            (
                [as_bytes(&ack(7, 0)), &[0u8; 5][..]].concat(),
                0,
                "wrong size",
            ),
            // The answer to another command, or an ack that does not match.
            (as_bytes(&ack(8, 0)).to_vec(), 0, "another command"),
            (
                as_bytes(&CtlMsg {
                    cmd: 7,
                    ack: 0,
                    err: 0,
                })
                .to_vec(),
                0,
                "another command",
            ),
            // Fds on the header.
            (as_bytes(&ack(7, 0)).to_vec(), 1, "fds attached"),
            // An fds batch that claims more (or fewer) fds than it carries.
            (
                as_bytes(&FdsMsg {
                    count: 3,
                    reserved: 0,
                })
                .to_vec(),
                1,
                "fd count",
            ),
            (
                as_bytes(&FdsMsg {
                    count: u32::MAX,
                    reserved: 0,
                })
                .to_vec(),
                2,
                "fd count",
            ),
            (
                as_bytes(&FdsMsg {
                    count: 0,
                    reserved: 0,
                })
                .to_vec(),
                0,
                "fd count",
            ),
        ];
        for (bytes, nfds, want) in cases {
            let (mut ctl, p) = pair();
            let fds: Vec<BorrowedFd<'_>> = (0..nfds).map(|_| f.as_fd()).collect();
            send(&p, &bytes, &fds);
            let e = what(ctl.collect_answer(7).unwrap_err());
            assert!(e.contains(want), "{bytes:?} with {nfds} fds: {e}");
        }
    }

    #[test]
    fn an_errno_of_any_value_is_reported_not_trusted() {
        for err in [1, -1, i32::MAX, i32::MIN] {
            let (mut ctl, p) = pair();
            send(&p, as_bytes(&ack(7, err)), &[]);
            assert!(matches!(
                ctl.collect_answer(7),
                Err(RpcError::Failed { cmd: 7, .. })
            ));
        }
    }

    #[test]
    fn silence_and_a_closed_socket_end_the_wait() {
        let (mut ctl, p) = pair();
        let t0 = Instant::now();
        assert!(matches!(
            ctl.collect_answer(7),
            Err(RpcError::Timeout { .. })
        ));
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(p);
        assert!(matches!(
            ctl.collect_answer(7),
            Err(RpcError::Closed { .. })
        ));
    }

    #[test]
    fn a_flood_of_fds_is_cut_off() {
        let (mut ctl, p) = pair();
        let f = std::fs::File::open("/dev/null").unwrap();
        // The parasite keeps sending batches from another thread; the host stops taking them
        // at the bound instead of filling its fd table (the socket buffer holds only a few, so
        // the sender blocks until the host has read them).
        let raw = p.as_raw_fd();
        let sender = std::thread::spawn(move || {
            let f = std::fs::File::open("/dev/null").unwrap();
            let fds: Vec<i32> = (0..16).map(|_| f.as_raw_fd()).collect();
            let hdr = FdsMsg {
                count: 16,
                reserved: 0,
            };
            loop {
                let cmsg = [ControlMessage::ScmRights(&fds)];
                if sendmsg::<()>(
                    raw,
                    &[std::io::IoSlice::new(as_bytes(&hdr))],
                    &cmsg,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .is_err()
                {
                    break;
                }
            }
        });
        drop(f);
        let lim = super::MAX_ANSWER_FDS;
        // Raise our fd limit so the bound, not EMFILE, is what stops the host.
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let want = (lim as u64 + 1024).min(hard);
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, want, hard)
            .unwrap();
        let r = ctl.collect_answer(7);
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
            .unwrap();
        let e = what(r.unwrap_err());
        if want >= lim as u64 + 1024 {
            assert!(e.contains("too many fds in one answer"), "{e}");
        } else {
            // A low hard limit: the kernel's refusal to pass more fds stops it first.
            assert!(e.contains("fds"), "{e}");
        }
        // Closing the host's end ends the sender.
        drop(ctl);
        sender.join().unwrap();
        drop(p);
    }
}
