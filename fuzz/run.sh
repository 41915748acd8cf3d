#!/bin/sh
# Runs every fuzz target for SECONDS on a copy of its committed corpus,
# JOBS targets at a time, and prints one line per target: seconds, total
# executions, executions per second, coverage (edges at start -> at end)
# and the corpus size at start -> at end.  Exits 1 when any target crashed
# (or found a leak, a timeout or ran out of memory); the crashing input and
# libFuzzer's log are kept under BINDIR/findings/<target>/, to be
# committed as a regression (fuzz/regressions/<target>/).
#
#   sh fuzz/run.sh BINDIR SECONDS JOBS TARGET...
#
# The committed corpus is never changed: each run works in a temporary
# directory (also its TMPDIR, where targets make their sandboxes), removed
# at the end.
set -u
bindir=$1 seconds=$2 jobs=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
findings=$(cd "$bindir" && pwd)/findings
work=$(mktemp -d "${TMPDIR:-/tmp}/tpfuzz-run.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# One target: corpus copy, run, stats line into $work/<target>.stats.
run_one() {
  t=$1
  dir=$work/$t
  mkdir -p "$dir/corpus" "$dir/tmp"
  if [ -d "$root/fuzz/corpus/$t" ]; then cp "$root/fuzz/corpus/$t/"* "$dir/corpus/" 2>/dev/null; fi
  if [ -d "$root/fuzz/regressions/$t" ]; then cp "$root/fuzz/regressions/$t/"* "$dir/corpus/" 2>/dev/null; fi
  start_files=$(ls "$dir/corpus" | wc -l)
  dict=
  if [ -f "$root/fuzz/$t.dict" ]; then dict=-dict=$root/fuzz/$t.dict; fi
  TMPDIR=$dir/tmp NO_COLOR=1 ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bindir/$t" -max_total_time="$seconds" -timeout=10 -detect_leaks=0 -rss_limit_mb=1536 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$dir/" $dict "$dir/corpus" >"$dir/log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
  cov0=$(sed -n 's/.*INITED cov: \([0-9]*\).*/\1/p' "$dir/log" | head -n 1)
  cov1=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$dir/log" | tail -n 1)
  end_files=$(ls "$dir/corpus" | wc -l)
  echo "$t ${rc} ${runs:-0} ${cov0:-?} ${cov1:-?} $start_files $end_files" >"$work/$t.stats"
  if [ "$rc" != 0 ]; then
    mkdir -p "$findings/$t"
    cp "$dir/log" "$findings/$t/log"
    for a in "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-*; do
      [ -f "$a" ] && cp "$a" "$findings/$t/"
    done
    echo "== $t failed (exit $rc): last lines of its log (all in $findings/$t/log)" >&2
    tail -n 40 "$dir/log" >&2
  fi
}

began=$(date +%s)
running=0
for t in "$@"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait
    running=0
  fi
done
wait

failed=0
printf '%-10s %8s %12s %10s %15s %12s %s\n' target seconds executions execs/s "coverage" corpus result
for t in "$@"; do
  read -r name rc runs cov0 cov1 f0 f1 <"$work/$t.stats"
  result=ok
  if [ "$rc" != 0 ]; then result="FAILED (exit $rc)"; failed=1; fi
  rate=-
  if [ "$seconds" -gt 0 ]; then rate=$((runs / seconds)); fi
  printf '%-10s %8s %12s %10s %15s %12s %s\n' "$name" "$seconds" "$runs" "$rate" \
    "$cov0 -> $cov1" "$f0 -> $f1" "$result"
done
echo "fuzz: $# targets in $(($(date +%s) - began)) s wall time"
exit $failed
