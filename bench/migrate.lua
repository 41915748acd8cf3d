-- `make bench-migrate`: the Arvados PostgreSQL store of tokenpolicy.migrate
-- against a throw-away PostgreSQL (spec/helpers/postgres.lua) loaded with
-- ROWS tokens (default 1,000,000; a quarter long-lived) of 10,000 users.
--
-- Measures, in one run: check and fix through the store; the same SQL run
-- directly with psql (PREPARE/EXECUTE, so the same plan: our speed relative
-- to it, target >= 0.9); and the rake tasks' way (select every selected
-- token, look its user up, one UPDATE per row, each committed) on 50,000
-- rows, extrapolated to ROWS (target: ours >= 20x faster). Prints a table.
-- BASELINES=0 measures only check and fix (for ROWS=10000000, where the
-- target is check + fix under two minutes and a second load of ten million
-- rows for psql would double the run).
local postgres = require "helpers.postgres"
local arvados_pg = require "tokenpolicy.store.arvados_pg"

local ROWS = math.tointeger(tonumber(os.getenv("ROWS") or "1000000")) or error("ROWS must be an integer")
local USERS = 10000
local RAKE_ROWS = math.min(50000, ROWS)
local BASELINES = os.getenv("BASELINES") ~= "0"
local LIFETIME = 86400
local NOW = os.time()
local CUTOFF = NOW + LIFETIME

local quote = require("shell").quote

-- Wall-clock seconds (plain Lua has only whole seconds).
local function clock()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

local function timed(fn)
  local started = clock()
  local a, b, c = fn()
  return clock() - started, a, b, c
end

local function ts(epoch)
  return os.date("!%Y-%m-%d %H:%M:%S", epoch)
end

-- rows tokens: every fourth one long-lived (no expiry, or expiring after
-- the cutoff), the others expiring within the lifetime; a few of the
-- system root's and the anonymous user's.
local function load(pg, rows)
  pg:psql(([[
TRUNCATE users, api_client_authorizations;
INSERT INTO users (id, uuid, owner_uuid, email, username, is_admin, created_at, updated_at)
  SELECT i, CASE i WHEN 1 THEN 'zzzzz-tpzed-000000000000000' WHEN 2 THEN 'zzzzz-tpzed-anonymouspublic'
                   ELSE 'zzzzz-tpzed-' || lpad(i::text, 15, '0') END,
         'zzzzz-tpzed-000000000000000', 'user' || i || '@example.org', 'user' || i, i %% 100 = 0,
         '2020-01-01', '2020-01-01'
  FROM generate_series(1, %d) AS i;
-- Secondary indexes are built once after the load (a sorted build) rather
-- than row by row: the same indexes, loaded in minutes instead of an hour
-- at ROWS=10000000.
DROP INDEX index_api_client_authorizations_on_api_token;
DROP INDEX index_api_client_authorizations_on_expires_at;
DROP INDEX index_api_client_authorizations_on_user_id;
INSERT INTO api_client_authorizations (id, api_token, user_id, expires_at, created_at, updated_at, uuid)
  SELECT i, md5(i::text) || md5((-i)::text), 1 + ((i / 4) * 7919) %% %d,
         CASE WHEN i %% 8 = 0 THEN NULL
              WHEN i %% 4 = 0 THEN '%s'::timestamp + (i %% 1000) * interval '1 hour'
              ELSE '%s'::timestamp + (i %% 1000) * interval '1 minute' END,
         '2020-01-01', '2020-01-01', 'zzzzz-gj3su-' || lpad(i::text, 15, '0')
  FROM generate_series(1::bigint, %d) AS i;
CREATE UNIQUE INDEX index_api_client_authorizations_on_api_token ON api_client_authorizations USING btree (api_token);
CREATE INDEX index_api_client_authorizations_on_expires_at ON api_client_authorizations USING btree (expires_at);
CREATE INDEX index_api_client_authorizations_on_user_id ON api_client_authorizations USING btree (user_id);
VACUUM ANALYZE users;
VACUUM ANALYZE api_client_authorizations;
CHECKPOINT;
]]):format(USERS, USERS, ts(CUTOFF + 1), ts(NOW), rows))
end

local function psql_timed(pg, sql)
  local file = pg.dir .. "/bench.sql"
  local f = assert(io.open(file, "w"))
  f:write(sql)
  f:close()
  local t = timed(function()
    assert(os.execute(("%s/psql -X -q -v ON_ERROR_STOP=1 %s -f %s >/dev/null"):format(pg.bin,
      quote(pg:conninfo()), quote(file))))
  end)
  os.remove(file)
  return t
end

local sel = { lifetime = LIFETIME, now = NOW, cutoff = CUTOFF }
local ARGS_CHECK = ("'%s', '%%-tpzed-000000000000000%%', '%%-tpzed-anonymouspublic%%'"):format(ts(CUTOFF))
local ARGS_FIX = ("'%s', '%s', '%s', '%%-tpzed-000000000000000%%', '%%-tpzed-anonymouspublic%%'")
  :format(ts(CUTOFF), ts(NOW), ts(CUTOFF))

-- The rake tasks' way, without Ruby: every selected token, its user looked
-- up (`auth.user`), then one UPDATE per token in its own transaction, as
-- ActiveRecord's `update_attributes!` sends it (BEGIN, UPDATE, COMMIT).
local function rake_way(pg)
  local DBI = require "DBI"
  local dbh = assert(DBI.Connect("PostgreSQL", pg:conninfo()))
  dbh:autocommit(true)
  local all = assert(dbh:prepare("SELECT id::text AS id, user_id::text AS user_id FROM api_client_authorizations"
    .. " WHERE expires_at IS NULL OR expires_at > $1::timestamp"))
  local user = assert(dbh:prepare("SELECT uuid FROM users WHERE id = $1::bigint"))
  local update = assert(dbh:prepare("UPDATE api_client_authorizations SET expires_at = $1::timestamp,"
    .. " updated_at = $2::timestamp WHERE id = $3::bigint"))
  assert(all:execute(ts(CUTOFF)))
  local tokens = {}
  for row in all:rows(true) do tokens[#tokens + 1] = row end
  local begin, commit = assert(dbh:prepare("BEGIN")), assert(dbh:prepare("COMMIT"))
  local n = 0
  for _, t in ipairs(tokens) do
    assert(user:execute(t.user_id))
    local u = user:fetch(true)
    if u and not u.uuid:find("-tpzed-000000000000000", 1, true)
      and not u.uuid:find("-tpzed-anonymouspublic", 1, true) then
      assert(begin:execute())
      assert(update:execute(ts(CUTOFF), ts(NOW), t.id))
      assert(commit:execute())
      n = n + 1
    end
  end
  dbh:close()
  return n
end

-- fsync on, as on a production server: the rake way commits every row.
-- A server set up for a bulk maintenance job on this machine's 24 GiB, as
-- a DBA would before a migration (PostgreSQL's defaults: 128 MB of shared
-- buffers, 64 MB of maintenance memory, a checkpoint every 1 GB of WAL,
-- uncompressed full-page images).  fsync and full_page_writes stay on.
local pg = postgres.new { fsync = true, settings = {
  "shared_buffers=8GB", "maintenance_work_mem=1GB", "max_wal_size=32GB", "checkpoint_timeout=1h",
  "wal_compression=lz4", "wal_buffers=64MB",
} }
local ok, err = pcall(function()
  pg:create_arvados()
  io.stderr:write(("loading %d rows...\n"):format(ROWS))
  load(pg, ROWS)
  local store = assert(arvados_pg { conninfo = pg:conninfo() })
  store:check(sel) -- warm the cache
  -- check: the best of three runs each
  local t_check, result, t_psql_check = math.huge, nil, math.huge
  for _ = 1, 3 do
    local t, r = timed(function() return assert(store:check(sel)) end)
    if t < t_check then t_check, result = t, r end
    if BASELINES then
      t = psql_timed(pg, ("PREPARE q(timestamp, text, text) AS %s;\nEXECUTE q(%s);\n")
        :format(arvados_pg._sql.check, ARGS_CHECK))
      t_psql_check = math.min(t_psql_check, t)
    end
  end
  local t_fix, fixed = timed(function() return assert(store:fix(sel, { expires_at = CUTOFF, updated_at = NOW })) end)
  store:close()

  local t_psql_fix, t_rake, rake_updated, t_rake_all
  if BASELINES then
    load(pg, ROWS)
    -- the statements the store's fix runs: the warnings, then the UPDATE
    t_psql_fix = psql_timed(pg, ("PREPARE w(timestamp) AS %s;\n"
      .. "PREPARE f(timestamp, timestamp, timestamp, text, text) AS %s;\n"
      .. "BEGIN;\nEXECUTE w('%s');\nEXECUTE f(%s);\nCOMMIT;\n")
      :format(arvados_pg._sql.warnings, arvados_pg._sql.fix, ts(CUTOFF), ARGS_FIX))

    load(pg, RAKE_ROWS)
    t_rake, rake_updated = timed(function() return rake_way(pg) end)
    t_rake_all = t_rake * ROWS / RAKE_ROWS
  end

  local function line(what, seconds, note)
    print(("| %-44s | %10.3f | %-46s |"):format(what, seconds, note or ""))
  end
  print(("%d tokens, %d users, %d long-lived (%d users)%s")
    :format(ROWS, USERS, result.tokens, #result.users,
      BASELINES and ("; rake way measured on %d rows (%d updates)"):format(RAKE_ROWS, rake_updated) or ""))
  print(("| %-44s | %10s | %-46s |"):format("run", "seconds", ""))
  print("| " .. ("-"):rep(44) .. " | " .. ("-"):rep(10) .. " | " .. ("-"):rep(46) .. " |")
  line("check, store.arvados_pg", t_check, ("%d tokens found"):format(result.tokens))
  if BASELINES then
    line("check, the same SQL with psql", t_psql_check,
      ("speed vs psql: %.2f (target >= 0.9)"):format(t_psql_check / t_check))
  end
  line("fix, store.arvados_pg", t_fix, ("%d tokens updated"):format(fixed.updated))
  if BASELINES then
    line("fix, the same SQL with psql", t_psql_fix, ("speed vs psql: %.2f (target >= 0.9)"):format(t_psql_fix / t_fix))
  end
  line("check + fix, store.arvados_pg", t_check + t_fix,
    ROWS >= 10000000 and ("%.0f s for %d rows (target < 120 s)"):format(t_check + t_fix, ROWS) or "")
  if BASELINES then
    line(("fix, the rake way, %d rows"):format(RAKE_ROWS), t_rake, "per token: SELECT user, BEGIN, UPDATE, COMMIT")
    line(("fix, the rake way, extrapolated to %d"):format(ROWS), t_rake_all,
      ("ours %.0fx faster (target >= 20x)"):format(t_rake_all / t_fix))
  end
end)
pg:stop()
if not ok then error(err, 0) end
