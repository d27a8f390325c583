/*
 * CRIU compel's fds plugin names (<compel/plugins/plugin-fds.h>): pass one fd over the control
 * socket to or from the host's compel_util_recv_fd() / compel_util_send_fd().
 */
#ifndef COMPEL_PLUGIN_FDS_COMPAT_H
#define COMPEL_PLUGIN_FDS_COMPAT_H

#include <compel/plugins/fds.h>

/* Sends fd to the host: 0, or -errno. */
static inline int fds_send_fd(int fd) { return compel_send_fd(fd); }
/* Receives an fd from the host: the new fd, or -errno. */
static inline int fds_recv_fd(void) { return compel_recv_fd(); }

#endif /* COMPEL_PLUGIN_FDS_COMPAT_H */
