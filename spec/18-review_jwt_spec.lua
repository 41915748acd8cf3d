-- What the outside review of issue 8 found in JWT and key handling, one
-- describe per finding: printing a decoded token (a memory corruption
-- once), JWK members cjose would abort on, partial RSA CRT sets, private
-- keys that do not match their public part, key_ops, forgiving token input,
-- a single string as algs, readable claims and key lists, and the shared
-- option readers.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"
local expect = require "helpers.expect"

local b64 = tp.b64url_encode
local fails = expect.fails
local NOW = 1700000000
local LUA = "lua" .. _VERSION:match("%d+%.%d+")

-- ---- helpers ------------------------------------------------------------

local function hex_bytes(hex)
  return (hex:gsub("[^%x]", ""):gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

-- The named hex blocks of `openssl pkey -text` ("modulus:", "priv:", ...).
local function text_sections(pem)
  local path = crypto.tmpfile(pem)
  local text = crypto.run("openssl pkey -text -noout -in " .. path)
  os.remove(path)
  local sections, name = {}, nil
  for line in text:gmatch("[^\n]+") do
    local head = line:match("^(%w+):$")
    if head then
      name = head
      sections[name] = ""
    elseif name and line:match("^%s+[%x:]+$") then
      sections[name] = sections[name] .. line
    else
      name = nil
    end
  end
  for k, v in pairs(sections) do sections[k] = hex_bytes(v) end
  return sections
end

local function unsigned(bytes) return (bytes:gsub("^%z+", "")) end
local function padded(bytes, width) return ("\0"):rep(width - #bytes) .. bytes:sub(-width) end

-- The private JWK (a Lua table) of an RSA or EC (P-256) private PEM, with
-- every member.
local function private_jwk_of(pem)
  local s = text_sections(pem)
  if s.modulus then
    return { kty = "RSA", n = b64(unsigned(s.modulus)), e = "AQAB", d = b64(unsigned(s.privateExponent)),
      p = b64(unsigned(s.prime1)), q = b64(unsigned(s.prime2)), dp = b64(unsigned(s.exponent1)),
      dq = b64(unsigned(s.exponent2)), qi = b64(unsigned(s.coefficient)) }
  end
  return { kty = "EC", crv = "P-256", x = b64(s.pub:sub(2, 33)), y = b64(s.pub:sub(34, 65)),
    d = b64(padded(unsigned(s.priv), 32)) }
end

-- The same, made once per PEM; a fresh copy each time.
local jwk_cache = {}
local function private_jwk(pem)
  jwk_cache[pem] = jwk_cache[pem] or private_jwk_of(pem)
  local out = {}
  for k, v in pairs(jwk_cache[pem]) do out[k] = v end
  return out
end

local function copy(t, changes)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  for k, v in pairs(changes or {}) do out[k] = v end
  return out
end

local function without(t, names)
  local out = copy(t)
  for _, name in ipairs(names) do out[name] = nil end
  return out
end

local rsa_pem = function() return crypto.rsa_private() end
local ec_pem = function() return crypto.ec_private("P-256") end
local function other_ec_pem()
  return crypto.run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256")
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs tp.keys on JSON text in a child Lua, so that an abort (SIGABRT in a
-- library) fails the case instead of killing busted.  Returns what the
-- child printed: the fail code, or "ok".
local function keys_in_child(json)
  local script = ("package.path = %q; package.cpath = %q; local tp = require 'tokenpolicy'; "
    .. "local set, _, code = tp.keys(%q); io.write(set and 'ok' or code)")
    :format(package.path, package.cpath, json)
  -- Under `make asan` the child is instrumented too; its leak check is off
  -- (LeakSanitizer's exit-time scan can itself crash on a loaded machine),
  -- since the same inputs run in-process, where leaks are checked.
  local pipe = assert(io.popen("ASAN_OPTIONS=detect_leaks=0 " .. LUA .. " -e " .. shell_quote(script) .. " 2>&1"))
  local out = pipe:read("a")
  local ok, how, status = pipe:close()
  assert(ok, ("child %s with %s: %s"):format(how, tostring(status), out))
  return out
end

-- Swaps a GC mode in for fn, and restores the default afterwards.
local function under_gc(mode, fn)
  local restore
  if mode == "generational" then
    collectgarbage("generational")
    restore = function() collectgarbage("incremental") end
  else
    local pause = collectgarbage("setpause", 0)
    local stepmul = collectgarbage("setstepmul", 1000)
    restore = function()
      collectgarbage("setpause", pause)
      collectgarbage("setstepmul", stepmul)
    end
  end
  local ok, err = pcall(fn)
  restore()
  assert(ok, err)
end

-- A compact token from raw header and payload JSON text (decode does not
-- verify, so the signature is any bytes).
local function raw_token(header, payload)
  return b64(header) .. "." .. b64(payload) .. "." .. b64("signature")
end

describe("tostring of a decoded token", function()
  after_each(function() collectgarbage() end)

  local A200 = ("a"):rep(200)
  local function repeated(value, n)
    local list = {}
    for i = 1, n do list[i] = value end
    return list
  end
  local hundred = {}
  for i = 1, 100 do hundred[("claim%03d"):format(i)] = i end

  -- name, header, claims (Lua tables, encoded with tp.json_encode)
  local shapes = {
    { "the review's repro: long iss, sub, eight long aud, long kid and typ",
      { alg = "RS256", kid = A200, typ = A200 }, { iss = A200, sub = A200, aud = repeated(A200, 8) } },
    { "numeric jti and aud values", { alg = "RS256" }, { jti = 12345678901, aud = { 1, 2.5, -3 }, azp = 7 } },
    { "nested objects and arrays", { alg = "ES256" },
      { act = { sub = "svc", act = { sub = "inner", act = { sub = "deep" } } }, groups = { { "a" }, { b = { 1 } } } } },
    { "unicode, escapes and invisible characters", { alg = "RS256", kid = "\27[2J" },
      '{"sub":"ünïcødé","name":"a\\u001b[31mb\\u0007\\u007fc","bidi":"x\\u202ey","c1":"\\u009b1m",'
      .. '"bell\\u0007name":"\\ud83d\\ude00"}', 5 },
    { "100 claims", { alg = "RS256" }, hundred },
    { "no claims at all", { alg = "RS256" }, {} },
    { "times that are floats, out of range or not numbers", { alg = "RS256" },
      { iat = 1.5, nbf = 1e300, exp = "tomorrow" } },
    { "long names and long values everywhere", { alg = "RS256" },
      { [A200] = A200, list = repeated(A200, 50), obj = { [A200] = repeated(A200, 3) } } },
  }

  local function check_printed(text, count)
    assert.is_string(text)
    assert.matches("^JWT ", text)
    -- nothing but printable text and line breaks
    assert.is_nil(text:find("[%z\1-\9\11-\31\127]"), "a control character was printed")
    assert.is_nil(text:find("\xc2[\x80-\x9f]"), "a C1 control was printed")
    for line in text:gmatch("\n([^\n]+)") do
      assert.is_true(#line <= 2 + 35 + 1 + 123, "a line is not cut: " .. #line)
    end
    assert.is_true(#text:match("^[^\n]*") <= 3 + 3 * (5 + 123), "the first line is not cut")
    -- every claim has its line
    assert.are.equal(count, select(2, text:gsub("\n", "")))
  end

  for _, mode in ipairs { "generational", "aggressive incremental" } do
    for _, shape in ipairs(shapes) do
      it(("prints %s (GC %s)"):format(shape[1], mode), function()
        if mode == "generational" and _VERSION == "Lua 5.3" then return end  -- 5.3 has no generational mode
        local payload, count = shape[3], shape[4]
        if type(payload) == "table" then
          count = 0
          for _ in pairs(payload) do count = count + 1 end
          payload = tp.json_encode(payload)
        end
        local token = raw_token(tp.json_encode(shape[2]), payload)
        under_gc(mode, function()
          for _ = 1, 20 do
            local jwt = assert(tp.decode(token))
            check_printed(tostring(jwt), count)
            assert.is_string(tostring(jwt.claims))
            assert.is_string(tostring(jwt.header))
          end
        end)
      end)
    end
  end

  it("shows the known claims first, then every other claim by name, values compact and quoted inside", function()
    local token = raw_token('{"alg":"RS256","kid":"k1","typ":"JWT"}', tp.json_encode {
      iss = "https://idp.example", sub = "alice", aud = { "rucio", "fts" }, scope = "a b", azp = "cli",
      jti = 42, zeta = { 1, 2 }, alpha = { b = true, a = tp.null }, beta = { { x = "y" } }, gamma = 1.5 })
    assert.are.equal(table.concat({
      "JWT RS256, kid k1, typ JWT",
      "  iss    https://idp.example",
      "  sub    alice",
      "  aud    rucio, fts",
      "  scope  a b",
      "  azp    cli",
      "  jti    42",
      '  alpha  {"a": null, "b": true}',
      '  beta   {"x": "y"}',
      "  gamma  1.5",
      "  zeta   1, 2",
    }, "\n"), tostring(assert(tp.decode(token))))
  end)

  it("cuts long values at 120 bytes, names at 32, and nesting at three levels", function()
    local token = raw_token('{"alg":"RS256"}', tp.json_encode {
      long = ("x"):rep(300), [("n"):rep(40)] = 1, deep = { a = { b = { c = { d = 1 } } } } })
    local text = tostring(assert(tp.decode(token)))
    assert.matches('\n  deep   {"a": {"b": {"c": {...}}}}', text, 1, true)
    assert.matches("\n  long   " .. ("x"):rep(120) .. "...\n", text, 1, true)
    assert.matches("\n  " .. ("n"):rep(32) .. "... 1$", text)
  end)

  it("replaces each character that would not print as itself by one '?'", function()
    local token = raw_token('{"alg":"RS256"}', tp.json_encode { sub = "ünï\27[31m\u{202e}\xc2\x9bok" })
    local text = tostring(assert(tp.decode(token)))
    assert.are.equal("JWT RS256\n  sub    ünï?[31m??ok", text)
  end)

  it("shows the times as times, with spans relative to now", function()
    local now = os.time()
    local token = raw_token('{"alg":"RS256"}', tp.json_encode { exp = now + 3600 + 30, iat = now - 120 })
    local text = tostring(assert(tp.decode(token)))
    assert.matches("\n  iat    %d+%-%d%d%-%d%d %d%d:%d%d:%d%d UTC %(2m%d*s? ago%)\n", text)
    assert.matches("\n  exp    [%d: -]+ UTC %(expires in 1h%d*s?%)$", text)
  end)
end)

describe("tp.keys checks every base64url member before cjose sees it", function()
  after_each(function() collectgarbage() end)

  local bad_values = {
    { "'=' inside (cjose's decoder asserts on it)", "AAAAA=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" },
    { "'=' padding at the end", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==" },
    { "the standard alphabet's '+' and '/'", "AAAA+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/AAAA" },
    { "a length of 1 mod 4", "AAAAA" },
    { "non-zero unused trailing bits", "AB" },
    { "whitespace", "AAAA AAAA" },
    { "an empty string", "" },
  }
  local members = {
    oct = { "k" },
    RSA = { "n", "e", "d", "p", "q", "dp", "dq", "qi" },
    EC = { "x", "y", "d" },
  }
  local base = {
    oct = function() return { kty = "oct", k = b64(("s"):rep(32)) } end,
    RSA = function() return private_jwk(rsa_pem()) end,
    EC = function() return private_jwk(ec_pem()) end,
  }

  for _, kty in ipairs { "oct", "RSA", "EC" } do
    for _, member in ipairs(members[kty]) do
      for _, bad in ipairs(bad_values) do
        it(("refuses %s member %s with %s, alone and in a set, also in a child process"):format(kty, member, bad[1]),
          function()
            local good = base[kty]()
            assert(tp.keys(good))  -- the key itself is fine
            local jwk = copy(good, { [member] = bad[2], kid = "bad" })
            local why = bad[2] == "" and ("member %s is empty"):format(member)
              or ("member %s is not canonical unpadded base64url"):format(member)
            assert.are.equal("malformed: " .. why, fails("malformed", tp.keys(jwk)))
            local set = assert(tp.keys { keys = { copy(good, { kid = "good" }), jwk } })
            assert.are.same({ "good" }, set:kids())
            assert.are.same({ { index = 2, kid = "bad", reason = why } }, set:skipped())
            assert.is_false(tp._openssl_error_pending())
            assert.are.equal("malformed", keys_in_child(tp.json_encode(jwk)))
          end)
      end
    end
  end

  it("refuses a member that is not a string", function()
    assert.are.equal("malformed: member k is not a string", fails("malformed", tp.keys { kty = "oct", k = 5 }))
  end)

  it("no longer aborts on the review's repro", function()
    assert.are.equal("malformed",
      keys_in_child('{"kty":"oct","k":"AAAAA=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}'))
  end)
end)

describe("tp.keys refuses partial RSA CRT sets", function()
  after_each(function() collectgarbage() end)
  local crt = { "p", "q", "dp", "dq", "qi" }
  local WHY = "malformed: RSA CRT members must be all of p, q, dp, dq and qi, or none"

  -- every subset of the five CRT members with one to four of them
  local subsets = {}
  for mask = 1, 30 do
    local kept = {}
    for i, name in ipairs(crt) do
      if mask & (1 << (i - 1)) ~= 0 then kept[#kept + 1] = name end
    end
    subsets[#subsets + 1] = kept
  end

  for _, kept in ipairs(subsets) do
    it("with d and only " .. table.concat(kept, ", "), function()
      local full = private_jwk(rsa_pem())
      local removed = {}
      for _, name in ipairs(crt) do
        local keep = false
        for _, k in ipairs(kept) do keep = keep or k == name end
        if not keep then removed[#removed + 1] = name end
      end
      local jwk = without(full, removed)
      assert.are.equal(WHY, fails("malformed", tp.keys(jwk)))
      assert.are.equal("malformed", keys_in_child(tp.json_encode(jwk)))
    end)
  end

  it("with CRT members but no d", function()
    assert.are.equal("malformed: RSA CRT members (p, q, dp, dq, qi) without the private exponent d",
      fails("malformed", tp.keys(without(private_jwk(rsa_pem()), { "d" }))))
  end)

  it("with more than two primes (oth)", function()
    assert.are.equal("malformed: RSA keys with more than two primes (oth) are not supported",
      fails("malformed", tp.keys(copy(private_jwk(rsa_pem()), { oth = { { r = "AQAB", d = "AQAB", t = "AQAB" } } }))))
  end)

  it("but accepts d alone, or all five, and both sign tokens that verify", function()
    local full = private_jwk(rsa_pem())
    local public = assert(tp.keys(without(full, { "d", "p", "q", "dp", "dq", "qi" })))
    for _, jwk in ipairs { full, without(full, crt) } do
      local set = assert(tp.keys(jwk))
      assert.is_true(set:list()[1].private)
      local token = assert(tp.sign({ sub = "a", exp = NOW + 60 }, set))
      assert(tp.verify(token, public, { now = NOW }))
    end
  end)
end)

describe("tp.keys refuses a private key whose public part does not match", function()
  after_each(function() collectgarbage() end)

  -- The DER of a PEM, and back (standard base64, 64 columns).
  local function der_of(pem, command)
    local path = crypto.tmpfile(pem)
    local out = os.tmpname()
    crypto.run(command:format(path, out) .. " 2>/dev/null && echo ok")
    local f = assert(io.open(out, "rb"))
    local der = f:read("a")
    f:close()
    os.remove(path)
    os.remove(out)
    return der
  end
  local function pem_of(der, label)
    local text = b64(der):gsub("-", "+"):gsub("_", "/")
    text = text .. ("="):rep((4 - #text % 4) % 4)
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n"):format(label, text:gsub(("."):rep(64), "%0\n"), label)
  end

  it("for an EC JWK whose d belongs to another key", function()
    local jwk = copy(private_jwk(ec_pem()), { d = private_jwk(other_ec_pem()).d })
    assert.are.equal("malformed: the private part of this EC key does not match its public part",
      fails("malformed", tp.keys(jwk)))
    assert.is_false(tp._openssl_error_pending())
  end)

  it("for an RSA JWK with a changed d, with and without the CRT members", function()
    local full = private_jwk(rsa_pem())
    local d = tp.b64url_decode(full.d)
    local changed = b64(d:sub(1, -2) .. string.char((d:byte(-1) ~ 2)))
    local crt = { "p", "q", "dp", "dq", "qi" }
    for _, jwk in ipairs { copy(full, { d = changed }), without(copy(full, { d = changed }), crt) } do
      assert.are.equal("malformed: the private part of this RSA key does not match its public part",
        fails("malformed", tp.keys(jwk)))
    end
    local dp = tp.b64url_decode(full.dp)
    assert.are.equal("malformed: the private part of this RSA key does not match its public part",
      fails("malformed", tp.keys(copy(full, { dp = b64(dp:sub(1, -2) .. string.char(dp:byte(-1) ~ 4)) }))))
  end)

  it("for an EC PEM key whose private scalar was swapped", function()
    local mine = der_of(ec_pem(), "openssl ec -in %s -outform DER -out %s")
    local theirs = der_of(other_ec_pem(), "openssl ec -in %s -outform DER -out %s")
    -- SEC1 for P-256: 30 77 02 01 01 04 20 <32 bytes of the private scalar> ...
    assert.are.equal("\x30\x77\x02\x01\x01\x04\x20", mine:sub(1, 7))
    local spliced = mine:sub(1, 7) .. theirs:sub(8, 39) .. mine:sub(40)
    assert(tp.keys(pem_of(mine, "EC PRIVATE KEY")))
    assert.are.equal("malformed: PEM block EC PRIVATE KEY: the private part does not match the public part",
      fails("malformed", tp.keys(pem_of(spliced, "EC PRIVATE KEY"))))
    assert.is_false(tp._openssl_error_pending())
  end)

  it("for an RSA PEM key with a changed private exponent", function()
    local der = der_of(rsa_pem(), "openssl rsa -traditional -in %s -outform DER -out %s")
    -- RSAPrivateKey: SEQUENCE { version, n, e, d, ... }: walk to d's last byte.
    local function header(pos)  -- returns the content start and length of the TLV at pos
      local len = der:byte(pos + 1)
      if len < 0x80 then return pos + 2, len end
      local n, value = len - 0x80, 0
      for i = 1, n do value = value * 256 + der:byte(pos + 1 + i) end
      return pos + 2 + n, value
    end
    local pos = header(1)
    for _ = 1, 3 do
      local start, len = header(pos)
      pos = start + len
    end
    local start, len = header(pos)
    local last = start + len - 1
    local changed = der:sub(1, last - 1) .. string.char(der:byte(last) ~ 2) .. der:sub(last + 1)
    assert(tp.keys(pem_of(der, "RSA PRIVATE KEY")))
    assert.are.equal("malformed: PEM block RSA PRIVATE KEY: the private part does not match the public part",
      fails("malformed", tp.keys(pem_of(changed, "RSA PRIVATE KEY"))))
  end)
end)

describe("key_ops (RFC 7517 section 4.3)", function()
  after_each(function() collectgarbage() end)

  local function ec_private_ops(ops)
    return copy(private_jwk(ec_pem()), { kid = "k", key_ops = ops })
  end

  it("keeps a key whose key_ops lack verify out of verification", function()
    local signer = assert(tp.keys(ec_private_ops { "sign" }))
    local token = assert(tp.sign({ sub = "a", exp = NOW + 60 }, signer))
    assert.are.equal("unknown_key: no key has kid k", fails("unknown_key", tp.verify(token, signer, { now = NOW })))
    local both = assert(tp.keys(ec_private_ops { "sign", "verify" }))
    assert(tp.verify(token, both, { now = NOW }))
  end)

  it("lets a key whose key_ops lack sign verify but not sign", function()
    local verifier = assert(tp.keys(ec_private_ops { "verify" }))
    assert.are.equal("unknown_key: the key set holds no private key whose key_ops allow sign",
      fails("unknown_key", tp.sign({ sub = "a" }, verifier)))
    local token = assert(tp.sign({ sub = "a", exp = NOW + 60 }, assert(tp.keys(ec_private_ops()))))
    assert(tp.verify(token, verifier, { now = NOW }))
  end)

  it("ignores operations other than sign and verify", function()
    assert(tp.keys(copy(private_jwk(ec_pem()), { key_ops = { "verify", "encrypt" } })))
  end)

  it("shows what key_ops leave in list() and its printed form", function()
    local info = assert(tp.keys(ec_private_ops { "verify" })):list()[1]
    assert.are.same({ "verify" }, info.key_ops)
    assert.are.equal("EC 256 kid=k private: ES256 (key_ops: verify)", tostring(info))
  end)

  local refused = {
    { "a string instead of an array", "verify", "malformed", "key_ops must be an array of strings" },
    { "an array holding a number", { "verify", 1 }, "malformed", "key_ops must be an array of strings" },
    { "a value twice", { "verify", "verify" }, "malformed", "key_ops lists a value twice" },
    { "neither verify nor sign", { "encrypt" }, "alg_not_allowed", "key_ops allows neither verify nor sign" },
    { "sign only, on a public key", { "sign" }, "alg_not_allowed",
      "key_ops allows neither verify nor sign (sign needs a private key)" },
  }
  for _, case in ipairs(refused) do
    it("refuses key_ops with " .. case[1] .. ", alone and in a set", function()
      local public = without(private_jwk(ec_pem()), { "d" })
      local jwk = copy(public, { key_ops = case[2], kid = "bad" })
      assert.are.equal(case[3] .. ": " .. case[4], fails(case[3], tp.keys(jwk)))
      local set = assert(tp.keys { keys = { public, jwk } })
      assert.are.equal(1, #set)
      assert.are.same({ { index = 2, kid = "bad", reason = case[4] } }, set:skipped())
    end)
  end
end)

describe("forgiving token input", function()
  after_each(function() collectgarbage() end)
  local set, token

  setup(function()
    set = assert(tp.keys(ec_pem()))
    token = assert(tp.sign({ sub = "alice", exp = NOW + 60 }, set))
  end)

  local accepted = {
    { "a trailing newline (a token file)", function(t) return t .. "\n" end },
    { "surrounding C whitespace", function(t) return " \t\r\n\v\f" .. t .. " \r\n" end },
    { "an Authorization header value", function(t) return "Bearer " .. t end },
    { "a lower-case scheme and several spaces", function(t) return "bearer   " .. t end },
    { "an upper-case scheme, a tab, and a newline", function(t) return "BEARER\t" .. t .. "\n" end },
    { "a header line pasted with its leading space", function(t) return "  Bearer " .. t .. "\r\n" end },
  }
  for _, case in ipairs(accepted) do
    it("decode and verify accept " .. case[1], function()
      local input = case[2](token)
      local jwt = assert(tp.decode(input))
      assert.are.equal(token:match("^[^.]+%.[^.]+"), jwt.signing_input)
      local claims = assert(tp.verify(input, set, { now = NOW }))
      assert.are.equal("alice", claims.sub)
    end)
  end

  local PATH = " (looks like a file path: read it with tp.read_token(path))"
  local KEY = " (looks like a key: load it with tp.keys(material))"
  local refused = {
    { "an empty string", "", "the token is empty" },
    { "only whitespace", " \n\t", "the token is empty" },
    { "a scheme with no token", "Bearer ", "the token is empty" },
    { "another scheme", "Basic dXNlcjpwYXNz", "a JWS has 3 dot-separated parts, this has 1" },
    { "an absolute path", "/tmp/bt_u1000", "a JWS has 3 dot-separated parts, this has 1" .. PATH },
    { "a relative path", "./token.jwt", "the header is empty" .. PATH },
    { "a parent-relative path", "../tokens/access", "the header is empty" .. PATH },
    { "a relative file name with a slash", "tokens/access.jwt", "a JWS has 3 dot-separated parts, this has 2" .. PATH },
    { "a home path", "~/.token", "a JWS has 3 dot-separated parts, this has 2" .. PATH },
    { "a path with a slash and no dots", "run/user/1000/bt_u1000",
      "a JWS has 3 dot-separated parts, this has 1" .. PATH },
    { "PEM text", "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
      "a JWS has 3 dot-separated parts, this has 1" .. KEY },
    { "a JWK", '{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}', "a JWS has 3 dot-separated parts, this has 1" .. KEY },
    { "a JWK Set", '{"keys":[]}', "a JWS has 3 dot-separated parts, this has 1" .. KEY },
  }
  for _, case in ipairs(refused) do
    it("decode and verify refuse " .. case[1] .. " with an exact message", function()
      assert.are.equal("malformed: " .. case[3], fails("malformed", tp.decode(case[2])))
      assert.are.equal("malformed: " .. case[3], fails("malformed", tp.verify(case[2], set, { now = NOW })))
    end)
  end

  it("still refuses whitespace inside the token", function()
    fails("malformed", tp.decode(token:sub(1, 5) .. " " .. token:sub(6)))
  end)

  for _, path in ipairs { "/etc/tokenpolicy/signing-key.pem", "./jwks.json", "~/keys/site.jwk", "idp-cert.crt" } do
    it("tp.keys gives a hint for what looks like a path: " .. path, function()
      assert.are.equal("malformed: key material is neither JSON (JWK, JWK Set) nor PEM"
        .. ' (tp.keys takes key material, not a path: tp.keys(io.open(path):read("a")))',
        fails("malformed", tp.keys(path)))
    end)
  end
end)

describe("verify's algs option", function()
  after_each(function() collectgarbage() end)

  it("accepts a single string as well as a list", function()
    local set = assert(tp.keys(ec_pem()))
    local token = assert(tp.sign({ exp = NOW + 60 }, set))
    assert(tp.verify(token, set, { now = NOW, algs = "ES256" }))
    assert(tp.verify(token, set, { now = NOW, algs = { "RS256", "ES256" } }))
    assert.are.equal("alg_not_allowed: alg ES256 is not in the allow-list",
      fails("alg_not_allowed", tp.verify(token, set, { now = NOW, algs = "RS256" })))
  end)

  it("raises for none, an unknown name, or another type", function()
    local set = assert(tp.keys(ec_pem()))
    local token = assert(tp.sign({ exp = NOW + 60 }, set))
    assert.has_error(function() tp.verify(token, set, { algs = "none" }) end,
      "bad argument #3 to 'verify' (algs: 'none' is not a supported signature algorithm (none is never allowed))")
    assert.has_error(function() tp.verify(token, set, { algs = 256 }) end,
      "bad argument #3 to 'verify' (algs must be a string or a non-empty list of strings)")
    assert.has_error(function() tp.verify(token, set, { algs = {} }) end,
      "bad argument #3 to 'verify' (algs must be a string or a non-empty list of strings)")
  end)
end)

describe("readable results", function()
  after_each(function() collectgarbage() end)

  it("verify's claims and header print one line per member, sharing one metatable", function()
    local set = assert(tp.keys(ec_pem(), { kid = "k1" }))
    local token = assert(tp.sign({ sub = "alice", aud = { "a", "b" }, exp = NOW + 60, role = "admin\27]0;x\7" }, set))
    local claims, header = assert(tp.verify(token, set, { now = NOW }))
    assert.are.equal(getmetatable(claims), getmetatable(header))
    assert.are.equal("alg    ES256\nkid    k1\ntyp    JWT", tostring(header))
    local text = tostring(claims)
    assert.matches("^sub    alice\naud    a, b\n"
      .. "exp    2023%-11%-14 22:14:20 UTC %(expired [%dhd]+ ago%)\nrole   admin%?%]0;x%?$", text)
  end)

  it("prints an empty claims table as {}", function()
    local set = assert(tp.keys(ec_pem()))
    local claims = assert(tp.verify(assert(tp.sign({}, set)), set, { require_exp = false }))
    assert.are.equal("{}", tostring(claims))
  end)

  it("keeps claims encodable and comparable: the metatable adds printing only", function()
    local set = assert(tp.keys(ec_pem()))
    local claims = assert(tp.verify(assert(tp.sign({ sub = "a", n = 1, exp = NOW + 60 }, set)), set, { now = NOW }))
    assert.are.equal('{"exp":1700000060,"n":1,"sub":"a"}', tp.json_encode(claims))
    assert.are.same({ sub = "a", n = 1, exp = NOW + 60 }, claims)
    assert.is_nil(claims.missing)
  end)

  it("prints list() entries and skipped() entries, and both lists", function()
    local set = assert(tp.keys(tp.json_encode { keys = {
      { kty = "oct", k = b64(("x"):rep(32)), kid = "mac" },
      { kty = "oct", k = b64(("x"):rep(8)), kid = "short" },
      { kty = "RSA", use = "enc", n = "AQAB", e = "AQAB" } } }))
    assert.are.equal("oct 256 kid=mac private: HS256", tostring(set:list()[1]))
    assert.are.equal("oct 256 kid=mac private: HS256", tostring(set:list()))
    assert.are.equal("#2 kid=short: oct key of 64 bits fits no allowed algorithm", tostring(set:skipped()[1]))
    assert.are.equal("#2 kid=short: oct key of 64 bits fits no allowed algorithm\n"
      .. "#3: key is for use 'enc', not signatures", tostring(set:skipped()))
    assert.are.equal("(none)", tostring(assert(tp.keys(ec_pem())):skipped()))
  end)
end)

describe("options and classes through the shared helpers", function()
  after_each(function() collectgarbage() end)

  it("read every option of decode, verify, sign and keys with the shared messages", function()
    local set = assert(tp.keys(ec_pem()))
    local token = assert(tp.sign({ exp = NOW + 60 }, set))
    local cases = {
      { function() tp.decode(token, { max_size = 0 }) end,
        "bad argument #2 to 'decode' (max_size must be an integer of at least 1)" },
      { function() tp.decode(token, "opts") end, "bad argument #2 to 'decode' (table expected, got string)" },
      { function() tp.verify(token, set, { now = 1.5 }) end, "bad argument #3 to 'verify' (now must be an integer)" },
      { function() tp.verify(token, set, { typ = 1 }) end, "bad argument #3 to 'verify' (typ must be a string)" },
      { function() tp.verify(token, set, { require = 5 }) end,
        "bad argument #3 to 'verify' (require must be a string or a non-empty list of strings)" },
      { function() tp.verify(token, set, { [1] = true }) end,
        "bad argument #3 to 'verify' (option names must be strings)" },
      { function() tp.sign({}, set, { typ = 5 }) end, "bad argument #3 to 'sign' (typ must be a string)" },
      { function() tp.sign({}, set, { header = "x" }) end, "bad argument #3 to 'sign' (header must be a table)" },
      { function() tp.sign({}, set, { kid = {} }) end, "bad argument #3 to 'sign' (kid must be a string)" },
      { function() tp.keys("{}", { kid = true }) end, "bad argument #2 to 'keys' (kid must be a string)" },
    }
    for _, case in ipairs(cases) do assert.has_error(case[1], case[2]) end
  end)

  it("take require as one claim name, and an empty require list as none", function()
    local set = assert(tp.keys(ec_pem()))
    local token = assert(tp.sign({ exp = NOW + 60 }, set))
    assert.are.equal("missing_claim: jti is required",
      fails("missing_claim", tp.verify(token, set, { now = NOW, require = "jti" })))
    assert(tp.verify(token, set, { now = NOW, require = {} }))
  end)

  it("register the classes under their names", function()
    assert.are.equal("tokenpolicy.KeySet", getmetatable(assert(tp.keys(ec_pem()))).__name)
    local jwt = assert(tp.decode(assert(tp.sign({}, assert(tp.keys(ec_pem()))))))
    assert.are.equal("tokenpolicy.JWT", getmetatable(jwt).__name)
    assert.are.equal("tokenpolicy.Claims", getmetatable(jwt.claims).__name)
  end)
end)
