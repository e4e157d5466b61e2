#!/usr/bin/env bash
# Fuzzes each target of fuzz/ (parse: any bytes as a frame; pipeline: any bytes through the
# datapath; config: any bytes as a config file, through what `xlb check` runs) for a bounded
# time, on the stable toolchain, and fails on a crash.
#
#   scripts/fuzz.sh                     # every target, FUZZ_SECONDS each (default 55)
#   scripts/fuzz.sh config              # some targets
#   FUZZ_SECONDS=600 scripts/fuzz.sh    # longer (`FUZZ_SECONDS=600 make fuzz`)
#
# The targets are built as cargo-fuzz builds them, with plain cargo: libFuzzer from
# libfuzzer-sys (compiled by the C++ compiler that comes with clang), SanitizerCoverage
# passes, debug assertions and overflow checks, `--cfg fuzzing`. Every flag is a stable
# one, so neither nightly nor cargo-fuzz is needed. There is no AddressSanitizer (a nightly
# flag): the code fuzzed is safe Rust, and a crash here is a panic (a failed assertion, an
# overflow, an index out of bounds), a timeout (FUZZ_TIMEOUT seconds for one input) or more
# than 2 GiB of memory. The first build takes about 6 minutes on 2 idle cores (11 CPU
# minutes; target/fuzz, kept for the next run); the run, one target after the other on one
# core, 3 x FUZZ_SECONDS and a few seconds.
#
# Seeds (checked in): fuzz/seeds/frames for parse and pipeline (fuzz/examples/seeds.rs writes
# them), examples/ and fuzz/seeds/config for config (with fuzz/config.dict). What the fuzzer
# finds is kept in target/fuzz-corpus/TARGET and starts the next run. A crash leaves its
# input in target/fuzz-artifacts/TARGET/; the script prints its path, the command that
# replays it and the panic with its stack, runs the other targets, and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

SECONDS_EACH=${FUZZ_SECONDS:-55}
TIMEOUT=${FUZZ_TIMEOUT:-10}
if [ $# -gt 0 ]; then targets=("$@"); else targets=(parse pipeline config); fi
for t in "${targets[@]}"; do
  case $t in
    parse | pipeline | config) ;;
    *) echo "fuzz: no target $t (parse, pipeline, config)" >&2; exit 2 ;;
  esac
done

# The fuzz crate is a workspace of its own (fuzz/Cargo.toml); its lock file starts as a
# copy of the main one, so the code fuzzed is built from the same dependency versions as
# xlb. Cargo adds what only fuzzing uses (libfuzzer-sys, arbitrary) and drops the rest.
if [ ! -e fuzz/Cargo.lock ] || [ Cargo.lock -nt fuzz/Cargo.lock ]; then
  cp Cargo.lock fuzz/Cargo.lock
fi
host=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  --cfg fuzzing
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cdebug-assertions
  -Coverflow-checks
)
echo "fuzz: building ${targets[*]} (target/fuzz)"
# --target: the flags reach the fuzzed code only, not build scripts and proc macros.
bin_args=()
for t in "${targets[@]}"; do bin_args+=(--bin "$t"); done
RUSTFLAGS="${flags[*]}" cargo build -q --release --manifest-path fuzz/Cargo.toml --target "$host" \
  --target-dir target/fuzz "${bin_args[@]}"

failed=()
for t in "${targets[@]}"; do
  case $t in
    parse | pipeline) seeds=(fuzz/seeds/frames) max_len=2048 extra=() ;;
    config) seeds=(examples fuzz/seeds/config) max_len=4096 extra=(-dict=fuzz/config.dict) ;;
  esac
  corpus=target/fuzz-corpus/$t artifacts=target/fuzz-artifacts/$t log=target/fuzz-artifacts/$t.log
  mkdir -p "$corpus" "$artifacts"
  bin=target/fuzz/$host/release/$t
  # The first directory is the corpus the fuzzer writes to; the seeds are read only.
  # RUST_BACKTRACE: libfuzzer-sys's panic hook prints the panic with its stack, then aborts.
  rc=0
  RUST_BACKTRACE=1 "$bin" "$corpus" "${seeds[@]}" "${extra[@]}" -max_total_time="$SECONDS_EACH" \
    -max_len="$max_len" -timeout="$TIMEOUT" -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    # libFuzzer's last status line: "#RUNS DONE cov: EDGES ft: FEATURES corp: INPUTS/BYTES ...".
    read -r runs cov corp < <(awk '$2 == "DONE" { r = substr($1, 2); c = $4; split($8, k, "/"); n = k[1] }
      END { print r + 0, c + 0, n + 0 }' "$log")
    echo "fuzz: $t: ok, $runs inputs in ${SECONDS_EACH}s, $cov edges covered, corpus of $corp inputs"
    continue
  fi
  failed+=("$t")
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  echo "fuzz: $t: FAILED (exit code $rc); the whole log: $log" >&2
  if [ -n "$artifact" ]; then
    echo "fuzz: $t: reproducer: $artifact" >&2
    echo "fuzz: $t: replay it: RUST_BACKTRACE=1 $bin $artifact" >&2
  fi
  # What went wrong, from the panic (or libFuzzer's report) on: message, stack, input.
  if grep -qE 'panicked at|ERROR: libFuzzer|has overflowed its stack' "$log"; then
    sed -n -E '/panicked at|ERROR: libFuzzer|has overflowed its stack/,$p' "$log" >&2
  else
    tail -n 40 "$log" >&2
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ok: ${targets[*]}, ${SECONDS_EACH}s each, no crash"
