#!/usr/bin/env bash
# Runs every test of the workspace and ends with one line that adds up all test binaries:
# "tests: N passed, N failed" (cargo prints one result line per binary, some of them empty).
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } } END { print p+0, f+0 }' "$log")
echo
echo "tests: $passed passed, $failed failed"
if [ "$rc" -eq 0 ] && [ "$passed" -eq 0 ]; then
  echo "no test ran" >&2
  exit 1
fi
exit "$rc"
