# libFuzzer targets (configure --enable-fuzzing CC=clang): wire decode + request checks, and
# the policy parser. `make fuzz` runs each for FUZZ_SECONDS.
EXTRA_DIST += tests/fuzz/fuzz-wire.c tests/fuzz/fuzz-policy.c
if ENABLE_FUZZING
noinst_PROGRAMS += tests/fuzz/fuzz-wire tests/fuzz/fuzz-policy
tests_fuzz_fuzz_wire_SOURCES = tests/fuzz/fuzz-wire.c
tests_fuzz_fuzz_wire_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS) $(EVENT_CFLAGS) -fsanitize=fuzzer,address
tests_fuzz_fuzz_wire_LDFLAGS = -fsanitize=fuzzer,address
tests_fuzz_fuzz_wire_LDADD = daemon/libp2pbufd-core.la
tests_fuzz_fuzz_policy_SOURCES = tests/fuzz/fuzz-policy.c
tests_fuzz_fuzz_policy_CFLAGS = $(AM_CFLAGS) -fsanitize=fuzzer,address
tests_fuzz_fuzz_policy_LDFLAGS = -fsanitize=fuzzer,address
tests_fuzz_fuzz_policy_LDADD = daemon/libp2pbufd-core.la
FUZZ_SECONDS ?= 60
# New inputs go to fuzz-corpus-*/ in the build tree (kept: they are the fuzzers' work so
# far); the policy fuzzer starts from the shipped policy files.
fuzz: tests/fuzz/fuzz-wire tests/fuzz/fuzz-policy
	$(MKDIR_P) fuzz-corpus-wire fuzz-corpus-policy
	tests/fuzz/fuzz-wire -max_total_time=$(FUZZ_SECONDS) fuzz-corpus-wire
	tests/fuzz/fuzz-policy -max_total_time=$(FUZZ_SECONDS) fuzz-corpus-policy \
		$(srcdir)/policy
endif
