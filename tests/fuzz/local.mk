# libFuzzer targets (configure --enable-fuzzing CC=clang): wire decode + request checks +
# dispatch into a daemon core, the policy parser, the CLI's policy editor, and libp2pbuf's
# reading of what a daemon sends. `make fuzz`
# runs each for FUZZ_SECONDS; `make fuzz-ci` runs each for FUZZ_CI_SECONDS from the committed
# seeds and fails on a crash, a leak or a timeout.
EXTRA_DIST += tests/fuzz/fuzz-wire.c tests/fuzz/fuzz-policy.c tests/fuzz/corpus-wire \
	tests/fuzz/corpus-policy tests/fuzz/fuzz-policy-edit.c tests/fuzz/corpus-policy-edit \
	tests/fuzz/fuzz-client.c tests/fuzz/corpus-client
if ENABLE_FUZZING
noinst_PROGRAMS += tests/fuzz/fuzz-wire tests/fuzz/fuzz-policy tests/fuzz/fuzz-policy-edit \
	tests/fuzz/fuzz-client
tests_fuzz_fuzz_wire_SOURCES = tests/fuzz/fuzz-wire.c
tests_fuzz_fuzz_wire_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS) $(EVENT_CFLAGS) -fsanitize=fuzzer,address
tests_fuzz_fuzz_wire_LDFLAGS = -fsanitize=fuzzer,address
tests_fuzz_fuzz_wire_LDADD = daemon/libp2pbufd-core.la
tests_fuzz_fuzz_policy_SOURCES = tests/fuzz/fuzz-policy.c
tests_fuzz_fuzz_policy_CFLAGS = $(AM_CFLAGS) -fsanitize=fuzzer,address
tests_fuzz_fuzz_policy_LDFLAGS = -fsanitize=fuzzer,address
tests_fuzz_fuzz_policy_LDADD = daemon/libp2pbufd-core.la
tests_fuzz_fuzz_policy_edit_SOURCES = tests/fuzz/fuzz-policy-edit.c
tests_fuzz_fuzz_policy_edit_CFLAGS = $(AM_CFLAGS) -fsanitize=fuzzer,address
tests_fuzz_fuzz_policy_edit_LDFLAGS = -fsanitize=fuzzer,address
tests_fuzz_fuzz_policy_edit_LDADD = client/libpolicyedit.la
# libp2pbuf's reading of daemon records; linked as a program links it, plus the wire code
# for the stand-in daemon.
tests_fuzz_fuzz_client_SOURCES = tests/fuzz/fuzz-client.c
tests_fuzz_fuzz_client_CFLAGS = $(AM_CFLAGS) $(PROTOBUF_C_CFLAGS) -fsanitize=fuzzer,address
tests_fuzz_fuzz_client_LDFLAGS = -fsanitize=fuzzer,address -pthread
tests_fuzz_fuzz_client_LDADD = client/libp2pbuf.la proto/libwire.la
FUZZ_SECONDS ?= 60
# New inputs go to fuzz-corpus-*/ in the build tree (kept: they are the fuzzers' work so
# far); the policy fuzzer starts from the shipped policy files.
fuzz: tests/fuzz/fuzz-wire tests/fuzz/fuzz-policy tests/fuzz/fuzz-policy-edit \
		tests/fuzz/fuzz-client
	$(MKDIR_P) fuzz-corpus-wire fuzz-corpus-policy fuzz-corpus-policy-edit fuzz-corpus-client
	tests/fuzz/fuzz-wire -max_total_time=$(FUZZ_SECONDS) fuzz-corpus-wire
	tests/fuzz/fuzz-policy -max_total_time=$(FUZZ_SECONDS) fuzz-corpus-policy \
		$(srcdir)/policy
	tests/fuzz/fuzz-policy-edit -max_total_time=$(FUZZ_SECONDS) fuzz-corpus-policy-edit \
		$(srcdir)/tests/fuzz/corpus-policy-edit
	tests/fuzz/fuzz-client -max_total_time=$(FUZZ_SECONDS) fuzz-corpus-client \
		$(srcdir)/tests/fuzz/corpus-client
FUZZ_CI_SECONDS ?= 60
# Seeds are read from the source tree and never written; what the run finds goes to
# fuzz-ci-*/ in the build tree (with the crashing input, if any, as its artifact).
# libFuzzer exits non-zero on a crash, a leak (ASan's leak check runs after each input that
# grew memory) or an input slower than -timeout; the last lines say what it covered.
fuzz-ci: tests/fuzz/fuzz-wire tests/fuzz/fuzz-policy tests/fuzz/fuzz-policy-edit \
		tests/fuzz/fuzz-client
	@for t in wire policy policy-edit client; do \
		rm -rf fuzz-ci-$$t && $(MKDIR_P) fuzz-ci-$$t/corpus && \
		echo "fuzz-$$t: $(FUZZ_CI_SECONDS) s from tests/fuzz/corpus-$$t"; \
		if ! tests/fuzz/fuzz-$$t -max_total_time=$(FUZZ_CI_SECONDS) -timeout=10 \
			-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=fuzz-ci-$$t/ \
			fuzz-ci-$$t/corpus $(srcdir)/tests/fuzz/corpus-$$t >fuzz-ci-$$t.log 2>&1; then \
			tail -n 40 fuzz-ci-$$t.log; \
			echo "FAIL: fuzz-$$t (log fuzz-ci-$$t.log, input in fuzz-ci-$$t/)"; exit 1; \
		fi; \
		awk -v t=fuzz-$$t '/DONE/{for(i=1;i<=NF;i++){if($$i=="cov:")c=$$(i+1); if($$i=="ft:")f=$$(i+1); if($$i=="corp:")k=$$(i+1)}} \
			/stat::number_of_executed_units/{e=$$2} \
			END{printf "PASS: %s: %s execs, %s edges, %s features, corpus %s\n", t, e, c, f, k}' \
			fuzz-ci-$$t.log; \
	done
else
fuzz fuzz-ci:
	@echo "the fuzzers need configure --enable-fuzzing CC=clang"; exit 1
endif
.PHONY: fuzz fuzz-ci
