/* Policy I/O: the policy file and its drop-in directory read into the parser of policy.c, and
 * the system's user database as the resolver of names. Everything that touches a file or NSS
 * is here, so that the parser and the decisions stay pure and testable on text alone. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy.h"
#include "macro.h"
#include "units.h"

/* A group with a huge member list needs a big getgrnam_r buffer, but not a boundless one. */
#define RESOLVER_MAX_BUF (16 << 20)

/* -errno, for a call that has just failed and so set errno to a positive value. Testing the
 * result, not errno, lets clang's analyzer see that it is negative; without that it follows a
 * "success" whose out-values were never written. */
static int negative_errno(void)
{
	int r = -errno;

	return r < 0 ? r : -EIO;
}

static int oom(struct policy_parser *p, const char *file)
{
	return policy_parser_fail(p, file, -ENOMEM, "out of memory");
}

/* ---- Files ---- */

/* Read to the end: fstat's size is only a hint, since the file may change while we read. */
static int read_all(int fd, size_t hint, char **ret_text, size_t *ret_len)
{
	size_t cap = hint + 1, len = 0;
	_cleanup_free_ char *text = malloc(cap);

	if (!text)
		return -ENOMEM;
	for (;;) {
		ssize_t n;
		if (len == cap) {
			char *t;
			if (cap > POLICY_MAX_SIZE)
				return -E2BIG;
			cap = cap * 2 > POLICY_MAX_SIZE + 1 ? POLICY_MAX_SIZE + 1 : cap * 2;
			t = realloc(text, cap);
			if (!t)
				return -ENOMEM;
			text = t;
		}
		n = read(fd, text + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*ret_text = TAKE_PTR(text);
	*ret_len = len;
	return 0;
}

/* Returns -E2BIG for an over-long file and -EBADFD for anything but a regular file. */
static int read_file(int dirfd, const char *name, char **ret_text, size_t *ret_len)
{
	/* O_NONBLOCK: a FIFO put in place of the policy must not hang the daemon. */
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return negative_errno();
	if (!S_ISREG(st.st_mode))
		return -EBADFD;
	if (st.st_size > POLICY_MAX_SIZE)
		return -E2BIG;
	return read_all(fd, (size_t)st.st_size, ret_text, ret_len);
}

/* name is opened relative to dirfd; display is how messages and the policy name the file. */
static int load_file(struct policy_parser *p, int dirfd, const char *name, const char *display)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = read_file(dirfd, name, &text, &len);

	if (r == -E2BIG)
		return policy_parser_fail(p, display, r, "file is larger than %d bytes",
					  POLICY_MAX_SIZE);
	if (r == -EBADFD)
		return policy_parser_fail(p, display, -EINVAL, "not a regular file");
	if (r < 0)
		return policy_parser_fail(p, display, r, "cannot read: %s", strerror(-r));
	return policy_parser_add(p, display, text, len);
}

/* ---- The drop-in directory ---- */

struct names {
	char *v[POLICY_MAX_FILES - 1]; /* the main file is the first of POLICY_MAX_FILES */
	size_t n;
};

static void names_done(struct names *names)
{
	for (size_t i = 0; i < names->n; i++)
		free(names->v[i]);
}

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

/* Drop-ins end in ".policy"; hidden files are skipped, as editors and package managers leave
 * them behind. */
static bool is_dropin(const char *name)
{
	size_t len = strlen(name);

	return name[0] != '.' && len > 7 && strcmp(name + len - 7, ".policy") == 0;
}

static int add_name(struct policy_parser *p, struct names *names, const char *dir, const char *name)
{
	if (names->n >= ARRAY_SIZE(names->v))
		return policy_parser_fail(p, dir, -E2BIG, "too many policy files (at most %d)",
					  POLICY_MAX_FILES);
	names->v[names->n] = strdup(name);
	if (!names->v[names->n])
		return oom(p, dir);
	names->n++;
	return 0;
}

static int list_dropins(struct policy_parser *p, DIR *d, const char *dir, struct names *names)
{
	for (;;) {
		struct dirent *de;
		int r;

		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		if (!is_dropin(de->d_name))
			continue;
		r = add_name(p, names, dir, de->d_name);
		if (r < 0)
			return r;
	}
	if (errno != 0) {
		int r = negative_errno();
		return policy_parser_fail(p, dir, r, "cannot read directory: %s", strerror(-r));
	}
	return 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int open_dir(const char *dir, DIR **ret_dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return negative_errno();
	d = fdopendir(fd);
	if (!d) {
		int r = negative_errno();

		close(fd);
		return r;
	}
	*ret_dir = d; /* which now owns fd */
	return 0;
}

/* path.d/ *.policy, in byte order of their names so that "10-" sorts before "20-". */
static int load_dropins(struct policy_parser *p, const char *path)
{
	_cleanup_(names_done) struct names names = { .n = 0 };
	_cleanup_(closedirp) DIR *d = NULL;
	_cleanup_free_ char *dir = NULL;
	int r;

	if (asprintf(&dir, "%s.d", path) < 0)
		return oom(p, path);
	r = open_dir(dir, &d);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return policy_parser_fail(p, dir, r, "cannot open directory: %s", strerror(-r));
	r = list_dropins(p, d, dir, &names);
	if (r < 0)
		return r;
	qsort(names.v, names.n, sizeof(*names.v), compare_names);
	for (size_t i = 0; i < names.n; i++) {
		_cleanup_free_ char *display = NULL;
		if (asprintf(&display, "%s/%s", dir, names.v[i]) < 0)
			return oom(p, dir);
		r = load_file(p, dirfd(d), names.v[i], display);
		if (r < 0)
			return r;
	}
	return 0;
}

int policy_load(const char *path, const struct policy_resolver *resolver,
		struct policy **ret_policy, char **ret_error)
{
	_cleanup_(policy_parser_freep) struct policy_parser *p = NULL;
	int r = policy_parser_new(resolver, &p);

	if (r < 0) {
		if (ret_error)
			*ret_error = NULL; /* no memory even for the parser, let alone a message */
		return r;
	}
	/* Every failure below is recorded in the parser, and finish reports it. */
	if (load_file(p, AT_FDCWD, path, path) >= 0)
		(void)load_dropins(p, path);
	return policy_parser_finish(p, ret_policy, ret_error);
}

/* ---- The system resolver ---- */

/* A name of digits only is an id, as chown(1) takes it; (uint32_t)-1 is never a valid one. */
static int parse_id(const char *name, bool *ret_numeric, uint32_t *ret_id)
{
	size_t len = strspn(name, "0123456789");
	uint64_t v;

	*ret_numeric = len > 0 && name[len] == '\0';
	if (!*ret_numeric)
		return 0;
	if (units_parse_count(name, len, &v) < 0 || v >= UINT32_MAX)
		return -EINVAL;
	*ret_id = (uint32_t)v;
	return 0;
}

static int nss_result(int r, bool found)
{
	if (r == 0)
		return found ? 0 : -ENOENT;
	/* getpwnam_r(3): these also mean "no such name" with some NSS modules. */
	if (r == ENOENT || r == ESRCH || r == EBADF || r == EPERM)
		return -ENOENT;
	return -r;
}

/* One getpwnam_r or getgrnam_r call with buf as its scratch space: returns what the call
 * returns (a positive errno or 0), and the id when found. */
typedef int nss_lookup(const char *name, char *buf, size_t size, uint32_t *ret_id, bool *ret_found);

static int lookup_user(const char *name, char *buf, size_t size, uint32_t *ret_id, bool *ret_found)
{
	struct passwd pw, *res = NULL;
	int r = getpwnam_r(name, &pw, buf, size, &res);

	*ret_found = r == 0 && res;
	if (*ret_found)
		*ret_id = pw.pw_uid;
	return r;
}

static int lookup_group(const char *name, char *buf, size_t size, uint32_t *ret_id, bool *ret_found)
{
	struct group gr, *res = NULL;
	int r = getgrnam_r(name, &gr, buf, size, &res);

	*ret_found = r == 0 && res;
	if (*ret_found)
		*ret_id = gr.gr_gid;
	return r;
}

/* An id as is, or a name through NSS with a buffer grown until the record fits. sc_hint is
 * the sysconf name of the buffer size the C library suggests. */
static int system_lookup(const char *name, nss_lookup *lookup, int sc_hint, uint32_t *ret_id)
{
	long hint = sysconf(sc_hint);
	bool numeric;
	int r = parse_id(name, &numeric, ret_id);

	if (r < 0 || numeric)
		return r;
	for (size_t size = hint > 0 && hint < RESOLVER_MAX_BUF ? (size_t)hint : 1024;
	     size <= RESOLVER_MAX_BUF; size *= 2) {
		/* The record's strings point into buf; the id copied out does not. */
		_cleanup_free_ char *buf = malloc(size);
		bool found = false;
		uint32_t id = 0;

		if (!buf)
			return -ENOMEM;
		r = lookup(name, buf, size, &id, &found);
		if (r == ERANGE)
			continue;
		r = nss_result(r, found);
		if (r >= 0)
			*ret_id = id;
		return r;
	}
	return -ERANGE;
}

static int system_user(const char *name, uint32_t *ret_uid)
{
	return system_lookup(name, lookup_user, _SC_GETPW_R_SIZE_MAX, ret_uid);
}

static int system_group(const char *name, uint32_t *ret_gid)
{
	return system_lookup(name, lookup_group, _SC_GETGR_R_SIZE_MAX, ret_gid);
}

const struct policy_resolver policy_system_resolver = {
	.user = system_user,
	.group = system_group,
};
