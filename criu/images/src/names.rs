//! File names of the images in an image directory, as CRIU names them.

/// The link from an incremental dump's directory to its parent's (CRIU's `CR_PARENT_LINK`).
pub const PARENT_LINK: &str = "parent";
/// `inventory.img`
pub const INVENTORY: &str = "inventory.img";
/// `pstree.img`
pub const PSTREE: &str = "pstree.img";
/// `files.img`
pub const FILES: &str = "files.img";
/// `seccomp.img`
pub const SECCOMP: &str = "seccomp.img";
/// `memfd.img` (memfd and shared-anonymous inodes)
pub const MEMFD: &str = "memfd.img";
/// `remap-fpath.img`
pub const REMAP_FPATH: &str = "remap-fpath.img";
/// `reg-files.img` (old layout; new images keep regular files in `files.img`)
pub const REG_FILES: &str = "reg-files.img";
/// `pipes-data.img`
pub const PIPES_DATA: &str = "pipes-data.img";
/// `fifo-data.img`
pub const FIFO_DATA: &str = "fifo-data.img";
/// `sk-queues.img`
pub const SK_QUEUES: &str = "sk-queues.img";
/// `tty-info.img`
pub const TTY_INFO: &str = "tty-info.img";
/// `tty-data.img`
pub const TTY_DATA: &str = "tty-data.img";
/// `filelocks.img`
pub const FILE_LOCKS: &str = "filelocks.img";
/// `cgroup.img`
pub const CGROUP: &str = "cgroup.img";
/// `stats-dump` (service file, no `.img`)
pub const STATS_DUMP: &str = "stats-dump";
/// `stats-restore` (service file, no `.img`)
pub const STATS_RESTORE: &str = "stats-restore";
/// `irmap-cache`
pub const IRMAP_CACHE: &str = "irmap-cache";

/// `core-PID.img`
pub fn core(pid: u32) -> String {
    format!("core-{pid}.img")
}
/// `mm-PID.img`
pub fn mm(pid: u32) -> String {
    format!("mm-{pid}.img")
}
/// `ids-PID.img`
pub fn ids(pid: u32) -> String {
    format!("ids-{pid}.img")
}
/// `fs-PID.img`
pub fn fs(pid: u32) -> String {
    format!("fs-{pid}.img")
}
/// `pagemap-PID.img`
pub fn pagemap(pid: u32) -> String {
    format!("pagemap-{pid}.img")
}
/// `pagemap-shmem-SHMID.img` (pages of a shared anonymous mapping)
pub fn pagemap_shmem(shmid: u64) -> String {
    format!("pagemap-shmem-{shmid}.img")
}
/// `pages-ID.img` (raw page contents; `ID` is the pagemap head's `pages_id`)
pub fn pages(pages_id: u32) -> String {
    format!("pages-{pages_id}.img")
}
/// `fdinfo-FILES_ID.img` (the fd table of a `files_id` of `ids-PID.img`)
pub fn fdinfo(files_id: u32) -> String {
    format!("fdinfo-{files_id}.img")
}
/// `ghost-file-ID.img` (ID in hex, as CRIU writes it)
pub fn ghost_file(id: u32) -> String {
    format!("ghost-file-{id:x}.img")
}
/// `timens-ID.img`
pub fn timens(id: u32) -> String {
    format!("timens-{id}.img")
}
/// `utsns-ID.img`
pub fn utsns(id: u32) -> String {
    format!("utsns-{id}.img")
}
/// `ipcns-var-ID.img`
pub fn ipcns_var(id: u32) -> String {
    format!("ipcns-var-{id}.img")
}
/// `mountpoints-ID.img`
pub fn mountpoints(id: u32) -> String {
    format!("mountpoints-{id}.img")
}
/// `netns-ID.img`
pub fn netns(id: u32) -> String {
    format!("netns-{id}.img")
}
/// `tcp-stream-INO.img` (inode in hex)
pub fn tcp_stream(ino: u32) -> String {
    format!("tcp-stream-{ino:x}.img")
}
/// Legacy per-task images of old CRIU versions: `sigacts-PID.img`, `itimers-PID.img`,
/// `posix-timers-PID.img`, `creds-PID.img`, `rlimit-PID.img`, `vmas-PID.img`.
pub fn legacy(prefix: &str, pid: u32) -> String {
    format!("{prefix}-{pid}.img")
}
