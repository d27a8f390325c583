//! Restoring a network namespace: criu enters a new one made from the images (links, addresses,
//! routes, rules, sysctls, netfilter rules) before the tree's sockets are made, and leaves it
//! once the root exists in it.
// Unsafe code: unshare/setns of criu's network namespace (one thread at a time).
#![allow(unsafe_code)]

use super::*;

/// criu inside the network namespace it made for the tree, until [`NetNs::finish`].
#[derive(Debug)]
pub struct NetNs {
    orig: OwnedFd,
    /// Outer ends of veth pairs made in criu's namespace, deleted if the restore fails.
    outer: Vec<String>,
    left: bool,
    done: bool,
}

impl NetNs {
    /// The tree's network namespace for restore `opts`: the one `--join-ns net:PATH` names,
    /// the one `--inherit-fd fd[N]:KEY` gives for an external one (`--external net[INO]:KEY`
    /// at dump), or one made from the images ([`NetNs::prepare`]). criu's main thread enters
    /// it (the tree's sockets and tasks are made there) until [`NetNs::finish`].
    ///
    /// # Errors
    /// [`NetError`]; [`NetError::NoExternalNs`] for an external namespace not given back.
    pub fn prepare_for(opts: &crate::options::RestoreOptions) -> Result<Option<NetNs>, NetError> {
        let joined = match crate::namespaces::join_fd(&opts.join_ns, "net") {
            Ok(j) => j,
            Err(e) => {
                return Err(NetError::Io {
                    what: e.to_string(),
                    source: std::io::Error::from_raw_os_error(e.errno()),
                });
            }
        };
        let joined = match joined {
            Some(fd) => Some(fd),
            None => Self::external(opts)?,
        };
        let Some(fd) = joined else {
            return Self::prepare(
                &opts.images_dir,
                &opts.external,
                opts.empty_ns & libc::CLONE_NEWNET as u32 != 0,
            );
        };
        let orig = OwnedFd::from(
            std::fs::File::open("/proc/self/ns/net").map_err(io("opening criu's net ns"))?,
        );
        // SAFETY: setns of this thread (criu's main one, which creates the tree's sockets and
        // tasks) into a network namespace we hold; criu holds its old one to go back.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetError::Sys {
                what: "joining the given network namespace",
                errno: Errno::last(),
            });
        }
        tracing::info!("joined a network namespace for the tree");
        Ok(Some(NetNs {
            orig,
            outer: Vec::new(),
            left: false,
            done: false,
        }))
    }

    /// The namespace given with `--inherit-fd fd[N]:KEY` when the images say the tree's was
    /// external (`ext_key`).
    fn external(opts: &crate::options::RestoreOptions) -> Result<Option<OwnedFd>, NetError> {
        let d = criu_images::ImageDir::new(&opts.images_dir);
        let Some(pid) = d.read_pstree()?.first().map(|t| t.pid) else {
            return Ok(None);
        };
        if !d.file(&names::ids(pid)).exists() {
            return Ok(None);
        }
        let Some(id) = d.read_ids(pid)?.net_ns_id else {
            return Ok(None);
        };
        let path = d.file(&names::netns(id));
        if !path.exists() {
            return Ok(None);
        }
        let netns: Vec<NetnsEntry> = criu_images::read_all(&path, magic::NETNS)?;
        let Some(key) = netns.first().and_then(|n| n.ext_key.clone()) else {
            return Ok(None);
        };
        let Some(i) = opts.inherit_fds.iter().find(|i| i.key == key) else {
            return Err(NetError::NoExternalNs { key });
        };
        // SAFETY: duplicates criu's descriptor the caller passed; the copy is ours alone.
        let d = unsafe { libc::fcntl(i.fd, libc::F_DUPFD_CLOEXEC, 3) };
        if d < 0 {
            return Err(NetError::Sys {
                what: "duplicating the inherited network namespace",
                errno: Errno::last(),
            });
        }
        // SAFETY: d is a new descriptor owned by nothing else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(d) };
        tracing::info!(key, fd = i.fd, "the external network namespace");
        Ok(Some(fd))
    }

    /// Makes the tree's network namespace from `dir` when its root had one of its own, criu
    /// entering it. `empty` (`--empty-ns net`): only the namespace, its loopback up.
    ///
    /// # Errors
    /// [`NetError`]: a veth without its outer end named (before anything is made), a tool or a
    /// sysctl that failed (criu then is back in its namespace, the outer ends deleted).
    pub fn prepare(
        dir: &Path,
        external: &[External],
        empty: bool,
    ) -> Result<Option<NetNs>, NetError> {
        let d = criu_images::ImageDir::new(dir);
        let Some(pid) = d.read_pstree()?.first().map(|t| t.pid) else {
            return Ok(None);
        };
        if !d.file(&names::ids(pid)).exists() {
            return Ok(None);
        }
        let Some(id) = d.read_ids(pid)?.net_ns_id else {
            return Ok(None);
        };
        if !d.file(&names::netns(id)).exists() {
            return Ok(None);
        }
        let devs: Vec<NetDeviceEntry> = if empty {
            Vec::new()
        } else {
            criu_images::read_all(d.file(&format!("netdev-{id}.img")), magic::NETDEV)?
        };
        let veths: HashMap<String, String> = external
            .iter()
            .filter(|e| e.kind == "veth")
            .filter_map(|e| Some((e.id.clone(), e.value.clone()?)))
            .collect();
        for dev in &devs {
            match dev.r#type {
                ND_LOOPBACK => {}
                ND_VETH if veths.contains_key(&dev.name) => {}
                ND_VETH => {
                    return Err(NetError::NoExternal {
                        inner: dev.name.clone(),
                    });
                }
                t => {
                    return Err(NetError::LinkType {
                        name: dev.name.clone(),
                        nd_type: t,
                    });
                }
            }
        }
        let orig = OwnedFd::from(
            std::fs::File::open("/proc/self/ns/net").map_err(io("opening criu's net ns"))?,
        );
        // Made inside the tree's user namespace already: entered instead.
        let premade = crate::namespaces::user_owned::premade(crate::namespaces::Kind::Net);
        // SAFETY: a new network namespace for this thread (criu's main one, which creates the
        // tree's sockets and tasks), or the one made for it; criu holds its old one to go back.
        let r = unsafe {
            match &premade {
                Some(fd) => libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET),
                None => libc::unshare(libc::CLONE_NEWNET),
            }
        };
        if r != 0 {
            return Err(NetError::Sys {
                what: "unshare(CLONE_NEWNET)",
                errno: Errno::last(),
            });
        }
        let mut ns = NetNs {
            orig,
            outer: Vec::new(),
            left: false,
            done: false,
        };
        if empty {
            run("ip", &["link", "set", "lo", "up"], None)?;
        } else {
            ns.build(&d, id, &devs, &veths)?;
        }
        tracing::info!(links = devs.len(), empty, "network namespace made");
        Ok(Some(ns))
    }

    fn build(
        &mut self,
        d: &criu_images::ImageDir,
        id: u32,
        devs: &[NetDeviceEntry],
        veths: &HashMap<String, String>,
    ) -> Result<(), NetError> {
        let netns: Vec<NetnsEntry> =
            criu_images::read_all(d.file(&names::netns(id)), magic::NETNS)?;
        let n = netns
            .first()
            .ok_or_else(|| NetError::Bad(format!("{} is empty", names::netns(id))))?;
        write_sysctl(&format!("{CONF4}/all"), DEVCONFS4, &n.all_conf4)?;
        write_sysctl(&format!("{CONF4}/default"), DEVCONFS4, &n.def_conf4)?;
        write_sysctl(&format!("{CONF6}/all"), DEVCONFS6, &n.all_conf6)?;
        write_sysctl(&format!("{CONF6}/default"), DEVCONFS6, &n.def_conf6)?;
        write_sysctl("/proc/sys/net/unix", &["max_dgram_qlen"], &n.unix_conf)?;
        write_sysctl("/proc/sys/net/ipv4", &["ping_group_range"], &n.ipv4_sysctl)?;
        let here = format!("/proc/{}/ns/net", std::process::id());
        for dev in devs {
            if dev.r#type == ND_VETH {
                let outer = &veths[&dev.name];
                // Made in criu's namespace, the inner end moved into this one.
                let (name, outer_c) = (dev.name.clone(), outer.clone());
                let here = here.clone();
                in_netns(&self.orig, move || {
                    run(
                        "ip",
                        &[
                            "link", "add", &outer_c, "type", "veth", "peer", "name", &name,
                            "netns", &here,
                        ],
                        None,
                    )?;
                    run("ip", &["link", "set", &outer_c, "up"], None).map(|_| ())
                })?;
                self.outer.push(outer.clone());
                if let Some(a) = &dev.address {
                    let mac: Vec<String> = a.iter().map(|b| format!("{b:02x}")).collect();
                    run(
                        "ip",
                        &["link", "set", &dev.name, "address", &mac.join(":")],
                        None,
                    )?;
                }
            }
            let mtu = dev.mtu.to_string();
            run("ip", &["link", "set", &dev.name, "mtu", &mtu], None)?;
            for (bit, what) in [
                (0x80, "arp"),
                (0x100, "promisc"),
                (0x200, "allmulticast"),
                (0x1000, "multicast"),
            ] {
                let want_on = dev.flags & bit != 0;
                // `arp on` is the flag's absence.
                let on = if bit == 0x80 { !want_on } else { want_on };
                run(
                    "ip",
                    &[
                        "link",
                        "set",
                        &dev.name,
                        what,
                        if on { "on" } else { "off" },
                    ],
                    None,
                )?;
            }
            write_sysctl(&format!("{CONF4}/{}", dev.name), DEVCONFS4, &dev.conf4)?;
            write_sysctl(&format!("{CONF6}/{}", dev.name), DEVCONFS6, &dev.conf6)?;
            if dev.flags & 0x1 != 0 {
                run("ip", &["link", "set", &dev.name, "up"], None)?;
            }
        }
        let [ifaddr, route, route6, rule, nft, ipt, ip6t] = raw_images(id);
        let open = |name: &str| -> Result<Option<std::fs::File>, NetError> {
            let p = d.file(name);
            if !p.exists() || std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) == 0 {
                return Ok(None);
            }
            std::fs::File::open(&p)
                .map(Some)
                .map_err(io(format!("opening {name}")))
        };
        if let Some(f) = open(&ifaddr.0)? {
            restore_ifaddr(f)?;
        }
        if let Some(f) = open(&route.0)? {
            run("ip", &["route", "restore"], Some(f))?;
        }
        if let Some(f) = open(&route6.0)? {
            run("ip", &["-6", "route", "restore"], Some(f))?;
        }
        if let Some(f) = open(&rule.0)? {
            // The kernel's default rules would come twice.
            run("ip", &["rule", "flush"], None)?;
            let _ = run("ip", &["rule", "delete", "table", "local"], None);
            run("ip", &["rule", "restore"], Some(f))?;
        }
        if let Some(f) = open(&nft.0)? {
            need("nft", "nftables")?;
            run("nft", &["-f", "-"], Some(f))?;
        }
        for (img, legacy, plain) in [
            (&ipt.0, "iptables-legacy-restore", "iptables-restore"),
            (&ip6t.0, "ip6tables-legacy-restore", "ip6tables-restore"),
        ] {
            if let Some(f) = open(img)? {
                let tool = if have(legacy) { legacy } else { plain };
                need(tool, "iptables")?;
                run(tool, &[], Some(f))?;
            }
        }
        Ok(())
    }

    /// Once the tree's tasks exist: criu goes back to its own network namespace.
    ///
    /// # Errors
    /// [`NetError::Sys`].
    pub fn finish(&mut self) -> Result<(), NetError> {
        self.done = true;
        self.leave()
    }

    fn leave(&mut self) -> Result<(), NetError> {
        if self.left {
            return Ok(());
        }
        // SAFETY: setns of this thread back into the namespace it came from.
        if unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetError::Sys {
                what: "going back to criu's network namespace",
                errno: Errno::last(),
            });
        }
        self.left = true;
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = self.leave() {
            tracing::error!(error = %e, "cannot leave the restored network namespace");
        }
        if !self.done {
            for o in &self.outer {
                let _ = run("ip", &["link", "del", o], None);
            }
        }
    }
}

/// `tool` must be installed to restore what the images hold.
fn need(tool: &'static str, package: &'static str) -> Result<(), NetError> {
    if have(tool) {
        return Ok(());
    }
    Err(NetError::MissingTool { tool, package })
}

/// `ip addr restore`, the loopback's automatic addresses aside (they exist once it is up).
fn restore_ifaddr(f: std::fs::File) -> Result<(), NetError> {
    match run("ip", &["addr", "restore"], Some(f)) {
        Ok(_) => Ok(()),
        Err(NetError::Tool { stderr, .. }) if stderr.contains("File exists") => Ok(()),
        Err(e) => Err(e),
    }
}
