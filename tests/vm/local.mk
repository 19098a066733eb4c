# VM tests: Debian's own kernel in QEMU (TCG) with real vfio-pci devices behind an emulated
# IOMMU, p2pbufd and its clients running inside. `make check-vm`; see tests/vm/README.md.
vm_test_files = tests/vm/run-all.sh tests/vm/lib.sh tests/vm/fetch-kernel.sh \
	tests/vm/build-iommufd.sh tests/vm/mkinitrd.sh tests/vm/run-vm.sh tests/vm/guest-lib.sh \
	tests/vm/probe.sh
EXTRA_DIST += $(vm_test_files) tests/vm/vm-probe.c tests/vm/README.md tests/vm/.shellcheckrc

check-vm: all
	$(SHELL) $(srcdir)/tests/vm/run-all.sh --install-deps
.PHONY: check-vm
