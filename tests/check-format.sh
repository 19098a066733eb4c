#!/bin/sh
# The C sources follow .clang-format. Skipped (77) where clang-format is not installed.
# Ends with "N passed, N failed": one line per file.
command -v clang-format >/dev/null 2>&1 || { echo "clang-format not installed: skipped"; exit 77; }
cd "${top_srcdir:-.}" || exit 99
passed=0
failed=0
for f in daemon/*.[ch] proto/*.[ch] client/*.[ch] tests/unit/*.c tests/integration/*.[ch] \
	tests/vm/*.c tests/fuzz/*.c; do
	if clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAIL: $f is not formatted (clang-format -i $f):"
		clang-format "$f" | diff -u "$f" - | head -n 20
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
