# systemd/: the service's files and the admin helpers installed beside it.
dist_sbin_SCRIPTS += systemd/p2pbuf-vfio-bind
