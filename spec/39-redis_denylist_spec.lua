-- The shared denylist on Redis (issue 13): tp.denylist("redis://...") is
-- the same tokenpolicy.Denylist as the file one, its view kept in step with
-- a real redis-server (spec/helpers/redis.lua) through hiredis' formatter
-- and reader; the sans-IO pair sync_request/sync_apply that HAProxy drives;
-- fail-static behaviour; passwords that never show; TLS; and the command
-- line (deny, denylist, logout --revoke) on a Redis URL.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"
local redis = require "helpers.redis"
local secrets = require "helpers.secrets"
local crypto = require "helpers.crypto"

local fails, quote = expect.fails, expect.quote

after_each(function() collectgarbage() end)

-- Shell commands run without the sanitizer runtime `make asan` preloads
-- (they are not ours to check, and starting them under it is slow).
local CLEAN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "

local function sh(cmd)
  return os.execute(CLEAN .. cmd)
end

-- A monotonic time in seconds with fractions, read in the process
-- (luasystem, which busted depends on): a command started to read the
-- clock would add its own start-up to what is measured.
local clock = require("system").monotime

-- Sends a sync_request to the server through bash's /dev/tcp and returns
-- every byte of the answer (the server closes after QUIT): what HAProxy's
-- cosocket does, with no RESP code of ours in between.
local function exchange(srv, dir, request)
  local req, ans = dir .. "/request", dir .. "/answer"
  expect.write_file(req, request)
  assert(sh(("bash -c %s"):format(quote(("exec 3<>/dev/tcp/%s/%d; cat %s >&3; cat <&3 >%s")
    :format(srv.host, srv.port, quote(req), quote(ans))))))
  return expect.read_file(ans)
end

-- A run of the command with TOKENPOLICY_* settings in env.
local function cli(args, env)
  return expect.run_cli(args, env)
end

math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))

-- A server (started with opts) and a scratch directory for the enclosing
-- describe, handed to set once started; both go at its end.
local function fixture(opts, set)
  local srv, dir
  lazy_setup(function()
    srv = redis.start(opts)
    dir = expect.new_dir()
    set(srv, dir)
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if dir then expect.remove_dir(dir) end
  end)
end

-- Runs fn(server) with a server of its own (started with opts), which is
-- stopped even when fn fails.
local function with_server(opts, fn)
  local s = redis.start(opts)
  local ok, err = pcall(fn, s)
  if s.pid then sh("kill -CONT " .. s.pid .. " 2>/dev/null") end
  s:stop()
  assert(ok, err)
end

describe("tp.denylist on Redis", function()
  local srv, dir
  local n = 0
  -- A URL with a prefix of its own, so that every case has its own keys.
  local function fresh(extra)
    n = n + 1
    return srv:url("/0?prefix=c" .. n .. ":" .. (extra or "")), "c" .. n .. ":"
  end

  fixture(nil, function(s, d) srv, dir = s, d end)

  describe("the object", function()
    it("adds, looks up, counts and purges, and the entries are in Redis", function()
      local url, prefix = fresh()
      local now = os.time()
      local dl = assert(tp.denylist(url))
      assert.are.equal(0, dl:count())
      assert.is_true(dl:add("jti-1", now + 3600))
      assert.is_true(dl:add("jti-2", now + 7200))
      assert.is_true(dl:contains("jti-1"))
      assert.is_true(dl:contains("jti-1", now + 3599))
      assert.is_false(dl:contains("jti-1", now + 3600))
      assert.is_false(dl:contains("other"))
      assert.are.equal(2, dl:count())
      assert.are.equal("2", srv:cli("ZCARD", prefix .. "deny"):match("%d+"))
      assert.are.equal(tostring(now + 3600), srv:cli("ZSCORE", prefix .. "deny", "jti-1"):match("%d+"))
      assert.are.equal("2", srv:cli("XLEN", prefix .. "log"):match("%d+"))
      -- purge at a time: the view and Redis both drop what expired by then
      assert.are.equal(1, dl:purge(now + 3600))
      assert.are.equal(1, dl:count())
      assert.are.equal("1", srv:cli("ZCARD", prefix .. "deny"):match("%d+"))
    end)

    it("keeps the later expiry when a jti is added again", function()
      local url, prefix = fresh()
      local now = os.time()
      local dl = assert(tp.denylist(url))
      assert(dl:add("again", now + 100))
      assert(dl:add("again", now + 50))
      assert.are.equal(tostring(now + 100), srv:cli("ZSCORE", prefix .. "deny", "again"):match("%d+"))
      assert(dl:add("again", now + 500))
      assert.are.equal(tostring(now + 500), srv:cli("ZSCORE", prefix .. "deny", "again"):match("%d+"))
      local other = assert(tp.denylist(url))
      assert.is_true(other:contains("again", now + 499))
    end)

    it("prints host:port/db and prefix", function()
      local dl = assert(tp.denylist(srv:url("/3?prefix=gw:"), { sync = false }))
      assert.are.equal(("tokenpolicy.Denylist redis://127.0.0.1:%d/3 prefix gw: (0 entries)"):format(srv.port),
        tostring(dl))
      assert.are.same({ "127.0.0.1", srv.port, false }, { dl:endpoint() })
      dl:close()
      assert.are.equal("tokenpolicy.Denylist (closed)", tostring(dl))
      assert.has_error(function() dl:reload() end, "attempt to use a closed denylist")
    end)

    it("uses the database of the URL", function()
      local dl = assert(tp.denylist(srv:url("/5?prefix=db5:")))
      assert(dl:add("in-db-5", os.time() + 60))
      assert.are.equal("1", srv:cli("-n", "5", "ZCARD", "db5:deny"):match("%d+"))
      assert.are.equal("0", srv:cli("-n", "0", "ZCARD", "db5:deny"):match("%d+"))
    end)

    it("reads what is in Redis when it is made, unless sync is false", function()
      local url = fresh()
      assert(assert(tp.denylist(url)):add("before", os.time() + 60))
      assert.is_true(assert(tp.denylist(url)):contains("before"))
      local lazy = assert(tp.denylist(url, { sync = false }))
      assert.is_false(lazy:contains("before"))
      assert.are.same({ true, 1 }, { lazy:reload() })
      assert.is_true(lazy:contains("before"))
      assert.are.same({ false, 0 }, { lazy:reload() })
    end)

    it("works as an ACL user allowed only the commands docs/denylist.md lists, on its keys", function()
      srv:cli("ACL", "SETUSER", "gateway", "on", ">acl-pw-0123", "~acl:*", "+multi", "+exec", "+echo", "+select",
        "+quit", "+zremrangebyscore", "+zrange", "+zadd", "+xadd", "+xrange", "+xrevrange")
      local url = ("redis://gateway:acl-pw-0123@127.0.0.1:%d/0?prefix=acl:"):format(srv.port)
      local dl = assert(tp.denylist(url))
      assert(dl:add("acl-1", os.time() + 60))
      assert.are.same({ true, 1 }, { assert(tp.denylist(url, { sync = false })):reload() })
      local msg = fails("redis_error", tp.denylist((url:gsub("prefix=acl:", "prefix=other:"))))
      assert.matches("NOPERM", msg, 1, true)
    end)

    it("raises on misuse", function()
      local url = fresh()
      local dl = assert(tp.denylist(url, { sync = false }))
      assert.has_error(function() dl:add("a b", 1) end)
      assert.has_error(function() dl:add("a", 1.5) end)
      assert.has_error(function() dl:sync_apply(42) end)
      assert.has_error(function() tp.denylist(url, { colour = "red" }) end)
      assert.has_error(function() tp.denylist(url, { timeout = 0 }) end)
      assert.has_error(function() tp.denylist(url, { password_file = "a", password_env = "B" }) end)
      assert.has_error(function() tp.denylist(url, { ca_file = "/etc/ssl/x.pem" }) end)  -- not rediss
      local file = assert(tp.denylist(dir .. "/file-list"))
      assert.has_error(function() file:sync_request() end,
        "sync_request: this denylist is a file, not a redis:// one")
      assert.has_error(function() file:endpoint() end)
    end)

    local bad_urls = {
      { "redis://", "the host is missing" },
      { "redis://:6379/0", "the host is missing" },
      { "redis://127.0.0.1:0", "the port must be 1 to 65535" },
      { "redis://127.0.0.1:70000", "the port must be 1 to 65535" },
      { "redis://127.0.0.1:12ab", "the port must be 1 to 65535" },
      { "redis://127.0.0.1/x", "the database must be a number" },
      { "redis://127.0.0.1/0?db=1", "the one parameter allowed is prefix=" },
      { "redis://127.0.0.1/0?prefix=a b", "the prefix must be printable ASCII without spaces" },
      { "redis://127.0.0.1/0#top", "a fragment (#) is not allowed" },
      { "redis://h%20st/0", "the host has a character not allowed in a host name or address" },
      { "redis://user:pa%zzss@127.0.0.1/0", "the password is not valid percent-encoding or is over 1024 bytes" },
      { "redis://[::1/0", "an IPv6 address lacks its ']'" },
    }
    for _, case in ipairs(bad_urls) do
      it("refuses the URL " .. case[1] .. " with malformed", function()
        local msg = fails("malformed", tp.denylist(case[1]))
        assert.are.equal("malformed: denylist URL: " .. case[2], msg)
      end)
    end
  end)

  describe("sync between objects", function()
    it("shows each object's adds to the others after reload, transferring only the new entries", function()
      local url = fresh()
      local now = os.time()
      local a = assert(tp.denylist(url))
      for i = 1, 20 do assert(a:add("old-" .. i, now + 600)) end
      local b = assert(tp.denylist(url))  -- a full sync: all 20
      assert.are.equal(20, b:count())
      assert(a:add("new-1", now + 600))
      assert(a:add("new-2", now + 600))
      -- sans-IO: the request reads the log since b's last sync, and the
      -- answer carries the two new entries only
      local request = b:sync_request()
      assert.matches("tokenpolicy sync since ", request, 1, true)
      local answer = exchange(srv, dir, request)
      assert.are.same({ 2, 2, false }, { b:sync_apply(answer) })
      assert.is_true(b:contains("new-1"))
      assert.is_true(b:contains("new-2"))
      assert.are.equal(22, b:count())
      -- nothing new: nothing transferred
      assert.are.same({ 0, 0, false }, { b:sync_apply(exchange(srv, dir, b:sync_request())) })
      -- and the other way, with the blocking reload
      assert(b:add("from-b", now + 600))
      assert.are.same({ true, 1 }, { a:reload() })
      assert.is_true(a:contains("from-b"))
    end)

    it("ends its request with QUIT, and a cut answer changes nothing", function()
      local url = fresh()
      local a = assert(tp.denylist(url))
      assert(a:add("first", os.time() + 600))
      local b = assert(tp.denylist(url))
      assert(a:add("second", os.time() + 600))
      local request = b:sync_request()
      assert.are.equal("*1\r\n$4\r\nQUIT\r\n", request:sub(-14))
      assert.are.equal("*1\r\n$5\r\nMULTI\r\n", request:sub(1, 15))
      local answer = exchange(srv, dir, request)
      for _, cut in ipairs { 0, 5, #answer // 2, #answer - 40 } do
        local msg = fails("redis_protocol", b:sync_apply(answer:sub(1, cut)))
        assert.is_nil(msg:find("second", 1, true))
        assert.is_false(b:contains("second"))
        assert.are.equal(1, b:count())
      end
      fails("redis_protocol", b:sync_apply("this is not RESP at all\r\n"))
      fails("redis_protocol", b:sync_apply("+OK\r\n+QUEUED\r\n*2\r\n$3\r\nfoo\r\n:1\r\n"))
      assert.are.same({ 1, 1, false }, { b:sync_apply(answer) })
      assert.is_true(b:contains("second"))
    end)

    it("answers every mutated answer with a count or a fail triple, never shrinking the view", function()
      local url = fresh()
      local a = assert(tp.denylist(url))
      for i = 1, 5 do assert(a:add("m-" .. i, os.time() + 600)) end
      local b = assert(tp.denylist(url, { sync = false }))
      local answers = { exchange(srv, dir, b:sync_request()) }  -- a full one
      assert(b:sync_apply(answers[1]))
      assert(a:add("m-6", os.time() + 600))
      answers[2] = exchange(srv, dir, b:sync_request())  -- an incremental one
      local codes = { redis_protocol = true, redis_error = true, redis_auth = true }
      math.randomseed(39)
      for round = 1, 3000 do
        local text = answers[round % 2 + 1]
        local at = math.random(1, #text)
        local kind = round % 3
        if kind == 0 then
          text = text:sub(1, at - 1) .. string.char(math.random(0, 255)) .. text:sub(at + 1)
        elseif kind == 1 then
          text = text:sub(1, at - 1) .. text:sub(at + math.random(1, 8))
        else
          text = text:sub(1, at) .. text:sub(math.random(1, #text))
        end
        local before = b:count()
        local added, msg, code = b:sync_apply(text)
        if added == nil then
          assert.is_true(codes[code] == true, tostring(msg))
        else
          assert.are.equal("integer", math.type(added))
        end
        assert.is_true(b:count() >= before)
      end
      assert.is_true(b:contains("m-1"))
    end)

    it("resyncs fully when the log was trimmed past its last sync", function()
      local url, prefix = fresh()
      local now = os.time()
      local a = assert(tp.denylist(url))
      assert(a:add("kept-1", now + 600))
      local b = assert(tp.denylist(url))
      assert(a:add("kept-2", now + 600))
      assert(a:add("kept-3", now + 600))
      -- an operator (or MAXLEN ~) trims the log past b's last sync
      srv:cli("XTRIM", prefix .. "log", "MAXLEN", "1")
      local answer = exchange(srv, dir, b:sync_request())
      assert.are.same({ 0, 0, true }, { b:sync_apply(answer) })  -- a full sync is due
      local request = b:sync_request()
      assert.matches("tokenpolicy sync full", request, 1, true)
      assert.are.same({ 2, 3, false }, { b:sync_apply(exchange(srv, dir, request)) })
      assert.is_true(b:contains("kept-2"))
      assert.is_true(b:contains("kept-3"))
      -- the blocking reload does both rounds itself
      assert(a:add("kept-4", now + 600))
      assert(a:add("kept-5", now + 600))
      srv:cli("XTRIM", prefix .. "log", "MAXLEN", "1")
      assert.are.same({ true, 2 }, { b:reload() })
      assert.are.equal(5, b:count())
    end)

    it("reads the whole set when asked to (the first sync after an outage), until one is applied", function()
      local url = fresh()
      local now = os.time()
      local a = assert(tp.denylist(url))
      assert(a:add("one", now + 600))
      local b = assert(tp.denylist(url))
      assert.is_nil(b:sync_request():find("tokenpolicy sync full", 1, true))
      local request = b:sync_request { full = true }
      assert.matches("tokenpolicy sync full", request, 1, true)
      assert.matches("tokenpolicy sync full", b:sync_request(), 1, true)  -- still due
      assert.are.same({ 0, 1, false }, { b:sync_apply(exchange(srv, dir, request)) })
      assert.is_nil(b:sync_request():find("tokenpolicy sync full", 1, true))
      assert.has_error(function() b:sync_request { fulll = true } end,
        "bad argument #1 to 'sync_request' (unknown option 'fulll')")
    end)

    it("removes entries from Redis at their exp, with no admin action", function()
      local url, prefix = fresh()
      local a = assert(tp.denylist(url))
      local now = os.time()
      assert(a:add("short", now + 1))
      assert(a:add("long", now + 3600))
      assert.are.equal("2", srv:cli("ZCARD", prefix .. "deny"):match("%d+"))
      redis.sleep(2.1)
      -- any gateway's next sync sweeps the set (every exchange does)
      local b = assert(tp.denylist(url))
      assert.are.equal("1", srv:cli("ZCARD", prefix .. "deny"):match("%d+"))
      assert.is_false(b:contains("short"))
      assert.is_true(b:contains("long"))
      assert.are.equal(1, b:count())  -- an expired entry never enters a view
    end)

    it("fails with redis_error when a key holds something else, and keeps its view", function()
      local url, prefix = fresh()
      local dl = assert(tp.denylist(url))
      assert(dl:add("before", os.time() + 600))
      srv:cli("DEL", prefix .. "deny")
      srv:cli("SET", prefix .. "deny", "not a sorted set")
      local msg = fails("redis_error", dl:add("after", os.time() + 600))
      assert.matches("WRONGTYPE", msg, 1, true)
      assert.is_false(dl:contains("after"))
      srv:cli("DEL", prefix .. "log")
      fails("redis_error", dl:reload())  -- a full sync is due: the set is read
      assert.is_true(dl:contains("before"))
    end)

    it("refuses a listed jti in tp.verifier with revoked", function()
      local url = fresh()
      local key = assert(tp.keys(crypto.rsa_private(), { kid = "k1" }))
      local now = os.time()
      local token = tp.sign({ iss = "https://idp.example", sub = "alice", exp = now + 600, iat = now - 10,
        jti = "stolen-jti" }, key)
      local writer = assert(tp.denylist(url))
      local gateway = assert(tp.denylist(url))
      local v = tp.verifier { keys = key, denylist = gateway }
      assert(v:check(token, now))
      assert(writer:add("stolen-jti", now + 600))
      assert(v:check(token, now))  -- not before the gateway syncs
      assert(gateway:reload())
      fails("revoked", v:check(token, now))
    end)
  end)

  describe("fail-static", function()
    it("keeps its view when Redis is down, fails add clearly, and catches up when it is back", function()
      with_server(nil, function(s)
        local url = s:url("/0?prefix=fs:")
        local a = assert(tp.denylist(url))
        assert(a:add("known", os.time() + 600))
        local b = assert(tp.denylist(url, { connect_timeout = 0.5, timeout = 0.5 }))
        s:halt()
        local t0 = clock()
        local msg = fails("redis_unavailable", b:reload())
        assert.is_true(clock() - t0 < 1.0)
        assert.matches("^redis_unavailable: redis 127%.0%.0%.1:%d+: connecting: ", msg)
        assert.is_true(b:contains("known"))
        fails("redis_unavailable", b:add("while-down", os.time() + 600))
        assert.is_false(b:contains("while-down"))  -- no silent local-only add
        fails("redis_unavailable", b:purge())
        fails("redis_unavailable", tp.denylist(url))
        -- the sync after an outage reads the whole set
        assert.matches("tokenpolicy sync full", b:sync_request(), 1, true)
        -- back, without persistence: Redis forgot everything
        s:start_server()
        assert.are.same({ false, 0 }, { b:reload() })
        assert.is_true(b:contains("known"))  -- the view keeps what it knew
        assert(a:add("after", os.time() + 600))
        assert(b:reload())
        assert.is_true(b:contains("after"))
        assert.is_true(b:contains("known"))
      end)
    end)

    it("keeps the entries across a restart with appendonly persistence", function()
      with_server({ persist = true }, function(s)
        local url = s:url("/0?prefix=p:")
        assert(assert(tp.denylist(url)):add("durable", os.time() + 600))
        s:restart()
        assert.is_true(assert(tp.denylist(url)):contains("durable"))
      end)
    end)

    it("gives up connecting within connect_timeout", function()
      -- a port nobody listens on: refused at once, well within the timeout
      local t0 = clock()
      local msg = fails("redis_unavailable", tp.denylist("redis://127.0.0.1:1/0", { connect_timeout = 0.3 }))
      assert.is_true(clock() - t0 < 0.3 + 0.5)
      assert.matches("connecting", msg, 1, true)
    end)

    it("gives up waiting for an answer within timeout", function()
      with_server(nil, function(s)
        local dl = assert(tp.denylist(s:url("/0?prefix=t:"), { timeout = 0.4 }))
        sh("kill -STOP " .. s.pid)  -- the kernel still accepts; nobody answers
        local t0 = clock()
        local msg = fails("redis_unavailable", dl:reload())
        local took = clock() - t0
        sh("kill -CONT " .. s.pid)
        assert.is_true(took >= 0.35 and took < 0.4 + 0.5, tostring(took))
        assert.matches("no answer within 400 ms", msg, 1, true)
      end)
    end)
  end)
end)

describe("tp.denylist on Redis with a password", function()
  local srv, dir
  local PASSWORD = "pw-" .. crypto.random_bytes(12):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  local SET = secrets.new()
  SET:add("redis password", PASSWORD)

  local function assert_clean(...)
    for _, text in ipairs(secrets.texts(...)) do
      local name, form, context = SET:find(text)
      if name then error(("found the %s (%s): ...%s..."):format(name, form, context), 2) end
    end
  end

  fixture({ password = PASSWORD }, function(s, d) srv, dir = s, d end)

  it("authenticates with the password from the URL, a file or the environment, and never shows it", function()
    local file = dir .. "/redis.pass"
    expect.write_file(file, PASSWORD .. "\n")
    sh("chmod 600 " .. quote(file))
    local lists = {
      assert(tp.denylist(srv:url("/0?prefix=pw:", true))),
      assert(tp.denylist(srv:url("/0?prefix=pw:"), { password_file = file })),
      assert(tp.denylist(srv:url("/0?prefix=pw:"), { password_env = "RP", env = { RP = PASSWORD } })),
    }
    assert(lists[1]:add("with-password", os.time() + 600))
    for _, dl in ipairs(lists) do
      assert.is_boolean((dl:reload()))
      assert.is_true(dl:contains("with-password"))
      assert_clean(tostring(dl), dl:endpoint())
    end
    -- the URL's password percent-encoded works too
    local encoded = PASSWORD:gsub("%-", "%%2D")
    assert(tp.denylist(("redis://:%s@127.0.0.1:%d/0?prefix=pw:"):format(encoded, srv.port)))
  end)

  it("fails with redis_auth on a wrong or missing password, naming no password", function()
    local wrong = "wrong-" .. PASSWORD
    SET:add("wrong password", wrong)
    local cases = {
      { tp.denylist(("redis://:%s@127.0.0.1:%d/0"):format(wrong, srv.port)) },
      { tp.denylist(("redis://default:%s@127.0.0.1:%d/0"):format(wrong, srv.port)) },
      { tp.denylist(srv:url("/0"), { password_env = "RP", env = { RP = wrong } }) },
      { tp.denylist(srv:url("/0")) },
    }
    for _, r in ipairs(cases) do
      local msg = fails("redis_auth", table.unpack(r, 1, 3))
      assert.matches("^redis_auth: redis 127%.0%.0%.1:%d+: authentication failed: ", msg)
      assert_clean(table.unpack(r, 1, 3))
    end
    -- the sans-IO path says the same
    local dl = assert(tp.denylist(("redis://:%s@127.0.0.1:%d/0"):format(wrong, srv.port), { sync = false }))
    local r = { dl:sync_apply(exchange(srv, dir, dl:sync_request())) }
    fails("redis_auth", table.unpack(r, 1, 3))
    assert_clean(table.unpack(r, 1, 3))
  end)

  it("refuses a password file others can read, and a missing one", function()
    local file = dir .. "/open.pass"
    expect.write_file(file, PASSWORD)
    sh("chmod 644 " .. quote(file))
    local r = { tp.denylist(srv:url("/0"), { password_file = file }) }
    fails("insecure_permissions", table.unpack(r, 1, 3))
    assert_clean(table.unpack(r, 1, 3))
    fails("not_found", tp.denylist(srv:url("/0"), { password_file = dir .. "/none" }))
    fails("not_found", tp.denylist(srv:url("/0"), { password_env = "UNSET_VAR", env = {} }))
  end)

  it("never shows the password through the command line", function()
    local file = dir .. "/cli.pass"
    expect.write_file(file, PASSWORD)
    sh("chmod 600 " .. quote(file))
    local url = srv:url("/0?prefix=clipw:")
    local runs = {
      cli({ "deny", "cli-pw", "--exp", "+1h", "--denylist", url, "--redis-password-file", file }),
      cli({ "denylist", "count", "--denylist", url }, { TOKENPOLICY_REDIS_PASSWORD_FILE = file }),
      cli({ "denylist", "contains", "cli-pw", "--denylist", url, "--json" }, { TOKENPOLICY_REDIS_PASSWORD = PASSWORD }),
      cli({ "denylist", "count", "--denylist", url }, { TOKENPOLICY_REDIS_PASSWORD = "x" .. PASSWORD }),
      cli({ "denylist", "count", "--denylist", srv:url("/0", true) .. "?prefix=clipw:" }),
    }
    assert.are.same({ 0, "" }, { runs[1].code, runs[1].err })
    assert.are.same({ 0, "1\n" }, { runs[2].code, runs[2].out })
    assert.are.equal(0, runs[3].code)
    assert.are.equal(2, runs[4].code)
    assert.matches("redis_auth", runs[4].err, 1, true)
    assert.are.same({ 0, "1\n" }, { runs[5].code, runs[5].out })
    for _, run in ipairs(runs) do assert_clean(run.out, run.err) end
  end)
end)

describe("tp.denylist on Redis over TLS", function()
  local srv
  fixture({ tls = true }, function(s) srv = s end)
  -- Generous timeouts: under valgrind a handshake (and reading the system's
  -- CA store) takes seconds, and these cases are about certificates.
  local function tls(opts)
    opts = opts or {}
    opts.timeout, opts.connect_timeout = 10, 10
    return opts
  end

  it("works with the server's CA, by address and by name", function()
    local dl = assert(tp.denylist(srv:url("/0?prefix=tls:"), tls { ca_file = srv.ca_file }))
    assert(dl:add("over-tls", os.time() + 600))
    assert.are.same({ "127.0.0.1", srv.port, true }, { dl:endpoint() })
    local by_name = assert(tp.denylist(("rediss://localhost:%d/0?prefix=tls:"):format(srv.port),
      tls { ca_file = srv.ca_file }))
    assert.is_true(by_name:contains("over-tls"))
    assert.matches("^tokenpolicy.Denylist rediss://localhost:%d+/0 prefix tls: %(1 entry%)$", tostring(by_name))
  end)

  it("fails with redis_tls on a certificate from another CA, or for another name", function()
    local msg = fails("redis_tls", tp.denylist(srv:url("/0"), tls { ca_file = srv.wrong_ca_file }))
    assert.matches("certificate is not trusted", msg, 1, true)
    -- the system store does not know the spec's CA either
    fails("redis_tls", tp.denylist(srv:url("/0"), tls()))
    -- a name the certificate does not carry (it has 127.0.0.1 and localhost)
    fails("redis_tls", tp.denylist(("rediss://127.0.0.2:%d/0"):format(srv.port), tls { ca_file = srv.ca_file }))
  end)

  it("fails clearly when a plain redis:// URL meets a TLS port", function()
    local r = { tp.denylist(("redis://127.0.0.1:%d/0"):format(srv.port), { timeout = 0.5 }) }
    assert.is_nil(r[1])
    assert.is_true(r[3] == "redis_unavailable" or r[3] == "redis_protocol", tostring(r[2]))
  end)
end)

describe("the command line on a Redis denylist", function()
  local srv, dir
  fixture(nil, function(s, d) srv, dir = s, d end)

  it("denies, counts, looks up and purges through bin/tokenpolicy", function()
    local url = srv:url("/0?prefix=cli:")
    local now = os.time()
    local r = cli { "deny", "cli-1", "--exp", tostring(now + 3600), "--denylist", url }
    assert.are.same({ 0, "" }, { r.code, r.err })
    assert.matches("denied cli-1 until", r.out, 1, true)
    r = cli({ "deny", "cli-2", "--exp", tostring(now + 30), "--json" }, { TOKENPOLICY_DENYLIST = url })
    assert.are.equal(0, r.code, r.err)
    assert.are.same({ ok = true, jti = "cli-2", exp = now + 30, count = 2 }, tp.json_decode(r.out))
    assert.are.same({ code = 0, out = "2\n", err = "" }, cli { "denylist", "count", "--denylist", url })
    assert.are.equal(0, cli({ "denylist", "contains", "cli-1", "--denylist", url }).code)
    assert.are.equal(1, cli({ "denylist", "contains", "nope", "--denylist", url }).code)
    r = cli { "denylist", "purge", "--at", tostring(now + 60), "--denylist", url, "--json" }
    assert.are.equal(0, r.code, r.err)
    assert.are.same({ removed = 1, count = 1, at = now + 60 }, tp.json_decode(r.out))
    assert.are.equal("1", srv:cli("ZCARD", "cli:deny"):match("%d+"))
    -- Redis down: exit 2 and one clear line
    r = cli { "denylist", "count", "--denylist", "redis://127.0.0.1:1/0" }
    assert.are.equal(2, r.code)
    assert.matches("redis_unavailable: redis 127.0.0.1:1: connecting:", r.err, 1, true)
    r = cli { "deny", "x", "--exp", "+1h", "--denylist", "redis://127.0.0.1:99999/0" }
    assert.are.equal(2, r.code)
    assert.matches("malformed: denylist URL: the port must be 1 to 65535", r.err, 1, true)
  end)

  it("logout --revoke --denylist URL adds a JWT's jti to Redis", function()
    local key = assert(tp.keys(crypto.rsa_private(), { kid = "k1" }))
    local now = os.time()
    local token = tp.sign({ iss = "https://idp.example", sub = "alice", exp = now + 600, iat = now - 10,
      jti = "logout-jti" }, key)
    local home = dir .. "/home"
    sh("mkdir -p " .. quote(home) .. " && chmod 700 " .. quote(home))
    local file = home .. "/bt"
    assert(tp.write_token(file, token))
    local env = { HOME = home, TMPDIR = home, XDG_RUNTIME_DIR = home, BEARER_TOKEN_FILE = file }
    local url = srv:url("/0?prefix=logout:")
    local dry = cli({ "logout", "--scheme", "wlcg", "--revoke", "--denylist", url, "--dry-run", "--json" }, env)
    assert.are.equal("0", srv:cli("ZCARD", "logout:deny"):match("%d+"))
    assert.matches("would add it to tokenpolicy.Denylist redis://", dry.out, 1, true)
    local r = cli({ "logout", "--scheme", "wlcg", "--revoke", "--denylist", url, "--json" }, env)
    local report = tp.json_decode(r.out)
    assert.are.same({ "denylist", true }, { report.actions[1].action, report.actions[1].ok })
    assert.are.equal(tostring(now + 600), srv:cli("ZSCORE", "logout:deny", "logout-jti"):match("%d+"))
    assert.is_true(assert(tp.denylist(url)):contains("logout-jti"))
  end)
end)
