#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-device.h>
#include <systemd/sd-event.h>

#include "hotplug.h"
#include "log.h"
#include "macro.h"
#include "p2pbuf.pb-c.h"

#define STATE_FAILED P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED
#define STATE_GONE P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE

/* Events taken from the monitor per wake-up: a burst (a whole bus rescanned) yields the loop
 * to clients now and then; the rest stays readable and is taken at the next wake-up. */
#define HOTPLUG_BURST 64

bool hotplug_vfio_driver(const char *driver)
{
	/* vfio-pci's variant drivers are named for it ("mlx5_vfio_pci"); the backend's open
	 * then says whether the driver exports dma-bufs. */
	return driver && (strcmp(driver, "vfio-pci") == 0 || strstr(driver, "vfio_pci"));
}

/* The driver sysfs says pci is bound to, into buf; false for none (or no such device). */
static bool driver_of(const char *sysfs, const char *pci, char *buf, size_t len)
{
	char path[PATH_MAX], target[PATH_MAX];
	ssize_t n;

	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/driver", sysfs, pci);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	const char *slash = strrchr(target, '/');
	const char *name = slash ? slash + 1 : target;
	if (strlen(name) >= len)
		return false; /* no driver's name is that long */
	strcpy(buf, name);
	return true;
}

/* Whether dev is one an event may open or say something about: declared, not open, and no
 * job of its own running. */
static bool waits(const struct device *dev)
{
	return !dev->cycling && (dev->state == STATE_FAILED || dev->state == STATE_GONE);
}

static unsigned open_if_vfio(struct device *dev, const char *driver)
{
	char why[128];

	snprintf(why, sizeof(why), "opening: bound to %.100s", driver);
	return registry_reopen(dev, why) == 0;
}

/* An event of the PCI device at ev->sysname. */
static unsigned pci_event(struct registry *reg, const struct hotplug_event *ev)
{
	struct device *dev = registry_find_pci(reg, ev->sysname);
	char msg[160];

	if (!dev)
		return 0;
	switch (ev->action) {
	case HOTPLUG_ADD:
	case HOTPLUG_BIND:
		if (hotplug_vfio_driver(ev->driver))
			return open_if_vfio(dev, ev->driver);
		if (!waits(dev))
			return 0;
		if (ev->driver)
			snprintf(msg, sizeof(msg),
				 "bound to %s, not to a vfio driver (run p2pbuf-vfio-bind %s)",
				 ev->driver, ev->sysname);
		else
			snprintf(msg, sizeof(msg),
				 "present, not bound to any driver (run p2pbuf-vfio-bind %s)",
				 ev->sysname);
		registry_note(dev, msg);
		return 0;
	case HOTPLUG_UNBIND:
	case HOTPLUG_REMOVE:
		/* An open device is never unbound under p2pbufd: the kernel asks for it back
		 * first (its REQ event), and waits until it is closed. */
		if (waits(dev))
			registry_note(dev, ev->action == HOTPLUG_UNBIND
					       ? "unbound from its driver"
					       : "removed from the machine");
		return 0;
	case HOTPLUG_OTHER:
		return 0;
	}
	return 0;
}

unsigned hotplug_apply(struct registry *reg, const char *sysfs, const struct hotplug_event *ev)
{
	char driver[NAME_MAX + 1];
	unsigned n = 0;

	if (!ev->subsystem || !ev->sysname)
		return 0;
	if (strcmp(ev->subsystem, "pci") == 0)
		return pci_event(reg, ev);
	if (ev->action != HOTPLUG_ADD ||
	    (strcmp(ev->subsystem, "vfio") != 0 && strcmp(ev->subsystem, "vfio-dev") != 0))
		return 0;
	/* Which device a node belongs to takes more reading than the retry costs: every
	 * waiting device whose driver is a vfio one tries again. */
	for (size_t i = 0; i < registry_count(reg); i++) {
		struct device *dev = registry_device(reg, i);
		if (dev->removing || dev->decl.kind != POLICY_DEVICE_PCI || !waits(dev))
			continue;
		if (driver_of(sysfs, dev->decl.pci, driver, sizeof(driver)) &&
		    hotplug_vfio_driver(driver))
			n += open_if_vfio(dev, driver);
	}
	return n;
}

/* ---- the monitor ---- */

struct hotplug {
	sd_event *event;
	sd_device_monitor *monitor;
	struct event *ev; /* the sd-event loop's fd, readable when an event waits */
	hotplug_fn fn;
	void *ctx;
};

static enum hotplug_action action_of(sd_device *device)
{
	sd_device_action_t a;

	if (sd_device_get_action(device, &a) < 0)
		return HOTPLUG_OTHER;
	switch (a) {
	case SD_DEVICE_ADD:
		return HOTPLUG_ADD;
	case SD_DEVICE_REMOVE:
		return HOTPLUG_REMOVE;
	case SD_DEVICE_BIND:
		return HOTPLUG_BIND;
	case SD_DEVICE_UNBIND:
		return HOTPLUG_UNBIND;
	default:
		return HOTPLUG_OTHER;
	}
}

static const char *action_name(enum hotplug_action a)
{
	static const char *const names[] = { [HOTPLUG_OTHER] = "other",
					     [HOTPLUG_ADD] = "add",
					     [HOTPLUG_REMOVE] = "remove",
					     [HOTPLUG_BIND] = "bind",
					     [HOTPLUG_UNBIND] = "unbind" };
	return names[a];
}

static int on_device(sd_device_monitor *m, sd_device *device, void *userdata)
{
	struct hotplug *h = userdata;
	struct hotplug_event ev = { .action = action_of(device) };

	if (ev.action == HOTPLUG_OTHER || sd_device_get_subsystem(device, &ev.subsystem) < 0 ||
	    sd_device_get_sysname(device, &ev.sysname) < 0)
		return 0;
	/* The event's own property: what sysfs says now may already be the next event's. */
	if (sd_device_get_property_value(device, "DRIVER", &ev.driver) < 0)
		ev.driver = NULL;
	log_debug("udev: %s %s %s%s%s", ev.subsystem, ev.sysname, action_name(ev.action),
		  ev.driver ? " " : "", ev.driver ? ev.driver : "");
	h->fn(h->ctx, &ev);
	return 0;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct hotplug *h = arg;

	for (int i = 0; i < HOTPLUG_BURST; i++) {
		int r = sd_event_run(h->event, 0);
		if (r < 0)
			log_warning("udev events: %s", strerror(-r));
		if (r <= 0)
			break;
	}
}

void hotplug_free(struct hotplug *h)
{
	if (!h)
		return;
	if (h->ev)
		event_free(h->ev);
	sd_device_monitor_unref(h->monitor);
	sd_event_unref(h->event);
	free(h);
}

int hotplug_new(struct event_base *base, hotplug_fn fn, void *ctx, struct hotplug **ret,
		bool *ret_udev)
{
	static const char *const subsystems[] = { "pci", "vfio", "vfio-dev" };
	struct hotplug *h = calloc(1, sizeof(*h));
	int r;

	if (!h)
		return -ENOMEM;
	h->fn = fn;
	h->ctx = ctx;
	r = sd_event_new(&h->event);
	if (r >= 0)
		r = sd_device_monitor_new(&h->monitor);
	for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(subsystems); i++)
		r = sd_device_monitor_filter_add_match_subsystem_devtype(h->monitor, subsystems[i],
									 NULL);
	if (r >= 0)
		r = sd_device_monitor_attach_event(h->monitor, h->event);
	/* Binds the socket and attaches its filter now: the sandbox allows neither later. */
	if (r >= 0)
		r = sd_device_monitor_start(h->monitor, on_device, h);
	if (r >= 0) {
		h->ev = event_new(base, sd_event_get_fd(h->event), EV_READ | EV_PERSIST,
				  on_readable, h);
		if (!h->ev || event_add(h->ev, NULL) < 0)
			r = -ENOMEM;
	}
	if (r < 0) {
		hotplug_free(h);
		return r;
	}
	/* udev says it runs by this file (sd-device's own test); without it the monitor's
	 * group stays silent. */
	*ret_udev = access("/run/udev/control", F_OK) == 0;
	*ret = h;
	return 0;
}
