/* bench-policy: what a policy decision and a policy load cost as the policy grows, measured
 * by calling the daemon's own policy code (libp2pbufd-core: policy_load, policy_match_export)
 * directly, without a socket in the way: the decision is a few µs at most, below what the
 * grant path's noise would let us see.
 *
 * Each case writes a policy into DIR/<case>/: the devices in the main file, the rules in
 * drop-ins (policy.d/, at most 4,096 rules each, so that loading many files is measured too).
 * In every case the rule that allows the measured export is the last one, for the caller's
 * uid, and the denied export (another device) matches no rule. A decision walks only the
 * rules of the device asked for: the other rules are spread over the other devices, for
 * other uids, or, in the "names" cases, name the caller's user and group (so that names
 * are looked up at load, once per distinct name). The "hot" case puts every rule on the
 * measured device, the worst case of that walk.
 *
 * Usage: bench-policy --dir DIR [--quick]. Prints "<case>_<metric> value" lines; a policy the
 * daemon refuses prints "<case>_load_error <its message>" instead of a number. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "policy.h"

#define RULES_PER_DROPIN 4096

struct policy_case {
	const char *name;
	unsigned rules;
	unsigned devices;
	bool names;
	bool hot; /* every rule on the measured device */
};

static const struct policy_case cases[] = {
	{ "r1", 1, 1, false },
	{ "r4096", 4096, 256, false },
	{ "r4096names", 4096, 256, true },
	{ "r10000d256", 10000, 256, false }, /* the rule cap alone, under today's device cap */
	{ "r10000", 10000, 1000, false },
	{ "r10000names", 10000, 1000, true },
	{ "r65536", 65536, 4096, false },
	{ "r10000hot", 10000, 1000, false, true },
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of v[0..n), n > 0; v is sorted in place. */
static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), compare_double);
	return v[n / 2];
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "bench-policy: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

/* The subject of rule i: the caller for the last rule; otherwise another uid, or in the
 * names cases the caller's user or group by name (resolved once per rule at load). */
static void subject(const struct policy_case *c, unsigned i, char *buf, size_t len)
{
	const struct passwd *pw = getpwuid(getuid());
	const struct group *gr = getgrgid(getgid());

	if (i == c->rules - 1)
		snprintf(buf, len, "user %u", (unsigned)getuid());
	else if (c->names && pw && gr)
		snprintf(buf, len, i % 2 ? "group %s" : "user %s",
			 i % 2 ? gr->gr_name : pw->pw_name);
	else
		snprintf(buf, len, "user %u", 200000 + i);
}

/* In the names cases the caller's own rules must not allow the measured export early: they
 * name devices other than the last one, which only the last rule does. */
static unsigned rule_device(const struct policy_case *c, unsigned i)
{
	if (i == c->rules - 1 || c->hot)
		return c->devices - 1;
	return c->devices > 1 ? i % (c->devices - 1) : 0;
}

static void write_dropins(const struct policy_case *c, const char *dir)
{
	char path[512], who[320];
	FILE *f = NULL;

	for (unsigned i = 0; i < c->rules; i++) {
		if (i % RULES_PER_DROPIN == 0) {
			if (f && fclose(f) != 0)
				die("write", path);
			snprintf(path, sizeof(path), "%s/policy.d/%04u.policy", dir,
				 i / RULES_PER_DROPIN);
			if (!(f = fopen(path, "w")))
				die("create", path);
		}
		subject(c, i, who, sizeof(who));
		fprintf(f, "allow %s device d%u bar 0 range 0+64K\n", who, rule_device(c, i));
	}
	if (f && fclose(f) != 0)
		die("write", path);
}

static void write_case(const struct policy_case *c, const char *top, char *ret_path, size_t len)
{
	char dir[400], sub[450];

	snprintf(dir, sizeof(dir), "%s/%s", top, c->name);
	snprintf(sub, sizeof(sub), "%s/policy.d", dir);
	if ((mkdir(dir, 0700) < 0 && errno != EEXIST) || (mkdir(sub, 0700) < 0 && errno != EEXIST))
		die("mkdir", sub);
	snprintf(ret_path, len, "%s/policy", dir);
	FILE *f = fopen(ret_path, "w");
	if (!f)
		die("create", ret_path);
	for (unsigned d = 0; d < c->devices; d++)
		fprintf(f, "device d%u sim bar 0 1M\n", d);
	fprintf(f, "admin user %u\n", (unsigned)getuid());
	if (fclose(f) != 0)
		die("write", ret_path);
	write_dropins(c, dir);
}

/* Load path k times; the median load time in *ret_ms and the last policy, or NULL with the
 * daemon's error message printed as the figure. */
static struct policy *load(const char *name, const char *path, unsigned k, double *ret_ms)
{
	double times[16];
	struct policy *p = NULL;

	for (unsigned i = 0; i < k && i < 16; i++) {
		char *err = NULL;
		policy_free(p);
		p = NULL;
		uint64_t t0 = now_ns();
		int r = policy_load(path, &policy_system_resolver, &p, &err);
		times[i] = (double)(now_ns() - t0) / 1e6;
		if (r < 0) {
			printf("%s_load_error %s\n", name, err ? err : strerror(-r));
			free(err);
			return NULL;
		}
	}
	*ret_ms = median(times, k < 16 ? k : 16);
	return p;
}

/* ns per policy_match_export call: the median of batches of 1,000 over about budget_ns. */
static double decide_ns(const struct policy *p, const struct policy_peer *peer, size_t device,
			uint64_t budget_ns, bool want_allowed)
{
	const struct range r = { 0, 4096 };
	double per[4096];
	unsigned k = 0;

	for (uint64_t start = now_ns(); k < 4096 && (k < 5 || now_ns() - start < budget_ns); k++) {
		uint64_t t0 = now_ns();
		for (int i = 0; i < 1000; i++)
			if ((policy_match_export(p, peer, device, 0, &r, 1, NULL) != NULL) !=
			    want_allowed) {
				fprintf(stderr, "bench-policy: the decision is not what the case "
						"was built for\n");
				exit(1);
			}
		per[k] = (double)(now_ns() - t0) / 1000.0;
	}
	return median(per, k);
}

static void run_case(const struct policy_case *c, const char *dir, bool quick)
{
	struct policy_peer peer = { .uid = getuid(), .gid = getgid() };
	char path[512];
	double ms;

	write_case(c, dir, path, sizeof(path));
	struct policy *p = load(c->name, path, quick ? 1 : 5, &ms);
	printf("%s_rules %u\n%s_devices %u\n", c->name, c->rules, c->name, c->devices);
	if (!p)
		return;
	printf("%s_load_ms %.2f\n", c->name, ms);
	uint64_t budget = quick ? 20000000u : 200000000u;
	printf("%s_allow_ns %.0f\n", c->name, decide_ns(p, &peer, c->devices - 1, budget, true));
	/* In the names cases the caller has rules on every other device: nothing to deny. */
	if (c->devices > 1 && !c->names)
		printf("%s_deny_ns %.0f\n", c->name, decide_ns(p, &peer, 0, budget, false));
	policy_free(p);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "quick", no_argument, NULL, 'q' },
		{},
	};
	const char *dir = NULL;
	bool quick = false;
	int c;

	while ((c = getopt_long(argc, argv, "d:q", longopts, NULL)) != -1) {
		if (c == 'd')
			dir = optarg;
		else if (c == 'q')
			quick = true;
		else
			return 2;
	}
	if (!dir) {
		fprintf(stderr, "Usage: bench-policy --dir DIR [--quick]\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		run_case(&cases[i], dir, quick);
		fflush(stdout);
	}
	return 0;
}
