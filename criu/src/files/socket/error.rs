//! What went wrong with a socket, at dump or restore time, and the errno an RPC reply carries
//! for it.

/// What went wrong with a socket, at dump or restore time.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// What was being done (names the socket).
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// sock_diag failed.
    #[error(transparent)]
    Diag(#[from] crate::files::sockdiag::DiagError),
    // Dump: a socket of a task in a state not dumped.
    /// A socket of a family not dumped.
    #[error(
        "fd {} of {}: socket:[{}] of family {family} (only unix, netlink, packet and inet sockets are dumped)",
        at.fd, at.pid, at.ino
    )]
    Family {
        /// The socket.
        at: SockAt,
        /// The family's name.
        family: String,
    },
    /// A socket sock_diag does not list (another network namespace?).
    #[error("{at}: {family} socket unknown to sock_diag (another network namespace?)")]
    NotInDiag {
        /// The socket.
        at: SockAt,
        /// `unix`, `packet`, `netlink`.
        family: &'static str,
    },
    /// A unix socket of a type other than stream, datagram or seqpacket.
    #[error("{at}: unix socket of type {ty}")]
    UnixType {
        /// The socket.
        at: SockAt,
        /// Its type.
        ty: i32,
    },
    /// A client whose connection is not accepted yet and holds unread data.
    #[error(
        "{at}: its connection to {name} is not accepted yet and holds unread data (criu reads it by accepting the connection, only when the dump ends the tree)"
    )]
    UnacceptedData {
        /// The socket.
        at: SockAt,
        /// The listener's name.
        name: String,
    },
    /// Descriptors in flight in a queue that cannot be read: more than one message carries
    /// (the peek's control data was cut), or in an empty datagram.
    #[error(
        "{at}: file descriptors in flight (SCM_RIGHTS) in its queue that cannot be read (an empty datagram, or more than one message carries)"
    )]
    FdsInFlight {
        /// The socket.
        at: SockAt,
    },
    /// A queued message too large to be read.
    #[error("{at}: a queued message of {size} bytes")]
    MessageSize {
        /// The socket.
        at: SockAt,
        /// Its size.
        size: usize,
    },
    /// A connection to a listener outside the tree, not accepted yet.
    #[error("{at}: connection to {name} outside the tree, not accepted yet")]
    ExtUnaccepted {
        /// The socket.
        at: SockAt,
        /// The listener's name.
        name: String,
    },
    /// A listener with connections queued from outside the tree.
    #[error("{at}: listening socket {name} has {count} connection(s) queued from outside the tree")]
    ExtQueued {
        /// The socket.
        at: SockAt,
        /// Its name.
        name: String,
        /// How many connections come from outside.
        count: usize,
    },
    /// A socket connected to one outside the tree, without `--ext-unix-sk`.
    #[error(
        "{at}: unix socket connected to socket:[{peer}] {name} outside the dumped tree (allow with --ext-unix-sk)"
    )]
    ExtPeer {
        /// The socket.
        at: SockAt,
        /// The peer's inode.
        peer: u32,
        /// The peer's name.
        name: String,
    },
    /// Data queued from a peer outside the tree.
    #[error("{at}: data queued from its peer {name} outside the tree (it could not be sent again)")]
    ExtPeerData {
        /// The socket.
        at: SockAt,
        /// The peer's name.
        name: String,
    },
    /// A peer outside the tree without a name.
    #[error("{at}: its peer socket:[{peer}] outside the tree has no name to connect to again")]
    ExtPeerUnnamed {
        /// The socket.
        at: SockAt,
        /// The peer's inode.
        peer: u32,
    },
    /// A TCP listener with connections not accepted yet.
    #[error(
        "{who}: {proto} listener with {pending} connection(s) not yet accepted whose client is \
         outside the tree (--skip-in-flight drops them)"
    )]
    InetUnaccepted {
        /// The socket (descriptor, process, inode, family).
        who: String,
        /// `TCP`.
        proto: String,
        /// How many connections wait.
        pending: u32,
    },
    /// A TCP listener with connections not accepted yet, in a tree that keeps running.
    #[error(
        "{who}: TCP listener with {pending} connection(s) not yet accepted: they are dumped only \
         when the dump ends the tree (--skip-in-flight leaves them out)"
    )]
    InetUnacceptedLive {
        /// The socket (descriptor, process, inode, family).
        who: String,
        /// How many connections wait.
        pending: u32,
    },
    /// A connected inet socket without both addresses.
    #[error("{who}: {proto} connection without addresses")]
    InetNoAddresses {
        /// The socket.
        who: String,
        /// Its protocol.
        proto: String,
    },
    /// An established TCP connection, without `--tcp-established`.
    #[error(
        "{who}: {proto} connection {src} -> {dst} is established (dump it with --tcp-established)"
    )]
    TcpEstablished {
        /// The socket.
        who: String,
        /// `TCP`.
        proto: String,
        /// Its local address.
        src: std::net::SocketAddr,
        /// Its peer's address.
        dst: std::net::SocketAddr,
    },
    /// An inet socket in a state not dumped.
    #[error("{who}: {proto} socket in state {state} (not dumped yet)")]
    InetStateNotDumped {
        /// The socket.
        who: String,
        /// Its protocol.
        proto: String,
        /// The state's name.
        state: &'static str,
    },
    /// An inet socket of a protocol not dumped.
    #[error("{who}: {proto} sockets are not dumped yet")]
    InetProtocol {
        /// The socket.
        who: String,
        /// The protocol's name.
        proto: String,
    },
    /// TCP repair mode (saving, restoring or resuming a connection) failed.
    #[error("{who}: {error}")]
    TcpRepair {
        /// The socket and the step.
        who: String,
        /// What soccr said.
        error: soccr::Error,
    },
    /// A corked UDP socket with a datagram being built (its bytes cannot be read back).
    #[error("{who}: corked {proto} socket with {pending} bytes pending (not dumped)")]
    UdpCorked {
        /// The socket.
        who: String,
        /// Its protocol.
        proto: String,
        /// The bytes waiting for the cork.
        pending: u32,
    },
    /// Locking a connection before it is saved failed.
    #[error("{who}: locking the connection: {error}")]
    ConnLock {
        /// The socket.
        who: String,
        /// What the tool said.
        error: crate::namespaces::net::NetError,
    },
    // Restore: image entries this restore does not make again.
    /// An inet socket in a state not restored.
    #[error("inet socket id {id}: {proto} socket in state {state} (not restored yet)")]
    InetStateNotRestored {
        /// The socket's id.
        id: u32,
        /// Its protocol.
        proto: String,
        /// The state's name.
        state: &'static str,
    },
    /// A `SOCK_PACKET` socket bound to an interface.
    #[error("packet socket id {id}: a SOCK_PACKET socket bound to interface {ifindex}")]
    SockPacketBound {
        /// The socket's id.
        id: u32,
        /// The interface.
        ifindex: u32,
    },
    /// A unix socket connected to one without a name.
    #[error("unix socket id {id} is connected to id {peer}, which has no name")]
    PeerUnnamed {
        /// The socket's id.
        id: u32,
        /// The peer's id.
        peer: u32,
    },
    /// A bound unix socket whose peer was closed.
    #[error("unix socket id {id} bound to {name} whose peer was closed")]
    PeerClosed {
        /// The socket's id.
        id: u32,
        /// Its name.
        name: String,
    },
    /// A name a unix socket of the tree was bound to is held by someone else now.
    #[error("unix socket id {id}: its name {name} is taken by {by} (since the dump)")]
    NameTaken {
        /// The socket's id.
        id: u32,
        /// The name (a path, with the binder's cwd for a relative one, or `@name`).
        name: String,
        /// What holds it: another socket, another file.
        by: &'static str,
    },
    /// Queued data that no socket can send again.
    #[error("unix socket id {id}: queued data and no socket that can send it again")]
    NoSender {
        /// The socket's id.
        id: u32,
    },
    /// An image entry is wrong.
    #[error("{file}: {reason}")]
    BadImage {
        /// The image file (and the offset or entry where it is known).
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// A socket of a task: its descriptor, the process and the socket's inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAt {
    /// The process.
    pub pid: i32,
    /// The descriptor.
    pub fd: i32,
    /// The socket's inode.
    pub ino: u32,
}

impl std::fmt::Display for SockAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fd {} of {} (socket:[{}])", self.fd, self.pid, self.ino)
    }
}

impl SocketError {
    /// The errno an RPC reply carries for this error: the OS error of a failed call (also
    /// inside TCP repair), `EOPNOTSUPP` for a state not handled, `EBADMSG` for a wrong image
    /// entry.
    pub fn errno(&self) -> i32 {
        match self {
            SocketError::Sys { source, .. } => crate::errno::io(source),
            SocketError::TcpRepair {
                error: soccr::Error::Sys { source, .. },
                ..
            } => crate::errno::io(source),
            SocketError::BadImage { .. } => libc::EBADMSG,
            SocketError::NameTaken { .. } => libc::EADDRINUSE,
            SocketError::Diag(_)
            | SocketError::TcpRepair { .. }
            | SocketError::ConnLock { .. }
            | SocketError::UdpCorked { .. }
            | SocketError::InetUnaccepted { .. }
            | SocketError::InetUnacceptedLive { .. }
            | SocketError::InetNoAddresses { .. }
            | SocketError::TcpEstablished { .. }
            | SocketError::InetStateNotDumped { .. }
            | SocketError::InetProtocol { .. }
            | SocketError::InetStateNotRestored { .. }
            | SocketError::Family { .. }
            | SocketError::NotInDiag { .. }
            | SocketError::UnixType { .. }
            | SocketError::UnacceptedData { .. }
            | SocketError::FdsInFlight { .. }
            | SocketError::MessageSize { .. }
            | SocketError::ExtUnaccepted { .. }
            | SocketError::ExtQueued { .. }
            | SocketError::ExtPeer { .. }
            | SocketError::ExtPeerData { .. }
            | SocketError::ExtPeerUnnamed { .. }
            | SocketError::SockPacketBound { .. }
            | SocketError::PeerUnnamed { .. }
            | SocketError::PeerClosed { .. }
            | SocketError::NoSender { .. } => libc::EOPNOTSUPP,
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn socket_refusals_name_the_socket_and_say_not_supported() {
        let at = SockAt {
            pid: 7,
            fd: 4,
            ino: 99,
        };
        let e = SocketError::ExtPeerUnnamed { at, peer: 100 };
        assert_eq!(
            e.to_string(),
            "fd 4 of 7 (socket:[99]): its peer socket:[100] outside the tree has no name to \
             connect to again"
        );
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        let e = SocketError::Sys {
            what: "pidfd_getfd fd 4 of 7".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(e.errno(), libc::EPERM);
    }

    #[test]
    fn inet_refusals_read_as_before_and_repair_failures_carry_their_errno() {
        let who = "fd 5 of 7 (socket:[99], AF_INET)".to_string();
        let e = SocketError::TcpEstablished {
            who: who.clone(),
            proto: "TCP".into(),
            src: "127.0.0.1:1000".parse().unwrap(),
            dst: "127.0.0.1:2000".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "fd 5 of 7 (socket:[99], AF_INET): TCP connection 127.0.0.1:1000 -> 127.0.0.1:2000 \
             is established (dump it with --tcp-established)"
        );
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        let e = SocketError::InetStateNotRestored {
            id: 3,
            proto: "TCP".into(),
            state: "SYN_SENT",
        };
        assert_eq!(
            e.to_string(),
            "inet socket id 3: TCP socket in state SYN_SENT (not restored yet)"
        );
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        let e = SocketError::TcpRepair {
            who: format!("{who}: TCP tcp repair"),
            error: soccr::Error::Sys {
                fd: 5,
                what: "TCP_REPAIR",
                source: std::io::Error::from_raw_os_error(libc::EPERM),
            },
        };
        assert!(
            e.to_string()
                .starts_with("fd 5 of 7 (socket:[99], AF_INET): TCP tcp repair: fd 5: TCP_REPAIR")
        );
        assert_eq!(e.errno(), libc::EPERM);
        let e = SocketError::TcpRepair {
            who: "inet socket id 3".into(),
            error: soccr::Error::State { fd: 5, state: 2 },
        };
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
    }
}
