#!/usr/bin/env bash
# Runs every spec file under each Lua version given, several busted
# processes at a time, and ends with one line "N passed, N failed": the
# sums over every file and version, from busted's TAP output.
#
# usage: spec/run.sh [-m MODE] [-j JOBS] [-t TITLE] BUILD VERSION...
#   -m normal    (default) busted as it is
#   -m asan      the ASan and UBSan runtimes preloaded into each busted
#                (BUILD is an -fsanitize=address,undefined build: make asan)
#   -m valgrind  each busted under valgrind memcheck (make valgrind)
#   -j JOBS      busted processes at once (default: cores + 2, since most
#                specs spend their time waiting on peers and servers)
#   -t TITLE     what the summary calls this run (default: the mode)
#   -o LIST      only the specs LIST names (full names, one per line, as
#                .ci/valgrind-skip.txt has them): CI runs the specs valgrind
#                skips this way on the normal build
#   SPECS="spec/03-hostile_spec.lua ..." runs only those files.
#
# One busted process per spec file and Lua version.  A file never runs
# under two versions at once (a spec may use a fixed user name or path);
# different files may, since every spec makes its own temporary
# directories and its peers listen on free ports.  Each file prints one
# line (counts, wall and CPU seconds) and, below it, whatever its run
# printed besides passing tests: failures with their names, pending
# specs, sanitizer and valgrind reports.  A run counts as one more failure
# when busted dies or exits non-zero without a failed test, when it does
# not reach its end, and when a sanitizer or valgrind reports an error.
set -u
mode=normal jobs=$(( $(nproc 2>/dev/null || echo 2) + 2 )) title= only=
while getopts m:j:t:o: opt; do
  case $opt in
    m) mode=$OPTARG ;;
    j) jobs=$OPTARG ;;
    t) title=$OPTARG ;;
    o) only=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { echo "usage: spec/run.sh [-m normal|asan|valgrind] [-j JOBS] [-t TITLE] [-o LIST] BUILD VERSION..." >&2; exit 2; }
[ -z "$only" ] || [ "$mode" = normal ] || { echo "spec/run.sh: -o goes with -m normal" >&2; exit 2; }
build=$1; shift
versions=("$@")
title=${title:-$mode}
cd "$(dirname "$0")/.." || exit 2

prefix=()
filters=()
# name_filters OPTION FILE: one busted OPTION=^name$ per spec FILE names
# (its lines are plain text, so Lua's magic characters are escaped).
name_filters() {
  local line
  while IFS= read -r line; do
    case $line in ''|'#'*) continue ;; esac
    filters+=("$1=^$(printf '%s' "$line" | sed 's/[][^$()%.*+?-]/%&/g')\$")
  done <"$2"
}

# Longest first (valgrind CPU or waiting on peers; docs/ci.md has the
# figures), so that no long file starts last while the others are done.
FIRST="37-faults 18-review_jwt 33-haproxy 40-fleet 31-keys_scale 38-secrets 35-neighbours 05-examples
  39-redis_denylist 06-rockspec 16-jwks 03-hostile 04-interop 13-denylist 26-cli 11-policy 19-review_http
  07-files 20-review_discovery 23-session 30-store_pg"
files=()
if [ -n "$only" ]; then
  # The files that hold the specs LIST names (busted --list runs no test);
  # a name that matches no spec is a stale line, and an error.
  name_filters --filter "$only"
  listing=$(LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$build/${1}/?.so;;" \
    "lua$1" /usr/bin/busted --list "${filters[@]}" spec/ 2>&1) || { echo "$listing" >&2; exit 2; }
  stale=$(grep -vE '^(#|$)' "$only" | grep -vxF -f <(printf '%s\n' "$listing" | sed 's/^[^:]*:[0-9]*: //'))
  [ -z "$stale" ] || { printf 'spec/run.sh: in %s, no spec is named:\n%s\n' "$only" "$stale" >&2; exit 2; }
  mapfile -t files < <(printf '%s\n' "$listing" | cut -d: -f1 | sort -u)
elif [ -n "${SPECS:-}" ]; then
  read -r -a files <<<"$SPECS"
else
  for name in $FIRST; do [ -f "spec/${name}_spec.lua" ] && files+=("spec/${name}_spec.lua"); done
  for f in spec/*_spec.lua; do
    case " ${files[*]} " in *" $f "*) ;; *) files+=("$f") ;; esac
  done
fi

case $mode in
  normal) ;;
  asan)
    # The interpreters are not instrumented, so the runtimes are preloaded;
    # any report aborts the process (abort_on_error, no recovery).
    # intercept_tls_get_addr=0: with it, gcc 12's LeakSanitizer records a
    # bogus dynamic TLS range for the libraries core.so loads and its exit
    # scan crashes reading it ("Tracer caught signal 11", seen on spec 14
    # under Lua 5.4 most runs); leaks are still found on the heap.
    cc=${CC:-cc}
    prefix=(env "LD_PRELOAD=$($cc -print-file-name=libasan.so) $($cc -print-file-name=libubsan.so)"
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:intercept_tls_get_addr=0 UBSAN_OPTIONS=print_stacktrace=1) ;;
  valgrind)
    # Only the busted process is under valgrind, not its children (docs/ci.md:
    # tracing them means tracing every sh of os.execute and io.popen; the
    # lua children of the CLI specs are checked under ASan instead).
    # --log-file per process: a report is found by its ERROR SUMMARY, so a
    # failed spec and a memory error are told apart.
    prefix=(valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite
      --show-leak-kinds=definite --error-exitcode=1 --num-callers=30 --trace-children=no
      --suppressions=.ci/valgrind.supp)
    # The specs that do not run under valgrind, each with its reason.
    name_filters --filter-out .ci/valgrind-skip.txt ;;
  *) echo "spec/run.sh: unknown mode $mode" >&2; exit 2 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/tp-specs.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT
started=$EPOCHREALTIME

# The provider's node_modules, installed once here: two specs installing
# them at the same time would both write spec/helpers/oidc/node_modules.
install=("lua${versions[0]}" -e 'require("helpers.oidc").install()')
[ "$mode" = asan ] && install=("${prefix[@]}" "${install[@]}")
LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$build/${versions[0]}/?.so;;" "${install[@]}" ||
  echo "spec/run.sh: npm ci for the OpenID provider failed; its specs will say why"

if [ "$mode" = valgrind ]; then
  echo "not run under valgrind (.ci/valgrind-skip.txt says why):"
  grep -v '^#' .ci/valgrind-skip.txt | grep -v '^$' | sed 's/^/  - /'
fi

# run_job N VERSION FILE: runs one file, leaves counts in $work/N/counts
# and prints its report.
run_job() {
  local n=$1 v=$2 file=$3 dir=$work/$1 cmd
  mkdir -p "$dir"
  cmd=("lua$v" /usr/bin/busted --output=TAP "${filters[@]}" "$file")
  [ "$mode" = valgrind ] && cmd=("${prefix[@]}" "--log-file=$dir/vg.%p" "${cmd[@]}")
  [ "$mode" = asan ] && cmd=("${prefix[@]}" "${cmd[@]}")
  local TIMEFORMAT='%R %U %S' rc p f wall user sys notes= attempt
  for attempt in 1 2; do
    { time LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$build/$v/?.so;;" \
        TOKENPOLICY_TEST_BUILD="$build/$v" timeout -k 10 "${SPEC_TIMEOUT:-1500}" "${cmd[@]}" \
        </dev/null >"$dir/log" 2>&1; echo $? >"$dir/rc"; } 2>"$dir/time"
    rc=$(cat "$dir/rc")
    # LeakSanitizer's exit-time scan stops the process's threads with a
    # tracer that can itself crash when threads (libcurl's resolver) are
    # exiting: then no leak check was made at all, and the file runs once
    # more.  A leak it does find is "ERROR: LeakSanitizer" and fails.
    [ "$mode" = asan ] && [ "$attempt" = 1 ] && grep -q '^1\.\.[0-9]' "$dir/log" &&
      ! grep -q '^not ok ' "$dir/log" && ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$dir/log" &&
      grep -q 'LeakSanitizer has encountered a fatal error' "$dir/log" || break
    notes+="run again: LeakSanitizer itself crashed at exit (Tracer caught signal); "
    cp "$dir/log" "$dir/log.1"
  done
  # bash's own notices (a child's "Aborted") come before time's line
  read -r wall user sys < <(tail -n 1 "$dir/time")
  p=$(grep -c '^ok ' "$dir/log")
  f=$(grep -c '^not ok ' "$dir/log")
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    notes+="timed out after ${SPEC_TIMEOUT:-1500} s; "; f=$((f + 1))
  elif ! grep -q '^1\.\.[0-9]' "$dir/log"; then
    notes+="busted did not finish (status $rc); "; f=$((f + 1))
  elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    notes+="busted exited with status $rc; "; f=$((f + 1))
  fi
  if [ "$mode" = asan ] && grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$dir/log"; then
    notes+="a sanitizer report; "; f=$((f + 1))
  fi
  local bad=()
  if [ "$mode" = valgrind ]; then
    mapfile -t bad < <(grep -lE 'ERROR SUMMARY: [1-9]' "$dir"/vg.* 2>/dev/null)
    [ ${#bad[@]} -gt 0 ] && { notes+="valgrind reported errors; "; f=$((f + 1)); }
  fi
  echo "$p $f $user $sys" >"$dir/counts"
  {
    printf '%-4s %-34s %4d passed %3d failed %7.1f s (CPU %5.1f s)%s\n' "$v" "$file" "$p" "$f" "$wall" \
      "$(awk "BEGIN { print $user + $sys }")" "${notes:+  ${notes%; }}"
    # what is not a passing test: failures, pending specs, reports
    [ -f "$dir/log.1" ] && grep -A3 'Tracer caught signal' "$dir/log.1" | sed 's/^/    first run: /'
    grep -vE '^ok [0-9]+ - [^#]|^ok [0-9]+ - $|^1\.\.[0-9]+$' "$dir/log" | sed 's/^/    /'
    for log in "${bad[@]}"; do sed 's/^/    /' "$log"; done
    # valgrind's own complaint when busted did not even finish
    if [ "$mode" = valgrind ] && [ ${#bad[@]} = 0 ] && [ -n "$notes" ]; then
      grep -l 'Command: lua.*busted' "$dir"/vg.* 2>/dev/null | head -n 1 | xargs -r tail -n 30 | sed 's/^/    /'
    fi
  } >"$dir/report"
  flock "$work/lock" cat "$dir/report"
}

echo "== $title: ${#files[@]} spec files under Lua ${versions[*]}, $jobs at a time"
pending=()
for f in "${files[@]}"; do for v in "${versions[@]}"; do pending+=("$v $f"); done; done
declare -A running=() busy=()
n=0
while [ ${#pending[@]} -gt 0 ] || [ ${#running[@]} -gt 0 ]; do
  # start what may start: a free slot, a file not running under another Lua
  while [ ${#running[@]} -lt "$jobs" ]; do
    pick=-1
    for i in "${!pending[@]}"; do
      if [ -z "${busy[${pending[$i]#* }]:-}" ]; then pick=$i; break; fi
    done
    [ "$pick" -ge 0 ] || break
    read -r v f <<<"${pending[$pick]}"
    unset 'pending[$pick]'; pending=("${pending[@]}")
    n=$((n + 1))
    run_job "$n" "$v" "$f" &
    running[$!]=$f; busy[$f]=1
  done
  wait -n -p done_pid
  done_file=${running[$done_pid]}
  unset "busy[$done_file]" "running[$done_pid]"
done

read -r passed failed cpu < <(cat "$work"/*/counts | awk '{ p += $1; f += $2; c += $3 + $4 } END { print p + 0, f + 0, c + 0 }')
printf '== %s: %d passed, %d failed in %.0f s (CPU %.0f s)\n' "$title" "$passed" "$failed" \
  "$(awk "BEGIN { print $EPOCHREALTIME - $started }")" "$cpu"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
