#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "macro.h"
#include "peer.h"
#include "persist.h"

#define MAGIC "P2PBUFST"
#define HEADER_LEN 16		     /* magic, format version, sequence number */
#define ENTRY_MAX (64 << 10)	     /* one StateEntry; a lease is a few hundred bytes */
#define RECORD_MAX ((size_t)1 << 30) /* a record larger than this is not ours */
#define STATE_PREFIX "state."	     /* then the record's sequence number */
#define COMPACT_AT ((off_t)4 << 20)  /* rewrite the record once it grows past this */

struct persist {
	unsigned max_fds;
	unsigned parked; /* fds in the store: leases and devices (the record not counted) */
	int state_fd;
	uint32_t seq;	  /* the record's sequence number: a rewrite gets the next */
	off_t size;	  /* bytes written to the record */
	off_t rewrite_at; /* rewrite the record once it is this large */
	bool broken;	  /* a write failed: the record can no longer be trusted */
};

/* ---- the record's framing ---- */

static uint32_t crc32(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffff;

	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320 & -(c & 1));
	}
	return ~c;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int write_all(int fd, const void *buf, size_t len, off_t at)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		at += n;
	}
	return 0;
}

static int append(struct persist *p, const P2pbuf__StateEntry *e)
{
	uint8_t buf[8 + ENTRY_MAX];
	size_t len = p2pbuf__state_entry__get_packed_size(e);

	if (p->state_fd < 0 || p->broken)
		return -EIO;
	if (len > ENTRY_MAX)
		return -E2BIG;
	p2pbuf__state_entry__pack(e, buf + 8);
	put_le32(buf, (uint32_t)len);
	put_le32(buf + 4, crc32(buf + 8, len));
	int r = write_all(p->state_fd, buf, 8 + len, p->size);
	if (r < 0) {
		/* A hole in the record would hide later entries: stop trusting it. */
		p->broken = true;
		return r;
	}
	p->size += (off_t)(8 + len);
	return 0;
}

static void state_name(uint32_t seq, char buf[PERSIST_MAX_NAME])
{
	snprintf(buf, PERSIST_MAX_NAME, STATE_PREFIX "%u", seq);
}

static int new_record(uint32_t seq, int *ret_fd)
{
	uint8_t header[HEADER_LEN] = MAGIC;
	_cleanup_close_ int fd = memfd_create("p2pbufd-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return -errno;
	put_le32(header + 8, PERSIST_FORMAT_VERSION);
	put_le32(header + 12, seq);
	int r = write_all(fd, header, sizeof(header), 0);
	if (r < 0)
		return r;
	/* Only appends from now on: nobody, the daemon included, can cut it short. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* ---- parking ---- */

static int park(const char *name, int fd)
{
	char msg[PERSIST_MAX_NAME + 32];

	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	int r = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	return r > 0 ? 0 : r < 0 ? r : -ENOTCONN;
}

void persist_forget(struct persist *p, const char *name)
{
	char msg[PERSIST_MAX_NAME + 32];

	if (!persist_enabled(p))
		return;
	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	sd_notify(0, msg);
}

int persist_new(unsigned max_fds, int state_fd, uint32_t seq, struct persist **ret)
{
	struct persist *p = calloc(1, sizeof(*p));
	char name[PERSIST_MAX_NAME];
	struct stat st;
	int r;

	if (!p)
		return -ENOMEM;
	p->max_fds = max_fds;
	p->state_fd = -1;
	p->seq = seq;
	/* Tests make the rewrite happen after a few leases instead of megabytes of them. */
	const char *at = getenv("P2PBUF_STATE_REWRITE_BYTES");
	p->rewrite_at = at && atoll(at) > 0 ? (off_t)atoll(at) : COMPACT_AT;
	if (max_fds) {
		if (state_fd >= 0 && fstat(state_fd, &st) == 0) {
			p->state_fd = state_fd;
			p->size = st.st_size;
		} else {
			closep(&state_fd);
			state_name(p->seq, name);
			r = new_record(p->seq, &p->state_fd);
			if (r == 0)
				r = park(name, p->state_fd);
			if (r < 0) {
				closep(&p->state_fd);
				free(p);
				return r;
			}
			p->size = HEADER_LEN;
		}
	} else {
		closep(&state_fd);
	}
	*ret = p;
	return 0;
}

void persist_free(struct persist *p)
{
	if (!p)
		return;
	closep(&p->state_fd);
	free(p);
}

bool persist_enabled(const struct persist *p)
{
	return p && p->max_fds > 0 && p->state_fd >= 0;
}

void persist_barrier(const struct persist *p)
{
	if (p && p->max_fds > 0)
		(void)sd_notify_barrier(0, PERSIST_BARRIER_MS * 1000);
}

void persist_count_kept(struct persist *p, unsigned n)
{
	if (p)
		p->parked += n;
}

unsigned persist_parked(const struct persist *p)
{
	return p ? p->parked : 0;
}

static void lease_name(uint64_t id, char buf[PERSIST_MAX_NAME])
{
	snprintf(buf, PERSIST_MAX_NAME, "lease.%" PRIu64, id);
}

static int append_lease(struct persist *p, const struct lease *l)
{
	P2pbuf__StateEntry e = P2PBUF__STATE_ENTRY__INIT;
	P2pbuf__StateLease sl = P2PBUF__STATE_LEASE__INIT;
	P2pbuf__Range ranges[64], *rp[64];
	struct stat st;

	if (fstat(l->fd, &st) < 0)
		return -errno;
	sl.has_id = sl.has_generation = sl.has_bar = sl.has_size = sl.has_uid = sl.has_gid = true;
	sl.has_pid = sl.has_created_ms = sl.has_expires_ms = sl.has_token = sl.has_inode = true;
	sl.id = l->id;
	sl.device = (char *)l->device->decl.name;
	sl.generation = l->generation;
	sl.bar = l->bar;
	sl.size = l->size;
	sl.label = (char *)l->label;
	sl.rule = (char *)l->rule_where;
	sl.uid = l->peer->view.uid;
	sl.gid = l->peer->view.gid;
	sl.pid = l->peer->pid;
	sl.unit = l->peer->unit;
	sl.created_ms = l->created_ms;
	sl.expires_ms = l->expires_ms;
	sl.token = (ProtobufCBinaryData){ sizeof(l->token), (uint8_t *)l->token };
	sl.inode = st.st_ino;
	for (size_t i = 0; i < l->n_ranges && i < ARRAY_SIZE(ranges); i++) {
		p2pbuf__range__init(&ranges[i]);
		ranges[i].has_offset = ranges[i].has_length = true;
		ranges[i].offset = l->ranges[i].offset;
		ranges[i].length = l->ranges[i].length;
		rp[i] = &ranges[i];
	}
	sl.n_ranges = l->n_ranges < ARRAY_SIZE(ranges) ? l->n_ranges : ARRAY_SIZE(ranges);
	sl.ranges = rp;
	/* Every group the connection had (gid_t is the record's uint32). */
	_Static_assert(sizeof(gid_t) == sizeof(uint32_t), "gid_t is 32 bits");
	sl.n_groups = l->peer->view.n_groups;
	sl.groups = (uint32_t *)l->peer->view.groups;
	e.body_case = P2PBUF__STATE_ENTRY__BODY_LEASE_ADDED;
	e.lease_added = &sl;
	return append(p, &e);
}

int persist_lease_added(struct persist *p, const struct lease *l)
{
	char name[PERSIST_MAX_NAME];

	if (!persist_enabled(p))
		return 0;
	/* Two places stay free for the record and its replacement while it is rewritten. */
	if (p->parked + 3 > p->max_fds)
		return -ENOSPC;
	lease_name(l->id, name);
	/* Parked first: a crash after this leaves an fd without a record, which the next
	 * instance treats as unknown and closes after cycling its device. */
	int r = park(name, l->fd);
	if (r < 0)
		return r;
	r = append_lease(p, l);
	if (r < 0) {
		persist_forget(p, name);
		return r;
	}
	p->parked++;
	return 0;
}

void persist_lease_revoking(struct persist *p, const struct lease *l, int64_t deadline_real)
{
	P2pbuf__StateEntry e = P2PBUF__STATE_ENTRY__INIT;
	P2pbuf__StateRevoking sr = P2PBUF__STATE_REVOKING__INIT;

	if (!persist_enabled(p))
		return;
	sr.has_id = sr.has_reason = sr.has_deadline_ms = sr.has_lingering = true;
	sr.id = l->id;
	sr.reason = l->state == LEASE_REVOKING ? l->reason : 0; /* 0: active again */
	sr.deadline_ms = deadline_real;
	sr.lingering = l->lingering;
	e.body_case = P2PBUF__STATE_ENTRY__BODY_LEASE_REVOKING;
	e.lease_revoking = &sr;
	append(p, &e);
}

void persist_lease_ended(struct persist *p, const struct lease *l)
{
	P2pbuf__StateEntry e = P2PBUF__STATE_ENTRY__INIT;
	char name[PERSIST_MAX_NAME];

	if (!persist_enabled(p))
		return;
	e.body_case = P2PBUF__STATE_ENTRY__BODY_LEASE_ENDED;
	e.lease_ended = l->id;
	/* Recorded, then let go: a crash between leaves a record without an fd, which the next
	 * instance reads as ended. */
	append(p, &e);
	lease_name(l->id, name);
	persist_forget(p, name);
	if (p->parked)
		p->parked--;
}

static void device_name(const struct device *dev, const char *role, char buf[PERSIST_MAX_NAME])
{
	snprintf(buf, PERSIST_MAX_NAME, "dev.%s.%s", dev->decl.name, role);
}

void persist_device_opened(struct persist *p, const struct device *dev, bool park_fds)
{
	P2pbuf__StateEntry e = P2PBUF__STATE_ENTRY__INIT;
	P2pbuf__StateDevice sd = P2PBUF__STATE_DEVICE__INIT;
	struct parked_fd fds[DEVICE_MAX_PARKED];
	char name[PERSIST_MAX_NAME];
	size_t n = dev->ops->park && dev->handle ? dev->ops->park(dev->handle, fds) : 0;

	if (!persist_enabled(p))
		return;
	for (size_t i = 0; park_fds && i < n; i++) {
		device_name(dev, fds[i].role, name);
		if (park(name, fds[i].fd) == 0)
			p->parked++;
	}
	sd.name = (char *)dev->decl.name;
	sd.has_generation = true;
	sd.generation = dev->generation;
	sd.address = (char *)(dev->decl.kind == POLICY_DEVICE_SIM ? "sim" : dev->decl.pci);
	e.body_case = P2PBUF__STATE_ENTRY__BODY_DEVICE;
	e.device = &sd;
	append(p, &e);
}

/* Another open device of reg that parks fd too (the share of one IOMMU group: its group
 * node, container or iommufd), or NULL. A cycling device's fds have left the store already. */
static const struct device *sharer(struct registry *reg, const struct device *dev, int fd)
{
	struct parked_fd fds[DEVICE_MAX_PARKED];

	for (size_t i = 0; reg && i < registry_count(reg); i++) {
		const struct device *o = registry_device(reg, i);
		if (o == dev || !o->handle || o->cycling || !o->ops->park)
			continue;
		size_t n = o->ops->park(o->handle, fds);
		for (size_t k = 0; k < n; k++)
			if (fds[k].fd == fd)
				return o;
	}
	return NULL;
}

void persist_device_closing(struct persist *p, const struct device *dev, struct registry *reg)
{
	struct parked_fd fds[DEVICE_MAX_PARKED];
	char name[PERSIST_MAX_NAME];
	size_t n = dev->ops->park && dev->handle ? dev->ops->park(dev->handle, fds) : 0;

	if (!persist_enabled(p))
		return;
	for (size_t i = 0; i < n; i++) {
		device_name(dev, fds[i].role, name);
		persist_forget(p, name);
		/* The service manager keeps a repeated fd once, under the first name it was given:
		 * a group's shared fds are in the store as the first device's alone. Its other
		 * devices go on using them, so they move to one of those (the removal is acted on
		 * first: the notifications are read in order), or a restart would find that
		 * device without its group. */
		const struct device *o =
		    strcmp(fds[i].role, "device") != 0 ? sharer(reg, dev, fds[i].fd) : NULL;
		if (o) {
			device_name(o, fds[i].role, name);
			if (park(name, fds[i].fd) == 0)
				continue;
		}
		if (p->parked)
			p->parked--;
	}
}

bool persist_wants_rewrite(const struct persist *p)
{
	return persist_enabled(p) && (p->broken || p->size > p->rewrite_at);
}

/* The entry that re-creates l in a fresh record. */
static int append_lease(struct persist *p, const struct lease *l);

int persist_rewrite(struct persist *p, const struct lease_table *t, struct registry *reg,
		    int64_t (*wall)(void *ctx, int64_t mono), void *ctx)
{
	struct persist fresh = *p;
	char old_name[PERSIST_MAX_NAME], new_name[PERSIST_MAX_NAME];
	const struct lease *l;
	int r;

	if (!persist_enabled(p))
		return 0;
	fresh.seq = p->seq + 1;
	fresh.broken = false;
	fresh.size = HEADER_LEN;
	r = new_record(fresh.seq, &fresh.state_fd);
	if (r < 0)
		return r;
	for (size_t i = 0; r == 0 && i < registry_count(reg); i++) {
		const struct device *dev = registry_device(reg, i);
		P2pbuf__StateEntry e = P2PBUF__STATE_ENTRY__INIT;
		P2pbuf__StateDevice sd = P2PBUF__STATE_DEVICE__INIT;
		sd.name = (char *)dev->decl.name;
		sd.has_generation = true;
		sd.generation = dev->generation;
		sd.address = (char *)(dev->decl.kind == POLICY_DEVICE_SIM ? "sim" : dev->decl.pci);
		e.body_case = P2PBUF__STATE_ENTRY__BODY_DEVICE;
		e.device = &sd;
		r = append(&fresh, &e);
	}
	TAILQ_FOREACH (l, &t->all, in_table) {
		if (r == 0)
			r = append_lease(&fresh, l);
		if (r == 0 && l->state == LEASE_REVOKING) {
			persist_lease_revoking(&fresh, l, wall(ctx, l->deadline_ms));
			r = fresh.broken ? -EIO : 0;
		}
	}
	if (r == 0) {
		P2pbuf__StateEntry e = P2PBUF__STATE_ENTRY__INIT;
		e.body_case = P2PBUF__STATE_ENTRY__BODY_NEXT_LEASE_ID;
		e.next_lease_id = t->next_id;
		r = append(&fresh, &e);
	}
	state_name(fresh.seq, new_name);
	if (r == 0)
		r = park(new_name, fresh.state_fd);
	if (r < 0) {
		closep(&fresh.state_fd);
		return r;
	}
	/* The new record is parked before the old one goes: a crash between leaves both, and
	 * the next instance reads the one with the higher sequence number. */
	state_name(p->seq, old_name);
	persist_forget(p, old_name);
	closep(&p->state_fd);
	*p = fresh;
	return 0;
}

/* ---- the inventory ---- */

static int read_record(int fd, uint8_t **ret_buf, size_t *ret_len)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < HEADER_LEN || (size_t)st.st_size > RECORD_MAX)
		return -EBADMSG;
	uint8_t *buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	for (size_t got = 0; got < (size_t)st.st_size;) {
		ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
		if (n <= 0) {
			free(buf);
			return n < 0 ? -errno : -EIO;
		}
		got += (size_t)n;
	}
	*ret_buf = buf;
	*ret_len = (size_t)st.st_size;
	return 0;
}

static int by_id(const void *a, const void *b)
{
	const P2pbuf__StateLease *x = *(P2pbuf__StateLease *const *)a;
	const P2pbuf__StateLease *y = *(P2pbuf__StateLease *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static ssize_t find_lease(const struct inventory *inv, uint64_t id)
{
	P2pbuf__StateLease key = { .id = id }, *kp = &key;
	P2pbuf__StateLease **hit =
	    bsearch(&kp, inv->leases, inv->n_leases, sizeof(*inv->leases), by_id);

	return hit ? hit - inv->leases : -1;
}

static int grow(void **array, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t c = *cap ? *cap * 2 : 64;
	void *a = reallocarray(*array, c, size);
	if (!a)
		return -ENOMEM;
	*array = a;
	*cap = c;
	return 0;
}

static void add_device(struct inventory *inv, P2pbuf__StateDevice *d, size_t *cap)
{
	for (size_t i = 0; i < inv->n_devices; i++)
		if (d->name && inv->devices[i]->name &&
		    strcmp(d->name, inv->devices[i]->name) == 0) {
			inv->devices[i] = d;
			return;
		}
	if (grow((void **)&inv->devices, cap, inv->n_devices, sizeof(*inv->devices)) == 0)
		inv->devices[inv->n_devices++] = d;
}

/* Replay one entry. Leases arrive in id order, so the array stays sorted. */
static int replay(struct inventory *inv, P2pbuf__StateEntry *e, size_t *cap_l, size_t *cap_d)
{
	ssize_t i;

	switch (e->body_case) {
	case P2PBUF__STATE_ENTRY__BODY_LEASE_ADDED:
		if (inv->n_leases && e->lease_added->id <= inv->leases[inv->n_leases - 1]->id)
			return -EBADMSG;
		/* One capacity for both arrays: grow them together. */
		size_t cap = *cap_l;
		if (grow((void **)&inv->revoking, &cap, inv->n_leases, sizeof(*inv->revoking)) <
			0 ||
		    grow((void **)&inv->leases, cap_l, inv->n_leases, sizeof(*inv->leases)) < 0)
			return -ENOMEM;
		inv->revoking[inv->n_leases] = NULL;
		inv->leases[inv->n_leases++] = e->lease_added;
		if (e->lease_added->id >= inv->next_lease_id)
			inv->next_lease_id = e->lease_added->id + 1;
		return 0;
	case P2PBUF__STATE_ENTRY__BODY_LEASE_ENDED:
		if ((i = find_lease(inv, e->lease_ended)) >= 0) {
			inv->revoking[i] = NULL;
			inv->leases[i]->has_id = false; /* ended: left out below */
		}
		return 0;
	case P2PBUF__STATE_ENTRY__BODY_LEASE_REVOKING:
		if ((i = find_lease(inv, e->lease_revoking->id)) >= 0)
			inv->revoking[i] = e->lease_revoking->reason ? e->lease_revoking : NULL;
		return 0;
	case P2PBUF__STATE_ENTRY__BODY_DEVICE:
		add_device(inv, e->device, cap_d);
		return 0;
	case P2PBUF__STATE_ENTRY__BODY_NEXT_LEASE_ID:
		if (e->next_lease_id > inv->next_lease_id)
			inv->next_lease_id = e->next_lease_id;
		return 0;
	default:
		return 0; /* a kind a newer daemon wrote in the same format: ignored */
	}
}

/* Decode every entry of the record in buf; a torn or corrupted tail ends it. */
static int parse_record(struct inventory *inv, const uint8_t *buf, size_t len, char **ret_error)
{
	P2pbuf__StateEntry **entries = NULL;
	size_t n = 0, cap = 0, cap_l = 0, cap_d = 0;
	uint32_t version;

	if (memcmp(buf, MAGIC, 8) != 0)
		return asprintf(ret_error, "the state record is not p2pbufd's") < 0 ? -ENOMEM
										    : -EBADMSG;
	version = get_le32(buf + 8);
	if (version > PERSIST_FORMAT_VERSION)
		return asprintf(
			   ret_error,
			   "the state record has format %u, newer than this p2pbufd reads (%u)",
			   version, PERSIST_FORMAT_VERSION) < 0
			   ? -ENOMEM
			   : -EPROTONOSUPPORT;
	for (size_t at = HEADER_LEN; at + 8 <= len;) {
		uint32_t elen = get_le32(buf + at), crc = get_le32(buf + at + 4);
		if (elen > ENTRY_MAX || at + 8 + elen > len || crc32(buf + at + 8, elen) != crc)
			break;
		P2pbuf__StateEntry *e = p2pbuf__state_entry__unpack(NULL, elen, buf + at + 8);
		if (!e)
			break;
		if (grow((void **)&entries, &cap, n, sizeof(*entries)) < 0) {
			p2pbuf__state_entry__free_unpacked(e, NULL);
			break;
		}
		entries[n++] = e;
		if (replay(inv, e, &cap_l, &cap_d) < 0)
			break;
		at += 8 + elen;
	}
	inv->entries = entries;
	inv->n_entries = n;
	/* Leave only the live leases. */
	size_t k = 0;
	for (size_t i = 0; i < inv->n_leases; i++)
		if (inv->leases[i]->has_id) {
			inv->revoking[k] = inv->revoking[i];
			inv->leases[k++] = inv->leases[i];
		}
	inv->n_leases = k;
	return 0;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int sort_fd(struct inventory *inv, int fd, const char *name, size_t *cap)
{
	if (has_prefix(name, "lease.") || has_prefix(name, "dev.")) {
		if (grow((void **)&inv->fds, cap, inv->n_fds, sizeof(*inv->fds)) < 0)
			return -ENOMEM;
		snprintf(inv->fds[inv->n_fds].name, PERSIST_MAX_NAME, "%s", name);
		inv->fds[inv->n_fds++].fd = fd;
	} else if (has_prefix(name, STATE_PREFIX)) {
		/* Two records after a rewrite cut short: the higher sequence number is newer. */
		uint32_t seq = (uint32_t)strtoul(name + strlen(STATE_PREFIX), NULL, 10);
		if (inv->state_fd >= 0 && seq <= inv->state_seq) {
			close(fd);
		} else {
			closep(&inv->state_fd);
			inv->state_fd = fd;
			inv->state_seq = seq;
		}
	} else if (inv->listen_fd < 0 && sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, NULL, 0) > 0) {
		inv->listen_fd = fd;
	} else {
		close(fd); /* nothing of ours */
	}
	return 0;
}

static void close_parked(struct inventory *inv)
{
	for (size_t i = 0; i < inv->n_fds; i++)
		closep(&inv->fds[i].fd);
	closep(&inv->state_fd);
}

int inventory_load(struct inventory *inv, char **ret_error)
{
	char **names = NULL;
	size_t cap = 0;
	int r = 0;

	*inv = (struct inventory){ .listen_fd = -1, .state_fd = -1, .next_lease_id = 1 };
	*ret_error = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (r == 0)
			r = sort_fd(inv, fd, names && names[i] ? names[i] : "unknown", &cap);
		else
			close(fd);
		free(names ? names[i] : NULL);
	}
	free(names);
	if (r < 0 || inv->state_fd < 0)
		return r;
	uint8_t *buf = NULL;
	size_t len = 0;
	r = read_record(inv->state_fd, &buf, &len);
	if (r == 0)
		r = parse_record(inv, buf, len, ret_error);
	else
		r = asprintf(ret_error, "the state record cannot be read: %s", strerror(-r)) < 0
			? -ENOMEM
			: r;
	free(buf);
	if (r < 0) {
		/* Fail closed: nothing parked is kept when its record cannot be trusted. */
		close_parked(inv);
		inv->n_leases = inv->n_devices = 0;
	}
	return r;
}

void inventory_free(struct inventory *inv)
{
	close_parked(inv);
	closep(&inv->listen_fd);
	free(inv->fds);
	free(inv->leases);
	free(inv->revoking);
	free(inv->devices);
	P2pbuf__StateEntry **entries = inv->entries;
	for (size_t i = 0; i < inv->n_entries; i++)
		p2pbuf__state_entry__free_unpacked(entries[i], NULL);
	free(entries);
	*inv = (struct inventory){ .listen_fd = -1, .state_fd = -1 };
}

int inventory_take(struct inventory *inv, const char *name)
{
	for (size_t i = 0; i < inv->n_fds; i++)
		if (inv->fds[i].fd >= 0 && strcmp(inv->fds[i].name, name) == 0)
			return TAKE_FD(inv->fds[i].fd);
	return -1;
}

const P2pbuf__StateDevice *inventory_device(const struct inventory *inv, const char *name)
{
	for (size_t i = 0; i < inv->n_devices; i++)
		if (inv->devices[i]->name && strcmp(inv->devices[i]->name, name) == 0)
			return inv->devices[i];
	return NULL;
}
