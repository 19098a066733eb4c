#!/bin/bash
# p2pbuf-client's policy verbs (check, show, test, add, remove, edit) and reload against a
# running p2pbufd on simulated devices, its policy in a private directory (0700, as the
# daemon's ownership checks want): every message of policy test, an added rule that lets a
# denied export through, a removed one that revokes the lease it allowed (reason policy), edits
# refused with nothing written, the editor's copy, a reload of a broken policy that keeps the
# old one, two concurrent adds that both land, and an edit made while the daemon is down.
# Rules only change here, never devices (the daemon keeps its devices across a reload).
# Ends with "N passed, N failed". Waits poll for a condition, never guess a duration.
set -u

top_builddir=${top_builddir:-$(pwd)}
top_srcdir=${top_srcdir:-$top_builddir}
daemon=$top_builddir/daemon/p2pbufd
client=$top_builddir/client/p2pbuf-client
dir=$(mktemp -d /tmp/p2pbuf-cli-policy-XXXXXX)
chmod 0700 "$dir"
pol=$dir/policy
sock=$dir/sock
uid=$(id -u)
user=$(id -un)
# pass, fail, wait_for, run, json_ok, run_json, file_has; cleanup at exit.
# shellcheck source=tests/integration/cli-lib.sh
. "$top_srcdir/tests/integration/cli-lib.sh"

# policy NAME STATUS PATTERN VERB ARGS...: run for "policy VERB --policy $pol ARGS".
policy() {
	local name=$1 want=$2 pattern=$3 verb=$4
	shift 4
	run "$name" "$want" "$pattern" -- policy "$verb" --policy "$pol" "$@"
}

# json NAME STATUS PYTHON_EXPR ARGS...: run_json on $sock.
json() {
	local name=$1 want=$2 expr=$3
	shift 3
	run_json "$name" "$want" "$expr" -- --socket "$sock" "$@"
}

# same NAME FILE: the policy is byte for byte FILE (an edit undone, or refused).
same() {
	if cmp -s "$pol" "$2"; then pass "$1"; else fail "$1" "$(diff "$2" "$pol")"; fi
}

# clean NAME: nothing but the policy, its drop-ins and the test's own files in the directory:
# no temporary file of an edit is left.
clean() {
	local left
	left=$(find "$dir" -name '.*' ! -name . 2>/dev/null)
	if [ -z "$left" ]; then pass "$1"; else fail "$1" "left behind: $left"; fi
}

exported() { "$client" --socket "$sock" export sim0 --bar "$1" --length 4K -- true 2>/dev/null; }

cat >"$pol" <<EOF
# The test's policy: two devices, rules for this user, a group and a unit.
device sim0 sim bar 0 64K bar 2 1M bar 4 64K
device sim1 sim bar 0 64K

# BAR 2, the first 64K, for this user   
allow user $uid device sim0 bar 2 range 0+64K
	allow group 4343 device sim0 bar 4 # a group's
allow unit db.service device sim0 bar 4 range 0+4K

admin user $uid
# the end
EOF
chmod 0644 "$pol"
cp "$pol" "$dir/orig"

"$daemon" --policy "$pol" --socket "$sock" 2>"$dir/daemon.log" &
pids+=($!)
daemon_pid=$!
if wait_for 30 "$client" --socket "$sock" status >/dev/null 2>&1; then
	pass daemon-up
else
	fail daemon-up "$(cat "$dir/daemon.log")"
fi

# ---- help ----
for v in check show test add remove edit; do
	run "help-policy-$v" 0 "^Usage: p2pbuf-client policy $v" -- policy "$v" --help
done
run help-policy 0 "^  edit \[FILE\] +edit in" -- policy --help
run help-reload 0 "^Usage: p2pbuf-client reload" -- reload --help
run usage-policy-unknown 2 "unknown policy command 'frob'" -- policy frob
run usage-test-who 2 "give one of --user NAME and --uid N" -- policy test sim0
run usage-remove 2 "give FILE:LINE or --match RULE" -- policy remove
run usage-remove-where 2 "bad FILE:LINE 'policy:x'" -- policy remove policy:x

# ---- check ----
policy check-ok 0 "$pol: OK: 1 file, 2 devices, 3 rules" check
cat >"$dir/bad" <<'EOF'
device sim0 sim bar 0 64K
allow user 0 device sim9 bar 0
allow	user 0 device sim0 bar 7
admin wheel 0
EOF
chmod 0644 "$dir/bad"
run check-three-errors 1 "3 errors" -- policy check "$dir/bad"
if [ "$(grep -c '^[[:blank:]]*\^$' "$dir/out")" -eq 3 ] &&
	grep -q "^$dir/bad:2:21: device \"sim9\" is not declared" "$dir/out" &&
	grep -q "^$dir/bad:3:" "$dir/out" && grep -q "^$dir/bad:4:7: " "$dir/out"; then
	pass check-three-carets
else
	fail check-three-carets "not three errors each with its line and caret"
fi
# The caret sits under the column, a tab kept where the line has one.
caret="    $(printf '%5s')	$(printf '%23s')^" # under "7", after "allow", a tab, "user 0 ... bar "
if grep -qxF "    allow	user 0 device sim0 bar 7" "$dir/out" && grep -qxF "$caret" "$dir/out"; then
	pass check-caret-column
else
	fail check-caret-column "the caret is not under bar 7's column"
fi
json check-json 1 "d[0]['check']['ok'] is False and [(e['line'], e['column']) for e in d[0]['check']['errors']] == [(2, 21), (3, 30), (4, 7)]" policy check "$dir/bad"

# ---- show ----
policy show 0 "$pol:6 +user $uid +sim0 +2 +0x0\+0x10000" show
grep -Eq "$pol:7 +group 4343 +sim0 +4 +- +-" "$dir/out" && grep -q "unit db.service" "$dir/out" &&
	grep -q "^admin user $uid$" "$dir/out" && pass show-rules || fail show-rules "rules or roles missing"
json show-json 0 "[(r['line'], r['subject']['kind'], r['subject']['name'], r['bar']) for r in d[0]['policy']['rules']] == [(6, 'user', '$uid', 2), (7, 'group', '4343', 4), (8, 'unit', 'db.service', 4)] and [x['name'] for x in d[0]['policy']['devices']] == ['sim0', 'sim1'] and d[0]['policy']['admins'][0]['id'] == $uid" policy show --policy "$pol"

# ---- test: every answer ----
policy test-allowed 0 "^sim0 bar 2: allowed by $pol:6 \(user $uid\)" test --uid "$uid" sim0 --bar 2 --length 4K
policy test-allowed-user 0 "allowed by $pol:6" test --user "$user" sim0 --bar 2 --offset 4K --length 4K
policy test-no-device 1 "^nosuch: denied: device nosuch is not in the policy" test --uid "$uid" nosuch
policy test-no-rule-device 1 "^sim1: denied: no rule names device sim1 \($pol:3\)" test --uid "$uid" sim1
policy test-no-rule-user 1 "^sim0: denied: no rule for uid 4242.* on device sim0; its rules: $pol:6 \(user $uid\)" \
	test --uid 4242 sim0 --bar 2
policy test-no-rule-bar 1 "^sim0 bar 0: denied: no rule for bar 0 of device sim0" test --uid "$uid" sim0 --bar 0
policy test-range-outside 1 "range 0xf000\+0x2000 of bar 2 of device sim0 is outside what the rules allow" \
	test --uid "$uid" sim0 --bar 2 --offset 60K --length 8K
policy test-whole-bar 1 "the whole of bar 2 of device sim0 was asked for" test --uid "$uid" sim0 --bar 2
policy test-group 0 "allowed by $pol:7 \(group 4343\)" test --uid 4242 --group 4343 sim0 --bar 4
policy test-unit 0 "allowed by $pol:8 \(unit db.service\)" test --uid 4242 --unit db.service sim0 --bar 4 --length 4K
policy test-every-bar 0 "^sim0 bar 4: allowed by $pol:7" test --uid 4242 --group 4343 sim0
grep -q "^sim0 bar 0: denied: no rule for bar 0" "$dir/out" && grep -q "^sim0 bar 2: denied" "$dir/out" &&
	pass test-every-bar-lines || fail test-every-bar-lines "not one line per BAR"
json test-json 1 "d[0]['test']['allowed'] is False and [(x['bar'], x['verdict']) for x in d[0]['test']['results']] == [(None, 'no-rule-for-peer')]" \
	policy test --policy "$pol" --uid 4242 sim0
json test-json-verdicts 1 "[x['verdict'] for x in d[0]['test']['results']] == ['no-rule-for-bar', 'range-outside', 'no-rule-for-bar']" \
	policy test --policy "$pol" --uid "$uid" sim0

# ---- add: the new rule is in force ----
if ! exported 0; then pass add-denied-before; else fail add-denied-before "exported without a rule"; fi
policy add 0 "^added $pol:11: allow user $uid device sim0 bar 0$" add allow user "$uid" device sim0 bar 0
grep -q "^p2pbufd reloaded its policy: 4 rules" "$dir/out" && pass add-reloaded || fail add-reloaded "no reload summary"
if exported 0; then pass add-in-force; else fail add-in-force "export still denied"; fi
# Only that line is new: every comment, blank and trailing blank is where it was.
if [ "$(sed 11d "$pol" | cmp - "$dir/orig" && echo same)" = same ] &&
	[ "$(sed -n 11p "$pol")" = "allow user $uid device sim0 bar 0" ]; then
	pass add-keeps-layout
else
	fail add-keeps-layout "$(diff "$dir/orig" "$pol")"
fi
clean add-no-temp

# ---- remove: the lease the rule allowed is revoked, reason policy ----
"$client" --socket "$sock" export sim0 --bar 0 --length 4K >"$dir/hold" 2>&1 &
holder=$!
pids+=("$holder")
wait_for 30 file_has "$dir/hold" '^lease' || fail hold "$(cat "$dir/hold")"
policy remove-match 0 "^removed $pol:11: allow user $uid device sim0 bar 0$" remove --match "allow user $uid   device sim0 bar 0 # any comment"
grep -q "1 lease revoked" "$dir/out" && pass remove-revoked-count || fail remove-revoked-count "no lease revoked"
wait "$holder"
status=$?
if [ "$status" -eq 10 ] && grep -q "revoked: policy" "$dir/hold"; then
	pass remove-holder-told
else
	fail remove-holder-told "status $status: $(cat "$dir/hold")"
fi
if ! exported 0; then pass remove-denied-after; else fail remove-denied-after "still allowed"; fi
same remove-restores "$dir/orig"

# By FILE:LINE, as show prints it; a comment, a blank line or a line past the end is refused.
policy add-again 0 "^added $pol:11:" add "allow user $uid device sim0 bar 0"
policy remove-line 0 "^removed $pol:11: allow user $uid device sim0 bar 0" remove "$pol:11"
same remove-line-restores "$dir/orig"
policy remove-comment 1 "edit refused: $pol:1 is a comment, not a directive" remove "$pol:1"
policy remove-blank 1 "$pol:4 is blank" remove "$pol:4"
policy remove-past-end 1 "has 11 lines: there is no line 12" remove "$pol:12"
policy remove-no-match 5 "not found: no line of the policy has the words" remove --match "allow user 1 device sim0"
policy remove-needed 1 "device \"sim0\" is not declared" remove "$pol:2"
same remove-refused-unchanged "$dir/orig"

# ---- refused edits write nothing ----
ino=$(stat -c %i "$pol")
policy add-invalid 1 "nothing was written" add "allow user $uid device sim7 bar 0"
if grep -q "^$pol:11:21: device \"sim7\" is not declared" "$dir/out" && grep -q '^ *\^$' "$dir/out"; then
	pass add-invalid-errors
else
	fail add-invalid-errors "no error with its caret"
fi
same add-invalid-unchanged "$dir/orig"
[ "$(stat -c %i "$pol")" = "$ino" ] && pass add-invalid-same-inode || fail add-invalid-same-inode "replaced"
policy add-comment 1 "is a comment, not a rule" add "# only a comment"
clean refused-no-temp
json add-invalid-json 1 "d[0]['check']['errors'][0]['line'] == 11 and d[1]['error']['errno'] == 'EINVAL' and d[1]['error']['exit_status'] == 1" \
	policy add --policy "$pol" "allow user 1 device sim7"

# ---- drop-ins ----
policy add-dropin 0 "^added $pol.d/10-extra.policy:1 \(a new drop-in\): allow user $uid device sim0 bar 0" \
	add --file 10-extra.policy "allow user $uid device sim0 bar 0"
[ "$(stat -c %a "$pol.d/10-extra.policy")" = 644 ] && [ "$(stat -c %a "$pol.d")" = 755 ] &&
	pass add-dropin-modes || fail add-dropin-modes "$(stat -c '%n %a' "$pol.d" "$pol.d"/*)"
if exported 0; then pass add-dropin-in-force; else fail add-dropin-in-force "export denied"; fi
policy add-dropin-bad-name 1 "is not a drop-in name" add --file extra.conf "allow user 1 device sim0"
policy add-twice 0 "" add "allow user $uid device sim0 bar 0"
policy remove-ambiguous 1 "2 lines have the words of \"allow user $uid device sim0 bar 0\": $pol:11, $pol.d/10-extra.policy:1; remove one by FILE:LINE" \
	remove --match "allow user $uid device sim0 bar 0"
policy remove-dropin-line 0 "^removed $pol.d/10-extra.policy:1:" remove "$pol.d/10-extra.policy:1"
policy remove-main-line 0 "" remove "$pol:11"
same dropin-removed "$dir/orig"
clean dropin-no-temp

# ---- edit: the copy, validated ----
mkdir -p "$dir/tmp"
cat >"$dir/ed-add" <<EOF
#!/bin/sh
printf 'allow user $uid device sim0 bar 0 # by the editor\n' >>"\$1"
EOF
cat >"$dir/ed-bad" <<'EOF'
#!/bin/sh
printf 'allow user 1 device nowhere\n' >>"$1"
EOF
# Another admin's edit lands while the editor is open.
cat >"$dir/ed-race" <<EOF
#!/bin/sh
"$client" --socket "$sock" policy add --policy "$pol" --no-reload "allow user 4444 device sim0" >/dev/null
printf 'allow user 4445 device sim0\n' >>"\$1"
EOF
chmod 0755 "$dir/ed-add" "$dir/ed-bad" "$dir/ed-race"
export TMPDIR=$dir/tmp
EDITOR=$dir/ed-add policy edit 0 "^installed $pol$" edit
grep -q "p2pbufd reloaded its policy" "$dir/out" && pass edit-reloaded || fail edit-reloaded "no reload"
if exported 0; then pass edit-in-force; else fail edit-in-force "export denied"; fi
[ -z "$(ls -A "$dir/tmp")" ] && pass edit-copy-gone || fail edit-copy-gone "$(ls -A "$dir/tmp")"
policy remove-edited 0 "" remove --match "allow user $uid device sim0 bar 0"
same edit-undone "$dir/orig"
VISUAL=$dir/ed-bad EDITOR=false policy edit-invalid 1 "nothing was written" edit
grep -q "device \"nowhere\" is not declared" "$dir/out" && grep -q "your edit is kept in $dir/tmp/p2pbuf-edit-.*/policy" "$dir/out" &&
	pass edit-invalid-kept || fail edit-invalid-kept "no error or no copy named"
same edit-invalid-unchanged "$dir/orig"
rm -rf "${dir:?}/tmp/"*
EDITOR=true policy edit-no-change 0 "no change to $pol: nothing installed" edit
EDITOR=false policy edit-editor-fails 1 "the editor failed \(status 1\); nothing was installed" edit
EDITOR=$dir/ed-race policy edit-stale 7 "changed since the copy was made: nothing was written" edit
grep -q "allow user 4444 device sim0" "$pol" && ! grep -q "allow user 4445" "$pol" &&
	pass edit-stale-keeps-other || fail edit-stale-keeps-other "$(cat "$pol")"
policy remove-other 0 "" remove --match "allow user 4444 device sim0"
same edit-stale-undone "$dir/orig"
EDITOR=$dir/ed-add policy edit-new-dropin 0 "^installed $pol.d/20-edited.policy$" edit 20-edited.policy --no-reload
! grep -q "reloaded" "$dir/out" && pass edit-no-reload || fail edit-no-reload "reloaded anyway"
rm -f "$pol.d/20-edited.policy"
rm -rf "${dir:?}/tmp/"*
# On a terminal an invalid edit offers "re-edit? [Y/n]": yes (Enter) edits again, and the
# editor's second pass fixes it; no leaves the policy alone and the copy kept.
cat >"$dir/ed-fix" <<'EOF'
#!/bin/sh
if grep -q nowhere "$1"; then
	sed -i 's/ nowhere/ sim0 bar 0/' "$1"
else
	printf 'allow user 1 device nowhere\n' >>"$1"
fi
EOF
chmod 0755 "$dir/ed-fix"
cat >"$dir/on-tty.py" <<'EOF'
# on-tty.py ANSWER ARGV...: run ARGV on a pseudo-terminal, type ANSWER at "re-edit? [Y/n]",
# print what it wrote, exit with its status.
import os, pty, sys
answer, argv = sys.argv[1].encode(), sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, asked = b"", False
while True:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    if not asked and b"re-edit? [Y/n]" in out:
        os.write(fd, answer + b"\n")
        asked = True
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
EOF
EDITOR=$dir/ed-fix python3 "$dir/on-tty.py" "" "$client" --socket "$sock" policy edit \
	--policy "$pol" --no-reload >"$dir/out" 2>&1
got=$?
if [ "$got" -eq 0 ] && grep -q "re-edit? \[Y/n\]" "$dir/out" && grep -q "^installed $pol" "$dir/out" &&
	[ "$(tail -n 1 "$pol")" = "allow user 1 device sim0 bar 0" ]; then
	pass edit-reedit-yes
else
	fail edit-reedit-yes "exit status $got"
fi
policy remove-reedited 0 "" remove --no-reload --match "allow user 1 device sim0 bar 0"
EDITOR=$dir/ed-fix python3 "$dir/on-tty.py" n "$client" --socket "$sock" policy edit \
	--policy "$pol" --no-reload >"$dir/out" 2>&1
got=$?
if [ "$got" -eq 1 ] && grep -q "re-edit? \[Y/n\]" "$dir/out" && grep -q "your edit is kept in" "$dir/out"; then
	pass edit-reedit-no
else
	fail edit-reedit-no "exit status $got"
fi
same edit-reedit-no-unchanged "$dir/orig"
rm -rf "${dir:?}/tmp/"*
clean edit-no-temp
unset TMPDIR

# ---- reload ----
run reload 0 "^p2pbufd reloaded its policy: 3 rules .*, 2 devices .*, 0 leases revoked$" -- reload
json reload-json 0 "d[0]['action'] == 'reload' and d[0]['reload']['ok'] and d[0]['reload']['rules'] == 3 and d[0]['reload']['devices'] == 2" reload
# A broken drop-in written by hand: every error reported, the policy in force stays.
policy add-for-reload 0 "" add --no-reload "allow user $uid device sim0 bar 0"
printf 'allow user 1 device sim5\nallow user 1 device sim0 bar 9\n' >"$pol.d/50-broken.policy"
chmod 0644 "$pol.d/50-broken.policy"
run reload-broken 1 "reload: the policy does not load: 2 errors; the policy in force stays" -- reload
grep -q "50-broken.policy:1:21: device \"sim5\" is not declared" "$dir/out" &&
	grep -q "50-broken.policy:2:30: " "$dir/out" && pass reload-broken-every-error ||
	fail reload-broken-every-error "not both errors"
if ! exported 0 && exported 2; then pass reload-broken-old-policy; else fail reload-broken-old-policy "the policy changed"; fi
json reload-broken-json 1 "not d[0]['reload']['ok'] and len(d[0]['reload']['errors']) == 2 and d[1]['error']['exit_status'] == 1" reload
policy check-broken 1 "2 errors" check
rm -f "$pol.d/50-broken.policy"
run reload-fixed 0 "^p2pbufd reloaded its policy: 4 rules" -- reload
if exported 0; then pass reload-fixed-in-force; else fail reload-fixed-in-force "export denied"; fi
policy remove-for-reload 0 "" remove --match "allow user $uid device sim0 bar 0"
if [ "$uid" -eq 0 ] && command -v setpriv >/dev/null; then
	# Let nobody reach the socket (the directory stays unwritable by others, as it must).
	chmod 0711 "$dir"
	chmod 0666 "$sock"
	setpriv --reuid=65534 --regid=65534 --clear-groups "$client" --socket "$sock" reload >"$dir/out" 2>&1
	got=$?
	chmod 0660 "$sock"
	chmod 0700 "$dir"
	[ "$got" -eq 4 ] && grep -q "reload: denied by policy" "$dir/out" && pass reload-not-admin ||
		fail reload-not-admin "exit status $got, expected 4"
fi

# ---- two admins at once: both edits land ----
# Hold the lock (an flock on the policy's directory) so that both adds wait for it, then let go.
mkfifo "$dir/go"
flock "$dir" sh -c "cat '$dir/go' >/dev/null" &
locker=$!
pids+=("$locker")
wait_for 30 sh -c "! flock -n '$dir' true"
"$client" --socket "$sock" policy add --policy "$pol" "allow user 5001 device sim0 bar 2" >"$dir/a1" 2>&1 &
a1=$!
"$client" --socket "$sock" policy add --policy "$pol" "allow user 5002 device sim0 bar 2" >"$dir/a2" 2>&1 &
a2=$!
pids+=("$a1" "$a2")
if wait_for 30 file_has "$dir/a1" "waiting for another edit" && wait_for 30 file_has "$dir/a2" "waiting for another edit"; then
	pass concurrent-both-wait
else
	fail concurrent-both-wait "$(cat "$dir/a1" "$dir/a2")"
fi
echo >"$dir/go"
wait "$locker"
wait "$a1"
s1=$?
wait "$a2"
s2=$?
if [ "$s1" -eq 0 ] && [ "$s2" -eq 0 ] && grep -q "^allow user 5001 device sim0 bar 2$" "$pol" &&
	grep -q "^allow user 5002 device sim0 bar 2$" "$pol"; then
	pass concurrent-both-land
else
	fail concurrent-both-land "status $s1/$s2: $(cat "$dir/a1" "$dir/a2")"
fi
policy concurrent-in-force 0 "allowed by $pol:1[12]" test --uid 5002 sim0 --bar 2 --length 4K
policy concurrent-check 0 "OK: 2 files, 2 devices, 5 rules" check # 10-extra.policy, empty
clean concurrent-no-temp

# ---- the daemon is not running: the edit stays, with exit status 3 ----
kill "$daemon_pid"
wait "$daemon_pid" 2>/dev/null
cp "$pol" "$dir/before-down"
policy add-daemon-down 3 "the edit is installed; p2pbufd reads it when it starts" add "allow user 5003 device sim0"
grep -q "cannot connect to $sock" "$dir/out" && grep -q "^allow user 5003 device sim0$" "$pol" &&
	pass add-daemon-down-kept || fail add-daemon-down-kept "$(cat "$pol")"
policy add-no-reload 0 "^added $pol:14: allow user 5004 device sim0$" add --no-reload "allow user 5004 device sim0"
json add-json 0 "d[0] == {'action': 'added', 'file': '$pol', 'line': 15, 'rule': 'allow user 5005 device sim0', 'created': False}" \
	policy add --policy "$pol" --no-reload "allow user 5005 device sim0"
run reload-daemon-down 3 "cannot connect to $sock" -- reload

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
