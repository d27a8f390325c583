/*
 * compel std plugin, for C parasites (x86_64): raw system calls, the log channel to the host,
 * memory and string functions, and the command handler the service loop calls.
 *
 * Build:  gcc $(compel cflags) -c parasite.c -o parasite.o
 *         ld $(compel ldflags) -o parasite.elf parasite.o $(compel plugins)
 *         compel hgen -f parasite.elf -o parasite.h
 */
#ifndef COMPEL_PLUGIN_STD_H
#define COMPEL_PLUGIN_STD_H

#include <stddef.h>
#include <stdint.h>

/* Log levels (CRIU compel's values; COMPEL_LOG_MSG is always printed). */
#ifndef COMPEL_LOG_ERROR
#define COMPEL_LOG_MSG 0
#define COMPEL_LOG_ERROR 1
#define COMPEL_LOG_WARN 2
#define COMPEL_LOG_INFO 3
#define COMPEL_LOG_DEBUG 4
#define COMPEL_DEFAULT_LOGLEVEL COMPEL_LOG_WARN
#endif

/* Commands below this number are compel's own. */
#define COMPEL_CMD_FINI 1
#define COMPEL_CMD_SET_LOG 2
#define COMPEL_CMD_PING 3
#define COMPEL_CMD_USER 16

/*
 * Defined by the parasite: runs command cmd with the payload area (len bytes, shared with the
 * host). Returns 0 or a negative errno, reported to the host.
 */
int compel_parasite_handle(unsigned int cmd, void *payload, unsigned long len);

#include <compel/plugins/std/syscall.h>

/* One log line to the host (if it gave a log fd and level is enabled). */
void compel_log(unsigned int level, const char *msg);
/* One log line "msg value". */
void compel_log_num(unsigned int level, const char *msg, long value);

#define pr_err(msg) compel_log(COMPEL_LOG_ERROR, (msg))
#define pr_warn(msg) compel_log(COMPEL_LOG_WARN, (msg))
#define pr_info(msg) compel_log(COMPEL_LOG_INFO, (msg))
#define pr_debug(msg) compel_log(COMPEL_LOG_DEBUG, (msg))

/* The control socket to the host (-1 outside the service loop). */
int compel_ctl_sock(void);

/* Memory and string functions (the compiler may also call the mem* ones). */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
int bcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strchr(const char *s, int c);

/* CRIU compel's parasite-side names: string and printf-style output, entry points, log. */
#include <compel/plugins/std/string.h>
#include <compel/plugins/std/infect.h>
#include <compel/plugins/std/log.h>

#endif /* COMPEL_PLUGIN_STD_H */
