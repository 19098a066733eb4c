#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "macro.h"
#include "manager.h"
#include "peer.h"

#define PRIVATE_BUS "unix:path=/run/systemd/private"
#define SYSTEMD "org.freedesktop.systemd1"

struct manager {
	sd_bus *bus;
	char *unit_path; /* our unit's object */
};

/* Our own unit from /proc/self/cgroup (libsystemd's lookup probes more than the sandbox
 * allows later, and this runs once). */
static char *own_unit(void)
{
	char buf[4096];
	FILE *f = fopen("/proc/self/cgroup", "re");
	char *unit = NULL;

	if (!f)
		return NULL;
	while (!unit && fgets(buf, sizeof(buf), f))
		if (strncmp(buf, "0::", 3) == 0)
			unit = peer_unit_of_cgroup(buf + 3);
	fclose(f);
	return unit;
}

struct manager *manager_new(void)
{
	_cleanup_free_ char *unit = NULL;
	struct manager *m;

	if (access("/run/systemd/private", F_OK) < 0)
		return NULL;
	unit = own_unit();
	if (!unit || !(m = calloc(1, sizeof(*m))))
		return NULL;
	if (sd_bus_new(&m->bus) < 0 || sd_bus_set_address(m->bus, PRIVATE_BUS) < 0 ||
	    sd_bus_start(m->bus) < 0 ||
	    sd_bus_path_encode("/org/freedesktop/systemd1/unit", unit, &m->unit_path) < 0) {
		manager_free(m);
		return NULL;
	}
	return m;
}

void manager_free(struct manager *m)
{
	if (!m)
		return;
	sd_bus_flush_close_unref(m->bus);
	free(m->unit_path);
	free(m);
}

bool manager_restarting(struct manager *m)
{
	sd_bus_error err = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	const char *job_path = NULL;
	char *type = NULL;
	uint32_t id;
	bool restart = false;

	if (!m)
		return false;
	if (sd_bus_get_property(m->bus, SYSTEMD, m->unit_path, SYSTEMD ".Unit", "Job", &err, &reply,
				"(uo)") >= 0 &&
	    sd_bus_message_read(reply, "(uo)", &id, &job_path) > 0 && strcmp(job_path, "/") != 0 &&
	    sd_bus_get_property_string(m->bus, SYSTEMD, job_path, SYSTEMD ".Job", "JobType", &err,
				       &type) >= 0)
		restart = strstr(type, "restart") != NULL;
	free(type);
	sd_bus_message_unref(reply);
	sd_bus_error_free(&err);
	return restart;
}

int manager_stop_request(const char *pid)
{
	char *end;
	long v = strtol(pid, &end, 10);

	if (!*pid || *end || v <= 1) {
		fprintf(stderr, "p2pbufd: --stop-request: \"%s\" is not a pid\n", pid);
		return 2;
	}
	struct manager *m = manager_new();
	bool restart = manager_restarting(m);
	manager_free(m);
	/* Nothing to say for a stop: the SIGTERM alone means "end every lease". */
	if (restart && kill((pid_t)v, SIGUSR2) < 0) {
		fprintf(stderr, "p2pbufd: --stop-request: cannot signal %ld: %m\n", v);
		return 1;
	}
	return 0;
}
