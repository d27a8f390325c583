/*
 * CRIU compel's <compel/ptrace.h> helpers on this compel: the caller's tracee's memory in
 * words, and seccomp suspension. Each returns 0 or a negative errno (compel_last_error() says
 * what failed). Lengths must be a whole number of words (sizeof(long)).
 */
#ifndef COMPEL_PTRACE_H
#define COMPEL_PTRACE_H

#include <sys/ptrace.h>
#include <sys/types.h>
#include <compel/asm/breakpoints.h>

#ifndef PTRACE_SEIZE
#define PTRACE_SEIZE 0x4206
#endif
#ifndef PTRACE_INTERRUPT
#define PTRACE_INTERRUPT 0x4207
#endif
#ifndef PTRACE_LISTEN
#define PTRACE_LISTEN 0x4208
#endif
#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif

/* PTRACE_O_SUSPEND_SECCOMP | PTRACE_O_TRACESYSGOOD (needs CAP_SYS_ADMIN). */
int ptrace_suspend_seccomp(pid_t pid);
/* Reads bytes at addr of the tracee into dst. */
int ptrace_peek_area(pid_t pid, void *dst, void *addr, long bytes);
/* Writes bytes from src at addr of the tracee. */
int ptrace_poke_area(pid_t pid, void *src, void *addr, long bytes);
/* Writes src at dst of the tracee and returns the old bytes in src. */
int ptrace_swap_area(pid_t pid, void *dst, void *src, long bytes);

#endif /* COMPEL_PTRACE_H */
