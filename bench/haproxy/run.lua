-- `make bench-haproxy`: tokenpolicy in HAProxy against HAProxy's own
-- jwt_verify and against Lua gateways, measured in one run on one machine.
--
--   lua5.4 bench/haproxy/run.lua [BUILD]        (from the repository root)
--
-- Debian's HAProxy 2.6 (Lua 5.3, so BUILD/5.3 holds the core it loads) on
-- 127.0.0.1 with 1 thread, and wrk with 1 thread and 50 connections sending
-- the same 1,000 distinct valid RS256 tokens round-robin (wrk_tokens.lua).
-- The tokens are signed with tp.sign by a key pair generated into a private
-- temporary directory.  Six configurations, each a haproxy.cfg made from
-- haproxy.cfg.in whose backend is HAProxy itself:
--   (a) no auth; (b) HAProxy's jwt_verify with the PEM key and an exp ACL;
--   (c) tokenpolicy.haproxy with its cache; (d) the same, cache off;
--   (e) a pure-Lua verifier on luaossl + cjson (luaossl_baseline.lua);
--   (f) a Lua action that only reads the header (header_only.lua).
-- Before measuring, each configuration is checked with curl: a valid token
-- passes, and where it verifies, a bad signature and an expired token (and
-- where it checks claims, a wrong audience) are denied.  A broken
-- configuration fails the run; a missed target only prints MISS.
--
-- Environment:
--   DURATION     seconds per measurement (default 10; shorten for trials)
--   ROUNDS       measure every configuration ROUNDS times, interleaved, and
--                keep the best (default 1)
--   ONLY         the configurations to run, e.g. "abef" (default all; the
--                ratios and the chart need all six)
--   CHART        the SVG to write (default docs/haproxy-bench.svg; "" for none)
--   EXPERIMENTS  1: also run the "where the time goes" variants
--                (experiments.lua), the same tokens outside HAProxy
--                (outside.lua), and, with PERF=1 and perf installed, a
--                profile of HAProxy running tp.verify
--   CALLGRIND    1 (valgrind installed): instructions per request by shared
--                object for the configurations run (and, with EXPERIMENTS,
--                the variants and the calls outside HAProxy)
--   CACHESIM     1 (with CALLGRIND): callgrind simulates the caches too (a
--                1 MiB last level, about a core's share here), for last-level
--                misses per request; the Ir summary is then not printed
--   KEEP_CALLGRIND  a directory: keep each configuration's callgrind file
--                (<id>.callgrind) and its request count (<id>.requests)
--
-- HAProxy processes and the temporary directory are removed at the end,
-- also when the run fails.
local tp = require "tokenpolicy"

local BUILD = arg[1] or "build"
local DURATION = math.tointeger(tonumber(os.getenv("DURATION") or "10"))
assert(DURATION and DURATION >= 1, "DURATION must be a whole number of seconds, at least 1")
local ROUNDS = math.tointeger(tonumber(os.getenv("ROUNDS") or "1"))
assert(ROUNDS and ROUNDS >= 1, "ROUNDS must be a positive integer")
local EXPERIMENTS = os.getenv("EXPERIMENTS") == "1"
local PERF = os.getenv("PERF") == "1"
local CALLGRIND = os.getenv("CALLGRIND") == "1"
local ONLY = os.getenv("ONLY")
local CONNECTIONS = 50
local TOKENS = 1000
local ISSUER = "https://auth.example.org/realms/bench"
local AUDIENCE = "https://api.example.org"

---------------------------------------------------------------------------
-- Small helpers

local shell = require "shell"
local q, run, capture = shell.quote, shell.run, shell.capture
local write_file, read_file = shell.write_file, shell.read_file

local function sleep(seconds)
  run("sleep " .. seconds)
end

local ROOT = capture("pwd"):gsub("%s+$", "")
local HERE = ROOT .. "/bench/haproxy"
local CHART = os.getenv("CHART") or (ROOT .. "/docs/haproxy-bench.svg")
local BUILD_DIR = BUILD:sub(1, 1) == "/" and BUILD or (ROOT .. "/" .. BUILD)
local DIR                       -- the private temporary directory
local PORT = 20000 + math.random(0, 9999)

-- Lua paths for HAProxy's Lua 5.3: the library, this directory, and the
-- 5.3 build of the core; ";;" keeps Debian's paths (luaossl, cjson).
local HAPROXY_ENV = table.concat({
  "LUA_PATH_5_3=" .. q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. HERE .. "/?.lua;;"),
  "LUA_CPATH_5_3=" .. q(BUILD_DIR .. "/5.3/?.so;;"),
}, " ")

---------------------------------------------------------------------------
-- Fixtures: a key pair, 1,000 valid tokens, and the tokens the checks deny

local function make_fixtures()
  local f = { private = DIR .. "/private.pem", public = DIR .. "/public.pem", tokens = DIR .. "/tokens.txt" }
  run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " .. q(f.private) .. " 2>/dev/null")
  run("openssl pkey -in " .. q(f.private) .. " -pubout -out " .. q(f.public))
  local keys = assert(tp.keys(read_file(f.private), { kid = "bench-1" }))
  local now = os.time()
  local function sign(claims)
    local base = { iss = ISSUER, aud = AUDIENCE, sub = "user", scope = "read write", iat = now - 60,
      exp = now + 7200, jti = "jti" }
    for k, v in pairs(claims) do
      base[k] = v
    end
    return assert(tp.sign(base, keys, { alg = "RS256" }))
  end
  local lines = {}
  for i = 1, TOKENS do
    lines[i] = sign({ sub = "user-" .. i, jti = string.format("jti-%04d", i) })
  end
  write_file(f.tokens, table.concat(lines, "\n") .. "\n")
  f.valid = lines[1]
  f.expired = sign({ iat = now - 7200, exp = now - 3600 })
  f.wrong_audience = sign({ aud = "https://elsewhere.example.org" })
  -- Flip one signature byte in the middle (the last characters of
  -- base64url may carry padding bits that change nothing).
  local at = #f.valid - 20
  local c = f.valid:sub(at, at)
  f.bad_signature = f.valid:sub(1, at - 1) .. (c == "A" and "B" or "A") .. f.valid:sub(at + 1)
  return f
end

---------------------------------------------------------------------------
-- Configurations

local function lua_action(name)
  return {
    "    http-request lua." .. name,
    "    http-request deny unless { var(txn.tp.ok) -m int 1 }",
  }
end

local function tokenpolicy_loader(fx, cache_size)
  return string.format([[require("tokenpolicy.haproxy").register{
  name = "tokenpolicy-auth", keys_file = %q, iss = %q, aud = %q, algs = { "RS256" }, cache_size = %d,
}
]], fx.public, ISSUER, AUDIENCE, cache_size)
end

-- Each configuration: id, name, `chart` (its label there), `lua` (the text
-- of a lua-load file, if any; `per_thread`: lua-load-per-thread), `rules`,
-- `tune` (more global lines), and what the checks expect:
-- `verifies` (a bad signature and an expired token are denied) and
-- `claims` (a wrong audience is denied too).
local function configurations(fx)
  return {
    { id = "a", name = "no auth", chart = "(a) no auth", rules = {} },
    { id = "b", name = "HAProxy jwt_verify", chart = "(b) HAProxy\\njwt_verify", verifies = true, rules = {
      "    http-request set-var(txn.bearer) http_auth_bearer",
      "    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')",
      "    http-request deny unless { var(txn.alg) -m str RS256 }",
      "    http-request deny unless { var(txn.bearer),jwt_verify(txn.alg," .. string.format("%q", fx.public)
        .. ") -m int 1 }",
      "    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')",
      "    http-request set-var(txn.now) date()",
      "    http-request deny unless { var(txn.exp),sub(txn.now) -m int gt 0 }",
    } },
    { id = "c", name = "tokenpolicy, cache", chart = "(c) tokenpolicy\\ncache", verifies = true, claims = true,
      lua = tokenpolicy_loader(fx, 2 * TOKENS), rules = lua_action("tokenpolicy-auth") },
    { id = "d", name = "tokenpolicy, no cache", chart = "(d) tokenpolicy\\nno cache", verifies = true,
      claims = true,
      lua = tokenpolicy_loader(fx, 0), rules = lua_action("tokenpolicy-auth") },
    { id = "e", name = "Lua luaossl+cjson", chart = "(e) Lua on\\nluaossl+cjson", verifies = true, claims = true,
      lua = string.format('require("luaossl_baseline").register{ name = "luaossl-auth", key_file = %q, '
        .. 'iss = %q, aud = %q }\n', fx.public, ISSUER, AUDIENCE),
      rules = lua_action("luaossl-auth") },
    { id = "f", name = "Lua header only", chart = "(f) Lua, header\\nread only",
      lua = 'require("header_only").register{ name = "header-only" }\n', rules = lua_action("header-only") },
  }
end

-- The "where the time goes" variants (EXPERIMENTS=1): experiments.lua's
-- action in several modes and GC settings, and HAProxy's tune.lua knobs.
local function experiments(fx)
  local function x(id, name, opts, tune, per_thread)
    local fields = { string.format("name = %q, keys_file = %q, iss = %q, aud = %q", "x-auth", fx.public,
      ISSUER, AUDIENCE) }
    for _, k in ipairs({ "mode", "pause", "stepmul", "collect_every", "key_per_request", "bearer_pattern" }) do
      if opts[k] ~= nil then
        fields[#fields + 1] = string.format("%s = %q", k, opts[k])
      end
    end
    return { id = id, name = name, verifies = opts.mode ~= "header" and opts.mode ~= "decode", tune = tune,
      lua = 'require("experiments").register{ ' .. table.concat(fields, ", ") .. ' }\n',
      rules = lua_action("x-auth"), stats = true, per_thread = per_thread }
  end
  local list = {
    x("x1", "header only", { mode = "header" }),
    x("x2", "header, GC stopped", { mode = "header", collect_every = 100000 }),
    x("x3", "tp.decode", { mode = "decode" }),
    x("x4", "tp.verify", { mode = "verify" }),
    x("x5", "tp.verify, no set_var", { mode = "verify_novars" }),
    x("x6", "tp.verify, GC stopped", { mode = "verify", collect_every = 100000 }),
    x("x7", "tp.verify, setpause 400", { mode = "verify", pause = 400 }),
    x("x8", "tp.verify, setstepmul 1000", { mode = "verify", stepmul = 1000 }),
    x("x9", "tp.verify, forced-yield 10^6", { mode = "verify" }, { "    tune.lua.forced-yield 1000000" }),
    x("x10", "tp.verify, maxmem 256", { mode = "verify" }, { "    tune.lua.maxmem 256" }),
    x("x11", "verifier:check", { mode = "check" }),
    x("x12", "luaossl, key per request", { mode = "luaossl", key_per_request = true }),
    x("x13", "header only, per-thread state", { mode = "header" }, nil, true),
    x("x14", "header only, bearer by pattern", { mode = "header", bearer_pattern = true }),
  }
  if not tp.verifier then           -- the prepared verifier is not there yet
    table.remove(list, 11)
  end
  return list
end

---------------------------------------------------------------------------
-- HAProxy

local started = {}              -- pids of the HAProxy processes we started

local function stop(pid, seconds)
  os.execute("kill " .. pid .. " 2>/dev/null")
  for _ = 1, (seconds or 5) * 10 do
    if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then
      started[pid] = nil
      return
    end
    sleep(0.1)
  end
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
  started[pid] = nil
end

local function write_config(cfg)
  local global = {}
  if cfg.lua then
    local loader = DIR .. "/" .. cfg.id .. ".lua"
    write_file(loader, cfg.lua)
    global[#global + 1] = (cfg.per_thread and "    lua-load-per-thread " or "    lua-load ") .. loader
  end
  for _, line in ipairs(cfg.tune or {}) do
    global[#global + 1] = line
  end
  local rules = {}
  for _, line in ipairs(cfg.rules) do
    rules[#rules + 1] = line
  end
  if cfg.stats then
    table.insert(rules, 1, "    http-request use-service lua.x-stats if { path /stats }")
  end
  local text = read_file(HERE .. "/haproxy.cfg.in")
  text = text:gsub("@PORT@", tostring(PORT))
    :gsub("@GLOBAL@", function() return table.concat(global, "\n") end)
    :gsub("@RULES@", function() return table.concat(rules, "\n") end)
  local path = DIR .. "/" .. cfg.id .. ".cfg"
  write_file(path, text)
  return path
end

local function curl(token, path)
  local header = token and ("-H " .. q("Authorization: Bearer " .. token) .. " ") or ""
  local pipe = assert(io.popen("curl -s -o /dev/null -w '%{http_code}' --max-time 5 " .. header
    .. q("http://127.0.0.1:" .. PORT .. (path or "/")) .. " 2>/dev/null"))
  local status = pipe:read("a")
  pipe:close()
  return status
end

local function fetch(path)
  return capture("curl -s --max-time 5 " .. q("http://127.0.0.1:" .. PORT .. path))
end

local function wait_ready(cfg, pid, seconds)
  for _ = 1, seconds * 10 do
    if curl(nil) ~= "000" then
      return pid
    end
    sleep(0.1)
  end
  error("HAProxy did not answer for configuration " .. cfg.id)
end

local function start(cfg)
  local path = write_config(cfg)
  local pidfile = DIR .. "/" .. cfg.id .. ".pid"
  run(HAPROXY_ENV .. " haproxy -D -p " .. q(pidfile) .. " -f " .. q(path))
  local pid = read_file(pidfile):match("%d+")
  started[pid] = true
  return wait_ready(cfg, pid, 5)
end

-- A configuration passes valid tokens and denies what it claims to check.
local function check(cfg, fx)
  local expect = { { "a valid token", fx.valid, "200" } }
  if cfg.verifies then
    expect[#expect + 1] = { "a bad signature", fx.bad_signature, "403" }
    expect[#expect + 1] = { "an expired token", fx.expired, "403" }
  end
  if cfg.claims then
    expect[#expect + 1] = { "a wrong audience", fx.wrong_audience, "403" }
  end
  for _, e in ipairs(expect) do
    local status = curl(e[2])
    if status ~= e[3] then
      error(string.format("configuration (%s) %s: %s gave HTTP %s, expected %s", cfg.id, cfg.name, e[1],
        status, e[3]))
    end
  end
end

---------------------------------------------------------------------------
-- wrk

local UNIT_MS = { us = 0.001, ms = 1, s = 1000 }

local function latency_ms(output, percent)
  local value, unit = output:match("\n%s+" .. percent .. "%%%s+([%d.]+)(%a+)")
  return value and tonumber(value) * UNIT_MS[unit] or nil
end

-- CPU seconds (user + system) a process has used so far.
local CLK_TCK = tonumber(capture("getconf CLK_TCK")) or 100

local function cpu_seconds(pid)   -- user + system, and system alone
  local stat = read_file("/proc/" .. pid .. "/stat")
  -- Fields after the command name, which is in parentheses: utime is the
  -- 12th of them, stime the 13th.
  local rest = stat:match("%) (.*)")
  local fields = {}
  for field in rest:gmatch("%S+") do
    fields[#fields + 1] = field
  end
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK, tonumber(fields[13]) / CLK_TCK
end

local function wrk(fx, seconds, connections)
  local output = capture(string.format("wrk -t1 -c%d -d%ds --latency -s %s %s -- %s 2>&1",
    connections or CONNECTIONS, seconds, q(HERE .. "/wrk_tokens.lua"), q("http://127.0.0.1:" .. PORT .. "/"),
    q(fx.tokens)))
  local rps = tonumber(output:match("Requests/sec:%s+([%d.]+)"))
  if not rps then
    error("cannot read wrk's output:\n" .. output)
  end
  return {
    rps = rps,
    requests = tonumber(output:match("(%d+) requests in")),
    p50 = latency_ms(output, 50),
    p99 = latency_ms(output, 99),
    non2xx = tonumber(output:match("Non%-2xx or 3xx responses:%s+(%d+)")) or 0,
    errors = output:match("Socket errors:[^\n]*"),
  }
end

-- One measurement of one configuration: start, check, warm up (fills a
-- cache, settles the allocator), measure, stop.
local function measure(cfg, fx, hook)
  local pid = start(cfg)
  local ok, result = pcall(function()
    check(cfg, fx)
    wrk(fx, 1)
    if cfg.stats then
      fetch("/stats?reset")
    end
    local stop_hook = hook and hook(pid)
    local cpu, sys = cpu_seconds(pid)
    local r = wrk(fx, DURATION)
    local cpu_end, sys_end = cpu_seconds(pid)
    r.cpu_us = (cpu_end - cpu) * 1e6 / r.requests
    r.sys_us = (sys_end - sys) * 1e6 / r.requests
    if stop_hook then
      stop_hook()
    end
    if cfg.stats then
      r.stats = fetch("/stats")
    end
    return r
  end)
  stop(pid)
  if not ok then
    error(result, 0)
  end
  return result
end

local function measure_all(list, fx)
  local best = {}
  for round = 1, ROUNDS do
    for _, cfg in ipairs(list) do
      io.stderr:write(string.format("round %d/%d: (%s) %s ...\n", round, ROUNDS, cfg.id, cfg.name))
      local r = measure(cfg, fx)
      if not best[cfg.id] or r.rps > best[cfg.id].rps then
        best[cfg.id] = r
      end
    end
  end
  return best
end

---------------------------------------------------------------------------
-- Report

local function describe_problems(r)
  local notes = {}
  if r.non2xx > 0 then
    notes[#notes + 1] = r.non2xx .. " non-2xx"
  end
  if r.errors then
    notes[#notes + 1] = r.errors
  end
  return table.concat(notes, "; ")
end

local function print_table(list, results, title)
  print(title)
  print("(us/req = 1e6 / req/s; cpu us = HAProxy's CPU time per request, user + system; sys us = system alone)")
  print(string.format("%-5s %-30s %8s %8s %8s %8s %8s %8s  %s", "", "configuration", "req/s", "us/req", "cpu us",
    "sys us", "p50 ms", "p99 ms", ""))
  for _, cfg in ipairs(list) do
    local r = results[cfg.id]
    print(string.format("%-5s %-30s %8.0f %8.1f %8.1f %8.1f %8.2f %8.2f  %s", "(" .. cfg.id .. ")", cfg.name,
      r.rps, 1e6 / r.rps, r.cpu_us, r.sys_us, r.p50 or 0 / 0, r.p99 or 0 / 0, describe_problems(r)))
  end
end

local TARGETS = {
  { "c", "b", 1.5 }, { "d", "b", 1.0 }, { "c", "f", 0.8 }, { "d", "e", 2.0 },
}

local function print_ratios(results)
  print("")
  print(string.format("%-6s %8s %8s", "ratio", "measured", "target"))
  for _, t in ipairs(TARGETS) do
    local ratio = results[t[1]].rps / results[t[2]].rps
    print(string.format("%-6s %8.2f %7.2fx  %s", t[1] .. "/" .. t[2], ratio, t[3], ratio >= t[3] and "ok" or "MISS"))
  end
end

local function chart(list, results, fx)
  if CHART == "" then
    return
  end
  if not os.execute("command -v gnuplot >/dev/null 2>&1") then
    io.stderr:write("gnuplot not found: no chart\n")
    return
  end
  local data = {}
  for i, cfg in ipairs(list) do
    local r = results[cfg.id]
    data[#data + 1] = string.format('%d "%s" %.0f %.3f %.3f', i - 1, cfg.chart, r.rps, r.p50 or 0,
      r.p99 or 0)
  end
  local datafile = DIR .. "/chart.dat"
  write_file(datafile, table.concat(data, "\n") .. "\n")
  local title = string.format("HAProxy %s, 1 thread; wrk 1 thread, %d connections, %d s; %d RS256 tokens; %s",
    fx.haproxy_version, CONNECTIONS, DURATION, TOKENS, os.date("!%Y-%m-%d %H:%M UTC"))
  local script = DIR .. "/chart.gp"
  write_file(script, string.format([[
set terminal svg size 960,720 font "sans,12" background rgb "white"
set output %q
set multiplot layout 2,1 title %q
set style fill solid 0.85 border -1
set boxwidth 0.6
set termoption noenhanced
set lmargin 12
set bmargin 4
set grid ytics
set xrange [-0.6:%g]
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set xtics scale 0 font "sans,11"
set ylabel "requests/s (higher is better)"
plot %q using 1:3:xtic(2) with boxes lc rgb "#3b75af" notitle, \
     "" using 1:3:(sprintf("%%.0f", $3)) with labels offset 0,0.8 notitle
set ylabel "p99 latency, ms (lower is better)"
plot %q using 1:5:xtic(2) with boxes lc rgb "#d9822b" notitle, \
     "" using 1:5:(sprintf("%%.1f", $5)) with labels offset 0,0.8 notitle
unset multiplot
]], CHART, title, #list - 0.4, datafile, datafile))
  run("gnuplot " .. q(script))
  print("\nchart: " .. CHART)
end

-- tp.verify over the same tokens in a plain Lua 5.3, outside HAProxy.
local function outside(fx)
  return capture(string.format("LUA_PATH=%s LUA_CPATH=%s lua5.3 %s %s %s %s %s",
    q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"), q(BUILD_DIR .. "/5.3/?.so;;"),
    q(HERE .. "/outside.lua"), q(fx.tokens), q(fx.public), q(ISSUER), q(AUDIENCE)))
end

-- A perf profile of HAProxy while wrk drives configuration cfg.
local function profile(cfg, fx)
  if not os.execute("command -v perf >/dev/null 2>&1") then
    return "perf not found"
  end
  local data = DIR .. "/perf.data"
  measure(cfg, fx, function(pid)
    run(string.format("perf record -q -F 999 -p %s -o %s -- sleep %d >/dev/null 2>&1 &", pid, q(data),
      math.max(1, DURATION - 2)))
    return function() sleep(1) end
  end)
  return capture(string.format("perf report -i %s --stdio --no-children --sort dso -g none 2>/dev/null "
    .. "| grep -v '^#' | grep -v '^$' | head -12", q(data)))
    .. capture(string.format("perf report -i %s --stdio --no-children --sort dso,symbol -g none 2>/dev/null "
    .. "| grep -v '^#' | grep -v '^$' | head -30", q(data)))
end

-- Instructions (callgrind's Ir) per request, by shared object, from
-- `callgrind_annotate` output: deterministic, so unlike times they do not
-- move with the load of a shared machine.
local function ir_by_object(out, requests)
  local text = capture("callgrind_annotate --inclusive=no --threshold=100 " .. q(out) .. " 2>/dev/null")
  local by, order = {}, {}
  for ir, object in text:gmatch("\n%s*([%d,]+) %([^)]*%)%s+%S+ %[([^%]]+)%]") do
    object = object:match("[^/]+$")
    if not by[object] then
      order[#order + 1] = object
      by[object] = 0
    end
    by[object] = by[object] + tonumber((ir:gsub(",", "")))
  end
  local total = 0
  for _, object in ipairs(order) do
    total = total + by[object]
  end
  table.sort(order, function(a, b) return by[a] > by[b] end)
  local parts = {}
  for _, object in ipairs(order) do
    if by[object] / requests >= 500 then
      parts[#parts + 1] = string.format("%s %.0fk", object:gsub("%.so[.%d]*$", ""), by[object] / requests / 1000)
    end
  end
  return string.format("%5.0fk Ir/request: %s", total / requests / 1000, table.concat(parts, ", "))
end

-- HAProxy under callgrind with configuration cfg: 10 connections for
-- DURATION seconds after a warm-up, instrumented only while measured.
local function callgrind_haproxy(cfg, fx)
  local path = write_config(cfg)
  local out = DIR .. "/" .. cfg.id .. ".callgrind"
  local cache_sim = os.getenv("CACHESIM") == "1" and "--cache-sim=yes --LL=1048576,16,64 " or ""
  local pid = capture(HAPROXY_ENV .. " valgrind --tool=callgrind " .. cache_sim
    .. "--instr-atstart=no --callgrind-out-file="
    .. q(out) .. " haproxy -db -f " .. q(path) .. " >" .. q(DIR .. "/valgrind.log") .. " 2>&1 & echo $!")
    :match("%d+")
  started[pid] = true
  wait_ready(cfg, pid, 60)
  check(cfg, fx)
  wrk(fx, 2, 10)
  run("callgrind_control -i on " .. pid .. " >/dev/null 2>&1")
  local requests = wrk(fx, DURATION, 10).requests
  run("callgrind_control -i off " .. pid .. " >/dev/null 2>&1")
  stop(pid, 60)
  local keep = os.getenv("KEEP_CALLGRIND")
  if keep then
    write_file(keep .. "/" .. cfg.id .. ".requests", tostring(requests))
    run("cp " .. q(out) .. " " .. q(keep .. "/" .. cfg.id .. ".callgrind"))
  end
  return ir_by_object(out, requests)
end

-- The same calls in a plain lua5.3 under callgrind: N and 2N calls, so
-- that the difference is the cost of N calls without the start-up.
local function callgrind_outside(fx, mode)
  local outs = {}
  for _, n in ipairs({ 1000, 2000 }) do
    outs[n] = string.format("%s/outside-%s-%d.callgrind", DIR, mode, n)
    run(string.format("LUA_PATH=%s LUA_CPATH=%s valgrind --tool=callgrind --callgrind-out-file=%s lua5.3 %s %s %s %s "
      .. "%s %s %d >/dev/null 2>&1",
      q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"), q(BUILD_DIR .. "/5.3/?.so;;"),
      q(outs[n]), q(HERE .. "/outside.lua"), q(fx.tokens), q(fx.public), q(ISSUER), q(AUDIENCE), mode, n))
  end
  local function totals(out)
    local text = capture("callgrind_annotate --inclusive=no --threshold=100 " .. q(out) .. " 2>/dev/null")
    local by = {}
    for ir, object in text:gmatch("\n%s*([%d,]+) %([^)]*%)%s+%S+ %[([^%]]+)%]") do
      object = object:match("[^/]+$"):gsub("%.so[.%d]*$", "")
      by[object] = (by[object] or 0) + tonumber((ir:gsub(",", "")))
    end
    return by
  end
  local one, two = totals(outs[1000]), totals(outs[2000])
  local parts, total = {}, 0
  local names = {}
  for object in pairs(two) do
    names[#names + 1] = object
  end
  table.sort(names, function(a, b) return two[a] - (one[a] or 0) > two[b] - (one[b] or 0) end)
  for _, object in ipairs(names) do
    local per = (two[object] - (one[object] or 0)) / 1000
    total = total + per
    if per >= 500 then
      parts[#parts + 1] = string.format("%s %.0fk", object, per / 1000)
    end
  end
  return string.format("%5.0fk Ir/call: %s", total / 1000, table.concat(parts, ", "))
end

---------------------------------------------------------------------------

local function main()
  local fx = make_fixtures()
  fx.haproxy_version = capture("haproxy -v"):match("version (%d+%.%d+%.%d+)") or "?"
  print(string.format("HAProxy %s, nbthread 1; wrk -t1 -c%d -d%ds; %d RS256 tokens; %d round(s); %s",
    fx.haproxy_version, CONNECTIONS, DURATION, TOKENS, ROUNDS, os.date("!%Y-%m-%d %H:%M UTC")))
  print(string.format("load average at start: %s", capture("cut -d' ' -f1-3 /proc/loadavg"):gsub("%s+$", "")))
  local list = {}
  for _, cfg in ipairs(configurations(fx)) do
    if not ONLY or ONLY:find(cfg.id, 1, true) then
      list[#list + 1] = cfg
    end
  end
  local results = measure_all(list, fx)
  print("")
  print_table(list, results, "Configurations")
  if #list == 6 then
    print_ratios(results)
    chart(list, results, fx)
  end
  local xs = {}
  if EXPERIMENTS then
    xs = experiments(fx)
    local xr = measure_all(xs, fx)
    print("")
    print_table(xs, xr, "Where the time goes (variants of one Lua action)")
    for _, cfg in ipairs(xs) do
      if xr[cfg.id].stats and xr[cfg.id].stats ~= "" then
        print(string.format("(%s) %s", cfg.id, xr[cfg.id].stats:gsub("%s+$", "")))
      end
    end
    print("")
    print("Outside HAProxy (lua5.3, same tokens, same options):")
    io.write(outside(fx))
  end
  -- The configurations measured (ONLY), and the variants with EXPERIMENTS.
  if CALLGRIND then
    print("")
    print("Instructions per request under callgrind (user space only; HAProxy at 10 connections):")
    local all = {}
    for _, cfg in ipairs(list) do
      all[cfg.id] = cfg
    end
    for _, cfg in ipairs(xs) do
      all[cfg.id] = cfg
    end
    for _, id in ipairs({ "a", "b", "c", "d", "e", "f", "x1", "x2", "x3", "x4", "x6", "x7", "x11", "x14" }) do
      if all[id] then
        print(string.format("  %-5s %-26s %s", "(" .. id .. ")", all[id].name, callgrind_haproxy(all[id], fx)))
      end
    end
    if EXPERIMENTS then
      print("  outside HAProxy, lua5.3:")
      for _, mode in ipairs({ "decode", "verify", tp.verifier and "check" or nil }) do
        print(string.format("       %-24s %s", mode, callgrind_outside(fx, mode)))
      end
    end
  end
  if PERF and EXPERIMENTS then
    print("")
    print("perf profile of HAProxy running (x4) tp.verify (self time, >= 1%):")
    io.write(profile(xs[4], fx))
  end
  print(string.format("\nload average at end: %s", capture("cut -d' ' -f1-3 /proc/loadavg"):gsub("%s+$", "")))
end

local function cleanup()
  for pid in pairs(started) do
    stop(pid)
  end
  if DIR then
    os.execute("rm -rf " .. q(DIR))
  end
end

DIR = capture("mktemp -d /tmp/tokenpolicy-bench-haproxy.XXXXXX"):gsub("%s+$", "")
local ok, err = xpcall(main, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("bench-haproxy failed: ", tostring(err), "\n")
  os.exit(1)
end
