# Unit tests (Check): pure modules, no daemon.
UNIT_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(PROTOBUF_C_CFLAGS) $(EVENT_CFLAGS)
UNIT_LDADD = daemon/libp2pbufd-core.la $(CHECK_LIBS)

unit_tests = tests/unit/test-wire tests/unit/test-device tests/unit/test-lease \
	tests/unit/test-policy tests/unit/test-policy-oom tests/unit/test-units tests/unit/test-revoke \
	tests/unit/test-log tests/unit/test-server \
	tests/unit/test-sandbox tests/unit/test-policy-edit
check_PROGRAMS += $(unit_tests)
TESTS += $(unit_tests)

tests_unit_test_wire_SOURCES = tests/unit/test-wire.c
tests_unit_test_wire_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_wire_LDADD = $(UNIT_LDADD)
# The decode tests count the requests that reach protobuf-c's decoder (the grant path's
# must not): the program's calls to it go through a wrapper in test-wire.c.
tests_unit_test_wire_LDFLAGS = -Wl,--wrap=protobuf_c_message_unpack
tests_unit_test_device_SOURCES = tests/unit/test-device.c
tests_unit_test_device_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_device_LDADD = $(UNIT_LDADD)
tests_unit_test_lease_SOURCES = tests/unit/test-lease.c
tests_unit_test_lease_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_lease_LDADD = $(UNIT_LDADD)
tests_unit_test_policy_SOURCES = tests/unit/test-policy.c
tests_unit_test_policy_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_policy_LDADD = $(UNIT_LDADD)
# The policy's out-of-memory tests, from the same source: a program of their own so that it
# can exit 77 (SKIP) where malloc cannot be replaced (valgrind, sanitizers).
tests_unit_test_policy_oom_SOURCES = tests/unit/test-policy.c
tests_unit_test_policy_oom_CPPFLAGS = $(AM_CPPFLAGS) -DTEST_POLICY_OOM=1
tests_unit_test_policy_oom_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_policy_oom_LDADD = $(UNIT_LDADD)
# The size and duration grammar lives in libcommon, which is all this test needs.
tests_unit_test_units_SOURCES = tests/unit/test-units.c
tests_unit_test_units_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_units_LDADD = proto/libcommon.la $(CHECK_LIBS)
tests_unit_test_revoke_SOURCES = tests/unit/test-revoke.c
tests_unit_test_revoke_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_revoke_LDADD = $(UNIT_LDADD)
tests_unit_test_log_SOURCES = tests/unit/test-log.c
tests_unit_test_log_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_log_LDADD = $(UNIT_LDADD)
tests_unit_test_server_SOURCES = tests/unit/test-server.c
tests_unit_test_server_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_server_LDADD = $(UNIT_LDADD)
tests_unit_test_sandbox_SOURCES = tests/unit/test-sandbox.c
tests_unit_test_sandbox_CFLAGS = $(UNIT_CFLAGS) $(SYSTEMD_CFLAGS) -pthread
tests_unit_test_sandbox_LDADD = $(UNIT_LDADD) $(SYSTEMD_LIBS) -lpthread
# The CLI's policy editor: what the CLI links, and nothing of the daemon's core.
tests_unit_test_policy_edit_SOURCES = tests/unit/test-policy-edit.c
tests_unit_test_policy_edit_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_policy_edit_LDADD = client/libpolicyedit.la $(CHECK_LIBS)
