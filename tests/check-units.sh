#!/bin/sh
# The systemd units as `make install` writes them: `systemd-analyze verify` must be clean, and
# `systemd-analyze security --offline=true` must score the service's exposure 1.0 or lower.
# Skipped (77) where systemd-analyze is missing. Ends with "N passed, N failed".
#
# The units, the daemon and the manual pages are installed into a scratch DESTDIR with the
# build's own install rules; systemd-analyze runs with --root there, so it finds the commands
# the units name (copies of the host's for those outside the project) and the host's units
# they depend on.
command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze not installed: skipped"; exit 77; }
b=${top_builddir:-.}
MAX_EXPOSURE=${P2PBUF_MAX_EXPOSURE:-1.0}
root=$(mktemp -d "${TMPDIR:-/tmp}/p2pbuf-units.XXXXXX") || exit 99
trap 'rm -rf "$root"' EXIT
# shellcheck source-path=SCRIPTDIR source=check-lib.sh
. "${top_srcdir:-.}/tests/check-lib.sh"

# The build's own install targets for units, programs and manual pages (automake's names).
# MAKEFLAGS would hand the nested make a jobserver it cannot use.
if ! env -u MAKEFLAGS -u MFLAGS "${MAKE:-make}" -s -C "$b" DESTDIR="$root" \
	install-systemdsystemunitDATA install-sbinPROGRAMS install-man >"$root.log" 2>&1; then
	cat "$root.log"
	rm -f "$root.log"
	echo "installing into $root failed"
	exit 99
fi
rm -f "$root.log"
service=$(find "$root" -path '*/system/p2pbufd.service' | head -n 1)
socket=${service%.service}.socket
if [ ! -f "$service" ] || [ ! -f "$socket" ]; then
	echo "no units installed under $root"
	exit 99
fi

# systemd-analyze --root finds units by name in systemd's search path; a build configured to
# install them elsewhere (make distcheck's prefix) is checked from /etc/systemd/system.
case ${service#"$root"} in
/etc/systemd/system/* | /usr/local/lib/systemd/system/* | /usr/lib/systemd/system/* | \
	/lib/systemd/system/*) ;;
*)
	echo "units installed outside systemd's search path: checked as $root/etc/systemd/system"
	mkdir -p "$root/etc/systemd/system"
	cp "$service" "$socket" "$root/etc/systemd/system/"
	service=$root/etc/systemd/system/p2pbufd.service
	socket=$root/etc/systemd/system/p2pbufd.socket
	;;
esac

# What the units depend on (sysinit.target, ...) comes from the host, as do the programs they
# run that the project does not install (ExecReload's kill).
# Symbolic links stay links (.wants/ entries must be); absolute ones resolve inside the root.
for d in /lib/systemd/system /usr/lib/systemd/system; do
	if [ -d "$d" ] && [ ! -e "$root$d/sysinit.target" ]; then
		mkdir -p "$root$d"
		cp -an "$d/." "$root$d/"
	fi
done
sed -n 's/^Exec[A-Za-z]*=[-+!@:]*\(\/[^ ]*\).*/\1/p' "$service" "$socket" | sort -u |
	while read -r cmd; do
		if [ ! -e "$root$cmd" ] && [ -x "$cmd" ]; then
			mkdir -p "$root$(dirname "$cmd")"
			cp -L "$cmd" "$root$cmd"
		fi
	done
mandir=$(find "$root" -type d -name man8 | head -n 1)
man_opt=--man=yes
if [ -n "$mandir" ] && command -v man >/dev/null 2>&1; then
	MANPATH=$(dirname "$mandir")
	export MANPATH
else
	echo "man is not installed: Documentation= pages are not checked"
	man_opt=--man=no
fi

echo "== systemd-analyze verify $(basename "$socket") $(basename "$service")"
systemd-analyze verify "$man_opt" --root="$root" "$socket" "$service" >"$root/verify.out" 2>&1
rc=$?
cat "$root/verify.out"
# verify exits 0 on some warnings: anything it printed counts.
[ "$rc" = 0 ] && [ ! -s "$root/verify.out" ]
result $? verify

echo "== systemd-analyze security --offline=true $(basename "$service")"
systemd-analyze security --offline=true --root="$root" "$service" >"$root/security.out" 2>&1
grep -v '^✓' "$root/security.out"
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$root/security.out")
echo "exposure ${score:-none}, at most $MAX_EXPOSURE allowed"
[ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
result $? security-exposure

finish
