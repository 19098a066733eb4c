#!/bin/sh
# The C examples users copy compile as printed, warnings as errors: the client in README.md
# ("Writing a client") and the event-loop client of libp2pbuf(3). The latter also runs, against
# a real p2pbufd on a simulated device: it gets a lease, is told when an admin resets the
# device, and gets a new lease once the device is ready. Ends with "N passed, N failed".
b=${top_builddir:-.}
s=${top_srcdir:-.}
cc=${P2PBUF_TEST_CC:-cc}
dir=$(mktemp -d "${TMPDIR:-/tmp}/p2pbuf-examples.XXXXXX") || exit 99
daemon_pid=
example_pid=
cleanup() {
	[ -n "$example_pid" ] && kill "$example_pid" 2>/dev/null
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid"
	rm -rf "$dir"
}
trap cleanup EXIT
# shellcheck source-path=SCRIPTDIR source=check-lib.sh
. "${top_srcdir:-.}/tests/check-lib.sh"

# compile NAME SOURCE: build SOURCE as a user would, against the built header and library.
compile() {
	# shellcheck disable=SC2086 # cc may carry flags
	if $cc -std=gnu11 -Wall -Wextra -Wshadow -Wformat=2 -Werror -I"$b/client" -I"$s/client" \
		-o "$dir/$1" "$2" -L"$b/client/.libs" -lp2pbuf >"$dir/$1.cc.out" 2>&1; then
		result 0 "$1-compiles"
	else
		sed 's/^/    | /' "$dir/$1.cc.out"
		result 1 "$1-compiles" "$2 does not compile as printed"
	fi
}

# The README's first C block after "## Writing a client", exactly as Markdown shows it.
awk '/^## Writing a client/ { s = 1 } s == 1 && /^```c$/ { s = 2; next }
     s == 2 && /^```$/ { exit } s == 2 { print }' "$s/README.md" >"$dir/readme.c"
if [ -s "$dir/readme.c" ]; then
	compile readme "$dir/readme.c"
else
	result 1 readme-compiles "no C block under '## Writing a client' in README.md"
fi

# The manual page's example between its example-begin and example-end marks, unescaped the
# way man shows it (\- is a minus, \e a backslash).
sed -n '/^\.\\" example-begin/,/^\.\\" example-end/p' "$s/client/libp2pbuf.3" |
	sed -e '/^\.\\"/d' -e '/^\.in/d' -e '/^\.EX/d' -e '/^\.EE/d' -e 's/\\-/-/g' \
		-e 's/\\e/\\/g' >"$dir/holder.c"
if [ -s "$dir/holder.c" ]; then
	compile holder "$dir/holder.c"
else
	result 1 holder-compiles "no example in client/libp2pbuf.3"
fi

# wait_for FILE REGEX: until FILE has a line matching REGEX (30 s at most).
wait_for() {
	i=0
	until grep -q -e "$2" "$1" 2>/dev/null; do
		[ "$i" -ge 300 ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

if [ -x "$dir/holder" ]; then
	P2PBUF_SOCKET=$dir/sock
	LD_LIBRARY_PATH=$b/client/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export P2PBUF_SOCKET LD_LIBRARY_PATH
	user=$(id -un)
	printf 'device sim0 sim bar 2 2M\nallow user %s device sim0\nadmin user %s\n' \
		"$user" "$user" >"$dir/policy"
	"$b/daemon/p2pbufd" --policy "$dir/policy" --socket "$P2PBUF_SOCKET" \
		>"$dir/daemon.out" 2>&1 &
	daemon_pid=$!
	# The daemon answers status once it serves.
	i=0
	until "$b/client/p2pbuf-client" status >/dev/null 2>&1 || [ "$i" -ge 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	# stdbuf preloads a library of its own, which an ASan build would refuse as coming
	# before its runtime; the order does not matter for this program.
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 \
		stdbuf -oL "$dir/holder" sim0 >"$dir/holder.out" 2>&1 &
	example_pid=$!
	wait_for "$dir/holder.out" '^lease 1: 1048576 bytes as fd'
	result $? holder-gets-lease "$(tail -n 1 "$dir/holder.out")"
	"$b/client/p2pbuf-client" reset sim0 >"$dir/reset.out" 2>&1
	wait_for "$dir/holder.out" '^lease 1 taken back: reset$' &&
		wait_for "$dir/holder.out" '^lease 2: 1048576 bytes as fd'
	result $? holder-asks-again "$(cat "$dir/reset.out") $(tail -n 1 "$dir/holder.out")"
	sed 's/^/    holder| /' "$dir/holder.out"
fi

finish
