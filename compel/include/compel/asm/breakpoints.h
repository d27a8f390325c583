/*
 * CRIU compel's <compel/asm/breakpoints.h> on this compel (x86_64), for the caller's stopped
 * tracee:
 * - ptrace_set_breakpoint() sets a hardware execution breakpoint at addr (debug register 0),
 *   blocks every signal but SIGTRAP and continues the tracee; 1, or -errno. Wait for the
 *   SIGTRAP stop, then ptrace_flush_breakpoints() and put the signal mask back.
 * - ptrace_flush_breakpoints() disables it; 0 or -errno.
 */
#ifndef COMPEL_ASM_BREAKPOINTS_H
#define COMPEL_ASM_BREAKPOINTS_H

#include <sys/types.h>

int ptrace_set_breakpoint(pid_t pid, void *addr);
int ptrace_flush_breakpoints(pid_t pid);

#endif /* COMPEL_ASM_BREAKPOINTS_H */
