# The policy format's manual, an example policy for admins to start from, installed as
# $(docdir)/example.policy (a directory variable of its own keeps dist_doc_DATA free for
# other local.mk files), and the policy a fresh machine gets, $(sysconfdir)/p2pbuf/policy.
dist_man_MANS += policy/p2pbuf-policy.5
EXTRA_DIST += policy/example.policy policy/default.policy
policyexampledir = $(docdir)
dist_policyexample_DATA = policy/example.policy

# The installed policy is the admin's file: an existing one is never replaced, and uninstall
# removes it only while it is still the shipped one.
policy_installed = $(DESTDIR)$(sysconfdir)/p2pbuf/policy
install-data-local: install-default-policy
uninstall-local: uninstall-default-policy
install-default-policy:
	$(MKDIR_P) $(DESTDIR)$(sysconfdir)/p2pbuf
	@if test -e $(policy_installed); then \
		echo "keeping the existing $(policy_installed)"; \
	else \
		echo " $(INSTALL_DATA) $(srcdir)/policy/default.policy $(policy_installed)"; \
		$(INSTALL_DATA) $(srcdir)/policy/default.policy $(policy_installed); \
	fi
uninstall-default-policy:
	@if test -e $(policy_installed) && ! cmp -s $(srcdir)/policy/default.policy \
		$(policy_installed); then \
		echo "keeping $(policy_installed): it has been changed"; \
	else \
		echo " rm -f $(policy_installed)"; rm -f $(policy_installed); \
	fi
.PHONY: install-default-policy uninstall-default-policy
