/* Moves a live loopback TCP connection from one socket to a fresh one with libsoccr's C API,
 * in a network namespace of its own, and checks queued bytes arrive once and in order.
 * Prints "ok" and exits 0 on success. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "soccr.h"

#define CHECK(c)                                                              \
	do {                                                                  \
		if (!(c)) {                                                   \
			fprintf(stderr, "%s:%d: %s (%m)\n", __FILE__, __LINE__, #c); \
			exit(1);                                              \
		}                                                             \
	} while (0)

_Static_assert(sizeof(struct libsoccr_sk_data) == 68, "libsoccr_sk_data is 17 u32");
_Static_assert(offsetof(struct libsoccr_sk_data, flags) == 44, "flags at 44");
_Static_assert(offsetof(struct libsoccr_sk_data, rcv_wup) == 64, "rcv_wup at 64");
_Static_assert(sizeof(union libsoccr_addr) == sizeof(struct sockaddr_in6), "addr union");

static int logged;
static void logfn(unsigned int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "soccr[%u]: ", level);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	logged++;
}

static void read_exact(int fd, char *buf, size_t n)
{
	size_t off = 0;
	while (off < n) {
		ssize_t r = read(fd, buf + off, n - off);
		CHECK(r > 0);
		off += r;
	}
}

int main(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	struct libsoccr_sk_data data;
	struct ifreq ifr = { .ifr_name = "lo", .ifr_flags = IFF_UP | IFF_RUNNING };
	char buf[64];
	int l, c, s, n, ctl;

	CHECK(unshare(CLONE_NEWNET) == 0);
	ctl = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(ctl >= 0 && ioctl(ctl, SIOCSIFFLAGS, &ifr) == 0);
	close(ctl);

	libsoccr_set_log(SOCCR_LOG_DBG, logfn);

	l = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(l >= 0 && bind(l, (void *)&a, sizeof(a)) == 0 && listen(l, 1) == 0);
	CHECK(getsockname(l, (void *)&a, &alen) == 0);
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c >= 0 && connect(c, (void *)&a, sizeof(a)) == 0);
	s = accept(l, NULL, NULL);
	CHECK(s >= 0);
	CHECK(write(s, "to client", 9) == 9);
	CHECK(write(c, "to server;", 10) == 10);
	usleep(100000);

	/* Checkpoint the client. */
	struct libsoccr_sk *h = libsoccr_pause(c);
	CHECK(h);
	CHECK(libsoccr_save(h, &data, sizeof(data)) == sizeof(data));
	CHECK(data.state == TCP_ESTABLISHED && data.inq_len == 9 && data.outq_len == 0);
	char *inq = libsoccr_get_queue_bytes(h, TCP_RECV_QUEUE, SOCCR_MEM_EXCL);
	char *outq = libsoccr_get_queue_bytes(h, TCP_SEND_QUEUE, SOCCR_MEM_EXCL);
	CHECK(inq && memcmp(inq, "to client", 9) == 0 && outq == NULL);
	CHECK(libsoccr_get_queue_bytes(h, 7, 0) == NULL);
	union libsoccr_addr *src = libsoccr_get_addr(h, 1, SOCCR_MEM_EXCL);
	union libsoccr_addr *dst = libsoccr_get_addr(h, 0, SOCCR_MEM_EXCL);
	CHECK(src && dst && dst->v4.sin_port == a.sin_port);
	libsoccr_release(h);
	close(c); /* in repair mode: nothing reaches the server */

	/* Restore into a fresh socket. */
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(c >= 0);
	h = libsoccr_pause(c);
	CHECK(h);
	CHECK(libsoccr_set_queue_bytes(h, TCP_RECV_QUEUE, inq, SOCCR_MEM_EXCL) == 0);
	CHECK(libsoccr_set_queue_bytes(h, TCP_SEND_QUEUE, outq, SOCCR_MEM_EXCL) == 0);
	CHECK(libsoccr_set_addr(h, 1, src, SOCCR_MEM_EXCL) == 0);
	CHECK(libsoccr_set_addr(h, 0, dst, SOCCR_MEM_EXCL) == 0);
	CHECK(libsoccr_restore(h, &data, sizeof(data)) == 0);
	libsoccr_resume(h);

	read_exact(c, buf, 9);
	CHECK(memcmp(buf, "to client", 9) == 0);
	CHECK(write(c, "after", 5) == 5);
	read_exact(s, buf, 15);
	CHECK(memcmp(buf, "to server;after", 15) == 0);
	CHECK(write(s, "again", 5) == 5);
	read_exact(c, buf, 5);
	CHECK(memcmp(buf, "again", 5) == 0);
	close(c);
	n = read(s, buf, 1);
	CHECK(n == 0); /* an orderly FIN, not a reset */

	/* An error is logged and returned: a too small data buffer. */
	c = socket(AF_INET, SOCK_STREAM, 0);
	h = libsoccr_pause(c);
	CHECK(h && libsoccr_save(h, &data, 16) < 0 && logged > 0);
	libsoccr_release(h);
	printf("ok\n");
	return 0;
}
