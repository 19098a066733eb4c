/* Framing and request validation shared by the daemon and the client library. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wire.h"

/* ---- EventBatch records, encoded by hand around events protobuf-c packs ----
 *
 * A length-delimited field is its key (field number << 3 | 2), the length as a varint, then
 * the bytes. The batch is ServerMessage{ events(3): EventBatch{ events(1): Event, ... } };
 * each event goes in as key 1 + length + Event, so a batch of one is turned into the plain
 * ServerMessage{ event(2): Event } by changing its key. test-wire checks these numbers
 * against the generated descriptors and decodes what is built. */
#define KEY_LEN(field) ((uint8_t)((field) << 3 | 2))
#define FIELD_SERVER_EVENT 2  /* ServerMessage.event */
#define FIELD_SERVER_EVENTS 3 /* ServerMessage.events */
#define FIELD_BATCH_EVENTS 1  /* EventBatch.events */
#define VARINT_MAX 3	      /* bytes of a varint below 2^21, more than WIRE_MAX_RECORD */
#define WIRE_BATCH_HEAD (1 + VARINT_MAX)

static size_t varint_put(uint8_t *p, size_t v)
{
	size_t n = 0;

	do {
		p[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			p[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

static size_t varint_len(size_t v)
{
	uint8_t scratch[10];

	return varint_put(scratch, v);
}

int wire_batch_add(struct wire_batch *b, const P2pbuf__Event *ev)
{
	size_t size = protobuf_c_message_get_packed_size(&ev->base);
	size_t item = 1 + varint_len(size) + size;
	size_t used = b->len ? b->len : WIRE_BATCH_HEAD;
	/* The record is what follows the room, plus its own key and length. */
	size_t record = used - WIRE_BATCH_HEAD + item;

	if (b->n == WIRE_BATCH_MAX_EVENTS || 1 + varint_len(record) + record > WIRE_MAX_RECORD)
		return -E2BIG;
	if (used + item > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < used + item)
			cap *= 2;
		uint8_t *p = realloc(b->buf, cap);
		if (!p)
			return -ENOMEM;
		b->buf = p;
		b->cap = cap;
	}
	uint8_t *p = b->buf + used;
	*p++ = KEY_LEN(FIELD_BATCH_EVENTS);
	p += varint_put(p, size);
	protobuf_c_message_pack(&ev->base, p);
	b->len = used + item;
	b->n++;
	return 0;
}

const uint8_t *wire_batch_record(struct wire_batch *b, size_t *ret_len)
{
	size_t body = b->len - WIRE_BATCH_HEAD;
	uint8_t head[WIRE_BATCH_HEAD];

	if (b->n == 1) {
		b->buf[WIRE_BATCH_HEAD] = KEY_LEN(FIELD_SERVER_EVENT);
		*ret_len = body;
		return b->buf + WIRE_BATCH_HEAD;
	}
	size_t h = 0;
	head[h++] = KEY_LEN(FIELD_SERVER_EVENTS);
	h += varint_put(head + h, body);
	memcpy(b->buf + WIRE_BATCH_HEAD - h, head, h);
	*ret_len = h + body;
	return b->buf + WIRE_BATCH_HEAD - h;
}

void wire_batch_reset(struct wire_batch *b)
{
	free(b->buf);
	*b = (struct wire_batch){ 0 };
}

void wire_close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

int wire_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (len > WIRE_MAX_RECORD || nfds > WIRE_MAX_FDS)
		return -EMSGSIZE;
	if (nfds > 0) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = control.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	for (;;) {
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return 0;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/* Take the fds out of every SCM_RIGHTS message; more than WIRE_MAX_FDS is a protocol error. */
static int collect_fds(struct msghdr *mh, int fds[WIRE_MAX_FDS], size_t *ret_nfds)
{
	size_t n = 0;
	int r = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const unsigned char *p = CMSG_DATA(cm);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, p + i * sizeof(int), sizeof(int));
			if (n < WIRE_MAX_FDS)
				fds[n++] = fd;
			else {
				close(fd);
				r = -EPROTO;
			}
		}
	}
	*ret_nfds = n;
	return r;
}

static ssize_t recv_record(int sock, void *buf, size_t cap, int fds[WIRE_MAX_FDS], size_t *ret_nfds,
			   int flags)
{
	/* Room for more fds than allowed, so that an over-full message is seen and closed. */
	union {
		char buf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS * 4)];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = sizeof(control.buf),
	};
	ssize_t n;

	*ret_nfds = 0;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;

	int r = collect_fds(&mh, fds, ret_nfds);
	/* An empty record would read as end of stream, and the fds with it would stay open. */
	if (r == 0 && n == 0 && *ret_nfds > 0)
		r = -EPROTO;
	if (r == 0 && (mh.msg_flags & MSG_CTRUNC))
		r = -EPROTO;
	if (r == 0 && (mh.msg_flags & MSG_TRUNC))
		r = -EMSGSIZE;
	if (r < 0) {
		wire_close_fds(fds, *ret_nfds);
		*ret_nfds = 0;
		return r;
	}
	return n;
}

ssize_t wire_recv(int sock, void *buf, size_t cap, int fds[WIRE_MAX_FDS], size_t *ret_nfds)
{
	return recv_record(sock, buf, cap, fds, ret_nfds, MSG_DONTWAIT);
}

ssize_t wire_recv_wait(int sock, void *buf, size_t cap, int fds[WIRE_MAX_FDS], size_t *ret_nfds)
{
	return recv_record(sock, buf, cap, fds, ret_nfds, 0);
}

int wire_send_msg(int sock, const ProtobufCMessage *msg, const int *fds, size_t nfds)
{
	uint8_t buf[WIRE_MAX_RECORD];
	size_t len = protobuf_c_message_get_packed_size(msg);

	if (len > sizeof(buf))
		return -EMSGSIZE;
	protobuf_c_message_pack(msg, buf);
	return wire_send(sock, buf, len, fds, nfds);
}

/* ---- strings a peer sends ----
 *
 * Every string field of a request has a rule: a device name holds only the characters the
 * policy allows in one (so it can be echoed in replies and logs as it is); free text (labels,
 * the client's name) is valid UTF-8 without control, line-breaking or bidirectional-text
 * characters, so that it can never forge a line in a log or a listing, nor reorder what a
 * terminal shows. protobuf-c ends a decoded string at its first NUL, so NULs are looked for in
 * the record's bytes (wire_check_record), before anything reads the decoded text. */

enum string_fault {
	FAULT_EMPTY,
	FAULT_LONG,
	FAULT_NUL,
	FAULT_UTF8,
	FAULT_CONTROL,
	FAULT_LINE,
	FAULT_BIDI,
	FAULT_NAME,
	N_FAULTS
};

struct string_rule {
	const ProtobufCMessageDescriptor *msg;
	const char *field;
	bool name;     /* a device name: letters, digits, "_", "." and "-"; else free text */
	bool required; /* missing or empty is refused */
	size_t max;    /* bytes */
	const char *why[N_FAULTS];
};

#define STR_(x) #x
#define STR(x) STR_(x)
#define WHY(f, max)                                                                                \
	{                                                                                          \
		[FAULT_EMPTY] = f ": missing or empty",                                            \
		[FAULT_LONG] = f ": too long (more than " STR(max) " bytes)",                      \
		[FAULT_NUL] = f ": contains a NUL byte", [FAULT_UTF8] = f ": not valid UTF-8",     \
		[FAULT_CONTROL] = f ": contains a control character",                              \
		[FAULT_LINE] = f ": contains a line or paragraph separator",                       \
		[FAULT_BIDI] = f ": contains a bidirectional-text control character",              \
		[FAULT_NAME] = f ": may contain only letters, digits, \"_\", \".\" and \"-\"",     \
	}

enum { RULE_HELLO_NAME, RULE_EXPORT_DEVICE, RULE_EXPORT_LABEL, RULE_RESET_DEVICE, N_RULES };

static const struct string_rule string_rules[N_RULES] = {
	[RULE_HELLO_NAME] = { &p2pbuf__hello__descriptor, "client_name", false, false,
			      WIRE_MAX_STRING, WHY("hello.client_name", WIRE_MAX_STRING) },
	[RULE_EXPORT_DEVICE] = { &p2pbuf__export__descriptor, "device", true, true, WIRE_MAX_NAME,
				 WHY("export.device", WIRE_MAX_NAME) },
	[RULE_EXPORT_LABEL] = { &p2pbuf__export__descriptor, "label", false, false, WIRE_MAX_STRING,
				WHY("export.label", WIRE_MAX_STRING) },
	[RULE_RESET_DEVICE] = { &p2pbuf__reset__descriptor, "device", true, true, WIRE_MAX_NAME,
				WHY("reset.device", WIRE_MAX_NAME) },
};

/* The length of the well-formed UTF-8 sequence at s (n > 0 bytes left) and its code point
 * in *ret_cp, or 0: overlong forms, surrogates and values past U+10FFFF are not well formed
 * (RFC 3629). */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80) {
		*ret_cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
		lo = s[0] == 0xe0 ? 0xa0 : 0x80; /* overlong */
		hi = s[0] == 0xed ? 0x9f : 0xbf; /* surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
		lo = s[0] == 0xf0 ? 0x90 : 0x80; /* overlong */
		hi = s[0] == 0xf4 ? 0x8f : 0xbf; /* past U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if (i > 1 && (s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	*ret_cp = cp;
	return len;
}

/* What is wrong with code point cp in free text, or N_FAULTS if nothing. */
static enum string_fault text_fault(uint32_t cp)
{
	if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) /* C0, DEL, C1 (NEL) */
		return FAULT_CONTROL;
	if (cp == 0x2028 || cp == 0x2029)
		return FAULT_LINE;
	/* ALM, LRM, RLM, the embeddings and overrides, the isolates. */
	if (cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069))
		return FAULT_BIDI;
	return N_FAULTS;
}

static bool is_name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* The first fault of s under rule, or N_FAULTS if it passes. */
static enum string_fault string_fault(const struct string_rule *rule, const char *s)
{
	if (!s || !s[0])
		return rule->required ? FAULT_EMPTY : N_FAULTS;
	size_t n = strnlen(s, rule->max + 1);
	if (n > rule->max)
		return FAULT_LONG;
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0, k; i < n; i += k) {
		uint32_t cp;
		if (rule->name) {
			if (!is_name_char(u[i]))
				return FAULT_NAME;
			k = 1;
			continue;
		}
		k = utf8_next(u + i, n - i, &cp);
		if (k == 0)
			return FAULT_UTF8;
		enum string_fault f = text_fault(cp);
		if (f != N_FAULTS)
			return f;
	}
	return N_FAULTS;
}

static int check_string(int rule, const char *s, const char **why)
{
	enum string_fault f = string_fault(&string_rules[rule], s);

	if (f == N_FAULTS)
		return 0;
	*why = string_rules[rule].why[f];
	return -EINVAL;
}

const char *wire_string_rule_of(const ProtobufCMessageDescriptor *msg, const char *field)
{
	for (size_t i = 0; i < N_RULES; i++)
		if (string_rules[i].msg == msg && strcmp(string_rules[i].field, field) == 0)
			return string_rules[i].why[FAULT_NUL];
	return NULL;
}

/* A varint at p (n bytes): its length, or 0 if it does not end within n or 10 bytes. */
static size_t varint(const uint8_t *p, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n && i < 10; i++) {
		v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80)) {
			*ret = v;
			return i + 1;
		}
	}
	return 0;
}

#define SCAN_MAX_DEPTH 8 /* deeper than any request message nests */

/* Walk the encoded message p[0..n) of type d and refuse a NUL inside any string field, at
 * any depth. The record has already been decoded, so malformed encoding is not expected; it
 * is refused all the same. */
static int scan_nul(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n, int depth,
		    const char **why)
{
	for (size_t i = 0; i < n;) {
		uint64_t key, v;
		size_t k = varint(p + i, n - i, &key);
		if (k == 0)
			goto malformed;
		i += k;
		switch (key & 7) {
		case 0: /* varint */
			k = varint(p + i, n - i, &v);
			if (k == 0)
				goto malformed;
			i += k;
			break;
		case 1: /* 64-bit */
		case 5: /* 32-bit */
			k = (key & 7) == 1 ? 8 : 4;
			if (n - i < k)
				goto malformed;
			i += k;
			break;
		case 2: { /* length-delimited */
			k = varint(p + i, n - i, &v);
			if (k == 0 || v > n - i - k)
				goto malformed;
			i += k;
			const ProtobufCFieldDescriptor *f =
			    key >> 3 <= UINT32_MAX
				? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3))
				: NULL;
			if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p + i, 0, v)) {
				const char *w = wire_string_rule_of(d, f->name);
				*why = w ? w : "a string field contains a NUL byte";
				return -EINVAL;
			}
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
				if (depth >= SCAN_MAX_DEPTH)
					goto malformed;
				int r = scan_nul(f->descriptor, p + i, v, depth + 1, why);
				if (r < 0)
					return r;
			}
			i += v;
			break;
		}
		default: /* groups: protobuf-c does not decode them */
			goto malformed;
		}
	}
	return 0;
malformed:
	*why = "malformed record";
	return -EINVAL;
}

static int check_export(const P2pbuf__Export *e, const char **why)
{
	int r = check_string(RULE_EXPORT_DEVICE, e->device, why);

	if (r == 0)
		r = check_string(RULE_EXPORT_LABEL, e->label, why);
	if (r < 0)
		return r;
	if (!e->has_bar) {
		*why = "export: no BAR given";
		return -EINVAL;
	}
	if (e->n_ranges > WIRE_MAX_RANGES) {
		*why = "export: too many ranges";
		return -E2BIG;
	}
	for (size_t i = 0; i < e->n_ranges; i++) {
		if (!e->ranges[i]->has_length) {
			*why = "export: a range has no length";
			return -EINVAL;
		}
	}
	return 0;
}

int wire_check_request(const P2pbuf__Request *req, const char **ret_why)
{
	const char *why = NULL;
	int r = 0;

	switch (req->body_case) {
	case P2PBUF__REQUEST__BODY_HELLO:
		r = check_string(RULE_HELLO_NAME, req->hello->client_name, &why);
		break;
	case P2PBUF__REQUEST__BODY_EXPORT:
		r = check_export(req->export, &why);
		break;
	case P2PBUF__REQUEST__BODY_RESET:
		r = check_string(RULE_RESET_DEVICE, req->reset->device, &why);
		break;
	case P2PBUF__REQUEST__BODY_RELEASE:
		if (!req->release->has_lease_id) {
			why = "release: no lease id";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY_REVOKE:
		if (!req->revoke->has_lease_id) {
			why = "revoke: no lease id";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY_RECLAIM:
		if (!req->reclaim->has_lease_id || !req->reclaim->has_token ||
		    req->reclaim->token.len != WIRE_TOKEN_LEN) {
			why = "reclaim: needs a lease id and its token";
			r = -EINVAL;
		}
		break;
	case P2PBUF__REQUEST__BODY__NOT_SET:
		why = "request has no body (unknown request type?)";
		r = -EOPNOTSUPP;
		break;
	default:
		break;
	}
	if (r < 0)
		*ret_why = why;
	return r;
}

int wire_check_record(const P2pbuf__Request *req, const uint8_t *buf, size_t len,
		      const char **ret_why)
{
	int r = scan_nul(&p2pbuf__request__descriptor, buf, len, 0, ret_why);

	return r < 0 ? r : wire_check_request(req, ret_why);
}

static const char *const reason_names[] = {
	[P2PBUF__REASON__REASON_UNSPECIFIED] = "unspecified",
	[P2PBUF__REASON__REASON_RELEASED] = "released",
	[P2PBUF__REASON__REASON_RESET] = "reset",
	[P2PBUF__REASON__REASON_DEVICE_GONE] = "device-gone",
	[P2PBUF__REASON__REASON_DEVICE_CYCLE] = "device-cycle",
	[P2PBUF__REASON__REASON_POLICY] = "policy",
	[P2PBUF__REASON__REASON_ADMIN] = "admin",
	[P2PBUF__REASON__REASON_TTL] = "ttl",
	[P2PBUF__REASON__REASON_OWNER_DISCONNECTED] = "owner-disconnected",
	[P2PBUF__REASON__REASON_SHUTDOWN] = "shutdown",
	[P2PBUF__REASON__REASON_RESTART] = "restart",
};

static const char *const device_state_names[] = {
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_STATE_UNSPECIFIED] = "unspecified",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_READY] = "ready",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING] = "cycling",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE] = "gone",
	[P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED] = "failed",
};

static const char *const lease_state_names[] = {
	[P2PBUF__LEASE_STATE_KIND__LEASE_STATE_UNSPECIFIED] = "unspecified",
	[P2PBUF__LEASE_STATE_KIND__LEASE_ACTIVE] = "active",
	[P2PBUF__LEASE_STATE_KIND__LEASE_REVOKING] = "revoking",
	[P2PBUF__LEASE_STATE_KIND__LEASE_ENDED] = "ended",
};

#define NAME_OF(table, i)                                                                          \
	((i) >= 0 && (size_t)(i) < sizeof(table) / sizeof((table)[0]) && (table)[i] ? (table)[i]   \
										    : "unknown")

const char *wire_reason_name(int reason)
{
	return NAME_OF(reason_names, reason);
}

const char *wire_device_state_name(int state)
{
	return NAME_OF(device_state_names, state);
}

const char *wire_lease_state_name(int state)
{
	return NAME_OF(lease_state_names, state);
}
