/* Framing and request validation shared by the daemon and the client library. */
#include <errno.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
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
#define WT_VARINT 0 /* wire types */
#define WT_LEN 2
#define KEY(field, type) ((uint64_t)(field) << 3 | (type))
#define KEY_LEN(field) ((uint8_t)KEY(field, WT_LEN)) /* one byte: fields 1-15 */
#define FIELD_SERVER_EVENT 2			     /* ServerMessage.event */
#define FIELD_SERVER_EVENTS 3			     /* ServerMessage.events */
#define FIELD_BATCH_EVENTS 1			     /* EventBatch.events */
#define VARINT_MAX 3 /* bytes of a varint below 2^21, more than WIRE_MAX_RECORD */
#define WIRE_BATCH_HEAD (1 + VARINT_MAX)

static size_t varint_put(uint8_t *p, uint64_t v)
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

static size_t varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
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

/* ---- replies, encoded by hand ----
 *
 * protobuf-c learns a nested message's length by packing it (get_packed_size) before it
 * packs it, at every level: a Reply costs three passes over the ExportReply inside it, most
 * of what the daemon spends on an export outside the kernel. Here each length is summed once
 * from the fields, and the bytes are those protobuf-c would write (fields in number order,
 * proto2 presence: a scalar or bytes field when its has_ flag is set, a string or message
 * when its pointer is set; test-wire compares both on many replies). A message with
 * unknown fields, which only a decoded one has, is left to protobuf-c. */
#define FIELD_SERVER_REPLY 1 /* ServerMessage.reply */

struct out {
	uint8_t *p;
};

static void put_varint_field(struct out *o, uint64_t key, uint64_t v)
{
	o->p += varint_put(o->p, key);
	o->p += varint_put(o->p, v);
}

static void put_bytes_field(struct out *o, uint64_t key, const void *data, size_t len)
{
	o->p += varint_put(o->p, key);
	o->p += varint_put(o->p, len);
	memcpy(o->p, data, len);
	o->p += len;
}

static size_t varint_field_len(uint64_t key, uint64_t v)
{
	return varint_len(key) + varint_len(v);
}

static size_t bytes_field_len(uint64_t key, size_t len)
{
	return varint_len(key) + varint_len(len) + len;
}

/* sint32's ZigZag: small magnitudes of either sign in few bytes. */
static uint64_t zigzag32(int32_t v)
{
	return (uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31));
}

static size_t export_reply_len(const P2pbuf__ExportReply *er)
{
	size_t n = 0;

	if (er->has_lease_id)
		n += varint_field_len(KEY(1, WT_VARINT), er->lease_id);
	if (er->has_size)
		n += varint_field_len(KEY(2, WT_VARINT), er->size);
	if (er->has_generation)
		n += varint_field_len(KEY(3, WT_VARINT), er->generation);
	if (er->has_expires_ms)
		n += varint_field_len(KEY(4, WT_VARINT), (uint64_t)er->expires_ms);
	if (er->has_reclaim_token)
		n += bytes_field_len(KEY(5, WT_LEN), er->reclaim_token.len);
	return n;
}

static void put_export_reply(struct out *o, const P2pbuf__ExportReply *er)
{
	if (er->has_lease_id)
		put_varint_field(o, KEY(1, WT_VARINT), er->lease_id);
	if (er->has_size)
		put_varint_field(o, KEY(2, WT_VARINT), er->size);
	if (er->has_generation)
		put_varint_field(o, KEY(3, WT_VARINT), er->generation);
	if (er->has_expires_ms)
		put_varint_field(o, KEY(4, WT_VARINT), (uint64_t)er->expires_ms);
	if (er->has_reclaim_token)
		put_bytes_field(o, KEY(5, WT_LEN), er->reclaim_token.data, er->reclaim_token.len);
}

/* The Reply's body: its field number and message, or NULL for none. */
static const ProtobufCMessage *reply_body(const P2pbuf__Reply *r, uint32_t *ret_field)
{
	const void *body;

	switch (r->body_case) {
	case P2PBUF__REPLY__BODY_HELLO:
		body = r->hello;
		break;
	case P2PBUF__REPLY__BODY_LIST_DEVICES:
		body = r->list_devices;
		break;
	case P2PBUF__REPLY__BODY_EXPORT:
		body = r->export;
		break;
	case P2PBUF__REPLY__BODY_LIST_LEASES:
		body = r->list_leases;
		break;
	case P2PBUF__REPLY__BODY_STATUS:
		body = r->status;
		break;
	case P2PBUF__REPLY__BODY_RELOAD:
		body = r->reload;
		break;
	default:
		return NULL;
	}
	*ret_field = (uint32_t)r->body_case;
	return body;
}

ssize_t wire_pack_reply(const P2pbuf__Reply *r, uint8_t *buf, size_t cap)
{
	uint32_t field = 0;
	const ProtobufCMessage *body = reply_body(r, &field);
	const P2pbuf__ExportReply *er =
	    r->body_case == P2PBUF__REPLY__BODY_EXPORT ? r->export : NULL;

	if (r->base.n_unknown_fields || (er && er->base.n_unknown_fields)) {
		P2pbuf__ServerMessage sm = P2PBUF__SERVER_MESSAGE__INIT;
		sm.body_case = P2PBUF__SERVER_MESSAGE__BODY_REPLY;
		sm.reply = (P2pbuf__Reply *)r;
		size_t len = protobuf_c_message_get_packed_size(&sm.base);
		if (len > cap)
			return -EMSGSIZE;
		return (ssize_t)protobuf_c_message_pack(&sm.base, buf);
	}
	size_t msg_len = r->message ? strlen(r->message) : 0;
	size_t body_len = !body ? 0
			  : er	? export_reply_len(er)
				: protobuf_c_message_get_packed_size(body);
	size_t n = 0;
	if (r->has_request_id)
		n += varint_field_len(KEY(1, WT_VARINT), r->request_id);
	if (r->has_error)
		n += varint_field_len(KEY(2, WT_VARINT), zigzag32(r->error));
	if (r->message)
		n += bytes_field_len(KEY(3, WT_LEN), msg_len);
	if (r->has_nfds)
		n += varint_field_len(KEY(4, WT_VARINT), r->nfds);
	if (body)
		n += bytes_field_len(KEY(field, WT_LEN), body_len);
	size_t total = bytes_field_len(KEY(FIELD_SERVER_REPLY, WT_LEN), n);
	if (total > cap)
		return -EMSGSIZE;

	struct out o = { buf };
	o.p += varint_put(o.p, KEY(FIELD_SERVER_REPLY, WT_LEN));
	o.p += varint_put(o.p, n);
	if (r->has_request_id)
		put_varint_field(&o, KEY(1, WT_VARINT), r->request_id);
	if (r->has_error)
		put_varint_field(&o, KEY(2, WT_VARINT), zigzag32(r->error));
	if (r->message)
		put_bytes_field(&o, KEY(3, WT_LEN), r->message, msg_len);
	if (r->has_nfds)
		put_varint_field(&o, KEY(4, WT_VARINT), r->nfds);
	if (body) {
		o.p += varint_put(o.p, KEY(field, WT_LEN));
		o.p += varint_put(o.p, body_len);
		if (er)
			put_export_reply(&o, er);
		else
			o.p += protobuf_c_message_pack(body, o.p);
	}
	return (ssize_t)(o.p - buf);
}

/* ---- the decode arena ---- */

/* A block that did not fit in the buffer: this header, then the allocation, as aligned as
 * malloc's own. */
union wire_arena_spill {
	union wire_arena_spill *next;
	max_align_t align;
};

#define ARENA_ALIGN _Alignof(max_align_t)

static void *arena_alloc(void *data, size_t size)
{
	struct wire_arena *a = data;
	size_t n = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);

	if (n >= size && n <= a->cap - a->used) {
		void *p = a->buf + a->used;
		a->used += n;
		return p;
	}
	if (size > SIZE_MAX - sizeof(union wire_arena_spill))
		return NULL;
	union wire_arena_spill *b = malloc(sizeof(*b) + size);
	if (!b)
		return NULL;
	b->next = a->spill;
	a->spill = b;
	return b + 1;
}

/* protobuf-c frees only on its error paths, the half-decoded message: the reset takes it. */
static void arena_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

void wire_arena_init(struct wire_arena *a, void *buf, size_t cap)
{
	uintptr_t at = (uintptr_t)buf,
		  start = (at + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
	size_t skip = (size_t)(start - at);

	*a = (struct wire_arena){
		.alloc = { .alloc = arena_alloc, .free = arena_free, .allocator_data = a },
		.buf = (uint8_t *)start,
		.cap = cap > skip ? (cap - skip) & ~(ARENA_ALIGN - 1) : 0,
	};
}

void wire_arena_reset(struct wire_arena *a)
{
	while (a->spill) {
		union wire_arena_spill *next = a->spill->next;
		free(a->spill);
		a->spill = next;
	}
	a->used = 0;
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

/* ---- the grant path's requests, decoded by hand ----
 *
 * protobuf-c reads a message in two passes over a table of its fields, and each nested
 * message again: most of what the daemon spends on a Release outside the kernel, and a
 * third of it on an Export. The two requests a client sends for every buffer are read here
 * in one pass, when they have the plain shape every encoder writes: each field known, with
 * its wire type, at most once (ranges repeated), one-byte keys, varints of at most ten bytes
 * and a uint32 that fits, strings without a NUL byte. Anything else (another request, an
 * unknown or repeated field, anything malformed) is left to protobuf-c, whose answer it then
 * is: what is decoded here is what p2pbuf__request__unpack() gives for the same bytes (the
 * wire fuzzer compares them on every input), and a string checked here for NUL needs no
 * second scan of the record. */
struct in {
	const uint8_t *p, *end;
};

#define FAST_NO 0  /* not a shape read here: protobuf-c decides */
#define FAST_YES 1 /* decoded */

/* A varint of at most ten bytes whose value fits 64 bits. */
static bool get_varint(struct in *in, uint64_t *ret)
{
	size_t k = varint(in->p, (size_t)(in->end - in->p), ret);

	if (k == 0 || (k == 10 && in->p[9] > 1))
		return false;
	in->p += k;
	return true;
}

/* The next field: its number and wire type from a one-byte key. */
static bool get_key(struct in *in, unsigned *ret_field, unsigned *ret_type)
{
	if (in->p >= in->end || (*in->p & 0x80))
		return false;
	*ret_field = *in->p >> 3;
	*ret_type = *in->p & 7;
	in->p++;
	return true;
}

/* A length-delimited field's contents. */
static bool get_len(struct in *in, struct in *ret)
{
	uint64_t n;

	if (!get_varint(in, &n) || n > (uint64_t)(in->end - in->p))
		return false;
	*ret = (struct in){ in->p, in->p + n };
	in->p += n;
	return true;
}

static bool get_u32(struct in *in, uint32_t *ret)
{
	uint64_t v;

	if (!get_varint(in, &v) || v > UINT32_MAX)
		return false;
	*ret = (uint32_t)v;
	return true;
}

static bool get_string(struct in *in, struct wire_arena *a, char **ret)
{
	struct in s;

	if (!get_len(in, &s) || memchr(s.p, '\0', (size_t)(s.end - s.p)))
		return false;
	size_t n = (size_t)(s.end - s.p);
	char *str = arena_alloc(a, n + 1);
	if (!str)
		return false;
	memcpy(str, s.p, n);
	str[n] = '\0';
	*ret = str;
	return true;
}

/* Each field at most once: bit n for field n. */
#define ONCE(seen, field) (!((seen) & (1u << (field))) && ((seen) |= 1u << (field)))

static bool fast_range(struct in in, struct wire_arena *a, P2pbuf__Range **ret)
{
	P2pbuf__Range *r = arena_alloc(a, sizeof(*r));
	unsigned field, type, seen = 0;

	if (!r)
		return false;
	p2pbuf__range__init(r);
	while (in.p < in.end) {
		if (!get_key(&in, &field, &type) || type != WT_VARINT || !ONCE(seen, field))
			return false;
		if (field == 1 && get_varint(&in, &r->offset))
			r->has_offset = true;
		else if (field == 2 && get_varint(&in, &r->length))
			r->has_length = true;
		else
			return false;
	}
	*ret = r;
	return true;
}

static bool fast_export(struct in in, struct wire_arena *a, P2pbuf__Export **ret)
{
	P2pbuf__Export *e = arena_alloc(a, sizeof(*e));
	unsigned field, type, seen = 0;
	size_t n = 0;

	if (!e)
		return false;
	p2pbuf__export__init(e);
	/* Count the ranges first (walking keys and lengths only), for their array. */
	for (struct in c = in; c.p < c.end;) {
		struct in skip;
		uint64_t v;
		if (!get_key(&c, &field, &type))
			return false;
		if (type == WT_LEN ? !get_len(&c, &skip) : type != WT_VARINT || !get_varint(&c, &v))
			return false;
		n += field == 3;
	}
	if (n && !(e->ranges = arena_alloc(a, n * sizeof(*e->ranges))))
		return false;
	while (in.p < in.end) {
		struct in sub;
		get_key(&in, &field, &type);
		if (field == 3 && type == WT_LEN) {
			if (!get_len(&in, &sub) || !fast_range(sub, a, &e->ranges[e->n_ranges]))
				return false;
			e->n_ranges++;
			continue;
		}
		if (!ONCE(seen, field))
			return false;
		if (field == 1 && type == WT_LEN && get_string(&in, a, &e->device))
			continue;
		if (field == 2 && type == WT_VARINT && get_u32(&in, &e->bar)) {
			e->has_bar = true;
			continue;
		}
		if (field == 4 && type == WT_LEN && get_string(&in, a, &e->label))
			continue;
		return false;
	}
	*ret = e;
	return true;
}

static bool fast_release(struct in in, struct wire_arena *a, P2pbuf__Release **ret)
{
	P2pbuf__Release *r = arena_alloc(a, sizeof(*r));
	unsigned field, type, seen = 0;

	if (!r)
		return false;
	p2pbuf__release__init(r);
	while (in.p < in.end) {
		if (!get_key(&in, &field, &type) || type != WT_VARINT || !ONCE(seen, field) ||
		    field != 1 || !get_varint(&in, &r->lease_id))
			return false;
		r->has_lease_id = true;
	}
	*ret = r;
	return true;
}

static int fast_request(struct in in, struct wire_arena *a, P2pbuf__Request **ret)
{
	P2pbuf__Request *req = arena_alloc(a, sizeof(*req));
	unsigned field, type, seen = 0;

	if (!req)
		return FAST_NO;
	p2pbuf__request__init(req);
	while (in.p < in.end) {
		struct in sub;
		if (!get_key(&in, &field, &type) || !ONCE(seen, field))
			return FAST_NO;
		if (field == 1 && type == WT_VARINT && get_varint(&in, &req->request_id)) {
			req->has_request_id = true;
			continue;
		}
		/* One body: a second (which protobuf-c lets replace the first) is not this shape.
		 */
		if (type != WT_LEN || req->body_case || !get_len(&in, &sub))
			return FAST_NO;
		if (field == P2PBUF__REQUEST__BODY_EXPORT && fast_export(sub, a, &req->export))
			req->body_case = P2PBUF__REQUEST__BODY_EXPORT;
		else if (field == P2PBUF__REQUEST__BODY_RELEASE &&
			 fast_release(sub, a, &req->release))
			req->body_case = P2PBUF__REQUEST__BODY_RELEASE;
		else
			return FAST_NO;
	}
	/* A request without a body is protobuf-c's (and the check's) to explain. */
	if (!req->body_case)
		return FAST_NO;
	*ret = req;
	return FAST_YES;
}

int wire_decode_request(struct wire_arena *a, const uint8_t *buf, size_t len,
			P2pbuf__Request **ret_req, const char **ret_why)
{
	size_t mark = a->used;

	if (fast_request((struct in){ buf, buf + len }, a, ret_req) == FAST_YES)
		return wire_check_request(*ret_req, ret_why);
	/* What the attempt took from the buffer is given back (spills wait for the reset). */
	a->used = mark;
	*ret_req = p2pbuf__request__unpack(&a->alloc, len, buf);
	if (!*ret_req) {
		*ret_why = "undecodable record";
		return -EBADMSG;
	}
	return wire_check_record(*ret_req, buf, len, ret_why);
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
