//! Magic numbers of CRIU's image files.
//!
//! Every image file starts with `u32` little-endian magics: [`IMG_COMMON`] (or [`IMG_SERVICE`]
//! for `stats-*` and `irmap-cache`) followed by the image's own magic; `inventory.img` has only its
//! own magic. Raw images (`pages-N.img`, ...) have no magic at all ([`RAW`]).

/// Magic of raw images: no header, the file is data (`pages-N.img`).
pub const RAW: u32 = 0;
/// First magic of every image but the inventory and the service files.
pub const IMG_COMMON: u32 = 0x5456_4319;
/// First magic of service files (`stats-dump`, `stats-restore`, `irmap-cache`).
pub const IMG_SERVICE: u32 = 0x5510_5940;

/// Images format version written to `inventory.img` (`img_version`): "v1.1", with the common
/// magic in front of every other image.
pub const IMAGES_V1_1: u32 = 2;

/// Magic of `INVENTORY` images.
pub const INVENTORY: u32 = 0x58313116;
/// Magic of `PSTREE` images.
pub const PSTREE: u32 = 0x50273030;
/// Magic of `FDINFO` images.
pub const FDINFO: u32 = 0x56213732;
/// Magic of `PAGEMAP` images.
pub const PAGEMAP: u32 = 0x56084025;
/// Magic of `CORE` images.
pub const CORE: u32 = 0x55053847;
/// Magic of `IDS` images.
pub const IDS: u32 = 0x54432030;
/// Magic of `VMAS` images.
pub const VMAS: u32 = 0x54123737;
/// Magic of `PIPES` images.
pub const PIPES: u32 = 0x56513555;
/// Magic of `PIPES_DATA` images.
pub const PIPES_DATA: u32 = 0x56453709;
/// Magic of `FIFO` images.
pub const FIFO: u32 = 0x58364939;
/// Magic of `FIFO_DATA` images.
pub const FIFO_DATA: u32 = 0x59333054;
/// Magic of `SIGACT` images.
pub const SIGACT: u32 = 0x55344201;
/// Magic of `UNIXSK` images.
pub const UNIXSK: u32 = 0x54373943;
/// Magic of `INETSK` images.
pub const INETSK: u32 = 0x56443851;
/// Magic of `PACKETSK` images.
pub const PACKETSK: u32 = 0x60454618;
/// Magic of `ITIMERS` images.
pub const ITIMERS: u32 = 0x57464056;
/// Magic of `POSIX_TIMERS` images.
pub const POSIX_TIMERS: u32 = 0x52603957;
/// Magic of `SK_QUEUES` images.
pub const SK_QUEUES: u32 = 0x56264026;
/// Magic of `UTSNS` images.
pub const UTSNS: u32 = 0x54473203;
/// Magic of `CREDS` images.
pub const CREDS: u32 = 0x54023547;
/// Magic of `IPC_VAR` images.
pub const IPC_VAR: u32 = 0x53115007;
/// Magic of `IPCNS_SHM` images.
pub const IPCNS_SHM: u32 = 0x46283044;
/// Magic of `IPCNS_MSG` images.
pub const IPCNS_MSG: u32 = 0x55453737;
/// Magic of `IPCNS_SEM` images.
pub const IPCNS_SEM: u32 = 0x59573019;
/// Magic of `REG_FILES` images.
pub const REG_FILES: u32 = 0x50363636;
/// Magic of `EXT_FILES` images.
pub const EXT_FILES: u32 = 0x59255641;
/// Magic of `FS` images.
pub const FS: u32 = 0x51403912;
/// Magic of `MM` images.
pub const MM: u32 = 0x57492820;
/// Magic of `REMAP_FPATH` images.
pub const REMAP_FPATH: u32 = 0x59133954;
/// Magic of `GHOST_FILE` images.
pub const GHOST_FILE: u32 = 0x52583605;
/// Magic of `TCP_STREAM` images.
pub const TCP_STREAM: u32 = 0x51465506;
/// Magic of `EVENTFD_FILE` images.
pub const EVENTFD_FILE: u32 = 0x44523722;
/// Magic of `EVENTPOLL_FILE` images.
pub const EVENTPOLL_FILE: u32 = 0x45023858;
/// Magic of `EVENTPOLL_TFD` images.
pub const EVENTPOLL_TFD: u32 = 0x44433746;
/// Magic of `SIGNALFD` images.
pub const SIGNALFD: u32 = 0x57323820;
/// Magic of `INOTIFY_FILE` images.
pub const INOTIFY_FILE: u32 = 0x48424431;
/// Magic of `INOTIFY_WD` images.
pub const INOTIFY_WD: u32 = 0x54562009;
/// Magic of `MNTS` images.
pub const MNTS: u32 = 0x55563928;
/// Magic of `NETDEV` images.
pub const NETDEV: u32 = 0x57373951;
/// Magic of `NETNS` images.
pub const NETNS: u32 = 0x55933752;
/// Magic of `TTY_FILES` images.
pub const TTY_FILES: u32 = 0x59433025;
/// Magic of `TTY_INFO` images.
pub const TTY_INFO: u32 = 0x59453036;
/// Magic of `TTY_DATA` images.
pub const TTY_DATA: u32 = 0x59413026;
/// Magic of `FILE_LOCKS` images.
pub const FILE_LOCKS: u32 = 0x54323616;
/// Magic of `RLIMIT` images.
pub const RLIMIT: u32 = 0x57113925;
/// Magic of `FANOTIFY_FILE` images.
pub const FANOTIFY_FILE: u32 = 0x55096122;
/// Magic of `FANOTIFY_MARK` images.
pub const FANOTIFY_MARK: u32 = 0x56506035;
/// Magic of `SIGNAL` images.
pub const SIGNAL: u32 = 0x59255647;
/// Magic of `NETLINK_SK` images.
pub const NETLINK_SK: u32 = 0x58005614;
/// Magic of `NS_FILES` images.
pub const NS_FILES: u32 = 0x61394011;
/// Magic of `TUNFILE` images.
pub const TUNFILE: u32 = 0x57143751;
/// Magic of `CGROUP` images.
pub const CGROUP: u32 = 0x59383330;
/// Magic of `TIMERFD` images.
pub const TIMERFD: u32 = 0x50493712;
/// Magic of `CPUINFO` images.
pub const CPUINFO: u32 = 0x61404013;
/// Magic of `USERNS` images.
pub const USERNS: u32 = 0x55474906;
/// Magic of `SECCOMP` images.
pub const SECCOMP: u32 = 0x64413049;
/// Magic of `BINFMT_MISC` images.
pub const BINFMT_MISC: u32 = 0x67343323;
/// Magic of `AUTOFS` images.
pub const AUTOFS: u32 = 0x49353943;
/// Magic of `FILES` images.
pub const FILES: u32 = 0x56303138;
/// Magic of `MEMFD_INODE` images.
pub const MEMFD_INODE: u32 = 0x48453499;
/// Magic of `TIMENS` images.
pub const TIMENS: u32 = 0x43114433;
/// Magic of `PIDNS` images.
pub const PIDNS: u32 = 0x61157326;
/// Magic of `BPFMAP_FILE` images.
pub const BPFMAP_FILE: u32 = 0x57506142;
/// Magic of `BPFMAP_DATA` images.
pub const BPFMAP_DATA: u32 = 0x64324033;
/// Magic of `APPARMOR` images.
pub const APPARMOR: u32 = 0x59423047;
/// Magic of `PIDFD` images.
pub const PIDFD: u32 = 0x54435556;
/// Magic of `STATS` images.
pub const STATS: u32 = 0x57093306;
/// Magic of `IRMAP_CACHE` images.
pub const IRMAP_CACHE: u32 = 0x57004059;
/// Magic of `KDAT` images.
pub const KDAT: u32 = 0x57023458;
/// Magic of shmem pagemap images (`pagemap-shmem-ID.img`): the same as [`PAGEMAP`].
pub const SHMEM_PAGEMAP: u32 = PAGEMAP;

/// `(name, magic)` of every image type, with the names crit prints in its `"magic"` key.
/// Aliases (the shmem pagemap is a `PAGEMAP`, old pages images) are left out: a magic value maps to
/// exactly one name.
pub static MAGICS: &[(&str, u32)] = &[
    ("IMG_COMMON", 0x54564319),
    ("IMG_SERVICE", 0x55105940),
    ("INVENTORY", 0x58313116),
    ("PSTREE", 0x50273030),
    ("FDINFO", 0x56213732),
    ("PAGEMAP", 0x56084025),
    ("CORE", 0x55053847),
    ("IDS", 0x54432030),
    ("VMAS", 0x54123737),
    ("PIPES", 0x56513555),
    ("PIPES_DATA", 0x56453709),
    ("FIFO", 0x58364939),
    ("FIFO_DATA", 0x59333054),
    ("SIGACT", 0x55344201),
    ("UNIXSK", 0x54373943),
    ("INETSK", 0x56443851),
    ("PACKETSK", 0x60454618),
    ("ITIMERS", 0x57464056),
    ("POSIX_TIMERS", 0x52603957),
    ("SK_QUEUES", 0x56264026),
    ("UTSNS", 0x54473203),
    ("CREDS", 0x54023547),
    ("IPC_VAR", 0x53115007),
    ("IPCNS_SHM", 0x46283044),
    ("IPCNS_MSG", 0x55453737),
    ("IPCNS_SEM", 0x59573019),
    ("REG_FILES", 0x50363636),
    ("EXT_FILES", 0x59255641),
    ("FS", 0x51403912),
    ("MM", 0x57492820),
    ("REMAP_FPATH", 0x59133954),
    ("GHOST_FILE", 0x52583605),
    ("TCP_STREAM", 0x51465506),
    ("EVENTFD_FILE", 0x44523722),
    ("EVENTPOLL_FILE", 0x45023858),
    ("EVENTPOLL_TFD", 0x44433746),
    ("SIGNALFD", 0x57323820),
    ("INOTIFY_FILE", 0x48424431),
    ("INOTIFY_WD", 0x54562009),
    ("MNTS", 0x55563928),
    ("NETDEV", 0x57373951),
    ("NETNS", 0x55933752),
    ("TTY_FILES", 0x59433025),
    ("TTY_INFO", 0x59453036),
    ("TTY_DATA", 0x59413026),
    ("FILE_LOCKS", 0x54323616),
    ("RLIMIT", 0x57113925),
    ("FANOTIFY_FILE", 0x55096122),
    ("FANOTIFY_MARK", 0x56506035),
    ("SIGNAL", 0x59255647),
    ("NETLINK_SK", 0x58005614),
    ("NS_FILES", 0x61394011),
    ("TUNFILE", 0x57143751),
    ("CGROUP", 0x59383330),
    ("TIMERFD", 0x50493712),
    ("CPUINFO", 0x61404013),
    ("USERNS", 0x55474906),
    ("SECCOMP", 0x64413049),
    ("BINFMT_MISC", 0x67343323),
    ("AUTOFS", 0x49353943),
    ("FILES", 0x56303138),
    ("MEMFD_INODE", 0x48453499),
    ("TIMENS", 0x43114433),
    ("PIDNS", 0x61157326),
    ("BPFMAP_FILE", 0x57506142),
    ("BPFMAP_DATA", 0x64324033),
    ("APPARMOR", 0x59423047),
    ("PIDFD", 0x54435556),
    ("STATS", 0x57093306),
    ("IRMAP_CACHE", 0x57004059),
    ("KDAT", 0x57023458),
];

/// The crit name of an image magic (`"CORE"` for [`CORE`]).
pub fn name_of(magic: u32) -> Option<&'static str> {
    MAGICS.iter().find(|m| m.1 == magic).map(|m| m.0)
}

/// The magic of a crit image name (`CORE` for `"CORE"`).
pub fn by_name(name: &str) -> Option<u32> {
    MAGICS.iter().find(|m| m.0 == name).map(|m| m.1)
}

/// Whether an image with this magic starts with [`IMG_SERVICE`] rather than [`IMG_COMMON`].
pub fn is_service(magic: u32) -> bool {
    magic == STATS || magic == IRMAP_CACHE
}

/// The magics written at the start of an image of this type, in order.
pub fn header(magic: u32) -> Vec<u32> {
    if magic == INVENTORY {
        vec![magic]
    } else if is_service(magic) {
        vec![IMG_SERVICE, magic]
    } else {
        vec![IMG_COMMON, magic]
    }
}
