/* p2pbuf-client doctor: will peer-to-peer through p2pbufd work on this machine? The kernel's
 * features (probed where the kernel can be asked, else labelled config or inferred), the
 * IOMMU, each device's binding, group, BARs, memory decode and reset method, and with
 * --importer the PCI path between the exporter and the importer, judged as the kernel's P2PDMA
 * code judges it. Works without a daemon (as root for the config-space checks); with one, the
 * devices it declares are the ones examined.
 *
 * The facts come from proto/probe.h, pcisys.h and p2ppath.h; this file decides what each one
 * means to a user, and prints it as text or as the CLI's one JSON shape. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "p2ppath.h"
#include "pcisys.h"
#include "probe.h"
#include "sysroot.h"
#include "units.h"

/* How many devices one run examines at most (declared ones, or those bound to VFIO). */
#define DOCTOR_MAX_DEVICES 32
#define DOCTOR_MAX_MEMBERS 16

enum status { ST_OK, ST_INFO, ST_WARN, ST_FAIL, ST_UNKNOWN, ST_COUNT };
static const char *const status_names[ST_COUNT] = { "ok", "info", "warn", "fail", "unknown" };

struct check {
	const char *id;	    /* "vfio-dma-buf", ... (p2pbuf-client(1) lists them) */
	char subject[48];   /* the device it is about, or "" */
	enum status status; /* of the check */
	const char *source; /* how it was found: probe, config, inferred, sysfs, ... */
	char *message;
};

/* One device examined. */
struct doctor_dev {
	char name[64];	  /* the daemon's name, or "" */
	const char *role; /* "exporter", "importer" or "declared" */
	bool found;	  /* sysfs has it */
	struct pcisys_device pci;
	char group_type[32];
	int n_members; /* other members of its group; may exceed what members holds */
	char members[DOCTOR_MAX_MEMBERS][PCISYS_ADDR_MAX];
};

struct doctor {
	struct cli *cli;
	const char *root;
	const char *device_arg, *importer_arg;
	size_t n_checks;
	struct check *checks;
	char release[PROBE_RELEASE_MAX];
	bool version_known;
	struct probe_version version;
	bool daemon_reachable;
	char daemon_version[64];
	size_t n_devs;
	struct doctor_dev devs[DOCTOR_MAX_DEVICES + 1];
	struct doctor_dev *exporter, *importer;
	bool have_path;
	struct p2ppath path;
	const char *verdict; /* "ok", "likely-to-fail", "will-fail", "unknown" */
	char *verdict_reason;
};

static void add_check(struct doctor *d, const char *id, const char *subject, enum status st,
		      const char *source, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add_check(struct doctor *d, const char *id, const char *subject, enum status st,
		      const char *source, const char *fmt, ...)
{
	struct check *c = realloc(d->checks, (d->n_checks + 1) * sizeof(*c));
	va_list ap;

	if (!c)
		cli_oom();
	d->checks = c;
	c = &c[d->n_checks++];
	*c = (struct check){ .id = id, .status = st, .source = source };
	snprintf(c->subject, sizeof(c->subject), "%s", subject ? subject : "");
	va_start(ap, fmt);
	if (vasprintf(&c->message, fmt, ap) < 0)
		cli_oom();
	va_end(ap);
}

static void doctor_free(struct doctor *d)
{
	for (size_t i = 0; i < d->n_checks; i++)
		free(d->checks[i].message);
	free(d->checks);
	free(d->verdict_reason);
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		cli_oom();
	return s;
}

static enum status answer_status(enum probe_answer a)
{
	return a == PROBE_YES ? ST_OK : a == PROBE_NO ? ST_FAIL : ST_UNKNOWN;
}

/* ---- the kernel ---- */

static void check_kernel(struct doctor *d)
{
	const struct probe_known_issue *k = NULL;
	char fixed[32];
	int bad = 0;

	if (probe_kernel_release(d->root, d->release) < 0) {
		add_check(d, "kernel", NULL, ST_UNKNOWN, "uname", "cannot tell the kernel release");
		return;
	}
	d->version_known = probe_parse_version(d->release, &d->version) == 0;
	while (d->version_known && (k = probe_known_issue_next(&d->version, k))) {
		bad++;
		add_check(d, "kernel", NULL, ST_FAIL, "uname",
			  "%s is known to be bad for this use: %s (%s); fixed in %s (unless your "
			  "distribution backported the fix)",
			  d->release, k->id, k->summary,
			  probe_format_version(&k->fixed, fixed, 32));
	}
	if (!bad)
		add_check(d, "kernel", NULL, d->version_known ? ST_OK : ST_UNKNOWN, "uname",
			  d->version_known ? "%s, no known issue for this use"
					   : "%s: cannot read a version number from it",
			  d->release);
}

/* The kernel's build configuration: /boot/config-RELEASE, else /proc/config.gz through
 * gzip. Returns the text (free it) and where it came from, or NULL. */
static char *read_whole(FILE *f)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	char chunk[8192];
	size_t n;

	if (!m)
		cli_oom();
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, n, m);
	fclose(m);
	return buf;
}

static char *read_gzip(const char *path)
{
	int fds[2];
	pid_t pid;
	char *text;
	FILE *f;
	int status;

	if (pipe2(fds, O_CLOEXEC) < 0 || (pid = fork()) < 0)
		return NULL;
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		execlp("gzip", "gzip", "-dc", "--", path, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	text = f ? read_whole(f) : NULL;
	if (f)
		fclose(f);
	else
		close(fds[0]);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

static char *read_kernel_config(const struct doctor *d, char *where, size_t len)
{
	char p[SYSROOT_PATH_MAX];
	FILE *f;
	char *text;

	if (sysroot_path(d->root, p, sizeof(p), "/boot/config-%s", d->release) == 0 &&
	    (f = fopen(p, "re"))) {
		text = read_whole(f);
		fclose(f);
		sysroot_path(NULL, where, len, "/boot/config-%s", d->release);
		return text;
	}
	if (sysroot_path(d->root, p, sizeof(p), "/proc/config.gz") == 0 && access(p, R_OK) == 0 &&
	    (text = read_gzip(p))) {
		snprintf(where, len, "/proc/config.gz");
		return text;
	}
	return NULL;
}

/* "y", "m", "n" (is not set) or NULL (not mentioned) for CONFIG_name in text. */
static const char *config_value(const char *text, const char *name)
{
	char set[96], unset[96];
	size_t n = (size_t)snprintf(set, sizeof(set), "\nCONFIG_%s=", name);
	const char *p;

	snprintf(unset, sizeof(unset), "\n# CONFIG_%s is not set", name);
	if ((p = strstr(text, set)))
		return p[n] == 'y' ? "y" : p[n] == 'm' ? "m" : "n";
	return strstr(text, unset) ? "n" : NULL;
}

static void check_config(struct doctor *d, const char *text, const char *where, const char *id,
			 const char *name, const char *why)
{
	const char *v = text ? config_value(text, name) : NULL;

	if (!text)
		add_check(d, id, NULL, ST_UNKNOWN, "config",
			  "no kernel configuration to read (neither /boot/config-%s nor "
			  "/proc/config.gz)",
			  d->release);
	else if (!v || !strcmp(v, "n"))
		add_check(d, id, NULL, ST_FAIL, "config", "CONFIG_%s is not set (%s): %s", name,
			  where, why);
	else
		add_check(d, id, NULL, ST_OK, "config", "CONFIG_%s=%s (%s)", name, v, where);
}

/* The exporter to probe the export on: the one asked about, else any bound to VFIO. */
static const char *probe_target(const struct doctor *d, char buf[1][PCISYS_ADDR_MAX])
{
	for (size_t i = 0; i < d->n_devs; i++)
		if (d->devs[i].found && strstr(d->devs[i].pci.driver, "vfio") &&
		    strcmp(d->devs[i].role, "importer") != 0)
			return d->devs[i].pci.address;
	return pcisys_vfio_devices(d->root, buf, 1) > 0 ? buf[0] : NULL;
}

static void check_dma_buf(struct doctor *d)
{
	char buf[1][PCISYS_ADDR_MAX], why[PROBE_REASON_MAX];
	const char *target = probe_target(d, buf);
	enum probe_answer a;

	if (!target) {
		add_check(d, "vfio-dma-buf", NULL, ST_UNKNOWN, "probe",
			  "cannot probe without a vfio-pci device: no device is bound to vfio-pci");
		return;
	}
	a = probe_dma_buf_export_device(d->root, target, why);
	if (a == PROBE_UNKNOWN)
		add_check(d, "vfio-dma-buf", target, ST_UNKNOWN, "probe",
			  "cannot probe without a vfio-pci device: %s", why);
	else
		add_check(d, "vfio-dma-buf", target, answer_status(a), "probe", "%s", why);
}

/* What can only be read off the version number, said as such. */
static void check_inferred(struct doctor *d, const struct probe_caps *caps)
{
	char since[32];
	bool new_enough =
	    d->version_known && probe_version_cmp(&d->version, &probe_since_map_file_dma_buf) >= 0;

	probe_format_version(&probe_since_dma_buf_export, since, sizeof(since));
	if (d->version_known && probe_version_cmp(&d->version, &probe_since_dma_buf_export) < 0)
		add_check(d, "vfio-dma-buf-version", NULL, ST_FAIL, "inferred",
			  "Linux %s is older than %s, which added the VFIO dma-buf export",
			  d->release, since);
	if (caps->iommufd == PROBE_YES && new_enough)
		add_check(d, "iommufd-map-file", NULL, ST_OK, "inferred",
			  "likely: /dev/iommu opens and Linux %s is %s or newer, which maps VFIO "
			  "dma-bufs with IOMMU_IOAS_MAP_FILE (single-range buffers only); a "
			  "probe would need a dma-buf",
			  d->release, since);
	else
		add_check(d, "iommufd-map-file", NULL,
			  caps->iommufd == PROBE_UNKNOWN ? ST_UNKNOWN : ST_FAIL, "inferred",
			  "unlikely: %s",
			  caps->iommufd == PROBE_YES
			      ? "Linux older than 6.19 does not map VFIO dma-bufs with "
				"IOMMU_IOAS_MAP_FILE"
			      : "IOMMU_IOAS_MAP_FILE needs iommufd (see the iommufd check)");
}

static void check_features(struct doctor *d)
{
	struct probe_caps caps;
	char where[PROBE_RELEASE_MAX + 16] = "";
	_cleanup_free_ char *config = NULL;

	probe_caps(d->root, &caps);
	check_dma_buf(d);
	config = read_kernel_config(d, where, sizeof(where));
	check_config(d, config, where, "vfio-dma-buf-config", "VFIO_PCI_DMABUF",
		     "this kernel cannot export BAR dma-bufs");
	check_inferred(d, &caps);
	add_check(d, "iommufd", NULL, answer_status(caps.iommufd), "probe", "%s",
		  caps.iommufd_reason);
	add_check(d, "vfio-cdev", NULL, answer_status(caps.vfio_cdev), "probe", "%s",
		  caps.vfio_cdev_reason);
	/* On 6.19 only, RDMA and GPU importers need move notification (gone in 7.x). */
	if (d->version_known && d->version.major == 6 && d->version.minor == 19)
		check_config(d, config, where, "dmabuf-move-notify", "DMABUF_MOVE_NOTIFY",
			     "RDMA and GPU drivers refuse to import dynamic dma-bufs on 6.19");
	add_check(d, "per-buffer-revoke", NULL, ST_INFO, "known",
		  "%s; p2pbufd revokes by a device "
		  "cycle, which ends every lease of the device",
		  caps.per_buffer_revoke_reason);
}

/* ---- the IOMMU ---- */

/* The entries of directory root + path, space separated, into buf; how many. */
static int list_dir(const char *root, const char *path, char *buf, size_t len)
{
	char p[SYSROOT_PATH_MAX];
	DIR *dir;
	struct dirent *e;
	int n = 0;
	size_t used = 0;

	buf[0] = '\0';
	if (sysroot_path(root, p, sizeof(p), "%s", path) < 0 || !(dir = opendir(p)))
		return 0;
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		n++;
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? " " : "",
						 e->d_name);
	}
	closedir(dir);
	return n;
}

/* The IOMMU options of the kernel command line, into buf. */
static void iommu_cmdline(const char *root, char *buf, size_t len)
{
	char cmdline[4096], *save = NULL;
	size_t used = 0;

	buf[0] = '\0';
	if (sysroot_read_file(root, cmdline, sizeof(cmdline), "/proc/cmdline") < 0)
		return;
	for (char *t = strtok_r(cmdline, " \t", &save); t; t = strtok_r(NULL, " \t", &save))
		if ((!strncmp(t, "intel_iommu=", 12) || !strncmp(t, "amd_iommu=", 10) ||
		     !strncmp(t, "iommu=", 6) || !strncmp(t, "iommu.", 6)) &&
		    used < len)
			used +=
			    (size_t)snprintf(buf + used, len - used, "%s%s", used ? " " : "", t);
}

static const char *domain_meaning(const char *type)
{
	if (!strcmp(type, "DMA"))
		return "translated, strict invalidation";
	if (!strcmp(type, "DMA-FQ"))
		return "translated, lazy invalidation";
	if (!strcmp(type, "identity"))
		return "passthrough: devices outside VFIO DMA untranslated";
	return "as the kernel names it";
}

static void check_iommu(struct doctor *d)
{
	char units[512], groups[64], cmdline[512], type[32] = "";
	int n_units = list_dir(d->root, "/sys/class/iommu", units, sizeof(units));
	int n_groups = list_dir(d->root, "/sys/kernel/iommu_groups", groups, sizeof(groups));

	iommu_cmdline(d->root, cmdline, sizeof(cmdline));
	if (n_groups == 0) {
		add_check(
		    d, "iommu", NULL, ST_FAIL, "sysfs",
		    "off: no IOMMU groups in /sys/kernel/iommu_groups%s%s; VFIO cannot open "
		    "devices without one (enable it in the firmware and with intel_iommu=on or "
		    "amd_iommu=on%s%s)",
		    n_units ? ", though /sys/class/iommu has " : "", units,
		    cmdline[0] ? "; the command line has " : "", cmdline);
		return;
	}
	for (size_t i = 0; i < d->n_devs && !type[0]; i++)
		if (d->devs[i].group_type[0])
			snprintf(type, sizeof(type), "%s", d->devs[i].group_type);
	if (!type[0])
		pcisys_group_type(d->root, atoi(groups), type, sizeof(type));
	add_check(d, "iommu", NULL, ST_OK, "sysfs",
		  "on: %d unit(s) (%s), %d group(s); default domain %s (%s); command line: %s",
		  n_units, n_units ? units : "none listed", n_groups, type[0] ? type : "unknown",
		  type[0] ? domain_meaning(type) : "no group type readable",
		  cmdline[0] ? cmdline : "no IOMMU options");
}

/* ---- devices ---- */

/* Drivers that leave a group member's DMA to its owner, so VFIO can still open the group. */
static bool driver_lets_vfio(const char *driver)
{
	return !driver[0] || strstr(driver, "vfio") || !strcmp(driver, "pci-stub") ||
	       !strcmp(driver, "pcieport");
}

static const char *subject_of(const struct doctor_dev *v)
{
	return v->pci.address;
}

static void check_binding(struct doctor *d, const struct doctor_dev *v)
{
	const char *drv = v->pci.driver;
	bool exporter = strcmp(v->role, "importer") != 0;

	if (!exporter)
		add_check(d, "binding", subject_of(v), drv[0] ? ST_OK : ST_WARN, "sysfs",
			  drv[0] ? "importer bound to %s"
				 : "importer bound to no driver%s: nothing "
				   "on it can import a dma-buf",
			  drv);
	else if (strstr(drv, "vfio"))
		add_check(d, "binding", subject_of(v), ST_OK, "sysfs", "bound to %s", drv);
	else
		add_check(d, "binding", subject_of(v), ST_FAIL, "sysfs",
			  "bound to %s, not vfio-pci: p2pbufd cannot open it (echo vfio-pci > "
			  "/sys/bus/pci/devices/%s/driver_override, unbind, then drivers_probe)",
			  drv[0] ? drv : "no driver", v->pci.address);
}

static void check_group(struct doctor *d, struct doctor_dev *v)
{
	char list[512] = "";
	size_t used = 0;
	bool blocked = false;

	if (v->pci.iommu_group < 0) {
		add_check(d, "iommu-group", subject_of(v), ST_FAIL, "sysfs",
			  "no IOMMU group: VFIO cannot open it (is the IOMMU on?)");
		return;
	}
	for (int i = 0; i < v->n_members && i < DOCTOR_MAX_MEMBERS; i++) {
		char drv[PCISYS_NAME_MAX] = "";
		pcisys_device_link(d->root, v->members[i], "driver", drv, sizeof(drv));
		blocked = blocked || !driver_lets_vfio(drv);
		if (used < sizeof(list))
			used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s (%s)",
						 used ? ", " : "", v->members[i],
						 drv[0] ? drv : "no driver");
	}
	if (!v->n_members)
		add_check(d, "iommu-group", subject_of(v), ST_OK, "sysfs", "group %d (%s), alone",
			  v->pci.iommu_group, v->group_type[0] ? v->group_type : "type unknown");
	else
		add_check(d, "iommu-group", subject_of(v),
			  blocked && strcmp(v->role, "importer") ? ST_WARN : ST_OK, "sysfs",
			  "group %d (%s), shared with %s%s", v->pci.iommu_group,
			  v->group_type[0] ? v->group_type : "type unknown", list,
			  blocked && strcmp(v->role, "importer")
			      ? ": VFIO opens the group only while every member has no driver or "
				"vfio-pci, pci-stub or pcieport"
			      : "");
}

static void check_bars(struct doctor *d, const struct doctor_dev *v)
{
	char list[512] = "", size[UNITS_FORMAT_MAX];
	size_t used = 0, memory = 0;

	for (size_t i = 0; i < v->pci.n_bars && used < sizeof(list); i++) {
		const struct pcisys_bar *b = &v->pci.bars[i];
		memory += !b->io;
		used += (size_t)snprintf(
		    list + used, sizeof(list) - used, "%s%u: %s %s%s%s", used ? "; " : "", b->index,
		    units_format_size(b->size, size),
		    b->io	  ? "I/O ports"
		    : b->is_64bit ? "64-bit"
				  : "32-bit",
		    b->prefetchable ? " prefetchable" : "", b->io ? " (never exported)" : "");
	}
	if (memory)
		add_check(d, "bars", subject_of(v), ST_OK, "sysfs", "%s", list);
	else
		add_check(d, "bars", subject_of(v), strcmp(v->role, "importer") ? ST_FAIL : ST_INFO,
			  "sysfs", "no memory BAR%s%s", list[0] ? ": " : "", list);
}

static void check_decode(struct doctor *d, const struct doctor_dev *v)
{
	if (v->pci.memory_decode < 0)
		add_check(d, "memory-decode", subject_of(v), ST_UNKNOWN, "config-space",
			  "cannot read its config space: %s", strerror(-v->pci.config_len));
	else if (v->pci.memory_decode)
		add_check(d, "memory-decode", subject_of(v), ST_OK, "config-space",
			  "PCI_COMMAND.MEMORY is on");
	else
		add_check(
		    d, "memory-decode", subject_of(v), ST_WARN, "config-space",
		    "PCI_COMMAND.MEMORY is off: a buffer exported now would start out revoked "
		    "(p2pbufd turns it on when it opens the device)");
}

static void check_reset(struct doctor *d, const struct doctor_dev *v)
{
	if (!v->pci.reset_method_known)
		add_check(d, "reset-method", subject_of(v), ST_UNKNOWN, "sysfs",
			  "no reset_method attribute (kernels before 5.15 have none)");
	else if (v->pci.reset_method[0])
		add_check(d, "reset-method", subject_of(v), ST_OK, "sysfs", "%s",
			  v->pci.reset_method);
	else
		add_check(
		    d, "reset-method", subject_of(v), ST_WARN, "sysfs",
		    "none: VFIO_DEVICE_RESET fails, and p2pbufd's device cycle cannot reset "
		    "it (devices on the root bus often have none; behind a root port they do)");
}

/* Read what sysfs has for v, and judge it. */
static void check_device(struct doctor *d, struct doctor_dev *v)
{
	int r = pcisys_read_device(d->root, v->pci.address, &v->pci);

	if (r < 0) {
		add_check(d, "device", v->pci.address, ST_FAIL, "sysfs",
			  "%s%s%sno such PCI device in /sys/bus/pci/devices (%s)",
			  v->name[0] ? "declared by p2pbufd as " : "", v->name,
			  v->name[0] ? ", but " : "", strerror(-r));
		return;
	}
	v->found = true;
	if (v->pci.iommu_group >= 0) {
		pcisys_group_type(d->root, v->pci.iommu_group, v->group_type,
				  sizeof(v->group_type));
		v->n_members = pcisys_group_members(d->root, v->pci.iommu_group, v->pci.address,
						    v->members, DOCTOR_MAX_MEMBERS);
		if (v->n_members < 0)
			v->n_members = 0;
	}
	check_binding(d, v);
	check_group(d, v);
	check_bars(d, v);
	if (strcmp(v->role, "importer") != 0) {
		check_decode(d, v);
		check_reset(d, v);
	}
}

/* ---- the path between exporter and importer ---- */

/* "0000:00:01.0, 0000:00:02.0" of the nodes with ACS redirects the kernel checks. */
static void redirect_list(const struct p2ppath *p, char *buf, size_t len, char sep)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int side = 0; side < 2; side++)
		for (size_t i = 0; i < (side ? p->n_b : p->n_a); i++) {
			const struct p2ppath_node *n = side ? &p->b[i] : &p->a[i];
			if (p->on_path[side][i] && n->redirect && used < len)
				used += (size_t)snprintf(buf + used, len - used, "%s%s",
							 used ? (sep == ';' ? ";" : ", ") : "",
							 n->address);
		}
}

static char *host_words(const struct p2ppath *p)
{
	const struct p2ppath_host_dev *h =
	    p->host_a.known || p->same_host_bridge ? &p->host_a : &p->host_b;
	char *s;

	if (p->host == P2PPATH_HOST_CPU)
		s = strdup("the CPU is an AMD Zen or newer, on which the kernel allows it");
	else if (asprintf(&s, "host bridge %04x:%04x (%s under %s) %s", h->vendor, h->device,
			  h->address, h->host_bridge,
			  p->host == P2PPATH_HOST_LISTED ? "is on the kernel's P2PDMA list"
			  : p->host == P2PPATH_HOST_NOT_SAME
			      ? "is on the kernel's P2PDMA list only "
				"for devices under one host bridge"
			      : "is not on the kernel's P2PDMA list") < 0)
		s = NULL;
	if (!s)
		cli_oom();
	return s;
}

static void judge_path(struct doctor *d)
{
	const struct p2ppath *p = &d->path;
	char redirects[256], cmdline[256], why[512];
	_cleanup_free_ char *host = NULL;

	redirect_list(p, redirects, sizeof(redirects), ',');
	redirect_list(p, cmdline, sizeof(cmdline), ';');
	if (p->common_a >= 0 && !redirects[0])
		snprintf(why, sizeof(why), "common upstream %s %s, distance %d, no ACS redirect",
			 p->common_a == 0 || p->common_b == 0 ? "function" : "bridge",
			 p->a[p->common_a].address, p->distance);
	else if (p->common_a >= 0)
		snprintf(why, sizeof(why),
			 "ACS redirects peer-to-peer requests up to the root complex at %s",
			 redirects);
	else
		snprintf(why, sizeof(why),
			 "no common upstream bridge: the path crosses the root "
			 "complex");
	if (p->map == P2PPATH_THRU_HOST_BRIDGE || p->map == P2PPATH_NOT_SUPPORTED)
		host = host_words(p);
	switch (p->map) {
	case P2PPATH_BUS_ADDR:
		d->verdict = "ok";
		d->verdict_reason = xasprintf("%s: the kernel maps it by PCI bus address", why);
		break;
	case P2PPATH_THRU_HOST_BRIDGE:
		d->verdict = p->same_host_bridge ? "ok" : "likely-to-fail";
		d->verdict_reason = xasprintf(
		    "%s, and %s%s", why, host,
		    p->same_host_bridge
			? ""
			: "; but the path runs between two host bridges, where peer-to-peer "
			  "depends on the platform and is often slow or not forwarded");
		break;
	case P2PPATH_NOT_SUPPORTED:
		d->verdict = "will-fail";
		asprintf(
		    &d->verdict_reason,
		    "%s, and %s: importers that map the dma-buf (RDMA NICs, GPUs) get EINVAL; "
		    "an iommufd importer is not checked, but the root complex need not forward "
		    "the transfers%s%s",
		    why, host, cmdline[0] ? "; pci=disable_acs_redir=" : "", cmdline);
		break;
	default:
		d->verdict = "unknown";
		d->verdict_reason = xasprintf("%s; cannot tell %s", why, p->unknown_what);
	}
}

static void check_path(struct doctor *d)
{
	static const enum status st[] = { ST_OK, ST_WARN, ST_FAIL, ST_UNKNOWN };
	static const char *const names[] = { "ok", "likely-to-fail", "will-fail", "unknown" };
	int r;

	if (!d->exporter->found || !d->importer->found)
		return;
	r = p2ppath_compute(d->root, &d->exporter->pci, &d->importer->pci, &d->path);
	if (r < 0) {
		add_check(d, "p2p-path", d->importer->pci.address, ST_UNKNOWN, "sysfs",
			  "cannot read a bridge on the path: %s", strerror(-r));
		return;
	}
	d->have_path = true;
	judge_path(d);
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (!strcmp(d->verdict, names[i]))
			add_check(d, "p2p-path", d->importer->pci.address, st[i], "sysfs",
				  "%s to %s: %s: %s", d->exporter->pci.address,
				  d->importer->pci.address,
				  i == 1   ? "likely to fail"
				  : i == 2 ? "will fail"
					   : names[i],
				  d->verdict_reason);
}

/* ---- which devices ---- */

static struct doctor_dev *add_dev(struct doctor *d, const char *address, const char *name,
				  const char *role)
{
	struct doctor_dev *v = &d->devs[d->n_devs++];

	*v = (struct doctor_dev){ .role = role };
	sysroot_copy(v->pci.address, sizeof(v->pci.address), address);
	sysroot_copy(v->name, sizeof(v->name), name ? name : "");
	return v;
}

/* Ask the daemon, if one answers, for its devices. Returns 0 or the exit status. */
static int ask_daemon(struct doctor *d, struct p2pbuf_device **ret, size_t *ret_n)
{
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	const char *path = cli_socket_path(d->cli);
	int r = p2pbuf_connect(path, &conn);

	*ret = NULL;
	*ret_n = 0;
	if (r < 0) {
		add_check(d, "daemon", NULL, ST_INFO, "socket",
			  "no p2pbufd at %s (%s): going on with what this machine shows", path,
			  strerror(-r));
		return 0;
	}
	d->daemon_reachable = true;
	snprintf(d->daemon_version, sizeof(d->daemon_version), "%s", p2pbuf_server_version(conn));
	r = p2pbuf_list_devices(conn, ret, ret_n);
	if (r < 0)
		return cli_fail(d->cli, r, CLI_REQUEST, p2pbuf_last_message(conn), "doctor");
	add_check(d, "daemon", NULL, ST_INFO, "socket",
		  "p2pbufd %s at %s declares %zu device(s); libp2pbuf has no call for the "
		  "kernel capabilities it probed, so these checks are this client's own",
		  d->daemon_version, path, *ret_n);
	return 0;
}

/* DEVICE as the user wrote it: a name the daemon declares, or a PCI address. */
static int pick_device(struct doctor *d, const struct p2pbuf_device *list, size_t n)
{
	char addr[PCISYS_ADDR_MAX];

	for (size_t i = 0; i < n; i++) {
		if (strcmp(list[i].name, d->device_arg) != 0)
			continue;
		if (list[i].simulated || pcisys_parse_address(list[i].address, addr) < 0) {
			add_check(d, "device", list[i].name, ST_INFO, "daemon",
				  "%s is a simulated device: there is no PCI device to examine",
				  list[i].name);
			return 0;
		}
		add_dev(d, addr, list[i].name, "exporter");
		return 0;
	}
	if (pcisys_parse_address(d->device_arg, addr) == 0) {
		for (size_t i = 0; i < n; i++)
			if (!strcmp(list[i].address, addr))
				return add_dev(d, addr, list[i].name, "exporter"), 0;
		add_dev(d, addr, NULL, "exporter");
		return 0;
	}
	return cli_fail(d->cli, -ENODEV, CLI_REQUEST,
			d->daemon_reachable
			    ? "neither a device of p2pbufd nor a PCI address"
			    : "not a PCI address, and without p2pbufd a device name "
			      "cannot be resolved",
			"doctor %s", d->device_arg);
}

/* Without DEVICE: the daemon's real devices, else every device bound to VFIO. */
static void all_devices(struct doctor *d, const struct p2pbuf_device *list, size_t n)
{
	char vfio[DOCTOR_MAX_DEVICES][PCISYS_ADDR_MAX], addr[PCISYS_ADDR_MAX];
	int m;

	if (d->daemon_reachable) {
		for (size_t i = 0; i < n && d->n_devs < DOCTOR_MAX_DEVICES; i++)
			if (!list[i].simulated && pcisys_parse_address(list[i].address, addr) == 0)
				add_dev(d, addr, list[i].name, "declared");
		return;
	}
	m = pcisys_vfio_devices(d->root, vfio, DOCTOR_MAX_DEVICES);
	for (int i = 0; i < m && i < DOCTOR_MAX_DEVICES; i++)
		add_dev(d, vfio[i], NULL, "declared");
}

static int choose_devices(struct doctor *d)
{
	struct p2pbuf_device *list;
	size_t n;
	char addr[PCISYS_ADDR_MAX];
	int r = ask_daemon(d, &list, &n);

	if (r == 0 && d->device_arg)
		r = pick_device(d, list, n);
	else if (r == 0)
		all_devices(d, list, n);
	p2pbuf_devices_free(list, n);
	if (r || !d->importer_arg)
		return r;
	if (d->n_devs != 1)
		return cli_usage(d->cli,
				 "--importer needs one exporter: name DEVICE (%zu devices "
				 "were found)",
				 d->n_devs);
	if (pcisys_parse_address(d->importer_arg, addr) < 0)
		return cli_usage(d->cli, "--importer takes a PCI address (0000:01:00.0), not '%s'",
				 d->importer_arg);
	d->exporter = &d->devs[0];
	d->importer = add_dev(d, addr, NULL, "importer");
	return 0;
}

/* ---- output ---- */

static void print_chain(const struct p2ppath_node *n, size_t count, const char *host)
{
	for (size_t i = 0; i < count; i++)
		printf("%s%s", i ? " < " : "", n[i].address);
	printf(" < %s\n", host);
}

/* "RR CR" of an ACS Control value's redirect bits, or "none". */
static const char *acs_words(uint16_t ctrl, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s", ctrl & PCISYS_ACS_RR ? "RR " : "",
		 ctrl & PCISYS_ACS_CR ? "CR " : "", ctrl & PCISYS_ACS_EC ? "EC " : "");
	if (!buf[0])
		snprintf(buf, len, "no redirect ");
	buf[strlen(buf) - 1] = '\0';
	return buf;
}

static void print_acs(const struct p2ppath *p)
{
	char words[32];
	const char *sep = " ";

	printf("ACS on the path:");
	for (int side = 0; side < 2; side++)
		for (size_t i = 0; i < (side ? p->n_b : p->n_a); i++) {
			const struct p2ppath_node *n = side ? &p->b[i] : &p->a[i];
			if (!p->on_path[side][i])
				continue;
			if (n->acs < 0)
				printf("%s%s unreadable", sep, n->address);
			else if (n->acs == 0)
				printf("%s%s no ACS", sep, n->address);
			else
				printf("%s%s %s (ctrl 0x%04x)", sep, n->address,
				       acs_words(n->acs_ctrl, words, sizeof(words)), n->acs_ctrl);
			sep = "; ";
		}
	putchar('\n');
}

static void doctor_text(const struct doctor *d, const unsigned counts[ST_COUNT])
{
	for (size_t i = 0; i < d->n_checks; i++) {
		const struct check *c = &d->checks[i];
		_cleanup_free_ char *msg = cli_escape_text(c->message, false);
		printf("%-7s %s%s%s (%s): %s\n", status_names[c->status], c->id,
		       c->subject[0] ? " " : "", c->subject, c->source, msg);
	}
	if (d->have_path) {
		printf("path from the exporter: ");
		print_chain(d->path.a, d->path.n_a, d->exporter->pci.host_bridge);
		printf("path from the importer: ");
		print_chain(d->path.b, d->path.n_b, d->importer->pci.host_bridge);
		print_acs(&d->path);
	}
	printf("%u ok, %u info, %u warn, %u failed, %u unknown\n", counts[ST_OK], counts[ST_INFO],
	       counts[ST_WARN], counts[ST_FAIL], counts[ST_UNKNOWN]);
}

static void json_opt_str(struct json *j, const char *key, const char *s)
{
	json_str(j, key, s && s[0] ? s : NULL);
}

static void json_dev(struct json *j, const struct doctor_dev *v)
{
	json_begin(j, NULL, '{');
	json_opt_str(j, "name", v->name);
	json_str(j, "address", v->pci.address);
	json_str(j, "role", v->role);
	json_bool(j, "found", v->found);
	json_opt_str(j, "driver", v->found ? v->pci.driver : NULL);
	if (v->found && v->pci.iommu_group >= 0)
		json_i64(j, "iommu_group", v->pci.iommu_group);
	else
		json_null(j, "iommu_group");
	json_opt_str(j, "group_type", v->group_type);
	json_begin(j, "group_members", '[');
	for (int i = 0; i < v->n_members && i < DOCTOR_MAX_MEMBERS; i++)
		json_str(j, NULL, v->members[i]);
	json_end(j, ']');
	json_begin(j, "bars", '[');
	for (size_t i = 0; i < v->pci.n_bars; i++) {
		json_begin(j, NULL, '{');
		json_u64(j, "index", v->pci.bars[i].index);
		json_u64(j, "size", v->pci.bars[i].size);
		json_bool(j, "is_64bit", v->pci.bars[i].is_64bit);
		json_bool(j, "prefetchable", v->pci.bars[i].prefetchable);
		json_bool(j, "io", v->pci.bars[i].io);
		json_end(j, '}');
	}
	json_end(j, ']');
	if (v->found && v->pci.memory_decode >= 0)
		json_bool(j, "memory_decode", v->pci.memory_decode);
	else
		json_null(j, "memory_decode");
	json_str(j, "reset_method",
		 v->found && v->pci.reset_method_known ? v->pci.reset_method : NULL);
	json_end(j, '}');
}

static void json_nodes(struct json *j, const char *key, const struct p2ppath *p, int side)
{
	json_begin(j, key, '[');
	for (size_t i = 0; i < (side ? p->n_b : p->n_a); i++) {
		const struct p2ppath_node *n = side ? &p->b[i] : &p->a[i];
		json_begin(j, NULL, '{');
		json_str(j, "address", n->address);
		json_bool(j, "on_path", p->on_path[side][i]);
		if (n->acs < 0)
			json_null(j, "acs");
		else
			json_bool(j, "acs", n->acs == 1);
		if (n->acs == 1) {
			json_bool(j, "request_redirect", n->acs_ctrl & PCISYS_ACS_RR);
			json_bool(j, "completion_redirect", n->acs_ctrl & PCISYS_ACS_CR);
			json_bool(j, "egress_control", n->acs_ctrl & PCISYS_ACS_EC);
		} else {
			json_null(j, "request_redirect");
			json_null(j, "completion_redirect");
			json_null(j, "egress_control");
		}
		json_end(j, '}');
	}
	json_end(j, ']');
}

static void json_host(struct json *j, const char *key, const struct p2ppath_host_dev *h)
{
	char id[16];

	json_begin(j, key, '{');
	json_str(j, "host_bridge", h->host_bridge);
	json_opt_str(j, "address", h->known ? h->address : NULL);
	snprintf(id, sizeof(id), "%04x:%04x", h->vendor, h->device);
	json_str(j, "id", h->known ? id : NULL);
	json_end(j, '}');
}

static void json_path(struct json *j, const struct doctor *d)
{
	static const char *const host[] = { "not-needed", "cpu",	"listed",
					    "not-same",	  "not-listed", "unknown" };
	const struct p2ppath *p = &d->path;

	json_begin(j, "path", '{');
	json_str(j, "exporter", d->exporter->pci.address);
	json_str(j, "importer", d->importer->pci.address);
	json_nodes(j, "exporter_chain", p, 0);
	json_nodes(j, "importer_chain", p, 1);
	json_str(j, "common", p->common_a >= 0 ? p->a[p->common_a].address : NULL);
	json_i64(j, "distance", p->distance);
	if (p->map == P2PPATH_UNKNOWN)
		json_null(j, "crosses_root_complex");
	else
		json_bool(j, "crosses_root_complex", p->map != P2PPATH_BUS_ADDR);
	json_bool(j, "same_host_bridge", p->same_host_bridge);
	json_str(j, "host_rule", host[p->host]);
	json_host(j, "exporter_host", &p->host_a);
	json_host(j, "importer_host", &p->host_b);
	json_str(j, "verdict", d->verdict);
	json_str(j, "reason", d->verdict_reason);
	json_end(j, '}');
}

static void doctor_json(const struct doctor *d, const unsigned counts[ST_COUNT], int status)
{
	struct json j;

	json_doc_begin(&j);
	json_begin(&j, "doctor", '{');
	json_opt_str(&j, "kernel_release", d->release);
	json_opt_str(&j, "daemon_version", d->daemon_reachable ? d->daemon_version : NULL);
	json_begin(&j, "checks", '[');
	for (size_t i = 0; i < d->n_checks; i++) {
		json_begin(&j, NULL, '{');
		json_str(&j, "check", d->checks[i].id);
		json_opt_str(&j, "subject", d->checks[i].subject);
		json_str(&j, "status", status_names[d->checks[i].status]);
		json_str(&j, "source", d->checks[i].source);
		json_str(&j, "message", d->checks[i].message);
		json_end(&j, '}');
	}
	json_end(&j, ']');
	json_begin(&j, "devices", '[');
	for (size_t i = 0; i < d->n_devs; i++)
		json_dev(&j, &d->devs[i]);
	json_end(&j, ']');
	if (d->have_path)
		json_path(&j, d);
	else
		json_null(&j, "path");
	json_begin(&j, "summary", '{');
	for (int s = 0; s < ST_COUNT; s++) {
		char key[32];
		snprintf(key, sizeof(key), "%s_count", status_names[s]);
		json_u64(&j, key, counts[s]);
	}
	json_end(&j, '}');
	json_i64(&j, "exit_status", status);
	json_end(&j, '}');
	json_doc_end(&j);
}

/* ---- the verb ---- */

enum { OPT_IMPORTER = 0x100 };

static int doctor_option(struct cli *cli, int c, const char *arg, void *ctx)
{
	struct doctor *d = ctx;

	if (c == OPT_IMPORTER)
		d->importer_arg = arg;
	return -1;
}

static int doctor_status(const struct doctor *d, unsigned counts[ST_COUNT])
{
	bool missing = false;

	for (size_t i = 0; i < d->n_checks; i++) {
		counts[d->checks[i].status]++;
		missing = missing ||
			  (!strcmp(d->checks[i].id, "device") && d->checks[i].status == ST_FAIL);
	}
	if (missing && (d->device_arg || d->importer_arg))
		return EXIT_NOT_FOUND;
	return counts[ST_FAIL] ? EXIT_FAIL : 0;
}

static int doctor_run(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		CLI_COMMON_LONGOPTS,
		{ "importer", required_argument, NULL, OPT_IMPORTER },
		{},
	};
	struct doctor d = { .cli = cli, .root = getenv("P2PBUF_DOCTOR_ROOT") };
	unsigned counts[ST_COUNT] = { 0 };
	int r =
	    cli_parse_options(cli, argc, argv, CLI_COMMON_SHORTOPTS, options, doctor_option, &d);

	if (r >= 0)
		return r;
	if (argc - optind > 1)
		return cli_usage(cli, "unexpected argument '%s'", argv[optind + 1]);
	d.device_arg = optind < argc ? argv[optind] : NULL;
	if ((r = choose_devices(&d)) != 0) {
		doctor_free(&d);
		return r;
	}
	check_kernel(&d);
	for (size_t i = 0; i < d.n_devs; i++)
		check_device(&d, &d.devs[i]);
	check_features(&d);
	check_iommu(&d);
	if (d.importer)
		check_path(&d);
	r = doctor_status(&d, counts);
	if (cli->json)
		doctor_json(&d, counts, r);
	else
		doctor_text(&d, counts);
	doctor_free(&d);
	return r;
}

const struct verb verb_doctor = {
	.name = "doctor",
	.synopsis = "[DEVICE] [--importer PCI-ADDRESS]",
	.summary = "check whether this machine can export and import BAR dma-bufs",
	.help = "DEVICE is a device name p2pbufd declares, or a PCI address; without it, the\n"
		"daemon's devices (or, with no daemon, every device bound to vfio-pci) are\n"
		"examined. Needs no daemon; run as root for the config-space checks (ACS,\n"
		"memory decode, PCIe port types) and the export probe, which opens the device\n"
		"through VFIO and so resets it.\n"
		"\n"
		"  --importer PCI-ADDRESS  also judge the peer-to-peer path from DEVICE to the\n"
		"                          importing device: ok, likely to fail, will fail (or\n"
		"                          unknown), as the kernel's P2PDMA code would decide\n"
		"\n"
		"Each line is STATUS CHECK [SUBJECT] (SOURCE): MESSAGE, with STATUS ok, info,\n"
		"warn, fail or unknown, and SOURCE saying how it was found: probe (the kernel\n"
		"answered), config (the kernel's build configuration), inferred (from the\n"
		"version alone), sysfs, config-space, socket, known.\n"
		"Exit status: 0 when no check failed (warnings allowed), 1 when one failed, 5\n"
		"when DEVICE or the importer does not exist.\n",
	.run = doctor_run,
};
