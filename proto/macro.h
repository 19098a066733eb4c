/* Cleanup and ownership helpers shared by p2pbufd, libp2pbuf and the CLI: one definition, so
 * that a cleanup behaves the same wherever it is used. Destructors accept empty values. */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* free(*p); for _cleanup_free_. */
static inline void freep(void *p)
{
	free(*(void **)p);
}

/* Close *fd if it is open and mark it closed. errno is kept, so that an error path can clean
 * up and still report the errno that sent it there. */
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
		*fd = -1;
	}
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Hand over ownership: evaluate to the value and leave the variable empty. */
#define TAKE_FD(fd)                                                                                \
	({                                                                                         \
		int _fd_ = (fd);                                                                   \
		(fd) = -1;                                                                         \
		_fd_;                                                                              \
	})
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _p_ = (p);                                                           \
		(p) = NULL;                                                                        \
		_p_;                                                                               \
	})
