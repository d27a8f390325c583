/* CRIU compel's <compel/infect-util.h>: passing fds to and from a parasite command. */
#ifndef COMPEL_INFECT_UTIL_H
#define COMPEL_INFECT_UTIL_H

struct parasite_ctl;

/* Sends fd to a command that calls fds_recv_fd(); 0 or -errno. */
int compel_util_send_fd(struct parasite_ctl *ctl, int fd);
/* Receives the fd a command sent with fds_send_fd() into *pfd; 0 or -errno. */
int compel_util_recv_fd(struct parasite_ctl *ctl, int *pfd);

#endif /* COMPEL_INFECT_UTIL_H */
