/*
 * CRIU compel's host API (<compel/infect.h>) on this compel's runtime: the same names and
 * signatures, for C hosts written against CRIU's libcompel. Build them with
 *	gcc $(compel includes) host.c -o host $(compel --static libs)
 *
 * Differences a caller may notice:
 * - compel_stop_task() seizes the task and reports its state; compel_prepare() on the same
 *   thread takes it over (or seizes it itself when compel_stop_task() was not called);
 *   compel_cure() releases it (a task that was stopped stays stopped), so compel_resume_task()
 *   only lets go of a task compel_stop_task() seized and no compel_prepare() took.
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
#include <compel/asm/infect-types.h>

#define COMPEL_CRIU_INFECT_H 1

struct parasite_ctl;

/*
 * Seizes task pid and returns its state (COMPEL_TASK_*), or -errno. A zombie or dead task is
 * only reported.
 */
int compel_stop_task(int pid);
/* Lets go of a task compel_stop_task() seized and nothing took over; 0 after compel_cure(). */
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

/*
 * Registers, in CRIU's layout: the 64-bit set (struct user_regs_struct) in a union with the
 * 32-bit one, and a flag user_regs_native() tests.
 */
typedef struct {
	uint64_t r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags,
		sp, ss, fs_base, gs_base, ds, es, fs, gs;
} user_regs_struct64;
typedef struct {
	uint32_t bx, cx, dx, si, di, bp, ax, ds, es, fs, gs, orig_ax, ip, cs, flags, sp, ss;
} user_regs_struct32;
typedef struct {
	union {
		user_regs_struct64 native;
		user_regs_struct32 compat;
	};
	short __is_native;
} user_regs_struct_t;
#define NATIVE_MAGIC 0x0A
#define COMPAT_MAGIC 0x0C
#define user_regs_native(pregs) ((pregs)->__is_native == NATIVE_MAGIC)

/*
 * The task's registers: those it resumes with (after infection: those the cure puts back).
 * compel_set_leader_ip() works before infection only.
 */
uint64_t compel_get_leader_sp(struct parasite_ctl *ctl);
uint64_t compel_get_leader_ip(struct parasite_ctl *ctl);
void compel_set_leader_ip(struct parasite_ctl *ctl, uint64_t v);
uint64_t compel_get_thread_sp(struct parasite_thread_ctl *tctl);
uint64_t compel_get_thread_ip(struct parasite_thread_ctl *tctl);
void compel_set_thread_ip(struct parasite_thread_ctl *tctl, uint64_t v);
/* save(arg, user_regs_struct_t *, xsave area of at least 4096 bytes); returns what save returns. */
int compel_get_thread_regs(struct parasite_thread_ctl *tctl, save_regs_t save, void *arg);

/*
 * Runs the seized, not infected task from ip until it traps (int3); ret_regs (may be NULL)
 * gets the registers at the trap, the task gets its own back. -EFAULT if it stops otherwise.
 */
int compel_run_at(struct parasite_ctl *ctl, unsigned long ip, user_regs_struct_t *ret_regs);
/* Runs the seized, not infected task from addr until its munmap() returns; registers put back. */
int compel_unmap(struct parasite_ctl *ctl, unsigned long addr);
/* 1: the task runs 64-bit code. */
int compel_mode_native(struct parasite_ctl *ctl);
unsigned long compel_task_size(void);

/* Seize-time helpers: compel_prepare() seizes, these check and report (see above). */
struct seize_task_status {
	unsigned long long sigpnd;
	unsigned long long shdpnd;
	unsigned long long sigblk;
	char state;
	int vpid;
	int ppid;
	int seccomp_mode;
};
/* 0 if the task exists and is alive, else -errno. */
int compel_interrupt_task(int pid);
/* The task's state (COMPEL_TASK_*) and status (get_status, or /proc when NULL); -EINVAL if
 * ppid is not -1 and not the task's parent. */
int compel_wait_task(int pid, int ppid, int (*get_status)(int pid, struct seize_task_status *, void *data),
		     void (*free_status)(int pid, struct seize_task_status *, void *data),
		     struct seize_task_status *st, void *data);
/*
 * Lets `tasks` of the caller's tracees (continued with PTRACE_SYSCALL, or towards a
 * breakpoint, flushed when hit) run until each has finished syscall sys_nr; each is left in
 * the stop at its exit. Only ptrace stops are waited for: no child of the caller is reaped.
 */
int compel_stop_on_syscall(int tasks, int sys_nr, int sys_nr_compat);
/* Relocates a copy of pbd's blob at mem (image_size bytes) for running at vbase. */
void compel_relocs_apply(void *mem, void *vbase, struct parasite_blob_desc *pbd);

/* The signal of the stop the caller's tracee is in. */
int compel_parse_stop_signo(int pid);
int compel_resume_task_sig(pid_t pid, int orig_state, int state, int stop_signo);

#endif /* COMPEL_INFECT_H */
