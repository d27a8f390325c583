//! The option setters: `criu_local_set_*`/`criu_local_add_*` on a given set and `criu_set_*`/
//! `criu_add_*` on the global one, each filling one field of the request's `criu_opts`.
//! Setters that return `int` give 0, `-EINVAL` for a NULL or non-UTF-8 argument (or a value
//! out of range), as CRIU's give 0 or a negative error.

use std::ffi::{c_char, c_int, c_uint};

use criu_images::pb::{
    CgroupRoot, CriuPageServerInfo, CriuVethPair, ExtMountMap, InheritFd, JoinNamespace, UnixSk,
};

use crate::{criu_opts, global, text};

/// The set behind `opts`.
///
/// # Safety
/// `opts` is NULL or a live set that nothing else uses during the call.
unsafe fn opts_mut<'a>(opts: *mut criu_opts) -> Option<&'a mut criu_opts> {
    // SAFETY: per this function's contract.
    unsafe { opts.as_mut() }
}

macro_rules! value_setters {
    ($ty:ty, $wrap:expr; $($local:ident, $global:ident, $field:ident;)*) => {$(
        #[doc = concat!("Sets `", stringify!($field), "` of the request's options.")]
        ///
        /// # Safety
        /// `opts` is NULL or a live set.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $local(opts: *mut criu_opts, v: $ty) {
            // SAFETY: `opts` is NULL or a live set (the caller's contract).
            if let Some(o) = unsafe { opts_mut(opts) } {
                o.rpc.$field = Some($wrap(v));
            }
        }
        #[doc = concat!("[`", stringify!($local), "`] on the global set.")]
        #[unsafe(no_mangle)]
        pub extern "C" fn $global(v: $ty) {
            // SAFETY: the global set is NULL or live.
            unsafe { $local(global(), v) }
        }
    )*};
}

macro_rules! text_setters {
    ($($local:ident, $global:ident, $field:ident, $push:ident;)*) => {$(
        #[doc = concat!("Sets (or adds to) `", stringify!($field), "` of the request's options.")]
        ///
        /// # Safety
        /// `opts` is NULL or a live set; `v` is NULL or a NUL-terminated string.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $local(opts: *mut criu_opts, v: *const c_char) -> c_int {
            // SAFETY: `opts` is NULL or a live set (the caller's contract).
            let Some(o) = (unsafe { opts_mut(opts) }) else {
                return -libc::EINVAL;
            };
            // SAFETY: `v` is NULL or a NUL-terminated string (the caller's contract).
            let Some(s) = (unsafe { text(v) }) else {
                return -libc::EINVAL;
            };
            text_setters!(@store o.rpc.$field, s, $push);
            0
        }
        #[doc = concat!("[`", stringify!($local), "`] on the global set.")]
        ///
        /// # Safety
        /// `v` is NULL or a NUL-terminated string.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $global(v: *const c_char) -> c_int {
            // SAFETY: the global set is NULL or live; `v` per the caller's contract.
            unsafe { $local(global(), v) }
        }
    )*};
    (@store $f:expr, $s:ident, set) => { $f = Some($s) };
    (@store $f:expr, $s:ident, push) => { $f.push($s) };
}

fn id<T>(v: T) -> T {
    v
}

value_setters! { bool, id;
    criu_local_set_leave_running, criu_set_leave_running, leave_running;
    criu_local_set_ext_unix_sk, criu_set_ext_unix_sk, ext_unix_sk;
    criu_local_set_tcp_established, criu_set_tcp_established, tcp_established;
    criu_local_set_tcp_skip_in_flight, criu_set_tcp_skip_in_flight, tcp_skip_in_flight;
    criu_local_set_tcp_close, criu_set_tcp_close, tcp_close;
    criu_local_set_weak_sysctls, criu_set_weak_sysctls, weak_sysctls;
    criu_local_set_evasive_devices, criu_set_evasive_devices, evasive_devices;
    criu_local_set_shell_job, criu_set_shell_job, shell_job;
    criu_local_set_skip_file_rwx_check, criu_set_skip_file_rwx_check, skip_file_rwx_check;
    criu_local_set_unprivileged, criu_set_unprivileged, unprivileged;
    criu_local_set_orphan_pts_master, criu_set_orphan_pts_master, orphan_pts_master;
    criu_local_set_file_locks, criu_set_file_locks, file_locks;
    criu_local_set_track_mem, criu_set_track_mem, track_mem;
    criu_local_set_auto_dedup, criu_set_auto_dedup, auto_dedup;
    criu_local_set_force_irmap, criu_set_force_irmap, force_irmap;
    criu_local_set_link_remap, criu_set_link_remap, link_remap;
    criu_local_set_manage_cgroups, criu_set_manage_cgroups, manage_cgroups;
    criu_local_set_auto_ext_mnt, criu_set_auto_ext_mnt, auto_ext_mnt;
    criu_local_set_ext_sharing, criu_set_ext_sharing, ext_sharing;
    criu_local_set_ext_masters, criu_set_ext_masters, ext_masters;
    criu_local_set_mntns_compat_mode, criu_set_mntns_compat_mode, mntns_compat_mode;
}

value_setters! { c_int, id;
    criu_local_set_pid, criu_set_pid, pid;
    criu_local_set_work_dir_fd, criu_set_work_dir_fd, work_dir_fd;
    criu_local_set_log_level, criu_set_log_level, log_level;
    criu_local_set_pidfd_store_sk, criu_set_pidfd_store_sk, pidfd_store_sk;
}

value_setters! { c_uint, id;
    criu_local_set_cpu_cap, criu_set_cpu_cap, cpu_cap;
    criu_local_set_timeout, criu_set_timeout, timeout;
    criu_local_set_ghost_limit, criu_set_ghost_limit, ghost_limit;
}

value_setters! { c_int, |n: c_int| n as u32;
    criu_local_set_empty_ns, criu_set_empty_ns, empty_ns;
}

text_setters! {
    criu_local_set_parent_images, criu_set_parent_images, parent_img, set;
    criu_local_set_log_file, criu_set_log_file, log_file, set;
    criu_local_set_root, criu_set_root, root, set;
    criu_local_set_freeze_cgroup, criu_set_freeze_cgroup, freeze_cgroup, set;
    criu_local_set_lsm_profile, criu_set_lsm_profile, lsm_profile, set;
    criu_local_set_lsm_mount_context, criu_set_lsm_mount_context, lsm_mount_context, set;
    criu_local_set_config_file, criu_set_config_file, config_file, set;
    criu_local_add_cg_props, criu_add_cg_props, cgroup_props, set;
    criu_local_add_cg_props_file, criu_add_cg_props_file, cgroup_props_file, set;
    criu_local_add_cg_yard, criu_add_cg_yard, cgroup_yard, set;
    criu_local_add_enable_fs, criu_add_enable_fs, enable_fs, push;
    criu_local_add_skip_mnt, criu_add_skip_mnt, skip_mnt, push;
    criu_local_add_irmap_path, criu_add_irmap_path, irmap_scan_paths, push;
    criu_local_add_external, criu_add_external, external, push;
    criu_local_add_cg_dump_controller, criu_add_cg_dump_controller, cgroup_dump_controller, push;
}

/// The images directory, as a descriptor of the caller's (required for dump and restore).
///
/// # Safety
/// `opts` is NULL or a live set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_images_dir_fd(opts: *mut criu_opts, fd: c_int) {
    // SAFETY: `opts` is NULL or a live set.
    if let Some(o) = unsafe { opts_mut(opts) } {
        o.rpc.images_dir_fd = fd;
    }
}

/// [`criu_local_set_images_dir_fd`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_set_images_dir_fd(fd: c_int) {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_set_images_dir_fd(global(), fd) }
}

/// Runs `f` on the set with the strings `a` and `b` (`b` may be NULL when `b_optional`).
///
/// # Safety
/// `opts` NULL or live, `a` and `b` NULL or NUL-terminated.
unsafe fn with_two(
    opts: *mut criu_opts,
    a: *const c_char,
    b: *const c_char,
    b_optional: bool,
    f: impl FnOnce(&mut criu_opts, String, Option<String>),
) -> c_int {
    // SAFETY: per this function's contract.
    let (o, a, b) = unsafe { (opts_mut(opts), text(a), text(b)) };
    match (o, a, b) {
        (Some(o), Some(a), b) if b.is_some() || b_optional => {
            f(o, a, b);
            0
        }
        _ => -libc::EINVAL,
    }
}

/// Maps the mount `key` of the images to `val` on restore (an external mount).
///
/// # Safety
/// `opts` NULL or live, `key` and `val` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_add_ext_mount(
    opts: *mut criu_opts,
    key: *const c_char,
    val: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        with_two(opts, key, val, false, |o, key, val| {
            o.rpc.ext_mnt.push(ExtMountMap {
                key,
                val: val.unwrap_or_default(),
            });
        })
    }
}

/// [`criu_local_add_ext_mount`] on the global set.
///
/// # Safety
/// `key` and `val` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_add_ext_mount(key: *const c_char, val: *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_add_ext_mount(global(), key, val) }
}

/// A veth pair to recreate.
///
/// # Safety
/// `opts` NULL or live, `inn` and `out` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_add_veth_pair(
    opts: *mut criu_opts,
    inn: *const c_char,
    out: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        with_two(opts, inn, out, false, |o, if_in, out| {
            o.rpc.veths.push(CriuVethPair {
                if_in,
                if_out: out.unwrap_or_default(),
            });
        })
    }
}

/// [`criu_local_add_veth_pair`] on the global set.
///
/// # Safety
/// `inn` and `out` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_add_veth_pair(inn: *const c_char, out: *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_add_veth_pair(global(), inn, out) }
}

/// A cgroup root for controller `ctrl` (NULL: every controller).
///
/// # Safety
/// `opts` NULL or live, `ctrl` NULL or NUL-terminated, `path` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_add_cg_root(
    opts: *mut criu_opts,
    ctrl: *const c_char,
    path: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract (the path first, the controller optional).
    unsafe {
        with_two(opts, path, ctrl, true, |o, path, ctrl| {
            o.rpc.cg_root.push(CgroupRoot { ctrl, path });
        })
    }
}

/// [`criu_local_add_cg_root`] on the global set.
///
/// # Safety
/// `ctrl` NULL or NUL-terminated, `path` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_add_cg_root(ctrl: *const c_char, path: *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_add_cg_root(global(), ctrl, path) }
}

/// The restored tree gets the caller's descriptor `fd` for the resource `key` (swrk only: criu
/// inherits the descriptor).
///
/// # Safety
/// `opts` NULL or live, `key` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_add_inherit_fd(
    opts: *mut criu_opts,
    fd: c_int,
    key: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe {
        with_two(opts, key, std::ptr::null(), true, |o, key, _| {
            o.rpc.inherit_fd.push(InheritFd { key, fd });
        })
    }
}

/// [`criu_local_add_inherit_fd`] on the global set.
///
/// # Safety
/// `key` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_add_inherit_fd(fd: c_int, key: *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_add_inherit_fd(global(), fd, key) }
}

/// An external unix socket by inode.
///
/// # Safety
/// `opts` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_add_unix_sk(opts: *mut criu_opts, inode: c_uint) -> c_int {
    // SAFETY: `opts` is NULL or a live set.
    match unsafe { opts_mut(opts) } {
        Some(o) => {
            o.rpc.unix_sk_ino.push(UnixSk { inode });
            0
        }
        None => -libc::EINVAL,
    }
}

/// [`criu_local_add_unix_sk`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_add_unix_sk(inode: c_uint) -> c_int {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_add_unix_sk(global(), inode) }
}

/// A namespace to join on restore.
///
/// # Safety
/// `opts` NULL or live, `ns` and `ns_file` NUL-terminated, `extra` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_join_ns_add(
    opts: *mut criu_opts,
    ns: *const c_char,
    ns_file: *const c_char,
    extra: *const c_char,
) -> c_int {
    // SAFETY: `extra` is NULL or NUL-terminated.
    let extra_opt = unsafe { text(extra) };
    // SAFETY: forwarded contract.
    unsafe {
        with_two(opts, ns, ns_file, false, |o, ns, ns_file| {
            o.rpc.join_ns.push(JoinNamespace {
                ns,
                ns_file: ns_file.unwrap_or_default(),
                extra_opt,
            });
        })
    }
}

/// [`criu_local_join_ns_add`] on the global set.
///
/// # Safety
/// As [`criu_local_join_ns_add`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_join_ns_add(
    ns: *const c_char,
    ns_file: *const c_char,
    extra: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_join_ns_add(global(), ns, ns_file, extra) }
}

/// The page server to send pages to.
///
/// # Safety
/// `opts` NULL or live, `address` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_page_server_address_port(
    opts: *mut criu_opts,
    address: *const c_char,
    port: c_int,
) -> c_int {
    // SAFETY: `opts` NULL or live; `address` NULL or NUL-terminated.
    let (o, address) = unsafe { (opts_mut(opts), text(address)) };
    match o {
        Some(o) => {
            o.rpc.ps = Some(CriuPageServerInfo {
                address,
                port: Some(port),
                pid: None,
                fd: None,
            });
            0
        }
        None => -libc::EINVAL,
    }
}

/// [`criu_local_set_page_server_address_port`] on the global set.
///
/// # Safety
/// `address` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_set_page_server_address_port(
    address: *const c_char,
    port: c_int,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_set_page_server_address_port(global(), address, port) }
}

/// The program restore execs after the tree is back (`argc` strings at `argv`).
///
/// # Safety
/// `opts` NULL or live, `argv` holds `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_exec_cmd(
    opts: *mut criu_opts,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: `opts` NULL or live.
    let Some(o) = (unsafe { opts_mut(opts) }) else {
        return -libc::EINVAL;
    };
    if argc <= 0 || argv.is_null() {
        return -libc::EINVAL;
    }
    let mut cmd = Vec::with_capacity(argc as usize);
    for i in 0..argc as usize {
        // SAFETY: `argv` holds `argc` pointers (the caller's contract), each NUL-terminated.
        match unsafe { text(*argv.add(i)) } {
            Some(s) => cmd.push(s),
            None => return -libc::EINVAL,
        }
    }
    o.rpc.exec_cmd = cmd;
    0
}

/// [`criu_local_set_exec_cmd`] on the global set.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_set_exec_cmd(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { criu_local_set_exec_cmd(global(), argc, argv) }
}

/// `enum criu_cg_mode` (0 ignore .. 6 default).
///
/// # Safety
/// `opts` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_manage_cgroups_mode(opts: *mut criu_opts, mode: c_int) {
    // SAFETY: `opts` NULL or live.
    if let Some(o) = unsafe { opts_mut(opts) } {
        o.rpc.manage_cgroups_mode = Some(mode);
    }
}

/// [`criu_local_set_manage_cgroups_mode`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_set_manage_cgroups_mode(mode: c_int) {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_set_manage_cgroups_mode(global(), mode) }
}

/// `enum criu_pre_dump_mode` (1 splice, 2 read); anything else is -1.
///
/// # Safety
/// `opts` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_pre_dump_mode(opts: *mut criu_opts, mode: c_int) -> c_int {
    // SAFETY: `opts` NULL or live.
    match unsafe { opts_mut(opts) } {
        Some(o) if mode == 1 || mode == 2 => {
            o.rpc.pre_dump_mode = Some(mode);
            0
        }
        _ => -1,
    }
}

/// [`criu_local_set_pre_dump_mode`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_set_pre_dump_mode(mode: c_int) -> c_int {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_set_pre_dump_mode(global(), mode) }
}

/// `enum criu_network_lock_method` (1 iptables, 2 nftables, 3 skip); anything else is -1.
///
/// # Safety
/// `opts` NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn criu_local_set_network_lock(opts: *mut criu_opts, method: c_int) -> c_int {
    // SAFETY: `opts` NULL or live.
    match unsafe { opts_mut(opts) } {
        Some(o) if (1..=3).contains(&method) => {
            o.rpc.network_lock = Some(method);
            0
        }
        _ => -1,
    }
}

/// [`criu_local_set_network_lock`] on the global set.
#[unsafe(no_mangle)]
pub extern "C" fn criu_set_network_lock(method: c_int) -> c_int {
    // SAFETY: the global set is NULL or live.
    unsafe { criu_local_set_network_lock(global(), method) }
}
