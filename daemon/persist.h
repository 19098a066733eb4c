/* Restart survival. Closing a device's last fd revokes every buffer exported from it for
 * good, so a restart of p2pbufd must close none: under systemd the daemon parks, in the
 * service manager's fd store, every fd whose close would revoke something (each device's
 * fds, its own copy of every lease's buffer) and a state record beside them: a memfd with
 * what it knows of each lease (StateEntry in proto/p2pbuf.proto), appended to as leases come
 * and go. On start it reads what the store hands back (the inventory), and the daemon adopts
 * what matches and closes the rest (fail closed).
 *
 * The order that keeps a client from ever holding a buffer the daemon could forget: the
 * buffer is parked, then recorded, and only then handed out. A crash in between leaves a
 * parked fd without a record, or no fd at all; either way no client has it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "device.h"
#include "lease.h"
#include "p2pbuf.pb-c.h"
#include "registry.h"

#define PERSIST_FORMAT_VERSION 1
#define PERSIST_MAX_NAME 96 /* "dev." + a device name (64) + "." + a role */

struct persist;

/* What the service manager handed back at start, sorted by kind. */
struct inventory_fd {
	char name[PERSIST_MAX_NAME]; /* as parked: "dev.NAME.ROLE", "lease.ID" */
	int fd;			     /* -1 once taken */
};

struct inventory {
	int listen_fd; /* the socket the socket unit passed, or -1 */
	struct inventory_fd *fds;
	size_t n_fds;
	int state_fd;	    /* the state record, or -1 */
	uint32_t state_seq; /* its sequence number */
	/* The state record, replayed: leases that are still live, with their revoking state. */
	P2pbuf__StateLease **leases;
	P2pbuf__StateRevoking **revoking; /* beside leases[i]; NULL while active */
	size_t n_leases;
	P2pbuf__StateDevice **devices;
	size_t n_devices;
	uint64_t next_lease_id;
	void *entries; /* the decoded entries the pointers above point into */
	size_t n_entries;
};

/* Take the fds the service manager passed (LISTEN_FDS/LISTEN_FDNAMES) and read the state
 * record among them. A record of a newer format than this daemon reads is refused: every
 * parked fd is closed (revoking rather than guessing) and *ret_error says why; the daemon
 * then starts empty. */
int inventory_load(struct inventory *inv, char **ret_error);
/* Close every fd not taken and free. */
void inventory_free(struct inventory *inv);
/* Take the parked fd called name (ownership moves to the caller), or -1. */
int inventory_take(struct inventory *inv, const char *name);
/* The recorded device called name, or NULL. */
const P2pbuf__StateDevice *inventory_device(const struct inventory *inv, const char *name);

/* Parking. max_fds is how many fds the service manager keeps (FileDescriptorStoreMax=); 0
 * turns parking off (no service manager, or none asked for). state_fd: the record to go on
 * appending to (from the inventory), or -1 for a new one. */
int persist_new(unsigned max_fds, int state_fd, uint32_t seq, struct persist **ret);
void persist_free(struct persist *p);
#define PERSIST_BARRIER_MS 5000

bool persist_enabled(const struct persist *p);

/* Wait (up to PERSIST_BARRIER_MS) until the service manager has acted on every notification
 * sent before, FDSTOREREMOVE among them; nothing when parking is off. Safe on any thread:
 * it reads only what persist_new set. */
void persist_barrier(const struct persist *p);

/* A lease is about to be handed out: park its buffer and record it. Fails (and nothing is
 * kept) when the store is full or the record cannot be written; the grant must then fail. */
int persist_lease_added(struct persist *p, const struct lease *l);
void persist_lease_revoking(struct persist *p, const struct lease *l, int64_t deadline_real);
void persist_lease_ended(struct persist *p, const struct lease *l);
/* dev is open: park its fds (roles from the backend) and record its generation. */
void persist_device_opened(struct persist *p, const struct device *dev, bool park_fds);
/* dev's fds are about to close: the store lets go of them, and its fds that another open
 * device of reg shares (one IOMMU group's) are parked again under that device's names. */
void persist_device_closing(struct persist *p, const struct device *dev, struct registry *reg);
/* A parked fd not adopted (its name): the store lets go of it. */
void persist_forget(struct persist *p, const char *name);
/* Whether the record has grown (or failed) enough to be rewritten from the live table. */
bool persist_wants_rewrite(const struct persist *p);
/* Write a fresh record of every live lease and device, park it, let go of the old one.
 * wall turns a monotonic deadline into CLOCK_REALTIME. */
int persist_rewrite(struct persist *p, const struct lease_table *t, struct registry *reg,
		    int64_t (*wall)(void *ctx, int64_t mono), void *ctx);
/* n fds the store kept from the previous instance and that were adopted. */
void persist_count_kept(struct persist *p, unsigned n);
/* Leases currently parked, for status and limits. */
unsigned persist_parked(const struct persist *p);
