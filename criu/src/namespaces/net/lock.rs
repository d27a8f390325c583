//! `--network-lock iptables|nftables|skip`: while a tree in a network namespace of its own is
//! dumped, and while it is restored, nothing reaches or leaves that namespace but packets
//! carrying the TCP-repair mark `0xC114`.
//!
//! - `nftables`: a table `inet CRIU` with an input and an output base chain, policy drop, that
//!   accept the mark.
//! - `iptables` (the default, as in criu(8)): a chain `CRIU` in the `filter` table (IPv4 and
//!   IPv6) that accepts the mark and drops the rest, jumped to first from `INPUT` and `OUTPUT`.
//! - `skip`: no rules; the `network-lock`/`network-unlock` action scripts still run.
//!
//! The `network-lock` script runs before the rules are added and `network-unlock` before they
//! are removed. A tree in criu's own network namespace is not locked as a whole (its
//! connections are criu's neighbours' too): each connection the dump saves is locked on its own
//! ([`super::conns`]), and the scripts run at the same moments (CRIU 4.2 runs them only for a
//! namespace of the tree's own). The rules are in place while the namespace is dumped, so the saved
//! ruleset has them and a restored namespace is locked from the moment its rules are back.

use std::os::fd::OwnedFd;

use super::conns::{self, ConnLock, MARK, Shared};
use super::{NetError, in_netns, io, run};
use crate::options::values::NetLockMethod as Method;
use crate::scripts::{Notify, ScriptAction};

/// The nftables table (family and name).
const NFT_TABLE: [&str; 2] = ["inet", "CRIU"];
/// The iptables chain.
const CHAIN: &str = "CRIU";
/// The iptables tools, IPv4 and IPv6.
const IPTABLES: [&str; 2] = ["iptables", "ip6tables"];

/// A locked network namespace; dropping it (the failure path) runs the `network-unlock` script
/// given to [`NetLock::take`] and removes the rules, as criu(8) does when a dump fails.
/// [`NetLock::release`] is the orderly way out.
pub struct NetLock<'a> {
    /// The scripts the failure path runs.
    scripts: Option<&'a dyn Notify>,
    /// The tree's own namespace, locked as a whole; `None`: criu's, locked by connection.
    ns: Option<OwnedFd>,
    /// criu's namespace: the connections the dump locks.
    conns: Option<Shared>,
    method: Method,
    pid: i32,
    held: bool,
    /// A restore's images: their connections' rules are lifted with the lock.
    restored: Option<std::path::PathBuf>,
}

impl<'a> NetLock<'a> {
    /// Locks the network namespace of `pid` when it is not criu's own: the `network-lock`
    /// script, then the rules. In criu's own namespace no script runs (as in CRIU); the dump
    /// locks each connection it saves through [`NetLock::conns`].
    ///
    /// # Errors
    /// The script's failure, or a tool's ([`NetError::Tool`]); no rule is left behind.
    pub fn take(
        pid: i32,
        method: Method,
        scripts: Option<&'a dyn Notify>,
    ) -> Result<Option<NetLock<'a>>, NetError> {
        // As CRIU: the network-lock and network-unlock scripts run only for a namespace of
        // the tree's own; in criu's namespace each connection is locked as it is saved.
        let Some(ns) = own_netns(pid)? else {
            return Ok(Some(NetLock {
                scripts: None,
                ns: None,
                conns: Some(ConnLock::shared(method)),
                method,
                pid,
                held: true,
                restored: None,
            }));
        };
        if let Some(s) = scripts {
            s.notify(ScriptAction::NetworkLock, Some(pid))
                .map_err(|source| NetError::Script {
                    action: "network-lock",
                    source,
                })?;
        }
        // Held from the start, so that a half-made lock is taken down by the drop.
        let l = NetLock {
            scripts,
            ns: Some(ns),
            conns: None,
            method,
            pid,
            held: true,
            restored: None,
        };
        if let Some(ns) = &l.ns {
            in_netns(ns, move || add(method))?;
        }
        tracing::info!(pid, ?method, "network locked");
        Ok(Some(l))
    }

    /// For a restore from `dir`: as [`NetLock::take`] (without scripts: the namespace's rules
    /// come back with it); in criu's own namespace [`NetLock::release`] lifts the rules the dump
    /// left for each restored connection.
    ///
    /// # Errors
    /// As [`NetLock::take`].
    pub fn take_restored(
        pid: i32,
        method: Method,
        dir: &std::path::Path,
    ) -> Result<Option<NetLock<'a>>, NetError> {
        let mut l = NetLock::take(pid, method, None)?;
        if let Some(l) = l.as_mut()
            && l.ns.is_none()
        {
            l.restored = Some(dir.to_path_buf());
        }
        Ok(l)
    }

    /// criu's own namespace: the lock of the connections a dump saves (`None` for a namespace
    /// of the tree's own, locked as a whole).
    pub fn conns(&self) -> Option<Shared> {
        self.conns.clone()
    }

    /// Leaves the rules in place (the tree was killed: its namespace goes with it, or the
    /// restore lifts the rules of its connections).
    pub fn keep(mut self) {
        self.held = false;
        if let Some(c) = &self.conns
            && let Ok(mut c) = c.lock()
        {
            c.keep();
        }
    }

    /// The `network-unlock` script (a namespace of the tree's own only), then the rules removed.
    ///
    /// # Errors
    /// The script's failure or a tool's; the rules are removed either way.
    pub fn release(mut self, scripts: Option<&dyn Notify>) -> Result<(), NetError> {
        let script = match scripts.filter(|_| self.ns.is_some()) {
            Some(s) => s
                .notify(ScriptAction::NetworkUnlock, Some(self.pid))
                .map_err(|source| NetError::Script {
                    action: "network-unlock",
                    source,
                }),
            None => Ok(()),
        };
        self.held = false;
        let removed = self.unlock();
        tracing::info!(pid = self.pid, "network unlocked");
        script.and(removed)
    }

    fn unlock(&mut self) -> Result<(), NetError> {
        let method = self.method;
        let mut r = match &self.ns {
            Some(ns) => in_netns(ns, move || remove(method)),
            None => Ok(()),
        };
        if let Some(c) = &self.conns {
            match c.lock() {
                Ok(mut c) => r = r.and(c.unlock()),
                Err(_) => tracing::warn!(pid = self.pid, "connection lock poisoned"),
            }
        }
        if let Some(dir) = self.restored.take() {
            r = r.and(conns::unlock_restored(&dir, method));
        }
        r
    }
}

impl Drop for NetLock<'_> {
    fn drop(&mut self) {
        if self.held {
            if let Some(s) = self.scripts
                && let Err(e) = s.notify(ScriptAction::NetworkUnlock, Some(self.pid))
            {
                tracing::warn!(pid = self.pid, "network-unlock action script: {e}");
            }
            if let Err(e) = self.unlock() {
                tracing::warn!(pid = self.pid, "unlocking the network: {e}");
            }
        }
    }
}

/// The network namespace of `pid` when it differs from criu's.
fn own_netns(pid: i32) -> Result<Option<OwnedFd>, NetError> {
    let path = format!("/proc/{pid}/ns/net");
    let theirs = std::fs::read_link(&path).map_err(io(format!("reading {path}")))?;
    let mine = std::fs::read_link("/proc/self/ns/net").map_err(io("reading our netns"))?;
    if theirs == mine {
        return Ok(None);
    }
    let f = std::fs::File::open(&path).map_err(io(format!("opening {path}")))?;
    Ok(Some(OwnedFd::from(f)))
}

/// Adds the lock in the calling thread's namespace; a namespace locked already (its rules came
/// back from the images) is left as it is.
fn add(method: Method) -> Result<(), NetError> {
    match method {
        Method::Skip => Ok(()),
        Method::Nftables => {
            if nft_locked() {
                return Ok(());
            }
            let [f, t] = NFT_TABLE;
            let chain = |hook: &str| {
                format!(
                    "add chain {f} {t} {hook} {{ type filter hook {hook} priority 0; policy drop; }}; \
                     add rule {f} {t} {hook} meta mark {MARK} accept"
                )
            };
            let cmd = format!("add table {f} {t}; {}; {}", chain("output"), chain("input"));
            run("nft", &[&cmd], None).map(drop)
        }
        Method::Iptables => {
            for tool in iptables() {
                if run(tool, &["-w", "-C", "INPUT", "-j", CHAIN], None).is_ok() {
                    continue;
                }
                run(tool, &["-w", "-N", CHAIN], None)?;
                let mark = ["-w", "-A", CHAIN, "-m", "mark", "--mark", MARK];
                run(tool, &[&mark[..], &["-j", "ACCEPT"]].concat(), None)?;
                run(tool, &["-w", "-A", CHAIN, "-j", "DROP"], None)?;
                for base in ["INPUT", "OUTPUT"] {
                    run(tool, &["-w", "-I", base, "-j", CHAIN], None)?;
                }
            }
            Ok(())
        }
    }
}

/// The iptables tools to use: `ip6tables` only where the kernel has IPv6.
fn iptables() -> &'static [&'static str] {
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        &IPTABLES
    } else {
        &IPTABLES[..1]
    }
}

fn nft_locked() -> bool {
    run("nft", &["list", "table", NFT_TABLE[0], NFT_TABLE[1]], None).is_ok()
}

/// Removes every rule [`add`] may have made (a half-made lock too); the first failure is
/// reported after everything was tried.
fn remove(method: Method) -> Result<(), NetError> {
    match method {
        Method::Skip => Ok(()),
        Method::Nftables => {
            if !nft_locked() {
                return Ok(());
            }
            run(
                "nft",
                &["delete", "table", NFT_TABLE[0], NFT_TABLE[1]],
                None,
            )
            .map(drop)
        }
        Method::Iptables => {
            let mut first = Ok(());
            for tool in iptables() {
                // Every jump (a restored ruleset and a second lock may both have one).
                for base in ["INPUT", "OUTPUT"] {
                    for _ in 0..16 {
                        if run(tool, &["-w", "-D", base, "-j", CHAIN], None).is_err() {
                            break;
                        }
                    }
                }
                if run(tool, &["-w", "-S", CHAIN], None).is_err() {
                    continue;
                }
                for args in [["-w", "-F", CHAIN], ["-w", "-X", CHAIN]] {
                    if let Err(e) = run(tool, &args, None) {
                        first = first.and(Err(e));
                    }
                }
            }
            first
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn methods_parse_by_name_and_rpc_value() {
        assert_eq!(Method::parse("iptables"), Some(Method::Iptables));
        assert_eq!(Method::parse("nftables"), Some(Method::Nftables));
        assert_eq!(Method::parse("skip"), Some(Method::Skip));
        assert_eq!(Method::parse("ipfw"), None);
        assert_eq!(Method::default(), Method::Iptables);
        assert_eq!(Method::from_rpc(2), Some(Method::Nftables));
        assert_eq!(Method::from_rpc(3), Some(Method::Skip));
        assert_eq!(Method::from_rpc(0), None);
    }
}
