-- Resource limits: inputs far larger or deeper than any real one finish
-- within a deadline (a subprocess killed when it passes), within a bound
-- on memory (the growth of the peak resident set, measured in that
-- subprocess), and fail with a clear code where they must be refused.
-- No speed is asserted: the deadlines only catch what would never finish
-- in practice (a quadratic loop, a hang).
local tp = require "tokenpolicy"
local nb = require "helpers.neighbour"
local crypto = require "helpers.crypto"
local expect = require "helpers.expect"

local NOW = 1800000000
-- The sanitizers' shadow memory and quarantine multiply what a run takes.
local SANITIZED = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil
local function mib(n) return SANITIZED and n * 4 or n end

after_each(function() collectgarbage() end)

-- A JWK Set of n HMAC keys "k1".."kn", each secret distinct (see
-- spec/31-keys_scale_spec.lua: 42 digits and an "A" are 32 bytes).
local HMAC_JWKS = [[
return function(arg)
  local entries = {}
  for i = 1, arg.n do
    entries[i] = string.format('{"kty":"oct","kid":"k%d","k":"%042dA"}', i, i)
  end
  return '{"keys":[' .. table.concat(entries, ",") .. "]}"
end
]]

describe("a JWK Set", function()
  it("of 10,000 HMAC keys loads and finds the last key", function()
    local last = assert(tp.keys(('{"kty":"oct","kid":"k10000","k":"%042dA"}'):format(10000)))
    local token = assert(tp.sign({ sub = "alice", exp = NOW + 60 }, last, { alg = "HS256", kid = "k10000" }))
    local out, err = nb.measure(HMAC_JWKS, [[
return function(text, arg)
  local set = assert(tp.keys(text))
  local claims, msg = tp.verify(arg.token, set, { algs = "HS256", now = arg.now })
  return { count = #set, sub = claims and claims.sub or msg }
end
]], { n = 10000, token = token, now = NOW }, 120)
    assert.is_table(out, err)
    assert.are.equal(10000, out.count)
    assert.are.equal("alice", out.sub)
    assert.is_true(out.growth_mb < mib(256), out.growth_mb .. " MiB")
  end)

  it("of 10,000 RSA keys loads and finds the last key", function()
    local pem = crypto.rsa_private(2048)
    local jwk = crypto.rsa_public_jwk(pem)
    local token = assert(tp.sign({ sub = "alice", exp = NOW + 60 }, assert(tp.keys(pem)),
      { alg = "RS256", kid = "r10000" }))
    local out, err = nb.measure([[
return function(arg)
  local entries = {}
  for i = 1, arg.n do
    entries[i] = string.format('{"kty":"RSA","kid":"r%d","n":"%s","e":"AQAB"}', i, arg.modulus)
  end
  return '{"keys":[' .. table.concat(entries, ",") .. "]}"
end
]], [[
return function(text, arg)
  local set = assert(tp.keys(text))
  local claims, msg = tp.verify(arg.token, set, { now = arg.now })
  -- Without a kid at most 16 keys are tried, then unknown_key.
  local _, _, code = tp.verify(arg.no_kid, set, { now = arg.now })
  return { count = #set, sub = claims and claims.sub or msg, no_kid = code }
end
]], { n = 10000, modulus = jwk.n, token = token, no_kid = token:gsub("^[^.]+", tp.b64url_encode('{"alg":"RS256"}')),
      now = NOW }, 300)
    assert.is_table(out, err)
    assert.are.equal(10000, out.count)
    assert.are.equal("alice", out.sub)
    assert.are.equal("unknown_key", out.no_kid)
    assert.is_true(out.growth_mb < mib(512), out.growth_mb .. " MiB")
  end)

  it("of 20,001 keys, one over the default cap, is too_large", function()
    local out, err = nb.measure(HMAC_JWKS, [[
return function(text)
  local set, msg, code = tp.keys(text)
  return { code = set and "ok" or code, message = msg }
end
]], { n = 20001 }, 120)
    assert.is_table(out, err)
    assert.are.equal("too_large", out.code, out.message)
    assert.is_true(out.growth_mb < mib(256), out.growth_mb .. " MiB")
  end)
end)

describe("a token at the size cap", function()
  local key = assert(tp.keys(('{"kty":"oct","k":"%042dA"}'):format(1)))

  -- An HS256 token of exactly `size` bytes: a padding claim and a header
  -- member tuned until the compact form has that length (base64url has no
  -- length of the form 4n+1, so the header takes up what the payload cannot).
  local function token_of(size)
    for extra = 1, 4 do
      local header = { x = ("x"):rep(extra) }
      local base = #assert(tp.sign({ sub = "alice", exp = NOW + 60, pad = "" }, key,
        { alg = "HS256", header = header }))
      for pad = math.max(0, (size - base) * 3 // 4 - 4), (size - base) * 3 // 4 + 4 do
        local token = assert(tp.sign({ sub = "alice", exp = NOW + 60, pad = ("p"):rep(pad) }, key,
          { alg = "HS256", header = header }))
        if #token == size then return token end
      end
    end
    error("no token of " .. size .. " bytes")
  end

  local exact, over = token_of(16384), token_of(16385)
  local verifier = tp.verifier { keys = key, algs = "HS256" }

  it("of exactly 16,384 bytes (the default max_size) is decoded and verified", function()
    assert.are.equal(16384, #exact)
    assert.are.equal("alice", assert(tp.decode(exact)).claims.sub)
    assert.are.equal("alice", assert(tp.verify(exact, key, { algs = "HS256", now = NOW })).sub)
    assert.are.equal("alice", assert(verifier:check(exact, NOW)).sub)
  end)

  it("of 16,385 bytes is too_large for decode, verify and a verifier", function()
    assert.are.equal(16385, #over)
    local msg = expect.fails("too_large", tp.decode(over))
    assert.are.equal("too_large: token of 16385 bytes is over the 16384-byte limit", msg)
    expect.fails("too_large", tp.verify(over, key, { algs = "HS256", now = NOW }))
    expect.fails("too_large", verifier:check(over, NOW))
  end)

  it("moves with max_size: a cap equal to the length passes, one byte less refuses", function()
    assert.is_table(tp.decode(over, { max_size = 16385 }))
    expect.fails("too_large", tp.decode(exact, { max_size = 16383 }))
  end)
end)

describe("JSON nested 10,000 deep", function()
  local ARRAY = ("["):rep(10000) .. ("]"):rep(10000)
  local OBJECT = ('{"a":'):rep(10000) .. "1" .. ("}"):rep(10000)
  -- A token whose payload is text, correctly signed (RS256, by the openssl
  -- command: tp.sign would refuse to encode such claims).
  local pem = crypto.rsa_private(2048)
  local public = assert(tp.keys(crypto.public_of(pem)))
  local function token_with_payload(text)
    local input = tp.b64url_encode('{"alg":"RS256"}') .. "." .. tp.b64url_encode(text)
    return input .. "." .. tp.b64url_encode(crypto.openssl_sign(pem, input, "sha256"))
  end

  it("is malformed for json_decode, arrays and objects alike", function()
    assert.are.equal("malformed: invalid JSON: nested deeper than 64 levels",
      expect.fails("malformed", tp.json_decode(ARRAY)))
    assert.are.equal("malformed: invalid JSON: nested deeper than 64 levels",
      expect.fails("malformed", tp.json_decode(OBJECT)))
  end)

  it("is malformed in a token payload (decode and verify)", function()
    local token = token_with_payload('{"sub":' .. ARRAY .. "}")
    assert.are.equal("malformed: the payload is not valid JSON (nested deeper than 64 levels)",
      expect.fails("malformed", tp.decode(token, { max_size = 1 << 20 })))
    assert.are.equal("malformed: the payload is not valid JSON (nested deeper than 64 levels)",
      expect.fails("malformed", tp.verify(token, public, { now = NOW, max_size = 1 << 20 })))
  end)

  it("is malformed in a JWK Set", function()
    expect.fails("malformed", tp.keys('{"keys":[' .. ARRAY .. "]}"))
    expect.fails("malformed", tp.keys('{"keys":[' .. OBJECT .. "]}"))
  end)

  it("is malformed in an identity provider's metadata answer", function()
    local dir = expect.new_dir()
    expect.write_file(dir .. "/_.well-known_openid-configuration", '{"issuer":' .. OBJECT .. "}")
    assert(os.execute("chmod 755 " .. dir))
    local server = nb.serve(dir)
    local ok, err = pcall(function()
      expect.fails("malformed", tp.oidc_metadata(server.base, { ttl = 0 }))
    end)
    server.stop()
    expect.remove_dir(dir)
    assert(ok, err)
  end)

  it("cannot be encoded: json_encode raises on a table nested 10,000 deep", function()
    local t = {}
    local cur = t
    for _ = 1, 10000 do
      cur[1] = {}
      cur = cur[1]
    end
    -- (the function name in the message is the one Lua sees at the call)
    assert.error_matches(function() tp.json_encode(t) end,
      "^bad argument #1 to .*json_encode. %(nested deeper than 64 levels %(or a cycle%)%)$")
  end)
end)

describe("a denylist", function()
  local dir
  before_each(function()
    dir = expect.new_dir()
  end)
  after_each(function() expect.remove_dir(dir) end)

  it("of 1,000,000 entries loads, answers, and takes one more", function()
    local out, err = nb.measure([[
return function(arg)
  local f = assert(io.open(arg.path, "wb"))
  local lines = {}
  for i = 1, 1000000 do
    lines[#lines + 1] = string.format("jti-%07d %d\n", i, arg.exp)
    if #lines == 10000 then
      f:write(table.concat(lines))
      lines = {}
    end
  end
  f:close()
  os.execute("chmod 600 " .. arg.path)
  return arg.path
end
]], [[
return function(path, arg)
  local list = assert(tp.denylist(path))
  local out = {
    count = list:count(), first = list:contains("jti-0000001", arg.now),
    last = list:contains("jti-1000000", arg.now), missing = list:contains("jti-1000001", arg.now),
  }
  out.added = list:add("jti-1000001", arg.exp)
  out.count_after = list:count()
  out.now_found = list:contains("jti-1000001", arg.now)
  list:close()
  return out
end
]], { path = dir .. "/denylist", exp = NOW + 3600, now = NOW }, 300)
    assert.is_table(out, err)
    assert.are.same({ count = 1000000, first = true, last = true, missing = false, added = true,
                      count_after = 1000001, now_found = true, growth_mb = out.growth_mb }, out)
    assert.is_true(out.growth_mb < mib(512), out.growth_mb .. " MiB")
  end)

  it("over 64 MiB is too_large, and is not read into memory", function()
    local out, err = nb.measure([[
return function(arg)
  assert(os.execute("truncate -s " .. (64 * 1024 * 1024 + 1) .. " " .. arg.path .. " && chmod 600 " .. arg.path))
  return arg.path
end
]], [[
return function(path)
  local list, msg, code = tp.denylist(path)
  return { code = list and "ok" or code, message = msg }
end
]], { path = dir .. "/denylist" }, 120)
    assert.is_table(out, err)
    assert.are.equal("too_large", out.code, out.message)
    assert.is_true(out.growth_mb < 32, out.growth_mb .. " MiB")
  end)
end)

describe("a rucio.cfg of 100 MB", function()
  local dir, cfg
  -- [client] account = root, then 100 MB of comment lines.
  local MAKE = [[
return function(arg)
  local f = assert(io.open(arg.path, "wb"))
  f:write("[client]\naccount = root\n")
  local line = "# " .. ("x"):rep(97) .. "\n"
  local block = line:rep(10000)
  for _ = 1, 100 do f:write(block) end
  f:close()
  return arg.path
end
]]
  before_each(function()
    dir = expect.new_dir()
    cfg = dir .. "/rucio.cfg"
  end)
  after_each(function() expect.remove_dir(dir) end)

  it("is too_large for read_config and ini.read, and is not read into memory", function()
    local out, err = nb.measure(MAKE, [[
return function(path)
  local ini = require "tokenpolicy.ini"
  local _, msg1, code1 = tp.read_config(path)
  local _, msg2, code2 = ini.read(path)
  return { codes = { code1, code2 }, messages = { msg1, msg2 } }
end
]], { path = cfg }, 120)
    assert.is_table(out, err)
    assert.are.same({ "too_large", "too_large" }, out.codes)
    assert.are.equal("too_large: read_config: " .. cfg .. " is 100000024 bytes, over the limit of 1048576",
      out.messages[1])
    assert.is_true(out.growth_mb < 32, out.growth_mb .. " MiB")
  end)

  it("stops Rucio's discovery with a too_large problem, and status still answers", function()
    local out, err = nb.measure(MAKE, [[
return function(path, arg)
  local env = { RUCIO_CONFIG = path, LOGNAME = "jdoe", TMPDIR = arg.dir, HOME = arg.dir }
  local rucio = tp.discover({ scheme = "rucio", env = env })[1]
  local list = tp.status({ env = env, now = arg.now, scheme = "rucio" })
  return { problem = rucio.problem, active = rucio.active, entries = #list }
end
]], { path = cfg, dir = dir, now = NOW }, 120)
    assert.is_table(out, err)
    assert.are.equal("too_large: read_config: " .. cfg .. " is 100000024 bytes, over the limit of 1048576: the "
      .. "Rucio client cannot load its config and stops", out.problem)
    assert.is_false(out.active)
    assert.are.equal(0, out.entries)
    assert.is_true(out.growth_mb < 32, out.growth_mb .. " MiB")
  end)

  it("is parsed by ini.read when max_size allows it, in time linear in its size", function()
    -- Splitting lines once looked from every line to the end of the text
    -- for a "\r": 100 MB then took most of an hour; now seconds.
    local out, err = nb.measure(MAKE, [[
return function(path)
  local ini = require "tokenpolicy.ini"
  local parsed, msg = ini.read(path, { max_size = 128 * 1024 * 1024 })
  return { account = parsed and parsed:get("client", "account") or msg }
end
]], { path = cfg }, 120)
    assert.is_table(out, err)
    assert.are.equal("root", out.account)
    assert.is_true(out.growth_mb < mib(1024), out.growth_mb .. " MiB")
  end)
end)
