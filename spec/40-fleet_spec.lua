-- A fleet of gateways sharing one Redis denylist: three real HAProxy
-- gateways (Debian's 2.6, each its own process and port, running
-- examples/haproxy/haproxy.cfg with nbthread 2) and one real redis-server
-- (spec/helpers/fleet.lua). A revocation made with the CLI reaches every
-- gateway within a second; Redis going away changes nothing the gateways
-- knew; a gateway that cannot reach Redis at start still serves. Once with
-- lua-load and once with lua-load-per-thread.
local tp = require "tokenpolicy"
local crypto = require "helpers.crypto"
local expect = require "helpers.expect"
local haproxy = require "helpers.haproxy"
local fleet = require "helpers.fleet"
local gateway = require "tokenpolicy.haproxy"

local ISS, AUD = "https://op.example", "api"
local PASSWORD = "fleet-redis-secret-5b1e0c9d"
local GATEWAYS = 3
local WITHIN = 1.0  -- seconds a revocation may take to reach every gateway

local pem
local function signer()
  pem = pem or crypto.rsa_private(2048)
  return assert(tp.keys(pem))
end

local serial = 0
-- A valid token with a jti of its own.
local function token(key)
  serial = serial + 1
  local now = os.time()
  local claims = { iss = ISS, aud = AUD, sub = "alice", scope = "read", iat = now, exp = now + 600,
    jti = ("fleet-%d-%d-%d"):format(serial, now, math.random(1e6)) }
  return assert(tp.sign(claims, key, { alg = "RS256" })), claims
end

local function bearer(t)
  return { authorization = "Bearer " .. t }
end

local function challenge(code)
  return ('Bearer realm="api", error="invalid_token", error_description="%s"'):format(code)
end

local function refused(h, code, t)
  local status, got = haproxy.get(h, bearer(t))
  assert.are.same({ 401, challenge(code) }, { status, got["www-authenticate"] })
end

-- `tokenpolicy deny` through the CLI, the password inline in the URL.
local function deny(redis, jti)
  local url = redis:url("/0", true)
  local r = expect.run_cli({ "deny", jti, "--exp", "+1h", "--denylist", url })
  assert(r.code == 0, "tokenpolicy deny failed: " .. r.err)
  assert.is_nil((r.out .. r.err):find(PASSWORD, 1, true))
end

-- Denies a token's jti and returns the seconds until every gateway of the
-- list refused it (from the moment the CLI returned: the revocation is in
-- Redis then); fails beyond WITHIN.
local function propagation(list, redis, t, claims)
  deny(redis, claims.jti)
  local since = fleet.now()
  local took = fleet.wait_all(list, bearer(t), 401, since, 5)
  assert(took <= WITHIN, ("the revocation took %.3f s to reach all %d gateways"):format(took, #list))
  return took
end

-- The gateway's key file and the settings shared by the fleet.
local function settings(dir, redis, more)
  haproxy.write(dir .. "/keys.pem", crypto.public_of(pem))
  local s = { KEYS_FILE = dir .. "/keys.pem", DENYLIST = redis:url("/0"), REDIS_PASSWORD_FILE = redis.password_file,
    SYNC_EVERY = 0.2, NBTHREAD = 2, LEEWAY = 1, MAX_TOKEN_LIFETIME = "1h" }
  for k, v in pairs(more or {}) do s[k] = v end
  return s
end

describe("tokenpolicy.haproxy fleet options, in process", function()
  after_each(function() collectgarbage() end)

  local cases = {
    { { keys_file = "k", denylist = "/var/lib/gw/denylist", denylist_file = "/x" },
      "bad argument #1 to 'register' (the options 'denylist_file' and 'redis' go with a redis:// or rediss:// "
        .. "denylist)" },
    { { keys_file = "k", redis = { password_file = "/p" } },
      "bad argument #1 to 'register' (the options 'denylist_file' and 'redis' go with a redis:// or rediss:// "
        .. "denylist)" },
    { { keys_file = "k", denylist = "redis://127.0.0.1:6379", sync_every = 0 },
      "bad argument #1 to 'register' (option 'sync_every' must be a positive number of seconds, got 0)" },
    { { keys_file = "k", denylist = "redis://127.0.0.1:6379", sync_every = "1" },
      "bad argument #1 to 'register' (option 'sync_every' must be a positive number of seconds, got 1)" },
    { { keys_file = "k", denylist = "redis://127.0.0.1:6379", redis = "pw" },
      "bad argument #1 to 'register' (option 'redis' must be a table of tp.denylist options (password_file, "
        .. "password_env, ...), got string)" },
  }
  for _, case in ipairs(cases) do
    it("raises " .. case[2], function()
      assert.has_error(function() gateway.check_options(case[1]) end, case[2])
    end)
  end

  it("takes a Redis Denylist made already, but not the redis options with it", function()
    local made = assert(tp.denylist("redis://127.0.0.1:6379/0", { sync = false }))
    local file = assert(tp.denylist(os.tmpname()))
    assert.are.same({ true, false, true, false },
      { gateway.is_redis(made), gateway.is_redis(file), gateway.is_redis("rediss://10.0.0.5"),
        gateway.is_redis("/var/lib/redis") })
    assert.are.equal(made, gateway.check_options{ keys_file = "k", denylist = made, denylist_file = "/x" }.denylist)
    assert.has_error(function()
      gateway.check_options{ keys_file = "k", denylist = made, redis = { password_file = "/p" } }
    end, "bad argument #1 to 'register' (the option 'redis' goes with a redis:// URL, not with a Denylist made "
      .. "already)")
  end)

  it("never reloads a Redis denylist in the reload task (that would block): only the sync task syncs it",
    function()
    local srv = fleet.redis_start { password = PASSWORD }
    local lines = {}
    local log = { Info = function(l) lines[#lines + 1] = l end, Warning = function(l) lines[#lines + 1] = l end }
    local dir = haproxy.sandbox()
    haproxy.write(dir .. "/keys.pem", crypto.public_of(pem or crypto.rsa_private(2048)))
    local ok, err = pcall(function()
      local made = assert(tp.denylist(srv:url("/0"), { password_file = srv.password_file }))
      local gw = gateway.gateway(gateway.check_options{ keys_file = dir .. "/keys.pem", denylist = made }, log)
      assert.are.equal(made, gw.denylist)
      assert.are.same({ ("denylist redis://127.0.0.1:%d"):format(srv.port), "127.0.0.1" },
        { gw.redis_what, gw.redis_address })
      fleet.redis_down(srv)
      local before = #lines
      assert.is_false(gw:reload_denylist())  -- no file to reload, and no network
      assert.are.equal(before, #lines)
    end)
    fleet.redis_stop(srv)
    os.execute("rm -rf " .. dir)
    assert(ok, err)
  end)

  it("syncs every 0.2 s by default and takes fractions of a second", function()
    assert.are.equal(0.2, gateway.check_options{ keys_file = "k", denylist = "redis://127.0.0.1" }.sync_every)
    assert.are.equal(0.05, gateway.check_options{ keys_file = "k", denylist = "rediss://127.0.0.1",
      sync_every = 0.05 }.sync_every)
  end)

  it("shows a Redis URL without its user, password, database or query", function()
    assert.are.equal("redis://10.0.0.5:6379", gateway.printable_redis("redis://gw:" .. PASSWORD
      .. "@10.0.0.5:6379/2?prefix=tp:"))
    assert.are.equal("rediss://127.0.0.1", gateway.printable_redis("rediss://:" .. PASSWORD .. "@127.0.0.1"))
    assert.are.equal("redis://127.0.0.1:6379", gateway.printable_redis("redis://127.0.0.1:6379"))
  end)

  it("connects HAProxy's sockets to IP addresses only (they do not resolve names)", function()
    assert.are.same({ "127.0.0.1", "10.0.0.5", "ipv6@::1", "127.0.0.1" },
      { gateway.socket_address("127.0.0.1"), gateway.socket_address("10.0.0.5"),
        gateway.socket_address("::1"), gateway.socket_address("localhost") })
    assert.is_nil(gateway.socket_address("redis.example.org"))
  end)
end)

for _, mode in ipairs { "lua-load", "lua-load-per-thread" } do
  describe("three HAProxy gateways (" .. mode .. ", nbthread 2) sharing one redis-server", function()
    after_each(function() collectgarbage() end)
    local redis, list, key, synced

    setup(function()
      key = signer()
      redis = fleet.redis_start { password = PASSWORD }
      list = {}
      for i = 1, GATEWAYS do
        local dir = haproxy.sandbox()
        list[i] = fleet.start_gateway { dir = dir, mode = mode, settings = settings(dir, redis) }
      end
      synced = ("tokenpolicy-auth: denylist redis://127.0.0.1:%d: synced, "):format(redis.port)
    end)
    teardown(function()
      fleet.stop(list)
      fleet.redis_stop(redis)
    end)

    it("syncs the denylist in full at start, each Lua state saying so once", function()
      for _, h in ipairs(list) do
        assert.are.equal(h.states, haproxy.count(h, synced))
      end
    end)

    it("refuses a jti denied through the CLI on all three gateways within 1 s", function()
      local t, claims = token(key)
      for _, h in ipairs(list) do
        assert.are.equal(200, (haproxy.get(h, bearer(t))))  -- now in each verifier's cache
      end
      local took = propagation(list, redis, t, claims)
      print(("\n  [%s] revocation reached %d gateways in %.3f s"):format(mode, GATEWAYS, took))
      for _, h in ipairs(list) do
        refused(h, "revoked", t)
        assert.are.equal(200, (haproxy.get(h, bearer((token(key))))))
      end
    end)

    it("keeps refusing revoked tokens and serving valid ones while Redis is down, says so once, "
      .. "and takes new revocations within 1 s when it is back", function()
      local revoked, claims = token(key)
      propagation(list, redis, revoked, claims)
      -- The step that failed first depends on when Redis went (connecting,
      -- receiving, a reply cut short): the line ends the same way.
      local down = "entries known; retrying every 0.2 s)"
      local back = ("tokenpolicy-auth: denylist redis://127.0.0.1:%d: answering again"):format(redis.port)
      haproxy.sleep(0.5)  -- two more syncs: every Lua state of every gateway has it
      local ok, err = pcall(function()
        fleet.redis_down(redis)
        for _, h in ipairs(list) do
          haproxy.wait_for("every Lua state to log that Redis is down", function()
            return haproxy.count(h, down) >= h.states
          end, 5)
        end
        haproxy.sleep(1.2)  -- six more syncs fail: still one line per Lua state
        local line = ("\n[^\n]*tokenpolicy%%-auth: denylist redis://127%%.0%%.0%%.1:%d: redis_%%a+: [^\n]*%s"):format(
          redis.port, down:gsub("%p", "%%%0"))
        for _, h in ipairs(list) do
          assert.are.equal(h.states, haproxy.count(h, down))
          assert(haproxy.output(h):find(line), haproxy.output(h))
          for _ = 1, 3 do
            refused(h, "revoked", revoked)
            assert.are.equal(200, (haproxy.get(h, bearer((token(key))))))
          end
        end
      end)
      fleet.redis_up(redis)
      assert(ok, err)
      for _, h in ipairs(list) do
        haproxy.wait_for("every Lua state to log that Redis is back", function()
          return haproxy.count(h, back) >= h.states
        end, 5)
        refused(h, "revoked", revoked)
      end
      local t, c = token(key)
      local took = propagation(list, redis, t, c)
      print(("\n  [%s] after Redis came back, a revocation reached %d gateways in %.3f s"):format(mode, GATEWAYS,
        took))
    end)

    it("refuses a token revoked before a gateway started from that gateway's first request", function()
      local t, claims = token(key)
      deny(redis, claims.jti)
      local dir = haproxy.sandbox()
      local late = fleet.start_gateway { dir = dir, mode = mode, settings = settings(dir, redis) }
      local ok, err = pcall(function()
        assert.are.equal(late.states, haproxy.count(late, synced))
        refused(late, "revoked", t)
        assert.are.equal(200, (haproxy.get(late, bearer((token(key))))))
      end)
      haproxy.stop(late)
      assert(ok, err)
    end)

    it("never writes a token or the Redis password to its log", function()
      for _, h in ipairs(list) do
        local log = haproxy.output(h)
        assert.is_nil(log:find("eyJ", 1, true))
        assert.is_nil(log:find(PASSWORD, 1, true))
      end
    end)
  end)

  describe("two HAProxy gateways (" .. mode .. ") sharing a Redis over TLS (rediss://)", function()
    after_each(function() collectgarbage() end)
    local redis, list, key
    setup(function()
      key = signer()
      redis = fleet.redis_start { password = PASSWORD, tls = true }
      list = {}
      for i = 1, 2 do
        local dir = haproxy.sandbox()
        list[i] = fleet.start_gateway { dir = dir, mode = mode,
          settings = settings(dir, redis, { REDIS_CA_FILE = redis.ca_file }) }
      end
    end)
    teardown(function()
      fleet.stop(list)
      fleet.redis_stop(redis)
    end)

    it("syncs through HAProxy's connect_ssl: a revocation reaches both within 1 s", function()
      local synced = ("tokenpolicy-auth: denylist rediss://127.0.0.1:%d: synced, "):format(redis.port)
      for _, h in ipairs(list) do
        assert.are.equal(h.states, haproxy.count(h, synced))
      end
      local t, claims = token(key)
      local r = expect.run_cli({ "deny", claims.jti, "--exp", "+1h", "--denylist", redis:url("/0", true),
        "--redis-ca-file", redis.ca_file })
      assert(r.code == 0, "tokenpolicy deny failed: " .. r.err)
      local took = fleet.wait_all(list, bearer(t), 401, fleet.now(), 5)
      assert(took <= WITHIN, ("the revocation took %.3f s"):format(took))
      for _, h in ipairs(list) do
        refused(h, "revoked", t)
        assert.are.equal(200, (haproxy.get(h, bearer((token(key))))))
        assert.is_nil(haproxy.output(h):find(PASSWORD, 1, true))
      end
    end)
  end)

  describe("a gateway (" .. mode .. ") that cannot use Redis at start", function()
    after_each(function() collectgarbage() end)
    local redis, key
    setup(function()
      key = signer()
      redis = fleet.redis_start { password = PASSWORD }
    end)
    teardown(function() fleet.redis_stop(redis) end)

    -- A local denylist file with one revoked token's jti.
    local function file_with(dir, jti)
      local file = assert(tp.denylist(dir .. "/local.denylist"))
      assert(file:add(jti, os.time() + 3600))
      file:close()
      return dir .. "/local.denylist"
    end

    local cases = {
      { "refuses the password", function(dir)
        haproxy.write(dir .. "/wrong.password", "not-the-password\n")
        os.execute("chmod 600 " .. dir .. "/wrong.password")
        return { REDIS_PASSWORD_FILE = dir .. "/wrong.password" }
      end, ": redis_auth: " },
      { "is unreachable", function()
        return { DENYLIST = ("redis://127.0.0.1:%d/0"):format(redis.port == 65000 and 65001 or 65000) }
      end, ": redis_unavailable: " },
    }
    for _, case in ipairs(cases) do
      it("says so in one line and serves, with the denylist file when Redis " .. case[1], function()
        local dir = haproxy.sandbox()
        local revoked, claims = token(key)
        local more = case[2](dir)
        more.DENYLIST_FILE = file_with(dir, claims.jti)
        local s = settings(dir, redis, more)
        local h = fleet.start_gateway { dir = dir, mode = mode, settings = s }
        local ok, err = pcall(function()
          local url = gateway.printable_redis(s.DENYLIST)
          local line = "tokenpolicy-auth: denylist " .. url .. case[3]
          local serving = "(serving with denylist_file " .. dir .. "/local.denylist, 1 entries until Redis answers"
          haproxy.sleep(1)  -- five syncs: still the one line per Lua state
          local output = haproxy.output(h)
          assert(output:find(line, 1, true), output)
          assert(output:find(serving, 1, true), output)
          local lines = 0
          for l in output:gmatch("[^\n]+") do
            if l:find("tokenpolicy-auth: denylist redis", 1, true) then lines = lines + 1 end
          end
          assert.are.equal(h.states, lines)
          assert.are.equal(200, (haproxy.get(h, bearer((token(key))))))
          refused(h, "revoked", revoked)
          assert.is_nil(output:find(PASSWORD, 1, true))
        end)
        haproxy.stop(h)
        assert(ok, err)
      end)
    end
  end)
end
