/* libFuzzer target for the policy parser: any input, as one file or several, must parse or
 * fail cleanly (no crash, no leak, a message on every failure, well-formed and sorted
 * diagnostics), and a parsed policy must hold together well enough for the grant path to
 * walk it and for every explanation to agree with the decision it explains. Names resolve through a
 * fixed fake database, so that runs do not depend on the machine. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fake_lookup(const char *name, const char *const *names, uint32_t base, uint32_t *ret_id)
{
	char *end;
	unsigned long v;

	if (name[0] >= '0' && name[0] <= '9') {
		v = strtoul(name, &end, 10);
		if (*end || v >= UINT32_MAX)
			return -EINVAL;
		*ret_id = (uint32_t)v;
		return 0;
	}
	for (uint32_t i = 0; names[i]; i++)
		if (strcmp(names[i], name) == 0) {
			*ret_id = base + i;
			return 0;
		}
	return strcmp(name, "broken") == 0 ? -EIO : -ENOENT;
}

static int fake_user(const char *name, uint32_t *ret_uid)
{
	static const char *const users[] = { "alice", "bob", NULL };

	return fake_lookup(name, users, 1000, ret_uid);
}

static int fake_group(const char *name, uint32_t *ret_gid)
{
	static const char *const groups[] = { "rdma", "p2pbuf-admin", "p2pbuf-view", NULL };

	return fake_lookup(name, groups, 2000, ret_gid);
}

static const struct policy_resolver fake = { .user = fake_user, .group = fake_group };

/* The explanation must agree with the decision it explains. */
static void check_explain(const struct policy *pol, const struct policy_peer *peer, size_t d,
			  unsigned bar, const struct range *r, size_t n)
{
	const struct policy_rule *match = policy_match_export(pol, peer, d, bar, r, n, NULL);
	const struct policy_rule *rule = NULL;
	char msg[256];
	enum policy_verdict v = policy_explain_export(pol, peer, pol->devices[d].name, bar, r, n,
						      &rule, msg, sizeof(msg));

	if ((v == POLICY_ALLOWED) != (match != NULL) || (match && rule != match) ||
	    v == POLICY_NO_DEVICE || strlen(msg) == 0 || strlen(msg) >= sizeof(msg))
		abort();
	if (rule && (rule < pol->rules || rule >= pol->rules + pol->n_rules || rule->device != d))
		abort();
}

/* What every consumer of a parsed policy relies on. */
static void check_policy(const struct policy *pol)
{
	static const gid_t groups[] = { 2000, 2001 };
	const struct policy_peer peer = { 1000, 1000, groups, 2, "db.service" };
	const struct range page = { 0x1000, 0x1000 };

	for (size_t i = 0; i < pol->n_rules; i++) {
		const struct policy_rule *r = &pol->rules[i];
		if (r->device >= pol->n_devices || r->bar >= POLICY_MAX_BARS || !r->who.name ||
		    (r->has_range &&
		     (r->range.length == 0 || r->range.offset + r->range.length < r->range.offset)))
			abort();
	}
	for (size_t d = 0; d < pol->n_devices; d++) {
		if (policy_find_device(pol, pol->devices[d].name) != (int)d)
			abort();
		for (unsigned bar = 0; bar < POLICY_MAX_BARS; bar++) {
			for (const struct policy_rule *r = NULL;
			     (r = policy_match_export(pol, &peer, d, bar, &page, 1, r));)
				if (r->device != d)
					abort();
			check_explain(pol, &peer, d, bar, &page, 1);
			check_explain(pol, &peer, d, bar, NULL, 0);
		}
	}
	(void)policy_is_observer(pol, &peer);
}

/* Every diagnostic names a file and says something; one about a line points into it and
 * quotes it; they are sorted within a file. */
static void check_diags(const struct policy_diags *d, int r)
{
	bool error = false;

	for (size_t i = 0; i < d->n; i++) {
		const struct policy_diag *x = &d->v[i];
		if (!x->file || !x->message || !x->message[0] ||
		    (x->line > 0 && (x->column == 0 || !x->text)) ||
		    (x->text && strlen(x->text) > POLICY_DIAG_TEXT_MAX))
			abort();
		if (i > 0 && strcmp(d->v[i - 1].file, x->file) == 0 &&
		    (d->v[i - 1].line > x->line ||
		     (d->v[i - 1].line == x->line && d->v[i - 1].column > x->column)))
			abort();
		error |= !x->warning;
	}
	if (d->n > POLICY_MAX_DIAGS || (r < 0 && r != -ENOMEM && !error && d->dropped == 0) ||
	    (r == 0 && error))
		abort();
}

/* Each NUL byte (never valid in a policy) starts another file, so that rules naming devices
 * of other files and every path through the parser API of policy_load are reached too. */
static int parse_files(const uint8_t *data, size_t size, struct policy **ret_policy,
		       struct policy_diags *ret_diags)
{
	static const char *const names[] = { "fuzz", "fuzz.d/1.policy", "fuzz.d/2.policy" };
	struct policy_parser *p = NULL;
	size_t i = 0;
	int r = policy_parser_new(&fake, &p);

	if (r < 0)
		return r;
	for (size_t start = 0; start <= size; i++) {
		const uint8_t *nul = memchr(data + start, '\0', size - start);
		size_t len = nul ? (size_t)(nul - (data + start)) : size - start;

		if (i == sizeof(names) / sizeof(names[0])) {
			(void)policy_parser_fail(p, names[i - 1], -E2BIG, "too many files");
			break;
		}
		(void)policy_parser_add(p, names[i], (const char *)data + start, len);
		start += len + 1;
	}
	r = policy_parser_finish_ex(p, ret_policy, ret_diags);
	policy_parser_free(p);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy *pol = NULL;
	char *error = NULL;
	int r;

	if (memchr(data, '\0', size)) {
		struct policy_diags d = { .v = NULL };
		r = parse_files(data, size, &pol, &d);
		check_diags(&d, r);
		policy_diags_free(&d);
	} else
		r = policy_parse("fuzz", (const char *)data, size, &fake, &pol, &error);
	if (r < 0 && (pol || (!error && r != -ENOMEM && !memchr(data, '\0', size))))
		abort();
	if (r >= 0) {
		if (!pol || error)
			abort();
		check_policy(pol);
	}
	policy_free(pol);
	free(error);
	return 0;
}
