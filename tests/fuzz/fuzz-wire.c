/* libFuzzer target for the daemon's request path: bytes as wire_recv() would hand them over,
 * unpacked as a Request, checked by wire_check_request(), and packed again (a decoded request
 * must survive the round trip, and packing what was decoded must be stable: the bytes of
 * pack(unpack(pack(x))) equal those of pack(x)); then the same bytes sent as one record to a
 * real daemon core on simulated devices, through a connection it serves (a socketpair it
 * adopted, past Hello), so that the dispatch table and every handler see them. Every record
 * must get an answer or drop that one connection, never crash the daemon. The daemon's own
 * decoder (wire_decode_request) must agree with protobuf-c on every input. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "daemon.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether req or any message inside it kept fields this schema does not know. */
static bool has_unknown(const P2pbuf__Request *req)
{
	if (req->base.n_unknown_fields)
		return true;
	if (req->body_case == P2PBUF__REQUEST__BODY__NOT_SET)
		return false;
	/* Every body member is a message pointer in the same union. */
	const ProtobufCMessage *body = (const ProtobufCMessage *)req->hello;
	if (body->n_unknown_fields)
		return true;
	if (req->body_case == P2PBUF__REQUEST__BODY_EXPORT)
		for (size_t i = 0; i < req->export->n_ranges; i++)
			if (req->export->ranges[i]->base.n_unknown_fields)
				return true;
	return false;
}

/* The same Request packed twice must give the same bytes, and a second decode must agree
 * with the first about validity. */
static void round_trip(const P2pbuf__Request *req, int r)
{
	size_t len = p2pbuf__request__get_packed_size(req);
	uint8_t *a = malloc(len ? len : 1), *b;

	if (!a)
		abort();
	if (p2pbuf__request__pack(req, a) != len)
		abort();
	P2pbuf__Request *again = p2pbuf__request__unpack(NULL, len, a);
	if (!again) {
		/* protobuf-c 1.4.1 accepts an over-long encoding of field number 0 (80 80 00) as
		 * an unknown field, packs it back as 00 and then refuses that. The daemon never
		 * packs a request it received, so only unknown fields may cause this. */
		if (!has_unknown(req))
			abort();
		free(a);
		return;
	}
	const char *why = NULL;
	if (wire_check_request(again, &why) != r)
		abort();
	size_t len2 = p2pbuf__request__get_packed_size(again);
	if (len2 != len)
		abort();
	b = malloc(len2 ? len2 : 1);
	if (!b)
		abort();
	if (p2pbuf__request__pack(again, b) != len2 || memcmp(a, b, len) != 0)
		abort();
	free(b);
	free(a);
	p2pbuf__request__free_unpacked(again, NULL);
}

/* wire_decode_request() (the daemon's decoder, by hand for the grant path's shapes) must
 * give what protobuf-c gives for the same bytes: nothing when it gives nothing, else the
 * request that packs to the same bytes, and wire_check_record()'s answer and words. */
static void same_decode(const uint8_t *data, size_t size, const P2pbuf__Request *want)
{
	uint8_t mem[WIRE_DECODE_ARENA];
	struct wire_arena arena;
	P2pbuf__Request *got;
	const char *why = NULL, *want_why = NULL;

	wire_arena_init(&arena, mem, sizeof(mem));
	int r = wire_decode_request(&arena, data, size, &got, &why);
	if (!want) {
		if (got || r != -EBADMSG)
			abort();
		wire_arena_reset(&arena);
		return;
	}
	if (!got || r != wire_check_record(want, data, size, &want_why))
		abort();
	if (r < 0 && (!why || strcmp(why, want_why) != 0))
		abort();
	size_t len = p2pbuf__request__get_packed_size(want);
	uint8_t *a = malloc(len ? len : 1), *b = malloc(len ? len : 1);
	if (!a || !b || p2pbuf__request__get_packed_size(got) != len)
		abort();
	p2pbuf__request__pack(want, a);
	p2pbuf__request__pack(got, b);
	if (memcmp(a, b, len) != 0)
		abort();
	free(a);
	free(b);
	wire_arena_reset(&arena);
}

static const char fuzz_policy[] = "device sim0 sim bar 0 64K bar 2 1M msix-table 0 0x2000+0x800 "
				  "revoke-deadline 0ms\n"
				  "device sim1 sim bar 0 1M\n"
				  "allow user 0 device sim0 max-leases 8 ttl 1s\n"
				  "allow group 0 device sim1 bar 0 range 0+64K\n"
				  "admin user 0\n";

static struct daemon fuzz_daemon;
static int client_fd = -1; /* our end of the connection the daemon serves */

static int resolve_number(const char *name, uint32_t *ret)
{
	*ret = (uint32_t)strtoul(name, NULL, 10);
	return 0;
}

static void drain(void)
{
	uint8_t buf[WIRE_MAX_RECORD];
	int fds[WIRE_MAX_FDS];
	size_t nfds;

	for (;;) {
		ssize_t n = wire_recv(client_fd, buf, sizeof(buf), fds, &nfds);
		if (n > 0 || n == -EMSGSIZE || n == -EPROTO) {
			wire_close_fds(fds, nfds);
			continue;
		}
		if (n != -EAGAIN) {
			/* The daemon dropped this connection: start another. */
			close(client_fd);
			client_fd = -1;
		}
		return;
	}
}

static void turn(void)
{
	for (int i = 0; i < 4; i++)
		event_base_loop(fuzz_daemon.base, EVLOOP_NONBLOCK);
}

static void connect_client(void)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello h = P2PBUF__HELLO__INIT;
	uint8_t hello[64];
	struct conn *c;
	int sv[2];

	h.has_major = true;
	h.major = 1;
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &h;
	size_t len = p2pbuf__request__pack(&req, hello);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	if (server_adopt(fuzz_daemon.server, sv[0], &c) < 0)
		abort();
	client_fd = sv[1];
	fcntl(client_fd, F_SETFL, O_NONBLOCK);
	if (send(client_fd, hello, len, 0) != (ssize_t)len)
		abort();
	turn();
	drain();
}

static void start_daemon(void)
{
	static const struct policy_resolver numbers = { resolve_number, resolve_number };
	static char dir[] = "/tmp/p2pbuf-fuzz-XXXXXX", path[64];
	struct policy *p = NULL;
	char *err = NULL;

	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/sock", dir);
	if (policy_parse("fuzz", fuzz_policy, strlen(fuzz_policy), &numbers, &p, &err) < 0)
		abort();
	fuzz_daemon.opt = (struct daemon_options){ .socket_path = path,
						   .policy_path = "fuzz",
						   .max_clients = 16,
						   .max_clients_per_user = 16,
						   .max_leases_per_client = 64,
						   .max_leases_per_user = 256,
						   .max_leases = 256 };
	struct event_base *base = event_base_new();
	if (!base || daemon_start(&fuzz_daemon, base, p) < 0)
		abort();
}

/* The bytes as one record on a served connection. */
static void dispatch(const uint8_t *data, size_t size)
{
	if (!fuzz_daemon.base)
		start_daemon();
	if (client_fd < 0)
		connect_client();
	if (client_fd < 0)
		return;
	if (send(client_fd, data, size, 0) != (ssize_t)size) {
		close(client_fd);
		client_fd = -1;
		return;
	}
	turn();
	drain();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* wire_recv never returns a longer record. */
	if (size > WIRE_MAX_RECORD)
		return -1;
	dispatch(data, size);
	P2pbuf__Request *req = p2pbuf__request__unpack(NULL, size, data);
	same_decode(data, size, req);
	if (!req)
		return 0;

	const char *why = NULL;
	int r = wire_check_request(req, &why);
	if (r < 0 && (!why || !why[0]))
		abort();
	if (r < 0 && r != -EINVAL && r != -E2BIG && r != -EOPNOTSUPP)
		abort();
	/* The record check adds only the NUL scan: it refuses whatever the decoded check does,
	 * and anything more only with -EINVAL. */
	const char *rwhy = NULL;
	int rr = wire_check_record(req, data, size, &rwhy);
	if ((r < 0 && rr == 0) || (rr < 0 && !rwhy) || (rr < 0 && r == 0 && rr != -EINVAL))
		abort();
	round_trip(req, r);
	p2pbuf__request__free_unpacked(req, NULL);
	return 0;
}
