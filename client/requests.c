/* libp2pbuf: one function per request, and the deep copies that turn protobuf-c's structs into
 * the plain ones of p2pbuf.h (the caller never sees, and never frees, a protobuf-c type). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libp2pbuf-private.h"

#include "macro.h"

static void server_message_freep(P2pbuf__ServerMessage **msg)
{
	if (*msg)
		p2pbuf__server_message__free_unpacked(*msg, NULL);
}
#define _cleanup_msg_ _cleanup_(server_message_freep)

/* Copy a string the API promises is never NULL ("" stands in for an absent field). */
static int dup_string(const char *s, char **ret)
{
	char *d = strdup(s ? s : "");

	if (!d)
		return -ENOMEM;
	*ret = d;
	return 0;
}

/* Copy a string the API documents as "or NULL". */
static int dup_optional(const char *s, char **ret)
{
	if (!s || !s[0]) {
		*ret = NULL;
		return 0;
	}
	return dup_string(s, ret);
}

static int copy_ranges(P2pbuf__Range *const *src, size_t n, struct p2pbuf_range **ret,
		       size_t *ret_n)
{
	struct p2pbuf_range *r = NULL;

	if (n > 0) {
		r = calloc(n, sizeof(*r));
		if (!r)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		r[i] = (struct p2pbuf_range){ .offset = src[i]->offset, .length = src[i]->length };
	*ret = r;
	*ret_n = n;
	return 0;
}

static void device_clear(struct p2pbuf_device *d)
{
	free(d->name);
	free(d->address);
	free(d->backend);
	free(d->message);
	for (size_t i = 0; i < d->n_bars; i++)
		free(d->bars[i].reserved);
	free(d->bars);
}

void p2pbuf_devices_free(struct p2pbuf_device *devices, size_t n)
{
	if (!devices)
		return;
	for (size_t i = 0; i < n; i++)
		device_clear(&devices[i]);
	free(devices);
}

static int copy_bar(const P2pbuf__Bar *src, struct p2pbuf_bar *dst)
{
	dst->index = src->index;
	dst->size = src->size;
	dst->is_64bit = src->is_64bit;
	dst->prefetchable = src->prefetchable;
	return copy_ranges(src->reserved, src->n_reserved, &dst->reserved, &dst->n_reserved);
}

/* Fill dst (zeroed by the caller) from src; on failure dst holds what was copied so far, for
 * device_clear(). */
static int copy_device(const P2pbuf__Device *src, struct p2pbuf_device *dst)
{
	int r;

	dst->simulated = src->simulated;
	dst->state = (enum p2pbuf_device_state)src->state;
	dst->generation = src->generation;
	dst->leases = src->leases;
	if ((r = dup_string(src->name, &dst->name)) < 0 ||
	    (r = dup_string(src->address, &dst->address)) < 0 ||
	    (r = dup_string(src->backend, &dst->backend)) < 0 ||
	    (r = dup_optional(src->message, &dst->message)) < 0)
		return r;
	if (src->n_bars > 0) {
		dst->bars = calloc(src->n_bars, sizeof(*dst->bars));
		if (!dst->bars)
			return -ENOMEM;
	}
	for (size_t i = 0; i < src->n_bars; i++) {
		dst->n_bars = i + 1;
		r = copy_bar(src->bars[i], &dst->bars[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int copy_devices(const P2pbuf__ListDevicesReply *src, struct p2pbuf_device **ret,
			size_t *ret_n)
{
	struct p2pbuf_device *d;
	size_t n = src ? src->n_devices : 0;

	if (n == 0) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	d = calloc(n, sizeof(*d));
	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int r = copy_device(src->devices[i], &d[i]);
		if (r < 0) {
			p2pbuf_devices_free(d, i + 1);
			return r;
		}
	}
	*ret = d;
	*ret_n = n;
	return 0;
}

int p2pbuf_list_devices(struct p2pbuf *conn, struct p2pbuf_device **ret_devices, size_t *ret_n)
{
	P2pbuf__ListDevices body = P2PBUF__LIST_DEVICES__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;
	const P2pbuf__Reply *reply;
	int r;

	if (!conn || !ret_devices || !ret_n)
		return -EINVAL;
	req.body_case = P2PBUF__REQUEST__BODY_LIST_DEVICES;
	req.list_devices = &body;
	r = conn_call(conn, &req, NULL, &msg);
	if (r != 0)
		return r;
	reply = msg->reply;
	/* An empty list may come as an absent body: every field is optional. */
	if (reply->body_case == P2PBUF__REPLY__BODY_LIST_DEVICES)
		return copy_devices(reply->list_devices, ret_devices, ret_n);
	if (reply->body_case == P2PBUF__REPLY__BODY__NOT_SET)
		return copy_devices(NULL, ret_devices, ret_n);
	return conn_protocol_error(conn);
}

static void lease_clear(struct p2pbuf_lease *l)
{
	free(l->device);
	free(l->ranges);
	free(l->label);
	free(l->rule);
	free(l->owner_unit);
}

void p2pbuf_leases_free(struct p2pbuf_lease *leases, size_t n)
{
	if (!leases)
		return;
	for (size_t i = 0; i < n; i++)
		lease_clear(&leases[i]);
	free(leases);
}

static int copy_lease(const P2pbuf__Lease *src, struct p2pbuf_lease *dst)
{
	int r;

	dst->id = src->id;
	dst->bar = src->bar;
	dst->size = src->size;
	dst->state = (enum p2pbuf_lease_state)src->state;
	dst->reason = (enum p2pbuf_reason)src->reason;
	dst->owner_uid = src->owner_uid;
	dst->owner_pid = src->owner_pid;
	dst->created_ms = src->created_ms;
	dst->expires_ms = src->expires_ms;
	dst->holders = src->has_holders ? src->holders : -1;
	dst->generation = src->generation;
	dst->deadline_ms = src->deadline_ms;
	dst->lingering = src->lingering;
	if ((r = dup_string(src->device, &dst->device)) < 0 ||
	    (r = dup_optional(src->label, &dst->label)) < 0 ||
	    (r = dup_string(src->rule, &dst->rule)) < 0 ||
	    (r = dup_optional(src->owner_unit, &dst->owner_unit)) < 0)
		return r;
	return copy_ranges(src->ranges, src->n_ranges, &dst->ranges, &dst->n_ranges);
}

/* Leases gathered over the pages of one listing. */
struct lease_list {
	struct p2pbuf_lease *v;
	size_t n, cap;
};

/* The most leases one listing gathers: what a daemon that never stops saying "more" can make
 * us allocate (the daemon itself defaults to 4096 leases in all). */
#define LIST_LEASES_MAX (1u << 20)

/* Make room for add more leases, zeroed, so that a half-copied one can still be freed. */
static int lease_list_grow(struct lease_list *list, size_t add)
{
	struct p2pbuf_lease *v;
	size_t cap;

	if (list->n + add <= list->cap)
		return 0;
	cap = list->n + add > 2 * list->cap ? list->n + add : 2 * list->cap;
	v = reallocarray(list->v, cap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	memset(v + list->cap, 0, (cap - list->cap) * sizeof(*v));
	list->v = v;
	list->cap = cap;
	return 0;
}

static int lease_list_append(struct lease_list *list, const P2pbuf__ListLeasesReply *page)
{
	int r = lease_list_grow(list, page->n_leases);

	for (size_t i = 0; r == 0 && i < page->n_leases; i++)
		r = copy_lease(page->leases[i], &list->v[list->n++]);
	return r;
}

/* A page must make progress: when more follow, it lists at least one lease, with ids above
 * after; otherwise a daemon could keep us asking forever. */
static bool page_valid(const P2pbuf__ListLeasesReply *page, uint64_t after, size_t have)
{
	if (page->n_leases > LIST_LEASES_MAX - have)
		return false;
	if (!page->more)
		return true;
	return page->n_leases > 0 && page->leases[page->n_leases - 1]->id > after;
}

/* Ask for the page of leases after id after and append it to list. *ret_after is where the
 * next page starts, 0 when this was the last one. */
static int list_page(struct p2pbuf *conn, bool all, uint64_t after, struct lease_list *list,
		     uint64_t *ret_after)
{
	P2pbuf__ListLeases body = P2PBUF__LIST_LEASES__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;
	const P2pbuf__ListLeasesReply *page;
	int r;

	body.has_all = true;
	body.all = all;
	body.has_after_id = after > 0;
	body.after_id = after;
	req.body_case = P2PBUF__REQUEST__BODY_LIST_LEASES;
	req.list_leases = &body;
	r = conn_call(conn, &req, NULL, &msg);
	if (r != 0)
		return r;
	/* An empty list may come as an absent body: every field is optional. */
	if (msg->reply->body_case == P2PBUF__REPLY__BODY__NOT_SET) {
		*ret_after = 0;
		return 0;
	}
	if (msg->reply->body_case != P2PBUF__REPLY__BODY_LIST_LEASES)
		return conn_protocol_error(conn);
	page = msg->reply->list_leases;
	if (!page_valid(page, after, list->n))
		return conn_protocol_error(conn);
	r = lease_list_append(list, page);
	if (r < 0)
		return r;
	*ret_after = page->more ? page->leases[page->n_leases - 1]->id : 0;
	return 0;
}

int p2pbuf_list_leases(struct p2pbuf *conn, bool all, struct p2pbuf_lease **ret_leases,
		       size_t *ret_n)
{
	struct lease_list list = { 0 };
	uint64_t after = 0;
	int r;

	if (!conn || !ret_leases || !ret_n)
		return -EINVAL;
	/* Listings come in pages that fit one record; leases may come and go between pages. */
	do
		r = list_page(conn, all, after, &list, &after);
	while (r == 0 && after != 0);
	if (r < 0) {
		p2pbuf_leases_free(list.v, list.n);
		return r;
	}
	if (list.n == 0) {
		free(list.v);
		list.v = NULL;
	}
	*ret_leases = list.v;
	*ret_n = list.n;
	return 0;
}

/* Take lease id and size out of an Export reply; the fd is closed if the reply is unusable. */
static int export_result(struct p2pbuf *conn, const P2pbuf__Reply *reply, int fd,
			 uint64_t *ret_lease_id, uint64_t *ret_size)
{
	if (reply->body_case != P2PBUF__REPLY__BODY_EXPORT || !reply->export->has_lease_id) {
		close(fd);
		return conn_protocol_error(conn);
	}
	if (ret_lease_id)
		*ret_lease_id = reply->export->lease_id;
	if (ret_size)
		*ret_size = reply->export->size;
	if (reply->export->has_reclaim_token)
		conn_track_lease(conn, reply->export->lease_id, reply->export->reclaim_token.data,
				 reply->export->reclaim_token.len);
	return fd;
}

int p2pbuf_export(struct p2pbuf *conn, const char *device, unsigned bar,
		  const struct p2pbuf_range *ranges, size_t n_ranges, const char *label,
		  uint64_t *ret_lease_id, uint64_t *ret_size)
{
	P2pbuf__Export body = P2PBUF__EXPORT__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;
	P2pbuf__Range *pb = NULL, **pbp = NULL;
	size_t n;
	int fd = -1, r;

	if (!conn || (n_ranges > 0 && !ranges))
		return -EINVAL;
	/* One range past the cap is enough for the shared request check to refuse with its
	 * own explanation (-E2BIG), without allocating whatever a caller asked for. */
	n = n_ranges > WIRE_MAX_RANGES ? WIRE_MAX_RANGES + 1 : n_ranges;
	if (n > 0) {
		pb = calloc(n, sizeof(*pb));
		pbp = calloc(n, sizeof(*pbp));
		if (!pb || !pbp) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++) {
		pb[i] = (P2pbuf__Range)P2PBUF__RANGE__INIT;
		pb[i].has_offset = pb[i].has_length = true;
		pb[i].offset = ranges[i].offset;
		pb[i].length = ranges[i].length;
		pbp[i] = &pb[i];
	}
	body.device = (char *)device;
	body.has_bar = true;
	body.bar = bar;
	body.n_ranges = n;
	body.ranges = pbp;
	body.label = (char *)label;
	req.body_case = P2PBUF__REQUEST__BODY_EXPORT;
	req.export = &body;

	r = conn_call(conn, &req, &fd, &msg);
	if (r == 0)
		r = export_result(conn, msg->reply, fd, ret_lease_id, ret_size);
out:
	free(pb);
	free(pbp);
	return r;
}

int p2pbuf_release(struct p2pbuf *conn, uint64_t lease_id)
{
	P2pbuf__Release body = P2PBUF__RELEASE__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;

	if (!conn)
		return -EINVAL;
	body.has_lease_id = true;
	body.lease_id = lease_id;
	req.body_case = P2PBUF__REQUEST__BODY_RELEASE;
	req.release = &body;
	int r = conn_call(conn, &req, NULL, &msg);
	if (r == 0 || r == -ENOENT)
		conn_untrack_lease(conn, lease_id);
	return r;
}

int p2pbuf_lease_release(struct p2pbuf *conn, uint64_t lease_id, int fd)
{
	/* Close first: the daemon ends the lease only once nobody holds the buffer. */
	if (fd >= 0)
		close(fd);
	return p2pbuf_release(conn, lease_id);
}

int p2pbuf_reset(struct p2pbuf *conn, const char *device)
{
	P2pbuf__Reset body = P2PBUF__RESET__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;

	if (!conn)
		return -EINVAL;
	body.device = (char *)device;
	req.body_case = P2PBUF__REQUEST__BODY_RESET;
	req.reset = &body;
	return conn_call(conn, &req, NULL, &msg);
}

int p2pbuf_revoke(struct p2pbuf *conn, uint64_t lease_id)
{
	P2pbuf__Revoke body = P2PBUF__REVOKE__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;

	if (!conn)
		return -EINVAL;
	body.has_lease_id = true;
	body.lease_id = lease_id;
	req.body_case = P2PBUF__REQUEST__BODY_REVOKE;
	req.revoke = &body;
	return conn_call(conn, &req, NULL, &msg);
}

int p2pbuf_subscribe(struct p2pbuf *conn, bool all)
{
	P2pbuf__Subscribe body = P2PBUF__SUBSCRIBE__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;

	if (!conn)
		return -EINVAL;
	body.has_all = true;
	body.all = all;
	req.body_case = P2PBUF__REQUEST__BODY_SUBSCRIBE;
	req.subscribe = &body;
	int r = conn_call(conn, &req, NULL, &msg);
	if (r == 0)
		conn_track_subscription(conn, all);
	return r;
}

void p2pbuf_status_free(struct p2pbuf_status *status)
{
	if (!status)
		return;
	free(status->version);
	free(status->policy);
	status->version = status->policy = NULL;
}

static int copy_status(const P2pbuf__StatusReply *src, struct p2pbuf_status *ret)
{
	struct p2pbuf_status s = {
		.uptime_ms = src->uptime_ms,
		.clients = src->clients,
		.leases = src->leases,
		.devices = src->devices,
		.admin = src->admin,
		.max_leases = src->max_leases,
		.max_clients = src->max_clients,
		.fd_limit = src->fd_limit,
	};

	if (dup_string(src->version, &s.version) < 0 || dup_string(src->policy, &s.policy) < 0) {
		p2pbuf_status_free(&s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

int p2pbuf_status(struct p2pbuf *conn, struct p2pbuf_status *ret_status)
{
	P2pbuf__Status body = P2PBUF__STATUS__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;
	int r;

	if (!conn || !ret_status)
		return -EINVAL;
	req.body_case = P2PBUF__REQUEST__BODY_STATUS;
	req.status = &body;
	r = conn_call(conn, &req, NULL, &msg);
	if (r != 0)
		return r;
	if (msg->reply->body_case != P2PBUF__REPLY__BODY_STATUS)
		return conn_protocol_error(conn);
	return copy_status(msg->reply->status, ret_status);
}

void p2pbuf_reload_free(struct p2pbuf_reload *result)
{
	if (!result)
		return;
	for (size_t i = 0; i < result->n_errors; i++)
		free(result->errors[i]);
	free(result->errors);
	*result = (struct p2pbuf_reload){ 0 };
}

/* The lines of text as a new array of strings (a refused reload's message: one error a line). */
static int split_lines(const char *text, char ***ret_lines, size_t *ret_n)
{
	size_t n = 0, cap = 0;
	char **lines = NULL;

	for (const char *s = text ? text : ""; *s;) {
		size_t len = strcspn(s, "\n");
		if (n == cap) {
			char **grown = reallocarray(lines, cap = cap ? 2 * cap : 8, sizeof(*lines));
			if (!grown)
				goto oom;
			lines = grown;
		}
		if (!(lines[n] = strndup(s, len)))
			goto oom;
		n++;
		s += len + (s[len] == '\n');
	}
	*ret_lines = lines;
	*ret_n = n;
	return 0;
oom:
	while (n > 0)
		free(lines[--n]);
	free(lines);
	return -ENOMEM;
}

static void copy_reload(const P2pbuf__ReloadReply *src, struct p2pbuf_reload *ret)
{
	*ret = (struct p2pbuf_reload){
		.rules = src->rules,
		.devices = src->devices,
		.rules_added = src->rules_added,
		.rules_removed = src->rules_removed,
		.devices_added = src->devices_added,
		.devices_removed = src->devices_removed,
		.devices_changed = src->devices_changed,
		.leases_revoked = src->leases_revoked,
	};
}

int p2pbuf_reload(struct p2pbuf *conn, struct p2pbuf_reload *ret_result)
{
	P2pbuf__Reload body = P2PBUF__RELOAD__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	_cleanup_msg_ P2pbuf__ServerMessage *msg = NULL;
	int r;

	if (!conn || !ret_result)
		return -EINVAL;
	req.body_case = P2PBUF__REQUEST__BODY_RELOAD;
	req.reload = &body;
	r = conn_call(conn, &req, NULL, &msg);
	if (r == -EINVAL) {
		/* The daemon refused the policy: every error is a line of the message. */
		struct p2pbuf_reload res = { 0 };
		if (split_lines(p2pbuf_last_message(conn), &res.errors, &res.n_errors) < 0)
			return -ENOMEM;
		*ret_result = res;
		return r;
	}
	if (r != 0)
		return r;
	if (msg->reply->body_case != P2PBUF__REPLY__BODY_RELOAD)
		return conn_protocol_error(conn);
	copy_reload(msg->reply->reload, ret_result);
	return 0;
}

const char *p2pbuf_reason_name(enum p2pbuf_reason reason)
{
	return wire_reason_name((int)reason);
}

const char *p2pbuf_device_state_name(enum p2pbuf_device_state state)
{
	return wire_device_state_name((int)state);
}

const char *p2pbuf_lease_state_name(enum p2pbuf_lease_state state)
{
	return wire_lease_state_name((int)state);
}
