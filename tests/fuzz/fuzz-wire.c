/* libFuzzer target for the daemon's decode path: bytes as wire_recv() would hand them over,
 * unpacked as a Request, checked by wire_check_request(), and packed again. A decoded request
 * must survive the round trip, and packing what was decoded must be stable: the bytes of
 * pack(unpack(pack(x))) equal those of pack(x). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* wire_recv never returns a longer record. */
	if (size > WIRE_MAX_RECORD)
		return -1;
	P2pbuf__Request *req = p2pbuf__request__unpack(NULL, size, data);
	if (!req)
		return 0;

	const char *why = NULL;
	int r = wire_check_request(req, &why);
	if (r < 0 && (!why || !why[0]))
		abort();
	if (r < 0 && r != -EINVAL && r != -E2BIG && r != -EOPNOTSUPP)
		abort();
	round_trip(req, r);
	p2pbuf__request__free_unpacked(req, NULL);
	return 0;
}
