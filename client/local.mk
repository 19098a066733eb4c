# libp2pbuf (the client library) and p2pbuf-client (the CLI, which uses only the public API).
lib_LTLIBRARIES += client/libp2pbuf.la
client_libp2pbuf_la_SOURCES = client/libp2pbuf.c client/requests.c client/libp2pbuf-private.h
client_libp2pbuf_la_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS)
client_libp2pbuf_la_LIBADD = proto/libwire.la $(PROTOBUF_C_LIBS)
client_libp2pbuf_la_LDFLAGS = $(AM_LDFLAGS) -no-undefined \
	-Wl,--version-script=$(srcdir)/client/libp2pbuf.sym -version-info 0:0:0
# Relink when the symbol map changes (automake's name for libp2pbuf_la's extra dependencies).
EXTRA_client_libp2pbuf_la_DEPENDENCIES = $(srcdir)/client/libp2pbuf.sym
EXTRA_DIST += client/libp2pbuf.sym client/libp2pbuf.pc.in
# configure makes p2pbuf.h from p2pbuf.h.in: it carries the configured socket path.
nodist_include_HEADERS = client/p2pbuf.h
EXTRA_DIST += client/p2pbuf.h.in

# pkgconfigdir is defined in the top-level Makefile.am.
pkgconfig_DATA += client/libp2pbuf.pc

# The policy editor (document model and installing), a library of its own so that its unit
# tests and its fuzz target link exactly what the CLI runs.
noinst_LTLIBRARIES += client/libpolicyedit.la
client_libpolicyedit_la_SOURCES = client/policy-edit.c client/policy-edit.h
client_libpolicyedit_la_CFLAGS = $(AM_CFLAGS)
client_libpolicyedit_la_LIBADD = daemon/libpolicy.la

bin_PROGRAMS += client/p2pbuf-client
client_p2pbuf_client_SOURCES = client/cli.h client/cli-main.c client/cli-errors.c \
	client/cli-output.c client/cli-devices.c client/cli-leases.c client/cli-export.c \
	client/cli-admin.c client/cli-doctor.c client/cli-policy.c
client_p2pbuf_client_CFLAGS = $(AM_CFLAGS)
client_p2pbuf_client_LDADD = client/libpolicyedit.la client/libp2pbuf.la proto/libcommon.la
dist_man_MANS += client/p2pbuf-client.1 client/libp2pbuf.3

# Bash completion, installed under the name bash-completion loads it by: the command's.
bashcompletion_DATA = client/completion/p2pbuf-client
client/completion/p2pbuf-client: $(srcdir)/client/p2pbuf-client.bash-completion
	$(AM_V_GEN)$(MKDIR_P) client/completion && cp $(srcdir)/client/p2pbuf-client.bash-completion $@
CLEANFILES += client/completion/p2pbuf-client
EXTRA_DIST += client/p2pbuf-client.bash-completion
