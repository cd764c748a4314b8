#!/usr/bin/env bash
# usage: expect_error.sh PATTERN COMMAND...
# Passes when COMMAND exits nonzero and prints exactly one line on stderr, containing PATTERN
# (grep -E): bad input gets one clear message, never a stack of them or a crash.
set -u
pattern=$1
shift
err=$(mktemp)
"$@" >/dev/null 2>"$err"
rc=$?
lines=$(grep -c '' "$err")
status=0
if [[ $rc -eq 0 ]]; then echo "FAIL: exit status 0, expected an error"; status=1; fi
if [[ $rc -ge 128 ]]; then echo "FAIL: killed by signal $((rc - 128))"; status=1; fi
if [[ $lines -ne 1 ]]; then echo "FAIL: $lines lines on stderr, expected 1"; status=1; fi
if ! grep -qE -- "$pattern" "$err"; then echo "FAIL: stderr does not match '$pattern'"; status=1; fi
echo "stderr:"; cat "$err"
rm -f "$err"
exit $status
