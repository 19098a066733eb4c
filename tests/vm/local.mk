# VM tests: Debian's own kernel in QEMU (TCG) with real vfio-pci devices behind an emulated
# IOMMU, p2pbufd and its clients running inside. `make check-vm`; see tests/vm/README.md.
vm_test_files = tests/vm/run-all.sh tests/vm/lib.sh tests/vm/fetch-kernel.sh \
	tests/vm/build-iommufd.sh tests/vm/mkinitrd.sh tests/vm/run-vm.sh tests/vm/guest-lib.sh \
	tests/vm/probe.sh tests/vm/cases.sh tests/vm/fetch-udev.sh tests/vm/systemd-cases.sh
EXTRA_DIST += $(vm_test_files) tests/vm/vm-probe.c tests/vm/vm-uapi.h tests/vm/README.md tests/vm/.shellcheckrc

# Built with `make check` too, so that it keeps compiling. -no-install makes it the real ELF
# (not a libtool wrapper); in the guest it finds libp2pbuf in /usr/local/lib.
check_PROGRAMS += tests/vm/vm-importer
tests_vm_vm_importer_SOURCES = tests/vm/vm-importer.c tests/vm/vm-uapi.h
tests_vm_vm_importer_LDADD = client/libp2pbuf.la
tests_vm_vm_importer_LDFLAGS = $(AM_LDFLAGS) -no-install

# The vfio backend's costs against the bare ioctls (case 16); the quantiles are the host
# bench's own (tests/bench/bench-util.c), so that both report figures the same way.
check_PROGRAMS += tests/vm/vm-bench
tests_vm_vm_bench_SOURCES = tests/vm/vm-bench.c tests/vm/vm-uapi.h tests/bench/bench-util.c \
	tests/bench/bench.h
tests_vm_vm_bench_LDADD = client/libp2pbuf.la
tests_vm_vm_bench_LDFLAGS = $(AM_LDFLAGS) -no-install

# iomem=relaxed: Debian's kernels have IO_STRICT_DEVMEM and vfio-pci reserves the BARs it
# opens, so the guest's cases could not read the ivshmem bytes through sysfs without it.
# The systemd flavour boots with what `make install` installs, into vm_install_root.
# One flavour: make check-vm P2PBUF_VM_FLAVOURS=systemd (or "stock iommufd").
vm_install_root = tests/vm/install-root
check-vm: all tests/vm/vm-importer$(EXEEXT) tests/vm/vm-bench$(EXEEXT)
	rm -rf $(vm_install_root)
	$(MAKE) $(AM_MAKEFLAGS) install DESTDIR=$(abs_builddir)/$(vm_install_root) >/dev/null
	$(SHELL) $(srcdir)/tests/vm/run-all.sh --install-deps --script $(srcdir)/tests/vm/cases.sh \
		--systemd-script $(srcdir)/tests/vm/systemd-cases.sh --root $(vm_install_root) \
		--bin daemon/p2pbufd$(EXEEXT) --bin client/.libs/p2pbuf-client$(EXEEXT) \
		--bin tests/vm/vm-importer$(EXEEXT) --bin tests/vm/vm-bench$(EXEEXT) --lib client/.libs/libp2pbuf.so.0 \
		--append iomem=relaxed
.PHONY: check-vm
clean-local: clean-vm-install-root
clean-vm-install-root:
	rm -rf $(vm_install_root)
.PHONY: clean-vm-install-root
