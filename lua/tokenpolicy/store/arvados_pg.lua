--- The Arvados PostgreSQL store of `tokenpolicy.migrate`: the selection of
-- the rake tasks `db:check_long_lived_tokens` and `db:fix_long_lived_tokens`
-- run in the database, set-based.
--
-- Check is one query joining `users`; fix is one `UPDATE ... FROM users` in
-- one transaction. Every value goes in as a bound parameter of a prepared
-- statement (LuaDBI's PostgreSQL driver, Debian `lua-dbi-postgresql`).
-- The database password never appears in a message.
-- @module tokenpolicy.store.arvados_pg

local util = require "tokenpolicy.util"

local fail = util.fail

local M = {}

-- The owners the rake tasks skip: Ruby's unanchored `=~` on the user's
-- uuid, whatever the cluster prefix, as LIKE patterns (neither holds `_`).
-- A user without uuid is not skipped (`nil =~ re` is nil). LIKE rather than
-- strpos: PostgreSQL estimates it, and so joins by hash (twice as fast on
-- a million rows).
local SYSTEM_ROOT = "%-tpzed-000000000000000%"
local ANONYMOUS = "%-tpzed-anonymouspublic%"

-- The rake tasks' own query (`expires_at IS NULL OR expires_at > $1`),
-- numbered in the order PostgreSQL returns it, so users are listed in the
-- order the tasks meet them. Ids travel as text: the driver truncates
-- bigint to 32 bits.
local FOUND = [[
WITH found AS MATERIALIZED (
  SELECT a.id, a.user_id, row_number() OVER () AS seq
  FROM api_client_authorizations a
  WHERE a.expires_at IS NULL OR a.expires_at > $1::timestamp
), joined AS (
  SELECT f.seq, f.id, f.user_id, u.id IS NULL AS missing, u.uuid, u.username, u.email
  FROM found f LEFT JOIN users u ON u.id = f.user_id
)
]]

local CHECK_SQL = FOUND .. [[
SELECT 'warning' AS kind, seq, id::text AS id, user_id::text AS user_id,
       NULL::text AS uuid, NULL::text AS username, NULL::text AS email, '1' AS tokens
  FROM joined WHERE missing
UNION ALL
SELECT 'user', min(seq), NULL, user_id::text, uuid, username, email, count(*)::text
  FROM joined
  WHERE NOT missing AND (uuid IS NULL OR uuid NOT LIKE $2) AND (uuid IS NULL OR uuid NOT LIKE $3)
  GROUP BY user_id, uuid, username, email
ORDER BY 2
]]

local WARNINGS_SQL = FOUND .. [[
SELECT id::text AS id, user_id::text AS user_id FROM joined WHERE missing ORDER BY seq
]]

local SELECTED = [[
  FROM users u
  WHERE u.id = a.user_id AND (a.expires_at IS NULL OR a.expires_at > $3::timestamp)
    AND (u.uuid IS NULL OR u.uuid NOT LIKE $4) AND (u.uuid IS NULL OR u.uuid NOT LIKE $5)
]]

local FIX_SQL = "UPDATE api_client_authorizations a SET expires_at = $1::timestamp, updated_at = $2::timestamp"
  .. SELECTED

-- The dry run counts what the UPDATE would touch ($1 and $2 are unused
-- but typed, so the parameters are the same as the UPDATE's).
local COUNT_SQL = "SELECT count(*)::text AS n, $1::timestamp IS NULL AND $2::timestamp IS NULL AS unused"
  .. " FROM api_client_authorizations a WHERE EXISTS (SELECT 1" .. SELECTED .. ")"

-- Epoch seconds as a UTC `timestamp without time zone` literal, as Rails
-- stores them.
local function timestamp(epoch)
  local whole = math.floor(epoch)
  local text = os.date("!%Y-%m-%d %H:%M:%S", whole)
  local frac = epoch - whole
  if frac > 0 then
    text = text .. ("%.6f"):format(frac):sub(2)
  end
  return text
end

local Store = {}
Store.__index = Store

-- Each store's password, kept out of the store table: a table a caller
-- prints, serialises or walks must not show it.
local passwords = setmetatable({}, { __mode = "k" })

--- Removes the password (and any `password=` setting) from a driver message.
-- @param msg the driver's message (nil reads "unknown error")
-- @treturn string
function Store:scrub(msg)
  msg = tostring(msg or "unknown error")
  local password = passwords[self]
  if password and password ~= "" then
    local at = 1
    repeat
      local i, j = msg:find(password, at, true)
      if i then
        msg = msg:sub(1, i - 1) .. "***" .. msg:sub(j + 1)
        at = i + 3
      end
    until not i
  end
  msg = msg:gsub("password%s*=%s*'[^']*'", "password=***"):gsub("password%s*=%s*[^%s']+", "password=***")
  return msg
end

--- The fail triple for a driver error: `unreachable` when the connection
-- is gone, `io` for any other database error; the message is the
-- driver's first lines, without its prefix.
-- @tparam string what the step that failed
-- @param msg the driver's message
-- @return nil, message, code
function Store:db_fail(what, msg)
  msg = self:scrub(msg)
  local code = "io"
  if msg:find("server closed the connection", 1, true) or msg:find("no connection to the server", 1, true)
    or msg:find("terminating connection", 1, true) or msg:find("could not connect", 1, true)
    or msg:find("connection to server", 1, true) then
    code = "unreachable"
  end
  msg = msg:gsub("^[^:]*: ", ""):gsub("^ERROR:%s+", ""):gsub("\nLINE %d+:.*$", "")
  msg = msg:gsub("%s*\n%s*", " "):gsub("%s+$", "")
  return fail(code, ("PostgreSQL (%s): %s: %s"):format(self.where, what, msg))
end

--- Prepares and runs `sql` with `...`; the statement or the fail triple.
-- @tparam string what the step, for messages
-- @tparam string sql
-- @param ... the statement's parameters
-- @return the executed statement, or the fail triple
function Store:run(what, sql, ...)
  if not self.dbh then
    return fail("io", "the store is closed")
  end
  local sth, err = self.dbh:prepare(sql)
  if not sth then return self:db_fail(what, err) end
  local ok, err2 = sth:execute(...)
  if not ok then
    sth:close()
    return self:db_fail(what, err2)
  end
  return sth
end

local SEL = {
  policy = "any", lifetime = "number", now = "number", cutoff = "number",
}

local function check_sel(sel, fname)
  if type(sel) ~= "table" then
    util.argerror(1, fname, "selection table expected, got " .. type(sel))
  end
  util.check_opts(sel, SEL, fname, 1)
  if type(sel.cutoff) ~= "number" then
    util.argerror(1, fname, "option 'cutoff' must be number, got nil")
  end
end

local function int(text)
  return math.tointeger(tonumber(text))
end

--- The rake tasks' check: the tokens they would report, the distinct users
-- in the order they meet them, and the tokens whose user row is missing.
-- One query, joining `users`.
-- @tparam table sel `{policy=, lifetime=, now=, cutoff=}`; `cutoff` (epoch
-- seconds, `now + lifetime`) is what the selection compares with
-- @treturn table `{tokens=, users={{username=, email=, uuid=}...},
-- warnings={{id=, user_id=}...}}`, or the fail triple (`unreachable`, `io`)
function Store:check(sel)
  check_sel(sel, "check")
  local sth, msg, code = self:run("check", CHECK_SQL, timestamp(sel.cutoff), SYSTEM_ROOT, ANONYMOUS)
  if not sth then return nil, msg, code end
  local result = { tokens = 0, users = {}, warnings = {} }
  for row in sth:rows(true) do
    if row.kind == "warning" then
      result.warnings[#result.warnings + 1] = { id = int(row.id), user_id = int(row.user_id) }
    else
      result.users[#result.users + 1] = { username = row.username, email = row.email, uuid = row.uuid }
      result.tokens = result.tokens + int(row.tokens)
    end
  end
  sth:close()
  return result
end

local FIX_OPTS = { dry_run = "boolean", expires_at = "number", updated_at = "number" }

--- The rake tasks' fix: sets `expires_at` (and `updated_at`, as
-- `update_attributes!` does) of exactly the rows the task would update, in
-- one `UPDATE ... FROM users` inside one transaction. A failure rolls the
-- transaction back: no row changes.
-- @tparam table sel as for `check`
-- @tparam table opts `dry_run` (count only, change nothing), `expires_at`
-- (epoch seconds to set, default `sel.cutoff`), `updated_at` (default: the
-- current time)
-- @treturn table `{updated=, warnings={{id=, user_id=}...}}`, or the fail
-- triple (`unreachable`, `io`)
function Store:fix(sel, opts)
  check_sel(sel, "fix")
  opts = util.check_opts(opts, FIX_OPTS, "fix", 2)
  local expires_at = timestamp(opts.expires_at or sel.cutoff)
  local updated_at = timestamp(opts.updated_at or os.time())
  local params = { expires_at, updated_at, timestamp(sel.cutoff), SYSTEM_ROOT, ANONYMOUS }

  local begin, msg, code = self:run("fix", "BEGIN")
  if not begin then return nil, msg, code end
  begin:close()
  local function abort(...)
    local rb = self.dbh:prepare("ROLLBACK")
    if rb then
      rb:execute()
      rb:close()
    end
    return ...
  end

  local sth
  sth, msg, code = self:run("fix", WARNINGS_SQL, params[3])
  if not sth then return abort(nil, msg, code) end
  local result = { updated = 0, warnings = {} }
  for row in sth:rows(true) do
    result.warnings[#result.warnings + 1] = { id = int(row.id), user_id = int(row.user_id) }
  end
  sth:close()

  if opts.dry_run then
    sth, msg, code = self:run("fix (dry run)", COUNT_SQL, table.unpack(params))
    if not sth then return abort(nil, msg, code) end
    local row = sth:fetch(true)
    sth:close()
    result.updated = int(row and row.n or 0)
    abort()
    return result
  end

  sth, msg, code = self:run("fix", FIX_SQL, table.unpack(params))
  if not sth then return abort(nil, msg, code) end
  result.updated = sth:affected()
  sth:close()
  local commit
  commit, msg, code = self:run("fix (commit)", "COMMIT")
  if not commit then return abort(nil, msg, code) end
  commit:close()
  return result
end

--- Closes the connection (idempotent).
function Store:close()
  if self.dbh then
    self.dbh:close()
    self.dbh = nil
  end
end

-- The database (never the password, which the store does not hold).
Store.__tostring = function(self)
  return ("tokenpolicy.store.arvados_pg (%s%s)"):format(self.where or "?", self.dbh and "" or ", closed")
end

-- The `password` setting of a conninfo string (to keep it out of messages).
local function conninfo_password(conninfo)
  return conninfo:match("password%s*=%s*'([^']*)'") or conninfo:match("password%s*=%s*([^%s']+)")
end

local function is_null(v)
  return v == nil or (package.loaded.lyaml ~= nil and v == package.loaded.lyaml.null)
end

-- The `Clusters.<id>.PostgreSQL.Connection` of an Arvados config file, its
-- parsed document and the cluster id; or the fail triple.
local function read_connection(tp, path, cluster)
  local text, msg, code = tp.read_config(path)
  if not text then return nil, msg, code end
  local found, lyaml = pcall(require, "lyaml")
  if not found then
    error("arvados_pg: reading a config file needs lyaml (Debian: lua-yaml, LuaRocks: lyaml)", 0)
  end
  local ok, doc = pcall(lyaml.load, text)
  if not ok or type(doc) ~= "table" or type(doc.Clusters) ~= "table" then
    return fail("malformed", ("%s: not an Arvados config (no Clusters mapping)"):format(path))
  end
  if cluster == nil then
    local ids = {}
    for id in pairs(doc.Clusters) do ids[#ids + 1] = tostring(id) end
    if #ids ~= 1 then
      return fail("malformed", ("%s has %d clusters: choose one with {cluster = ...}"):format(path, #ids))
    end
    cluster = ids[1]
  end
  local c = doc.Clusters[cluster]
  local conn = type(c) == "table" and type(c.PostgreSQL) == "table" and c.PostgreSQL.Connection
  if type(conn) ~= "table" then
    return fail("malformed", ("%s: no Clusters.%s.PostgreSQL.Connection"):format(path, tostring(cluster)))
  end
  local params = {}
  for _, key in ipairs({ "host", "port", "user", "password", "dbname" }) do
    local v = conn[key]
    if not is_null(v) and v ~= "" then params[key] = tostring(v) end
  end
  return params, doc, cluster
end

local OPTIONS = { conninfo = "string", config = "string", cluster = "string" }

--- Opens the store: `{conninfo = "host=... dbname=... user=..."}` (libpq's
-- syntax) or `{config = "/etc/arvados/config.yml" [, cluster = id]}`, which
-- reads `Clusters.<id>.PostgreSQL.Connection` (host, port, user, password,
-- dbname) and the policy from the same file (`store.policy`, with
-- `store.policy_warnings`).
-- @tparam table opts
-- @return the store, or the fail triple (`unreachable` when the server
-- cannot be reached or refuses the login; `not_found`, `io`, `malformed`
-- for the config file)
function M.new(opts)
  if type(opts) ~= "table" then
    util.argerror(1, "arvados_pg", "table expected, got " .. type(opts))
  end
  opts = util.check_opts(opts, OPTIONS, "arvados_pg", 1)
  if (opts.conninfo == nil) == (opts.config == nil) then
    util.argerror(1, "arvados_pg", "give exactly one of 'conninfo' and 'config'")
  end
  local found, DBI = pcall(require, "DBI")
  if not found then
    error("arvados_pg needs LuaDBI's PostgreSQL driver (Debian: lua-dbi-postgresql)", 2)
  end
  local store = setmetatable({}, Store)
  local dbh, err
  if opts.conninfo then
    passwords[store] = conninfo_password(opts.conninfo)
    store.where = (opts.conninfo:match("dbname%s*=%s*'?([^%s']+)") or "default database")
    dbh, err = DBI.Connect("PostgreSQL", opts.conninfo)
  else
    local tp = require "tokenpolicy"
    local params, doc, cluster = read_connection(tp, opts.config, opts.cluster)
    if not params then return nil, doc, cluster end
    local policy, warnings, code = tp.policy_from_arvados(doc, { cluster = cluster })
    if not policy then return nil, warnings, code end
    store.policy, store.policy_warnings = policy, warnings
    passwords[store] = params.password
    store.where = ("%s@%s"):format(params.dbname or "default database", params.host or "localhost")
    dbh, err = DBI.Connect("PostgreSQL", params.dbname, params.user, params.password, params.host, params.port)
  end
  if not dbh then
    local _, msg = store:db_fail("cannot connect", err)
    return fail("unreachable", msg:gsub("^%a+: ", ""))
  end
  store.dbh = dbh
  dbh:autocommit(true)
  -- libpq prints the server's notices on stderr; a command's output
  -- should hold only its own lines.
  local quiet = store:run("connect", "SET client_min_messages = error")
  if quiet then quiet:close() end
  return store
end

-- The statements, for bench/migrate.lua to run the same SQL with psql.
M._sql = { check = CHECK_SQL, warnings = WARNINGS_SQL, fix = FIX_SQL }

setmetatable(M, { __call = function(_, opts) return M.new(opts) end })

return M
