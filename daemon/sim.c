/* The simulated backend: devices declared `sim` in the policy, for developing clients on
 * machines without VFIO and for testing everything above the backend. Its buffers are sealed
 * memfds, not dma-bufs; every listing names these devices as simulated.
 *
 * Fault injection: with P2PBUF_SIM_CONTROL=DIR in the daemon's environment, each simulated
 * device NAME gets FIFOs DIR/NAME.remove and DIR/NAME.error; writing to one is what VFIO's
 * REQ (device going away) or ERR (AER error) eventfd would signal for a real device. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "clock.h"
#include "macro.h"
#include "text.h"

struct device_handle {
	int req_fd; /* eventfds standing in for VFIO's REQ and ERR */
	int err_fd;
	int fd_dir; /* /proc/self/fd, where a buffer is opened again for its client */
};

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void sim_info(const struct policy_device *decl, struct device_info *info)
{
	memset(info, 0, sizeof(*info));
	for (unsigned i = 0; i < DEVICE_MAX_BARS; i++) {
		info->bars[i].size = decl->sim_bar_size[i];
		info->bars[i].is_64bit = decl->sim_bar_size[i] > UINT32_MAX;
		info->bars[i].prefetchable = decl->sim_bar_size[i] > UINT32_MAX;
	}
	if (decl->sim_msix_table.present) {
		info->msix.present = true;
		info->msix.table_bar = decl->sim_msix_table.bar;
		info->msix.table = decl->sim_msix_table.range;
		/* A device has a PBA whenever it has a table; without one declared, it sits in
		 * the table's own pages. */
		info->msix.pba_bar =
		    decl->sim_msix_pba.present ? decl->sim_msix_pba.bar : decl->sim_msix_table.bar;
		info->msix.pba = decl->sim_msix_pba.present ? decl->sim_msix_pba.range
							    : decl->sim_msix_table.range;
	}
}

static void sim_close(struct device_handle *h);

static int event_fd(int *ret_fd)
{
	*ret_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return *ret_fd < 0 ? -errno : 0;
}

/* A FIFO opened read-write, so it never reports end of file while nobody writes. */
static int control_fifo(const char *dir, const char *name, const char *what, int *ret_fd)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s.%s", dir, name, what);
	if (mkfifo(path, 0600) < 0 && errno != EEXIST)
		return -errno;
	*ret_fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	return *ret_fd < 0 ? -errno : 0;
}

static int sim_open(const struct policy_device *decl, struct device_handle **ret_handle,
		    struct device_info *ret_info, char *msg, size_t msglen)
{
	struct device_handle *h = calloc(1, sizeof(*h));

	if (h)
		h->req_fd = h->err_fd = h->fd_dir = -1;
	if (!h) {
		snprintf(msg, msglen, "out of memory");
		return -ENOMEM;
	}
	const char *control = getenv("P2PBUF_SIM_CONTROL");
	int r = control ? control_fifo(control, decl->name, "remove", &h->req_fd)
			: event_fd(&h->req_fd);
	if (r == 0)
		r = control ? control_fifo(control, decl->name, "error", &h->err_fd)
			    : event_fd(&h->err_fd);
	if (r < 0) {
		snprintf(msg, msglen, "%s: %s", control ? "P2PBUF_SIM_CONTROL" : "eventfd",
			 strerror(-r));
		sim_close(h);
		return r;
	}
	h->fd_dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->fd_dir < 0) {
		r = -errno;
		snprintf(msg, msglen, "/proc/self/fd: %s", strerror(-r));
		sim_close(h);
		return r;
	}
	/* Stands in for a device whose open waits on the kernel (tests inject it). */
	sleep_ms(decl->sim_cycle_delay_ms);
	sim_info(decl, ret_info);
	*ret_handle = h;
	return 0;
}

static void sim_close(struct device_handle *h)
{
	if (!h)
		return;
	closep(&h->req_fd);
	closep(&h->err_fd);
	closep(&h->fd_dir);
	free(h);
}

static int sim_export(struct device_handle *h, unsigned bar, const struct range *ranges, size_t n,
		      const char *name, int *ret_fd)
{
	uint64_t size = 0;

	for (size_t i = 0; i < n; i++)
		size += ranges[i].length;
	_cleanup_close_ int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		return -errno;
	/* Like a BAR window, the buffer's size is fixed. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* The buffers one count looks for, sorted by (dev, ino) for bsearch, with their tallies. */
struct wanted {
	dev_t dev;
	ino_t ino;
	size_t index;	  /* into the caller's arrays */
	unsigned seen_in; /* the process (by walk order) that last mapped it, +1 */
};

static int compare_wanted(const void *a, const void *b)
{
	const struct wanted *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static struct wanted *find_wanted(struct wanted *w, size_t n, dev_t dev, ino_t ino)
{
	struct wanted key = { .dev = dev, .ino = ino };

	return bsearch(&key, w, n, sizeof(*w), compare_wanted);
}

/* Count the fds of process pid (a /proc entry) on any wanted file. */
static void count_fds(int procfd, const char *pid, struct wanted *w, size_t n, int *counts)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/fd", pid);
	int dfd = openat(procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return; /* gone, or not ours to look at */
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	for (struct dirent *e; (e = readdir(d));) {
		struct stat st;
		struct wanted *x;
		if (e->d_name[0] != '.' && fstatat(dfd, e->d_name, &st, 0) == 0 &&
		    (x = find_wanted(w, n, st.st_dev, st.st_ino)))
			counts[x->index]++;
	}
	closedir(d);
}

/* Count one reference per wanted file that process pid maps: a mapping outlives the fd it
 * came from. serial tells this process from the previous ones. */
static void count_maps(int procfd, const char *pid, unsigned serial, struct wanted *w, size_t n,
		       int *counts)
{
	char path[300], line[512];

	snprintf(path, sizeof(path), "%s/maps", pid);
	int fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!f) {
		closep(&fd);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		uint64_t inode;
		struct wanted *x;
		if (sscanf(line, "%*s %*s %*s %x:%x %" SCNu64, &maj, &min, &inode) == 3 && inode &&
		    (x = find_wanted(w, n, makedev(maj, min), (ino_t)inode)) &&
		    x->seen_in != serial) {
			x->seen_in = serial;
			counts[x->index]++;
		}
	}
	fclose(f);
}

/* A memfd has no reference count that user space can read, so the simulated backend counts
 * what the kernel's would: every fd on the buffer in any process, plus one for every process
 * that maps it, less the daemon's own fd. One walk through /proc counts every buffer asked
 * for, so its cost does not grow with the number of leases; it grows with every fd on the
 * machine, which is why the revocation engine runs it on a thread of its own. It needs only
 * the files' identities: no fd of the daemon is touched. Seeing other users' processes needs
 * the privileges p2pbufd runs with.
 *
 * A buffer in flight in a socket (sent, not yet received) is in no process and is not
 * counted: the kernel shows how many fds wait in a socket's queue ("scm_fds:" in the
 * receiving socket's /proc/PID/fdinfo) but not which files they are, and a memfd's own
 * fdinfo has no reference count. */
static int sim_count_files(const struct device_file *files, size_t n, int *counts)
{
	_cleanup_free_ struct wanted *w = calloc(n ? n : 1, sizeof(*w));
	unsigned serial = 0;

	if (!w)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		w[i] = (struct wanted){ .dev = files[i].dev, .ino = files[i].ino, .index = i };
		counts[i] = 0;
	}
	qsort(w, n, sizeof(*w), compare_wanted);
	int procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (procfd < 0)
		return -errno;
	DIR *d = fdopendir(procfd);
	if (!d) {
		close(procfd);
		return -ENOMEM;
	}
	for (struct dirent *e; (e = readdir(d));) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		count_fds(procfd, e->d_name, w, n, counts);
		count_maps(procfd, e->d_name, ++serial, w, n, counts);
	}
	closedir(d);
	for (size_t i = 0; i < n; i++)
		counts[i] = counts[i] > 0 ? counts[i] - 1 : 0;
	return 0;
}

static int sim_holders_many(struct device_handle *h, const int *fds, size_t n, int *counts)
{
	_cleanup_free_ struct device_file *files = calloc(n ? n : 1, sizeof(*files));

	if (!files)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (fstat(fds[i], &st) < 0)
			return -errno;
		files[i] = (struct device_file){ st.st_dev, st.st_ino };
	}
	return sim_count_files(files, n, counts);
}

static int sim_holders(struct device_handle *h, int fd)
{
	int count;
	int r = sim_holders_many(h, &fd, 1, &count);

	return r < 0 ? r : count;
}

/* The client's own open file of the memfd behind fd (a memfd's only other name is its /proc
 * link), so that the kernel's count of the inode's open files tells whether it still exists:
 * fd's file is the daemon's, shared only with the service manager's fd store. */
static int sim_reopen(struct device_handle *h, int fd, int *ret_fd)
{
	char name[16];

	text_u64(name, sizeof(name), "", (uint64_t)fd);
	int copy = openat(h->fd_dir, name, O_RDWR | O_CLOEXEC);
	if (copy < 0)
		return -errno;
	*ret_fd = copy;
	return 0;
}

/* A memfd's own file (fd, the daemon's) is not among the files the kernel counts as open for
 * writing; the client's, opened through /proc, is, and stays so while any fd of it exists in
 * any process, a mapping of it or a copy queued in a socket. A read lease is granted only
 * while no file of the inode is open for writing: granted, the client's file is gone, and the
 * lease goes at once. A refusal (or a kernel without leases) leaves it to the walk, which
 * also sees what this cannot: a file the client opened again read-only, or an O_PATH fd. */
static bool sim_unheld(int fd)
{
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
		return false;
	(void)fcntl(fd, F_SETLEASE, F_UNLCK);
	return true;
}

static void sim_event_fds(struct device_handle *h, int *ret_req_fd, int *ret_err_fd)
{
	*ret_req_fd = h->req_fd;
	*ret_err_fd = h->err_fd;
}

const struct device_ops sim_ops = {
	.name = "sim",
	.open = sim_open,
	.close = sim_close,
	.export_ranges = sim_export,
	.holders = sim_holders,
	.holders_many = sim_holders_many,
	.holders_detached = sim_count_files,
	/* a walk through /proc: about 2.5 ms with 80 processes, 80 ms with 20 more holding 900
	 * fds each */
	.holders_costly = true,
	.reopen = sim_reopen,
	.unheld = sim_unheld,
	.event_fds = sim_event_fds,
};
