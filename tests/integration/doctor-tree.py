#!/usr/bin/env python3
"""Build a fake /proc, /sys, /dev and /boot for p2pbuf-client doctor (P2PBUF_DOCTOR_ROOT).

The machine: host bridge 0000:00:00.0, root port 0000:00:01.0 with a PCIe switch below it
(upstream port 0000:01:00.0, downstream ports 0000:02:00.0 and 0000:02:01.0), the exporter
0000:03:00.0 (vfio-pci, IOMMU group 5 shared with its audio function 0000:03:00.1) behind the
first downstream port, an importer 0000:04:00.0 (mlx5_core) behind the second, and a second
root port 0000:00:02.0 with importer 0000:05:00.0 on it: a path inside the switch and one
across the root complex. Config space files are 4096 bytes with a capability list (PCIe
capability at 0x40) and, on the ports, an ACS extended capability at 0x100.

Usage: doctor-tree.py DIR [--release R] [--host-id VVVV:DDDD] [--cpu intel|amd]
       [--acs ADDR=CTRL]... [--short-config ADDR]... [--iommufd] [--no-config]
"""
import argparse
import os
import struct

PORT_TYPES = {"root": 4, "upstream": 5, "downstream": 6, "endpoint": 0}


def config_space(vendor, device, command, pcie_type, acs_ctrl, header_type):
    c = bytearray(4096)
    struct.pack_into("<HHHH", c, 0, vendor, device, command, 0x0010)  # status: cap list
    c[0x0E] = header_type
    c[0x34] = 0x40
    # Power management at 0x40 -> PCIe at 0x50: the walk must follow the list.
    c[0x40], c[0x41] = 0x01, 0x50
    c[0x50], c[0x51] = 0x10, 0x00
    struct.pack_into("<H", c, 0x52, 0x0002 | (pcie_type << 4))
    if acs_ctrl is None:
        # Extended list: only an AER capability (ID 1), no ACS.
        struct.pack_into("<I", c, 0x100, 0x0001 | (1 << 16))
    else:
        # AER at 0x100 -> ACS at 0x148: the walk must follow the next pointers.
        struct.pack_into("<I", c, 0x100, 0x0001 | (1 << 16) | (0x148 << 20))
        struct.pack_into("<I", c, 0x148, 0x000D | (1 << 16))
        struct.pack_into("<HH", c, 0x14C, 0x005F, acs_ctrl)
    return bytes(c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--release", default="7.2.13+deb14-amd64")
    ap.add_argument("--host-id", default="8086:1234")
    ap.add_argument("--cpu", default="intel")
    ap.add_argument("--acs", action="append", default=[])
    ap.add_argument("--short-config", action="append", default=[])
    ap.add_argument("--iommufd", action="store_true")
    ap.add_argument("--no-config", action="store_true")
    a = ap.parse_args()
    root = a.dir
    acs = {"0000:00:01.0": 0, "0000:00:02.0": 0, "0000:02:00.0": 0, "0000:02:01.0": 0}
    for spec in a.acs:
        addr, ctrl = spec.split("=")
        acs[addr] = int(ctrl, 0)
    hv, hd = (int(x, 16) for x in a.host_id.split(":"))

    def w(path, data, mode="w"):
        p = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, mode) as f:
            f.write(data)

    w("/proc/sys/kernel/osrelease", a.release + "\n")
    w("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on quiet\n")
    if a.cpu == "amd":
        w("/proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    else:
        w("/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n")
    if not a.no_config:
        w("/boot/config-" + a.release,
          "#\n# Linux kernel configuration\n#\nCONFIG_VFIO_PCI_DMABUF=y\n"
          "# CONFIG_IOMMUFD is not set\n")
    # Device nodes are plain files here: the probes open them but never ioctl a file.
    w("/dev/vfio/vfio", "")
    w("/dev/vfio/5", "")
    if a.iommufd:
        w("/dev/iommu", "")
    os.makedirs(os.path.join(root, "sys/class/iommu/dmar0"), exist_ok=True)

    # (address, parent address or None, vendor, device, kind, driver, group, resource lines)
    mem32 = "0x00000000fe000000 0x00000000fe003fff 0x0000000000040200"
    mem64 = "0x0000000800000000 0x00000008001fffff 0x000000000014220c"
    io = "0x000000000000e000 0x000000000000e01f 0x0000000000040101"
    none = "0x0000000000000000 0x0000000000000000 0x0000000000000000"
    devices = [
        ("0000:00:00.0", None, hv, hd, "endpoint", "", 0, []),
        ("0000:00:01.0", None, 0x8086, 0x1901, "root", "pcieport", 1, []),
        ("0000:00:02.0", None, 0x8086, 0x1905, "root", "pcieport", 2, []),
        ("0000:01:00.0", "0000:00:01.0", 0x10b5, 0x8747, "upstream", "pcieport", 3, []),
        ("0000:02:00.0", "0000:01:00.0", 0x10b5, 0x8747, "downstream", "pcieport", 3, []),
        ("0000:02:01.0", "0000:01:00.0", 0x10b5, 0x8747, "downstream", "pcieport", 4, []),
        ("0000:03:00.0", "0000:02:00.0", 0x10de, 0x2230, "endpoint", "vfio-pci", 5,
         [mem32, none, mem64, none, io, none]),
        ("0000:03:00.1", "0000:02:00.0", 0x10de, 0x1aef, "endpoint", "snd_hda_intel", 5,
         [mem32]),
        ("0000:04:00.0", "0000:02:01.0", 0x15b3, 0x101b, "endpoint", "mlx5_core", 6,
         [mem64]),
        ("0000:05:00.0", "0000:00:02.0", 0x15b3, 0x101b, "endpoint", "mlx5_core", 7,
         [mem64]),
    ]
    paths = {}
    for addr, parent, ven, dev, kind, driver, group, res in devices:
        base = paths[parent] if parent else "sys/devices/pci0000:00"
        paths[addr] = os.path.join(base, addr)
        d = paths[addr]
        bridge = kind != "endpoint"
        w(d + "/vendor", "0x%04x\n" % ven)
        w(d + "/device", "0x%04x\n" % dev)
        lines = (res + [none] * 13)[:13]
        w(d + "/resource", "".join(l + "\n" for l in lines))
        cfg = config_space(ven, dev, 0x0406 if addr != "0000:03:00.1" else 0x0400,
                           PORT_TYPES[kind], acs.get(addr) if bridge else None,
                           1 if bridge else 0)
        if addr in a.short_config:
            cfg = cfg[:64]
        w(d + "/config", cfg, "wb")
        if kind == "endpoint" and addr != "0000:00:00.0":
            w(d + "/reset_method", "flr bus\n" if addr == "0000:03:00.0" else "bus\n")
        link = os.path.join(root, "sys/bus/pci/devices", addr)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(os.path.join(root, d), os.path.dirname(link)), link)
        if driver:
            drv = os.path.join(root, "sys/bus/pci/drivers", driver)
            os.makedirs(drv, exist_ok=True)
            os.symlink(os.path.relpath(drv, os.path.join(root, d)),
                       os.path.join(root, d, "driver"))
        g = os.path.join(root, "sys/kernel/iommu_groups", str(group))
        os.makedirs(os.path.join(g, "devices"), exist_ok=True)
        if not os.path.exists(os.path.join(g, "type")):
            w("sys/kernel/iommu_groups/%d/type" % group, "DMA-FQ\n")
        os.symlink(os.path.relpath(os.path.join(root, d), os.path.join(g, "devices")),
                   os.path.join(g, "devices", addr))
        os.symlink(os.path.relpath(g, os.path.join(root, d)), os.path.join(root, d, "iommu_group"))
    # The exporter's sysfs vfio-dev entry without a /dev/vfio/devices node: no cdev support.
    os.makedirs(os.path.join(root, paths["0000:03:00.0"], "vfio-dev/vfio0"), exist_ok=True)


main()
