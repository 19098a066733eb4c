/* libp2pbuf: the client library of p2pbufd.
 *
 * p2pbufd hands out dma-buf file descriptors that cover ranges of a PCI device's BARs. Each
 * one is held under a lease; the daemon may revoke a lease (device reset or removal, policy
 * change, admin, lease TTL) and tells the holder with events.
 *
 * Conventions: every function that can fail returns a negative errno (-EPERM, -ENODEV, ...)
 * and, for errors the daemon reported, p2pbuf_last_message() says why in words. Output
 * parameters are written only on success. A struct p2pbuf is not thread-safe: use one per
 * thread, or lock around it.
 *
 * Blocking calls wait for their reply; events that arrive meanwhile are queued and delivered
 * by the next p2pbuf_dispatch(). Event-driven programs poll p2pbuf_get_fd() for POLLIN and call
 * p2pbuf_dispatch(), which never blocks. After any blocking call, call p2pbuf_dispatch() once
 * too (or check p2pbuf_pending()), because events may have been queued without the fd staying
 * readable.
 *
 * What a well-behaved holder does when told P2PBUF_EVENT_LEASE_REVOKING: stop using the
 * memory, close every copy of the fd it holds (including copies passed to other processes and
 * importers such as an iommufd mapping or an RDMA memory region), then call
 * p2pbuf_lease_release(). If it still needs the memory it asks again with p2pbuf_export(). A
 * holder that keeps a reference past the deadline causes a device cycle that ends every lease
 * of that device.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Where the daemon listens unless told otherwise ($P2PBUF_SOCKET overrides it). */
#define P2PBUF_DEFAULT_SOCKET "/run/p2pbufd/p2pbufd.sock"

/* Protocol version this library speaks. */
#define P2PBUF_PROTO_VERSION_MAJOR 1
#define P2PBUF_PROTO_VERSION_MINOR 0

struct p2pbuf;

struct p2pbuf_range {
	uint64_t offset;
	uint64_t length;
};

enum p2pbuf_device_state {
	P2PBUF_DEVICE_UNKNOWN = 0,
	P2PBUF_DEVICE_READY = 1,
	P2PBUF_DEVICE_CYCLING = 2,
	P2PBUF_DEVICE_GONE = 3,
	P2PBUF_DEVICE_FAILED = 4,
};

enum p2pbuf_lease_state {
	P2PBUF_LEASE_UNKNOWN = 0,
	P2PBUF_LEASE_ACTIVE = 1,
	P2PBUF_LEASE_REVOKING = 2,
	P2PBUF_LEASE_ENDED = 3,
};

/* Why a lease ended or is being revoked. Values match the wire protocol. */
enum p2pbuf_reason {
	P2PBUF_REASON_UNSPECIFIED = 0,
	P2PBUF_REASON_RELEASED = 1,
	P2PBUF_REASON_RESET = 2,
	P2PBUF_REASON_DEVICE_GONE = 3,
	P2PBUF_REASON_DEVICE_CYCLE = 4,
	P2PBUF_REASON_POLICY = 5,
	P2PBUF_REASON_ADMIN = 6,
	P2PBUF_REASON_TTL = 7,
	P2PBUF_REASON_OWNER_DISCONNECTED = 8,
	P2PBUF_REASON_SHUTDOWN = 9,
};

struct p2pbuf_bar {
	unsigned index;
	uint64_t size;
	bool is_64bit;
	bool prefetchable;
	size_t n_reserved; /* ranges that can never be exported (MSI-X) */
	struct p2pbuf_range *reserved;
};

struct p2pbuf_device {
	char *name;
	char *address; /* PCI address, or "sim" */
	char *backend; /* "vfio" or "sim" */
	bool simulated;
	enum p2pbuf_device_state state;
	uint32_t generation; /* + 1 on every device cycle */
	char *message;	     /* why it is not ready, or NULL */
	unsigned leases;
	size_t n_bars;
	struct p2pbuf_bar *bars;
};

struct p2pbuf_lease {
	uint64_t id;
	char *device;
	unsigned bar;
	size_t n_ranges;
	struct p2pbuf_range *ranges;
	uint64_t size;
	char *label; /* or NULL */
	enum p2pbuf_lease_state state;
	enum p2pbuf_reason reason; /* set once revoking or ended */
	uint32_t owner_uid;
	pid_t owner_pid;
	int64_t created_ms; /* CLOCK_REALTIME milliseconds */
	int64_t expires_ms; /* 0 = no TTL */
	int holders;	    /* references outside the daemon, -1 = unknown */
	char *rule;	    /* policy file:line that allowed it */
	uint32_t generation;
	int64_t deadline_ms; /* revoking: holders must let go by then (REALTIME) */
	bool lingering;	     /* revoking past its deadline and not enforced: kept
				by a holder the daemon does not cycle out */
};

struct p2pbuf_status {
	char *version;
	uint64_t uptime_ms;
	unsigned clients;
	unsigned leases;
	unsigned devices;
	char *policy;
	bool admin; /* the caller is an admin */
};

enum p2pbuf_event_type {
	P2PBUF_EVENT_LEASE_REVOKING = 1, /* close every copy of the fd, then release */
	P2PBUF_EVENT_LEASE_REVOKED = 2,	 /* the lease has ended; the memory is gone */
	P2PBUF_EVENT_DEVICE_STATE = 3,	 /* a device changed state */
};

struct p2pbuf_event {
	enum p2pbuf_event_type type;
	uint64_t lease_id;		/* lease events */
	enum p2pbuf_reason reason;	/* lease events */
	int64_t deadline_ms;		/* LEASE_REVOKING: CLOCK_REALTIME milliseconds */
	const char *device;		/* DEVICE_STATE; valid during the callback only */
	enum p2pbuf_device_state state; /* DEVICE_STATE */
	uint32_t generation;		/* DEVICE_STATE */
	const char *message;		/* DEVICE_STATE, may be NULL */
};

typedef void (*p2pbuf_event_fn)(struct p2pbuf *conn, const struct p2pbuf_event *event,
				void *userdata);

/* Connect to the daemon at path (NULL: $P2PBUF_SOCKET, else P2PBUF_DEFAULT_SOCKET) and
 * exchange Hello. -ENOENT/-ECONNREFUSED: no daemon there; -EACCES: not allowed to use the
 * socket (ask to join its group); -EPROTONOSUPPORT: the daemon speaks another major version;
 * -EAGAIN: the daemon serves as many clients as it allows (--max-clients), try again later;
 * -EUSERS: the caller's user has as many connections as one user may (--max-clients-per-user).
 * p2pbuf_connect() fails there, so p2pbuf_last_message() cannot be asked; the daemon logs it. */
int p2pbuf_connect(const char *path, struct p2pbuf **ret_conn);

/* Close the connection. The daemon ends the caller's leases once their fds are closed. NULL
 * is accepted. */
void p2pbuf_disconnect(struct p2pbuf *conn);

/* The daemon's explanation of the last failed call on conn, or "" if there was none. Valid
 * until the next call on conn. */
const char *p2pbuf_last_message(const struct p2pbuf *conn);

/* The daemon's version string, as told in its Hello reply. */
const char *p2pbuf_server_version(const struct p2pbuf *conn);

/* The devices the daemon owns. Free the array with p2pbuf_devices_free(). */
int p2pbuf_list_devices(struct p2pbuf *conn, struct p2pbuf_device **ret_devices, size_t *ret_n);
void p2pbuf_devices_free(struct p2pbuf_device *devices, size_t n);

/* Ask for a dma-buf covering ranges[0..n_ranges) of BAR bar of device. With n_ranges == 0 the
 * whole BAR is asked for. label (may be NULL) names the lease in listings. On success returns
 * the new fd (CLOEXEC; the caller owns it) and writes the lease id and its size in bytes.
 * Errors: -EPERM denied by policy, -ENODEV unknown device, -ENXIO device gone,
 * -EBUSY device cycling, -EINVAL unaligned or malformed range, -ERANGE range outside the BAR,
 * -EADDRNOTAVAIL range overlaps MSI-X table or PBA pages, -EDQUOT lease limit reached (the
 * daemon's, the user's, the connection's or the rule's: the message says which), -E2BIG too
 * many ranges. -EINVAL also for ranges that overlap each other, and for a device name or label
 * the daemon refuses (a NUL, invalid UTF-8, control, line or bidirectional-text characters;
 * the message names the field). */
int p2pbuf_export(struct p2pbuf *conn, const char *device, unsigned bar,
		  const struct p2pbuf_range *ranges, size_t n_ranges, const char *label,
		  uint64_t *ret_lease_id, uint64_t *ret_size);

/* Tell the daemon the caller no longer needs lease_id. The caller should have closed every
 * copy of the fd first; the lease ends when nobody holds the buffer any more. */
int p2pbuf_release(struct p2pbuf *conn, uint64_t lease_id);

/* Close fd (the caller's copy of the lease's buffer; -1 if already closed) and release
 * lease_id: what a client does when done or when told LEASE_REVOKING. */
int p2pbuf_lease_release(struct p2pbuf *conn, uint64_t lease_id, int fd);

/* The caller's leases (all: every lease, for admins and observers). Free the array with
 * p2pbuf_leases_free(). */
int p2pbuf_list_leases(struct p2pbuf *conn, bool all, struct p2pbuf_lease **ret_leases,
		       size_t *ret_n);
void p2pbuf_leases_free(struct p2pbuf_lease *leases, size_t n);

/* Reset device: a device cycle that permanently revokes every buffer of the device; every
 * lease on it ends with reason reset. Returns once the device is ready again. Admins only. */
int p2pbuf_reset(struct p2pbuf *conn, const char *device);

/* Revoke one lease (admins only); its holder is told and must close and release. */
int p2pbuf_revoke(struct p2pbuf *conn, uint64_t lease_id);

/* Daemon status. Free with p2pbuf_status_free(). */
int p2pbuf_status(struct p2pbuf *conn, struct p2pbuf_status *ret_status);
void p2pbuf_status_free(struct p2pbuf_status *status);

/* Ask for events beyond those about the caller's own leases (all: every lease and device,
 * for admins and observers; otherwise device state events). */
int p2pbuf_subscribe(struct p2pbuf *conn, bool all);

/* Install the callback that p2pbuf_dispatch() delivers events to (NULL: drop events). */
void p2pbuf_set_event_handler(struct p2pbuf *conn, p2pbuf_event_fn fn, void *userdata);

/* The connection's socket, to poll for POLLIN. */
int p2pbuf_get_fd(const struct p2pbuf *conn);

/* Whether events are queued that p2pbuf_dispatch() would deliver without reading. */
bool p2pbuf_pending(const struct p2pbuf *conn);

/* Deliver queued events, then read and deliver whatever the socket has, without blocking.
 * Returns the number of events delivered, or -errno (-ECONNRESET: the daemon went away). */
int p2pbuf_dispatch(struct p2pbuf *conn);

/* Block until at least one event is delivered or timeout_ms passes (-1: forever). Returns the
 * number delivered (0 on timeout) or -errno. */
int p2pbuf_wait(struct p2pbuf *conn, int timeout_ms);

/* Names for printing: "ready", "revoking", "device-gone", ... */
const char *p2pbuf_reason_name(enum p2pbuf_reason reason);
const char *p2pbuf_device_state_name(enum p2pbuf_device_state state);
const char *p2pbuf_lease_state_name(enum p2pbuf_lease_state state);

#ifdef __cplusplus
}
#endif
