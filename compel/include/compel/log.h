/*
 * CRIU compel's <compel/log.h>: a printf-style log callback for a C host. compel's log lines
 * (the parasite's included) reach fn as format "%s\n" and one string argument. Do not include
 * it together with <compel.h>, whose compel_log_init() takes a line callback instead.
 */
#ifndef COMPEL_LOG_H
#define COMPEL_LOG_H

#include <stdarg.h>
#include <compel/loglevels.h>

typedef void (*compel_log_fn)(unsigned int lvl, const char *fmt, va_list parms);

/* libcompel's line callback setter (<compel.h>'s compel_log_init()). */
void compel_log_init_msg(void (*fn)(unsigned int level, const char *msg), unsigned int level);
/* The level given to the last compel_log_init(). */
unsigned int compel_log_get_loglevel(void);

static compel_log_fn __compel_log_vfn __attribute__((unused));

static inline void __compel_log_call(unsigned int lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (__compel_log_vfn)
		__compel_log_vfn(lvl, fmt, ap);
	va_end(ap);
}

static inline void __compel_log_line(unsigned int lvl, const char *msg)
{
	__compel_log_call(lvl, "%s\n", msg);
}

/* Sends compel's log lines up to level to log_fn (NULL: off). */
static inline void compel_log_init(compel_log_fn log_fn, unsigned int level)
{
	__compel_log_vfn = log_fn;
	compel_log_init_msg(log_fn ? __compel_log_line : (void (*)(unsigned int, const char *))0, level);
}

#endif /* COMPEL_LOG_H */
