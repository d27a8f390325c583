/*
 * A C parasite for the libcompel host test (built only with what `compel cflags`,
 * `compel ldflags` and `compel plugins std fds` give, then `compel hgen --lang c -p cpar`).
 *
 *   COMPEL_CMD_USER:     reports pid, tid and cwd, doubles `in` into `out`, logs a line
 *   COMPEL_CMD_USER + 1: sends the task's fd `in` to the host
 *   COMPEL_CMD_USER + 2: fails with EPERM
 */
#include <compel/plugins/std.h>
#include <compel/plugins/fds.h>

struct cpar_args {
	long in;
	long out;
	int pid;
	int tid;
	int cwd_len;
	char cwd[256];
};

int compel_parasite_handle(unsigned int cmd, void *payload, unsigned long len)
{
	struct cpar_args *a = payload;
	long n;

	if (len < sizeof(*a))
		return -34; /* ERANGE */
	switch (cmd) {
	case COMPEL_CMD_USER:
		a->pid = (int)sys_getpid();
		a->tid = (int)sys_gettid();
		a->out = a->in * 2;
		n = sys_getcwd(a->cwd, sizeof(a->cwd));
		if (n < 0)
			return (int)n;
		a->cwd_len = (int)strlen(a->cwd);
		compel_log_num(COMPEL_LOG_INFO, "c parasite says hello from", a->pid);
		return 0;
	case COMPEL_CMD_USER + 1:
		return compel_send_fd((int)a->in);
	case COMPEL_CMD_USER + 2:
		return -1; /* EPERM */
	}
	return -38; /* ENOSYS */
}
