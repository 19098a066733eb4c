# The policy format's manual, and an example policy for admins to start from, installed as
# $(docdir)/example.policy. A directory variable of its own keeps dist_doc_DATA free for
# other local.mk files.
dist_man_MANS += policy/p2pbuf-policy.5
EXTRA_DIST += policy/example.policy
policyexampledir = $(docdir)
dist_policyexample_DATA = policy/example.policy
