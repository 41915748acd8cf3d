-- `make bench`: tokenpolicy's rates, each next to a baseline measured in the
-- same run on the same machine, so the ratios stay meaningful on any host.
--
--   lua5.4 bench/run.lua PATH/TO/raw_openssl PATH/TO/decode_floor
--
-- Environment: BENCH_ROUNDS (default 5) and BENCH_SECONDS (default 1, the
-- length of one measurement in whole seconds) trade run time for stability.
-- BENCH_ONLY (a Lua pattern) runs only the benchmarks whose name matches it
-- (and skips the command line one unless it matches "cli status").
--
-- Every benchmark runs ROUNDS rounds; a round measures the baseline and then
-- ours, so slow phases of a shared machine (a 2-core CI runner, say) hit
-- both sides alike, and the best of the rounds is kept for each: the best
-- rate is the least disturbed one.  A benchmark reports, it does not test:
-- a missed target prints MISS and the exit status is still 0.  Only a
-- broken fixture (a token that does not verify) fails the run.
--
-- To add a benchmark, append a section to `sections` below: its `prepare`
-- gets the shared fixtures (keys, tokens, and `dir`, a private temporary
-- directory removed at exit) and returns a list of benchmarks, each
--   { name =, fn =, args = {...},          -- fn(table.unpack(args)) is one op
--     check = function() end,              -- optional: asserts fn works
--     baseline = function(seconds) end,    -- optional: returns {{name=, rate=, label=}, ...}
--     target = { min_ratio = } or { min_rate = } }   -- optional

local tp = require "tokenpolicy"

local RAW_OPENSSL, DECODE_FLOOR = arg[1], arg[2]
if not RAW_OPENSSL or not DECODE_FLOOR then
  io.stderr:write("usage: lua5.4 bench/run.lua PATH/TO/raw_openssl PATH/TO/decode_floor\n")
  os.exit(2)
end
local ROUNDS = math.tointeger(tonumber(os.getenv("BENCH_ROUNDS") or "")) or 5
local SECONDS = math.tointeger(tonumber(os.getenv("BENCH_SECONDS") or "")) or 1
assert(ROUNDS >= 1 and SECONDS >= 1, "BENCH_ROUNDS and BENCH_SECONDS must be positive integers")
local ONLY = os.getenv("BENCH_ONLY")

-- A fixed clock inside the tokens' lifetime: verify takes `now`, so the
-- tokens never expire however long ago they were signed.
local NOW = 1767225600          -- 2026-01-01 00:00:00 UTC
local ISSUER = "https://auth.example.org/realms/wlcg"
local AUDIENCE = "https://storage.example.org"

---------------------------------------------------------------------------
-- Small helpers

local shell = require "shell"
local shell_quote, run, capture = shell.quote, shell.run, shell.capture
local write_file, read_file = shell.write_file, shell.read_file

local function thousands(x)
  local digits = string.format("%.0f", x)
  local grouped = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (grouped:gsub("^,", ""))
end

---------------------------------------------------------------------------
-- Measuring

-- Calls fn(...) for `seconds` whole seconds of wall-clock time and returns
-- calls per second and the share of a CPU the calls got.
--
-- Wall time, like raw_openssl's CLOCK_MONOTONIC, so that time another
-- process takes from us counts against both sides alike (os.clock, the CPU
-- time, would hide it and flatter us).  Plain Lua's only wall clock is
-- os.time() in whole seconds, so the count starts the moment the second
-- turns and stops the moment it has turned `seconds` more times.  The clock
-- is read once per batch of calls lasting about BATCH_SECONDS, which bounds
-- both the error at each end and the cost of reading it.
local BATCH_SECONDS = 20e-6

local function measure(seconds, fn, ...)
  -- Calibrate the batch on the CPU clock; these calls double as warm-up.
  local calls, batch, started = 0, 1, os.clock()
  local elapsed = 0
  while elapsed < 0.01 do
    for _ = 1, batch do fn(...) end
    calls = calls + batch
    batch = batch * 2
    elapsed = os.clock() - started
  end
  batch = math.max(1, math.floor(calls / elapsed * BATCH_SECONDS))

  local previous = os.time()
  local first
  repeat                        -- still warming up while the second turns
    for _ = 1, batch do fn(...) end
    first = os.time()
  until first ~= previous
  local stop, ops, cpu_started = first + seconds, 0, os.clock()
  repeat
    for _ = 1, batch do fn(...) end
    ops = ops + batch
  until os.time() >= stop
  -- The share of a CPU we got: well under 1 means other processes took
  -- our core, and absolute rates are then low (ratios much less so).
  local cpu_share = (os.clock() - cpu_started) / seconds
  return ops / seconds, cpu_share
end

local function run_benchmark(b)
  local args = b.args or {}
  local best_ours, cpu_share = 0, nil
  local baselines = {}          -- name -> best {name=, rate=, label=}
  local baseline_order = {}
  if b.check then b.check() end
  for _ = 1, ROUNDS do
    if b.baseline then
      for _, r in ipairs(b.baseline(SECONDS)) do
        if not baselines[r.name] then table.insert(baseline_order, r.name) end
        if not baselines[r.name] or r.rate > baselines[r.name].rate then baselines[r.name] = r end
      end
    end
    collectgarbage()            -- each round starts from the same heap state
    local rate, share = measure(SECONDS, b.fn, table.unpack(args))
    if rate > best_ours then best_ours, cpu_share = rate, share end
  end
  -- The inputs never change, so a call that works before and after the
  -- rounds also worked in them: the rates are of the success path.
  if b.check then b.check() end

  local result = { name = b.name, ours = best_ours, cpu_share = cpu_share, target = b.target, baselines = {} }
  for _, name in ipairs(baseline_order) do
    local r = baselines[name]
    table.insert(result.baselines, r)
    if not result.best_baseline or r.rate > result.best_baseline.rate then result.best_baseline = r end
  end
  if result.best_baseline then result.ratio = best_ours / result.best_baseline.rate end
  if b.target and b.target.against then
    local reference = assert(baselines[b.target.against], "no baseline named " .. b.target.against)
    result.reference, result.reference_ratio = reference, best_ours / reference.rate
  end
  return result
end

---------------------------------------------------------------------------
-- Fixtures: keys made with the openssl CLI, and one access token per alg

-- A realistic WLCG-style access token: about 400 bytes of claims JSON.
local function access_token_claims()
  return {
    iss = ISSUER,
    sub = "8f7d3c1e-5b2a-4c9d-9e1f-2a3b4c5d6e7f",
    aud = AUDIENCE,
    iat = NOW - 60,
    nbf = NOW - 60,
    exp = NOW + 1140,
    jti = "b3f1c2d4-6e5f-4a7b-8c9d-0e1f2a3b4c5d",
    client_id = "rucio-prod-client",
    scope = "openid offline_access storage.read:/ storage.modify:/home/alice",
    ["wlcg.ver"] = "1.0",
    ["wlcg.groups"] = { "/atlas", "/atlas/production" },
  }
end

local function make_fixtures(dir)
  local fixtures = { dir = dir, algs = {} }
  local claims = access_token_claims()
  fixtures.claims_json_bytes = #tp.json_encode(claims)

  local function asymmetric(alg, genpkey_args)
    local private_pem, public_pem = dir .. "/" .. alg .. ".key", dir .. "/" .. alg .. ".pub"
    run("openssl genpkey " .. genpkey_args .. " -out " .. shell_quote(private_pem) .. " 2>/dev/null")
    run("openssl pkey -in " .. shell_quote(private_pem) .. " -pubout -out " .. shell_quote(public_pem))
    local kid = "bench-" .. alg:lower()
    local signer = assert(tp.keys(read_file(private_pem), { kid = kid }))
    -- Verifiers hold the public key only, as from a JWKS.
    local verifier = assert(tp.keys(read_file(public_pem), { kid = kid }))
    return { signer = signer, verifier = verifier, kid = kid, key_file = public_pem,
             verify_opts = { now = NOW, iss = ISSUER, aud = AUDIENCE } }
  end

  fixtures.algs.RS256 = asymmetric("RS256", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048")
  fixtures.algs.ES256 = asymmetric("ES256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256")
  do
    local secret_file = dir .. "/HS256.secret"
    run("openssl rand -out " .. shell_quote(secret_file) .. " 32")
    local jwk = tp.json_encode { kty = "oct", k = tp.b64url_encode(read_file(secret_file)) }
    local keyset = assert(tp.keys(jwk, { kid = "bench-hs256" }))
    fixtures.algs.HS256 = { signer = keyset, verifier = keyset, kid = "bench-hs256", key_file = secret_file,
                            -- HMAC is not in the default allow-list.
                            verify_opts = { now = NOW, iss = ISSUER, aud = AUDIENCE, algs = { "HS256" } } }
  end

  for alg, f in pairs(fixtures.algs) do
    f.token = assert(tp.sign(claims, f.signer, { alg = alg, kid = f.kid }))
    local jwt = assert(tp.decode(f.token))
    f.signing_input_file = dir .. "/" .. alg .. ".signing_input"
    f.signature_file = dir .. "/" .. alg .. ".signature"
    f.token_file = dir .. "/" .. alg .. ".token"
    write_file(f.token_file, f.token)
    write_file(f.signing_input_file, jwt.signing_input)
    write_file(f.signature_file, jwt.signature)
  end
  return fixtures
end

---------------------------------------------------------------------------
-- Baselines

-- raw_openssl verifying the same signing input and signature with the same
-- key; it prints "NAME OPS_PER_SECOND LABEL" per baseline.
local function raw_openssl_baseline(alg, f)
  return function(seconds)
    local output = capture(table.concat({
      shell_quote(RAW_OPENSSL), alg, shell_quote(f.key_file), shell_quote(f.signing_input_file),
      shell_quote(f.signature_file), tostring(seconds) }, " "))
    local rates = {}
    for name, rate, label in output:gmatch("(%S+) (%S+) ([^\n]*)\n") do
      table.insert(rates, { name = name, rate = assert(tonumber(rate)), label = label })
    end
    assert(#rates > 0, "raw_openssl printed no rates")
    return rates
  end
end

---------------------------------------------------------------------------
-- Sections

local function verify_benchmark(fixtures, alg, target)
  local f = fixtures.algs[alg]
  return {
    name = "verify " .. alg,
    fn = tp.verify,
    args = { f.token, f.verifier, f.verify_opts },
    check = function()
      local claims, err = tp.verify(f.token, f.verifier, f.verify_opts)
      assert(claims, err)
      assert(claims.jti == "b3f1c2d4-6e5f-4a7b-8c9d-0e1f2a3b4c5d", "verify returned the wrong claims")
    end,
    baseline = raw_openssl_baseline(alg, f),
    target = target,
  }
end

-- What decoding and parsing a token cost alone (bench/decode_floor.c):
-- nanoseconds of base64url and of JSON, the best of ROUNDS runs (as the
-- rates are), once per alg.
local floors = {}
local function decode_floor(f)
  if not floors[f] then
    local best = { base64url = math.huge, json = math.huge }
    for _ = 1, ROUNDS do
      local output = capture(shell_quote(DECODE_FLOOR) .. " " .. shell_quote(f.token_file) .. " " .. SECONDS)
      best.base64url = math.min(best.base64url, assert(tonumber(output:match("base64url (%S+)"))))
      best.json = math.min(best.json, assert(tonumber(output:match("json (%S+)"))))
    end
    floors[f] = best
  end
  return floors[f]
end

-- The best ratio to the reference baseline that any verifier which
-- decodes and parses the token could reach here: the baseline's time per
-- operation plus the floor's.
local function print_ceiling(f)
  return function(r)
    local floor = decode_floor(f)
    local ns = floor.base64url + floor.json
    r.ceiling = 1 / (1 + r.reference.rate * ns * 1e-9)
    print(string.format("  %-14s floor: base64url %.0f ns + JSON %.0f ns a token; with these alone a verifier "
      .. "reaches at best %.3f", "", floor.base64url, floor.json, r.ceiling))
  end
end

-- v:check on a verifier prepared with the same options as verify's rows.
local function check_benchmark(fixtures, alg, target, cache)
  local f = fixtures.algs[alg]
  local v = tp.verifier { keys = f.verifier, iss = f.verify_opts.iss, aud = f.verify_opts.aud,
                          algs = f.verify_opts.algs, cache = cache }
  return {
    name = "check " .. alg .. (cache and " cached" or ""),
    fn = v.check,
    args = { v, f.token, NOW },
    check = function()
      local claims, err = v:check(f.token, NOW)
      assert(claims, err)
      assert(claims.jti == "b3f1c2d4-6e5f-4a7b-8c9d-0e1f2a3b4c5d", "check returned the wrong claims")
    end,
    baseline = raw_openssl_baseline(alg, f),
    target = target,
    after = target and print_ceiling(f),
  }
end

local sections = {
  {
    title = "JWT verify: tp.verify{now, iss, aud} against raw OpenSSL on the same key, "
      .. "signing input and signature",
    prepare = function(fixtures)
      return {
        -- The targets are ratios to the harness the issue describes (EVP
        -- called directly on the signing input: EVP_DigestVerify); the ratio
        -- to the fastest raw path, a prepared context, is printed beside.
        verify_benchmark(fixtures, "RS256", { min_ratio = 0.85, against = "evp_digestverify" }),
        verify_benchmark(fixtures, "ES256", { min_ratio = 0.90, against = "evp_digestverify" }),
        verify_benchmark(fixtures, "HS256", nil),
      }
    end,
  },
  {
    title = "Prepared verifier: v:check(token, now) (iss, aud; no cache) against raw OpenSSL",
    prepare = function(fixtures)
      return {
        -- Against the fastest raw paths: a prepared EVP_PKEY_CTX, a keyed
        -- EVP_MAC_CTX.
        check_benchmark(fixtures, "RS256", { min_ratio = 0.95, against = "evp_pkey_verify" }),
        check_benchmark(fixtures, "ES256", { min_ratio = 0.97, against = "evp_pkey_verify" }),
        check_benchmark(fixtures, "HS256", { min_ratio = 0.5, against = "evp_mac_prepared" }),
        -- The same token again and again: every call after the first is a
        -- cache hit (keyed hash, comparison, time checks); reported only.
        check_benchmark(fixtures, "RS256", nil, 16),
      }
    end,
  },
  {
    title = "JWT decode: tp.decode of the RS256 access token (no baseline; absolute target)",
    prepare = function(fixtures)
      local token = fixtures.algs.RS256.token
      return {
        {
          name = "decode",
          fn = tp.decode,
          args = { token },
          check = function()
            local jwt = assert(tp.decode(token))
            assert(jwt.claims.iss == ISSUER and jwt.header.alg == "RS256", "decode returned the wrong token")
          end,
          target = { min_rate = 300000, unit = "tokens/s" },
        },
      }
    end,
  },
}

-- Token files and discovery: a sandbox with a Rucio config, a Rucio token
-- and a WLCG token file, described by an explicit environment table.
local function files_fixture(fixtures)
  local dir = fixtures.dir
  run("mkdir -p " .. shell_quote(dir .. "/run") .. " " .. shell_quote(dir .. "/home"))
  write_file(dir .. "/rucio.cfg", "[client]\naccount = alice\nauth_type = oidc\n")
  local env = {
    RUCIO_CONFIG = dir .. "/rucio.cfg", TMPDIR = dir, LOGNAME = "alice", HOME = dir .. "/home",
    XDG_RUNTIME_DIR = dir .. "/run", BEARER_TOKEN_FILE = dir .. "/bt",
  }
  local token = fixtures.algs.RS256.token
  assert(tp.write_token(dir .. "/bt", token))
  return env, dir .. "/bt", token
end

sections[#sections + 1] = {
  title = "Token files: discover (Rucio + WLCG + Arvados rules) and read_token on a warm cache",
  prepare = function(fixtures)
    local env, path, token = files_fixture(fixtures)
    local function plain_read()   -- the baseline: a read with no checks at all
      local f = io.open(path, "rb")
      local text = f:read("a")
      f:close()
      return text
    end
    return {
      {
        name = "discover",
        fn = tp.discover,
        args = { { env = env } },
        check = function()
          local found = assert(tp.discover { env = env })
          assert(#found >= 4, "discover found too few candidates")
        end,
        target = { min_rate = 20000, unit = "calls/s" },
      },
      {
        name = "read_token",
        fn = tp.read_token,
        args = { path },
        check = function() assert(assert(tp.read_token(path)) == token) end,
        baseline = function(seconds)
          local rate = measure(seconds, plain_read)
          return { { name = "io_read", rate = rate, label = "io.open + read, no checks" } }
        end,
      },
    }
  end,
}

-- Policy evaluation: an Arvados token record and a decoded JWT, against
-- the Arvados documentation's example policy (5m idle, 12h login, 24h max).
sections[#sections + 1] = {
  title = "Policy: policy:evaluate on Arvados token records and on decoded JWTs (absolute target)",
  prepare = function(fixtures)
    local policy = assert(tp.policy { idle_timeout = "5m", login_token_lifetime = "12h",
                                      max_token_lifetime = "24h" })
    local record = { uuid = "zzzzz-gj3su-0123456789abcde", created_at = NOW - 3600, expires_at = NOW + 7200,
                     last_used_at = NOW - 60, kind = "api", owner_uuid = "zzzzz-tpzed-0123456789abcde",
                     owner_is_admin = false, scopes = { "all" } }
    local jwt = assert(tp.decode(fixtures.algs.RS256.token))
    return {
      {
        name = "evaluate",
        fn = policy.evaluate,
        args = { policy, record, NOW },
        check = function() assert(policy:evaluate(record, NOW).state == "valid") end,
        target = { min_rate = 1000000, unit = "evaluations/s" },
      },
      {
        -- bulk migrations pass one verdict table to fill again and again
        name = "evaluate reused",
        fn = policy.evaluate,
        args = { policy, record, NOW, {} },
        target = { min_rate = 1000000, unit = "evaluations/s" },
      },
      {
        name = "evaluate JWT",
        fn = policy.evaluate,
        args = { policy, jwt, NOW },
        check = function() assert(policy:evaluate(jwt, NOW).state) end,
      },
    }
  end,
}

-- The jti denylist: loading a list of 100,000 entries (the issue asks for
-- under 100 ms, that is over 10 loads/s) against merely reading its file,
-- and contains, the lookup a gateway does on every request.
sections[#sections + 1] = {
  title = "Denylist: load 100,000 entries (vs reading the file) and contains",
  prepare = function(fixtures)
    local path = fixtures.dir .. "/denylist"
    local lines = {}
    for i = 1, 100000 do
      lines[i] = ("b3f1c2d4-6e5f-4a7b-8c9d-%012d %d"):format(i, NOW + 3600 + i)
    end
    write_file(path, table.concat(lines, "\n") .. "\n")
    os.execute("chmod 600 " .. shell_quote(path))
    local function load()
      local list = assert(tp.denylist(path))
      local n = list:count()
      list:close()
      return n
    end
    local list = assert(tp.denylist(path))
    return {
      {
        name = "denylist load",
        fn = load,
        check = function() assert(load() == 100000) end,
        baseline = function(seconds)
          return { { name = "read_file", rate = measure(seconds, read_file, path),
                     label = "io.open + read of the same file" } }
        end,
        target = { min_rate = 10, unit = "loads/s (under 100 ms each)" },
      },
      {
        name = "contains",
        fn = list.contains,
        args = { list, "b3f1c2d4-6e5f-4a7b-8c9d-000000050000", NOW },
        check = function() assert(list:contains("b3f1c2d4-6e5f-4a7b-8c9d-000000050000", NOW)) end,
      },
    }
  end,
}

-- The memory a process takes for loading the denylist at path: VmRSS
-- before and after, in a fresh lua5.4 (this one's heap holds the other
-- benchmarks), in MB.
local function denylist_memory_mb(path)
  local script = path .. ".memory.lua"
  write_file(script, "local tp = require 'tokenpolicy'\n"
    .. "local function rss() for l in io.lines('/proc/self/status') do "
    .. "local v = l:match('^VmRSS:%s+(%d+)') if v then return tonumber(v) end end end\n"
    .. "local before = rss() local list = assert(tp.denylist(arg[1]))\n"
    .. "print((rss() - before) / 1024, list:count())\n")
  local mb, count = capture("lua5.4 " .. shell_quote(script) .. " " .. shell_quote(path)):match("(%S+)%s+(%S+)")
  return assert(tonumber(mb)), assert(tonumber(count))
end

sections[#sections + 1] = {
  title = "Denylist at 1,000,000 entries: load (under 300 ms, 100 MB) and add (vs add to a 10-entry list)",
  prepare = function(fixtures)
    local big, small = fixtures.dir .. "/denylist-1m", fixtures.dir .. "/denylist-10"
    local f = assert(io.open(big, "wb"))
    for i = 1, 1000000, 10000 do
      local lines = {}
      for j = i, i + 9999 do
        lines[#lines + 1] = ("%08x-6e5f-4a7b-8c9d-%012d %d\n"):format(j * 2654435761 % 4294967296, j, NOW + 3600 + j)
      end
      f:write(table.concat(lines))
    end
    f:close()
    local lines = {}
    for j = 1, 10 do lines[j] = ("small-%d %d\n"):format(j, NOW + 3600) end
    write_file(small, table.concat(lines))
    os.execute("chmod 600 " .. shell_quote(big) .. " " .. shell_quote(small))
    local function load()
      local list = assert(tp.denylist(big))
      local n = list:count()
      list:close()
      return n
    end
    local big_list, small_list = assert(tp.denylist(big)), assert(tp.denylist(small))
    local added = 0
    local function add_to(list)
      added = added + 1
      return assert(list:add("bench-add-" .. added, NOW + 3600))
    end
    return {
      {
        name = "denylist 1M",
        fn = load,
        check = function() assert(load() == 1000000) end,
        target = { min_rate = 1 / 0.3, unit = "loads/s (under 300 ms each)" },
        after = function()
          local mb, count = denylist_memory_mb(big)
          assert(count == 1000000)
          print(string.format("  %-14s memory: %.0f MB for %s entries (target < 100 MB)", "", mb, thousands(count)))
        end,
      },
      {
        name = "add at 1M",
        fn = add_to,
        args = { big_list },
        check = function() assert(add_to(big_list)) end,
        baseline = function(seconds)
          return { { name = "add_small", rate = measure(seconds, add_to, small_list),
                     label = "add to a 10-entry list (same file system, same fsync)" } }
        end,
      },
    }
  end,
}

-- A sandbox holding what `tokenpolicy status` finds on a user's machine:
-- a Rucio token with its expiry file, a WLCG bearer token file and an
-- Arvados settings.conf; and the environment that points there.
local function session_sandbox(fixtures)
  local root = fixtures.dir .. "/session"
  local env = { TMPDIR = root, LOGNAME = "bench", RUCIO_CONFIG = root .. "/rucio.cfg", HOME = root .. "/home",
                XDG_RUNTIME_DIR = root .. "/run" }
  run("mkdir -p -m 0700 " .. shell_quote(root) .. " " .. shell_quote(root .. "/run") .. " "
    .. shell_quote(root .. "/home"))
  write_file(env.RUCIO_CONFIG, "[client]\naccount = bench\n")
  for _, c in ipairs(tp.discover { env = env }) do
    if c.active and c.scheme == "rucio" then
      assert(tp.write_token(c.path, "bench-/CN=bench-cli-" .. ("0123456789abcdef"):rep(2)))
      assert(tp.write_token(c.expiry_path, tostring(os.time() + 3600)))
    elseif c.scheme == "wlcg" and c.path and c.path:find(root, 1, true) then
      local claims = access_token_claims()
      claims.iat, claims.exp = os.time(), os.time() + 3600   -- valid now, as a user's token is
      assert(tp.write_token(c.path, assert(tp.sign(claims, fixtures.algs.ES256.signer))))
    end
  end
  assert(tp.write_token(env.HOME .. "/.config/arvados/settings.conf", "ARVADOS_API_HOST=zzzzz.example.org\n"
    .. "ARVADOS_API_TOKEN=v2/zzzzz-gj3su-012345678901234/" .. ("abcdefghij"):rep(5) .. "\n"))
  return env
end

-- session.status, the work behind `tokenpolicy status`, in Lua (against
-- discover, the first step it takes); present once tokenpolicy.session is.
sections[#sections + 1] = {
  title = "session.status (Rucio, WLCG and Arvados tokens; vs discover alone)",
  prepare = function(fixtures)
    local ok, session = pcall(require, "tokenpolicy.session")
    if not ok then
      print("  (no tokenpolicy.session yet: skipped)")
      return {}
    end
    local env = session_sandbox(fixtures)
    return {
      {
        name = "status",
        fn = session.status,
        args = { { env = env } },
        check = function() assert(#session.status { env = env } == 3) end,
        baseline = function(seconds)
          return { { name = "discover", rate = measure(seconds, tp.discover, { env = env }),
                     label = "tp.discover{env=...}" } }
        end,
      },
    }
  end,
}

-- `tokenpolicy status` end to end, process start to exit, against starting
-- a bare `lua5.4 -e ''` in the same round: the milliseconds the command
-- adds to a Lua start (target: under 25). Both run under `env -i` with the
-- same PATH; the wall clock is read by the shell around RUNS starts.
local CLI_RUNS = 20

local function wall_ms_per_run(command)
  local script = ("s=$(date +%%s%%N); i=0; while [ $i -lt %d ]; do %s >/dev/null 2>&1 </dev/null; "
    .. "i=$((i+1)); done; e=$(date +%%s%%N); echo $(( (e - s) / %d ))"):format(CLI_RUNS, command, CLI_RUNS)
  return tonumber(capture("sh -c " .. shell_quote(script))) / 1e6
end

local function cli_benchmark(fixtures)
  local build = assert(package.searchpath("tokenpolicy.core", package.cpath)):match("^(.*)/tokenpolicy/[^/]*$")
  local bin = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/../bin/tokenpolicy"
  local env = session_sandbox(fixtures)
  env.PATH = "/usr/bin:/bin"
  env.TOKENPOLICY_BUILD = build
  env.TOKENPOLICY_LUA = "lua5.4"
  local words = {}
  for k, v in pairs(env) do words[#words + 1] = shell_quote(k .. "=" .. v) end
  table.sort(words)
  local prefix = "env -i " .. table.concat(words, " ")
  local ours_cmd = prefix .. " " .. shell_quote(bin) .. " status"
  local base_cmd = prefix .. " lua5.4 -e ''"
  -- it must work (exit 0: three valid tokens) before it is timed
  local output = capture(ours_cmd)
  assert(select(2, output:gsub("\n", "")) == 4, "tokenpolicy status in the sandbox: " .. output)
  local best_ours, best_base = math.huge, math.huge
  for _ = 1, ROUNDS do
    best_base = math.min(best_base, wall_ms_per_run(base_cmd))
    best_ours = math.min(best_ours, wall_ms_per_run(ours_cmd))
  end
  print(("  %-14s %9.1f ms %9.1f ms  %s"):format("tokenpolicy", best_ours, best_base,
    ("best of %d rounds of %d starts; +%.1f ms over lua5.4 -e ''"):format(ROUNDS, CLI_RUNS, best_ours - best_base)))
  return { name = "cli status", added_ms = best_ours - best_base, ours_ms = best_ours, base_ms = best_base,
           target = { max_added_ms = 25 } }
end

-- Keys at gateway scale (self-contained): a token whose kid is the last
-- of 10,000 HMAC keys against one whose kid is the first (the kid index
-- makes them equal: target >= 0.9) and against a set of that one key (the
-- ratio to the faster baseline: what 9,999 other keys cost), and EdDSA
-- (Ed25519) verify against raw OpenSSL on the same key, signing input and
-- signature.
local function keys_scale_benchmarks(fixtures)
  local dir = fixtures.dir
  local claims = access_token_claims()
  local entries = {}
  for i = 1, 10000 do
    entries[i] = tp.json_encode { kty = "oct", kid = "kid-" .. i, k = tp.b64url_encode(("%032d"):format(i)) }
  end
  local many = assert(tp.keys('{"keys":[' .. table.concat(entries, ",") .. "]}"))
  local hs_opts = { now = NOW, iss = ISSUER, aud = AUDIENCE, algs = { "HS256" } }
  local function hs_token(i)
    local one = assert(tp.keys(entries[i]))
    return assert(tp.sign(claims, one, { alg = "HS256" }))
  end
  local first, last = hs_token(1), hs_token(10000)
  local one_key = assert(tp.keys(entries[10000]))

  local ed_private, ed_public = dir .. "/EdDSA.key", dir .. "/EdDSA.pub"
  run("openssl genpkey -algorithm ed25519 -out " .. shell_quote(ed_private) .. " 2>/dev/null")
  run("openssl pkey -in " .. shell_quote(ed_private) .. " -pubout -out " .. shell_quote(ed_public))
  local ed = { key_file = ed_public, signing_input_file = dir .. "/EdDSA.signing_input",
               signature_file = dir .. "/EdDSA.signature" }
  ed.token = assert(tp.sign(claims, assert(tp.keys(read_file(ed_private), { kid = "bench-eddsa" }))))
  ed.verifier = assert(tp.keys(read_file(ed_public), { kid = "bench-eddsa" }))
  local jwt = assert(tp.decode(ed.token))
  write_file(ed.signing_input_file, jwt.signing_input)
  write_file(ed.signature_file, jwt.signature)
  local ed_opts = { now = NOW, iss = ISSUER, aud = AUDIENCE }

  return {
    {
      name = "kid 10000/10k",
      fn = tp.verify,
      args = { last, many, hs_opts },
      check = function() assert(tp.verify(last, many, hs_opts)) end,
      baseline = function(seconds)
        return { { name = "first_kid", rate = measure(seconds, tp.verify, first, many, hs_opts),
                   label = "tp.verify, kid 1 of the same 10,000 keys" },
                 { name = "one_key", rate = measure(seconds, tp.verify, last, one_key, hs_opts),
                   label = "tp.verify, a set of that one key" } }
      end,
      target = { min_ratio = 0.9, against = "first_kid" },
    },
    {
      name = "verify EdDSA",
      fn = tp.verify,
      args = { ed.token, ed.verifier, ed_opts },
      check = function() assert(tp.verify(ed.token, ed.verifier, ed_opts)) end,
      baseline = raw_openssl_baseline("EdDSA", ed),
      target = { min_ratio = 0.9, against = "evp_digestverify" },
    },
  }
end

sections[#sections + 1] = {
  title = "Keys at gateway scale: the last of 10,000 kids (vs the first), EdDSA verify (vs raw OpenSSL)",
  prepare = keys_scale_benchmarks,
}

---------------------------------------------------------------------------
-- Reporting

local ROW = "  %-14s %12s %12s %7s  %s"
-- Below this share of a CPU a round was disturbed enough to say so.
local BUSY_CPU_SHARE = 0.9

local function print_result(r)
  local raw = r.best_baseline
  print(string.format(ROW, r.name, thousands(r.ours), raw and thousands(raw.rate) or "-",
                      r.ratio and string.format("%.3f", r.ratio) or "-", raw and raw.label or ""))
  if r.cpu_share < BUSY_CPU_SHARE then
    print(string.format("  %-14s busy machine: our best round got %.0f%% of a CPU", "", 100 * r.cpu_share))
  end
  if #r.baselines > 1 then
    for _, b in ipairs(r.baselines) do
      print(string.format(ROW, "", "", thousands(b.rate), "", "  " .. b.label))
    end
  end
  io.stdout:flush()
end

-- Returns the verdict line and whether the target was met (nil: no target).
local function judge(r)
  local t = r.target
  if t and t.max_added_ms then
    local met = r.added_ms < t.max_added_ms
    return string.format("%-14s %-4s adds %.1f ms to a bare Lua start (%.1f vs %.1f ms), target < %d ms",
                         r.name, met and "PASS" or "MISS", r.added_ms, r.ours_ms, r.base_ms, t.max_added_ms), met
  elseif t and t.min_ratio then
    local met = r.reference_ratio >= t.min_ratio
    return string.format("%-14s %-4s ratio %.3f to %s, target >= %.2f (%.3f to the faster %s)%s",
                         r.name, met and "PASS" or "MISS", r.reference_ratio, r.reference.label, t.min_ratio,
                         r.ratio, r.best_baseline.label,
                         r.ceiling and string.format("; decode + parse floor allows %.3f", r.ceiling) or ""), met
  elseif t and t.min_rate then
    local met = r.ours >= t.min_rate
    return string.format("%-14s %-4s %s %s, target >= %s", r.name, met and "PASS" or "MISS",
                         thousands(r.ours), t.unit or "ops/s", thousands(t.min_rate)), met
  elseif r.ratio then
    return string.format("%-14s ---- ratio %.3f to the faster raw baseline (%s); no target, reported only",
                         r.name, r.ratio, r.best_baseline.label), nil
  end
  return string.format("%-14s ---- %s ops/s; no target, reported only", r.name, thousands(r.ours)), nil
end

local function print_header(fixtures)
  local cpu = capture("grep -m1 'model name' /proc/cpuinfo 2>/dev/null || true"):match(":%s*(.-)%s*$")
  print(string.format("tokenpolicy benchmarks: %s, %s, %s", tp._VERSION, _VERSION,
                      (capture("openssl version"):gsub("%s+$", ""))))
  print(string.format("host: %s, %s CPUs", cpu or "unknown CPU", (capture("nproc"):gsub("%s+$", ""))))
  print(string.format("best of %d rounds of %d s wall-clock time; a round measures the baseline, then ours",
                      ROUNDS, SECONDS))
  print(string.format("token: %d bytes of claims JSON; RS256 %d, ES256 %d, HS256 %d bytes compact",
                      fixtures.claims_json_bytes, #fixtures.algs.RS256.token, #fixtures.algs.ES256.token,
                      #fixtures.algs.HS256.token))
end

---------------------------------------------------------------------------

local function main(dir)
  local fixtures = make_fixtures(dir)
  print_header(fixtures)
  local results = {}
  for _, section in ipairs(sections) do
    print()
    print("== " .. section.title)
    print(string.format(ROW, "benchmark", "ours ops/s", "raw ops/s", "ratio",
                        "raw baseline (ratio to the faster)"))
    for _, b in ipairs(section.prepare(fixtures)) do
      if not ONLY or b.name:match(ONLY) then
        local r = run_benchmark(b)
        print_result(r)
        if b.after then b.after(r) end
        table.insert(results, r)
      end
    end
  end

  if not ONLY or ("cli status"):match(ONLY) then
    print()
    print("== tokenpolicy status, process start to exit (vs lua5.4 -e '')")
    print(string.format(ROW, "command", "ours", "bare lua", "", ""))
    table.insert(results, cli_benchmark(fixtures))
  end

  print()
  print("== targets")
  local met, total = 0, 0
  for _, r in ipairs(results) do
    local line, ok = judge(r)
    print("  " .. line)
    if ok ~= nil then
      total = total + 1
      if ok then met = met + 1 end
    end
  end
  print(string.format("  %d of %d targets met%s", met, total, met < total and " (MISS above)" or ""))
end

local dir = capture("mktemp -d /tmp/tokenpolicy-bench.XXXXXX"):gsub("%s+$", "")
local ok, err = xpcall(main, debug.traceback, dir)
run("rm -rf " .. shell_quote(dir))     -- keys and secrets must not outlive the run
if not ok then
  io.stderr:write("bench: ", tostring(err), "\n")
  os.exit(1)
end
