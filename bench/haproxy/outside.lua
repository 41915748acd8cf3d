-- `make bench-haproxy EXPERIMENTS=1`: the cost of one call outside HAProxy,
-- in a plain Lua 5.3 with the build HAProxy loads, over the same tokens in
-- the same round-robin order, with the same options.
--
--   lua5.3 outside.lua TOKENS_FILE PUBLIC_PEM ISSUER AUDIENCE [MODE N]
--
-- Prints microseconds of CPU time per call (os.clock), best of 3 runs of
-- about a second each.  With MODE (decode, verify or check) and N: makes
-- N such calls (reading the claims the action reads) and prints nothing,
-- for callgrind.
local tp = require "tokenpolicy"

local tokens_file, pem_file, issuer, audience = arg[1], arg[2], arg[3], arg[4]
local tokens = {}
for line in io.lines(tokens_file) do
  tokens[#tokens + 1] = line
end
local f = assert(io.open(pem_file, "rb"))
local keys = assert(tp.keys(f:read("a")))
f:close()
local opts = { iss = issuer, aud = audience, algs = "RS256" }

local function read_claims(claims)
  return claims.sub, claims.scope, claims.exp, claims.jti
end

if arg[5] then
  local verifier = tp.verifier and tp.verifier({ keys = keys, iss = issuer, aud = audience, algs = "RS256" })
  local calls = {
    decode = function(t) return read_claims(assert(tp.decode(t)).claims) end,
    verify = function(t) return read_claims(assert(tp.verify(t, keys, opts))) end,
    check = function(t) return read_claims(assert(verifier:check(t))) end,
  }
  local call = assert(calls[arg[5]], "unknown mode")
  for i = 1, assert(math.tointeger(tonumber(arg[6])), "N must be an integer") do
    call(tokens[(i - 1) % #tokens + 1])
  end
  return
end

local function per_call(fn)
  local best = math.huge
  for _ = 1, 3 do
    local calls, started = 0, os.clock()
    repeat
      for i = 1, #tokens do
        fn(tokens[i])
      end
      calls = calls + #tokens
    until os.clock() - started >= 1
    best = math.min(best, (os.clock() - started) / calls)
  end
  return best * 1e6
end

local cases = {
  { "tp.decode", function(t) return assert(tp.decode(t)) end },
  { "tp.verify", function(t) return assert(tp.verify(t, keys, opts)) end },
  { "tp.verify, claims read", function(t) return read_claims(assert(tp.verify(t, keys, opts))) end },
}
if tp.verifier then
  local verifier = tp.verifier({ keys = keys, iss = issuer, aud = audience, algs = "RS256" })
  cases[#cases + 1] = { "verifier:check, claims read", function(t) return read_claims(assert(verifier:check(t))) end }
end
for _, case in ipairs(cases) do
  print(string.format("  %-32s %7.1f us/call", case[1], per_call(case[2])))
end

-- The same call with the caches made cold first: `kib` KiB of memory read
-- between two calls (as HAProxy, the kernel's network stack and wrk touch
-- theirs between two requests), only the call timed.
local function cold_call(fn, kib)
  local slots = kib * 1024 // 16
  local memory = {}
  for i = 1, slots do
    memory[i] = i
  end
  local clock = os.clock
  local best = math.huge
  for _ = 1, 3 do
    local spent, overhead = 0, 0
    for i = 1, #tokens do
      local sum = 0
      for j = 1, slots, 4 do         -- one read per 64-byte line
        sum = sum + memory[j]
      end
      local t0 = clock()
      fn(tokens[i])
      local t1 = clock()
      overhead = overhead + (clock() - t1)
      spent = spent + (t1 - t0)
    end
    best = math.min(best, (spent - overhead) / #tokens)
  end
  return best * 1e6
end
for _, kib in ipairs({ 0, 256, 1024, 4096 }) do
  print(string.format("  %-32s %7.1f us/call", string.format("tp.verify, %d KiB read before", kib),
    cold_call(cases[2][2], kib)))
end
collectgarbage("stop")
print(string.format("  %-32s %7.1f us/call", "tp.verify, GC stopped", per_call(cases[2][2])))
