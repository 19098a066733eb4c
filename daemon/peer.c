#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer.h"

struct peer *peer_new(uid_t uid, gid_t gid, pid_t pid, const gid_t *groups, size_t n_groups)
{
	struct peer *p = malloc(sizeof(*p) + n_groups * sizeof(gid_t));

	if (!p)
		return NULL;
	p->refs = 1;
	p->pid = pid;
	p->unit = NULL;
	p->audit = (struct peer_audit){ 0 };
	p->view = (struct policy_peer){ .uid = uid, .gid = gid, .n_groups = n_groups };
	if (n_groups)
		memcpy(p->groups, groups, n_groups * sizeof(gid_t));
	p->view.groups = p->groups;
	return p;
}

void peer_set_unit(struct peer *p, char *unit)
{
	free(p->unit);
	p->unit = unit;
	p->view.unit = unit;
}

struct peer *peer_ref(struct peer *p)
{
	p->refs++;
	return p;
}

void peer_unref(struct peer *p)
{
	if (p && --p->refs == 0) {
		free(p->unit);
		free(p);
	}
}

void peer_describe(const struct peer *p, char *buf, size_t len)
{
	int n = snprintf(buf, len, "uid %u gid %u", (unsigned)p->view.uid, (unsigned)p->view.gid);

	for (size_t i = 0; i < p->view.n_groups && n > 0 && (size_t)n < len; i++)
		n += snprintf(buf + n, len - n, "%s%u", i ? "," : " groups ",
			      (unsigned)p->view.groups[i]);
}

/* The system unit a cgroup v2 path lies in: its first component that is not a slice
 * ("/system.slice/spdk-tgt.service" gives "spdk-tgt.service"; a user's session or service
 * gives "session-2.scope" or "user@1000.service"), or NULL. */
char *peer_unit_of_cgroup(const char *path)
{
	while (*path == '/')
		path++;
	while (*path && *path != '\n') {
		size_t n = strcspn(path, "/\n");
		if (n > 6 && strncmp(path + n - 6, ".slice", 6) != 0)
			return strndup(path, n);
		path += n;
		while (*path == '/')
			path++;
	}
	return NULL;
}
