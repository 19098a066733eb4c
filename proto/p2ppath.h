/* Would the kernel's P2PDMA code let a device DMA into another device's BAR? The same decision
 * as calc_map_type_and_dist() in drivers/pci/p2pdma.c (Linux 7.2), made over sysfs facts
 * (pcisys.h): the nearest common upstream bridge, ACS redirects on the path, and, when the path
 * goes through the host bridge, the CPU and host-bridge rules. Importers that map a dma-buf
 * with dma_buf_map_attachment() (RDMA NICs, GPUs) get EINVAL when the answer is
 * P2PPATH_NOT_SUPPORTED; iommufd maps the BAR's addresses itself and is not asked. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "pcisys.h"

enum p2ppath_map {
	P2PPATH_UNKNOWN = 0,	  /* a fact needed could not be read (why: unknown_what) */
	P2PPATH_BUS_ADDR,	  /* through the common bridge, by PCI bus address */
	P2PPATH_THRU_HOST_BRIDGE, /* up through the root complex, which allows it */
	P2PPATH_NOT_SUPPORTED,	  /* refused */
};

/* Why a root-complex path is or is not allowed. */
enum p2ppath_host {
	P2PPATH_HOST_NOT_NEEDED = 0, /* the path does not go through the host bridge */
	P2PPATH_HOST_CPU,	     /* AMD Zen or newer: the kernel allows any */
	P2PPATH_HOST_LISTED,	     /* the host bridge is on the kernel's list */
	P2PPATH_HOST_NOT_SAME,	     /* listed, but only for devices under one host bridge */
	P2PPATH_HOST_NOT_LISTED,     /* not on the list */
	P2PPATH_HOST_UNKNOWN,	     /* its first root-bus device could not be identified */
};

/* One function on the path: the device itself or one of its upstream bridges. */
struct p2ppath_node {
	char address[PCISYS_ADDR_MAX];
	int acs; /* as pcisys_device.acs */
	uint16_t acs_ctrl;
	bool redirect; /* ACS RR, CR or EC set: the kernel counts it as redirecting */
};

/* The host bridge's device that the kernel's list is compared with. */
struct p2ppath_host_dev {
	char host_bridge[PCISYS_NAME_MAX]; /* "pci0000:00" */
	bool known;
	char address[PCISYS_ADDR_MAX];
	unsigned vendor, device;
};

struct p2ppath {
	/* Each side's path: the device first, then its bridges up to the root bus. */
	size_t n_a, n_b;
	struct p2ppath_node a[PCISYS_CHAIN_MAX + 1], b[PCISYS_CHAIN_MAX + 1];
	int common_a, common_b; /* index of the nearest common function; -1: none */
	int distance;		/* the kernel's: steps up from a plus steps down to b */
	bool on_path[2][PCISYS_CHAIN_MAX + 1]; /* [0] a's, [1] b's nodes the kernel checks */
	bool chain_gap;			       /* a non-PCI directory lies on a chain */
	bool same_host_bridge;
	enum p2ppath_host host;
	struct p2ppath_host_dev host_a, host_b;
	bool amd_zen; /* /proc/cpuinfo says AMD family >= 0x17 */
	enum p2ppath_map map;
	char unknown_what[160]; /* for P2PPATH_UNKNOWN */
};

/* Decide for exporter a and importer b (both read with pcisys_read_device()). Returns 0 or
 * -errno when a bridge on the way cannot be read at all. */
int p2ppath_compute(const char *root, const struct pcisys_device *a, const struct pcisys_device *b,
		    struct p2ppath *ret);
