-- JWKS sources: tp.jwks(uri, opts), a cached key set with a TTL and a
-- rate-limited refetch on unknown kids, used by verify in place of a KeySet;
-- and sources fed with :set_keys(text) by a caller that fetched the JWKS.
-- The JWKS comes from spec/helpers/http_peer.js (/jwks-rotating), which
-- serves whatever JWK Set a file holds and logs every fetch.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"

local NOW = 1800000000

local http_peer = require "helpers.http_peer"
local start_peer, stop_peer = http_peer.start, http_peer.stop

local fails = require("helpers.expect").fails

describe("jwks sources", function()
  local peer, old_signer, new_signer, other_signer, any_signer, old_jwk, new_jwk
  local files = {}

  setup(function()
    peer = start_peer()
    local old_pem = crypto.rsa_private()
    local new_pem = crypto.run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048")
    old_signer = assert(tp.keys(old_pem, { kid = "old" }))
    new_signer = assert(tp.keys(new_pem, { kid = "new" }))
    other_signer = assert(tp.keys(new_pem, { kid = "other" }))
    any_signer = assert(tp.keys(new_pem))  -- no kid: signs with any kid asked for
    old_jwk = crypto.rsa_public_jwk(old_pem, "old")
    new_jwk = crypto.rsa_public_jwk(new_pem, "new")
  end)
  teardown(function()
    stop_peer(peer)
    for _, f in ipairs(files) do os.remove(f) end
  end)
  after_each(function()
    collectgarbage()
  end)

  -- What the peer serves from file: a list of JWKs, a bare HTTP status, or
  -- (a string) that text.
  local function serve(file, what)
    local f = assert(io.open(file, "w"))
    f:write(type(what) == "table" and assert(tp.json_encode({ keys = what })) or tostring(what))
    f:close()
  end

  -- How many times the peer was asked for file's JWKS.
  local function fetches(file)
    local n = 0
    for line in io.lines(peer.log) do
      if assert(tp.json_decode(line)).path == "/jwks-rotating?file=" .. file then n = n + 1 end
    end
    return n
  end

  -- A source over a fresh file serving what, on a clock the spec moves.
  local function source(what, opts)
    local file = os.tmpname()
    files[#files + 1] = file
    serve(file, what)
    local clock = { t = NOW }
    opts = opts or {}
    opts.now = function() return clock.t end
    local src = tp.jwks(peer.base .. "/jwks-rotating?file=" .. file, opts)
    return src, file, clock
  end

  local function token(signer, kid)
    return assert(tp.sign({ sub = "alice", iat = NOW - 10, exp = NOW + 3600 }, signer,
                          { alg = "RS256", kid = kid }))
  end

  local function verify(tok, src)
    return tp.verify(tok, src, { now = NOW })
  end

  it("fetches a JWK Set of 10,000 keys (4 MB, over the 1 MiB other answers may take)", function()
    local jwks = {}
    for i = 1, 10000 do
      local jwk = {}
      for k, v in pairs(new_jwk) do jwk[k] = v end
      jwk.kid = "k" .. i
      jwks[i] = jwk
    end
    local src = source(jwks)
    local set = assert(src:keys(NOW))
    assert.are.equal(10000, #set)
    local claims = assert(verify(token(any_signer, "k10000"), src))
    assert.are.equal("alice", claims.sub)
  end)

  it("fetches nothing until needed and prints the URI without its query", function()
    local src, file = source({ old_jwk })
    assert.are.equal(0, fetches(file))
    assert.matches("^tokenpolicy%.JwksSource: http://127%.0%.0%.1:%d+/jwks%-rotating, no keys yet$", tostring(src))
    local set = assert(src:keys())
    assert.are.same({ "old" }, set:kids())
    assert.are.equal(1, fetches(file))
    assert.matches("^tokenpolicy%.JwksSource: http://127%.0%.0%.1:%d+/jwks%-rotating, 1 key, fetched 0s ago$",
                   tostring(src))
    assert.is_nil(tostring(src):find(file, 1, true))
    assert.are.equal(1, src:stats().fetches)
  end)

  it("keeps the key set for the TTL and fetches it again after", function()
    local src, file, clock = source({ old_jwk })
    local first = assert(src:keys())
    clock.t = NOW + 299
    assert.are.equal(first, src:keys())
    assert(verify(token(old_signer), src))
    assert.are.equal(1, fetches(file))
    assert.matches("fetched 4m59s ago$", tostring(src))
    clock.t = NOW + 300
    local second = assert(src:keys())
    assert.are_not.equal(first, second)
    assert.are.equal(2, fetches(file))
    -- an explicit now, and a shorter TTL
    local short, short_file = source({ old_jwk }, { ttl = 10 })
    assert(short:keys(NOW))
    assert(short:keys(NOW + 9))
    assert.are.equal(1, fetches(short_file))
    assert(short:keys(NOW + 10))
    assert.are.equal(2, fetches(short_file))
  end)

  it("refetches once on an unknown kid, then verifies with the rotated key", function()
    local src, file, clock = source({ old_jwk })
    assert(verify(token(old_signer), src))
    assert.are.equal(1, fetches(file))
    serve(file, { new_jwk })
    clock.t = NOW + 5
    local claims = assert(verify(token(new_signer), src))
    assert.are.equal("alice", claims.sub)
    assert.are.equal(2, fetches(file))
    assert(verify(token(new_signer), src))
    assert.are.equal(2, fetches(file))
    assert.are.same({ "new" }, assert(src:keys()):kids())
  end)

  it("does not refetch for a second unknown kid within min_refetch", function()
    local src, file, clock = source({ old_jwk })
    assert(src:keys())
    serve(file, { new_jwk })
    clock.t = NOW + 1
    assert(verify(token(new_signer), src))
    assert.are.equal(2, fetches(file))
    clock.t = NOW + 60
    local msg = fails("unknown_key", verify(token(other_signer), src))
    assert.matches("kid other", msg)
    assert.are.equal(2, fetches(file))
    clock.t = NOW + 61
    fails("unknown_key", verify(token(other_signer), src))
    assert.are.equal(3, fetches(file))
  end)

  it("fetches at most once for a flood of unknown kids", function()
    local src, file, clock = source({ old_jwk })
    assert(src:keys())
    for i = 1, 100 do
      clock.t = NOW + i % 50
      fails("unknown_key", verify(token(any_signer, "flood-" .. i), src))
    end
    assert.is_true(fetches(file) - 1 <= 1)
    assert.are.equal(2, fetches(file))
    -- a custom limit
    local slow, slow_file = source({ old_jwk }, { min_refetch = 3600 })
    assert(slow:keys())
    clock.t = NOW
    for i = 1, 100 do
      fails("unknown_key", verify(token(any_signer, "flood-" .. i), slow))
    end
    assert.are.equal(2, fetches(slow_file))
  end)

  it("keeps serving the old key set when a fetch fails", function()
    local src, file, clock = source({ old_jwk })
    local set = assert(src:keys())
    serve(file, 503)
    clock.t = NOW + 300
    assert.are.equal(set, src:keys())
    assert.are.equal(2, fetches(file))
    assert.matches("1 key, fetched 5m ago %(stale%), last fetch failed$", tostring(src))
    assert(verify(token(old_signer), src))
    -- no retry sooner than min_refetch after a failure
    clock.t = NOW + 359
    assert.are.equal(set, src:keys())
    assert.are.equal(2, fetches(file))
    -- an explicit refresh reports the failure, and keeps the set
    fails("unavailable", src:refresh())
    assert.are.equal(3, fetches(file))
    assert.are.equal(set, src:keys())
    serve(file, { old_jwk })
    clock.t = NOW + 420
    assert.are_not.equal(set, src:keys())
    assert.are.equal(4, fetches(file))
    assert.is_nil(tostring(src):find("failed", 1, true))
  end)

  it("returns the fail triple when there is no key set at all", function()
    local src, file = source(500)
    fails("http", src:keys())
    fails("http", verify(token(old_signer), src))
    assert.are.equal(1, fetches(file))  -- the failure is not retried at once
    local gone = tp.jwks("http://127.0.0.1:1/jwks")
    fails("unreachable", gone:keys())
    fails("malformed", tp.jwks("ftp://127.0.0.1/jwks"):keys())
    local bad, bad_file = source("{not json")
    fails("malformed", bad:keys())
    assert.are.equal(1, fetches(bad_file))
  end)

  it("never fetches during verify with refetch=false", function()
    local src, file, clock = source({ old_jwk }, { refetch = false })
    fails("unavailable", verify(token(old_signer), src))
    assert.are.equal(0, fetches(file))
    assert.matches(", no keys yet, refetch off$", tostring(src))
    assert(src:refresh())
    assert.are.equal(1, fetches(file))
    assert(verify(token(old_signer), src))
    serve(file, { new_jwk })
    clock.t = NOW + 1000
    fails("unknown_key", verify(token(new_signer), src))
    assert(verify(token(old_signer), src))  -- past the TTL: still the old set
    assert.are.equal(1, fetches(file))
    -- a gateway task refreshes it
    local set, fetched = src:refresh()
    assert.is_true(fetched)
    assert.are.same({ "new" }, set:kids())
    assert(verify(token(new_signer), src))
    assert.are.equal(2, fetches(file))
  end)

  it("rate-limits refresh unless forced", function()
    local src, file, clock = source({ old_jwk })
    local set, fetched = src:refresh()
    assert.is_true(fetched)
    local again, fetched_again = src:refresh()
    assert.are.equal(set, again)
    assert.is_false(fetched_again)
    assert.are.equal(1, fetches(file))
    local _, forced = src:refresh({ force = true })
    assert.is_true(forced)
    assert.are.equal(2, fetches(file))
    local _, later = src:refresh(NOW + 60)
    assert.is_true(later)
    clock.t = NOW + 61
    local _, limited = src:refresh()
    assert.is_false(limited)
    assert.are.equal(3, fetches(file))
  end)

  it("leaves verify with a plain KeySet as it was", function()
    local set = assert(tp.keys(tp.json_encode({ keys = { old_jwk } })))
    assert(verify(token(old_signer), set))
    fails("unknown_key", verify(token(new_signer), set))
  end)

  describe("set_keys (a caller that fetched the JWKS itself feeds the source)", function()
    local function jwks_text(...)
      return assert(tp.json_encode({ keys = { ... } }))
    end

    it("replaces the key set with the text and starts the TTL again", function()
      local clock = { t = NOW }
      local src = tp.jwks{ now = function() return clock.t end, ttl = 60 }
      assert.are.equal("tokenpolicy.JwksSource: fed with set_keys, no keys yet", tostring(src))
      local set = assert(src:set_keys(jwks_text(old_jwk)))
      assert.are.equal("tokenpolicy.KeySet", getmetatable(set).__name)
      assert.are.same({ "old" }, set:kids())
      assert.are.equal(set, src:keys())
      assert.are.same({ fetches = 0, fed = 1, fetched_at = NOW, failed = false }, src:stats())
      clock.t = NOW + 90
      assert.are.equal("tokenpolicy.JwksSource: fed with set_keys, 1 key, set 1m30s ago (stale)", tostring(src))
      assert.are.equal(set, src:keys())  -- stale, but nothing else to serve
      local newer = assert(src:set_keys(jwks_text(old_jwk, new_jwk)))
      assert.are.same({ "old", "new" }, newer:kids())
      assert.are.equal(NOW + 90, src:stats().fetched_at)
      assert.are.equal("tokenpolicy.JwksSource: fed with set_keys, 2 keys, set 0s ago", tostring(src))
      assert(src:set_keys(jwks_text(new_jwk), NOW + 200))  -- an explicit now
      assert.are.equal(NOW + 200, src:stats().fetched_at)
      assert.are.equal(3, src:stats().fed)
    end)

    it("keeps the old key set when the text is bad, with the exact fail triple of keys", function()
      local src = tp.jwks{ now = NOW }
      local set = assert(src:set_keys(jwks_text(old_jwk)))
      for _, text in ipairs{ "{not json", '{"kty":"oct","k":"c2hvcnQ"}', "", '{"keys":{}}' } do
        local ok, msg, code = src:set_keys(text)
        local want_ok, want_msg, want_code = tp.keys(text)
        assert.is_nil(want_ok)
        assert.is_nil(ok)
        assert.are.equal(want_msg, msg)
        assert.are.equal(want_code, code)
        assert.are.equal(set, src:keys())
      end
      assert.are.equal("malformed", select(3, src:set_keys("{not json")))
      assert.are.equal(1, src:stats().fed)
      assert(verify(token(old_signer), src))
    end)

    it("verifies through a fed source, and picks up a rotation when fed again", function()
      local src = tp.jwks{ now = NOW }
      fails("unavailable", verify(token(old_signer), src))
      assert(src:set_keys(jwks_text(old_jwk)))
      assert.are.equal("alice", assert(verify(token(old_signer), src)).sub)
      fails("unknown_key", verify(token(new_signer), src))
      assert(src:set_keys(jwks_text(new_jwk)))
      assert.are.equal("alice", assert(verify(token(new_signer), src)).sub)
      fails("unknown_key", verify(token(old_signer), src))
    end)

    it("with refetch=false and a URI, an unknown kid is unknown_key without any request", function()
      -- /slow answers after 3 s: a request would show in the log and in the time taken.
      local src, file = source({ old_jwk }, { refetch = false, timeout = 2 })
      local slow = tp.jwks(peer.base .. "/slow", { refetch = false, timeout = 2, now = NOW })
      local started = os.time()
      for _, s in ipairs{ src, slow } do
        assert(s:set_keys(jwks_text(old_jwk)))
        assert(verify(token(old_signer), s))
        local msg = fails("unknown_key", verify(token(new_signer), s))
        assert.matches("kid new", msg)
        assert.are.equal(0, s:stats().fetches)
      end
      assert.is_true(os.time() - started <= 1)
      assert.matches("/jwks%-rotating, 1 key, set 0s ago, refetch off$", tostring(src))
      assert.are.equal(0, fetches(file))
      for line in io.lines(peer.log) do
        assert.is_nil(line:find('"path":"/slow"', 1, true))
      end
    end)

    it("a source without a URI has nothing to fetch from", function()
      local src = tp.jwks{}
      assert.are.equal("unavailable: jwks: no key set has been given yet (set_keys)", select(2, src:keys()))
      fails("unavailable", verify(token(old_signer), src))
      assert.has_error(function() src:refresh() end,
        "calling 'refresh' on bad self (the source has no jwks_uri: feed it with set_keys)")
      assert.has_error(function() tp.jwks{ refetch = true } end,
        "bad argument #1 to 'jwks' (refetch needs a jwks_uri (a source without one is fed with set_keys))")
      assert.has_error(function() tp.jwks{ timeout = 1 } end, "bad argument #1 to 'jwks' (unknown option 'timeout')")
      assert.has_error(function() tp.jwks(nil, {}) end, "bad argument #1 to 'jwks' (string or table expected, got nil)")
      assert.has_error(function() src:set_keys(42) end)
      assert.has_error(function() src:set_keys({ keys = {} }) end)
      assert.has_error(function() src:set_keys("{}", "soon") end)
      assert.are.equal("userdata", type(tp.jwks{ refetch = false, ttl = 10, now = NOW }))
    end)
  end)

  it("raises on misuse", function()
    local url = peer.base .. "/jwks-rotating?file=/nonexistent"
    assert.has_error(function() tp.jwks(42) end)
    assert.has_error(function() tp.jwks() end)
    assert.has_error(function() tp.jwks(url, 5) end)
    assert.has_error(function() tp.jwks(url, { tll = 5 }) end, "bad argument #2 to 'jwks' (unknown option 'tll')")
    assert.has_error(function() tp.jwks(url, { ttl = "5" }) end)
    assert.has_error(function() tp.jwks(url, { ttl = -1 }) end)
    assert.has_error(function() tp.jwks(url, { min_refetch = 1.5 }) end)
    assert.has_error(function() tp.jwks(url, { refetch = 0 }) end)
    assert.has_error(function() tp.jwks(url, { now = "now" }) end)
    assert.has_error(function() tp.jwks(url, { timeout = 0 }) end)
    assert.has_error(function() tp.jwks(url, { insecure = "yes" }) end)
    local src = tp.jwks(url, { now = NOW })
    assert.has_error(function() src:keys("soon") end)
    assert.has_error(function() src:refresh(nil, { force = 1 }) end)
    assert.has_error(function() src:refresh(nil, { forse = true }) end)
    assert.has_error(function() src.keys(42) end)
    assert.has_error(function() src.refresh({}) end)
    local odd = tp.jwks(url, { now = function() return "later" end })
    assert.has_error(function() odd:keys() end)
    assert.has_error(function() tp.verify(token(old_signer), {}) end,
      "bad argument #2 to 'verify' (tokenpolicy.KeySet or tokenpolicy.JwksSource expected, got table)")
    assert.has_error(function() tp.verify(token(old_signer)) end)
  end)
end)
