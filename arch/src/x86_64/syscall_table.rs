//! The x86_64 system call numbers (the kernel's `syscall_64.tbl`, 64-bit ABI, up to Linux 6.18).
//!
//! Generated once from the kernel's table; the numbers are kernel ABI and never change.

/// Every x86_64 system call as `(kernel name, number)`, sorted by number.
pub const SYSCALLS: &[(&str, usize)] = &[
    ("read", 0),
    ("write", 1),
    ("open", 2),
    ("close", 3),
    ("stat", 4),
    ("fstat", 5),
    ("lstat", 6),
    ("poll", 7),
    ("lseek", 8),
    ("mmap", 9),
    ("mprotect", 10),
    ("munmap", 11),
    ("brk", 12),
    ("rt_sigaction", 13),
    ("rt_sigprocmask", 14),
    ("rt_sigreturn", 15),
    ("ioctl", 16),
    ("pread64", 17),
    ("pwrite64", 18),
    ("readv", 19),
    ("writev", 20),
    ("access", 21),
    ("pipe", 22),
    ("select", 23),
    ("sched_yield", 24),
    ("mremap", 25),
    ("msync", 26),
    ("mincore", 27),
    ("madvise", 28),
    ("shmget", 29),
    ("shmat", 30),
    ("shmctl", 31),
    ("dup", 32),
    ("dup2", 33),
    ("pause", 34),
    ("nanosleep", 35),
    ("getitimer", 36),
    ("alarm", 37),
    ("setitimer", 38),
    ("getpid", 39),
    ("sendfile", 40),
    ("socket", 41),
    ("connect", 42),
    ("accept", 43),
    ("sendto", 44),
    ("recvfrom", 45),
    ("sendmsg", 46),
    ("recvmsg", 47),
    ("shutdown", 48),
    ("bind", 49),
    ("listen", 50),
    ("getsockname", 51),
    ("getpeername", 52),
    ("socketpair", 53),
    ("setsockopt", 54),
    ("getsockopt", 55),
    ("clone", 56),
    ("fork", 57),
    ("vfork", 58),
    ("execve", 59),
    ("exit", 60),
    ("wait4", 61),
    ("kill", 62),
    ("uname", 63),
    ("semget", 64),
    ("semop", 65),
    ("semctl", 66),
    ("shmdt", 67),
    ("msgget", 68),
    ("msgsnd", 69),
    ("msgrcv", 70),
    ("msgctl", 71),
    ("fcntl", 72),
    ("flock", 73),
    ("fsync", 74),
    ("fdatasync", 75),
    ("truncate", 76),
    ("ftruncate", 77),
    ("getdents", 78),
    ("getcwd", 79),
    ("chdir", 80),
    ("fchdir", 81),
    ("rename", 82),
    ("mkdir", 83),
    ("rmdir", 84),
    ("creat", 85),
    ("link", 86),
    ("unlink", 87),
    ("symlink", 88),
    ("readlink", 89),
    ("chmod", 90),
    ("fchmod", 91),
    ("chown", 92),
    ("fchown", 93),
    ("lchown", 94),
    ("umask", 95),
    ("gettimeofday", 96),
    ("getrlimit", 97),
    ("getrusage", 98),
    ("sysinfo", 99),
    ("times", 100),
    ("ptrace", 101),
    ("getuid", 102),
    ("syslog", 103),
    ("getgid", 104),
    ("setuid", 105),
    ("setgid", 106),
    ("geteuid", 107),
    ("getegid", 108),
    ("setpgid", 109),
    ("getppid", 110),
    ("getpgrp", 111),
    ("setsid", 112),
    ("setreuid", 113),
    ("setregid", 114),
    ("getgroups", 115),
    ("setgroups", 116),
    ("setresuid", 117),
    ("getresuid", 118),
    ("setresgid", 119),
    ("getresgid", 120),
    ("getpgid", 121),
    ("setfsuid", 122),
    ("setfsgid", 123),
    ("getsid", 124),
    ("capget", 125),
    ("capset", 126),
    ("rt_sigpending", 127),
    ("rt_sigtimedwait", 128),
    ("rt_sigqueueinfo", 129),
    ("rt_sigsuspend", 130),
    ("sigaltstack", 131),
    ("utime", 132),
    ("mknod", 133),
    ("uselib", 134),
    ("personality", 135),
    ("ustat", 136),
    ("statfs", 137),
    ("fstatfs", 138),
    ("sysfs", 139),
    ("getpriority", 140),
    ("setpriority", 141),
    ("sched_setparam", 142),
    ("sched_getparam", 143),
    ("sched_setscheduler", 144),
    ("sched_getscheduler", 145),
    ("sched_get_priority_max", 146),
    ("sched_get_priority_min", 147),
    ("sched_rr_get_interval", 148),
    ("mlock", 149),
    ("munlock", 150),
    ("mlockall", 151),
    ("munlockall", 152),
    ("vhangup", 153),
    ("modify_ldt", 154),
    ("pivot_root", 155),
    ("_sysctl", 156),
    ("prctl", 157),
    ("arch_prctl", 158),
    ("adjtimex", 159),
    ("setrlimit", 160),
    ("chroot", 161),
    ("sync", 162),
    ("acct", 163),
    ("settimeofday", 164),
    ("mount", 165),
    ("umount2", 166),
    ("swapon", 167),
    ("swapoff", 168),
    ("reboot", 169),
    ("sethostname", 170),
    ("setdomainname", 171),
    ("iopl", 172),
    ("ioperm", 173),
    ("create_module", 174),
    ("init_module", 175),
    ("delete_module", 176),
    ("get_kernel_syms", 177),
    ("query_module", 178),
    ("quotactl", 179),
    ("nfsservctl", 180),
    ("getpmsg", 181),
    ("putpmsg", 182),
    ("afs_syscall", 183),
    ("tuxcall", 184),
    ("security", 185),
    ("gettid", 186),
    ("readahead", 187),
    ("setxattr", 188),
    ("lsetxattr", 189),
    ("fsetxattr", 190),
    ("getxattr", 191),
    ("lgetxattr", 192),
    ("fgetxattr", 193),
    ("listxattr", 194),
    ("llistxattr", 195),
    ("flistxattr", 196),
    ("removexattr", 197),
    ("lremovexattr", 198),
    ("fremovexattr", 199),
    ("tkill", 200),
    ("time", 201),
    ("futex", 202),
    ("sched_setaffinity", 203),
    ("sched_getaffinity", 204),
    ("set_thread_area", 205),
    ("io_setup", 206),
    ("io_destroy", 207),
    ("io_getevents", 208),
    ("io_submit", 209),
    ("io_cancel", 210),
    ("get_thread_area", 211),
    ("lookup_dcookie", 212),
    ("epoll_create", 213),
    ("epoll_ctl_old", 214),
    ("epoll_wait_old", 215),
    ("remap_file_pages", 216),
    ("getdents64", 217),
    ("set_tid_address", 218),
    ("restart_syscall", 219),
    ("semtimedop", 220),
    ("fadvise64", 221),
    ("timer_create", 222),
    ("timer_settime", 223),
    ("timer_gettime", 224),
    ("timer_getoverrun", 225),
    ("timer_delete", 226),
    ("clock_settime", 227),
    ("clock_gettime", 228),
    ("clock_getres", 229),
    ("clock_nanosleep", 230),
    ("exit_group", 231),
    ("epoll_wait", 232),
    ("epoll_ctl", 233),
    ("tgkill", 234),
    ("utimes", 235),
    ("vserver", 236),
    ("mbind", 237),
    ("set_mempolicy", 238),
    ("get_mempolicy", 239),
    ("mq_open", 240),
    ("mq_unlink", 241),
    ("mq_timedsend", 242),
    ("mq_timedreceive", 243),
    ("mq_notify", 244),
    ("mq_getsetattr", 245),
    ("kexec_load", 246),
    ("waitid", 247),
    ("add_key", 248),
    ("request_key", 249),
    ("keyctl", 250),
    ("ioprio_set", 251),
    ("ioprio_get", 252),
    ("inotify_init", 253),
    ("inotify_add_watch", 254),
    ("inotify_rm_watch", 255),
    ("migrate_pages", 256),
    ("openat", 257),
    ("mkdirat", 258),
    ("mknodat", 259),
    ("fchownat", 260),
    ("futimesat", 261),
    ("newfstatat", 262),
    ("unlinkat", 263),
    ("renameat", 264),
    ("linkat", 265),
    ("symlinkat", 266),
    ("readlinkat", 267),
    ("fchmodat", 268),
    ("faccessat", 269),
    ("pselect6", 270),
    ("ppoll", 271),
    ("unshare", 272),
    ("set_robust_list", 273),
    ("get_robust_list", 274),
    ("splice", 275),
    ("tee", 276),
    ("sync_file_range", 277),
    ("vmsplice", 278),
    ("move_pages", 279),
    ("utimensat", 280),
    ("epoll_pwait", 281),
    ("signalfd", 282),
    ("timerfd_create", 283),
    ("eventfd", 284),
    ("fallocate", 285),
    ("timerfd_settime", 286),
    ("timerfd_gettime", 287),
    ("accept4", 288),
    ("signalfd4", 289),
    ("eventfd2", 290),
    ("epoll_create1", 291),
    ("dup3", 292),
    ("pipe2", 293),
    ("inotify_init1", 294),
    ("preadv", 295),
    ("pwritev", 296),
    ("rt_tgsigqueueinfo", 297),
    ("perf_event_open", 298),
    ("recvmmsg", 299),
    ("fanotify_init", 300),
    ("fanotify_mark", 301),
    ("prlimit64", 302),
    ("name_to_handle_at", 303),
    ("open_by_handle_at", 304),
    ("clock_adjtime", 305),
    ("syncfs", 306),
    ("sendmmsg", 307),
    ("setns", 308),
    ("getcpu", 309),
    ("process_vm_readv", 310),
    ("process_vm_writev", 311),
    ("kcmp", 312),
    ("finit_module", 313),
    ("sched_setattr", 314),
    ("sched_getattr", 315),
    ("renameat2", 316),
    ("seccomp", 317),
    ("getrandom", 318),
    ("memfd_create", 319),
    ("kexec_file_load", 320),
    ("bpf", 321),
    ("execveat", 322),
    ("userfaultfd", 323),
    ("membarrier", 324),
    ("mlock2", 325),
    ("copy_file_range", 326),
    ("preadv2", 327),
    ("pwritev2", 328),
    ("pkey_mprotect", 329),
    ("pkey_alloc", 330),
    ("pkey_free", 331),
    ("statx", 332),
    ("io_pgetevents", 333),
    ("rseq", 334),
    ("pidfd_send_signal", 424),
    ("io_uring_setup", 425),
    ("io_uring_enter", 426),
    ("io_uring_register", 427),
    ("open_tree", 428),
    ("move_mount", 429),
    ("fsopen", 430),
    ("fsconfig", 431),
    ("fsmount", 432),
    ("fspick", 433),
    ("pidfd_open", 434),
    ("clone3", 435),
    ("close_range", 436),
    ("openat2", 437),
    ("pidfd_getfd", 438),
    ("faccessat2", 439),
    ("process_madvise", 440),
    ("epoll_pwait2", 441),
    ("mount_setattr", 442),
    ("quotactl_fd", 443),
    ("landlock_create_ruleset", 444),
    ("landlock_add_rule", 445),
    ("landlock_restrict_self", 446),
    ("memfd_secret", 447),
    ("process_mrelease", 448),
    ("futex_waitv", 449),
    ("set_mempolicy_home_node", 450),
    ("cachestat", 451),
    ("fchmodat2", 452),
    ("map_shadow_stack", 453),
    ("futex_wake", 454),
    ("futex_wait", 455),
    ("futex_requeue", 456),
    ("statmount", 457),
    ("listmount", 458),
    ("lsm_get_self_attr", 459),
    ("lsm_set_self_attr", 460),
    ("lsm_list_modules", 461),
    ("mseal", 462),
    ("setxattrat", 463),
    ("getxattrat", 464),
    ("listxattrat", 465),
    ("removexattrat", 466),
    ("open_tree_attr", 467),
    ("file_getattr", 468),
    ("file_setattr", 469),
    ("listns", 470),
];

/// The system call numbers as constants, named after the kernel's names in upper case.
pub mod nr {
    /// `read`.
    pub const READ: usize = 0;
    /// `write`.
    pub const WRITE: usize = 1;
    /// `open`.
    pub const OPEN: usize = 2;
    /// `close`.
    pub const CLOSE: usize = 3;
    /// `stat`.
    pub const STAT: usize = 4;
    /// `fstat`.
    pub const FSTAT: usize = 5;
    /// `lstat`.
    pub const LSTAT: usize = 6;
    /// `poll`.
    pub const POLL: usize = 7;
    /// `lseek`.
    pub const LSEEK: usize = 8;
    /// `mmap`.
    pub const MMAP: usize = 9;
    /// `mprotect`.
    pub const MPROTECT: usize = 10;
    /// `munmap`.
    pub const MUNMAP: usize = 11;
    /// `brk`.
    pub const BRK: usize = 12;
    /// `rt_sigaction`.
    pub const RT_SIGACTION: usize = 13;
    /// `rt_sigprocmask`.
    pub const RT_SIGPROCMASK: usize = 14;
    /// `rt_sigreturn`.
    pub const RT_SIGRETURN: usize = 15;
    /// `ioctl`.
    pub const IOCTL: usize = 16;
    /// `pread64`.
    pub const PREAD64: usize = 17;
    /// `pwrite64`.
    pub const PWRITE64: usize = 18;
    /// `readv`.
    pub const READV: usize = 19;
    /// `writev`.
    pub const WRITEV: usize = 20;
    /// `access`.
    pub const ACCESS: usize = 21;
    /// `pipe`.
    pub const PIPE: usize = 22;
    /// `select`.
    pub const SELECT: usize = 23;
    /// `sched_yield`.
    pub const SCHED_YIELD: usize = 24;
    /// `mremap`.
    pub const MREMAP: usize = 25;
    /// `msync`.
    pub const MSYNC: usize = 26;
    /// `mincore`.
    pub const MINCORE: usize = 27;
    /// `madvise`.
    pub const MADVISE: usize = 28;
    /// `shmget`.
    pub const SHMGET: usize = 29;
    /// `shmat`.
    pub const SHMAT: usize = 30;
    /// `shmctl`.
    pub const SHMCTL: usize = 31;
    /// `dup`.
    pub const DUP: usize = 32;
    /// `dup2`.
    pub const DUP2: usize = 33;
    /// `pause`.
    pub const PAUSE: usize = 34;
    /// `nanosleep`.
    pub const NANOSLEEP: usize = 35;
    /// `getitimer`.
    pub const GETITIMER: usize = 36;
    /// `alarm`.
    pub const ALARM: usize = 37;
    /// `setitimer`.
    pub const SETITIMER: usize = 38;
    /// `getpid`.
    pub const GETPID: usize = 39;
    /// `sendfile`.
    pub const SENDFILE: usize = 40;
    /// `socket`.
    pub const SOCKET: usize = 41;
    /// `connect`.
    pub const CONNECT: usize = 42;
    /// `accept`.
    pub const ACCEPT: usize = 43;
    /// `sendto`.
    pub const SENDTO: usize = 44;
    /// `recvfrom`.
    pub const RECVFROM: usize = 45;
    /// `sendmsg`.
    pub const SENDMSG: usize = 46;
    /// `recvmsg`.
    pub const RECVMSG: usize = 47;
    /// `shutdown`.
    pub const SHUTDOWN: usize = 48;
    /// `bind`.
    pub const BIND: usize = 49;
    /// `listen`.
    pub const LISTEN: usize = 50;
    /// `getsockname`.
    pub const GETSOCKNAME: usize = 51;
    /// `getpeername`.
    pub const GETPEERNAME: usize = 52;
    /// `socketpair`.
    pub const SOCKETPAIR: usize = 53;
    /// `setsockopt`.
    pub const SETSOCKOPT: usize = 54;
    /// `getsockopt`.
    pub const GETSOCKOPT: usize = 55;
    /// `clone`.
    pub const CLONE: usize = 56;
    /// `fork`.
    pub const FORK: usize = 57;
    /// `vfork`.
    pub const VFORK: usize = 58;
    /// `execve`.
    pub const EXECVE: usize = 59;
    /// `exit`.
    pub const EXIT: usize = 60;
    /// `wait4`.
    pub const WAIT4: usize = 61;
    /// `kill`.
    pub const KILL: usize = 62;
    /// `uname`.
    pub const UNAME: usize = 63;
    /// `semget`.
    pub const SEMGET: usize = 64;
    /// `semop`.
    pub const SEMOP: usize = 65;
    /// `semctl`.
    pub const SEMCTL: usize = 66;
    /// `shmdt`.
    pub const SHMDT: usize = 67;
    /// `msgget`.
    pub const MSGGET: usize = 68;
    /// `msgsnd`.
    pub const MSGSND: usize = 69;
    /// `msgrcv`.
    pub const MSGRCV: usize = 70;
    /// `msgctl`.
    pub const MSGCTL: usize = 71;
    /// `fcntl`.
    pub const FCNTL: usize = 72;
    /// `flock`.
    pub const FLOCK: usize = 73;
    /// `fsync`.
    pub const FSYNC: usize = 74;
    /// `fdatasync`.
    pub const FDATASYNC: usize = 75;
    /// `truncate`.
    pub const TRUNCATE: usize = 76;
    /// `ftruncate`.
    pub const FTRUNCATE: usize = 77;
    /// `getdents`.
    pub const GETDENTS: usize = 78;
    /// `getcwd`.
    pub const GETCWD: usize = 79;
    /// `chdir`.
    pub const CHDIR: usize = 80;
    /// `fchdir`.
    pub const FCHDIR: usize = 81;
    /// `rename`.
    pub const RENAME: usize = 82;
    /// `mkdir`.
    pub const MKDIR: usize = 83;
    /// `rmdir`.
    pub const RMDIR: usize = 84;
    /// `creat`.
    pub const CREAT: usize = 85;
    /// `link`.
    pub const LINK: usize = 86;
    /// `unlink`.
    pub const UNLINK: usize = 87;
    /// `symlink`.
    pub const SYMLINK: usize = 88;
    /// `readlink`.
    pub const READLINK: usize = 89;
    /// `chmod`.
    pub const CHMOD: usize = 90;
    /// `fchmod`.
    pub const FCHMOD: usize = 91;
    /// `chown`.
    pub const CHOWN: usize = 92;
    /// `fchown`.
    pub const FCHOWN: usize = 93;
    /// `lchown`.
    pub const LCHOWN: usize = 94;
    /// `umask`.
    pub const UMASK: usize = 95;
    /// `gettimeofday`.
    pub const GETTIMEOFDAY: usize = 96;
    /// `getrlimit`.
    pub const GETRLIMIT: usize = 97;
    /// `getrusage`.
    pub const GETRUSAGE: usize = 98;
    /// `sysinfo`.
    pub const SYSINFO: usize = 99;
    /// `times`.
    pub const TIMES: usize = 100;
    /// `ptrace`.
    pub const PTRACE: usize = 101;
    /// `getuid`.
    pub const GETUID: usize = 102;
    /// `syslog`.
    pub const SYSLOG: usize = 103;
    /// `getgid`.
    pub const GETGID: usize = 104;
    /// `setuid`.
    pub const SETUID: usize = 105;
    /// `setgid`.
    pub const SETGID: usize = 106;
    /// `geteuid`.
    pub const GETEUID: usize = 107;
    /// `getegid`.
    pub const GETEGID: usize = 108;
    /// `setpgid`.
    pub const SETPGID: usize = 109;
    /// `getppid`.
    pub const GETPPID: usize = 110;
    /// `getpgrp`.
    pub const GETPGRP: usize = 111;
    /// `setsid`.
    pub const SETSID: usize = 112;
    /// `setreuid`.
    pub const SETREUID: usize = 113;
    /// `setregid`.
    pub const SETREGID: usize = 114;
    /// `getgroups`.
    pub const GETGROUPS: usize = 115;
    /// `setgroups`.
    pub const SETGROUPS: usize = 116;
    /// `setresuid`.
    pub const SETRESUID: usize = 117;
    /// `getresuid`.
    pub const GETRESUID: usize = 118;
    /// `setresgid`.
    pub const SETRESGID: usize = 119;
    /// `getresgid`.
    pub const GETRESGID: usize = 120;
    /// `getpgid`.
    pub const GETPGID: usize = 121;
    /// `setfsuid`.
    pub const SETFSUID: usize = 122;
    /// `setfsgid`.
    pub const SETFSGID: usize = 123;
    /// `getsid`.
    pub const GETSID: usize = 124;
    /// `capget`.
    pub const CAPGET: usize = 125;
    /// `capset`.
    pub const CAPSET: usize = 126;
    /// `rt_sigpending`.
    pub const RT_SIGPENDING: usize = 127;
    /// `rt_sigtimedwait`.
    pub const RT_SIGTIMEDWAIT: usize = 128;
    /// `rt_sigqueueinfo`.
    pub const RT_SIGQUEUEINFO: usize = 129;
    /// `rt_sigsuspend`.
    pub const RT_SIGSUSPEND: usize = 130;
    /// `sigaltstack`.
    pub const SIGALTSTACK: usize = 131;
    /// `utime`.
    pub const UTIME: usize = 132;
    /// `mknod`.
    pub const MKNOD: usize = 133;
    /// `uselib`.
    pub const USELIB: usize = 134;
    /// `personality`.
    pub const PERSONALITY: usize = 135;
    /// `ustat`.
    pub const USTAT: usize = 136;
    /// `statfs`.
    pub const STATFS: usize = 137;
    /// `fstatfs`.
    pub const FSTATFS: usize = 138;
    /// `sysfs`.
    pub const SYSFS: usize = 139;
    /// `getpriority`.
    pub const GETPRIORITY: usize = 140;
    /// `setpriority`.
    pub const SETPRIORITY: usize = 141;
    /// `sched_setparam`.
    pub const SCHED_SETPARAM: usize = 142;
    /// `sched_getparam`.
    pub const SCHED_GETPARAM: usize = 143;
    /// `sched_setscheduler`.
    pub const SCHED_SETSCHEDULER: usize = 144;
    /// `sched_getscheduler`.
    pub const SCHED_GETSCHEDULER: usize = 145;
    /// `sched_get_priority_max`.
    pub const SCHED_GET_PRIORITY_MAX: usize = 146;
    /// `sched_get_priority_min`.
    pub const SCHED_GET_PRIORITY_MIN: usize = 147;
    /// `sched_rr_get_interval`.
    pub const SCHED_RR_GET_INTERVAL: usize = 148;
    /// `mlock`.
    pub const MLOCK: usize = 149;
    /// `munlock`.
    pub const MUNLOCK: usize = 150;
    /// `mlockall`.
    pub const MLOCKALL: usize = 151;
    /// `munlockall`.
    pub const MUNLOCKALL: usize = 152;
    /// `vhangup`.
    pub const VHANGUP: usize = 153;
    /// `modify_ldt`.
    pub const MODIFY_LDT: usize = 154;
    /// `pivot_root`.
    pub const PIVOT_ROOT: usize = 155;
    /// `_sysctl`.
    pub const _SYSCTL: usize = 156;
    /// `prctl`.
    pub const PRCTL: usize = 157;
    /// `arch_prctl`.
    pub const ARCH_PRCTL: usize = 158;
    /// `adjtimex`.
    pub const ADJTIMEX: usize = 159;
    /// `setrlimit`.
    pub const SETRLIMIT: usize = 160;
    /// `chroot`.
    pub const CHROOT: usize = 161;
    /// `sync`.
    pub const SYNC: usize = 162;
    /// `acct`.
    pub const ACCT: usize = 163;
    /// `settimeofday`.
    pub const SETTIMEOFDAY: usize = 164;
    /// `mount`.
    pub const MOUNT: usize = 165;
    /// `umount2`.
    pub const UMOUNT2: usize = 166;
    /// `swapon`.
    pub const SWAPON: usize = 167;
    /// `swapoff`.
    pub const SWAPOFF: usize = 168;
    /// `reboot`.
    pub const REBOOT: usize = 169;
    /// `sethostname`.
    pub const SETHOSTNAME: usize = 170;
    /// `setdomainname`.
    pub const SETDOMAINNAME: usize = 171;
    /// `iopl`.
    pub const IOPL: usize = 172;
    /// `ioperm`.
    pub const IOPERM: usize = 173;
    /// `create_module`.
    pub const CREATE_MODULE: usize = 174;
    /// `init_module`.
    pub const INIT_MODULE: usize = 175;
    /// `delete_module`.
    pub const DELETE_MODULE: usize = 176;
    /// `get_kernel_syms`.
    pub const GET_KERNEL_SYMS: usize = 177;
    /// `query_module`.
    pub const QUERY_MODULE: usize = 178;
    /// `quotactl`.
    pub const QUOTACTL: usize = 179;
    /// `nfsservctl`.
    pub const NFSSERVCTL: usize = 180;
    /// `getpmsg`.
    pub const GETPMSG: usize = 181;
    /// `putpmsg`.
    pub const PUTPMSG: usize = 182;
    /// `afs_syscall`.
    pub const AFS_SYSCALL: usize = 183;
    /// `tuxcall`.
    pub const TUXCALL: usize = 184;
    /// `security`.
    pub const SECURITY: usize = 185;
    /// `gettid`.
    pub const GETTID: usize = 186;
    /// `readahead`.
    pub const READAHEAD: usize = 187;
    /// `setxattr`.
    pub const SETXATTR: usize = 188;
    /// `lsetxattr`.
    pub const LSETXATTR: usize = 189;
    /// `fsetxattr`.
    pub const FSETXATTR: usize = 190;
    /// `getxattr`.
    pub const GETXATTR: usize = 191;
    /// `lgetxattr`.
    pub const LGETXATTR: usize = 192;
    /// `fgetxattr`.
    pub const FGETXATTR: usize = 193;
    /// `listxattr`.
    pub const LISTXATTR: usize = 194;
    /// `llistxattr`.
    pub const LLISTXATTR: usize = 195;
    /// `flistxattr`.
    pub const FLISTXATTR: usize = 196;
    /// `removexattr`.
    pub const REMOVEXATTR: usize = 197;
    /// `lremovexattr`.
    pub const LREMOVEXATTR: usize = 198;
    /// `fremovexattr`.
    pub const FREMOVEXATTR: usize = 199;
    /// `tkill`.
    pub const TKILL: usize = 200;
    /// `time`.
    pub const TIME: usize = 201;
    /// `futex`.
    pub const FUTEX: usize = 202;
    /// `sched_setaffinity`.
    pub const SCHED_SETAFFINITY: usize = 203;
    /// `sched_getaffinity`.
    pub const SCHED_GETAFFINITY: usize = 204;
    /// `set_thread_area`.
    pub const SET_THREAD_AREA: usize = 205;
    /// `io_setup`.
    pub const IO_SETUP: usize = 206;
    /// `io_destroy`.
    pub const IO_DESTROY: usize = 207;
    /// `io_getevents`.
    pub const IO_GETEVENTS: usize = 208;
    /// `io_submit`.
    pub const IO_SUBMIT: usize = 209;
    /// `io_cancel`.
    pub const IO_CANCEL: usize = 210;
    /// `get_thread_area`.
    pub const GET_THREAD_AREA: usize = 211;
    /// `lookup_dcookie`.
    pub const LOOKUP_DCOOKIE: usize = 212;
    /// `epoll_create`.
    pub const EPOLL_CREATE: usize = 213;
    /// `epoll_ctl_old`.
    pub const EPOLL_CTL_OLD: usize = 214;
    /// `epoll_wait_old`.
    pub const EPOLL_WAIT_OLD: usize = 215;
    /// `remap_file_pages`.
    pub const REMAP_FILE_PAGES: usize = 216;
    /// `getdents64`.
    pub const GETDENTS64: usize = 217;
    /// `set_tid_address`.
    pub const SET_TID_ADDRESS: usize = 218;
    /// `restart_syscall`.
    pub const RESTART_SYSCALL: usize = 219;
    /// `semtimedop`.
    pub const SEMTIMEDOP: usize = 220;
    /// `fadvise64`.
    pub const FADVISE64: usize = 221;
    /// `timer_create`.
    pub const TIMER_CREATE: usize = 222;
    /// `timer_settime`.
    pub const TIMER_SETTIME: usize = 223;
    /// `timer_gettime`.
    pub const TIMER_GETTIME: usize = 224;
    /// `timer_getoverrun`.
    pub const TIMER_GETOVERRUN: usize = 225;
    /// `timer_delete`.
    pub const TIMER_DELETE: usize = 226;
    /// `clock_settime`.
    pub const CLOCK_SETTIME: usize = 227;
    /// `clock_gettime`.
    pub const CLOCK_GETTIME: usize = 228;
    /// `clock_getres`.
    pub const CLOCK_GETRES: usize = 229;
    /// `clock_nanosleep`.
    pub const CLOCK_NANOSLEEP: usize = 230;
    /// `exit_group`.
    pub const EXIT_GROUP: usize = 231;
    /// `epoll_wait`.
    pub const EPOLL_WAIT: usize = 232;
    /// `epoll_ctl`.
    pub const EPOLL_CTL: usize = 233;
    /// `tgkill`.
    pub const TGKILL: usize = 234;
    /// `utimes`.
    pub const UTIMES: usize = 235;
    /// `vserver`.
    pub const VSERVER: usize = 236;
    /// `mbind`.
    pub const MBIND: usize = 237;
    /// `set_mempolicy`.
    pub const SET_MEMPOLICY: usize = 238;
    /// `get_mempolicy`.
    pub const GET_MEMPOLICY: usize = 239;
    /// `mq_open`.
    pub const MQ_OPEN: usize = 240;
    /// `mq_unlink`.
    pub const MQ_UNLINK: usize = 241;
    /// `mq_timedsend`.
    pub const MQ_TIMEDSEND: usize = 242;
    /// `mq_timedreceive`.
    pub const MQ_TIMEDRECEIVE: usize = 243;
    /// `mq_notify`.
    pub const MQ_NOTIFY: usize = 244;
    /// `mq_getsetattr`.
    pub const MQ_GETSETATTR: usize = 245;
    /// `kexec_load`.
    pub const KEXEC_LOAD: usize = 246;
    /// `waitid`.
    pub const WAITID: usize = 247;
    /// `add_key`.
    pub const ADD_KEY: usize = 248;
    /// `request_key`.
    pub const REQUEST_KEY: usize = 249;
    /// `keyctl`.
    pub const KEYCTL: usize = 250;
    /// `ioprio_set`.
    pub const IOPRIO_SET: usize = 251;
    /// `ioprio_get`.
    pub const IOPRIO_GET: usize = 252;
    /// `inotify_init`.
    pub const INOTIFY_INIT: usize = 253;
    /// `inotify_add_watch`.
    pub const INOTIFY_ADD_WATCH: usize = 254;
    /// `inotify_rm_watch`.
    pub const INOTIFY_RM_WATCH: usize = 255;
    /// `migrate_pages`.
    pub const MIGRATE_PAGES: usize = 256;
    /// `openat`.
    pub const OPENAT: usize = 257;
    /// `mkdirat`.
    pub const MKDIRAT: usize = 258;
    /// `mknodat`.
    pub const MKNODAT: usize = 259;
    /// `fchownat`.
    pub const FCHOWNAT: usize = 260;
    /// `futimesat`.
    pub const FUTIMESAT: usize = 261;
    /// `newfstatat`.
    pub const NEWFSTATAT: usize = 262;
    /// `unlinkat`.
    pub const UNLINKAT: usize = 263;
    /// `renameat`.
    pub const RENAMEAT: usize = 264;
    /// `linkat`.
    pub const LINKAT: usize = 265;
    /// `symlinkat`.
    pub const SYMLINKAT: usize = 266;
    /// `readlinkat`.
    pub const READLINKAT: usize = 267;
    /// `fchmodat`.
    pub const FCHMODAT: usize = 268;
    /// `faccessat`.
    pub const FACCESSAT: usize = 269;
    /// `pselect6`.
    pub const PSELECT6: usize = 270;
    /// `ppoll`.
    pub const PPOLL: usize = 271;
    /// `unshare`.
    pub const UNSHARE: usize = 272;
    /// `set_robust_list`.
    pub const SET_ROBUST_LIST: usize = 273;
    /// `get_robust_list`.
    pub const GET_ROBUST_LIST: usize = 274;
    /// `splice`.
    pub const SPLICE: usize = 275;
    /// `tee`.
    pub const TEE: usize = 276;
    /// `sync_file_range`.
    pub const SYNC_FILE_RANGE: usize = 277;
    /// `vmsplice`.
    pub const VMSPLICE: usize = 278;
    /// `move_pages`.
    pub const MOVE_PAGES: usize = 279;
    /// `utimensat`.
    pub const UTIMENSAT: usize = 280;
    /// `epoll_pwait`.
    pub const EPOLL_PWAIT: usize = 281;
    /// `signalfd`.
    pub const SIGNALFD: usize = 282;
    /// `timerfd_create`.
    pub const TIMERFD_CREATE: usize = 283;
    /// `eventfd`.
    pub const EVENTFD: usize = 284;
    /// `fallocate`.
    pub const FALLOCATE: usize = 285;
    /// `timerfd_settime`.
    pub const TIMERFD_SETTIME: usize = 286;
    /// `timerfd_gettime`.
    pub const TIMERFD_GETTIME: usize = 287;
    /// `accept4`.
    pub const ACCEPT4: usize = 288;
    /// `signalfd4`.
    pub const SIGNALFD4: usize = 289;
    /// `eventfd2`.
    pub const EVENTFD2: usize = 290;
    /// `epoll_create1`.
    pub const EPOLL_CREATE1: usize = 291;
    /// `dup3`.
    pub const DUP3: usize = 292;
    /// `pipe2`.
    pub const PIPE2: usize = 293;
    /// `inotify_init1`.
    pub const INOTIFY_INIT1: usize = 294;
    /// `preadv`.
    pub const PREADV: usize = 295;
    /// `pwritev`.
    pub const PWRITEV: usize = 296;
    /// `rt_tgsigqueueinfo`.
    pub const RT_TGSIGQUEUEINFO: usize = 297;
    /// `perf_event_open`.
    pub const PERF_EVENT_OPEN: usize = 298;
    /// `recvmmsg`.
    pub const RECVMMSG: usize = 299;
    /// `fanotify_init`.
    pub const FANOTIFY_INIT: usize = 300;
    /// `fanotify_mark`.
    pub const FANOTIFY_MARK: usize = 301;
    /// `prlimit64`.
    pub const PRLIMIT64: usize = 302;
    /// `name_to_handle_at`.
    pub const NAME_TO_HANDLE_AT: usize = 303;
    /// `open_by_handle_at`.
    pub const OPEN_BY_HANDLE_AT: usize = 304;
    /// `clock_adjtime`.
    pub const CLOCK_ADJTIME: usize = 305;
    /// `syncfs`.
    pub const SYNCFS: usize = 306;
    /// `sendmmsg`.
    pub const SENDMMSG: usize = 307;
    /// `setns`.
    pub const SETNS: usize = 308;
    /// `getcpu`.
    pub const GETCPU: usize = 309;
    /// `process_vm_readv`.
    pub const PROCESS_VM_READV: usize = 310;
    /// `process_vm_writev`.
    pub const PROCESS_VM_WRITEV: usize = 311;
    /// `kcmp`.
    pub const KCMP: usize = 312;
    /// `finit_module`.
    pub const FINIT_MODULE: usize = 313;
    /// `sched_setattr`.
    pub const SCHED_SETATTR: usize = 314;
    /// `sched_getattr`.
    pub const SCHED_GETATTR: usize = 315;
    /// `renameat2`.
    pub const RENAMEAT2: usize = 316;
    /// `seccomp`.
    pub const SECCOMP: usize = 317;
    /// `getrandom`.
    pub const GETRANDOM: usize = 318;
    /// `memfd_create`.
    pub const MEMFD_CREATE: usize = 319;
    /// `kexec_file_load`.
    pub const KEXEC_FILE_LOAD: usize = 320;
    /// `bpf`.
    pub const BPF: usize = 321;
    /// `execveat`.
    pub const EXECVEAT: usize = 322;
    /// `userfaultfd`.
    pub const USERFAULTFD: usize = 323;
    /// `membarrier`.
    pub const MEMBARRIER: usize = 324;
    /// `mlock2`.
    pub const MLOCK2: usize = 325;
    /// `copy_file_range`.
    pub const COPY_FILE_RANGE: usize = 326;
    /// `preadv2`.
    pub const PREADV2: usize = 327;
    /// `pwritev2`.
    pub const PWRITEV2: usize = 328;
    /// `pkey_mprotect`.
    pub const PKEY_MPROTECT: usize = 329;
    /// `pkey_alloc`.
    pub const PKEY_ALLOC: usize = 330;
    /// `pkey_free`.
    pub const PKEY_FREE: usize = 331;
    /// `statx`.
    pub const STATX: usize = 332;
    /// `io_pgetevents`.
    pub const IO_PGETEVENTS: usize = 333;
    /// `rseq`.
    pub const RSEQ: usize = 334;
    /// `pidfd_send_signal`.
    pub const PIDFD_SEND_SIGNAL: usize = 424;
    /// `io_uring_setup`.
    pub const IO_URING_SETUP: usize = 425;
    /// `io_uring_enter`.
    pub const IO_URING_ENTER: usize = 426;
    /// `io_uring_register`.
    pub const IO_URING_REGISTER: usize = 427;
    /// `open_tree`.
    pub const OPEN_TREE: usize = 428;
    /// `move_mount`.
    pub const MOVE_MOUNT: usize = 429;
    /// `fsopen`.
    pub const FSOPEN: usize = 430;
    /// `fsconfig`.
    pub const FSCONFIG: usize = 431;
    /// `fsmount`.
    pub const FSMOUNT: usize = 432;
    /// `fspick`.
    pub const FSPICK: usize = 433;
    /// `pidfd_open`.
    pub const PIDFD_OPEN: usize = 434;
    /// `clone3`.
    pub const CLONE3: usize = 435;
    /// `close_range`.
    pub const CLOSE_RANGE: usize = 436;
    /// `openat2`.
    pub const OPENAT2: usize = 437;
    /// `pidfd_getfd`.
    pub const PIDFD_GETFD: usize = 438;
    /// `faccessat2`.
    pub const FACCESSAT2: usize = 439;
    /// `process_madvise`.
    pub const PROCESS_MADVISE: usize = 440;
    /// `epoll_pwait2`.
    pub const EPOLL_PWAIT2: usize = 441;
    /// `mount_setattr`.
    pub const MOUNT_SETATTR: usize = 442;
    /// `quotactl_fd`.
    pub const QUOTACTL_FD: usize = 443;
    /// `landlock_create_ruleset`.
    pub const LANDLOCK_CREATE_RULESET: usize = 444;
    /// `landlock_add_rule`.
    pub const LANDLOCK_ADD_RULE: usize = 445;
    /// `landlock_restrict_self`.
    pub const LANDLOCK_RESTRICT_SELF: usize = 446;
    /// `memfd_secret`.
    pub const MEMFD_SECRET: usize = 447;
    /// `process_mrelease`.
    pub const PROCESS_MRELEASE: usize = 448;
    /// `futex_waitv`.
    pub const FUTEX_WAITV: usize = 449;
    /// `set_mempolicy_home_node`.
    pub const SET_MEMPOLICY_HOME_NODE: usize = 450;
    /// `cachestat`.
    pub const CACHESTAT: usize = 451;
    /// `fchmodat2`.
    pub const FCHMODAT2: usize = 452;
    /// `map_shadow_stack`.
    pub const MAP_SHADOW_STACK: usize = 453;
    /// `futex_wake`.
    pub const FUTEX_WAKE: usize = 454;
    /// `futex_wait`.
    pub const FUTEX_WAIT: usize = 455;
    /// `futex_requeue`.
    pub const FUTEX_REQUEUE: usize = 456;
    /// `statmount`.
    pub const STATMOUNT: usize = 457;
    /// `listmount`.
    pub const LISTMOUNT: usize = 458;
    /// `lsm_get_self_attr`.
    pub const LSM_GET_SELF_ATTR: usize = 459;
    /// `lsm_set_self_attr`.
    pub const LSM_SET_SELF_ATTR: usize = 460;
    /// `lsm_list_modules`.
    pub const LSM_LIST_MODULES: usize = 461;
    /// `mseal`.
    pub const MSEAL: usize = 462;
    /// `setxattrat`.
    pub const SETXATTRAT: usize = 463;
    /// `getxattrat`.
    pub const GETXATTRAT: usize = 464;
    /// `listxattrat`.
    pub const LISTXATTRAT: usize = 465;
    /// `removexattrat`.
    pub const REMOVEXATTRAT: usize = 466;
    /// `open_tree_attr`.
    pub const OPEN_TREE_ATTR: usize = 467;
    /// `file_getattr`.
    pub const FILE_GETATTR: usize = 468;
    /// `file_setattr`.
    pub const FILE_SETATTR: usize = 469;
    /// `listns`.
    pub const LISTNS: usize = 470;
}
