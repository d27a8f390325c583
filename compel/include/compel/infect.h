/*
 * CRIU compel's host API (<compel/infect.h>) on this compel's runtime: the same names and
 * signatures, for C hosts written against CRIU's libcompel. Build them with
 *	gcc $(compel includes) host.c -o host $(compel --static libs)
 *
 * Differences a caller may notice:
 * - compel_stop_task() only checks the task and reports its state; compel_prepare() seizes it,
 *   compel_cure() releases it (a task that was stopped stays stopped), so compel_resume_task()
 *   has nothing left to do.
 * - The parasite serves daemon commands in the main thread; nr_threads is ignored;
 *   compel_run_in_thread() works in the task's other threads.
 * - struct infect_ctx is accepted as storage: the runtime picks its own injection method,
 *   handles faults and logs through compel_log_init(); the hooks and flags are not used.
 * - Failures return a negative errno (CRIU: -1) and are described by compel_last_error().
 * Do not include it together with <compel.h> (compel_infect() differs).
 */
#ifndef COMPEL_INFECT_H
#define COMPEL_INFECT_H

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <compel/blob.h>
#include <compel/infect-rpc.h>
#include <compel/infect-util.h>
#include <compel/task-state.h>

#define COMPEL_CRIU_INFECT_H 1

struct parasite_ctl;

/* The state of task pid (COMPEL_TASK_*), or -errno if it cannot be looked at. */
int compel_stop_task(int pid);
/* Returns 0: compel_cure() already let the task go. */
int compel_resume_task(pid_t pid, int orig_state, int state);

/* Seizes every thread of process pid; NULL on failure. */
struct parasite_ctl *compel_prepare(int pid);
struct parasite_ctl *compel_prepare_noctx(int pid);

/*
 * Infects the task with the blob compel_parasite_blob_desc() describes (the generated
 * <prefix>_setup_c_header() fills it), args_size bytes of argument area.
 */
int compel_infect(struct parasite_ctl *ctl, unsigned long nr_threads, unsigned long args_size);

/* The same as compel_infect() (the daemon always starts); compel_start_daemon() returns 0. */
int compel_infect_no_daemon(struct parasite_ctl *ctl, unsigned long nr_threads, unsigned long args_size);
int compel_start_daemon(struct parasite_ctl *ctl);

/*
 * The first stack pointers of the parasite's daemon and of commands run in other threads; the
 * PARASITE_STACK_REDZONE bytes above each are never written by the parasite.
 */
#define PARASITE_STACK_REDZONE 128
void compel_get_stack(struct parasite_ctl *ctl, void **rstack, void **r_thread_stack);

/* Stops the parasite's command loop (compel_cure_remote() does it too). */
int compel_stop_daemon(struct parasite_ctl *ctl);
/* Restores the task; releases it and frees ctl; both. */
int compel_cure_remote(struct parasite_ctl *ctl);
int compel_cure_local(struct parasite_ctl *ctl);
int compel_cure(struct parasite_ctl *ctl);

/* The argument area shared with the parasite (NULL if it is smaller than args_size). */
void *compel_parasite_args_p(struct parasite_ctl *ctl);
void *compel_parasite_args_sized(struct parasite_ctl *ctl, unsigned long args_size);
#define compel_parasite_args_s(ctl, args_size) compel_parasite_args_sized((ctl), (args_size))
#undef compel_parasite_args
#define compel_parasite_args(ctl, type) ((type *)compel_parasite_args_sized((ctl), sizeof(type)))

/* Runs syscall nr in the task; *ret gets its raw result. 0, or -errno if it could not run. */
int compel_syscall(struct parasite_ctl *ctl, int nr, long *ret, unsigned long arg1, unsigned long arg2,
		   unsigned long arg3, unsigned long arg4, unsigned long arg5, unsigned long arg6);

/*
 * Another thread of the infected task (not the main one, which serves the daemon commands):
 * compel_run_in_thread() runs cmd there once, through the parasite's parasite_trap_cmd(),
 * with the same argument area.
 */
struct parasite_thread_ctl;
struct parasite_thread_ctl *compel_prepare_thread(struct parasite_ctl *ctl, int pid);
void compel_release_thread(struct parasite_thread_ctl *tctl);
int compel_run_in_thread_ctl(struct parasite_thread_ctl *tctl, unsigned int cmd);
#undef compel_run_in_thread
#define compel_run_in_thread(tctl, cmd) compel_run_in_thread_ctl((tctl), (cmd))

/* A kernel signal set (x86_64: 64 signals) and the blocked signals of the task / a thread. */
typedef struct {
	unsigned long sig[1];
} k_rtsigset_t;
k_rtsigset_t *compel_task_sigmask(struct parasite_ctl *ctl);
k_rtsigset_t *compel_thread_sigmask(struct parasite_thread_ctl *tctl);

/* What the calling thread's last failure was (never NULL). */
const char *compel_last_error(void);

/* Options a CRIU host sets before compel_infect() (kept, not used; see above). */
#define INFECT_NO_MEMFD (1UL << 0)
#define INFECT_FAIL_CONNECT (1UL << 1)
#define INFECT_NO_BREAKPOINTS (1UL << 2)
#define INFECT_COMPATIBLE (1UL << 3)
#define INFECT_X86_PTRACE_MXCSR_BUG (1UL << 4)
#define INFECT_CORRUPT_EXTREGS (1UL << 5)

typedef int (*save_regs_t)(void *, void *, void *);
typedef int (*make_sigframe_t)(void *, void *, void *, void *);
typedef int (*open_proc_fn)(int pid, int mode, const char *fmt, ...);

struct infect_ctx {
	int sock;
	save_regs_t save_regs;
	make_sigframe_t make_sigframe;
	void *regs_arg;
	unsigned long task_size;
	unsigned long syscall_ip;
	unsigned long flags;
	void (*child_handler)(int, siginfo_t *, void *);
	struct sigaction orig_handler;
	open_proc_fn open_proc;
	int log_fd;
	unsigned long remote_map_addr;
};
_Static_assert(sizeof(struct infect_ctx) <= 512, "libcompel keeps 512 bytes for struct infect_ctx");

struct infect_ctx *compel_infect_ctx(struct parasite_ctl *ctl);

/* A blob built into the host: what <prefix>_setup_c_header_desc() fills. */
#define COMPEL_BLOB_CHEADER 0x1

struct parasite_blob_desc {
	unsigned parasite_type;
	struct compel_blob_desc desc;
};

struct parasite_blob_desc *compel_parasite_blob_desc(struct parasite_ctl *ctl);

#endif /* COMPEL_INFECT_H */
