/* The audit trail: one line per grant, denial, revocation step, end of a lease, reset,
 * device state change and policy reload (grants, releases and denials under rate limits,
 * with the counts of what was not logged one by one). The only place that formats them, so that
 * their shape is the same everywhere; strings a client chose (labels, device names it asked for)
 * are escaped so that no control or direction character reaches a log. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lease.h"
#include "peer.h"
#include "registry.h"

/* Routine lease lines (grants, releases, ends at a disconnection) logged one by one per
 * connection and second (--lease-log-rate); 0: every one. */
#define AUDIT_LEASE_LINES_DEFAULT 20
extern unsigned audit_lease_lines_per_s;

void audit_granted(const struct lease *l);
/* p's connection has closed (its leases ended or revoking): tell what was not logged one by
 * one, and log the rest of its leases' ends one by one. */
void audit_peer_closed(struct peer *p);
/* what: "export", "revoke", "reset"; object: the device or lease asked for (client text);
 * bar -1 when there is none. */
void audit_denied(const struct peer *p, const char *what, const char *object, int bar, int error,
		  const char *msg);
void audit_revoking(const struct lease *l);
void audit_overdue(const struct lease *l, int holders, bool enforced);
void audit_ended(const struct lease *l);
void audit_admin_revoke(const struct peer *p, const struct lease *l);
void audit_reset(const struct peer *p, const struct device *dev);
void audit_reclaimed(const struct peer *p, const struct lease *l);
void audit_device_state(const struct device *dev);
/* ok: the new policy is in place; summary says what changed, or why it was refused. */
void audit_reload(const char *path, bool ok, const char *summary);
/* An admin asked for a reload over the socket (its outcome is audit_reload's). */
void audit_reload_request(const struct peer *p, const char *path);

/* At start-up, after a restart: adopted of recorded leases were taken over. */
void audit_restart(unsigned adopted, unsigned recorded);
/* A recorded lease (id, 0 for an fd with no record) or parked fd was not taken over. */
void audit_restart_dropped(uint64_t id, const char *what, const char *why);
/* The state record could not be rewritten (it keeps growing; tried again later). */
void audit_record_rewrite_failed(int error);
/* The state record was refused: everything parked was closed. */
void audit_restart_refused(const char *why);

/* Escape text for a log line: printable ASCII stays, anything else becomes \xNN, and at most
 * len - 1 bytes are written. Returns buf. */
char *audit_escape(const char *text, char *buf, size_t len);
