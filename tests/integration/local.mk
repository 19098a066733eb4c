# Integration tests: the real p2pbufd on a temporary socket with simulated devices, driven
# through libp2pbuf, raw sockets and the p2pbuf-client CLI.
check_PROGRAMS += tests/integration/test-daemon
tests_integration_test_daemon_SOURCES = tests/integration/test-daemon.c \
	tests/integration/harness.c tests/integration/harness.h
tests_integration_test_daemon_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(PROTOBUF_C_CFLAGS)
tests_integration_test_daemon_LDADD = client/libp2pbuf.la proto/libwire.la $(CHECK_LIBS) \
	$(PROTOBUF_C_LIBS)

check_PROGRAMS += tests/integration/test-revoke
tests_integration_test_revoke_SOURCES = tests/integration/test-revoke.c \
	tests/integration/harness.c tests/integration/harness.h
tests_integration_test_revoke_CFLAGS = $(tests_integration_test_daemon_CFLAGS)
tests_integration_test_revoke_LDADD = $(tests_integration_test_daemon_LDADD)

check_PROGRAMS += tests/integration/test-restart
tests_integration_test_restart_SOURCES = tests/integration/test-restart.c
tests_integration_test_restart_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) -pthread
tests_integration_test_restart_LDADD = client/libp2pbuf.la $(CHECK_LIBS) -lpthread

integration_tests = tests/integration/test-daemon tests/integration/test-revoke \
	tests/integration/test-restart \
	tests/integration/test-cli.sh tests/integration/test-doctor.sh tests/check-format.sh \
	tests/check-layers.sh tests/integration/test-service.sh tests/integration/test-cli-policy.sh
TESTS += $(integration_tests)
EXTRA_DIST += tests/integration/test-cli.sh tests/check-format.sh tests/check-layers.sh \
	tests/integration/test-service.sh tests/integration/test-doctor.sh \
	tests/integration/doctor-tree.py tests/integration/test-cli-policy.sh \
	tests/integration/cli-lib.sh
