//! The link kinds besides loopback and veth: macvlan and persistent tun/tap devices, both ways.
//!
//! A macvlan (`MacvlanLinkEntry`: its mode as the kernel numbers it) sits on a lower device
//! outside the tree's namespace, which the restore is given as CRIU's `--external
//! macvlan[NAME]:LOWER`: it is made on LOWER from criu's own namespace right into the tree's,
//! with its old ifindex. A tun or tap device
//! (`TunLinkEntry`: `IFF_TUN`/`IFF_TAP`, `IFF_NO_PI`, `IFF_VNET_HDR`, `IFF_MULTI_QUEUE`, owner
//! and group, `IFF_PERSIST` when it was persistent) is made again, persistent, with `ip
//! tuntap`; one that was held only by the tree's `/dev/net/tun` descriptors is made
//! non-persistent again when the task attaches ([`crate::files::tun`]).

use std::os::fd::OwnedFd;

use criu_images::pb::{MacvlanLinkEntry, NetDeviceEntry, TunLinkEntry};

use super::{NetError, in_netns, run};

/// The kernel's `MACVLAN_MODE_*` by the name `ip` prints.
const MODES: [(&str, u32); 5] = [
    ("private", 1),
    ("vepa", 2),
    ("bridge", 4),
    ("passthru", 8),
    ("source", 16),
];

const IFF_TUN: u32 = 0x1;
const IFF_TAP: u32 = 0x2;
const IFF_MULTI_QUEUE: u32 = 0x100;
const IFF_NO_PI: u32 = 0x1000;
const IFF_VNET_HDR: u32 = 0x4000;

/// A macvlan's entry from its `ip -d -j` `info_data`.
pub(super) fn macvlan_entry(data: &serde_json::Value) -> MacvlanLinkEntry {
    let mode = data["mode"]
        .as_str()
        .and_then(|m| MODES.iter().find(|(n, _)| *n == m))
        .map_or(4, |m| m.1);
    MacvlanLinkEntry { mode, flags: None }
}

/// A uid or gid as `ip` prints it (a number, or a name of this machine's).
fn id_of(v: &serde_json::Value, group: bool) -> i32 {
    if let Some(n) = v.as_i64() {
        return n as i32;
    }
    let Some(name) = v.as_str() else {
        return -1;
    };
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let found = if group {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw() as i32)
    } else {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw() as i32)
    };
    found.unwrap_or(-1)
}

/// A tun/tap device's entry from its `ip -d -j` `info_data`.
pub(super) fn tun_entry(data: &serde_json::Value) -> TunLinkEntry {
    let mut flags = if data["type"].as_str() == Some("tap") {
        IFF_TAP
    } else {
        IFF_TUN
    };
    if data["pi"].as_bool() != Some(true) {
        flags |= IFF_NO_PI;
    }
    if data["vnet_hdr"].as_bool() == Some(true) {
        flags |= IFF_VNET_HDR;
    }
    if data["multi_queue"].as_bool() == Some(true) {
        flags |= IFF_MULTI_QUEUE;
    }
    if data["persist"].as_bool() == Some(true) {
        flags |= crate::files::tun::IFF_PERSIST;
    }
    TunLinkEntry {
        flags,
        owner: id_of(&data["user"], false),
        group: id_of(&data["group"], true),
        vnethdr: 0,
        sndbuf: 0,
    }
}

/// Makes macvlan `dev` on `lower` (a device of criu's namespace, `orig`) right in the tree's
/// namespace (`here`, the calling thread's) with its saved ifindex (the saved addresses and
/// routes name it by index).
pub(super) fn make_macvlan(
    dev: &NetDeviceEntry,
    lower: &str,
    orig: &OwnedFd,
    here: &str,
) -> Result<(), NetError> {
    let mode = dev.macvlan.as_ref().map_or(4, |m| m.mode);
    let mode = MODES
        .iter()
        .find(|(_, v)| *v == mode)
        .ok_or_else(|| NetError::Bad(format!("macvlan {} has mode {mode}", dev.name)))?
        .0;
    let (lower, here, name, index) = (
        lower.to_string(),
        here.to_string(),
        dev.name.clone(),
        dev.ifindex.to_string(),
    );
    in_netns(orig, move || {
        run(
            "ip",
            &[
                "link", "add", &name, "index", &index, "link", &lower, "netns", &here, "type",
                "macvlan", "mode", mode,
            ],
            None,
        )
        .map(|_| ())
    })
}

/// Makes tun/tap device `dev` again, persistent, with its flags, owner and group.
pub(super) fn make_tun(dev: &NetDeviceEntry) -> Result<(), NetError> {
    let t = dev
        .tun
        .as_ref()
        .ok_or_else(|| NetError::Bad(format!("tun device {} without its tun entry", dev.name)))?;
    let mode = if t.flags & IFF_TAP != 0 { "tap" } else { "tun" };
    let (user, group) = (t.owner.to_string(), t.group.to_string());
    let mut args = vec!["tuntap", "add", "dev", &dev.name, "mode", mode];
    if t.owner >= 0 {
        args.extend(["user", &user]);
    }
    if t.group >= 0 {
        args.extend(["group", &group]);
    }
    if t.flags & IFF_NO_PI == 0 {
        args.push("pi");
    }
    if t.flags & IFF_VNET_HDR != 0 {
        args.push("vnet_hdr");
    }
    if t.flags & IFF_MULTI_QUEUE != 0 {
        args.push("multi_queue");
    }
    run("ip", &args, None).map(|_| ())
}

/// `ip route save`'s magic number, at the head of its output.
const SAVE_MAGIC: u32 = 0x4531_1224;
/// `RTNH_F_DEAD | RTNH_F_LINKDOWN`: route flags the kernel sets and refuses from user space.
const KERNEL_ONLY: u32 = 0x1 | 0x10;

/// The routes of an `ip route save` image without the flags only the kernel sets (a route on a
/// link without carrier, a tun or tap no task holds, is saved `linkdown`), ready for `ip route
/// restore`.
pub(super) fn clean_routes(mut raw: Vec<u8>) -> Vec<u8> {
    let mut at = if raw
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        == Some(SAVE_MAGIC)
    {
        4
    } else {
        0
    };
    // Each message: nlmsghdr (16 bytes: len first), then rtmsg (flags at its offset 8).
    while at + 28 <= raw.len() {
        let len = u32::from_ne_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize;
        if len < 28 || at + len > raw.len() {
            break;
        }
        let f = at + 24;
        let flags = u32::from_ne_bytes([raw[f], raw[f + 1], raw[f + 2], raw[f + 3]]);
        raw[f..f + 4].copy_from_slice(&(flags & !KERNEL_ONLY).to_ne_bytes());
        at += (len + 3) & !3;
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_from_ip_json() {
        let m = macvlan_entry(&serde_json::json!({"mode": "private"}));
        assert_eq!(m.mode, 1);
        let t = tun_entry(
            &serde_json::json!({"type": "tap", "pi": false, "vnet_hdr": true,
            "multi_queue": false, "persist": true, "user": "0", "group": 5}),
        );
        assert_eq!(
            t.flags,
            IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | crate::files::tun::IFF_PERSIST
        );
        assert_eq!((t.owner, t.group), (0, 5));
        let mut msg = SAVE_MAGIC.to_ne_bytes().to_vec();
        msg.extend(28u32.to_ne_bytes());
        msg.extend([0u8; 20]);
        msg.extend(0x11u32.to_ne_bytes());
        let c = clean_routes(msg);
        assert_eq!(&c[28..32], &0u32.to_ne_bytes());
        assert_eq!(clean_routes(vec![1, 2]), vec![1, 2]);
        let t = tun_entry(&serde_json::json!({"type": "tun", "pi": true}));
        assert_eq!((t.flags, t.owner, t.group), (IFF_TUN, -1, -1));
    }
}
