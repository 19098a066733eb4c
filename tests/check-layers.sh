#!/bin/bash
# The daemon's modules call each other without a circle (daemon/daemon.h draws the layers):
# from the symbols each object of libp2pbufd-core defines and uses, build the graph of which
# module calls which, and let tsort find any cycle. Prints one line per module and a summary.
set -u
: "${top_builddir:=.}"
a="$top_builddir/daemon/.libs/libp2pbufd-core.a"
if [ ! -f "$a" ] || ! command -v nm >/dev/null || ! command -v tsort >/dev/null; then
	echo "SKIP: needs $a, nm and tsort"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Module name from "libp2pbufd_core_la-registry.o" (or "libpolicy_la-policy.o": the policy
# library that libp2pbufd-core links).
nm -A --defined-only -g "$a" | sed -n 's/^[^:]*:lib\(p2pbufd_core\|policy\)_la-\([a-z-]*\)\.o:[0-9a-f]* [TDBR] \(.*\)$/\3 \2/p' |
	sort >"$tmp/defs"
nm -A -u "$a" | sed -n 's/^[^:]*:lib\(p2pbufd_core\|policy\)_la-\([a-z-]*\)\.o: *U \(.*\)$/\3 \2/p' | sort >"$tmp/uses"
# "caller callee" pairs between different modules.
join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 { print $2, $3 }' | sort -u >"$tmp/edges"
passed=0 failed=0
for m in $(cut -d' ' -f2 "$tmp/defs" | sort -u); do
	echo "$m -> $(awk -v m="$m" '$1 == m { printf "%s ", $2 }' "$tmp/edges")"
done
if tsort "$tmp/edges" >/dev/null 2>"$tmp/cycle"; then
	echo "PASS: no circle among $(cut -d' ' -f2 "$tmp/defs" | sort -u | wc -l) daemon modules"
	passed=1
else
	echo "FAIL: the daemon's modules call each other in a circle:"
	sed 's/^/  /' "$tmp/cycle"
	failed=1
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
