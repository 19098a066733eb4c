# p2pbufd. The policy language is a library of its own, which the CLI links too, so that
# `p2pbuf-client policy check` judges a policy by the daemon's own code; it needs only
# libcommon (the size and duration grammar).
noinst_LTLIBRARIES += daemon/libpolicy.la
daemon_libpolicy_la_SOURCES = daemon/policy.c daemon/policy.h daemon/policy-load.c \
	daemon/range.h
daemon_libpolicy_la_CFLAGS = $(AM_CFLAGS)
daemon_libpolicy_la_LIBADD = proto/libcommon.la

# Everything else but main.c goes into a convenience library that the unit and integration
# tests link as well.
noinst_LTLIBRARIES += daemon/libp2pbufd-core.la
daemon_libp2pbufd_core_la_SOURCES = \
	daemon/audit.c daemon/audit.h \
	daemon/daemon.c daemon/daemon.h \
	daemon/device.c daemon/device.h \
	daemon/events.c daemon/events.h \
	daemon/handlers.c daemon/handlers.h \
	daemon/hotplug.c daemon/hotplug.h \
	daemon/lease.c daemon/lease.h \
	daemon/log.c daemon/log.h \
	daemon/manager.c daemon/manager.h \
	daemon/peer.c daemon/peer.h \
	daemon/persist.c daemon/persist.h \
	daemon/range.h \
	daemon/registry.c daemon/registry.h \
	daemon/revoke.c daemon/revoke.h \
	daemon/sandbox.c daemon/sandbox.h \
	daemon/server.c daemon/server.h \
	daemon/session.c daemon/session.h \
	daemon/sim.c \
	daemon/vfio.c daemon/vfio-uapi.h \
	daemon/worker.c daemon/worker.h
daemon_libp2pbufd_core_la_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS) $(EVENT_CFLAGS) \
	$(SYSTEMD_CFLAGS) $(SECCOMP_CFLAGS) -pthread
daemon_libp2pbufd_core_la_LIBADD = daemon/libpolicy.la proto/libwire.la $(EVENT_LIBS) $(SYSTEMD_LIBS) \
	$(SECCOMP_LIBS) $(PROTOBUF_C_LIBS) -lpthread

sbin_PROGRAMS += daemon/p2pbufd
dist_man_MANS += daemon/p2pbufd.8
daemon_p2pbufd_SOURCES = daemon/main.c
daemon_p2pbufd_CFLAGS = $(daemon_libp2pbufd_core_la_CFLAGS)
daemon_p2pbufd_LDADD = daemon/libp2pbufd-core.la
