//! Per-connection network locking, for a tree in criu's own network namespace (where locking
//! the whole namespace would cut off criu's neighbours too): each TCP connection the dump saves
//! gets one rule pair, by address and port, before it is put in repair mode, so that nothing the
//! peer sends reaches a port whose socket is gone (the kernel would answer with a reset).
//!
//! As criu(8) writes them (the facts: CRIU's `criu/netfilter.c`):
//! - `iptables`: `-I INPUT -p tcp -m mark ! --mark 0xC114 -s PEER --sport PPORT -d OWN --dport
//!   OPORT -j DROP` and the same in `OUTPUT` the other way round (`ip6tables` for IPv6; a
//!   v4-mapped IPv6 connection is locked with `iptables` and its IPv4 addresses).
//! - `nftables`: a table `inet CRIU-RUNID` (the dump's run id, which the inventory keeps as
//!   `dump_criu_run_id`) with input and output chains that accept the mark and drop what
//!   matches the sets `conns4`/`conns6` (`saddr . sport . daddr . dport`); each connection
//!   adds its two elements. The table is removed as a whole.
//!
//! The rules stay when the dump kills the tree ([`ConnLock::keep`]); the restore of the images
//! removes them once the tree is back ([`unlock_restored`]). A dump that leaves the tree running,
//! or fails, removes them itself.
// Unsafe code: getrandom for the run id.
#![allow(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use criu_images::ImageDir;
use criu_images::pb::{FdTypes, InetSkEntry};

use super::{NetError, run};
use crate::files::inet_addr::addr;
use crate::options::values::NetLockMethod as Method;

/// The mark TCP-repair sockets carry; the lock lets it through.
pub(super) const MARK: &str = "0xC114";

/// One locked connection: our end, the peer.
type Conn = (SocketAddr, SocketAddr);

/// The connections a dump locked.
#[derive(Debug)]
pub struct ConnLock {
    method: Method,
    /// `inet CRIU-RUNID` (nftables).
    table: String,
    /// The nftables table exists.
    made: bool,
    locked: Vec<Conn>,
    /// Leave the rules when dropped (the tree was killed; the restore removes them).
    kept: bool,
}

/// A [`ConnLock`] shared by the dump's network lock and its inet sockets.
pub type Shared = Arc<Mutex<ConnLock>>;

/// Fills `b` from the kernel's random pool (`getrandom`, no file to open); false if it could
/// not.
fn fill_random(b: &mut [u8; 16]) -> bool {
    // SAFETY: getrandom writes at most `b.len()` bytes into the live buffer `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    n == b.len() as isize
}

/// This criu's run id, a random UUID (the inventory's `dump_criu_run_id`; the nftables table
/// of a dump is named after it). One per process: the service forks for each request.
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 16];
        if !fill_random(&mut b) {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            b = t.to_le_bytes();
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    })
}

fn table_of(run_id: &str) -> String {
    format!("inet CRIU-{run_id}")
}

/// A v4-mapped IPv6 address as IPv4 (iptables and the `conns4` set see it so).
fn plain(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v) => match v.ip().to_ipv4_mapped() {
            Some(ip4) => SocketAddr::new(IpAddr::V4(ip4), v.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// The iptables tool and the two rules (`INPUT`, `OUTPUT`) of connection `own` <-> `peer`.
fn ipt_rules(own: SocketAddr, peer: SocketAddr) -> (&'static str, [Vec<String>; 2]) {
    let (own, peer) = (plain(own), plain(peer));
    let tool = if own.is_ipv4() {
        "iptables"
    } else {
        "ip6tables"
    };
    let rule = |chain: &str, from: SocketAddr, to: SocketAddr| -> Vec<String> {
        [
            chain,
            "--protocol",
            "tcp",
            "-m",
            "mark",
            "!",
            "--mark",
            MARK,
            "--source",
            &from.ip().to_string(),
            "--sport",
            &from.port().to_string(),
            "--destination",
            &to.ip().to_string(),
            "--dport",
            &to.port().to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    (tool, [rule("INPUT", peer, own), rule("OUTPUT", own, peer)])
}

/// Inserts (`-I`) or deletes (`-D`) the rule pair of a connection.
fn ipt(op: &str, own: SocketAddr, peer: SocketAddr) -> Result<(), NetError> {
    let (tool, rules) = ipt_rules(own, peer);
    for (done, r) in rules.iter().enumerate() {
        if let Err(e) = ipt_one(tool, op, r) {
            // Inserting: take the half made back out.
            if op == "-I" && done == 1 {
                let _ = ipt_one(tool, "-D", &rules[0]);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn ipt_one(tool: &str, op: &str, rule: &[String]) -> Result<(), NetError> {
    let mut args = vec!["-w", "-t", "filter", op];
    args.extend(rule.iter().map(String::as_str));
    run(tool, &args, None).map(drop)
}

/// The two set elements of a connection (`conns4` or `conns6`).
fn nft_elements(table: &str, own: SocketAddr, peer: SocketAddr) -> String {
    let (own, peer) = (plain(own), plain(peer));
    let set = if own.is_ipv4() { "conns4" } else { "conns6" };
    let el = |a: SocketAddr, b: SocketAddr| {
        format!("{} . {} . {} . {}", a.ip(), a.port(), b.ip(), b.port())
    };
    format!(
        "add element {table} {set} {{ {} }}; add element {table} {set} {{ {} }}",
        el(peer, own),
        el(own, peer)
    )
}

fn nft_make(table: &str) -> Result<(), NetError> {
    let mut cmd = format!("add table {table}");
    for hook in ["output", "input"] {
        cmd += &format!(
            "; add chain {table} {hook} {{ type filter hook {hook} priority 0; }}\
             ; add rule {table} {hook} meta mark {MARK} accept"
        );
    }
    cmd += &format!(
        "; add set {table} conns4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; }}\
         ; add set {table} conns6 {{ type ipv6_addr . inet_service . ipv6_addr . inet_service; }}"
    );
    for hook in ["output", "input"] {
        cmd += &format!(
            "; add rule {table} {hook} ip saddr . tcp sport . ip daddr . tcp dport @conns4 drop\
             ; add rule {table} {hook} ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop"
        );
    }
    run("nft", &[&cmd], None).map(drop)
}

fn nft_delete(table: &str) -> Result<(), NetError> {
    let mut words = table.split(' ');
    let (Some(f), Some(t)) = (words.next(), words.next()) else {
        return Ok(());
    };
    if run("nft", &["list", "table", f, t], None).is_err() {
        return Ok(());
    }
    run("nft", &["delete", "table", f, t], None).map(drop)
}

impl ConnLock {
    /// An empty lock of `method`, shared.
    pub fn shared(method: Method) -> Shared {
        Arc::new(Mutex::new(ConnLock {
            method,
            table: table_of(run_id()),
            made: false,
            locked: Vec::new(),
            kept: false,
        }))
    }

    /// Locks connection `own` <-> `peer`.
    ///
    /// # Errors
    /// A tool's failure ([`NetError::Tool`]); nothing of this connection is left locked.
    pub fn lock(&mut self, own: SocketAddr, peer: SocketAddr) -> Result<(), NetError> {
        match self.method {
            Method::Skip => return Ok(()),
            Method::Iptables => ipt("-I", own, peer)?,
            Method::Nftables => {
                if !self.made {
                    if let Err(e) = nft_make(&self.table) {
                        let _ = nft_delete(&self.table);
                        return Err(e);
                    }
                    self.made = true;
                }
                run("nft", &[&nft_elements(&self.table, own, peer)], None)?;
            }
        }
        tracing::info!(%own, %peer, method = ?self.method, "connection locked");
        self.locked.push((own, peer));
        Ok(())
    }

    /// Leaves the rules in place (the tree was killed; the restore lifts them).
    pub fn keep(&mut self) {
        self.kept = true;
    }

    /// Removes every rule this lock added; the first failure is reported after all were tried.
    ///
    /// # Errors
    /// A tool's failure.
    pub fn unlock(&mut self) -> Result<(), NetError> {
        let mut first = Ok(());
        match self.method {
            Method::Skip => {}
            Method::Iptables => {
                for (own, peer) in self.locked.drain(..) {
                    first = first.and(ipt("-D", own, peer));
                }
            }
            Method::Nftables => {
                if self.made {
                    first = nft_delete(&self.table);
                    self.made = false;
                }
            }
        }
        self.locked.clear();
        first
    }
}

impl Drop for ConnLock {
    fn drop(&mut self) {
        if !self.kept
            && let Err(e) = self.unlock()
        {
            tracing::warn!("unlocking the dumped connections: {e}");
        }
    }
}

/// The connections a restore from `dir` brings back, as a dump locked them (TCP in a state
/// saved with repair, with a stream image, i.e. not dumped for `--tcp-close`).
fn restored_conns(dir: &Path) -> Result<(Vec<Conn>, Option<String>), NetError> {
    let images = ImageDir::new(dir);
    let inv = images.read_inventory().ok();
    if inv.as_ref().is_some_and(|i| i.tcp_close == Some(true)) {
        return Ok((Vec::new(), None));
    }
    let run_id = inv.and_then(|i| i.dump_criu_run_id);
    let files = images.read_files().map_err(|e| NetError::Io {
        what: format!("reading the inet sockets of {}", dir.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    let conns = files
        .iter()
        .filter(|f| f.r#type == FdTypes::Inetsk as i32)
        .filter_map(|f| f.isk.as_ref())
        .filter(|e| {
            e.proto == libc::IPPROTO_TCP as u32
                && e.r#type == libc::SOCK_STREAM as u32
                && e.queued_on.is_none()
                && soccr::supported(e.state)
                && dir.join(criu_images::names::tcp_stream(e.ino)).exists()
        })
        .filter_map(entry_conn)
        .collect();
    Ok((conns, run_id))
}

fn entry_conn(e: &InetSkEntry) -> Option<Conn> {
    Some((
        addr(e.family, &e.src_addr, e.src_port)?,
        addr(e.family, &e.dst_addr, e.dst_port)?,
    ))
}

/// After a restore in criu's own network namespace from `dir`: removes the rules the dump left
/// for each connection (a rule already gone is no error: the images may come from elsewhere).
///
/// # Errors
/// The images cannot be read, or nft failed to delete the table.
pub fn unlock_restored(dir: &Path, method: Method) -> Result<(), NetError> {
    if method == Method::Skip {
        return Ok(());
    }
    let (conns, run_id) = restored_conns(dir)?;
    match method {
        Method::Skip => Ok(()),
        Method::Iptables => {
            for (own, peer) in conns {
                let (tool, rules) = ipt_rules(own, peer);
                for r in &rules {
                    if let Err(e) = ipt_one(tool, "-D", r) {
                        tracing::debug!(%own, %peer, "no lock rule to remove: {e}");
                    }
                }
            }
            Ok(())
        }
        Method::Nftables => match run_id {
            Some(id) => nft_delete(&table_of(&id)),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_both_directions_and_mapped_addresses_use_iptables() {
        let own: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        let peer: SocketAddr = "[::ffff:127.0.0.2]:5000".parse().unwrap();
        let (tool, [input, output]) = ipt_rules(own, peer);
        assert_eq!(tool, "iptables");
        let s = |v: &Vec<String>| v.join(" ");
        assert!(s(&input).starts_with("INPUT --protocol tcp -m mark ! --mark 0xC114"));
        assert!(s(&input).ends_with(
            "--source 127.0.0.2 --sport 5000 --destination 127.0.0.1 --dport 4000 -j DROP"
        ));
        assert!(s(&output).contains("--source 127.0.0.1 --sport 4000 --destination 127.0.0.2"));
        let (tool6, _) = ipt_rules("[::1]:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(tool6, "ip6tables");
        let el = nft_elements("inet CRIU-x", own, peer);
        assert!(
            el.contains("conns4 { 127.0.0.2 . 5000 . 127.0.0.1 . 4000 }"),
            "{el}"
        );
        assert_eq!(run_id().len(), 36);
        assert_eq!(run_id(), run_id());
    }
}
