# The hostile-input suite: attacks on a real p2pbufd while a good client works (see
# tests/hostile/hostile.c). Part of make check; bounded by Check's per-case timeouts.
check_PROGRAMS += tests/hostile/hostile
tests_hostile_hostile_SOURCES = tests/hostile/hostile.c tests/hostile/hostile.h \
	tests/hostile/cases.c tests/integration/harness.c tests/integration/harness.h
tests_hostile_hostile_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tests/integration
tests_hostile_hostile_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_hostile_hostile_LDADD = client/libp2pbuf.la proto/libwire.la $(CHECK_LIBS) \
	$(PROTOBUF_C_LIBS)
TESTS += tests/hostile/hostile
