/* What the service manager is doing to p2pbufd: whether the SIGTERM it sends is part of a
 * restart (the next instance takes every lease over from the fd store, so nothing is
 * revoked) or of a stop (the store is flushed: every lease ends, holders told first).
 *
 * Only root may ask systemd (its private bus), and the daemon runs as its own user, so the
 * unit asks for it: ExecStop=+p2pbufd --stop-request $MAINPID runs as root right before the
 * SIGTERM and, when systemd has a restart job for the unit, sends the daemon SIGUSR2 first:
 * "the SIGTERM that follows is a restart". */
#pragma once

#include <stdbool.h>

struct manager;

/* Connect to systemd's private bus (root only; NULL when there is none). */
struct manager *manager_new(void);
void manager_free(struct manager *m);

/* Whether systemd has a restart job (restart, try-restart, reload-or-restart) queued or
 * running for our unit. False on any doubt, so that a stop always ends the leases. */
bool manager_restarting(struct manager *m);

/* p2pbufd --stop-request PID: tell PID (the daemon) with SIGUSR2 that systemd restarts it.
 * Returns the exit status. */
int manager_stop_request(const char *pid);
