/* compel fds plugin, for C parasites: pass file descriptors over the control socket. */
#ifndef COMPEL_PLUGIN_FDS_H
#define COMPEL_PLUGIN_FDS_H

#include <compel/plugins/std.h>

/* Sends n fds to the host (they stay open here). 0 or -errno. */
int compel_send_fds(const int *fds, unsigned int n);
/* Receives exactly n fds from the host. 0 or -errno. */
int compel_recv_fds(int *fds, unsigned int n);

static inline int compel_send_fd(int fd) { return compel_send_fds(&fd, 1); }
static inline int compel_recv_fd(void)
{
	int fd = -1;
	int ret = compel_recv_fds(&fd, 1);

	return ret < 0 ? ret : fd;
}

#endif /* COMPEL_PLUGIN_FDS_H */
