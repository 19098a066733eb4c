/* What sysfs tells about a PCI device, read through a root prefix like probe.h's (NULL or "":
 * the real /sys; a directory: a test's fake tree): its driver, IOMMU group, BARs (from the
 * resource file), reset methods, its chain of upstream bridges (from where its directory
 * sits under /sys/devices), and what its config space says (memory decode, the PCIe port
 * type, the ACS extended capability). Reading only; what the facts mean is the caller's.
 *
 * Config space beyond the first 64 bytes is readable by root only; what lies beyond what could
 * be read is reported as unknown, never as absent. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCISYS_ADDR_MAX 16 /* "0000:00:1f.7" and the NUL */
#define PCISYS_NAME_MAX 64
#define PCISYS_CHAIN_MAX 16 /* bridges between a device and its host bridge */
#define PCISYS_CONFIG_MAX 4096

/* ACS Control bits that redirect or block peer-to-peer (pci_regs.h names). */
#define PCISYS_ACS_RR 0x0004 /* P2P Request Redirect */
#define PCISYS_ACS_CR 0x0008 /* P2P Completion Redirect */
#define PCISYS_ACS_EC 0x0020 /* P2P Egress Control */

struct pcisys_bar {
	unsigned index;
	uint64_t start, size;
	bool io; /* an I/O-port BAR (never exported) */
	bool is_64bit;
	bool prefetchable;
};

/* One PCI function. Strings are "" when absent. */
struct pcisys_device {
	char address[PCISYS_ADDR_MAX];
	char host_bridge[PCISYS_NAME_MAX]; /* its /sys/devices/pciDDDD:BB */
	bool ids_known;
	unsigned vendor, device;
	char driver[PCISYS_NAME_MAX];
	int iommu_group; /* -1: none */
	size_t n_bars;
	struct pcisys_bar bars[6];
	bool reset_method_known; /* the reset_method file exists */
	char reset_method[128];	 /* "flr bus"; "" when it has none */
	int config_len;		 /* bytes of config space read, or -errno */
	int memory_decode;	 /* PCI_COMMAND.MEMORY: 1, 0, -1 unknown */
	int pcie_type;		 /* PCI_EXP_FLAGS_TYPE, -1 not PCIe or unknown */
	int acs;		 /* 1 has the ACS capability, 0 has none, -1 unknown */
	uint16_t acs_ctrl;	 /* its ACS Control register when acs == 1 */
	/* Upstream bridges, nearest first, up to the root bus; chain_gap: a directory on the way
	 * that is not a PCI function (the chain is then not the kernel's whole path). */
	size_t n_chain;
	char chain[PCISYS_CHAIN_MAX][PCISYS_ADDR_MAX];
	bool chain_gap;
};

/* "01:00.0" or "0000:01:00.0" (any case) into the canonical "0000:01:00.0". Returns 0 or
 * -EINVAL. */
int pcisys_parse_address(const char *s, char ret[PCISYS_ADDR_MAX]);

/* The last component of the target of the device's sysfs symlink attr ("driver",
 * "iommu_group") into buf. Returns 0 or -errno (-ENOENT: no such link). */
int pcisys_device_link(const char *root, const char *address, const char *attr, char *buf,
		       size_t len);

/* Read everything above about the function at address (canonical form). Returns 0, -ENOENT
 * when sysfs has no such device, or another -errno. */
int pcisys_read_device(const char *root, const char *address, struct pcisys_device *ret);

/* The other members of IOMMU group `group` than address, into ret (up to max), sorted.
 * Returns how many there are (may exceed max) or -errno. */
int pcisys_group_members(const char *root, int group, const char *address,
			 char ret[][PCISYS_ADDR_MAX], size_t max);

/* The group's default domain type ("DMA", "DMA-FQ", "identity", ...) into buf. Returns 0 or
 * -errno. */
int pcisys_group_type(const char *root, int group, char *buf, size_t len);

/* The first function on the root bus of host_bridge ("pci0000:00"), which the kernel's P2PDMA
 * code compares with its list of host bridges: into *ret. Returns 0, -ENOENT if there is
 * none, or -errno. */
int pcisys_root_bus_first(const char *root, const char *host_bridge, struct pcisys_device *ret);

/* The addresses of all functions bound to a VFIO driver, sorted (the max lowest). Returns how many
 * there are or -errno. */
int pcisys_vfio_devices(const char *root, char ret[][PCISYS_ADDR_MAX], size_t max);
