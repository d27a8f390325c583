/*
 * A libcriu client written against CRIU's libcriu interface (criu.h): it checks the version
 * and the features, gets the errors a bad request earns, then dumps the process PID into DIR
 * and restores it, printing what happened, one line per step, for the test to check. Between
 * the dump and the restore it waits for a line on stdin (the test reaps the dumped process).
 *
 * usage: libcriu_client CRIU DIR PID
 */
#include <criu.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int notify(char *action, criu_notify_arg_t na)
{
	printf("notify %s %d\n", action, criu_notify_pid(na));
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	struct criu_feature_check features = { .mem_track = true };
	criu_opts *local;
	int dir, ret, pid;

	if (argc != 4) {
		fprintf(stderr, "usage: %s CRIU DIR PID\n", argv[0]);
		return 2;
	}
	pid = atoi(argv[3]);
	dir = open(argv[2], O_RDONLY | O_DIRECTORY);
	if (dir < 0) {
		perror("open the images directory");
		return 2;
	}

	if (criu_init_opts() || criu_set_service_binary(argv[1]))
		return 3;
	printf("version %d\n", criu_get_version());
	printf("at least 4.2: %d\n", criu_check_version(40200));
	ret = criu_feature_check(&features, sizeof(features));
	printf("features %d mem_track %d\n", ret, features.mem_track);

	/* No images directory: criu refuses, errno says why. */
	criu_set_pid(pid);
	errno = 0;
	ret = criu_dump();
	printf("dump without images dir %d errno %d\n", ret, errno);

	/* A service that is not there. */
	if (criu_local_init_opts(&local))
		return 3;
	criu_local_set_service_address(local, "/nonexistent/criu.sk");
	printf("unreachable service %d\n", criu_local_check(local));
	criu_local_free_opts(local);

	criu_set_images_dir_fd(dir);
	criu_set_log_file("dump.log");
	criu_set_log_level(CRIU_LOG_DEBUG);
	criu_set_notify_cb(notify);
	ret = criu_dump();
	printf("dumped %d\n", ret);
	fflush(stdout);
	if (ret)
		return 1;
	/* The test reaps the dumped victim, then says go on. */
	if (getchar() == EOF)
		return 1;

	criu_set_log_file("restore.log");
	ret = criu_restore();
	printf("restored %d\n", ret);
	criu_free_opts();
	return ret == pid ? 0 : 1;
}
