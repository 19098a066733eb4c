# Benchmarks (tests/bench/README): p2pbufd's grant path against a bare SCM_RIGHTS server in
# the same run, and the costs that grow with the work. `make bench` builds them, `make
# bench-run` runs them (BENCH_QUICK=1: the seconds-long version CI runs). Not part of
# `make check`: EXTRA_PROGRAMS are built only when asked for by name.
bench_programs = tests/bench/bench-baseline tests/bench/bench-client tests/bench/bench-policy
EXTRA_PROGRAMS = $(bench_programs)
CLEANFILES += $(bench_programs)

tests_bench_bench_baseline_SOURCES = tests/bench/bench-baseline.c
tests_bench_bench_baseline_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS) $(EVENT_CFLAGS)
# For the sim backend's export (sim_ops) and the framing the daemon uses; nothing else of the
# daemon runs in it.
tests_bench_bench_baseline_LDADD = daemon/libp2pbufd-core.la

tests_bench_bench_client_SOURCES = tests/bench/bench-client.c tests/bench/bench-grant.c \
	tests/bench/bench-scale.c tests/bench/bench-util.c tests/bench/bench.h
tests_bench_bench_client_CFLAGS = $(AM_CFLAGS) -pthread
tests_bench_bench_client_LDADD = client/libp2pbuf.la -lpthread

tests_bench_bench_policy_SOURCES = tests/bench/bench-policy.c
tests_bench_bench_policy_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS) $(EVENT_CFLAGS)
tests_bench_bench_policy_LDADD = daemon/libp2pbufd-core.la

EXTRA_DIST += tests/bench/run.sh tests/bench/README

bench: all $(bench_programs)

# BENCH_QUICK=1: one round, short runs, smaller counts; it still fails if a benchmark breaks.
bench-run: bench
	top_builddir='$(abs_top_builddir)' BENCH_QUICK='$(BENCH_QUICK)' \
		$(SHELL) $(srcdir)/tests/bench/run.sh
.PHONY: bench bench-run
