-- Faults: what tokenpolicy does when its peers and its disk fail it, each
-- with a real peer. An identity provider that hangs, trickles, answers
-- garbage, 500, 503 or 429 (spec/helpers/http_peer.js, its /fault modes);
-- a full disk (a small tmpfs, filled) under every file tokenpolicy
-- rewrites; PostgreSQL stopped in the middle of fix-long-lived; HAProxy
-- whose key file turns to garbage or whose JWKS URI hangs.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"
local faults = require "helpers.faults"
local http_peer = require "helpers.http_peer"
local crypto = require "helpers.crypto"

local UID = tp.euid()
local it_root = UID == 0 and it or pending
local quote, slurp, write = expect.quote, expect.read_file, expect.write_file

-- Every call below runs with this timeout; "within the timeout" allows
-- this much more, generously, for a loaded 2-core machine.
local TIMEOUT = 0.8
local MARGIN = 2

local TOKEN = "opaque-access-token-7f3c9e1b2a"
local CLIENT_SECRET = "client-s3cret-value"

-- bin/tokenpolicy under `env -i` (helpers/expect.lua).
local run = require("helpers.expect").run_cli

-- A user's sandbox as the session workflows see it: Rucio's tmp, HOME
-- and the XDG runtime directory under `dir` (or each where given).
local function sandbox(dir, where)
  where = where or {}
  local s = { dir = dir, tmp = where.tmp or (dir .. "/tmp"), home = where.home or (dir .. "/home"),
    run = where.run or (dir .. "/run") }
  assert(os.execute(("mkdir -p %s %s %s"):format(quote(s.tmp), quote(s.home), quote(s.run))))
  s.cfg = where.cfg or (dir .. "/rucio.cfg")
  s.env = { LOGNAME = "jdoe", TMPDIR = s.tmp, RUCIO_CONFIG = s.cfg, HOME = s.home, XDG_RUNTIME_DIR = s.run }
  s.bt = s.run .. "/bt_u" .. UID
  s.settings = s.home .. "/.config/arvados/settings.conf"
  return s
end

after_each(function() collectgarbage() end)

describe("an identity provider that fails", function()
  local peer

  setup(function() peer = http_peer.start() end)
  teardown(function() http_peer.stop(peer) end)

  -- The calls, each given the URL of a fault; `shown` is the URL its
  -- messages name, `method` the request's.
  local calls = {
    { name = "oidc_metadata", method = "GET",
      call = function(url) return tp.oidc_metadata(url, { timeout = TIMEOUT, ttl = 0 }) end,
      shown = function(url) return url .. "/.well-known/openid-configuration" end },
    { name = "fetch_keys", method = "GET",
      call = function(url) return tp.fetch_keys(url, { timeout = TIMEOUT }) end },
    { name = "jwks:refresh", what = "fetch_keys", method = "GET",
      call = function(url) return tp.jwks(url, { timeout = TIMEOUT }):refresh() end },
    { name = "revoke", method = "POST",
      call = function(url)
        return tp.revoke{ endpoint = url, token = TOKEN, client_id = "cli", client_secret = CLIENT_SECRET,
          timeout = TIMEOUT }
      end },
    { name = "introspect", method = "POST",
      call = function(url)
        return tp.introspect{ endpoint = url, token = TOKEN, client_id = "cli", client_secret = CLIENT_SECRET,
          timeout = TIMEOUT }
      end },
  }

  -- The faults (paths under the peer's /fault), the code each call gives,
  -- the end of its message, and the Retry-After seconds (a number, or
  -- {low, high} for an HTTP date, whose seconds depend on the clock).
  local RESPONSE = "temporarily_unavailable: try again later"
  local cases = {
    { "hangs", "hang", "timeout", ": Timeout was reached", slow = true },
    { "trickles its answer a byte at a time", "trickle/every=100", "timeout", ": Timeout was reached", slow = true },
    { "sends its headers, then trickles the body", "trickle-body/every=100", "timeout", ": Timeout was reached",
      slow = true },
    { "answers bytes that are not HTTP", "garbage", "http", ": Unsupported protocol" },
    { "closes the connection without an answer", "close", "http", ": Server returned nothing (no headers, no data)" },
    { "answers 500", "status/code=500", "http", " answered 500: " .. RESPONSE },
    { "answers 503 with Retry-After in seconds", "status/code=503/retry=7", "unavailable",
      " answered 503: " .. RESPONSE, retry = 7 },
    { "answers 503 with Retry-After as an HTTP date", "status/code=503/date=120", "unavailable",
      -- up to 121: the peer dates its answer up to a second after the call
      -- took its clock (seen under ASan in CI)
      " answered 503: " .. RESPONSE, retry = { 117, 121 } },
    { "answers 503 without Retry-After", "status/code=503", "unavailable", " answered 503: " .. RESPONSE },
    { "answers 503 with a Retry-After that is neither", "status/code=503/retry=soon", "unavailable",
      " answered 503: " .. RESPONSE },
    { "answers 429 with Retry-After", "status/code=429/retry=3", "unavailable", " answered 429: " .. RESPONSE,
      retry = 3 },
  }

  for _, case in ipairs(cases) do
    describe("that " .. case[1], function()
      for _, c in ipairs(calls) do
        it(("makes %s fail with %s within the timeout"):format(c.name, case[3]), function()
          local url = peer.base .. "/fault/" .. case[2]
          local took, r = faults.timed(c.call, url)
          assert.is_nil(r[1])
          assert.are.equal(case[3], r[3], r[2])
          local shown = (c.shown or function(u) return u end)(url)
          assert.are.equal(("%s: %s: %s %s%s"):format(case[3], c.what or c.name, c.method, shown, case[4]), r[2])
          assert.is_true(took <= TIMEOUT + MARGIN, ("took %.2f s"):format(took))
          if case.slow then
            assert.is_true(took >= TIMEOUT - 0.05, ("took %.2f s: the timeout ended it, not the peer"):format(took))
          end
          local retry = r[4]
          if case.retry == nil then
            assert.is_nil(retry)
          elseif type(case.retry) == "number" then
            assert.are.equal(case.retry, retry)
          else
            assert.is_true(math.type(retry) == "integer" and retry >= case.retry[1] and retry <= case.retry[2],
              tostring(retry))
          end
          assert.are.equal(0, tp._http_calls_open())
        end)
      end
    end)
  end

  describe("that answers 200 with a body that is not JSON", function()
    it("makes oidc_metadata, fetch_keys, jwks:refresh and introspect fail with malformed, naming the request",
      function()
        local url = peer.base .. "/fault/not-json"
        expect.fails("malformed", tp.oidc_metadata(url, { timeout = TIMEOUT, ttl = 0 }))
        local not_keys = "malformed: fetch_keys: GET " .. url .. ": key material is neither JSON (JWK, JWK Set) nor PEM"
        assert.are.equal(not_keys, expect.fails("malformed", tp.fetch_keys(url, { timeout = TIMEOUT })))
        assert.are.equal(not_keys, expect.fails("malformed", tp.jwks(url, { timeout = TIMEOUT }):refresh()))
        assert.are.equal("malformed: introspect: POST " .. url .. ": the answer is not JSON: invalid JSON syntax or "
          .. "encoding", expect.fails("malformed", tp.introspect{ endpoint = url, token = TOKEN, timeout = TIMEOUT }))
      end)

    it("is a successful revocation: RFC 7009 asks for a 2xx status, not for a body", function()
      assert.is_true(tp.revoke{ endpoint = peer.base .. "/fault/not-json", token = TOKEN, timeout = TIMEOUT })
    end)
  end)

  describe("that is down", function()
    it("makes every call fail with unreachable at once", function()
      -- Port 1 on loopback: nothing listens there, the connection is refused.
      local url = "http://127.0.0.1:1/x"
      for _, c in ipairs(calls) do
        local took, r = faults.timed(c.call, url)
        assert.are.equal("unreachable", r[3], r[2])
        assert.is_true(took <= TIMEOUT + MARGIN)
      end
    end)
  end)

  describe("behind a JWKS source that had keys", function()
    local dir
    before_each(function() dir = expect.new_dir() end)
    after_each(function() expect.remove_dir(dir) end)

    it("keeps verifying with the keys it has while refreshes hang, trickle or fail", function()
      local pem = crypto.rsa_private(2048)
      local signer = assert(tp.keys(pem))
      local file = dir .. "/served.jwks"
      write(file, tp.json_encode{ keys = { crypto.rsa_public_jwk(pem, "k1") } })
      local src = tp.jwks(peer.base .. "/jwks-rotating?file=" .. file, { timeout = TIMEOUT, min_refetch = 0 })
      local now = os.time()
      local token = assert(tp.sign({ sub = "alice", iat = now, exp = now + 600 }, signer,
        { alg = "RS256", kid = "k1" }))
      assert.are.equal(1, #assert(src:refresh()))
      for _, case in ipairs { { "hang", "timeout" }, { "trickle", "timeout" }, { "garbage", "http" },
                              { "close", "http" }, { "503", "unavailable" }, { "not-json", "malformed" } } do
        write(file, case[1])
        local took, r = faults.timed(src.refresh, src)
        assert.are.equal(case[2], r[3], r[2])
        assert.is_true(took <= TIMEOUT + MARGIN)
        assert.are.equal(1, #assert(src:keys()))
        assert.are.equal("alice", assert(tp.verify(token, src)).sub)
      end
    end)
  end)
end)

describe("logout with revoke, when the identity provider fails", function()
  local peer, s

  setup(function() peer = http_peer.start() end)
  teardown(function() http_peer.stop(peer) end)
  before_each(function()
    s = sandbox(expect.new_dir())
    assert(tp.write_token(s.bt, TOKEN))
  end)
  after_each(function() expect.remove_dir(s.dir) end)

  local function logout(issuer)
    return tp.logout{ scheme = "wlcg", revoke = true, issuer = issuer, client_id = "cli",
      client_secret = CLIENT_SECRET, timeout = TIMEOUT, env = s.env, uid = UID }
  end

  -- issuer: a path under the peer; target: what the failed action names
  -- (the issuer when its metadata failed, else the revocation endpoint).
  local cases = {
    { "the metadata request hangs", "/fault/hang", "issuer", "timeout", slow = true },
    { "the metadata trickles", "/fault/trickle/every=100", "issuer", "timeout", slow = true },
    { "the metadata is garbage", "/fault/garbage", "issuer", "http" },
    { "the metadata answers 503 with Retry-After", "/fault/status/code=503/retry=7", "issuer", "unavailable",
      retry = 7 },
    { "the revocation hangs", "/faultiss/hang", "endpoint", "timeout", slow = true },
    { "the revocation trickles", "/faultiss/trickle-body/every=100", "endpoint", "timeout", slow = true },
    { "the revocation answers garbage", "/faultiss/garbage", "endpoint", "http" },
    { "the revocation answers 500", "/faultiss/status/code=500", "endpoint", "http" },
    { "the revocation answers 503 with Retry-After", "/faultiss/status/code=503/retry=120", "endpoint",
      "unavailable", retry = 120 },
    { "the revocation answers 429 with Retry-After", "/faultiss/status/code=429/retry=30", "endpoint",
      "unavailable", retry = 30 },
  }
  for _, case in ipairs(cases) do
    it(("removes the token file and names the failed revocation when %s (%s)"):format(case[1], case[4]), function()
      local issuer = peer.base .. case[2]
      local target = case[3] == "issuer" and issuer or (peer.base .. case[2]:gsub("^/faultiss/", "/fault/"))
      local took, r = faults.timed(logout, issuer)
      local report = r[1]
      assert.is_true(took <= TIMEOUT + MARGIN, ("took %.2f s"):format(took))
      if case.slow then assert.is_true(took >= TIMEOUT - 0.05) end
      assert.is_false(report.ok)
      assert.are.equal(2, #report.actions)
      local revoke, remove = report.actions[1], report.actions[2]
      assert.are.same({ "revoke", target, false, case[4], case.retry },
        { revoke.action, revoke.target, revoke.ok, revoke.code, revoke.retry_after })
      assert.are.equal(case[4] .. ": ", revoke.message:sub(1, #case[4] + 2))
      if case.retry then
        assert.are.equal(("; the provider asks to try again in %d s"):format(case.retry),
          revoke.message:sub(-#("; the provider asks to try again in  s") - #tostring(case.retry)))
      end
      assert.are.same({ action = "remove", target = s.bt, ok = true, message = "removed" }, remove)
      assert.is_nil(tp.stat(s.bt))
      local text = tostring(report)
      assert.is_truthy(text:find("^" .. case[4] .. " +revoke +" .. target:gsub("%p", "%%%0") .. " +" .. case[4]
        .. ": "), text)
      assert.is_truthy(text:find("\nnot everything could be ended: see above$"), text)
      assert.is_nil(text:find(TOKEN, 1, true))
      -- a second logout has nothing left to do
      assert.is_true(logout(issuer).nothing_to_do)
    end)
  end

  it("exits 1 from tokenpolicy revoke, saying how long the provider asks to wait", function()
    local file = s.dir .. "/token"
    assert(tp.write_token(file, TOKEN))
    local endpoint = peer.base .. "/fault/status/code=503/retry=120"
    local r = run({ "revoke", file, "--endpoint", endpoint }, { TOKENPOLICY_CLIENT_ID = "cli" })
    assert.are.same({ code = 1, err = "", out = "not revoked: unavailable: revoke: POST " .. endpoint
      .. " answered 503: temporarily_unavailable: try again later; the provider asks to try again in 120 s\n" }, r)
    r = run({ "revoke", file, "--endpoint", endpoint, "--json" }, { TOKENPOLICY_CLIENT_ID = "cli" })
    assert.are.equal(1, r.code)
    assert.are.same({ ok = false, code = "unavailable", endpoint = endpoint, retry_after = 120,
      message = "unavailable: revoke: POST " .. endpoint .. " answered 503: temporarily_unavailable: try again later" },
      tp.json_decode(r.out))
    r = run({ "revoke", file, "--issuer", peer.base .. "/fault/status/code=429/retry=9" })
    assert.are.equal(1, r.code)
    assert.matches("; the provider asks to try again in 9 s\n$", r.out)
  end)
end)

describe("a full disk", function()
  local fs, s
  local NOSPACE = "No space left on device"

  before_each(function()
    if UID ~= 0 then return end
    fs = faults.tmpfs("256k")
  end)
  after_each(function()
    faults.unmount(fs)
    if s then expect.remove_dir(s.dir) end
    fs, s = nil, nil
  end)

  it_root("leaves the old token byte for byte when write_token cannot write the new one", function()
    local path = fs.dir .. "/jdoe/.rucio_jdoe/auth_token_for_account_root"
    local old = "root-root-webui-" .. ("0123456789abcdef"):rep(2)
    assert(tp.write_token(path, old))
    local names = faults.names(fs.dir .. "/jdoe/.rucio_jdoe")
    faults.fill(fs)
    assert.are.equal("io: write_token: writing " .. path .. ": " .. NOSPACE,
      expect.fails("io", tp.write_token(path, ("x"):rep(4096))))
    assert.are.equal(old, slurp(path))
    assert.are.same(names, faults.names(fs.dir .. "/jdoe/.rucio_jdoe"))  -- no temporary file left
    -- room again: the same call succeeds
    faults.unfill(fs)
    assert.is_true(tp.write_token(path, "new-token"))
    assert.are.equal("new-token", slurp(path))
  end)

  it_root("leaves rucio.cfg byte for byte when switch --persist cannot rewrite it, and says so", function()
    s = sandbox(expect.new_dir(), { cfg = fs.dir .. "/rucio.cfg" })
    local cfg = "# site config\n[client]\naccount = root\nauth_type = userpass\nrucio_host = https://rucio.example\n"
    write(s.cfg, cfg)
    faults.fill(fs)
    local result = tp.switch_account{ account = "alice", persist = true, env = s.env, uid = UID }
    assert.are.equal("export RUCIO_ACCOUNT=alice", result.export)
    assert.are.same({ { action = "persist", target = s.cfg, ok = false, code = "io",
      message = "io: rewrite_config: writing " .. s.cfg .. ": " .. NOSPACE } }, result.actions)
    assert.are.equal(cfg, slurp(s.cfg))
    assert.are.same({ "rucio.cfg" }, faults.names(fs.dir))
    -- the command: the export line all the same, the failure on stderr, exit 1
    local r = run({ "switch", "alice", "--persist" }, s.env)
    assert.are.same({ code = 1, out = "export RUCIO_ACCOUNT=alice\n",
      err = "no token for alice: run rucio whoami to log in\nnot done: io: rewrite_config: writing " .. s.cfg
        .. ": " .. NOSPACE .. "\n" }, r)
    assert.are.equal(cfg, slurp(s.cfg))
  end)

  it_root("leaves settings.conf byte for byte when logout cannot drop its token line, and says so", function()
    s = sandbox(expect.new_dir(), { home = fs.dir .. "/home" })
    local settings = "ARVADOS_API_HOST=arv.example\nARVADOS_API_TOKEN=v2/zzzzz-gj3su-0123456789abcde/"
      .. ("s"):rep(40) .. "\nARVADOS_API_HOST_INSECURE=false\n"
    assert(os.execute("mkdir -p " .. quote(s.home .. "/.config/arvados")))
    write(s.settings, settings)
    assert(os.execute("chmod 600 " .. quote(s.settings)))
    faults.fill(fs)
    local report = tp.logout{ scheme = "arvados", env = s.env, uid = UID }
    assert.is_false(report.ok)
    assert.are.same({ { action = "remove", target = s.settings .. " (ARVADOS_API_TOKEN)", ok = false, code = "io",
      message = "io: rewrite_config: writing " .. s.settings .. ": " .. NOSPACE } }, report.actions)
    assert.are.equal(settings, slurp(s.settings))
    assert.are.same({ "settings.conf" }, faults.names(s.home .. "/.config/arvados"))
  end)

  -- The denylist is a journal (an add appends a line): on a full tmpfs an
  -- append still fits in the file's last page, so the list is padded to
  -- end on a page (4096 bytes) and the next line needs a page of its own.
  local function fill_page(list, path)
    local size = #slurp(path)
    local n = 0
    while size < 4096 do
      n = n + 1
      local room = 4096 - size
      -- a line is "<jti> 2000000000\n": 12 bytes beside the jti, which has 1 to 256
      local jti_len = room - 12 <= 256 and room - 12 or math.min(256, room - 12 - 13)
      assert(jti_len >= 1)
      local prefix = ("pad%d-"):format(n)
      assert.is_true(list:add(prefix .. ("p"):rep(jti_len - #prefix), 2000000000))
      size = #slurp(path)
    end
    assert.are.equal(4096, size)
  end

  it_root("leaves the denylist byte for byte, in memory too, when add cannot write it", function()
    local path = fs.dir .. "/denylist"
    local list = assert(tp.denylist(path))
    assert.is_true(list:add("jti-one", 2000000000))
    assert.is_true(list:add("jti-old", 1500000000))
    fill_page(list, path)
    local entries = list:count()
    local old = slurp(path)
    local names = faults.names(fs.dir)
    faults.fill(fs)
    assert.are.equal("io: denylist " .. path .. ": writing: " .. NOSPACE,
      expect.fails("io", list:add("jti-two", 2000000000)))
    assert.are.equal(old, slurp(path))
    assert.are.same(names, faults.names(fs.dir))
    assert.is_false(list:contains("jti-two", 1900000000))
    assert.are.equal(entries, list:count())
    -- a purge that leaves an entry has to write it
    assert.are.equal("io: denylist " .. path .. ": writing: " .. NOSPACE,
      expect.fails("io", list:purge(1600000000)))
    assert.are.equal(old, slurp(path))
    -- (memory may drop what had expired: no answer changes for a later now)
    assert.is_true(list:contains("jti-one", 1600000000))
    assert.is_false(list:contains("jti-old", 1600000000))
    list:close()
    -- a fresh reader sees the old list
    local again = assert(tp.denylist(path))
    assert.are.equal(entries, again:count())
    again:close()
  end)

  it_root("makes logout report the failed denylist entry and still remove the token file", function()
    s = sandbox(expect.new_dir())
    local hmac = tp.keys('{"kty":"oct","kid":"k","k":"' .. tp.b64url_encode(("s"):rep(32)) .. '"}')
    local jwt = assert(tp.sign({ sub = "alice", iss = "https://iam.example", jti = "jti-full", exp = 2000000000,
      iat = 1700000000 }, hmac, { alg = "HS256" }))
    assert(tp.write_token(s.bt, jwt))
    local path = fs.dir .. "/denylist"
    local list = assert(tp.denylist(path))
    assert.is_true(list:add("jti-one", 2000000000))
    fill_page(list, path)
    local old = slurp(path)
    faults.fill(fs)
    local report = tp.logout{ scheme = "wlcg", revoke = true, denylist = list, env = s.env, uid = UID,
      now = 1800000000 }
    assert.is_false(report.ok)
    assert.are.same({
      { action = "denylist", target = "jti jti-full", ok = false, code = "io",
        message = "io: denylist " .. path .. ": writing: " .. NOSPACE },
      { action = "remove", target = s.bt, ok = true, message = "removed" },
    }, report.actions)
    assert.is_nil(tp.stat(s.bt))
    assert.are.equal(old, slurp(path))
    list:close()
  end)
end)

describe("PostgreSQL stopped in the middle of fix-long-lived", function()
  local postgres = require "helpers.postgres"
  local NOW = 1700000000
  local pg

  -- 400 tokens of 20 users: a quarter without expiry, a quarter far in the
  -- future (both long-lived under 24h), the rest within the day.
  local function load()
    pg:psql([[
TRUNCATE users, api_client_authorizations;
INSERT INTO users (id, uuid, owner_uuid, email, username, created_at, updated_at)
  SELECT i, 'zzzzz-tpzed-' || lpad(i::text, 15, '0'), 'zzzzz-tpzed-000000000000000', 'u' || i || '@example.org',
         'u' || i, '2020-01-01', '2020-01-01' FROM generate_series(1, 20) i;
INSERT INTO api_client_authorizations (id, api_token, user_id, expires_at, created_at, updated_at, uuid)
  SELECT i, 'tok' || i, i % 20 + 1,
         CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN '2030-01-01'::timestamp ELSE '2023-11-14 23:00:00'::timestamp END,
         '2020-01-01', '2020-01-01', 'zzzzz-gj3su-' || lpad(i::text, 15, '0') FROM generate_series(1, 400) i;
]])
  end

  -- Every row's id, expiry and update time, in order.
  local function rows()
    return pg:psql("SELECT id, coalesce(expires_at::text, 'null'), updated_at FROM api_client_authorizations "
      .. "ORDER BY id")
  end

  local function long_lived()
    return pg:psql("SELECT count(*) FROM api_client_authorizations WHERE expires_at IS NULL "
      .. "OR expires_at > '2023-11-15 22:13:20'")
  end

  lazy_setup(function()
    pg = postgres.new()
    pg:create_arvados()
  end)
  lazy_teardown(function()
    if pg then pg:stop() end
  end)

  for _, mode in ipairs { "immediate", "fast" } do
    it(("rolls every row back and exits 2 with unreachable (%s shutdown)"):format(mode), function()
      if not pg.running then pg:start() end
      load()
      local before, selected = rows(), long_lived()
      assert.are.equal("200\n", selected)
      -- Another session locks a selected row in the middle: the UPDATE
      -- changes the rows before it, then waits there; the server stops.
      pg:hold("SELECT id FROM api_client_authorizations WHERE id = 200 FOR UPDATE;")
      pg:halt_later(1, mode)
      local sanitizer = os.getenv("ASAN_OPTIONS")
      local env = { TZ = "UTC" }
      -- LuaDBI's driver leaks what a statement the server died in held:
      -- not ours to check (see spec 30).
      if sanitizer then env.ASAN_OPTIONS = sanitizer .. ":detect_leaks=0" end
      local took, r = faults.timed(run, { "fix-long-lived", "--db", pg:conninfo(), "--max-token-lifetime", "24h",
        "--now", tostring(NOW) }, env)
      r = r[1]
      assert.are.equal(2, r.code, r.err)
      assert.matches("^tokenpolicy: unreachable: PostgreSQL %(arvados%): fix: server closed the connection "
        .. "unexpectedly [^\n]+; nothing was changed %(the fix is one transaction, rolled back%): run it again "
        .. "once the database answers\n$",
        r.err)
      assert.are.equal("", r.out)
      assert.is_true(took < 30)
      -- Started again (once the old server is gone): nothing changed.
      local started
      for _ = 1, 100 do
        started = pcall(pg.start, pg)
        if started then break end
        postgres.sleep(0.1)
      end
      assert.is_true(started)
      assert.are.equal(before, rows())
      assert.are.equal(selected, long_lived())
      -- and the same fix, uninterrupted, updates exactly those rows
      r = run({ "fix-long-lived", "--db", pg:conninfo(), "--max-token-lifetime", "24h", "--now", tostring(NOW) },
        { TZ = "UTC" })
      assert.are.same({ code = 0, err = "",
        out = "Setting token expiration to: 2023-11-15 22:13:20 +0000\n200 tokens updated.\n" }, r)
      assert.are.equal("0\n", long_lived())
    end)
  end
end)

describe("HAProxy (examples/haproxy/haproxy.cfg) whose keys go bad", function()
  local haproxy = require "helpers.haproxy"
  local ISS, AUD = "https://op.example", "api"
  -- Each request, while the keys go bad, answers within this (curl gives up at 3 s;
  -- a request that waited for the fetch would take its 5 s timeout or more).
  local REQUEST_MAX = 2
  local pem, signer

  local function token(kid, changes)
    local now = os.time()
    local claims = { iss = ISS, aud = AUD, sub = "alice", scope = "read", iat = now, exp = now + 600,
      jti = "jti-" .. now .. "-" .. math.random(1000000) }
    for k, v in pairs(changes or {}) do claims[k] = v end
    return assert(tp.sign(claims, signer, { alg = "RS256", kid = kid })), claims
  end

  local function bearer(t) return { authorization = "Bearer " .. t } end

  -- n requests with token t: each 200 (the old keys) within REQUEST_MAX.
  local function served(h, t, n)
    for _ = 1, n or 1 do
      local took, r = faults.timed(haproxy.get, h, bearer(t), { max_time = 3 })
      assert.are.equal(200, r[1], r[3])
      assert.is_true(took <= REQUEST_MAX, ("a request took %.2f s"):format(took))
    end
  end

  -- Serves t (each request checked as above) until every Lua state has
  -- logged `text` once more than `before` times.
  local function serving_until_logged(h, t, text, before, timeout)
    local deadline = faults.clock() + (timeout or 15)
    while haproxy.count(h, text) < before + h.states do
      assert.is_true(faults.clock() < deadline, "waited in vain for every Lua state to log: " .. text
        .. "\n" .. haproxy.output(h))
      served(h, t)
      haproxy.sleep(0.1)
    end
  end

  lazy_setup(function()
    pem = crypto.rsa_private(2048)
    signer = assert(tp.keys(pem))
  end)

  it("refuses to start with a key file that holds no key (every request would be refused)", function()
    local dir = haproxy.sandbox()
    write(dir .. "/keys.jwks", '{"keys": []}')
    local ok, out = haproxy.check{ dir = dir, settings = { KEYS_FILE = dir .. "/keys.jwks", DENYLIST = dir .. "/d" } }
    os.execute("rm -rf " .. quote(dir))
    assert.is_false(ok)
    assert.matches("tokenpolicy-auth: keys_file " .. dir .. "/keys.jwks: malformed: the key set is empty", out, 1, true)
  end)

  for _, mode in ipairs { "lua-load", "lua-load-per-thread" } do
    describe("with " .. mode .. ", a key file", function()
      local h, path, good
      lazy_setup(function()
        local dir = haproxy.sandbox()
        path = dir .. "/keys.pem"
        good = crypto.public_of(pem)
        write(path, good)
        h = haproxy.start{ dir = dir, mode = mode, settings = { KEYS_FILE = path, ISS = ISS, AUD = AUD,
          DENYLIST = dir .. "/denylist", RELOAD_EVERY = 1, NBTHREAD = 2 } }
      end)
      lazy_teardown(function() haproxy.stop(h) end)

      local function restore(t)
        local before = haproxy.count(h, "tokenpolicy-auth: keys_file " .. path .. ": fine again")
        os.remove(path)
        write(path, good)
        serving_until_logged(h, t, "tokenpolicy-auth: keys_file " .. path .. ": fine again", before)
      end

      local cases = {
        -- A NUL first: random bytes starting with "{" (after any spaces) are
        -- taken for JSON, with another message (CI met it once).
        { "random bytes", function() write(path, "\0" .. crypto.random_bytes(4095)) end,
          "malformed: key material is neither JSON (JWK, JWK Set) nor PEM" },
        { "an empty file", function() write(path, "") end,
          "malformed: key material is neither JSON (JWK, JWK Set) nor PEM" },
        { "a truncated JWK Set", function() write(path, '{"keys": [{"kty": "RSA", "n": "') end,
          "malformed: key material is not valid JSON" },
        { "a JWK Set without keys", function() write(path, '{"keys": []}') end,
          "malformed: the key set is empty" },
        { "a file over the size limit", function() write(path, ("x"):rep(17 * 1024 * 1024)) end, "too_large: " },
        { "a FIFO (which would block a naive read)", function()
          os.remove(path)
          assert(os.execute("mkfifo " .. quote(path)))
        end, function() return "io: read_config: " .. path .. " is a FIFO (named pipe), not a regular file" end },
        { "nothing (removed)", function() os.remove(path) end, "not_found: " },
      }
      for _, case in ipairs(cases) do
        it("keeps serving valid tokens with the old keys, without delay, when it becomes " .. case[1], function()
          local t = token()
          served(h, t, 2)
          local warning = "tokenpolicy-auth: keys_file " .. path .. ": "
            .. (type(case[3]) == "function" and case[3]() or case[3])
          local before = haproxy.count(h, warning)
          case[2]()
          serving_until_logged(h, t, warning, before)
          served(h, t, 3)
          restore(t)
          served(h, t, 2)
        end)
      end
    end)

    for _, fault in ipairs { "hang", "trickle" } do
      describe(("with %s, a JWKS URI whose fetch %ss"):format(mode, fault), function()
        local h, peer, file, uri, dir
        local good
        lazy_setup(function()
          peer = http_peer.start()
          dir = haproxy.sandbox()
          file = dir .. "/served.jwks"
          good = tp.json_encode{ keys = { crypto.rsa_public_jwk(pem, "key-a") } }
          write(file, good)
          uri = peer.base .. "/jwks-rotating"
          h = haproxy.start{ dir = dir, mode = mode, settings = { JWKS_URI = uri .. "?file=" .. file, ISS = ISS,
            AUD = AUD, DENYLIST = dir .. "/denylist", RELOAD_EVERY = 1, MIN_REFETCH = 1, NBTHREAD = 2 } }
        end)
        lazy_teardown(function()
          haproxy.stop(h)
          http_peer.stop(peer)
        end)

        -- How many JWKS requests the peer has had.
        local function fetches()
          local n = 0
          for line in io.lines(peer.log) do
            if line:find('"/jwks-rotating?', 1, true) then n = n + 1 end
          end
          return n
        end

        it("keeps serving with the old keys, no request waiting for the fetch", function()
          local t = token("key-a")
          served(h, t, 2)
          local gave_up = "tokenpolicy-auth: jwks_uri " .. uri
            .. ": timeout: no answer within 5 s (keeping the previous keys)"
          local gave_up_before = haproxy.count(h, gave_up)
          write(file, fault)
          local before = fetches()
          -- requests while a fetch is under way (given up on after jwks_timeout, 5 s)
          haproxy.wait_for("a JWKS fetch to start", function() return fetches() > before end, 10, 0.05)
          local start = faults.clock()
          while faults.clock() - start < 3 do
            served(h, t)
            -- a token with a kid the keys lack asks the task for an early round: refused at once all the same
            local took, r = faults.timed(haproxy.get, h, bearer(token("key-new")), { max_time = 3 })
            assert.are.equal(401, r[1])
            assert.is_true(took <= REQUEST_MAX)
          end
          -- a jti denied meanwhile is refused after the next round, fetch or no fetch
          local denied, claims = token("key-a")
          served(h, denied)
          local list = assert(tp.denylist(dir .. "/denylist"))
          assert(list:add(claims.jti, claims.exp))
          list:close()
          haproxy.wait_for("the denylist to be reloaded", function()
            return haproxy.get(h, bearer(denied)) == 401
          end, 15, 0.2)
          served(h, t, 2)
          if fault == "hang" then
            -- HAProxy's httpclient holds a hanging fetch about 20 s: each state gives up on it at 5 s
            serving_until_logged(h, t, gave_up, gave_up_before, 20)
          end
          -- the provider answers again: the keys stay good
          write(file, good)
          haproxy.sleep(2)
          served(h, t, 2)
        end)
      end)
    end
  end
end)
