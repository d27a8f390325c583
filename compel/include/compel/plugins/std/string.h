/*
 * printf-style output and string functions for C parasites, under the names CRIU's compel
 * gives them (<compel/plugins/std/string.h>). Output goes straight to the task's fd with
 * write(2); nothing is buffered. Formats: %d %i %u %x %X %p %s %c %% with the l, ll, z and h
 * length modifiers, a field width and the 0 and - flags.
 */
#ifndef COMPEL_PLUGIN_STD_STRING_H
#define COMPEL_PLUGIN_STD_STRING_H

#include <stdarg.h>
#include <stddef.h>
#include <compel/plugins/std/syscall.h>

#ifndef STDIN_FILENO
#define STDIN_FILENO 0
#define STDOUT_FILENO 1
#define STDERR_FILENO 2
#endif

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

static inline int std_strcmp(const char *a, const char *b) { return strcmp(a, b); }
static inline int std_strncmp(const char *a, const char *b, size_t n) { return strncmp(a, b, n); }

/* A bounded output buffer: what the formatter writes into. */
struct __compel_out {
	char *buf;
	unsigned long len, cap;
	int fd; /* >= 0: flush to this fd when full */
};

static inline void __compel_out_flush(struct __compel_out *o)
{
	unsigned long off = 0;

	while (o->fd >= 0 && off < o->len) {
		long n = sys_write(o->fd, o->buf + off, o->len - off);

		if (n <= 0)
			break;
		off += (unsigned long)n;
	}
	if (o->fd >= 0)
		o->len = 0;
}

static inline void __compel_out_put(struct __compel_out *o, char c)
{
	if (o->len + 1 >= o->cap) {
		if (o->fd < 0)
			return;
		__compel_out_flush(o);
	}
	o->buf[o->len++] = c;
}

static inline void __compel_out_field(struct __compel_out *o, const char *s, unsigned long n, int width,
				      int left, char pad)
{
	int fill = width > (int)n ? width - (int)n : 0;

	if (!left && pad == '0' && n && (*s == '-')) {
		__compel_out_put(o, *s++);
		n--;
	}
	while (!left && fill-- > 0)
		__compel_out_put(o, pad);
	while (n--)
		__compel_out_put(o, *s++);
	while (left && fill-- > 0)
		__compel_out_put(o, ' ');
}

static inline void __compel_vformat(struct __compel_out *o, const char *f, va_list ap)
{
	for (; *f; f++) {
		char tmp[24], *e = tmp + sizeof(tmp), *p = e, pad = ' ';
		unsigned long long u;
		int width = 0, left = 0, lng = 0, neg = 0, base = 10, upper = 0;

		if (*f != '%') {
			__compel_out_put(o, *f);
			continue;
		}
		f++;
		for (; *f == '0' || *f == '-'; f++) {
			if (*f == '0')
				pad = '0';
			else
				left = 1;
		}
		for (; *f >= '0' && *f <= '9'; f++)
			width = width * 10 + (*f - '0');
		for (; *f == 'l' || *f == 'z' || *f == 'h'; f++)
			lng += *f == 'h' ? 0 : 1;
		switch (*f) {
		case '\0':
			return;
		case '%':
			__compel_out_put(o, '%');
			continue;
		case 'c':
			tmp[0] = (char)va_arg(ap, int);
			__compel_out_field(o, tmp, 1, width, left, ' ');
			continue;
		case 's': {
			const char *s = va_arg(ap, const char *);

			if (!s)
				s = "(null)";
			__compel_out_field(o, s, strlen(s), width, left, ' ');
			continue;
		}
		case 'd':
		case 'i': {
			long long v = lng ? (lng > 1 ? va_arg(ap, long long) : va_arg(ap, long)) : va_arg(ap, int);

			neg = v < 0;
			u = neg ? 0ULL - (unsigned long long)v : (unsigned long long)v;
			break;
		}
		case 'p':
			u = (unsigned long)va_arg(ap, void *);
			base = 16;
			break;
		case 'x':
		case 'X':
			base = 16;
			upper = *f == 'X';
			/* fall through */
		case 'u':
			u = lng ? (lng > 1 ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned long))
				: va_arg(ap, unsigned int);
			break;
		default:
			__compel_out_put(o, '%');
			__compel_out_put(o, *f);
			continue;
		}
		do {
			unsigned d = (unsigned)(u % (unsigned)base);

			*--p = (char)(d < 10 ? '0' + d : (upper ? 'A' : 'a') + d - 10);
			u /= (unsigned)base;
		} while (u);
		if (*f == 'p') {
			*--p = 'x';
			*--p = '0';
		}
		if (neg)
			*--p = '-';
		__compel_out_field(o, p, (unsigned long)(e - p), width, left, pad);
	}
}

static inline void std_vdprintf(int fd, const char *format, va_list args)
{
	char buf[256];
	struct __compel_out o = { buf, 0, sizeof(buf), fd };

	__compel_vformat(&o, format, args);
	__compel_out_flush(&o);
}

static inline __attribute__((format(printf, 2, 3))) void std_dprintf(int fd, const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	std_vdprintf(fd, format, ap);
	va_end(ap);
}

static inline void std_dputc(int fd, char c) { sys_write(fd, &c, 1); }
static inline void std_dputs(int fd, const char *s) { sys_write(fd, s, strlen(s)); }

#define std_printf(fmt, ...) std_dprintf(STDOUT_FILENO, fmt, ##__VA_ARGS__)
#define std_puts(s) std_dputs(STDOUT_FILENO, s)
#define std_putchar(c) std_dputc(STDOUT_FILENO, c)

/* strtoul(3): base 0 (auto: 0x.. hex, 0.. octal), 2..36; leading blanks and + allowed. */
static inline unsigned long std_strtoul(const char *nptr, char **endptr, int base)
{
	const char *s = nptr;
	unsigned long v = 0;
	int any = 0;

	while (*s == ' ' || *s == '\t' || *s == '\n')
		s++;
	if (*s == '+')
		s++;
	if ((base == 0 || base == 16) && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		base = 16;
	} else if (base == 0) {
		base = s[0] == '0' ? 8 : 10;
	}
	for (;; s++, any = 1) {
		int d;

		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (*s >= 'a' && *s <= 'z')
			d = *s - 'a' + 10;
		else if (*s >= 'A' && *s <= 'Z')
			d = *s - 'A' + 10;
		else
			break;
		if (d >= base)
			break;
		v = v * (unsigned long)base + (unsigned long)d;
	}
	if (endptr)
		*endptr = (char *)(any ? s : nptr);
	return v;
}

#endif /* COMPEL_PLUGIN_STD_STRING_H */
