#!/bin/sh
# Runs every spec under each Lua version given and ends with one line
# "N passed, N failed" (the sums), converted from busted's TAP output.
# usage: spec/run.sh BUILD_DIR VERSION...
build=$1; shift
passed=0; failed=0; status=0
log=$(mktemp); trap 'rm -f "$log"' EXIT
for v in "$@"; do
  echo "== Lua $v"
  LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$build/$v/?.so;;" \
    TOKENPOLICY_TEST_BUILD="$build/$v" \
    "lua$v" /usr/bin/busted --output=TAP spec >"$log" 2>&1 || status=1
  grep -E '^not ok|^#' "$log" | grep -v '^# Success' || true
  p=$(grep -c '^ok ' "$log"); f=$(grep -c '^not ok ' "$log")
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
    cat "$log"; f=1; status=1          # busted itself failed to run
  fi
  echo "Lua $v: $p passed, $f failed"
  passed=$((passed + p)); failed=$((failed + f))
done
[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed"
exit $status
