//! The network namespace: both sides.
//!
//! Dump ([`dump_for_tree`], when the tree's root has a network namespace of its own): from a
//! thread that entered it, the links (`ip -d -j link show`: loopback and veth; any other kind
//! is refused by name) become `netdev-ID.img` (`NetDeviceEntry`, with each device's IPv4 and
//! IPv6 `conf` sysctls in CRIU's order), the namespace's `all`/`default` confs, `net.unix` and
//! `net.ipv4` sysctls `netns-ID.img`, and the real tools' own save formats go into the raw
//! images CRIU uses: `ip addr save` (`ifaddr-ID.img`), `ip route save` (`route-ID.img`),
//! `ip -6 route save` (`route6-ID.img`), `ip rule save` (`rule-ID.img`), `nft list ruleset`
//! (`nftables-ID.img`) and the legacy `iptables-save`/`ip6tables-save`
//! (`iptables-ID.img`/`ip6tables-ID.img`; the nft-backed ones are in the ruleset already).
//!
//! Restore ([`NetNs::prepare`]): criu makes a new network namespace and enters it before any
//! socket or task is made (the sockets of the tree are then made in it and the tasks are
//! created in it), creates the links (a veth's outer end, named by `--external
//! veth[INNER]:OUTER`, goes to criu's own namespace, up), sets flags, MTU, addresses and
//! sysctls, restores addresses, routes, rules and netfilter rules with the tools' restore
//! commands, and goes back to its own namespace once the tree is created ([`NetNs::finish`]).
//! With `--empty-ns net` only the namespace (and its loopback, up) is made: the runtime sets
//! up the rest. A failure leaves the namespace (gone with the last task) and deletes the
//! outer ends it made.
// Unsafe code: unshare/setns of criu's network namespace (one thread at a time).
#![allow(unsafe_code)]

pub mod conns;
mod links;
mod lock;
pub use lock::NetLock;
mod restore;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use criu_images::pb::{NetDeviceEntry, NetnsEntry, SysctlEntry};
use criu_images::{ImageError, magic, names};
use nix::errno::Errno;

use crate::options::values::External;
pub use restore::NetNs;

/// CRIU's order of the IPv4 per-device `conf` sysctls (net.c `devconfs4`).
const DEVCONFS4: &[&str] = &[
    "accept_local",
    "accept_redirects",
    "accept_source_route",
    "arp_accept",
    "arp_announce",
    "arp_filter",
    "arp_ignore",
    "arp_notify",
    "bootp_relay",
    "disable_policy",
    "disable_xfrm",
    "force_igmp_version",
    "forwarding",
    "igmpv2_unsolicited_report_interval",
    "igmpv3_unsolicited_report_interval",
    "log_martians",
    "medium_id",
    "promote_secondaries",
    "proxy_arp",
    "proxy_arp_pvlan",
    "route_localnet",
    "rp_filter",
    "secure_redirects",
    "send_redirects",
    "shared_media",
    "src_valid_mark",
    "tag",
    "ignore_routes_with_linkdown",
    "drop_gratuitous_arp",
    "drop_unicast_in_l2_multicast",
];

/// CRIU's order of the IPv6 per-device `conf` sysctls (net.c `devconfs6`).
const DEVCONFS6: &[&str] = &[
    "accept_dad",
    "accept_ra",
    "accept_ra_defrtr",
    "accept_ra_from_local",
    "accept_ra_min_hop_limit",
    "accept_ra_mtu",
    "accept_ra_pinfo",
    "accept_ra_rt_info_max_plen",
    "accept_ra_rtr_pref",
    "accept_redirects",
    "accept_source_route",
    "autoconf",
    "dad_transmits",
    "disable_ipv6",
    "drop_unicast_in_l2_multicast",
    "drop_unsolicited_na",
    "force_mld_version",
    "force_tllao",
    "forwarding",
    "hop_limit",
    "ignore_routes_with_linkdown",
    "keep_addr_on_down",
    "max_addresses",
    "max_desync_factor",
    "mldv1_unsolicited_report_interval",
    "mldv2_unsolicited_report_interval",
    "mtu",
    "ndisc_notify",
    "optimistic_dad",
    "proxy_ndp",
    "regen_max_retry",
    "router_probe_interval",
    "router_solicitation_delay",
    "router_solicitation_interval",
    "router_solicitations",
    "stable_secret",
    "suppress_frag_ndisc",
    "temp_prefered_lft",
    "temp_valid_lft",
    "use_oif_addrs_only",
    "use_optimistic",
    "use_tempaddr",
];

/// `nd_type` values.
const ND_LOOPBACK: i32 = 1;
const ND_VETH: i32 = 2;
const ND_TUN: i32 = 3;
const ND_MACVLAN: i32 = 7;
/// `SysctlType` values.
const CTL_STR: i32 = 5;
const CTL_32: i32 = 6;

/// `IFF_*` names as `ip -j` prints them.
const IFF: &[(&str, u32)] = &[
    ("UP", 0x1),
    ("BROADCAST", 0x2),
    ("DEBUG", 0x4),
    ("LOOPBACK", 0x8),
    ("POINTOPOINT", 0x10),
    ("NOTRAILERS", 0x20),
    ("RUNNING", 0x40),
    ("NOARP", 0x80),
    ("PROMISC", 0x100),
    ("ALLMULTI", 0x200),
    ("MASTER", 0x400),
    ("SLAVE", 0x800),
    ("MULTICAST", 0x1000),
    ("LOWER_UP", 0x10000),
    ("DORMANT", 0x20000),
];

/// A network namespace that cannot be saved or made again.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A tree whose tasks are in more than one network namespace.
    #[error(
        "unsupported: network namespace: {pid} is in a network namespace other than the tree root's"
    )]
    MixedNamespaces {
        /// The first task outside the root's namespace.
        pid: i32,
    },
    /// A link of a kind that is not dumped.
    #[error(
        "unsupported: network namespace: link {name} is a {kind} (only loopback, veth, macvlan \
         and persistent tun/tap links are restored)"
    )]
    LinkKind {
        /// The link.
        name: String,
        /// Its kind as `ip -j link` names it.
        kind: String,
    },
    /// A link in the images of a type that is not restored.
    #[error("unsupported: network namespace: link {name} of type {nd_type}")]
    LinkType {
        /// The link.
        name: String,
        /// Its `nd_type` in the image.
        nd_type: i32,
    },
    /// The images hold netfilter rules and the tool to load them is not installed.
    #[error(
        "unsupported: network namespace: the images hold netfilter rules and {tool} is missing \
         (install {package})"
    )]
    MissingTool {
        /// The tool (`iptables-restore`, `nft`, ...).
        tool: &'static str,
        /// The package that has it.
        package: &'static str,
    },
    /// The `network-lock` or `network-unlock` action script (or notification) failed.
    #[error("network namespace: {action} action script: {source}")]
    Script {
        /// `network-lock` or `network-unlock`.
        action: &'static str,
        /// The script's failure.
        source: crate::scripts::ScriptError,
    },
    /// A macvlan whose lower device is not named.
    #[error("macvlan {inner} needs its lower device: --external macvlan[{inner}]:LOWER")]
    NoLower {
        /// The device inside.
        inner: String,
    },
    /// A veth whose outer end is not named.
    #[error("veth {inner} needs its outer end: --external veth[{inner}]:OUTER")]
    NoExternal {
        /// The device inside.
        inner: String,
    },
    /// A tool failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Tool {
        /// The command line.
        cmd: String,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What criu did.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {errno}")]
    Sys {
        /// What criu did.
        what: &'static str,
        /// The error.
        errno: Errno,
    },
    /// An image.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// An external network namespace (`--external net[INO]:KEY` at dump) not given back.
    #[error(
        "the network namespace was external ({key}): give it with --inherit-fd fd[N]:{key} or \
         --join-ns net:PATH"
    )]
    NoExternalNs {
        /// The key saved at dump.
        key: String,
    },
    /// An image that decodes but makes no sense.
    #[error("network images: {0}")]
    Bad(String),
}

impl NetError {
    /// The errno a client sees.
    pub fn errno(&self) -> i32 {
        match self {
            NetError::MixedNamespaces { .. }
            | NetError::LinkKind { .. }
            | NetError::LinkType { .. }
            | NetError::MissingTool { .. } => libc::EOPNOTSUPP,
            NetError::Script { source, .. } => source.errno(),
            NetError::NoExternal { .. }
            | NetError::NoLower { .. }
            | NetError::NoExternalNs { .. }
            | NetError::Bad(_) => libc::EINVAL,
            NetError::Tool { .. } => libc::EIO,
            NetError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            NetError::Sys { errno, .. } => *errno as i32,
            NetError::Image(_) => libc::EINVAL,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

/// Runs `tool ARGS` with stdin from `input` (or nothing) and returns its output; fails when
/// it fails.
fn run(tool: &str, args: &[&str], input: Option<std::fs::File>) -> Result<Vec<u8>, NetError> {
    let mut c = Command::new(tool);
    c.args(args)
        .stdin(input.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = c.output().map_err(io(format!("running {tool}")))?;
    if !out.status.success() {
        return Err(NetError::Tool {
            cmd: format!("{tool} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Runs `f` in a thread that entered network namespace `ns` (only that thread moves; what it
/// spawns runs there too).
fn in_netns<T: Send>(
    ns: &OwnedFd,
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns of this helper thread only, by a descriptor the caller holds.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(NetError::Sys {
                    what: "entering the network namespace",
                    errno: Errno::last(),
                });
            }
            f()
        })
        .join()
        .unwrap_or(Err(NetError::Sys {
            what: "network namespace helper thread panicked",
            errno: Errno::EFAULT,
        }))
    })
}

fn read_sysctl(path: &str, names: &[&str]) -> Vec<SysctlEntry> {
    names
        .iter()
        .map(|n| {
            let v = std::fs::read_to_string(format!("{path}/{n}")).ok();
            let v = v.as_deref().map(str::trim);
            match v.and_then(|v| v.parse::<i32>().ok()) {
                Some(i) => SysctlEntry {
                    r#type: CTL_32,
                    iarg: Some(i),
                    sarg: None,
                },
                None => SysctlEntry {
                    r#type: CTL_STR,
                    iarg: None,
                    sarg: v.map(str::to_string),
                },
            }
        })
        .collect()
}

/// Writes the saved values that differ from the current ones (a value never read is skipped).
fn write_sysctl(path: &str, names: &[&str], saved: &[SysctlEntry]) -> Result<(), NetError> {
    for (n, e) in names.iter().zip(saved) {
        let want = match (e.iarg, &e.sarg) {
            (Some(i), _) => i.to_string(),
            (None, Some(s)) => s.clone(),
            (None, None) => continue,
        };
        let p = format!("{path}/{n}");
        let Ok(now) = std::fs::read_to_string(&p) else {
            continue;
        };
        if now.trim() == want {
            continue;
        }
        std::fs::write(&p, &want).map_err(io(format!("writing {p} = {want}")))?;
    }
    Ok(())
}

const CONF4: &str = "/proc/sys/net/ipv4/conf";
const CONF6: &str = "/proc/sys/net/ipv6/conf";

/// One link as `ip -j` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Link {
    ifindex: u32,
    name: String,
    mtu: u32,
    flags: u32,
    kind: String,
    address: Option<Vec<u8>>,
    /// `linkinfo.info_data` (the kind's parameters).
    data: serde_json::Value,
}

fn parse_links(json: &[u8]) -> Result<Vec<Link>, NetError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| NetError::Bad(format!("ip -j link show: {e}")))?;
    let arr = v
        .as_array()
        .ok_or_else(|| NetError::Bad("ip -j link show: not a list".into()))?;
    let mut out = Vec::new();
    for l in arr {
        let name = l["ifname"].as_str().unwrap_or_default().to_string();
        let flags = l["flags"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|s| s.as_str())
                    .filter_map(|s| IFF.iter().find(|(n, _)| *n == s).map(|x| x.1))
                    .fold(0, |a, b| a | b)
            })
            .unwrap_or(0);
        let kind = if l["link_type"].as_str() == Some("loopback") {
            "loopback".to_string()
        } else {
            l["linkinfo"]["info_kind"]
                .as_str()
                .unwrap_or(l["link_type"].as_str().unwrap_or("?"))
                .to_string()
        };
        let address = l["address"].as_str().and_then(|a| {
            a.split(':')
                .map(|b| u8::from_str_radix(b, 16).ok())
                .collect::<Option<Vec<u8>>>()
        });
        out.push(Link {
            ifindex: l["ifindex"].as_u64().unwrap_or(0) as u32,
            name,
            mtu: l["mtu"].as_u64().unwrap_or(0) as u32,
            flags,
            kind,
            address,
            data: l["linkinfo"]["info_data"].clone(),
        });
    }
    Ok(out)
}

fn raw_images(id: u32) -> [(String, &'static str); 7] {
    [
        (format!("ifaddr-{id}.img"), "ifaddr"),
        (format!("route-{id}.img"), "route"),
        (format!("route6-{id}.img"), "route6"),
        (format!("rule-{id}.img"), "rule"),
        (format!("nftables-{id}.img"), "nftables"),
        (format!("iptables-{id}.img"), "iptables"),
        (format!("ip6tables-{id}.img"), "ip6tables"),
    ]
}

/// Dumps the tree's network namespace when its root task (the first of `tasks`, each a pid
/// with its namespace inodes) has one of its own (not criu's, `own_ns`), as `ns_id`.
///
/// # Errors
/// [`NetError`]: a task of the tree in another network namespace, a link kind not handled,
/// a tool that failed.
pub(crate) fn dump_for_tree<'a>(
    mut tasks: impl Iterator<Item = (i32, &'a [(String, u64)])>,
    own_ns: &[(String, u64)],
    ns_id: Option<u32>,
    dir: &Path,
    external: &[External],
) -> Result<(), NetError> {
    let net = |ns: &[(String, u64)]| ns.iter().find(|(k, _)| k == "net").map(|n| n.1);
    let Some((root, root_ns)) = tasks.next() else {
        return Ok(());
    };
    let theirs = net(root_ns);
    if let Some((pid, _)) = tasks.find(|(_, ns)| net(ns) != theirs) {
        return Err(NetError::MixedNamespaces { pid });
    }
    if theirs == net(own_ns) {
        return Ok(());
    }
    let id = ns_id.ok_or_else(|| NetError::Bad("the root task has no net namespace id".into()))?;
    // `--external net[INO]:KEY`: the namespace is the caller's; only its key is saved, the
    // restore joins the namespace given for it with `--inherit-fd fd[N]:KEY`.
    if let Some(key) = external.iter().find_map(|e| {
        (e.kind == "net" && theirs.is_some_and(|t| e.id == t.to_string()))
            .then(|| e.value.clone())
            .flatten()
    }) {
        tracing::info!(id, key, "the network namespace is external");
        let ns = NetnsEntry {
            ext_key: Some(key),
            ..NetnsEntry::default()
        };
        criu_images::write_all(dir.join(names::netns(id)), magic::NETNS, [&ns])?;
        return Ok(());
    }
    let path = format!("/proc/{root}/ns/net");
    let ns = OwnedFd::from(std::fs::File::open(&path).map_err(io(format!("opening {path}")))?);
    let dir = dir.to_path_buf();
    in_netns(&ns, move || dump_ns(id, &dir))
}

fn dump_ns(id: u32, dir: &Path) -> Result<(), NetError> {
    let links = parse_links(&run("ip", &["-d", "-j", "link", "show"], None)?)?;
    let mut devs = Vec::new();
    for l in &links {
        let kind = match l.kind.as_str() {
            "loopback" => ND_LOOPBACK,
            "veth" => ND_VETH,
            "macvlan" => ND_MACVLAN,
            // Persistent, or held by the tree's `/dev/net/tun` descriptors (files::tun).
            "tun" => ND_TUN,
            k => {
                return Err(NetError::LinkKind {
                    name: l.name.clone(),
                    kind: k.to_string(),
                });
            }
        };
        devs.push(NetDeviceEntry {
            r#type: kind,
            ifindex: l.ifindex,
            mtu: l.mtu,
            flags: l.flags,
            name: l.name.clone(),
            address: if kind != ND_LOOPBACK {
                l.address.clone()
            } else {
                None
            },
            macvlan: (kind == ND_MACVLAN).then(|| links::macvlan_entry(&l.data)),
            tun: (kind == ND_TUN).then(|| links::tun_entry(&l.data)),
            conf4: read_sysctl(&format!("{CONF4}/{}", l.name), DEVCONFS4),
            conf6: read_sysctl(&format!("{CONF6}/{}", l.name), DEVCONFS6),
            ..NetDeviceEntry::default()
        });
    }
    criu_images::write_all(dir.join(format!("netdev-{id}.img")), magic::NETDEV, &devs)?;
    let ns = NetnsEntry {
        def_conf4: read_sysctl(&format!("{CONF4}/default"), DEVCONFS4),
        all_conf4: read_sysctl(&format!("{CONF4}/all"), DEVCONFS4),
        def_conf6: read_sysctl(&format!("{CONF6}/default"), DEVCONFS6),
        all_conf6: read_sysctl(&format!("{CONF6}/all"), DEVCONFS6),
        unix_conf: read_sysctl("/proc/sys/net/unix", &["max_dgram_qlen"]),
        ipv4_sysctl: read_sysctl("/proc/sys/net/ipv4", &["ping_group_range"]),
        ..NetnsEntry::default()
    };
    criu_images::write_all(dir.join(names::netns(id)), magic::NETNS, [&ns])?;
    let [ifaddr, route, route6, rule, nft, ipt, ip6t] = raw_images(id);
    let save = |name: &str, tool: &str, args: &[&str]| -> Result<(), NetError> {
        let out = run(tool, args, None)?;
        std::fs::write(dir.join(name), out).map_err(io(format!("writing {name}")))
    };
    save(&ifaddr.0, "ip", &["addr", "save"])?;
    save(&route.0, "ip", &["route", "save"])?;
    save(&route6.0, "ip", &["-6", "route", "save"])?;
    if let Err(e) = save(&rule.0, "ip", &["rule", "save"]) {
        tracing::warn!(error = %e, "ip rule save is not supported: rules not saved");
    }
    let nft_there = have("nft");
    if nft_there {
        save(&nft.0, "nft", &["list", "ruleset"])?;
    }
    // With nft, iptables-nft's rules are in the ruleset: only the legacy tables are saved.
    let (v4, v6) = if have("iptables-legacy-save") {
        ("iptables-legacy-save", "ip6tables-legacy-save")
    } else if !nft_there && have("iptables-save") {
        ("iptables-save", "ip6tables-save")
    } else {
        ("", "")
    };
    if !v4.is_empty() {
        save(&ipt.0, v4, &[])?;
        save(&ip6t.0, v6, &[])?;
    } else if !nft_there {
        tracing::warn!("neither nft nor iptables-save here: netfilter rules not saved");
    }
    tracing::info!(links = devs.len(), "network namespace dumped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_from_ip_json() {
        let j = br#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00"},
{"ifindex":5,"ifname":"v1","flags":["BROADCAST","MULTICAST","UP"],"mtu":1400,"link_type":"ether","address":"aa:bb:cc:00:11:22","linkinfo":{"info_kind":"veth"}}]"#;
        let l = parse_links(j).unwrap();
        assert_eq!(l[0].kind, "loopback");
        assert_eq!(l[0].flags, 0x1 | 0x8 | 0x10000);
        assert_eq!(l[1].kind, "veth");
        assert_eq!(l[1].mtu, 1400);
        assert_eq!(
            l[1].address.as_deref(),
            Some(&[0xaa, 0xbb, 0xcc, 0, 0x11, 0x22][..])
        );
        assert!(parse_links(b"{").is_err());
        assert!(parse_links(b"{}").is_err());
    }

    #[test]
    fn sysctl_order_is_criu_s() {
        assert_eq!(DEVCONFS4.len(), 30);
        assert_eq!(DEVCONFS6.len(), 42);
        assert_eq!(DEVCONFS4[12], "forwarding");
    }

    #[test]
    fn refusals_are_typed_and_carry_eopnotsupp() {
        let refusals = [
            (
                NetError::MixedNamespaces { pid: 7 },
                "7 is in a network namespace other than the tree root's",
            ),
            (
                NetError::LinkKind {
                    name: "br0".into(),
                    kind: "bridge".into(),
                },
                "link br0 is a bridge (only loopback, veth, macvlan and persistent tun/tap links \
                 are restored)",
            ),
            (
                NetError::LinkType {
                    name: "x".into(),
                    nd_type: 9,
                },
                "link x of type 9",
            ),
            (
                NetError::MissingTool {
                    tool: "nft",
                    package: "nftables",
                },
                "the images hold netfilter rules and nft is missing (install nftables)",
            ),
        ];
        for (e, what) in refusals {
            assert_eq!(
                e.to_string(),
                format!("unsupported: network namespace: {what}")
            );
            assert_eq!(e.errno(), libc::EOPNOTSUPP, "{e}");
        }
        // A failing network-lock/unlock script is not a refusal: it carries the script
        // error's own errno, as other failing action scripts do.
        let e = NetError::Script {
            action: "network-lock",
            source: crate::scripts::ScriptError::Refused {
                action: "network-lock",
            },
        };
        assert_eq!(
            e.to_string(),
            "network namespace: network-lock action script: notification network-lock refused"
        );
        assert_eq!(e.errno(), libc::ECANCELED, "{e}");
    }
}
