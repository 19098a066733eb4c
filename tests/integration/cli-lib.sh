# Sourced by the scripted suites (test-cli.sh, test-cli-policy.sh, test-service.sh):
# counting results, cleaning up, waiting for a condition, and running p2pbuf-client with its
# status, output and JSON checked. The suite sets dir (its temporary directory, removed at
# exit) before sourcing this, and client and sock before it runs the client; it appends the
# pids it starts to pids.
# shellcheck shell=bash
passed=0
failed=0
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() {
	failed=$((failed + 1))
	echo "FAIL: $1: $2"
	[ -f "$dir/out" ] && sed 's/^/    | /' "$dir/out"
}

# wait_for SECONDS CMD...: run CMD every 50 ms until it succeeds; fail after SECONDS. The
# limit is generous, for a loaded machine; a passing test never waits for it.
wait_for() {
	local tries=$(($1 * 20))
	shift
	while ! "$@"; do
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || return 1
		sleep 0.05
	done
}

# run NAME EXPECTED_STATUS PATTERN -- ARGS...: run the client on $sock (stdin not a
# terminal), check the exit status and that stdout+stderr match the extended regex PATTERN
# (empty: anything).
run() {
	local name=$1 want=$2 pattern=$3
	shift 4
	"$client" --socket "$sock" "$@" >"$dir/out" 2>&1 </dev/null
	local got=$?
	if [ "$got" -ne "$want" ]; then
		fail "$name" "exit status $got, expected $want"
	elif [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$dir/out"; then
		fail "$name" "output does not match /$pattern/"
	else
		pass "$name"
	fi
}

# json_ok FILE PYTHON_EXPR: every line of FILE is a JSON document; EXPR holds for d, the list
# of them.
json_ok() {
	python3 -c '
import json, sys
d = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" 2>>"$dir/out"
}

# run_json NAME EXPECTED_STATUS PYTHON_EXPR -- ARGS...: run the client with --json; check the
# exit status and that its stdout satisfies json_ok.
run_json() {
	local name=$1 want=$2 expr=$3
	shift 4
	"$client" --json "$@" >"$dir/json" 2>"$dir/out" </dev/null
	local got=$?
	if [ "$got" -ne "$want" ]; then
		fail "$name" "exit status $got, expected $want"
	elif ! json_ok "$dir/json" "$expr"; then
		cat "$dir/json" >>"$dir/out"
		fail "$name" "JSON does not satisfy: $expr"
	else
		pass "$name"
	fi
}

file_has() { grep -Eq -- "$2" "$1" 2>/dev/null; } # quiet: the file may not exist yet
