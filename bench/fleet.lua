-- `make bench-fleet`: revocation across a fleet of HAProxy gateways sharing
-- one Redis denylist, measured in one run on one machine.
--
--   lua5.4 bench/fleet.lua [BUILD]            (from the repository root)
--
-- A private redis-server (127.0.0.1, a free port, a password, the
-- append-only file on) and Debian's HAProxy 2.6 (Lua 5.3: BUILD/5.3 holds
-- the core it loads) running tokenpolicy.haproxy with
-- `denylist = "redis://..."`, `sync_every = 0.2`, nbthread 1, made from
-- bench/haproxy/haproxy.cfg.in (its backend is HAProxy itself; a refused
-- token gets 403). Four parts:
--   (p) propagation: 3 gateways; REVOCATIONS times, add a jti with this
--       process's own Redis denylist (`:add`, blocking, acknowledged by
--       Redis), then ask every gateway (luasocket's HTTP client) for the
--       token with that jti until all three refuse it: p50, p99 and max of
--       the time the last of the three took, and of each gateway's;
--   (r) requests/s of one gateway (wrk, 1 thread, 50 connections, the same
--       1,000 valid RS256 tokens round-robin as bench/haproxy, cache on)
--       with the Redis denylist synced every 0.2 s, against the same
--       gateway with a denylist file holding the same ENTRIES_RATE entries;
--       ROUNDS interleaved rounds, best of each; target >= 0.95x;
--   (m) Redis memory: INFO memory's used_memory before and after adding
--       ENTRIES entries (and MEMORY USAGE of each key), per entry;
--   (f) the file denylist at 1,000,000 entries: bench/run.lua's own
--       "denylist 1M" and "add at 1M" benchmarks (BENCH_ONLY=1M).
--
-- Environment: ONLY (parts, default "prmf"), REVOCATIONS (1000), DURATION
-- (seconds per wrk run, 10), ROUNDS (4), ENTRIES (100000), ENTRIES_RATE
-- (10000), SYNC_EVERY (0.2). Redis, the gateways and the temporary
-- directory are removed at the end, also when the run fails.
local tp = require "tokenpolicy"
local shell = require "shell"
local socket = require "socket"
local http = require "socket.http"

local BUILD = arg[1] or "build"
local function setting(name, default)
  local value = math.tointeger(tonumber(os.getenv(name) or ""))
  return value or default
end
local ONLY = os.getenv("ONLY") or "prmf"
local REVOCATIONS = setting("REVOCATIONS", 1000)
local DURATION = setting("DURATION", 10)
local ROUNDS = setting("ROUNDS", 4)
local ENTRIES = setting("ENTRIES", 100000)
local ENTRIES_RATE = setting("ENTRIES_RATE", 10000)
local SYNC_EVERY = tonumber(os.getenv("SYNC_EVERY") or "") or 0.2
local GATEWAYS = 3
local CONNECTIONS = 50
local TOKENS = 1000
local TARGET_RATIO = 0.95
local ISSUER = "https://auth.example.org/realms/bench"
local AUDIENCE = "https://api.example.org"

local q, run, capture = shell.quote, shell.run, shell.capture
local write_file, read_file = shell.write_file, shell.read_file
local CLEAN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "

local ROOT = capture("pwd"):gsub("%s+$", "")
local BUILD_DIR = BUILD:sub(1, 1) == "/" and BUILD or (ROOT .. "/" .. BUILD)
local HAPROXY_ENV = table.concat({
  "LUA_PATH_5_3=" .. q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"),
  "LUA_CPATH_5_3=" .. q(BUILD_DIR .. "/5.3/?.so;;"),
}, " ")
local DIR = capture("mktemp -d /tmp/tp-bench-fleet.XXXXXX"):gsub("%s+$", "")
math.randomseed(os.time())
local PASSWORD = ("bench-%d-%d"):format(os.time(), math.random(1000000000))

local function sleep(seconds)
  socket.sleep(seconds)
end

---------------------------------------------------------------------------
-- Redis

local redis = { port = 20000 + math.random(0, 9999), dir = DIR .. "/redis", password_file = DIR .. "/redis.password" }
redis.url = ("redis://127.0.0.1:%d/0"):format(redis.port)

local function redis_cli(args)
  return capture(CLEAN .. "redis-cli -h 127.0.0.1 -p " .. redis.port .. " --no-auth-warning -a " .. q(PASSWORD)
    .. " " .. args .. " 2>&1")
end

local function redis_start()
  run("mkdir -p " .. q(redis.dir))
  write_file(redis.password_file, PASSWORD .. "\n")
  run("chmod 600 " .. q(redis.password_file))
  write_file(redis.dir .. "/redis.conf", table.concat({
    "bind 127.0.0.1", "port " .. redis.port, "dir " .. redis.dir, "daemonize yes",
    "pidfile " .. redis.dir .. "/redis.pid", "logfile " .. redis.dir .. "/redis.log",
    "appendonly yes", "appendfsync everysec", "save \"\"", "requirepass " .. PASSWORD,
  }, "\n") .. "\n")
  run(CLEAN .. "redis-server " .. q(redis.dir .. "/redis.conf"))
  for _ = 1, 100 do
    if redis_cli("ping"):find("PONG", 1, true) then
      redis.pid = read_file(redis.dir .. "/redis.pid"):match("%d+")
      return
    end
    sleep(0.05)
  end
  error("redis-server did not start")
end

local function redis_denylist(db)
  local url = ("redis://127.0.0.1:%d/%d"):format(redis.port, db or 0)
  return assert(tp.denylist(url, { password_file = redis.password_file }))
end

---------------------------------------------------------------------------
-- Fixtures: a key pair and valid tokens, each with its own jti

local fx = { private = DIR .. "/private.pem", public = DIR .. "/public.pem", tokens = DIR .. "/tokens.txt" }

local function make_fixtures()
  run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. q(fx.private) .. " 2>/dev/null")
  run("openssl pkey -in " .. q(fx.private) .. " -pubout -out " .. q(fx.public))
  fx.keys = assert(tp.keys(read_file(fx.private), { kid = "bench-1" }))
  fx.now = os.time()
  local lines = {}
  for i = 1, TOKENS do
    lines[i] = fx.sign("valid-" .. i)
  end
  write_file(fx.tokens, table.concat(lines, "\n") .. "\n")
end

function fx.sign(jti)
  return assert(tp.sign({ iss = ISSUER, aud = AUDIENCE, sub = "user", scope = "read", iat = fx.now - 60,
    exp = fx.now + 7200, jti = jti }, fx.keys, { alg = "RS256" }))
end

---------------------------------------------------------------------------
-- HAProxy gateways

local started = {}   -- pid -> true

local function stop(pid)
  os.execute("kill " .. pid .. " 2>/dev/null")
  for _ = 1, 50 do
    if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then
      started[pid] = nil
      return
    end
    sleep(0.1)
  end
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
  started[pid] = nil
end

-- A gateway: id names its files; denylist is a file path or the Redis URL.
local function start_gateway(id, denylist)
  local port = 30000 + math.random(0, 9999)
  local loader = DIR .. "/" .. id .. ".lua"
  local redis_opts = ""
  if denylist:find("^redis://") then
    redis_opts = ("redis = { password_file = %q }, sync_every = %s,"):format(redis.password_file, SYNC_EVERY)
  end
  write_file(loader, ([[require("tokenpolicy.haproxy").register{
  name = "tokenpolicy-auth", keys_file = %q, iss = %q, aud = %q, algs = { "RS256" }, cache_size = %d,
  denylist = %q, %s
}
]]):format(fx.public, ISSUER, AUDIENCE, 2 * TOKENS, denylist, redis_opts))
  local text = read_file(ROOT .. "/bench/haproxy/haproxy.cfg.in")
    :gsub("@PORT@", tostring(port))
    :gsub("@GLOBAL@", function() return "    lua-load " .. loader end)
    :gsub("@RULES@", function()
      return "    http-request lua.tokenpolicy-auth\n    http-request deny unless { var(txn.tp.ok) -m int 1 }"
    end)
  local cfg, pidfile = DIR .. "/" .. id .. ".cfg", DIR .. "/" .. id .. ".pid"
  write_file(cfg, text)
  run(HAPROXY_ENV .. " haproxy -D -p " .. q(pidfile) .. " -f " .. q(cfg) .. " 2>" .. q(DIR .. "/" .. id .. ".log"))
  local pid = read_file(pidfile):match("%d+")
  started[pid] = true
  local g = { id = id, pid = pid, url = "http://127.0.0.1:" .. port .. "/" }
  for _ = 1, 100 do
    local _, code = http.request(g.url)
    if code == 403 then
      return g
    end
    sleep(0.05)
  end
  error("gateway " .. id .. " did not answer")
end

-- luasocket's HTTP client writes the request line and the headers
-- separately: without TCP_NODELAY, Nagle's algorithm and the peer's delayed
-- ACK hold the second write about 40 ms, which would be measured as
-- propagation time.
local function nodelay()
  local s = socket.tcp4()  -- socket.tcp() makes its descriptor only when it connects
  assert(s:setoption("tcp-nodelay", true))
  return s
end

local function status(g, token)
  local _, code = http.request { url = g.url, headers = { authorization = "Bearer " .. token }, create = nodelay }
  return code
end

---------------------------------------------------------------------------
-- Statistics

local function percentile(sorted, p)
  return sorted[math.max(1, math.ceil(#sorted * p / 100))]
end

local function summary(list)
  table.sort(list)
  return percentile(list, 50), percentile(list, 99), list[#list]
end

local results = {}

---------------------------------------------------------------------------
-- (p) propagation

local function propagation()
  local gateways = {}
  for i = 1, GATEWAYS do
    gateways[i] = start_gateway("p" .. i, redis.url)
  end
  local dl = redis_denylist(0)
  local last, each = {}, {}
  for i = 1, REVOCATIONS do
    local jti = ("revoked-%d-%d"):format(fx.now, i)
    local token = fx.sign(jti)
    for _, g in ipairs(gateways) do
      assert(status(g, token) == 200, "a valid token was refused")
    end
    -- A random pause first: the previous revocation ended just after a
    -- gateway's sync, and adding at once would land every revocation at
    -- the same point of the gateways' sync cycles (the worst one).
    sleep(math.random() * SYNC_EVERY)
    assert(dl:add(jti, fx.now + 7200))
    local t0 = socket.gettime()
    local pending = GATEWAYS
    local done = {}
    while pending > 0 do
      for k, g in ipairs(gateways) do
        if not done[k] and status(g, token) == 403 then
          done[k] = true
          pending = pending - 1
          each[#each + 1] = socket.gettime() - t0
        end
      end
      if socket.gettime() - t0 > 10 then
        error("revocation " .. i .. " did not reach every gateway within 10 s")
      end
    end
    last[#last + 1] = socket.gettime() - t0
    if i % 100 == 0 then
      io.stderr:write(("propagation: %d/%d\n"):format(i, REVOCATIONS))
    end
  end
  dl:close()
  for _, g in ipairs(gateways) do
    stop(g.pid)
  end
  local p50, p99, max = summary(last)
  local e50, e99, emax = summary(each)
  results.p = { p50 = p50, p99 = p99, max = max, e50 = e50, e99 = e99, emax = emax }
  print(("\n(p) propagation over %d revocations, %d gateways, sync_every %g s (ms)"):format(REVOCATIONS, GATEWAYS,
    SYNC_EVERY))
  print(("%-28s %8s %8s %8s"):format("", "p50", "p99", "max"))
  print(("%-28s %8.1f %8.1f %8.1f"):format("all gateways refuse", p50 * 1e3, p99 * 1e3, max * 1e3))
  print(("%-28s %8.1f %8.1f %8.1f"):format("each gateway refuses", e50 * 1e3, e99 * 1e3, emax * 1e3))
end

---------------------------------------------------------------------------
-- (r) requests/s, Redis sync on against the denylist file

local function wrk(g, seconds)
  local output = capture(("wrk -t1 -c%d -d%ds --latency -s %s %s -- %s 2>&1"):format(CONNECTIONS, seconds,
    q(ROOT .. "/bench/haproxy/wrk_tokens.lua"), q(g.url), q(fx.tokens)))
  local rps = tonumber(output:match("Requests/sec:%s+([%d.]+)"))
  if not rps then
    error("cannot read wrk's output:\n" .. output)
  end
  local non2xx = tonumber(output:match("Non%-2xx or 3xx responses:%s+(%d+)")) or 0
  if non2xx > 0 then
    error(non2xx .. " requests refused during the measurement")
  end
  return rps
end

-- HAProxy's CPU seconds so far (user + system): per request, a figure
-- that moves less than requests/s with the load of a shared machine.
local CLK_TCK = tonumber(capture("getconf CLK_TCK")) or 100
local function cpu_seconds(pid)
  local fields = {}
  for field in read_file("/proc/" .. pid .. "/stat"):match("%) (.*)"):gmatch("%S+") do
    fields[#fields + 1] = field
  end
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
end

local function rate()
  -- The same ENTRIES_RATE entries in a denylist file and in Redis (db 1).
  local file = DIR .. "/rate.denylist"
  local lines = {}
  for i = 1, ENTRIES_RATE do
    lines[i] = ("rate-%08d %d\n"):format(i, fx.now + 7200)
  end
  write_file(file, table.concat(lines))
  run("chmod 600 " .. q(file))
  local dl = redis_denylist(1)
  for i = 1, ENTRIES_RATE do
    assert(dl:add(("rate-%08d"):format(i), fx.now + 7200))
  end
  dl:close()
  local url = ("redis://127.0.0.1:%d/1"):format(redis.port)
  local best, cpu = { redis = 0, file = 0 }, { redis = math.huge, file = math.huge }
  for round = 1, ROUNDS do
    -- Each round in the other order: a machine growing busier or quieter
    -- in the middle of a round hits both sides alike.
    local order = round % 2 == 1 and { "redis", "file" } or { "file", "redis" }
    for _, which in ipairs(order) do
      io.stderr:write(("requests/s: round %d/%d, %s ...\n"):format(round, ROUNDS, which))
      local g = start_gateway("r-" .. which, which == "redis" and url or file)
      local ok, rps, cpu_us = pcall(function()
        assert(status(g, fx.sign("valid-1")) == 200, "a valid token was refused")
        assert(status(g, fx.sign("rate-00000001")) == 403, "a revoked token was let through")
        wrk(g, 1)             -- warm up: fills the cache
        local before = cpu_seconds(g.pid)
        local rps = wrk(g, DURATION)
        return rps, (cpu_seconds(g.pid) - before) * 1e6 / (rps * DURATION)
      end)
      stop(g.pid)
      if not ok then error(rps, 0) end
      best[which] = math.max(best[which], rps)
      cpu[which] = math.min(cpu[which], cpu_us)
    end
  end
  local ratio = best.redis / best.file
  results.r = { redis = best.redis, file = best.file, ratio = ratio, cpu_redis = cpu.redis, cpu_file = cpu.file }
  print(("\n(r) one gateway, wrk -t1 -c%d, %d s, best of %d rounds, %s entries"):format(CONNECTIONS, DURATION,
    ROUNDS, ENTRIES_RATE))
  print(("%-36s %10.0f requests/s"):format("Redis denylist, synced every " .. SYNC_EVERY .. " s", best.redis))
  print(("%-36s %10.0f requests/s"):format("denylist file", best.file))
  print(("%-36s %10.3f (target >= %.2f)  %s"):format("ratio Redis / file", ratio, TARGET_RATIO,
    ratio >= TARGET_RATIO and "PASS" or "MISS"))
  print(("%-36s %10.1f / %.1f us (best round each; file / Redis = %.3f)"):format(
    "HAProxy CPU per request, Redis / file", cpu.redis, cpu.file, cpu.file / cpu.redis))
end

---------------------------------------------------------------------------
-- (m) Redis memory per entry

local function used_memory()
  return assert(tonumber(redis_cli("info memory"):match("used_memory:(%d+)")))
end

local function memory()
  redis_cli("-n 2 flushdb")
  local before = used_memory()
  local dl = redis_denylist(2)
  local t0 = socket.gettime()
  for i = 1, ENTRIES do
    assert(dl:add(("b3f1c2d4-6e5f-4a7b-8c9d-%012d"):format(i), fx.now + 3600 + i))
  end
  local took = socket.gettime() - t0
  dl:close()
  local after = used_memory()
  local per = (after - before) / ENTRIES
  results.m = { per = per, add_rate = ENTRIES / took }
  print(("\n(m) Redis memory for %d entries (36-byte jtis), INFO memory used_memory"):format(ENTRIES))
  print(("%-36s %10.1f bytes per entry (%.1f MB in all)"):format("used_memory after - before", per,
    (after - before) / 1e6))
  for key in capture(CLEAN .. "redis-cli -h 127.0.0.1 -p " .. redis.port .. " --no-auth-warning -a " .. q(PASSWORD)
      .. " -n 2 --scan 2>&1"):gmatch("[^\n]+") do
    local bytes = tonumber(redis_cli("-n 2 memory usage " .. q(key) .. " samples 0"):match("%d+"))
    print(("%-36s %10s bytes  (%s)"):format("  key " .. key, tostring(bytes), redis_cli("-n 2 type " .. q(key))
      :gsub("%s+$", "")))
  end
  print(("%-36s %10.0f adds/s (one :add per entry, blocking)"):format("Redis denylist :add", ENTRIES / took))
end

---------------------------------------------------------------------------
-- (f) the file denylist at 1,000,000 entries: bench/run.lua's own

local function file_denylist()
  print("\n(f) the file denylist at 1,000,000 entries (bench/run.lua, BENCH_ONLY=1M)")
  local raw, floor = BUILD_DIR .. "/bench/raw_openssl", BUILD_DIR .. "/bench/decode_floor"
  local out = capture("BENCH_ONLY=1M BENCH_ROUNDS=3 LUA_PATH=" .. q("lua/?.lua;lua/?/init.lua;bench/?.lua;;")
    .. " LUA_CPATH=" .. q(BUILD_DIR .. "/5.4/?.so;;") .. " lua5.4 bench/run.lua " .. q(raw) .. " " .. q(floor))
  -- Only its section (the other sections print their headings).
  local inside = false
  for line in out:gmatch("[^\n]*") do
    if line:find("^== ") then
      inside = line:find("1,000,000", 1, true) ~= nil
    end
    if inside or line:find("^host:") or line:find("^  denylist 1M ") or line:find("^  add at 1M ") then
      print(line)
    end
  end
end

---------------------------------------------------------------------------

-- The figures of the run in one place, as docs/haproxy.md quotes them.
local function print_summary()
  print("\nsummary")
  local p, r, m = results.p, results.r, results.m
  if p then
    print(("  propagation to all %d gateways: p50 %.0f ms, p99 %.0f ms, max %.0f ms"):format(GATEWAYS, p.p50 * 1e3,
      p.p99 * 1e3, p.max * 1e3))
  end
  if r then
    print(("  requests/s: Redis %.0f, file %.0f, ratio %.3f  %s; CPU per request %.1f / %.1f us"):format(r.redis,
      r.file, r.ratio, r.ratio >= TARGET_RATIO and "PASS" or "MISS", r.cpu_redis, r.cpu_file))
  end
  if m then
    print(("  Redis memory: %.0f bytes per entry; Redis :add %.0f/s"):format(m.per, m.add_rate))
  end
end

local function cleanup()
  for pid in pairs(started) do
    stop(pid)
  end
  if redis.pid then
    os.execute("kill " .. redis.pid .. " 2>/dev/null")
    for _ = 1, 50 do
      if not os.execute("kill -0 " .. redis.pid .. " 2>/dev/null") then break end
      sleep(0.1)
    end
  end
  os.execute("rm -rf " .. q(DIR))
end

local ok, err = pcall(function()
  print(("bench-fleet: %s, HAProxy %s, %s"):format(os.date("!%Y-%m-%d %H:%M UTC"),
    capture("haproxy -v"):match("version (%S+)"), capture(CLEAN .. "redis-server --version"):match("v=(%S+)")))
  print(("load average at the start: %s"):format(read_file("/proc/loadavg"):match("^(%S+ %S+ %S+)")))
  redis_start()
  make_fixtures()
  if ONLY:find("p") then propagation() end
  if ONLY:find("r") then rate() end
  if ONLY:find("m") then memory() end
  if ONLY:find("f") then file_denylist() end
  print_summary()
  print(("\nload average at the end: %s"):format(read_file("/proc/loadavg"):match("^(%S+ %S+ %S+)")))
end)
cleanup()
if not ok then
  io.stderr:write("bench-fleet failed: " .. tostring(err) .. "\n")
  os.exit(1)
end
