/*
 * Raw system calls for C parasites (x86_64): compel_syscall6() and the sys_* wrappers CRIU's
 * compel offers under the same names (<compel/plugins/std/syscall.h>). Each returns the
 * kernel's result: a value, or -errno.
 */
#ifndef COMPEL_PLUGIN_STD_SYSCALL_H
#define COMPEL_PLUGIN_STD_SYSCALL_H

/* A raw system call: the result, or -errno. */
long compel_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6);

#define compel_syscall0(nr) compel_syscall6((nr), 0, 0, 0, 0, 0, 0)
#define compel_syscall1(nr, a) compel_syscall6((nr), (long)(a), 0, 0, 0, 0, 0)
#define compel_syscall2(nr, a, b) compel_syscall6((nr), (long)(a), (long)(b), 0, 0, 0, 0)
#define compel_syscall3(nr, a, b, c) compel_syscall6((nr), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define compel_syscall4(nr, a, b, c, d)                                                         \
	compel_syscall6((nr), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define compel_syscall5(nr, a, b, c, d, e)                                                      \
	compel_syscall6((nr), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

/* x86_64 system call numbers of the wrappers below. */
#define COMPEL_NR_read 0
#define COMPEL_NR_write 1
#define COMPEL_NR_open 2
#define COMPEL_NR_close 3
#define COMPEL_NR_fstat 5
#define COMPEL_NR_lseek 8
#define COMPEL_NR_mmap 9
#define COMPEL_NR_mprotect 10
#define COMPEL_NR_munmap 11
#define COMPEL_NR_rt_sigprocmask 14
#define COMPEL_NR_madvise 28
#define COMPEL_NR_dup 32
#define COMPEL_NR_dup2 33
#define COMPEL_NR_nanosleep 35
#define COMPEL_NR_getpid 39
#define COMPEL_NR_socket 41
#define COMPEL_NR_sendmsg 46
#define COMPEL_NR_recvmsg 47
#define COMPEL_NR_exit 60
#define COMPEL_NR_kill 62
#define COMPEL_NR_fcntl 72
#define COMPEL_NR_getcwd 79
#define COMPEL_NR_gettimeofday 96
#define COMPEL_NR_getuid 102
#define COMPEL_NR_getgid 104
#define COMPEL_NR_geteuid 107
#define COMPEL_NR_getegid 108
#define COMPEL_NR_getppid 110
#define COMPEL_NR_getpgid 121
#define COMPEL_NR_getsid 124
#define COMPEL_NR_prctl 157
#define COMPEL_NR_gettid 186
#define COMPEL_NR_exit_group 231
#define COMPEL_NR_tgkill 234
#define COMPEL_NR_openat 257

struct timespec;
struct timeval;
struct timezone;
struct msghdr;

static inline long sys_read(int fd, void *buf, unsigned long n) { return compel_syscall3(COMPEL_NR_read, fd, buf, n); }
static inline long sys_write(int fd, const void *buf, unsigned long n) { return compel_syscall3(COMPEL_NR_write, fd, buf, n); }
static inline long sys_open(const char *path, unsigned long flags, unsigned long mode) { return compel_syscall3(COMPEL_NR_open, path, flags, mode); }
static inline long sys_openat(int dfd, const char *path, int flags, int mode) { return compel_syscall4(COMPEL_NR_openat, dfd, path, flags, mode); }
static inline long sys_close(int fd) { return compel_syscall1(COMPEL_NR_close, fd); }
static inline long sys_fstat(int fd, void *st) { return compel_syscall2(COMPEL_NR_fstat, fd, st); }
static inline long sys_lseek(int fd, long off, unsigned int whence) { return compel_syscall3(COMPEL_NR_lseek, fd, off, whence); }
static inline unsigned long sys_mmap(void *addr, unsigned long len, unsigned long prot, unsigned long flags, unsigned long fd, unsigned long off)
{
	return (unsigned long)compel_syscall6(COMPEL_NR_mmap, (long)addr, (long)len, (long)prot, (long)flags, (long)fd, (long)off);
}
static inline long sys_mprotect(const void *addr, unsigned long len, unsigned long prot) { return compel_syscall3(COMPEL_NR_mprotect, addr, len, prot); }
static inline long sys_munmap(void *addr, unsigned long len) { return compel_syscall2(COMPEL_NR_munmap, addr, len); }
static inline long sys_madvise(unsigned long start, unsigned long len, int behavior) { return compel_syscall3(COMPEL_NR_madvise, start, len, behavior); }
static inline long sys_sigprocmask(int how, const void *set, void *old, unsigned long size) { return compel_syscall4(COMPEL_NR_rt_sigprocmask, how, set, old, size); }
static inline long sys_dup(int fd) { return compel_syscall1(COMPEL_NR_dup, fd); }
static inline long sys_dup2(int oldfd, int newfd) { return compel_syscall2(COMPEL_NR_dup2, oldfd, newfd); }
static inline long sys_nanosleep(struct timespec *req, struct timespec *rem) { return compel_syscall2(COMPEL_NR_nanosleep, req, rem); }
static inline long sys_getpid(void) { return compel_syscall0(COMPEL_NR_getpid); }
static inline long sys_getppid(void) { return compel_syscall0(COMPEL_NR_getppid); }
static inline long sys_gettid(void) { return compel_syscall0(COMPEL_NR_gettid); }
static inline long sys_getpgid(int pid) { return compel_syscall1(COMPEL_NR_getpgid, pid); }
static inline long sys_getsid(int pid) { return compel_syscall1(COMPEL_NR_getsid, pid); }
static inline long sys_getuid(void) { return compel_syscall0(COMPEL_NR_getuid); }
static inline long sys_getgid(void) { return compel_syscall0(COMPEL_NR_getgid); }
static inline long sys_geteuid(void) { return compel_syscall0(COMPEL_NR_geteuid); }
static inline long sys_getegid(void) { return compel_syscall0(COMPEL_NR_getegid); }
static inline long sys_socket(int domain, int type, int protocol) { return compel_syscall3(COMPEL_NR_socket, domain, type, protocol); }
static inline long sys_sendmsg(int fd, const struct msghdr *msg, int flags) { return compel_syscall3(COMPEL_NR_sendmsg, fd, msg, flags); }
static inline long sys_recvmsg(int fd, struct msghdr *msg, int flags) { return compel_syscall3(COMPEL_NR_recvmsg, fd, msg, flags); }
static inline long sys_kill(long pid, int sig) { return compel_syscall2(COMPEL_NR_kill, pid, sig); }
static inline long sys_tgkill(int tgid, int pid, int sig) { return compel_syscall3(COMPEL_NR_tgkill, tgid, pid, sig); }
static inline long sys_fcntl(int fd, int cmd, long arg) { return compel_syscall3(COMPEL_NR_fcntl, fd, cmd, arg); }
static inline long sys_getcwd(char *buf, unsigned long n) { return compel_syscall2(COMPEL_NR_getcwd, buf, n); }
static inline long sys_gettimeofday(struct timeval *tv, struct timezone *tz) { return compel_syscall2(COMPEL_NR_gettimeofday, tv, tz); }
static inline long sys_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)
{
	return compel_syscall5(COMPEL_NR_prctl, option, a2, a3, a4, a5);
}

#endif /* COMPEL_PLUGIN_STD_SYSCALL_H */
