/* The kernel's P2PDMA decision over sysfs facts (p2ppath.h). Written from a reading of
 * drivers/pci/p2pdma.c in Debian's linux-source-7.2 (7.2.13): calc_map_type_and_dist(),
 * pci_bridge_has_acs_redir(), cpu_supports_p2pdma(), pci_host_bridge_dev() and the host
 * bridge list. Keep the list below in step with that file when a newer kernel adds to it. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "p2ppath.h"
#include "sysroot.h"

#define VENDOR_INTEL 0x8086
#define VENDOR_GOOGLE 0x1ae0
#define ANY_DEVICE (-1)
#define PCIE_TYPE_ROOT_PORT 0x4

/* Host bridges (or the root port first on the root bus) whose root complex forwards
 * peer-to-peer between its ports, as in the kernel's pci_p2pdma_whitelist[]. */
static const struct {
	unsigned vendor;
	int device;
	bool same_host_bridge; /* only between devices under this one host bridge */
} host_list[] = {
	{ VENDOR_INTEL, 0x3c00, true },
	{ VENDOR_INTEL, 0x3c01, true }, /* Xeon E5/Core i7 */
	{ VENDOR_INTEL, 0x2f00, true },
	{ VENDOR_INTEL, 0x2f01, true }, /* Xeon E7/E5 v3 */
	{ VENDOR_INTEL, 0x2030, false },
	{ VENDOR_INTEL, 0x2031, false }, /* Skylake-E */
	{ VENDOR_INTEL, 0x2032, false },
	{ VENDOR_INTEL, 0x2033, false },
	{ VENDOR_INTEL, 0x2020, false },
	{ VENDOR_INTEL, 0x09a2, false },
	{ VENDOR_INTEL, 0x0b25, false }, /* DSA SPR0 */
	{ VENDOR_INTEL, 0x0cfe, false }, /* IAX SPR0 */
	{ VENDOR_INTEL, 0x11fb, false }, /* DSA GNRD */
	{ VENDOR_INTEL, 0x1212, false }, /* DSA DMR */
	{ VENDOR_INTEL, 0x1216, false }, /* IAA DMR */
	{ VENDOR_INTEL, 0x4940, false },
	{ VENDOR_INTEL, 0x4942, false }, /* QAT 4xxx, 401xx */
	{ VENDOR_INTEL, 0x4944, false },
	{ VENDOR_INTEL, 0x4946, false },      /* QAT 402xx, 420xx */
	{ VENDOR_INTEL, 0x4948, false },      /* QAT 6xxx */
	{ VENDOR_GOOGLE, ANY_DEVICE, false }, /* Google SoCs */
};

/* The reason for an unknown answer into buf. */
static void say(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* pci_bridge_has_acs_redir(): any of these in ACS Control counts. */
#define ACS_REDIRECT_BITS (PCISYS_ACS_RR | PCISYS_ACS_CR | PCISYS_ACS_EC)

static void node_from(struct p2ppath_node *n, const struct pcisys_device *d)
{
	memcpy(n->address, d->address, sizeof(n->address));
	n->acs = d->acs;
	n->acs_ctrl = d->acs_ctrl;
	n->redirect = d->acs == 1 && (d->acs_ctrl & ACS_REDIRECT_BITS);
}

/* The device and its bridges into nodes; *gap if sysfs shows a non-PCI step. */
static int fill_side(const char *root, const struct pcisys_device *d, struct p2ppath_node *nodes,
		     size_t *n, bool *gap)
{
	node_from(&nodes[0], d);
	*n = 1;
	*gap = *gap || d->chain_gap;
	for (size_t i = 0; i < d->n_chain; i++) {
		struct pcisys_device bridge;
		int r = pcisys_read_device(root, d->chain[i], &bridge);
		if (r < 0)
			return r;
		node_from(&nodes[(*n)++], &bridge);
	}
	return 0;
}

/* cpu_supports_p2pdma(): an AMD CPU of family 0x17 (Zen) or newer. */
static bool cpu_is_amd_zen(const char *root)
{
	char buf[8192];
	const char *v, *f;

	if (sysroot_read_file(root, buf, sizeof(buf), "/proc/cpuinfo") <= 0)
		return false;
	v = strstr(buf, "vendor_id");
	f = strstr(buf, "cpu family");
	if (!v || !f || !strstr(v, "AuthenticAMD") || strstr(v, "\n") < strstr(v, "AuthenticAMD"))
		return false;
	f = strchr(f, ':');
	return f && strtol(f + 1, NULL, 10) >= 0x17;
}

/* pci_host_bridge_dev(): the first function on the root bus, if it is 00.0 or a root port. */
static void find_host_dev(const char *root, const char *host_bridge, struct p2ppath_host_dev *h)
{
	struct pcisys_device d;

	sysroot_copy(h->host_bridge, sizeof(h->host_bridge), host_bridge);
	if (pcisys_root_bus_first(root, host_bridge, &d) < 0 || !d.ids_known)
		return;
	if (strcmp(d.address + 8, "00.0") != 0 && d.pcie_type != PCIE_TYPE_ROOT_PORT)
		return;
	h->known = true;
	memcpy(h->address, d.address, sizeof(h->address));
	h->vendor = d.vendor;
	h->device = d.device;
}

/* __host_bridge_whitelist(): listed, listed for one host bridge only, or not listed. */
static enum p2ppath_host host_listed(const struct p2ppath_host_dev *h, bool same)
{
	if (!h->known)
		return P2PPATH_HOST_UNKNOWN;
	for (size_t i = 0; i < ARRAY_SIZE(host_list); i++) {
		if (h->vendor != host_list[i].vendor ||
		    (host_list[i].device != ANY_DEVICE && (int)h->device != host_list[i].device))
			continue;
		return host_list[i].same_host_bridge && !same ? P2PPATH_HOST_NOT_SAME
							      : P2PPATH_HOST_LISTED;
	}
	return P2PPATH_HOST_NOT_LISTED;
}

/* host_bridge_whitelist(): one host bridge decides alone; two must both be listed. */
static void decide_host(const char *root, const struct pcisys_device *a,
			const struct pcisys_device *b, struct p2ppath *p)
{
	enum p2ppath_host ha, hb;

	p->amd_zen = cpu_is_amd_zen(root);
	find_host_dev(root, a->host_bridge, &p->host_a);
	find_host_dev(root, b->host_bridge, &p->host_b);
	if (p->amd_zen) {
		p->host = P2PPATH_HOST_CPU;
		return;
	}
	ha = host_listed(&p->host_a, p->same_host_bridge);
	hb = p->same_host_bridge ? ha : host_listed(&p->host_b, false);
	if (ha == P2PPATH_HOST_LISTED && hb == P2PPATH_HOST_LISTED)
		p->host = P2PPATH_HOST_LISTED;
	else if (ha == P2PPATH_HOST_NOT_LISTED || hb == P2PPATH_HOST_NOT_LISTED)
		p->host = P2PPATH_HOST_NOT_LISTED;
	else if (ha == P2PPATH_HOST_NOT_SAME || hb == P2PPATH_HOST_NOT_SAME)
		p->host = P2PPATH_HOST_NOT_SAME;
	else
		p->host = P2PPATH_HOST_UNKNOWN;
}

/* The kernel walks up from a, and for each of its functions looks for it on b's path. */
static void find_common(struct p2ppath *p)
{
	p->common_a = p->common_b = -1;
	for (size_t i = 0; i < p->n_a; i++) {
		p->on_path[0][i] = true;
		for (size_t j = 0; j < p->n_b; j++)
			if (!strcmp(p->a[i].address, p->b[j].address)) {
				p->common_a = (int)i;
				p->common_b = (int)j;
				for (size_t k = 0; k < j; k++)
					p->on_path[1][k] = true;
				return;
			}
	}
	for (size_t k = 0; k < p->n_b; k++)
		p->on_path[1][k] = true;
}

/* ACS on the checked nodes: 1 a redirect, 0 none, -1 some could not be read. */
static int path_acs(const struct p2ppath *p, char *what, size_t len)
{
	int unknown = 0;

	for (int side = 0; side < 2; side++) {
		const struct p2ppath_node *nodes = side ? p->b : p->a;
		size_t n = side ? (size_t)p->common_b : p->n_a;
		for (size_t i = 0; i < n && i <= PCISYS_CHAIN_MAX; i++) {
			if (!p->on_path[side][i])
				continue;
			if (nodes[i].redirect)
				return 1;
			if (nodes[i].acs < 0 && !unknown++)
				say(what, len,
				    "the ACS capability of %s (extended config space is "
				    "readable by root only)",
				    nodes[i].address);
		}
	}
	return unknown ? -1 : 0;
}

static enum p2ppath_map host_map(const struct p2ppath *p)
{
	switch (p->host) {
	case P2PPATH_HOST_CPU:
	case P2PPATH_HOST_LISTED:
		return P2PPATH_THRU_HOST_BRIDGE;
	case P2PPATH_HOST_UNKNOWN:
		return P2PPATH_UNKNOWN;
	default:
		return P2PPATH_NOT_SUPPORTED;
	}
}

int p2ppath_compute(const char *root, const struct pcisys_device *a, const struct pcisys_device *b,
		    struct p2ppath *ret)
{
	struct p2ppath p = { 0 };
	int r = fill_side(root, a, p.a, &p.n_a, &p.chain_gap);

	if (r >= 0)
		r = fill_side(root, b, p.b, &p.n_b, &p.chain_gap);
	if (r < 0)
		return r;
	p.same_host_bridge = !strcmp(a->host_bridge, b->host_bridge);
	find_common(&p);
	if (p.common_a >= 0) {
		p.distance = p.common_a + p.common_b;
		r = path_acs(&p, p.unknown_what, sizeof(p.unknown_what));
		p.map = r == 0	? P2PPATH_BUS_ADDR
			: r < 0 ? P2PPATH_UNKNOWN
				: P2PPATH_THRU_HOST_BRIDGE;
	} else {
		p.distance = (int)(p.n_a + p.n_b);
		p.map = P2PPATH_THRU_HOST_BRIDGE;
	}
	if (p.map == P2PPATH_THRU_HOST_BRIDGE) {
		decide_host(root, a, b, &p);
		p.map = host_map(&p);
		if (p.map == P2PPATH_UNKNOWN)
			say(p.unknown_what, sizeof(p.unknown_what),
			    "which device is first on the root bus of %s (its config space "
			    "is readable by root only)",
			    a->host_bridge);
	}
	*ret = p;
	return 0;
}
