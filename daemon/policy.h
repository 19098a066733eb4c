/* Policy: which devices p2pbufd owns and who may export what from them. Rules only allow
 * (default deny), so their order never matters. The format is described in
 * policy/p2pbuf-policy.5.
 *
 * Two files implement this header. policy.c is pure: the parser, which resolves names once
 * through the resolver it is given, and the checks, which look only at the data given.
 * policy-load.c does the I/O: it reads the policy file and its drop-ins into the parser
 * (policy_load) and resolves names through the system's user database
 * (policy_system_resolver). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "range.h"

#define POLICY_MAX_BARS 6
#define POLICY_MAX_NAME 64	  /* bytes in a device name */
#define POLICY_MAX_SIZE (1 << 20) /* bytes in one policy file */
#define POLICY_MAX_DEVICES 256
#define POLICY_MAX_RULES 4096
#define POLICY_DEFAULT_REVOKE_DEADLINE_MS 5000
#define POLICY_MAX_FILES 128 /* the main file and its .d/ drop-ins together */

enum policy_subject_kind {
	POLICY_USER,
	POLICY_GROUP,
};

struct policy_subject {
	enum policy_subject_kind kind;
	uint32_t id; /* uid or gid, resolved at load time */
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
};

/* Who is asking: taken from the connection's credentials once, at accept. */
struct policy_peer {
	uid_t uid;
	gid_t gid;
	const gid_t *groups; /* supplementary groups */
	size_t n_groups;
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
 * and parse them as one policy. Errors as for policy_parse, naming the file they are in;
 * one that concerns a whole file reads "file: message" (cannot read, not a regular file,
 * too large) and returns that -errno (-EINVAL for a file that is not a regular one). */
int policy_load(const char *path, const struct policy_resolver *resolver,
		struct policy **ret_policy, char **ret_error);

/* Several files parsed as one policy, for callers that get the text themselves (policy_load
 * reads files; an editor may hold them in memory). A rule may name a device from any file, so
 * rules are resolved only at finish. The first error, from the text or from the caller
 * through policy_parser_fail, is the one finish reports; after it, add reads nothing more. */
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
 * -errno of the first error, which is kept for finish. */
int policy_parser_add(struct policy_parser *parser, const char *file, const char *text, size_t len);

/* Record an error about file as a whole ("file: message"), such as one reading it, unless an
 * earlier error is already recorded. Returns err, a negative errno, for the caller to pass up. */
__attribute__((format(printf, 4, 5))) int
policy_parser_fail(struct policy_parser *parser, const char *file, int err, const char *fmt, ...);

/* Resolve every rule's device and hand over the policy; or return the first error as for
 * policy_parse. Call it once; afterwards only policy_parser_free. */
int policy_parser_finish(struct policy_parser *parser, struct policy **ret_policy,
			 char **ret_error);

void policy_free(struct policy *policy);

/* The index of the device called name, or -ENOENT. */
int policy_find_device(const struct policy *policy, const char *name);

/* The next rule after `after` (NULL: the first) that lets peer export ranges[0..n) of bar of
 * device index `device`, or NULL when no further rule allows it. */
const struct policy_rule *policy_match_export(const struct policy *policy,
					      const struct policy_peer *peer, size_t device,
					      unsigned bar, const struct range *ranges, size_t n,
					      const struct policy_rule *after);

/* Whether peer is an admin (reset, revoke, see everything). */
bool policy_is_admin(const struct policy *policy, const struct policy_peer *peer);

/* Whether peer may list and watch everything (admins may too). */
bool policy_is_observer(const struct policy *policy, const struct policy_peer *peer);
