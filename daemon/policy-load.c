/* Policy I/O: the policy file and its drop-in directory read into the parser of policy.c, and
 * the system's user database as the resolver of names. Everything that touches a file or NSS
 * is here, so that the parser and the decisions stay pure and testable on text alone. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
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

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* -errno, for a call that has just failed and so set errno to a positive value. Testing the
 * result, not errno, lets clang's analyzer see that it is negative; without that it follows a
 * "success" whose out-values were never written. */
static int negative_errno(void)
{
	int r = -errno;

	return r < 0 ? r : -EIO;
}

__attribute__((format(printf, 1, 2))) static char *format_message(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static int oom(struct policy_parser *p, const char *file)
{
	return policy_parser_fail(p, file, -ENOMEM, "out of memory");
}

int policy_read_fd(int fd, size_t hint, char **ret_text, size_t *ret_len)
{
	size_t cap = hint + 1, len = 0;
	_cleanup_free_ char *text = malloc(cap + 1);

	if (!text)
		return -ENOMEM;
	for (;;) {
		ssize_t n;
		if (len == cap) {
			char *t;
			if (cap > POLICY_MAX_SIZE)
				return -E2BIG;
			cap = cap * 2 > POLICY_MAX_SIZE + 1 ? POLICY_MAX_SIZE + 1 : cap * 2;
			t = realloc(text, cap + 1);
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
	text[len] = '\0';
	*ret_text = TAKE_PTR(text);
	*ret_len = len;
	return 0;
}

/* What one load is asked to do. */
struct loader {
	struct policy_parser *p;
	unsigned flags;		   /* POLICY_LOAD_* */
	const char *override_file; /* NULL: none */
	const char *override_text;
	size_t override_len;
};

/* ---- Who could have written the policy (sshd's StrictModes) ---- */

/* A problem with who could have written display: an error when strict (-EPERM), otherwise a
 * warning. Returns -ENOMEM when not even that could be recorded, else 0. */
__attribute__((format(printf, 3, 4))) static int
untrusted(const struct loader *ld, const char *display, const char *fmt, ...)
{
	char msg[PATH_MAX + 256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ld->flags & POLICY_LOAD_STRICT)
		return policy_parser_fail(ld->p, display, -EPERM, "%s", msg) == -ENOMEM ? -ENOMEM
											: 0;
	return policy_parser_warn(ld->p, display, "%s", msg);
}

/* A file or directory of the policy must be owned by root or by whoever loads it (the
 * daemon's user), and writable by nobody else: anyone who can change it can grant themselves
 * any device at the next reload. The stat comes from the fd that is read, so the file checked
 * is the file read. */
static int check_trust(const struct loader *ld, const char *display, const struct stat *st)
{
	unsigned mode = (unsigned)st->st_mode & 07777;
	bool group = mode & S_IWGRP, others = mode & S_IWOTH;
	uid_t euid = geteuid();
	int r = 0;

	if (st->st_uid != 0 && st->st_uid != euid)
		r = untrusted(ld, display, "owned by uid %u, not by root%s; fix: chown root %s",
			      (unsigned)st->st_uid, euid ? " or the loading user" : "", display);
	if (r == 0 && (group || others))
		r = untrusted(ld, display, "writable by %s (mode %04o); fix: chmod %s %s",
			      group && others ? "its group and others"
			      : group	      ? "its group"
					      : "others",
			      mode,
			      group && others ? "go-w"
			      : group	      ? "g-w"
					      : "o-w",
			      display);
	return r;
}

/* ---- Files ---- */

/* Returns -E2BIG for an over-long file and -EBADFD for anything but a regular file. */
int policy_open_file(int dirfd, const char *name, int flags, struct stat *ret_st)
{
	_cleanup_close_ int fd =
	    openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | flags);

	if (fd < 0 || fstat(fd, ret_st) < 0)
		return negative_errno();
	if (!S_ISREG(ret_st->st_mode))
		return -EBADFD;
	if (ret_st->st_size > POLICY_MAX_SIZE)
		return -E2BIG;
	return TAKE_FD(fd);
}

static int read_file(const struct loader *ld, int dirfd, const char *name, const char *display,
		     char **ret_text, size_t *ret_len)
{
	struct stat st;
	_cleanup_close_ int fd = policy_open_file(dirfd, name, 0, &st);
	int r;

	if (fd < 0)
		return fd;
	r = check_trust(ld, display, &st);
	if (r < 0)
		return r;
	return policy_read_fd(fd, (size_t)st.st_size, ret_text, ret_len);
}

/* name is opened relative to dirfd; display is how messages and the policy name the file.
 * The override, if it is this file, is parsed instead, and nothing is read. */
static int load_file(const struct loader *ld, int dirfd, const char *name, const char *display)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r;

	if (ld->override_file && strcmp(ld->override_file, display) == 0)
		return policy_parser_add(ld->p, display, ld->override_text, ld->override_len);
	r = read_file(ld, dirfd, name, display, &text, &len);
	if (r == -E2BIG)
		return policy_parser_fail(ld->p, display, r, "file is larger than %d bytes",
					  POLICY_MAX_SIZE);
	if (r == -EBADFD)
		return policy_parser_fail(ld->p, display, -EINVAL, "not a regular file");
	if (r == -ENOMEM)
		return oom(ld->p, display);
	if (r < 0)
		return policy_parser_fail(ld->p, display, r, "cannot read: %s", strerror(-r));
	return policy_parser_add(ld->p, display, text, len);
}

/* ---- The drop-in directory ---- */

/* path.d, open, and the names of its drop-ins in load order. */
struct dropins {
	char *dir;
	DIR *d;			       /* NULL: there is no such directory */
	char *v[POLICY_MAX_FILES - 1]; /* the main file is the first of POLICY_MAX_FILES */
	size_t n;
};

static void dropins_done(struct dropins *ds)
{
	for (size_t i = 0; i < ds->n; i++)
		free(ds->v[i]);
	if (ds->d)
		closedir(ds->d);
	free(ds->dir);
}

/* Drop-ins end in ".policy"; hidden files are skipped, as editors and package managers leave
 * them behind. */
static bool is_dropin(const char *name)
{
	size_t len = strlen(name);

	return name[0] != '.' && !strchr(name, '/') && len > 7 &&
	       strcmp(name + len - 7, ".policy") == 0;
}

static int add_name(struct dropins *ds, const char *name, const char **ret_what)
{
	for (size_t i = 0; i < ds->n; i++)
		if (strcmp(ds->v[i], name) == 0)
			return 0; /* the override, already there */
	if (ds->n >= ARRAY_SIZE(ds->v)) {
		*ret_what = "too many policy files (at most " STRINGIFY(POLICY_MAX_FILES) ")";
		return -E2BIG;
	}
	ds->v[ds->n] = strdup(name);
	if (!ds->v[ds->n])
		return -ENOMEM;
	ds->n++;
	return 0;
}

static int read_names(struct dropins *ds, const char **ret_what)
{
	for (;;) {
		struct dirent *de;
		int r;

		errno = 0;
		de = readdir(ds->d);
		if (!de)
			break;
		if (!is_dropin(de->d_name))
			continue;
		r = add_name(ds, de->d_name, ret_what);
		if (r < 0)
			return r;
	}
	if (errno != 0) {
		*ret_what = "cannot read directory";
		return negative_errno();
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

/* The drop-in that the override names, if it is one: "path.d/NAME.policy". */
static const char *override_dropin(const struct dropins *ds, const char *override_file)
{
	size_t len = strlen(ds->dir);

	if (!override_file || strncmp(override_file, ds->dir, len) != 0 ||
	    override_file[len] != '/' || !is_dropin(override_file + len + 1))
		return NULL;
	return override_file + len + 1;
}

/* path.d/ *.policy, in byte order of their names so that "10-" sorts before "20-", with the
 * override's name among them even if it is not on disk yet. A missing directory is no
 * drop-ins. On failure, *ret_what says what failed (for a message about ds->dir). */
static int list_dropins(const char *path, const char *override_file, struct dropins *ds,
			const char **ret_what)
{
	const char *extra;
	int r;

	*ret_what = "out of memory";
	if (asprintf(&ds->dir, "%s.d", path) < 0) {
		ds->dir = NULL;
		return -ENOMEM;
	}
	r = open_dir(ds->dir, &ds->d);
	if (r < 0 && r != -ENOENT) {
		*ret_what = "cannot open directory";
		return r;
	}
	if (r == -ENOENT)
		r = 0;
	else
		r = read_names(ds, ret_what);
	extra = override_dropin(ds, override_file);
	if (r >= 0 && extra)
		r = add_name(ds, extra, ret_what);
	if (r < 0)
		return r;
	qsort(ds->v, ds->n, sizeof(*ds->v), compare_names);
	return 0;
}

static int load_dropins(const struct loader *ld, const char *path)
{
	_cleanup_(dropins_done) struct dropins ds = { .n = 0 };
	const char *what;
	struct stat st;
	int r = list_dropins(path, ld->override_file, &ds, &what);

	if (r == -ENOMEM)
		return oom(ld->p, path);
	if (r < 0 && r != -E2BIG)
		return policy_parser_fail(ld->p, ds.dir, r, "%s: %s", what, strerror(-r));
	if (r < 0)
		return policy_parser_fail(ld->p, ds.dir, r, "%s", what);
	if (ds.d && fstat(dirfd(ds.d), &st) < 0) {
		r = negative_errno();
		return policy_parser_fail(ld->p, ds.dir, r, "cannot open directory: %s",
					  strerror(-r));
	}
	if (ds.d && check_trust(ld, ds.dir, &st) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < ds.n; i++) {
		_cleanup_free_ char *display = NULL;
		if (asprintf(&display, "%s/%s", ds.dir, ds.v[i]) < 0)
			return oom(ld->p, ds.dir);
		/* Without the directory, only the override can be read. */
		r = load_file(ld, ds.d ? dirfd(ds.d) : -1, ds.v[i], display);
		if (r == -ENOMEM)
			return r;
	}
	return 0;
}

/* The main file, opened relative to its directory, whose trust is checked on the same fd. */
static int load_main(const struct loader *ld, const char *path)
{
	const char *slash = strrchr(path, '/');
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int fd = -1;
	const char *base;
	struct stat st;

	if (!slash)
		dir = strdup(".");
	else
		dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
	if (!dir)
		return oom(ld->p, path);
	/* "dir/" names the directory itself, which is then refused as not a regular file. */
	base = !slash ? path : slash[1] ? slash + 1 : ".";
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = negative_errno();
		if (ld->override_file && strcmp(ld->override_file, path) == 0)
			return load_file(ld, -1, base, path);
		return policy_parser_fail(ld->p, path, r, "cannot read: %s", strerror(-r));
	}
	if (check_trust(ld, dir, &st) < 0)
		return -ENOMEM;
	return load_file(ld, fd, base, path);
}

/* A parser for ld, fed the main file and then the drop-ins: every failure is recorded in
 * it, and finish reports them. The drop-ins are read even after an error in the main file,
 * so that one run shows every error. */
static int load_into(struct loader *ld, const struct policy_resolver *resolver, const char *path,
		     struct policy_parser **ret_parser)
{
	int r = policy_parser_new(resolver, &ld->p);

	if (r < 0)
		return r;
	if (load_main(ld, path) != -ENOMEM)
		(void)load_dropins(ld, path);
	*ret_parser = ld->p;
	return 0;
}

int policy_load_ex(const char *path, const struct policy_resolver *resolver,
		   const struct policy_load_opts *opts, struct policy **ret_policy,
		   struct policy_diags *ret_diags)
{
	_cleanup_(policy_parser_freep) struct policy_parser *p = NULL;
	struct loader ld = { .flags = opts ? opts->flags : 0 };
	int r;

	if (opts && opts->override_file && opts->override_text) {
		ld.override_file = opts->override_file;
		ld.override_text = opts->override_text;
		ld.override_len = opts->override_len;
	}
	r = load_into(&ld, resolver, path, &p);
	if (r < 0) {
		if (ret_diags)
			*ret_diags = (struct policy_diags){ .v = NULL };
		return r;
	}
	return policy_parser_finish_ex(p, ret_policy, ret_diags);
}

int policy_load(const char *path, const struct policy_resolver *resolver,
		struct policy **ret_policy, char **ret_error)
{
	_cleanup_(policy_parser_freep) struct policy_parser *p = NULL;
	struct loader ld = { .flags = POLICY_LOAD_STRICT };
	int r = load_into(&ld, resolver, path, &p);

	if (r < 0) {
		if (ret_error)
			*ret_error = NULL; /* no memory even for the parser, let alone a message */
		return r;
	}
	return policy_parser_finish(p, ret_policy, ret_error);
}

void policy_files_free(char **files, size_t n)
{
	if (!files)
		return;
	for (size_t i = 0; i < n; i++)
		free(files[i]);
	free(files);
}

int policy_list_files(const char *path, char ***ret_files, size_t *ret_n, char **ret_error)
{
	_cleanup_(dropins_done) struct dropins ds = { .n = 0 };
	const char *what;
	char **files;
	int r = list_dropins(path, NULL, &ds, &what);

	if (r < 0) {
		if (ret_error)
			*ret_error = r == -ENOMEM ? NULL
				     : r == -E2BIG
					 ? format_message("%s: %s", ds.dir, what)
					 : format_message("%s: %s: %s", ds.dir, what, strerror(-r));
		return r;
	}
	files = calloc(ds.n + 1, sizeof(*files));
	if (!files || !(files[0] = strdup(path)))
		goto oom;
	for (size_t i = 0; i < ds.n; i++)
		if (asprintf(&files[i + 1], "%s/%s", ds.dir, ds.v[i]) < 0) {
			files[i + 1] = NULL;
			goto oom;
		}
	*ret_files = files;
	*ret_n = ds.n + 1;
	return 0;
oom:
	policy_files_free(files, files ? ds.n + 1 : 0);
	if (ret_error)
		*ret_error = NULL;
	return -ENOMEM;
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
