/* Devices: the registry of devices p2pbufd owns, their BAR model, the pure range checks, and
 * the interface every backend (vfio, sim) implements. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy.h"
#include "range.h"

#define DEVICE_MAX_BARS 6

struct device_bar {
	uint64_t size; /* 0: no such BAR (or the upper half of a 64-bit BAR) */
	bool is_io;    /* I/O port BAR: never exportable */
	bool is_64bit;
	bool prefetchable;
};

/* Where the MSI-X table and PBA live; both must never be exported. */
struct device_msix {
	bool present;
	unsigned table_bar;
	struct range table; /* bytes, as read from the capability */
	unsigned pba_bar;
	struct range pba;
};

struct device_info {
	struct device_bar bars[DEVICE_MAX_BARS];
	struct device_msix msix;
};

struct device_handle; /* a backend's open device */

/* A buffer's file as fstat() names it. A count off the event loop is given these instead of
 * fds: a number it holds cannot be closed under it, nor reused for another file while the
 * daemon's own copy keeps the file (and so its inode number) alive. */
struct device_file {
	dev_t dev;
	ino_t ino;
};

#define DEVICE_MAX_PARKED 4

/* An fd of an open device whose close would revoke buffers, with what it is ("device",
 * "group", "container", "iommufd"), for the fd store across a restart. */
struct parked_fd {
	const char *role;
	int fd;
};

/* A backend. open/close may block (the kernel waits for importers on close) and run on the
 * worker thread; every other operation runs on the event loop and must not block. */
struct device_ops {
	const char *name; /* "vfio", "sim" */

	/* Open the device declared by decl, fill *ret_info, enable memory decode. On failure
	 * return -errno and write a sentence for the admin into msg (msglen bytes). */
	int (*open)(const struct policy_device *decl, struct device_handle **ret_handle,
		    struct device_info *ret_info, char *msg, size_t msglen);

	/* Close every fd of the device: this permanently revokes every buffer exported from it.
	 * Accepts NULL. */
	void (*close)(struct device_handle *handle);

	/* Export ranges[0..n) of BAR bar as one new CLOEXEC fd, named name (for fdinfo). The
	 * ranges have passed device_check_ranges(). */
	int (*export_ranges)(struct device_handle *handle, unsigned bar, const struct range *ranges,
			     size_t n, const char *name, int *ret_fd);

	/* How many references to the buffer behind fd exist besides fd itself (0: nobody else
	 * holds it), or -errno when the backend cannot tell. */
	int (*holders)(struct device_handle *handle, int fd);

	/* The same for fds[0..n) at once, into counts[0..n); NULL where a loop over holders()
	 * costs no more. Returns 0 or -errno (then no count is valid). */
	int (*holders_many)(struct device_handle *handle, const int *fds, size_t n, int *counts);

	/* The fds that keep the device (and so its buffers) alive, into fds[0..DEVICE_MAX_PARKED)
	 * (borrowed: they stay the handle's); returns how many. NULL: none to keep (sim). */
	size_t (*park)(struct device_handle *handle, struct parked_fd *fds);

	/* Take over an open device from fds a previous instance parked (ownership moves to the
	 * handle on success; on failure the caller still owns and closes them), without
	 * reopening or resetting it: check that they are the device decl names, re-arm its
	 * events, read its model. NULL: the backend opens afresh instead (sim). */
	int (*adopt)(const struct policy_device *decl, struct parked_fd *fds, size_t n,
		     struct device_handle **ret_handle, struct device_info *ret_info, char *msg,
		     size_t msglen);

	/* The same count for files[0..n), made off the event loop, on the revocation engine's
	 * own thread: it is given no handle and no fd, only the files, so a device cycle or a
	 * lease ending while it runs leaves it nothing dangling. Each count is taken as if the
	 * daemon's copy of the buffer were still open (the caller drops the counts of leases
	 * that ended meanwhile). NULL where holders() is cheap enough for the loop. */
	int (*holders_detached)(const struct device_file *files, size_t n, int *counts);

	/* holders() is slow (milliseconds): nothing calls it on the loop for leases that are
	 * not being revoked (listings show them as unknown), and revoking ones are counted
	 * off the loop through holders_detached(). */
	bool holders_costly;

	/* A second open file of the buffer behind fd, for the client: a file of its own, whose
	 * end unheld() can see. NULL: the client is given fd's file (the backend's count needs
	 * no such help). */
	int (*reopen)(struct device_handle *handle, int fd, int *ret_fd);

	/* Whether the file reopen() made is gone everywhere (from every process, mapping and
	 * socket queue): a check of a few µs, which the loop can afford before it leaves a
	 * costly count to decide. false: still held, or it cannot tell. For a lease whose
	 * client was given a reopen()ed file the revocation engine decides by this alone (held
	 * counts as one holder, asked again each tick) and makes no costly count. */
	bool (*unheld)(int fd);

	/* The fds that signal removal (REQ) and error (ERR), -1 where there is none. Reading
	 * one (8 bytes) consumes the event. */
	void (*event_fds)(struct device_handle *handle, int *ret_req_fd, int *ret_err_fd);
};

extern const struct device_ops sim_ops;
extern const struct device_ops vfio_ops;

/* The page size exports must be aligned to. */
uint64_t device_page_size(void);

/* Check a requested export against the BAR model: at least one range, each non-empty, page
 * aligned, inside the BAR, not overlapping the MSI-X table or PBA pages nor each other, and a
 * total size no larger than max_size (0: no cap). An empty request (n == 0) is not allowed here:
 * the caller expands it to the whole BAR first. Returns 0 and the total size, or: -ENXIO no such
 * BAR or an I/O BAR; -EINVAL empty, unaligned, overflowing or overlapping ranges; -ERANGE outside
 * the BAR; -EADDRNOTAVAIL overlaps MSI-X; -EFBIG larger than max_size. msg (msglen bytes) explains
 * any failure. */
int device_check_ranges(const struct device_info *info, unsigned bar, const struct range *ranges,
			size_t n, uint64_t page_size, uint64_t max_size, uint64_t *ret_size,
			char *msg, size_t msglen);
