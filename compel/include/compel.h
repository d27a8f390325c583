/*
 * compel.h: the C interface of libcompel, compel's runtime for hosts written in C (debuggers,
 * profilers, ...): seize a live process, infect it with a parasite blob, call the parasite,
 * run syscalls inside the process, and cure it so that it runs on as if nothing happened.
 *
 * Build a host:   gcc $(compel includes) host.c -o host $(compel libs)
 * Build a parasite blob header with `compel cflags`, `compel ldflags`, `compel plugins` and
 * `compel hgen --lang c -p PREFIX` (see <compel/plugins/std.h>); it provides
 * PREFIX_get_blob_desc() filling a struct compel_blob_desc.
 *
 *	struct compel_blob_desc blob;
 *	compel_ctl_t *ctl = compel_prepare(pid);
 *
 *	parasite_get_blob_desc(&blob);
 *	if (!ctl || compel_infect(ctl, &blob, 4096) < 0)
 *		fprintf(stderr, "%s\n", compel_last_error());
 *	*(long *)compel_parasite_args_p(ctl) = 42;
 *	if (compel_rpc_call_sync(COMPEL_CMD_USER, ctl) < 0)
 *		...;
 *	compel_cure(ctl);
 *
 * Conventions: functions return 0 (or a count) on success and a negative errno on failure; a
 * failed parasite command returns the (negative) errno the parasite reported.
 * compel_last_error() describes the calling thread's last failure. A compel_ctl_t belongs to
 * the thread that created it (ptrace's rule). Every failure after the parasite started cures
 * the process before returning; if the host dies, the parasite returns the process to its own
 * code by itself.
 */
#ifndef COMPEL_H
#define COMPEL_H

#include <compel/blob.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Commands below COMPEL_CMD_USER are compel's own (same values as <compel/plugins/std.h>). */
#ifndef COMPEL_CMD_USER
#define COMPEL_CMD_FINI 1
#define COMPEL_CMD_SET_LOG 2
#define COMPEL_CMD_PING 3
#define COMPEL_CMD_USER 16
#endif

/* Log levels for compel_log_init(). */
#ifndef COMPEL_LOG_ERROR
#define COMPEL_LOG_ERROR 1
#define COMPEL_LOG_WARN 2
#define COMPEL_LOG_INFO 3
#define COMPEL_LOG_DEBUG 4
#endif

/* An infection handle: a seized process and, once infected, the parasite inside it. */
typedef struct CompelCtl compel_ctl_t;

/* Receives compel's log lines, the parasite's own log lines included. */
typedef void (*compel_log_fn)(unsigned int level, const char *msg);

/* Sends log lines up to level (COMPEL_LOG_*) to fn; fn == NULL turns logging off. */
void compel_log_init(compel_log_fn fn, unsigned int level);

/* What the calling thread's last failure was (never NULL; empty if none). */
const char *compel_last_error(void);

/* The text of errno -err (or err). */
const char *compel_strerror(int err);

/* Seizes every thread of process pid (PTRACE_SEIZE). NULL on failure. */
compel_ctl_t *compel_prepare(int pid);

/* How long to wait for any answer of the parasite, in ms (default 10000). */
int compel_set_timeout(compel_ctl_t *ctl, unsigned long ms);

/* Writes up to max thread ids (main thread first) into tids; returns the number of threads. */
int compel_threads(compel_ctl_t *ctl, int *tids, unsigned long max);

/*
 * Infects the process with blob, with at least args_size bytes of command payload, and starts
 * the parasite's service loop in the main thread. On failure the process is released and only
 * compel_cure_local() may follow.
 */
int compel_infect_blob(compel_ctl_t *ctl, const struct compel_blob_desc *blob, unsigned long args_size);
/* (The library's compel_infect symbol is CRIU's, see <compel/infect.h>.) */
#define compel_infect compel_infect_blob

/* The same with a blob file's contents as `compel pack` writes them. */
int compel_infect_packed(compel_ctl_t *ctl, const void *data, unsigned long len,
			 unsigned long args_size);

/* The command payload area, shared with the parasite (NULL if not infected), and its size. */
void *compel_parasite_args_p(compel_ctl_t *ctl);
unsigned long compel_parasite_args_s(compel_ctl_t *ctl);

/* The payload area as a pointer to type, or NULL if it is too small. */
#define compel_parasite_args(ctl, type)                                                       \
	(compel_parasite_args_s(ctl) >= sizeof(type) ? (type *)compel_parasite_args_p(ctl) : (type *)0)

/* Sends cmd; waits for its answer; both. The answer is 0 or the command's negative errno. */
int compel_rpc_call(unsigned int cmd, compel_ctl_t *ctl);
int compel_rpc_sync(unsigned int cmd, compel_ctl_t *ctl);
int compel_rpc_call_sync(unsigned int cmd, compel_ctl_t *ctl);

/* Passes fds to and from a command that sends or receives them (SCM_RIGHTS, fds plugin). */
int compel_util_send_fd(compel_ctl_t *ctl, int fd);
int compel_util_recv_fd(compel_ctl_t *ctl, int *pfd);

/* Runs cmd once in thread tid (any thread but the main one), with the same payload area. */
int compel_run_in_thread(compel_ctl_t *ctl, int tid, unsigned int cmd);

/* Runs syscall nr inside the process; *ret gets its raw result (-errno on failure). */
int compel_syscall(compel_ctl_t *ctl, int nr, long *ret, unsigned long arg1, unsigned long arg2,
		   unsigned long arg3, unsigned long arg4, unsigned long arg5, unsigned long arg6);

/* Ends the parasite and restores the process's state; the process stays seized. */
int compel_cure_remote(compel_ctl_t *ctl);
/* Releases the process (a stopped one stays stopped) and frees ctl. */
int compel_cure_local(compel_ctl_t *ctl);
/* Both: the process runs on as if nothing happened; ctl is freed. */
int compel_cure(compel_ctl_t *ctl);

#ifdef __cplusplus
}
#endif

#endif /* COMPEL_H */
