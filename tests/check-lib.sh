# shellcheck shell=sh
# tests/check-lib.sh - sourced by the scripted checks of `make check` (check-units.sh,
# check-examples.sh): one line per result and the closing "N passed, N failed".
passed=0
failed=0

# result STATUS NAME [WHY]: PASS NAME when STATUS is 0, else FAIL NAME (and why).
result() {
	if [ "$1" = 0 ]; then
		passed=$((passed + 1))
		echo "PASS $2"
	else
		failed=$((failed + 1))
		echo "FAIL $2${3:+: $3}"
	fi
}

# finish: the closing line; the exit status says whether anything failed.
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}
