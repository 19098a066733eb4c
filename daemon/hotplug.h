/* Hotplug: the udev events of the declared PCI devices and of VFIO nodes (libsystemd's
 * sd-device monitor, on the daemon's loop; no polling), and what the registry does about
 * them. A declared device bound to a vfio driver later, or bound again after an unbind, is
 * opened and becomes ready; an unbound or removed one says so while it waits. The monitor's
 * socket is made before the sandbox, which allows no new one. */
#pragma once

#include <stdbool.h>

#include <event2/event.h>

#include "registry.h"

enum hotplug_action {
	HOTPLUG_OTHER,
	HOTPLUG_ADD,
	HOTPLUG_REMOVE,
	HOTPLUG_BIND,
	HOTPLUG_UNBIND,
};

/* One udev event, as far as p2pbufd reads it (borrowed strings). */
struct hotplug_event {
	enum hotplug_action action;
	const char *subsystem; /* "pci", "vfio" (a group's node), "vfio-dev" (a device's cdev) */
	const char *sysname;   /* the PCI address; the group number; "vfioN" */
	const char *driver;    /* the DRIVER property (a bind's driver), or NULL */
};

/* The sysfs the default callers read. */
#define HOTPLUG_SYSFS "/sys"

/* What the registry does about ev, reading the drivers of devices from sysfs (a directory
 * laid out as /sys; tests give their own): a declared PCI device bound to a vfio driver
 * opens (registry_reopen); one bound to another driver, unbound or removed while it is not
 * open says so in its message; a VFIO node that appears retries every declared device that
 * is not open and whose driver is a vfio one now (its node may have lacked the permissions
 * udev gives it when the bind was seen). Returns how many devices it started opening. */
unsigned hotplug_apply(struct registry *reg, const char *sysfs, const struct hotplug_event *ev);

/* Whether a driver's name is a vfio one: vfio-pci or one of its variant drivers. */
bool hotplug_vfio_driver(const char *driver);

struct hotplug;

typedef void (*hotplug_fn)(void *ctx, const struct hotplug_event *ev);

/* Follow udev's events of the subsystems above on base, calling fn(ctx, event) for each.
 * -errno when the monitor cannot be made (no netlink in this network namespace, say): the
 * daemon then serves without it. *ret_udev says whether udev runs here (without it, the
 * monitor hears nothing). */
int hotplug_new(struct event_base *base, hotplug_fn fn, void *ctx, struct hotplug **ret,
		bool *ret_udev);
/* Stop following and free. Accepts NULL. */
void hotplug_free(struct hotplug *h);
