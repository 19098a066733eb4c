# The wire schema, the framing both sides share, and the helpers both sides link: the size
# and duration grammar (units), the clocks, the cleanup macros, and the kernel and PCI probes
# (probe, pcisys, p2ppath over sysroot) that the daemon's KernelCaps and the CLI's doctor use. The protobuf-c code is
# generated at build time, never committed.

# libcommon: what every program of the project links, the daemon, libp2pbuf and the CLI
# alike; no protobuf in it.
noinst_LTLIBRARIES += proto/libcommon.la
proto_libcommon_la_SOURCES = proto/units.c proto/units.h proto/clock.c proto/clock.h \
	proto/macro.h proto/text.h proto/sysroot.c proto/sysroot.h proto/probe.c proto/probe.h \
	proto/probe-uapi.h proto/pcisys.c proto/pcisys.h proto/p2ppath.c proto/p2ppath.h
proto_libcommon_la_CFLAGS = $(AM_CFLAGS) -fPIC

noinst_LTLIBRARIES += proto/libwire.la
proto_libwire_la_SOURCES = proto/wire.c proto/wire.h
nodist_proto_libwire_la_SOURCES = proto/p2pbuf.pb-c.c proto/p2pbuf.pb-c.h
proto_libwire_la_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS) -fPIC
proto_libwire_la_LIBADD = proto/libcommon.la $(PROTOBUF_C_LIBS)
BUILT_SOURCES += proto/p2pbuf.pb-c.c proto/p2pbuf.pb-c.h
CLEANFILES += proto/p2pbuf.pb-c.c proto/p2pbuf.pb-c.h
EXTRA_DIST += proto/p2pbuf.proto

proto/p2pbuf.pb-c.c: $(srcdir)/proto/p2pbuf.proto
	$(AM_V_GEN)$(MKDIR_P) proto && \
	$(PROTOC_C) --proto_path=$(srcdir)/proto --c_out=proto $(srcdir)/proto/p2pbuf.proto
proto/p2pbuf.pb-c.h: proto/p2pbuf.pb-c.c
	@test -f $@ || { rm -f $<; $(MAKE) $(AM_MAKEFLAGS) $<; }
