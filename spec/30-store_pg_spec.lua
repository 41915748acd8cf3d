-- tokenpolicy.store.arvados_pg against a real PostgreSQL (a throw-away
-- cluster on a Unix socket, spec/helpers/postgres.lua): the rake tasks'
-- selection in SQL, the same as the C engine's policy:long_lived on the
-- same rows; fix in one transaction; faults give one clear fail triple.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"
local postgres = require "helpers.postgres"
local arvados_pg = require "tokenpolicy.store.arvados_pg"

local NOW = 1700000000
local LIFETIME = 86400
local CUTOFF = NOW + LIFETIME
local PASSWORD = "s3cret-Pa55word"

local function ts(epoch)
  return os.date("!%Y-%m-%d %H:%M:%S", epoch)
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sql_text(v)
  if v == nil or v == tp.null then return "NULL" end
  return "'" .. tostring(v):gsub("'", "''") .. "'"
end

-- Loads users and tokens: users = {{id=, uuid=, email=, username=, is_admin=}},
-- tokens = {{id=, user_id=, expires_at=epoch|nil, scopes=}}.
local function load(pg, users, tokens)
  local out = { "TRUNCATE users, api_client_authorizations;" }
  for _, u in ipairs(users) do
    out[#out + 1] = ("INSERT INTO users (id, uuid, owner_uuid, email, username, is_admin, created_at, updated_at)"
      .. " VALUES (%d, %s, 'zzzzz-tpzed-000000000000000', %s, %s, %s, '2020-01-01', '2020-01-01');")
      :format(u.id, sql_text(u.uuid), sql_text(u.email), sql_text(u.username), u.is_admin and "true" or "false")
  end
  for _, t in ipairs(tokens) do
    out[#out + 1] = ("INSERT INTO api_client_authorizations (id, api_token, user_id, expires_at, created_at,"
      .. " updated_at, scopes, uuid) VALUES (%d, 'tok%d', %d, %s, '2020-01-01', '2020-01-01', %s, 'zzzzz-gj3su-%d');")
      :format(t.id, t.id, t.user_id, t.expires_at and sql_text(ts(t.expires_at)) or "NULL",
        sql_text(t.scopes or '["all"]'), t.id)
  end
  pg:psql(table.concat(out, "\n"))
end

-- Runs `body` (Lua returning a store call's results) in a child Lua and
-- returns its fail triple, K and V set in its environment. For the faults
-- where LuaDBI's driver leaks (the connection object of a failed connect,
-- the result of a statement the server died in: not ours to fix), which
-- `make asan`'s leak check would report; the child runs without it.
local function in_child(body, key, value)
  local lua = "lua" .. _VERSION:match("%d+%.%d+")
  local script = 'local arvados_pg = require "tokenpolicy.store.arvados_pg"\n'
    .. 'local r, m, c = (function() ' .. body .. ' end)()\n'
    .. 'io.write(tostring(r), "\\n", m or "", "\\n", c or "")'
  local p = io.popen(("env ASAN_OPTIONS=detect_leaks=0 K=%s V=%s %s -e %s"):format(quote(key), quote(value), lua,
    quote(script)))
  local out = p:read("a")
  p:close()
  local r, m, c = out:match("^(.-)\n(.-)\n(.*)$")
  assert(r == "nil", out)
  return nil, m, c
end

local function connect_in_child(key, value)
  return in_child('return arvados_pg { [os.getenv "K"] = os.getenv "V" }', key, value)
end

local function sel(policy)
  return { policy = policy, lifetime = LIFETIME, now = NOW, cutoff = CUTOFF }
end

local function expiries(pg)
  return pg:psql("SELECT id, coalesce(to_char(expires_at, 'YYYY-MM-DD HH24:MI:SS'), 'null'),"
    .. " to_char(updated_at, 'YYYY-MM-DD') FROM api_client_authorizations ORDER BY id")
end

describe("store.arvados_pg (a real PostgreSQL)", function()
  local pg, store, policy

  lazy_setup(function()
    pg = postgres.new()
    pg:create_arvados()
    pg:psql(("CREATE ROLE alice LOGIN PASSWORD '%s'; GRANT ALL ON ALL TABLES IN SCHEMA public TO alice;")
      :format(PASSWORD))
    policy = assert(tp.policy { max_token_lifetime = LIFETIME })
  end)

  lazy_teardown(function()
    if store then store:close() end
    if pg then pg:stop() end
  end)

  before_each(function()
    if not pg.running then pg:start() end
    store = assert(arvados_pg { conninfo = pg:conninfo() })
  end)

  after_each(function()
    if store then store:close() end
    store = nil
    collectgarbage()
  end)

  local USERS = {
    { id = 1, uuid = "zzzzz-tpzed-000000000000000", username = "root", email = "root@x" },
    { id = 2, uuid = "zzzzz-tpzed-anonymouspublic", username = "anonymous" },
    { id = 3, uuid = "zzzzz-tpzed-aaaaaaaaaaaaaaa", username = "bob", email = "bob@x" },
    { id = 4, uuid = "zzzzz-tpzed-bbbbbbbbbbbbbbb", username = "carol", email = "carol@x", is_admin = true },
    { id = 5, uuid = "zzzzz-tpzed-ccccccccccccccc", email = "nousername@x" },
  }
  local TOKENS = {
    { id = 10, user_id = 4, expires_at = nil },
    { id = 11, user_id = 3, expires_at = CUTOFF + 1 },
    { id = 12, user_id = 3, expires_at = CUTOFF },
    { id = 13, user_id = 1, expires_at = nil },
    { id = 14, user_id = 2, expires_at = nil },
    { id = 15, user_id = 99, expires_at = nil },
    { id = 16, user_id = 4, expires_at = CUTOFF + 3600 },
    { id = 17, user_id = 5, expires_at = nil },
    { id = 18, user_id = 98, expires_at = CUTOFF - 1 },
  }

  describe("check", function()
    it("counts the tokens and lists distinct users in the order the rake task meets them", function()
      load(pg, USERS, TOKENS)
      local result = assert(store:check(sel(policy)))
      assert.are.same({
        tokens = 4,
        users = {
          { username = "carol", email = "carol@x", uuid = "zzzzz-tpzed-bbbbbbbbbbbbbbb" },
          { username = "bob", email = "bob@x", uuid = "zzzzz-tpzed-aaaaaaaaaaaaaaa" },
          { email = "nousername@x", uuid = "zzzzz-tpzed-ccccccccccccccc" },
        },
        warnings = { { id = 15, user_id = 99 } },
      }, result)
    end)

    it("counts a user without uuid, as the rake task does (nil =~ re is nil)", function()
      load(pg, { { id = 1, username = "nouuid", email = "n@x" } }, { { id = 1, user_id = 1 } })
      assert.are.same({ tokens = 1, users = { { username = "nouuid", email = "n@x" } }, warnings = {} },
        assert(store:check(sel(policy))))
      assert.is_true(policy:long_lived({ expires_at = tp.null }, NOW))
      assert.are.same({ updated = 1, warnings = {} }, assert(store:fix(sel(policy), { expires_at = CUTOFF })))
    end)

    it("follows the order PostgreSQL returns the rows in, not the ids", function()
      load(pg, USERS, TOKENS)
      -- an updated row moves to the end of the table, as in a live database
      pg:psql("UPDATE api_client_authorizations SET scopes = scopes WHERE id IN (10, 16);")
      local result = assert(store:check(sel(policy)))
      assert.are.same({ "bob", "carol" }, { result.users[1].username, result.users[3].username })
    end)

    it("finds nothing in empty tables", function()
      load(pg, {}, {})
      assert.are.same({ tokens = 0, users = {}, warnings = {} }, assert(store:check(sel(policy))))
    end)

    it("keeps ids beyond 32 bits exact", function()
      load(pg, { { id = 5000000000, uuid = "zzzzz-tpzed-ddddddddddddddd" } },
        { { id = 6000000000, user_id = 7000000000 }, { id = 6000000001, user_id = 5000000000 } })
      local result = assert(store:check(sel(policy)))
      assert.are.same({ { id = 6000000000, user_id = 7000000000 } }, result.warnings)
      assert.are.equal(1, result.tokens)
    end)
  end)

  describe("fix", function()
    it("updates exactly the selected rows, expires_at and updated_at, in one statement", function()
      load(pg, USERS, TOKENS)
      local result = assert(store:fix(sel(policy), { expires_at = CUTOFF, updated_at = NOW }))
      assert.are.same({ updated = 4, warnings = { { id = 15, user_id = 99 } } }, result)
      local today = os.date("!%Y-%m-%d", NOW)
      assert.are.equal(table.concat({
        ("10|%s|%s"):format(ts(CUTOFF), today),
        ("11|%s|%s"):format(ts(CUTOFF), today),
        ("12|%s|2020-01-01"):format(ts(CUTOFF)),
        "13|null|2020-01-01",
        "14|null|2020-01-01",
        "15|null|2020-01-01",
        ("16|%s|%s"):format(ts(CUTOFF), today),
        ("17|%s|%s"):format(ts(CUTOFF), today),
        ("18|%s|2020-01-01"):format(ts(CUTOFF - 1)),
      }, "\n") .. "\n", expiries(pg))
      assert.are.same({ tokens = 0, users = {}, warnings = { { id = 15, user_id = 99 } } },
        assert(store:check(sel(policy))))
    end)

    it("changes nothing in a dry run, and reports what it would update", function()
      load(pg, USERS, TOKENS)
      local before = expiries(pg)
      assert.are.same({ updated = 4, warnings = { { id = 15, user_id = 99 } } },
        assert(store:fix(sel(policy), { dry_run = true, expires_at = CUTOFF })))
      assert.are.equal(before, expiries(pg))
    end)
  end)

  describe("agrees with policy:long_lived on generated rows", function()
    it("selects the same ids as the C engine (a few thousand rows)", function()
      math.randomseed(20240610)
      local prefixes = { "zzzzz", "x1abc", "9q8w7" }
      local users, tokens, records = {}, {}, {}
      -- the system root and anonymous users of each cluster prefix
      local special = {}
      for i, prefix in ipairs(prefixes) do
        special[i * 50] = prefix .. "-tpzed-000000000000000"
        special[i * 50 + 1] = prefix .. "-tpzed-anonymouspublic"
      end
      for id = 1, 300 do
        local uuid = special[id] or ("%s-tpzed-%015d"):format(prefixes[id % #prefixes + 1], id)
        users[#users + 1] = { id = id, uuid = uuid, username = "u" .. id, email = id .. "@x", is_admin = id % 7 == 0 }
      end
      local offsets = { false, 0, 1, -1, 3600, -3600, 10 * 86400, -LIFETIME - 5 }
      for id = 1, 3000 do
        local user_id = math.random(1, 320) -- 301..320: no such user
        local off = offsets[math.random(#offsets)]
        local expires_at = off and CUTOFF + off or nil
        tokens[#tokens + 1] = { id = id, user_id = user_id, expires_at = expires_at,
          scopes = id % 5 == 0 and '["GET /arvados/v1/containers/current"]' or nil }
        records[#records + 1] = {
          id = id, user_id = user_id, expires_at = expires_at or tp.null,
          owner_uuid = users[user_id] and users[user_id].uuid or tp.null,
        }
      end
      load(pg, users, tokens)

      local want, want_users, want_warnings = {}, {}, {}
      for _, r in ipairs(records) do
        local selected, _, skip = policy:long_lived(r, NOW)
        if selected then
          want[#want + 1] = r.id
          want_users[r.user_id] = true
        elseif skip == "invalid_user" then
          want_warnings[#want_warnings + 1] = { id = r.id, user_id = r.user_id }
        end
      end
      assert.is_true(#want > 100 and #want_warnings > 20)

      local result = assert(store:check(sel(policy)))
      assert.are.equal(#want, result.tokens)
      assert.are.same(want_warnings, result.warnings)
      local n = 0
      for _ in pairs(want_users) do n = n + 1 end
      assert.are.equal(n, #result.users)

      assert.are.same({ updated = #want, warnings = want_warnings },
        assert(store:fix(sel(policy), { expires_at = CUTOFF - 7 })))
      local got = {}
      for id in pg:psql(("SELECT id FROM api_client_authorizations WHERE expires_at = '%s' ORDER BY id")
        :format(ts(CUTOFF - 7))):gmatch("%d+") do
        got[#got + 1] = math.tointeger(tonumber(id))
      end
      assert.are.same(want, got)
    end)
  end)

  describe("faults", function()
    it("rolls the whole fix back when PostgreSQL stops in the middle of it", function()
      load(pg, USERS, TOKENS)
      local before = expiries(pg)
      -- another session locks one selected row: the UPDATE changes the
      -- rows before it, then waits; the server is then stopped
      pg:hold("SELECT id FROM api_client_authorizations WHERE id = 17 FOR UPDATE;")
      pg:halt_later(1, "immediate")
      local msg = expect.fails("unreachable", in_child(([[
        local store = assert(arvados_pg { conninfo = os.getenv "V" })
        return store:fix({ lifetime = %d, now = %d, cutoff = %d }, { expires_at = %d })
      ]]):format(LIFETIME, NOW, CUTOFF, CUTOFF), "conninfo", pg:conninfo()))
      assert.matches("^unreachable: PostgreSQL %(arvados%): fix: ", msg)
      assert.is_nil(msg:find("\n", 1, true))
      store:close()
      store = nil
      postgres.sleep(0.5)
      pg:start()
      assert.are.equal(before, expiries(pg))
    end)

    it("fails with unreachable on a connection string that reaches no server, without the password", function()
      local msg = expect.fails("unreachable",
        connect_in_child("conninfo", "host=/nonexistent dbname=arvados user=tp password=" .. PASSWORD))
      assert.is_nil(msg:find(PASSWORD, 1, true))
      assert.matches("^unreachable: PostgreSQL %(arvados%): cannot connect: no connection to the server$", msg)
      msg = expect.fails("unreachable", connect_in_child("conninfo", "nosuchkey=1 password='" .. PASSWORD .. "'"))
      assert.is_nil(msg:find(PASSWORD, 1, true))
    end)

    it("fails with io, one line, when the tables are missing", function()
      pg:psql("CREATE DATABASE empty;", "postgres")
      local empty = assert(arvados_pg { conninfo = pg:conninfo("empty") })
      local msg = expect.fails("io", empty:check(sel(policy)))
      assert.are.equal('io: PostgreSQL (empty): check: relation "api_client_authorizations" does not exist', msg)
      msg = expect.fails("io", empty:fix(sel(policy), { expires_at = CUTOFF }))
      assert.are.equal('io: PostgreSQL (empty): fix: relation "api_client_authorizations" does not exist', msg)
      empty:close()
      empty:close()
      expect.fails("io", empty:check(sel(policy)))
    end)

    it("raises for misuse, naming the argument", function()
      assert.has_error(function() arvados_pg {} end,
        "bad argument #1 to 'arvados_pg' (give exactly one of 'conninfo' and 'config')")
      assert.has_error(function() arvados_pg { conninfo = "x", cluster = 1 } end,
        "bad argument #1 to 'arvados_pg' (option 'cluster' must be string, got number)")
      assert.has_error(function() store:check({ policy = policy, now = NOW }) end,
        "bad argument #1 to 'check' (option 'cutoff' must be number, got nil)")
      assert.has_error(function() store:fix(sel(policy), { dryrun = true }) end,
        "bad argument #2 to 'fix' (unknown option 'dryrun')")
    end)
  end)

  describe("from an Arvados config file", function()
    local dir
    before_each(function() dir = expect.new_dir() end)
    after_each(function() expect.remove_dir(dir) end)

    local function config(connection, extra)
      local path = dir .. "/config.yml"
      local f = assert(io.open(path, "w"))
      f:write("Clusters:\n  zzzzz:\n    API:\n      MaxTokenLifetime: 24h\n" .. (extra or "")
        .. "    PostgreSQL:\n      Connection:\n")
      for _, kv in ipairs(connection) do
        f:write(("        %s: %q\n"):format(kv[1], kv[2]))
      end
      f:close()
      return path
    end

    it("reads PostgreSQL.Connection and the policy from the same file", function()
      load(pg, USERS, TOKENS)
      local s = assert(arvados_pg { config = config {
        { "host", pg.dir }, { "dbname", "arvados" }, { "user", "alice" }, { "password", PASSWORD }, { "port", "5432" },
      } })
      assert.are.equal(86400, s.policy:settings().max_token_lifetime)
      assert.are.equal(4, assert(s:check(sel(s.policy))).tokens)
      s:close()
    end)

    it("never shows the password when the server cannot be reached", function()
      local msg = expect.fails("unreachable", connect_in_child("config", config {
        { "host", dir .. "/none" }, { "dbname", "arvados" }, { "user", "alice" }, { "password", PASSWORD },
      }))
      assert.is_nil(msg:find(PASSWORD, 1, true))
    end)

    it("fails with malformed without a PostgreSQL.Connection, and names the cluster", function()
      local path = dir .. "/bare.yml"
      local f = assert(io.open(path, "w"))
      f:write("Clusters:\n  zzzzz:\n    API:\n      MaxTokenLifetime: 24h\n")
      f:close()
      assert.are.equal(("malformed: %s: no Clusters.zzzzz.PostgreSQL.Connection"):format(path),
        expect.fails("malformed", arvados_pg { config = path }))
      expect.fails("not_found", arvados_pg { config = dir .. "/missing.yml" })
    end)
  end)
end)
