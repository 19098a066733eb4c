#!/bin/sh
# Run one test; its output goes to the automake .log file (stdout) and to the terminal
# (fd 9, set up by AM_TESTS_FD_REDIRECT), and its exit status is kept. fd 9 is written
# through, never reopened: reopening /dev/fd/9 would truncate a log file it points to.
status_file=$(mktemp) || exit 99
{ "$@" 2>&1; echo $? > "$status_file"; } | while IFS= read -r line || [ -n "$line" ]; do
	printf '%s\n' "$line"
	printf '%s\n' "$line" >&9
done
status=$(cat "$status_file")
rm -f "$status_file"
exit "$status"
