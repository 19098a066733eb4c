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

# Churn: 1,000 clients over 60 s (see tests/hostile/churn.c). Built with the tests, run only
# by `make check-churn` (.ci/run does), so that make check stays quick.
check_PROGRAMS += tests/hostile/churn
tests_hostile_churn_SOURCES = tests/hostile/churn.c tests/integration/harness.c \
	tests/integration/harness.h
tests_hostile_churn_CPPFLAGS = $(tests_hostile_hostile_CPPFLAGS)
tests_hostile_churn_CFLAGS = $(tests_hostile_hostile_CFLAGS)
tests_hostile_churn_LDADD = $(tests_hostile_hostile_LDADD)
check-churn: tests/hostile/churn daemon/p2pbufd
	top_builddir='$(abs_top_builddir)' top_srcdir='$(abs_top_srcdir)' tests/hostile/churn
.PHONY: check-churn
