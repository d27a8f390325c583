/*
 * soccr.h: C interface of libsoccr (libsoccr.so / libsoccr.a from the soccr crate).
 *
 * Names, struct layouts, constants and memory rules are those of CRIU's libsoccr, so a
 * program written against CRIU's soccr/soccr.h builds against this header unchanged.
 * Build:  cc prog.c -I<repo>/criu/soccr/include -L<target>/debug -lsoccr
 */
#ifndef __LIBSOCCR_H__
#define __LIBSOCCR_H__

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>

/* Packets carrying this mark are never blocked by a network lock. */
#define SOCCR_MARK 0xC114

#ifndef TCP_REPAIR_WINDOW
#define TCP_REPAIR_WINDOW 29
#endif
#ifndef TCP_TIMESTAMP
#define TCP_TIMESTAMP 24
#endif

/* The queue ids TCP_NO_QUEUE, TCP_RECV_QUEUE, TCP_SEND_QUEUE, and struct tcp_repair_opt and
 * struct tcp_repair_window, come from glibc's netinet/tcp.h. */

#define SOCCR_LOG_ERR 1
#define SOCCR_LOG_DBG 2

/* Messages up to `level` go to fn (printf-like); fn NULL turns logging off. */
void libsoccr_set_log(unsigned int level, void (*fn)(unsigned int level, const char *fmt, ...));

/* Opaque handle of one socket in repair mode. */
struct libsoccr_sk;

union libsoccr_addr {
	struct sockaddr sa;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

/* What save fills in and restore takes back (17 x u32, 68 bytes). */
struct libsoccr_sk_data {
	uint32_t state;
	uint32_t inq_len;
	uint32_t inq_seq;
	uint32_t outq_len;
	uint32_t outq_seq;
	uint32_t unsq_len;
	uint32_t opt_mask;
	uint32_t mss_clamp;
	uint32_t snd_wscale;
	uint32_t rcv_wscale;
	uint32_t timestamp;

	uint32_t flags; /* SOCCR_FLAGS_* */
	uint32_t snd_wl1;
	uint32_t snd_wnd;
	uint32_t max_window;
	uint32_t rcv_wnd;
	uint32_t rcv_wup;
};

/* snd_wl1, snd_wnd, max_window, rcv_wnd and rcv_wup are valid. */
#define SOCCR_FLAGS_WINDOW 0x1

/* Buffers passed with this flag change owner: the receiver free()s them. */
#define SOCCR_MEM_EXCL 0x1

/* Repair mode on; NULL on failure. */
struct libsoccr_sk *libsoccr_pause(int fd);
/* Repair mode off, handle freed. */
void libsoccr_resume(struct libsoccr_sk *sk);
/* Handle freed, repair mode left on. */
void libsoccr_release(struct libsoccr_sk *sk);

/* Checkpoint: fills data (data_size >= 68) and keeps both queues; returns the size filled
 * or a negative value. Supported states: ESTABLISHED and FIN_WAIT1 (others are refused). */
int libsoccr_save(struct libsoccr_sk *sk, struct libsoccr_sk_data *data, unsigned data_size);
/* The saved TCP_RECV_QUEUE (inq_len bytes) or TCP_SEND_QUEUE (outq_len bytes). */
char *libsoccr_get_queue_bytes(struct libsoccr_sk *sk, int queue_id, unsigned flags);
/* The socket's own (self != 0) or peer address. */
union libsoccr_addr *libsoccr_get_addr(struct libsoccr_sk *sk, int self, unsigned flags);

/* Restore, on a fresh paused socket: set both queues and both addresses, then restore. */
int libsoccr_set_queue_bytes(struct libsoccr_sk *sk, int queue_id, char *bytes, unsigned flags);
int libsoccr_set_addr(struct libsoccr_sk *sk, int self, union libsoccr_addr *, unsigned flags);
int libsoccr_restore(struct libsoccr_sk *sk, struct libsoccr_sk_data *data, unsigned data_size);

#endif
