/* Policy: which devices p2pbufd owns and who may export what from them. Rules only allow
 * (default deny), so their order never matters. The format is described in
 * policy/p2pbuf-policy.5.
 *
 * Two files implement this header, linked as libpolicy by the daemon and the CLI alike, so that
 * `p2pbuf-client policy check` judges a policy by the daemon's own code. policy.c is pure: the
 * parser, which resolves names once through the resolver it is given and reports every error
 * it finds, and the checks, which look only at the data given. policy-load.c does the I/O: it
 * reads the policy file and its drop-ins into the parser (policy_load), checks who could have
 * written them, and resolves names through the system's user database
 * (policy_system_resolver). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "range.h"

#define POLICY_MAX_BARS 6
#define POLICY_MAX_NAME 64	  /* bytes in a device name */
#define POLICY_MAX_SIZE (8 << 20) /* bytes in one policy file: 65,536 long rules fit */
#define POLICY_MAX_DEVICES 4096
#define POLICY_MAX_RULES 65536 /* allow rules; also admin lines, and observer lines */
#define POLICY_DEFAULT_REVOKE_DEADLINE_MS 5000
#define POLICY_MAX_FILES 128	 /* the main file and its .d/ drop-ins together */
#define POLICY_MAX_DIAGS 100	 /* errors and warnings kept from one parse; the rest are counted */
#define POLICY_MAX_UNIT_NAME 255 /* bytes in a systemd unit name, as systemd limits them */

enum policy_subject_kind {
	POLICY_USER,
	POLICY_GROUP,
	POLICY_UNIT, /* a systemd unit, matched by name against the peer's */
};

struct policy_subject {
	enum policy_subject_kind kind;
	uint32_t id;	  /* uid or gid, resolved at load time; 0 for a unit */
	const char *name; /* as the file spells it ("alice", "1000", "db.service"); owned by
			     the policy */
};

enum policy_device_kind {
	POLICY_DEVICE_SIM, /* simulated device (memfds, not dma-bufs) */
	POLICY_DEVICE_PCI, /* a real device bound to vfio-pci */
};

enum policy_revocation {
	POLICY_REVOKE_ENFORCE,	   /* past the deadline, cycle the device */
	POLICY_REVOKE_NOTIFY_ONLY, /* past the deadline, only report lingering holders */
};

enum policy_on_error {
	POLICY_ON_ERROR_REPORT, /* an ERR event is logged and reported */
	POLICY_ON_ERROR_CYCLE,	/* an ERR event also cycles the device */
};

struct policy_sim_msix {
	bool present;
	unsigned bar;
	struct range range;
};

struct policy_device {
	char name[POLICY_MAX_NAME + 1];
	enum policy_device_kind kind;
	char pci[16];				/* PCI: canonical "dddd:bb:dd.f" (lower case) */
	uint64_t sim_bar_size[POLICY_MAX_BARS]; /* sim: 0 = no such BAR */
	struct policy_sim_msix sim_msix_table;	/* sim only */
	struct policy_sim_msix sim_msix_pba;	/* sim only */
	uint64_t sim_cycle_delay_ms;		/* sim: how long a close/reopen takes (tests) */
	uint64_t revoke_deadline_ms;		/* how long a holder has to let go */
	enum policy_revocation revocation;
	enum policy_on_error on_error;
	const char *file; /* where it was declared */
	unsigned line;
};

struct policy_rule {
	struct policy_subject who;
	size_t device;	/* index into policy.devices */
	int bar;	/* -1: any BAR */
	bool has_range; /* requested ranges must lie inside range */
	struct range range;
	unsigned max_leases; /* live leases under this rule, all holders; 0 = no cap */
	uint64_t max_bytes;  /* bytes of live leases under this rule, all holders; 0 = no cap */
	uint64_t ttl_ms;     /* 0 = leases do not expire */
	const char *file;
	unsigned line;
	char where[64]; /* "file:line", for replies and audit lines */
};

struct policy {
	char **files; /* every file read, owned; rules point at these names */
	size_t n_files;
	struct policy_device *devices;
	size_t n_devices;
	struct policy_rule *rules;
	size_t n_rules;
	struct policy_subject *admins;
	size_t n_admins;
	struct policy_subject *observers;
	size_t n_observers;
	/* The parser's indexes, read by policy_find_device and policy_match_export: */
	char **names; /* every subject's spelling, owned; subjects point at these */
	size_t n_names;
	size_t *device_slots; /* open-addressed hash of device names: index + 1, 0 = empty */
	size_t n_device_slots;
	size_t *first_rule; /* per device: its first rule in file order; SIZE_MAX: none */
	size_t *next_rule;  /* per rule: the next rule of the same device; SIZE_MAX: none */
	/* A decision looks at the user rules for the peer's uid on the device and at the device's
	 * other (group, unit) rules, merged in file order: */
	size_t *user_slots; /* hash of (device, uid): the first such user rule + 1, 0 = empty */
	size_t n_user_slots;
	size_t *next_user;   /* per user rule: the next one of the same device and uid */
	size_t *first_other; /* per device: its first group or unit rule */
	size_t *next_other;  /* per rule: the next group or unit rule of the same device after it */
};

/* One error or warning, with where it is. */
struct policy_diag {
	char *file;	 /* as the error names it */
	unsigned line;	 /* 0: the file as a whole */
	unsigned column; /* 1-based; 0: the line as a whole */
	char *message;	 /* without the "file:line:column: " prefix */
	char *text;	 /* the source line (no newline, cut at 256 bytes or a NUL byte), or
			    NULL; it may hold the control character an error is about */
	bool warning;	 /* a warning (see POLICY_LOAD_STRICT); the policy still loads */
};

/* The diagnostics of one parse, sorted by file (in load order), line and column. At most
 * POLICY_MAX_DIAGS are kept; dropped counts the others. */
struct policy_diags {
	struct policy_diag *v;
	size_t n;
	size_t dropped;
};

#define POLICY_DIAG_TEXT_MAX 256

/* Frees what d holds and empties it; d itself is the caller's. Accepts an empty one. */
void policy_diags_free(struct policy_diags *d);

/* The diagnostic as "file:line:column: message" ("file: message" for a whole file), the form
 * the single-string API reports; malloc'd, NULL when out of memory. */
char *policy_diag_format(const struct policy_diag *diag);

/* Who is asking: taken from the connection's credentials once, at accept. */
struct policy_peer {
	uid_t uid;
	gid_t gid;
	const gid_t *groups; /* supplementary groups */
	size_t n_groups;
	const char *unit; /* its systemd unit ("db.service"); NULL: unknown, never matches */
};

/* Resolves user and group names (or numbers) when a policy loads. Return 0 or -ENOENT. */
struct policy_resolver {
	int (*user)(const char *name, uint32_t *ret_uid);
	int (*group)(const char *name, uint32_t *ret_gid);
};

/* The resolver over the system's user database (getpwnam_r/getgrnam_r). */
extern const struct policy_resolver policy_system_resolver;

/* Parse text (len bytes) read from file into a new policy. On failure returns -EINVAL (or
 * -E2BIG, -ENOMEM) and sets *ret_error (when ret_error is not NULL) to a malloc'd
 * "file:line:column: message", or to NULL when memory ran out before one could be made. */
int policy_parse(const char *file, const char *text, size_t len,
		 const struct policy_resolver *resolver, struct policy **ret_policy,
		 char **ret_error);

/* Read path, then every path.d/ *.policy file in lexical order (missing directory is fine),
 * and parse them as one policy, strictly (POLICY_LOAD_STRICT: what the daemon loads must be
 * safe from other users). Errors as for policy_parse, naming the file they are in; one that
 * concerns a whole file reads "file: message" (cannot read, not a regular file, too large,
 * writable by others) and returns that -errno (-EINVAL for a file that is not a regular one,
 * -EPERM for one that others could have written). */
int policy_load(const char *path, const struct policy_resolver *resolver,
		struct policy **ret_policy, char **ret_error);

/* Ownership and mode problems (a file or directory of the policy not owned by root or the
 * caller's euid, or writable by its group or others) are errors; without it, warnings. */
#define POLICY_LOAD_STRICT 1u

/* Options of policy_load_ex; NULL means none. */
struct policy_load_opts {
	unsigned flags;		   /* POLICY_LOAD_* */
	const char *override_file; /* this file's text is taken from below, not the disk; named as
				      policy_list_files names it, and it need not exist yet */
	const char *override_text; /* (an editor's pending change); NULL: none */
	size_t override_len;
};

/* policy_load with every diagnostic: ret_diags (when not NULL) gets the errors and the
 * warnings, also on success (warnings only); the caller frees it with policy_diags_free.
 * Returns 0 or the -errno of the first error; -ENOMEM may leave the diagnostics incomplete. */
int policy_load_ex(const char *path, const struct policy_resolver *resolver,
		   const struct policy_load_opts *opts, struct policy **ret_policy,
		   struct policy_diags *ret_diags);

/* The files a policy at path consists of, in load order: path, then path.d/ *.policy in
 * lexical order (the names policy_load reads, whether or not path exists yet). ret_files is
 * a malloc'd array of ret_n malloc'd names. On failure (-ENOMEM, -E2BIG, or the -errno of
 * opening or reading path.d) sets *ret_error (when not NULL) to "file: message" or NULL. */
int policy_list_files(const char *path, char ***ret_files, size_t *ret_n, char **ret_error);

/* Read fd to its end (hint: the size fstat said, which the file may outgrow while it is read)
 * into a malloc'd, NUL-terminated text of *ret_len bytes; -E2BIG past POLICY_MAX_SIZE. The
 * loader's reader, for an editor that reads the same files. */
int policy_read_fd(int fd, size_t hint, char **ret_text, size_t *ret_len);

/* Open a policy file (name relative to dirfd, or AT_FDCWD) for policy_read_fd: read-only,
 * O_NONBLOCK (a FIFO put in the policy's place hangs nobody) and the extra open flags given;
 * *ret_st is its fstat. Returns the fd, -EBADFD for anything but a regular file, -E2BIG for
 * one larger than POLICY_MAX_SIZE, or another -errno. */
int policy_open_file(int dirfd, const char *name, int flags, struct stat *ret_st);

/* Frees what policy_list_files returned. Accepts NULL. */
void policy_files_free(char **files, size_t n);

/* Several files parsed as one policy, for callers that get the text themselves (policy_load
 * reads files; an editor may hold them in memory). A rule may name a device from any file, so
 * a rule read before its device is resolved at finish. Every error is kept, from the text or
 * from the caller through policy_parser_fail: a line with an error is dropped and parsing
 * goes on at the next one, so that finish can report them all (up to POLICY_MAX_DIAGS).
 * Only running out of memory stops it: add then reads nothing more. */
struct policy_parser;

/* A parser for a new, empty policy; -ENOMEM. */
int policy_parser_new(const struct policy_resolver *resolver, struct policy_parser **ret_parser);

/* Frees the parser and whatever policy it has not handed over. Accepts NULL. */
void policy_parser_free(struct policy_parser *parser);

static inline void policy_parser_freep(struct policy_parser **parser)
{
	policy_parser_free(*parser);
}

/* Parse text (len bytes) of file after every file added before it. Returns 0, or the
 * -errno of the first error found so far (in this file or an earlier one); errors are kept
 * for finish. */
int policy_parser_add(struct policy_parser *parser, const char *file, const char *text, size_t len);

/* Record an error about file as a whole ("file: message"), such as one reading it, unless an
 * earlier error is already recorded. Returns err, a negative errno, for the caller to pass up. */
__attribute__((format(printf, 4, 5))) int
policy_parser_fail(struct policy_parser *parser, const char *file, int err, const char *fmt, ...);

/* Record a warning about file as a whole ("file: message"); the policy still loads. Returns
 * 0, or -ENOMEM when not even that could be recorded. */
__attribute__((format(printf, 3, 4))) int
policy_parser_warn(struct policy_parser *parser, const char *file, const char *fmt, ...);

/* Resolve every rule's device and hand over the policy; or return the first error as for
 * policy_parse. Call it once; afterwards only policy_parser_free. */
int policy_parser_finish(struct policy_parser *parser, struct policy **ret_policy,
			 char **ret_error);

/* policy_parser_finish with every diagnostic instead of the first error: *ret_diags (when
 * not NULL) gets the errors and warnings, sorted, on success (warnings) and failure alike. */
int policy_parser_finish_ex(struct policy_parser *parser, struct policy **ret_policy,
			    struct policy_diags *ret_diags);

void policy_free(struct policy *policy);

/* The index of the device called name, or -ENOENT. A hash lookup. */
int policy_find_device(const struct policy *policy, const char *name);

/* The next rule after `after` (NULL: the first) that lets peer export ranges[0..n) of bar of
 * device index `device`, or NULL when no further rule allows it. Only that device's rules
 * are walked, in file order. */
const struct policy_rule *policy_match_export(const struct policy *policy,
					      const struct policy_peer *peer, size_t device,
					      unsigned bar, const struct range *ranges, size_t n,
					      const struct policy_rule *after);

/* Why an export is allowed or not, most specific first: the device is not in the policy; no
 * rule names it; no rule of it matches the peer; none of the peer's covers the BAR; the
 * ranges (n == 0: the whole BAR) lie outside every rule that covers the BAR. */
enum policy_verdict {
	POLICY_ALLOWED,
	POLICY_NO_DEVICE,
	POLICY_NO_RULE_FOR_DEVICE,
	POLICY_NO_RULE_FOR_PEER,
	POLICY_NO_RULE_FOR_BAR,
	POLICY_RANGE_OUTSIDE,
};

/* Why peer may or may not export ranges[0..n) of bar of the device called name: the
 * verdict, and in *ret_rule (when not NULL) the allowing rule or the nearest one that failed
 * (the device's first rule, the peer's first rule of it, or its first rule of the BAR; NULL
 * when the device has no rule). A sentence for a log or a reply goes into msg (msglen bytes,
 * cut if longer, never overrun), such as "no rule for uid 1000 (user alice), gid 1000, groups
 * 2000, no known unit on device nvme0; its rules: /etc/p2pbuf/policy:12 (user bob), ...": it
 * names the peer as the policy sees it and lists up to 5 rules. Decides as
 * policy_match_export does, so that the explanation cannot disagree with the grant path,
 * and looks only at the device's rules. */
enum policy_verdict policy_explain_export(const struct policy *policy,
					  const struct policy_peer *peer, const char *device,
					  unsigned bar, const struct range *ranges, size_t n,
					  const struct policy_rule **ret_rule, char *msg,
					  size_t msglen);

/* Whether peer is an admin (reset, revoke, see everything). */
bool policy_is_admin(const struct policy *policy, const struct policy_peer *peer);

/* Whether peer may list and watch everything (admins may too). */
bool policy_is_observer(const struct policy *policy, const struct policy_peer *peer);
