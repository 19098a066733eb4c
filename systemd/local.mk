# systemd/: the service's units, its sysusers.d, tmpfiles.d and udev files, and the admin
# helper installed beside them. The units and files are made from their .in templates with
# the configured paths (make-time, so that $(sbindir) and friends are fully expanded).
dist_sbin_SCRIPTS += systemd/p2pbuf-vfio-bind
dist_man_MANS += systemd/p2pbuf-vfio-bind.8

systemd_generated = systemd/p2pbufd.service systemd/p2pbufd.socket \
	systemd/sysusers/p2pbufd.conf systemd/tmpfiles/p2pbufd.conf systemd/70-p2pbufd.rules
systemd_templates = systemd/p2pbufd.service.in systemd/p2pbufd.socket.in \
	systemd/p2pbufd.sysusers.in systemd/p2pbufd.tmpfiles.in systemd/70-p2pbufd.rules.in
EXTRA_DIST += $(systemd_templates)
CLEANFILES += $(systemd_generated)

systemdsystemunit_DATA = systemd/p2pbufd.service systemd/p2pbufd.socket
sysusers_DATA = systemd/sysusers/p2pbufd.conf
tmpfiles_DATA = systemd/tmpfiles/p2pbufd.conf
udevrules_DATA = systemd/70-p2pbufd.rules

systemd_edit = $(SED) \
	-e 's|@sbindir[@]|$(sbindir)|g' \
	-e 's|@P2PBUF_SOCKET_PATH[@]|$(P2PBUF_SOCKET_PATH)|g' \
	-e 's|@P2PBUF_POLICY_DIR[@]|$(sysconfdir)/p2pbuf|g' \
	-e 's|@P2PBUF_SOCKET_GROUP[@]|$(P2PBUF_SOCKET_GROUP)|g' \
	-e 's|@P2PBUF_DAEMON_USER[@]|$(P2PBUF_DAEMON_USER)|g'
systemd_gen = $(AM_V_GEN)$(MKDIR_P) $(@D) && rm -f $@ $@.tmp && \
	$(systemd_edit) $< >$@.tmp && \
	if grep -n '@[A-Za-z_]*@' $@.tmp; then echo "$@: unsubstituted" >&2; exit 1; fi && \
	mv $@.tmp $@

systemd/p2pbufd.service: $(srcdir)/systemd/p2pbufd.service.in Makefile
	$(systemd_gen)
systemd/p2pbufd.socket: $(srcdir)/systemd/p2pbufd.socket.in Makefile
	$(systemd_gen)
systemd/sysusers/p2pbufd.conf: $(srcdir)/systemd/p2pbufd.sysusers.in Makefile
	$(systemd_gen)
systemd/tmpfiles/p2pbufd.conf: $(srcdir)/systemd/p2pbufd.tmpfiles.in Makefile
	$(systemd_gen)
systemd/70-p2pbufd.rules: $(srcdir)/systemd/70-p2pbufd.rules.in Makefile
	$(systemd_gen)

# The installed units pass `systemd-analyze verify` and score at most 1.0 with
# `systemd-analyze security --offline=true` (skipped without systemd-analyze).
TESTS += tests/check-units.sh
EXTRA_DIST += tests/check-units.sh
