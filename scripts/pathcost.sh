#!/usr/bin/env bash
# Instructions per packet on each datapath path, counted by callgrind: exact and the same
# on every run of the same build, so it can run anywhere (CI included) and be compared
# across commits. Runs bench/src/bin/pathcost.rs for two frame counts per path and prints,
# for each path, (instructions at N2 - instructions at N1) / (N2 - N1): the cost of one more
# packet, setup excluded. Then the functions that take the most per packet.
#
#   scripts/pathcost.sh            # every path; table on stdout and in target/pathcost/
#   scripts/pathcost.sh dsr syn    # some paths
#   scripts/pathcost.sh --publish  # every path, and the table into docs/benchmarks.md
#   PATHCOST_TOP=8 scripts/pathcost.sh   # more functions per path
#
# Figures count instructions retired by the datapath (Ir), not time: a cache miss costs one
# instruction here and hundreds of cycles on a machine. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

N1=${PATHCOST_N1:-10000}
N2=${PATHCOST_N2:-20000}
TOP=${PATHCOST_TOP:-5}
out=target/pathcost
mkdir -p "$out"

command -v valgrind >/dev/null || { echo "pathcost: valgrind is missing (scripts/setup.sh installs it)" >&2; exit 1; }
cargo build --release -q -p xlb-bench --bin pathcost
bin=${CARGO_TARGET_DIR:-target}/release/pathcost
[ -x "$bin" ] || { echo "pathcost: $bin was not built" >&2; exit 1; }

publish=
if [ "${1:-}" = --publish ]; then
  publish=${PATHCOST_DOC:-docs/benchmarks.md}
  shift
fi
if [ $# -gt 0 ]; then
  paths=("$@")
else
  mapfile -t paths < <("$bin" --list | cut -f1)
  [ ${#paths[@]} -gt 0 ] || { echo "pathcost: $bin --list named no path" >&2; exit 1; }
fi

# Instructions collected inside `measured` for `path` at `n` frames; the profile is kept.
count() {
  local path=$1 n=$2 file="$out/callgrind.$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$file" --collect-atstart=no \
    --toggle-collect='pathcost::measured' "$bin" "$path" "$n" >/dev/null 2>"$out/valgrind.$path.$n.log" || {
    echo "pathcost: $path at $n frames failed:" >&2
    tail -5 "$out/valgrind.$path.$n.log" >&2
    return 1
  }
  local total
  total=$(awk '/^totals:/ { print $2 }' "$file")
  if [ -z "$total" ] || [ "$total" -eq 0 ]; then
    echo "pathcost: no instructions collected for $path (is measured inlined?)" >&2
    return 1
  fi
  echo "$total"
}

table="$out/pathcost.md"
tops="$out/functions.md"
{
  echo "| path | instructions per packet | what it is |"
  echo "| --- | ---: | --- |"
} >"$table"
: >"$tops"
failed=0
for p in "${paths[@]}"; do
  what=$("$bin" --list | awk -F'\t' -v p="$p" '$1 == p { print $2 }')
  [ -n "$what" ] || { echo "pathcost: unknown path $p (see $bin --list)" >&2; failed=1; continue; }
  if ! a=$(count "$p" "$N1") || ! b=$(count "$p" "$N2"); then
    failed=1
    echo "| $p | failed | $what |" >>"$table"
    continue
  fi
  per=$(( (b - a + (N2 - N1) / 2) / (N2 - N1) ))
  echo "| $p | $per | $what |" >>"$table"
  # The heaviest functions (self cost) at N2, per packet; the driver's frame copy shows
  # up as memcpy.
  {
    echo "#### $p: $per instructions per packet"
    echo
    echo '| function | per packet |'
    echo '| --- | ---: |'
    # Self cost by function (code inlined into a function counts as that function's).
    callgrind_annotate --auto=no --threshold=100 "$out/callgrind.$p.$N2" 2>/dev/null |
      awk -v n="$N2" '
        $1 ~ /^[0-9,]+$/ && $2 ~ /^\(/ && $3 != "PROGRAM" {
          ir = $1; gsub(",", "", ir)
          fn = $0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", fn); sub(/ \[[^]]*\]$/, "", fn)
          sub(/^([^ ]*\.(rs|S|c|h)|\?\?\?):/, "", fn)
          cost[fn] += ir
        }
        END { for (f in cost) printf "%d\t%s\n", cost[f], f }' |
      sort -rn | sed -n "1,${TOP}p" |
      awk -F'\t' -v n="$N2" '{ printf "| `%s` | %.0f |\n", $2, $1 / n }'
    echo
  } >>"$tops"
done

echo "Instructions per packet (callgrind, N = $N1 and $N2 frames, difference):"
cat "$table"
echo
cat "$tops"
echo "(tables in $table and $tops; profiles in $out/callgrind.*: callgrind_annotate FILE)"

# Between the markers of docs/benchmarks.md: the table, and what it was measured on.
if [ -n "$publish" ]; then
  if [ "$failed" -ne 0 ]; then
    echo "pathcost: a path failed; $publish left as it was" >&2
    exit 1
  fi
  if ! grep -q '^<!-- pathcost -->$' "$publish" || ! grep -q '^<!-- /pathcost -->$' "$publish"; then
    echo "pathcost: $publish lacks the <!-- pathcost --> and <!-- /pathcost --> lines" >&2
    exit 1
  fi
  block="$out/block.md"
  {
    echo "<!-- pathcost -->"
    echo "Measured $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench || echo " with uncommitted changes") with $(valgrind --version)," \
      "by \`scripts/pathcost.sh --publish\` (N = $N1 and $N2 frames; the figure is the difference per frame)."
    echo
    cat "$table"
    echo "<!-- /pathcost -->"
  } >"$block"
  awk -v block="$block" '
    /^<!-- pathcost -->$/ { while ((getline line < block) > 0) print line; skip = 1; next }
    /^<!-- \/pathcost -->$/ { skip = 0; next }
    !skip' "$publish" >"$publish.new"
  mv "$publish.new" "$publish"
  echo "pathcost: table written into $publish"
fi
exit "$failed"
