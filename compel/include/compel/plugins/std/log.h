/*
 * Leveled printf-style log lines from a C parasite to the host, under the names CRIU's compel
 * gives them (<compel/plugins/std/log.h>). Lines go over compel's log channel, so the host's
 * log callback sees them; the level filter is the host's (compel_log_init()).
 */
#ifndef COMPEL_PLUGIN_STD_LOG_H
#define COMPEL_PLUGIN_STD_LOG_H

#include <compel/plugins/std/string.h>

#define STD_LOG_SIMPLE_CHUNK 256

/* One log line (a trailing newline is dropped: the channel is line based). */
void compel_log(unsigned int level, const char *msg);

static inline void std_vsprintf(char output[STD_LOG_SIMPLE_CHUNK], const char *format, va_list ap)
{
	struct __compel_out o = { output, 0, STD_LOG_SIMPLE_CHUNK, -1 };

	__compel_vformat(&o, format, ap);
	output[o.len] = '\0';
}

static inline __attribute__((format(printf, 2, 3))) void std_sprintf(char output[STD_LOG_SIMPLE_CHUNK],
								      const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	std_vsprintf(output, format, ap);
	va_end(ap);
}

static inline __attribute__((format(printf, 2, 3))) void print_on_level(unsigned int loglevel,
									 const char *format, ...)
{
	char line[STD_LOG_SIMPLE_CHUNK];
	unsigned long n;
	va_list ap;

	va_start(ap, format);
	std_vsprintf(line, format, ap);
	va_end(ap);
	n = strlen(line);
	if (n && line[n - 1] == '\n')
		line[n - 1] = '\0';
	compel_log(loglevel, line);
}

/* The host sets the log channel and level; these exist for sources that call them. */
static inline void std_log_set_fd(int fd) { (void)fd; }
static inline void std_log_set_loglevel(unsigned int level) { (void)level; }

#endif /* COMPEL_PLUGIN_STD_LOG_H */
