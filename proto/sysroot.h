/* Reading /proc, /sys, /dev and /boot through a root prefix, for the probes (probe.h) and the
 * PCI facts (pcisys.h): root NULL or "" is the real "/", and a directory stands for "/" in
 * tests that build fake trees. Paths are printf formats; a path too long for the buffer is an
 * error (-ENAMETOOLONG), never silently cut. */
#pragma once

#include <stddef.h>

#define SYSROOT_PATH_MAX 4096

/* root + the formatted path ("/sys/bus/pci/devices/%s") into buf. Returns 0 or
 * -ENAMETOOLONG. */
int sysroot_path(const char *root, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Read the file root + path into buf (NUL-terminated, one trailing newline removed). Returns
 * the length or -errno. */
int sysroot_read_file(const char *root, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The last component of the target of the symlink root + path ("vfio-pci" for a driver link)
 * into buf. Returns 0 or -errno. */
int sysroot_read_link(const char *root, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Copy the string src into dst of len bytes. Returns 0, or -ENAMETOOLONG (dst then holds
 * what fits). */
int sysroot_copy(char *dst, size_t len, const char *src);
