--- Replays inputs through a fuzz target without libFuzzer or clang, on the
-- interpreter and C core the caller picks (spec/34-fuzz_regressions_spec.lua
-- runs it on every input of fuzz/regressions/ with Lua 5.4 and 5.3):
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;fuzz/?.lua;;' LUA_CPATH='build/5.4/?.so;;' \
--     lua5.4 fuzz/replay.lua TARGET FILE...
--
-- Like fuzz/harness.c: FUZZ_ROOT is the current directory, fuzz_answers
-- feeds raw HTTP answers (here through fuzz/answer_peer.js, a Node peer),
-- and any Lua error out of the target is a finding.  Every command it runs
-- goes without the sanitizer preload of `make asan` (env -u LD_PRELOAD).  Prints "ok N inputs"
-- and exits 0, or prints the input and the error and exits 1.
-- luacheck: globals FUZZ_ROOT fuzz_answers
local target = assert(arg[1], "usage: replay.lua TARGET FILE...")
-- The cli target replaces io.stdout and os.exit: keep the real ones.
local stdout, exit = io.stdout, os.exit
FUZZ_ROOT = os.getenv("PWD") or "."

local peer, peer_dir, gen = nil, nil, 0
function fuzz_answers(list)
  if not peer then
    peer_dir = assert(io.popen("env -u LD_PRELOAD mktemp -d"):read("l"))
    local handle = assert(io.popen("exec env -u LD_PRELOAD node fuzz/answer_peer.js " .. peer_dir, "r"))
    local port, pid = assert(handle:read("l")):match("^(%d+) (%d+)$")
    peer = { handle = handle, port = tonumber(port), pid = pid }
  end
  os.execute("env -u LD_PRELOAD rm -f '" .. peer_dir .. "'/answer.*")
  for i, a in ipairs(list) do
    local f = assert(io.open(peer_dir .. "/answer." .. i, "wb"))
    f:write(a)
    f:close()
  end
  gen = gen + 1
  local f = assert(io.open(peer_dir .. "/gen", "wb"))
  f:write(tostring(gen))
  f:close()
  return peer.port
end

-- A target's name, or the path of a target script (the spec's self-test).
local run = dofile(target:find("/") and target or ("fuzz/" .. target .. ".lua"))
local failed
for i = 2, #arg do
  local f = assert(io.open(arg[i], "rb"))
  local data = f:read("a")
  f:close()
  local ok, err = xpcall(run, debug.traceback, data)
  if not ok then
    failed = ("%s: %s"):format(arg[i], tostring(err))
    break
  end
end
if peer then
  os.execute("env -u LD_PRELOAD kill " .. peer.pid)
  peer.handle:close()
  os.execute("env -u LD_PRELOAD rm -rf '" .. peer_dir .. "'")
end
local sandbox = package.loaded.fuzzlib and package.loaded.fuzzlib.sandbox_dir
if sandbox then os.execute("env -u LD_PRELOAD rm -rf '" .. sandbox .. "'") end
if failed then
  stdout:write("FAILED ", failed, "\n")
  exit(1, true)
end
stdout:write(("ok %d inputs\n"):format(#arg - 1))
