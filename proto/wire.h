/* Framing shared by p2pbufd and libp2pbuf: one protobuf-c message per SOCK_SEQPACKET record,
 * with hard caps on record size and attached fds. Functions return >= 0 or -errno. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "p2pbuf.pb-c.h"

/* Caps on what a peer controls. Changing one is a protocol change: note it in the .proto. */
#define WIRE_MAX_RECORD 65536	  /* bytes in one record */
#define WIRE_MAX_FDS 4		  /* fds attached to one record (a reply carries at most 1) */
#define WIRE_MAX_RANGES 64	  /* ranges in one Export */
#define WIRE_MAX_STRING 256	  /* bytes in any request string (device, label, name) */
#define WIRE_MAX_NAME 64	  /* bytes in a device name */
#define WIRE_TOKEN_LEN 16	  /* bytes in a reclaim token */
#define WIRE_BATCH_MAX_EVENTS 256 /* events in one EventBatch record (1.3) */

/* Send one record of len bytes with nfds fds attached (nfds <= WIRE_MAX_FDS). Never raises
 * SIGPIPE. Returns 0, -EAGAIN when the socket is full (nothing was sent), or -errno. */
int wire_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds);

/* Receive one record into buf (cap bytes, at least WIRE_MAX_RECORD). Received fds are CLOEXEC
 * and stored in fds[0..*ret_nfds). A record longer than cap yields -EMSGSIZE, truncated
 * control data -EPROTO; in both cases any fds that did arrive are closed. Returns the record
 * length, 0 at end of stream, -EAGAIN when nothing is waiting, or -errno. */
ssize_t wire_recv(int sock, void *buf, size_t cap, int fds[WIRE_MAX_FDS], size_t *ret_nfds);

/* wire_recv() that waits for a record on a blocking socket (one recvmsg, where polling first
 * would cost two more system calls); on a non-blocking one it says -EAGAIN as wire_recv. */
ssize_t wire_recv_wait(int sock, void *buf, size_t cap, int fds[WIRE_MAX_FDS], size_t *ret_nfds);

/* Pack msg and send it as one record. -EMSGSIZE when it would exceed WIRE_MAX_RECORD. */
int wire_send_msg(int sock, const ProtobufCMessage *msg, const int *fds, size_t nfds);

/* Pack ServerMessage{reply: r} into buf[0..cap): the bytes protobuf_c_message_pack() writes
 * for it, at a fraction of the cost (the envelope, the Reply and an ExportReply are written
 * by hand; another body is packed by protobuf-c). Returns the length, -EMSGSIZE when it
 * would not fit in cap (nothing usable is written then). */
ssize_t wire_pack_reply(const P2pbuf__Reply *r, uint8_t *buf, size_t cap);

/* An EventBatch record being built: the events of one turn for one connection (1.3). Each
 * event is packed once, straight into the record; the ServerMessage envelope is written in
 * front of them when the record is taken. Zero-initialise; wire_batch_reset() frees. */
struct wire_batch {
	uint8_t *buf; /* WIRE_BATCH_HEAD bytes of room for the envelope, then the events */
	size_t len;   /* bytes used, room included */
	size_t cap;
	unsigned n; /* events */
};

/* Add ev after the batch's events. -E2BIG when the record would then pass
 * WIRE_BATCH_MAX_EVENTS or WIRE_MAX_RECORD (take the record, then add ev to an empty batch:
 * one event always fits), -ENOMEM; the batch is unchanged on failure. */
int wire_batch_add(struct wire_batch *b, const P2pbuf__Event *ev);

/* The batch as one ServerMessage record (b->n > 0): ServerMessage.events with every event in
 * the order added, or, for a lone event, the plain ServerMessage.event record any client
 * reads. Points into b, valid until the next wire_batch_add() or wire_batch_reset(). */
const uint8_t *wire_batch_record(struct wire_batch *b, size_t *ret_len);

/* Empty the batch and free its memory. */
void wire_batch_reset(struct wire_batch *b);

/* Memory for decoding one record: protobuf-c's allocations come from the caller's buffer
 * (a bump pointer, nothing freed one by one), what does not fit from malloc, and
 * wire_arena_reset() gives all of it back at once. A message unpacked with &a->alloc is
 * dropped by resetting its arena, never with free_unpacked, and lives no longer than that:
 * what must outlive the record is copied out (or packed again) first. The decode of a
 * request then costs no malloc and no free per field. */
union wire_arena_spill;
struct wire_arena {
	ProtobufCAllocator alloc;
	uint8_t *buf;
	size_t cap, used;
	union wire_arena_spill *spill; /* the malloc'ed blocks, newest first */
};

/* Room that holds the largest Request wire_check_request() accepts, decoded (an Export of
 * WIRE_MAX_RANGES ranges with its strings at their caps: test-wire checks it). What spills
 * is a record refused anyway or padded with fields this side does not know (protobuf-c keeps
 * them), bounded by the record's size either way. */
#define WIRE_DECODE_ARENA 8192

/* An arena over buf[0..cap) (any alignment; the usable part starts aligned). It points at
 * itself: initialise it where it stays, never copy it. */
void wire_arena_init(struct wire_arena *a, void *buf, size_t cap);

/* Free what spilled to malloc and make the whole buffer free again. */
void wire_arena_reset(struct wire_arena *a);

/* Close fds[0..n) and set them to -1. */
void wire_close_fds(int *fds, size_t n);

/* Check a decoded Request against every cap and the shape of its body. Each string field
 * has a rule: device names hold only letters, digits, "_", "." and "-" (as in the policy);
 * free text (a label, the client's name) is valid UTF-8 with no control character (C0, DEL,
 * C1 such as NEL), no line or paragraph separator (U+2028, U+2029) and no bidirectional-text
 * control (U+061C, U+200E/F, U+202A-E, U+2066-9); each within its byte cap. On failure
 * returns -EINVAL (the explanation names the field), -E2BIG (too many ranges) or -EOPNOTSUPP
 * (no body: a request type this side does not know), and points *ret_why at a static
 * explanation. */
int wire_check_request(const P2pbuf__Request *req, const char **ret_why);

/* wire_check_request() for a request decoded from buf[0..len): first refuses (-EINVAL, the
 * field named) a NUL byte inside any string field, which the decoded C string no longer
 * shows. What a receiver of untrusted records calls. */
int wire_check_record(const P2pbuf__Request *req, const uint8_t *buf, size_t len,
		      const char **ret_why);

/* The explanation wire_check_record() gives for a NUL in field of msg, or NULL when that
 * field has no string rule (every string field of a request must have one). */
const char *wire_string_rule_of(const ProtobufCMessageDescriptor *msg, const char *field);

/* What a receiver of untrusted records calls: decode buf[0..len) into a Request in a's
 * memory (*ret_req; it lives until the arena's reset) and check it as wire_check_record()
 * does. The Export and Release of the grant path, in the shape every encoder writes, are
 * read in one pass without protobuf-c; anything else goes through protobuf-c, and either way
 * the request is the one p2pbuf__request__unpack() would give. Returns the check's result
 * (0, or -errno with *ret_why), or -EBADMSG when the record does not decode (*ret_req NULL). */
int wire_decode_request(struct wire_arena *a, const uint8_t *buf, size_t len,
			P2pbuf__Request **ret_req, const char **ret_why);

/* Human-readable names of protocol enums ("released", "device-gone", "ready", ...). Unknown
 * values give "unknown". */
const char *wire_reason_name(int reason);
const char *wire_device_state_name(int state);
const char *wire_lease_state_name(int state);
