/* Every event p2pbufd sends is built here, and here its recipients are chosen:
 * - a lease's events go to the connection that exported it while that connection is open
 *   (unless it released the lease itself: it asked), to every subscribed connection of the
 *   same user, and to every connection that subscribed to all events (observers, admins);
 * - a device's state goes to every subscribed connection. */
#pragma once

#include "daemon.h"

void events_lease_revoking(struct daemon *d, const struct lease *l);
void events_lease_revoked(struct daemon *d, const struct lease *l);
void events_device_state(struct daemon *d, const struct device *dev);
