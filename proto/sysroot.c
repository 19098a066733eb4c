/* Files under a root prefix (sysroot.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "sysroot.h"

static int vpath(const char *root, char *buf, size_t len, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static int vpath(const char *root, char *buf, size_t len, const char *fmt, va_list ap)
{
	int n = snprintf(buf, len, "%s", root ? root : "");

	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	int m = vsnprintf(buf + n, len - (size_t)n, fmt, ap);
	return m < 0 || (size_t)m >= len - (size_t)n ? -ENAMETOOLONG : 0;
}

int sysroot_path(const char *root, char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vpath(root, buf, len, fmt, ap);
	va_end(ap);
	return r;
}

int sysroot_read_file(const char *root, char *buf, size_t len, const char *fmt, ...)
{
	char p[SYSROOT_PATH_MAX];
	_cleanup_close_ int fd = -1;
	va_list ap;
	ssize_t n;
	int r;

	va_start(ap, fmt);
	r = vpath(root, p, sizeof(p), fmt, ap);
	va_end(ap);
	if (r < 0)
		return r;
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		return -errno;
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = '\0';
	return (int)n;
}

int sysroot_read_link(const char *root, char *buf, size_t len, const char *fmt, ...)
{
	char p[SYSROOT_PATH_MAX], target[SYSROOT_PATH_MAX];
	const char *base;
	va_list ap;
	ssize_t n;
	int r;

	va_start(ap, fmt);
	r = vpath(root, p, sizeof(p), fmt, ap);
	va_end(ap);
	if (r < 0)
		return r;
	n = readlink(p, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	base = strrchr(target, '/');
	return sysroot_copy(buf, len, base ? base + 1 : target);
}

int sysroot_copy(char *dst, size_t len, const char *src)
{
	size_t n = strnlen(src, len);

	if (n == len) {
		memcpy(dst, src, len - 1);
		dst[len - 1] = '\0';
		return -ENAMETOOLONG;
	}
	memcpy(dst, src, n + 1);
	return 0;
}
