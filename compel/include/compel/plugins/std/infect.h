/*
 * The entry points a C parasite written for CRIU's compel defines
 * (<compel/plugins/std/infect.h>). Include <infect-rpc.h> (or <compel/infect-rpc.h>) in the
 * parasite and define parasite_daemon_cmd(): it runs every command the host sends with
 * compel_rpc_call(), with the argument area as args, and returns 0 or an error (a negative
 * errno, or any other nonzero value for a plain failure). parasite_trap_cmd() runs a command
 * the host sends to another thread with compel_run_in_thread(). parasite_cleanup() is accepted
 * and not called: compel restores the task on its own at cure.
 */
#ifndef COMPEL_PLUGIN_STD_INFECT_H
#define COMPEL_PLUGIN_STD_INFECT_H

int parasite_daemon_cmd(int cmd, void *args);
int parasite_trap_cmd(int cmd, void *args);
void parasite_cleanup(void);

/* The control socket to the host (-1 outside the service loop). */
int compel_ctl_sock(void);
static inline int parasite_get_rpc_sock(void) { return compel_ctl_sock(); }

#endif /* COMPEL_PLUGIN_STD_INFECT_H */
