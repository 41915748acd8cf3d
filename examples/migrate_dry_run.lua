-- The migration dry run on an Arvados database: which API tokens outlive
-- the cluster's new lifetime policy (the lines of Arvados'
-- `bin/rake db:check_long_lived_tokens`), and what `db:fix_long_lived_tokens`
-- would set, without changing a row (docs/migrate.md, docs/policy.md).
--
-- Run from the checkout (after `make`; needs Debian's lua-dbi-postgresql):
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' \
--     lua5.4 examples/migrate_dry_run.lua 'host=/run/postgresql dbname=arvados user=arvados'
-- Arguments:
--   CONNINFO  a libpq connection string (the password, if any, is never printed)
--   NOW       optional: the time to judge at, epoch seconds (default: the clock)
--   CONFIG    optional: the Arvados config.yml whose MaxTokenLifetime (else
--             TokenLifetime) is the policy (default examples/sample/arvados-config.yml, 24h)
-- examples/sample/arvados-tokens.sql holds sample rows for a scratch
-- database (psql -f), made to be judged at NOW=1800000000.
-- Exit status: 0 when no token outlives the policy, 1 when some do, 2 on an error.
local tp = require "tokenpolicy"
local migrate = require "tokenpolicy.migrate"
local arvados_pg = require "tokenpolicy.store.arvados_pg"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local conninfo = arg[1]
if not conninfo then
  io.stderr:write("usage: migrate_dry_run.lua CONNINFO [NOW [CONFIG]]\n")
  os.exit(2)
end
local now = arg[2] and math.tointeger(tonumber(arg[2])) or os.time()
local config = arg[3] or (here .. "/sample/arvados-config.yml")

-- Fails with the triple's message (never the password) and exit status 2.
local function check(value, message)
  if value == nil then
    io.stderr:write(message, "\n")
    os.exit(2)
  end
  return value
end

local policy = check(tp.policy_from_arvados(config))
local store = check(arvados_pg { conninfo = conninfo })

print("== check: the tokens that outlive the policy")
local found = check(migrate.check_long_lived(store, policy, { now = now }))
-- result:lines() are the rake task's own lines.
for _, line in ipairs(found:lines()) do print(line) end

print("\n== fix, dry run: what it would do (one transaction, rolled back)")
-- tz: the rake task prints the server's local zone; UTC here, so the output is the same everywhere.
local fixed = check(migrate.fix_long_lived(store, policy, { now = now, dry_run = true, tz = "UTC" }))
for _, line in ipairs(fixed:lines()) do print(line) end

print(("\ndry run: %d tokens would expire at %s; nothing was changed"):format(fixed.updated,
  os.date("!%Y-%m-%d %H:%M:%S UTC", fixed.expires_at)))
print(("to apply: tokenpolicy fix-long-lived --db CONNINFO --config %s"):format(config))
store:close()
os.exit(found.tokens == 0 and 0 or 1)
