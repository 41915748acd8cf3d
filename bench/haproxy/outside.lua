-- `make bench-haproxy EXPERIMENTS=1`: the cost of one call outside HAProxy,
-- in a plain Lua 5.3 with the build HAProxy loads, over the same tokens in
-- the same round-robin order, with the same options.
--
--   lua5.3 outside.lua TOKENS_FILE PUBLIC_PEM ISSUER AUDIENCE
--
-- Prints microseconds of CPU time per call (os.clock), best of 3 runs of
-- about a second each.
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
  { "tp.verify, claims read", function(t)
    local claims = assert(tp.verify(t, keys, opts))
    return claims.sub, claims.scope, claims.exp, claims.jti
  end },
}
if tp.verifier then
  local verifier = tp.verifier({ keys = keys, iss = issuer, aud = audience, algs = "RS256" })
  cases[#cases + 1] = { "verifier:check, claims read", function(t)
    local claims = assert(verifier:check(t))
    return claims.sub, claims.scope, claims.exp, claims.jti
  end }
end
for _, case in ipairs(cases) do
  print(string.format("  %-32s %7.1f us/call", case[1], per_call(case[2])))
end
collectgarbage("stop")
print(string.format("  %-32s %7.1f us/call", "tp.verify, GC stopped", per_call(cases[2][2])))
