/*
 * CRIU compel's <compel/infect-rpc.h> (also reachable as <infect-rpc.h> with `compel cflags`):
 * the host's calls into a running parasite, and the first command number a parasite may use.
 *
 * In a parasite (a freestanding build with `compel cflags`) this header also provides the
 * entry point compel's std plugin calls for each command, which hands the command to the
 * parasite's parasite_daemon_cmd(), or to parasite_trap_cmd() for a command the host ran with
 * compel_run_in_thread() (see <compel/plugins/std/infect.h>). Define
 * COMPEL_NO_CRIU_ENTRY before including it to keep only compel_parasite_handle().
 */
#ifndef COMPEL_INFECT_RPC_H
#define COMPEL_INFECT_RPC_H

/* User commands start here (compel's own commands are below 16). */
#define PARASITE_USER_CMDS 64

#if __STDC_HOSTED__

struct parasite_ctl;

/* Send cmd; wait for its answer; both. 0, or a negative errno (the parasite's error). */
int compel_rpc_call(unsigned int cmd, struct parasite_ctl *ctl);
int compel_rpc_sync(unsigned int cmd, struct parasite_ctl *ctl);
int compel_rpc_call_sync(unsigned int cmd, struct parasite_ctl *ctl);
/* The host's end of the control socket (libcompel closes it at cure), or -1. */
int compel_rpc_sock(struct parasite_ctl *ctl);

#elif !defined(COMPEL_NO_CRIU_ENTRY)

#include <compel/plugins/std/infect.h>
#include <compel/plugins/std/syscall.h>

int compel_parasite_handle(unsigned int cmd, void *payload, unsigned long len);

/*
 * Weak so that every object of the parasite may include this header; a parasite that defines
 * compel_parasite_handle() itself overrides it.
 */
__attribute__((weak)) int compel_parasite_handle(unsigned int cmd, void *payload, unsigned long len)
{
	int ret;

	(void)len;
	/* The daemon serves from the main thread; compel_run_in_thread() runs in another one. */
	if (sys_gettid() == sys_getpid())
		ret = parasite_daemon_cmd((int)cmd, payload);
	else
		ret = parasite_trap_cmd((int)cmd, payload);
	/* CRIU's parasites return any nonzero value on failure; the host wants -errno. */
	return ret > 0 ? -ret : ret;
}

#endif /* __STDC_HOSTED__ */

#endif /* COMPEL_INFECT_RPC_H */
