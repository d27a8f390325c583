/*
 * A libcriu client for the calls libcriu_client.c does not make, written against CRIU's
 * criu.h. One line per step on stdout for the test to check.
 *
 *   libcriu_more CRIU fd DIR PID      criu_set_service_fd: the client starts `CRIU swrk FD`
 *                                     itself (as runc does) and dumps PID (left running)
 *   libcriu_more CRIU iters DIR PID   criu_pre_dump into DIR/single, then criu_dump_iters:
 *                                     pre-dumps into DIR/pre1 and DIR/pre2, dumps into
 *                                     DIR/final (each on the one before); then,
 *                                     after a line on stdin, criu_restore_child from DIR/final
 *   libcriu_more CRIU pts DIR PID     restores the orphan-pts victim dumped into DIR with
 *                                     orphan_pts_master, takes the new master from
 *                                     criu_get_orphan_pts_master_fd in the notification and
 *                                     talks to the restored victim through it
 */
#include <criu.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char *base;
static int iteration;

static int open_dir(const char *name)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", base, name);
	fd = open(path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		perror(path);
	return fd;
}

/* After each pre-dump: the next one goes to pre2 on top of pre1, the dump to final. */
static int more(criu_predump_info pi)
{
	(void)pi;
	iteration++;
	printf("more %d\n", iteration);
	fflush(stdout);
	if (iteration == 1) {
		criu_set_images_dir_fd(open_dir("pre2"));
		criu_set_parent_images("../pre1");
		return 1;
	}
	criu_set_images_dir_fd(open_dir("final"));
	criu_set_parent_images("../pre2");
	return 0;
}

static int master = -1;

static int notify(char *action, criu_notify_arg_t na)
{
	(void)na;
	if (!strcmp(action, "orphan-pts-master")) {
		int fd = criu_get_orphan_pts_master_fd();

		printf("orphan-pts-master fd %s\n", fd >= 0 ? "yes" : "no");
		if (fd >= 0)
			master = dup(fd);
	}
	return 0;
}

static int by_fd(const char *criu, int pid)
{
	int sk[2], ret, status;
	pid_t child;
	char arg[16];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sk))
		return 2;
	child = fork();
	if (child == 0) {
		close(sk[0]);
		snprintf(arg, sizeof(arg), "%d", sk[1]);
		execl(criu, criu, "swrk", arg, (char *)NULL);
		_exit(127);
	}
	close(sk[1]);
	criu_set_service_fd(sk[0]);
	criu_set_images_dir_fd(open_dir("."));
	criu_set_pid(pid);
	criu_set_leave_running(true);
	criu_set_log_file("fd-dump.log");
	ret = criu_dump();
	printf("fd dump %d\n", ret);
	if (waitpid(child, &status, 0) != child)
		return 1;
	printf("criu exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return ret ? 1 : 0;
}

static int iterate(int pid)
{
	int ret, status;
	FILE *f;
	char path[4096];
	int ppid = -1;

	criu_set_pid(pid);
	criu_set_log_level(CRIU_LOG_DEBUG);
	criu_set_images_dir_fd(open_dir("single"));
	criu_set_log_file("pre-dump.log");
	ret = criu_pre_dump();
	printf("pre_dump %d\n", ret);

	/* On top of the single pre-dump: its tracking goes on. */
	criu_set_images_dir_fd(open_dir("pre1"));
	criu_set_parent_images("../single");
	criu_set_log_file("iters.log");
	criu_set_track_mem(true);
	ret = criu_dump_iters(more);
	printf("iters %d\n", ret);
	fflush(stdout);
	if (ret)
		return 1;
	/* The test reaps the dumped victim, then says go on. */
	if (getchar() == EOF)
		return 1;
	criu_set_images_dir_fd(open_dir("final"));
	criu_set_log_file("restore.log");
	ret = criu_restore_child();
	snprintf(path, sizeof(path), "/proc/%d/stat", ret);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%*d (%*[^)]) %*c %d", &ppid) != 1)
			ppid = -1;
		fclose(f);
	}
	printf("restored child %d ours %d\n", ret, ppid == getpid());
	/* Not reaped yet: still there for the test, which reaps it once we are gone. */
	printf("not reaped %d\n", waitpid(ret, &status, WNOHANG) == 0);
	return ret == pid ? 0 : 1;
}

static int pts(int pid)
{
	char buf[256];
	size_t got = 0;
	struct pollfd p;
	int ret;

	criu_set_images_dir_fd(open_dir("."));
	criu_set_log_file("restore.log");
	criu_set_log_level(CRIU_LOG_DEBUG);
	criu_set_orphan_pts_master(true);
	criu_set_notify_cb(notify);
	ret = criu_restore();
	printf("restored %d\n", ret);
	if (ret != pid || master < 0)
		return 1;
	kill(pid, SIGUSR1);
	usleep(100000);
	if (write(master, "ping\n", 5) != 5)
		return 1;
	p.fd = master;
	p.events = POLLIN;
	while (got < sizeof(buf) - 1 && poll(&p, 1, 5000) > 0) {
		ssize_t n = read(master, buf + got, sizeof(buf) - 1 - got);

		if (n <= 0)
			break;
		got += n;
		buf[got] = 0;
		if (strstr(buf, "pong"))
			break;
	}
	buf[got] = 0;
	printf("pong %d\n", strstr(buf, "pong") != NULL);
	return 0;
}

int main(int argc, char **argv)
{
	int pid;

	if (argc != 5) {
		fprintf(stderr, "usage: %s CRIU fd|iters|pts DIR PID\n", argv[0]);
		return 2;
	}
	base = argv[3];
	pid = atoi(argv[4]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (criu_init_opts())
		return 3;
	if (!strcmp(argv[2], "fd"))
		return by_fd(argv[1], pid);
	if (criu_set_service_binary(argv[1]))
		return 3;
	if (!strcmp(argv[2], "iters"))
		return iterate(pid);
	if (!strcmp(argv[2], "pts"))
		return pts(pid);
	return 2;
}
