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
    "lua$v" /usr/bin/busted --output=TAP spec </dev/null >"$log" 2>&1
  rc=$?
  grep -vE '^ok |^1\.\.[0-9]+$' "$log" || true
  p=$(grep -c '^ok ' "$log"); f=$(grep -c '^not ok ' "$log")
  if [ "$rc" -ne 0 ]; then
    status=1
    # busted died (a crash, a sanitizer report): count it as a failure
    [ "$f" -eq 0 ] && f=1 && echo "busted exited with status $rc"
  fi
  echo "Lua $v: $p passed, $f failed"
  passed=$((passed + p)); failed=$((failed + f))
done
[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed"
exit $status
