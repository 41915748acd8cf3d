--- A throw-away PostgreSQL server for the specs: Debian's `postgresql`
-- binaries, a cluster initialised in a temporary directory and listening
-- only on a Unix socket there (no TCP port, so parallel runs never clash).
--
-- PostgreSQL refuses to run as root, so when the specs run as root the
-- cluster belongs to `nobody` (its directory is chowned to it) and every
-- server command goes through `runuser`. Clients connect over the socket as
-- the superuser named at initdb (`-U`), with trust authentication.
--
-- Usage: `local pg = postgres.start()` in `setup`/`lazy_setup`, `pg:stop()`
-- in `teardown` (also reached when a spec fails).
local expect = require "helpers.expect"

local postgres = {}

local SUPERUSER = "tp"

-- Every PostgreSQL program runs without the sanitizer runtime `make asan`
-- preloads into the Lua interpreters: it is not ours to check, and
-- initdb exits when it reports the server's own leaks.
local CLEAN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The directory of the PostgreSQL server binaries, or nil (with why).
function postgres.bindir()
  local p = io.popen(CLEAN .. "sh -c 'ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1'")
  local dir = p:read("l")
  p:close()
  if dir and dir ~= "" then return dir end
  return nil, "no PostgreSQL server under /usr/lib/postgresql (Debian: postgresql)"
end

local function is_root()
  local p = io.popen(CLEAN .. "id -u")
  local uid = p:read("l")
  p:close()
  return uid == "0"
end

--- Sleeps `seconds` (fractions allowed).
function postgres.sleep(seconds)
  os.execute(CLEAN .. "sleep " .. seconds)
end

local Server = {}
Server.__index = Server

-- Runs a server command as the cluster's owner; true or false, output.
function Server:run(cmd)
  local full = self.as .. cmd .. " 2>&1"
  local p = io.popen(full)
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

--- The conninfo clients use (the socket directory, the superuser).
function Server:conninfo(dbname)
  return ("host=%s dbname=%s user=%s"):format(self.dir, dbname or "arvados", SUPERUSER)
end

--- Runs SQL through psql (ON_ERROR_STOP); returns its output, raises on error.
function Server:psql(sql, dbname)
  local file = self.dir .. "/input.sql"
  local f = assert(io.open(file, "wb"))
  f:write(sql)
  f:close()
  local p = io.popen(("%s%s/psql -X -q -A -t -v ON_ERROR_STOP=1 %s -f %s 2>&1")
    :format(CLEAN, self.bin, quote(self:conninfo(dbname)), quote(file)))
  local out = p:read("a")
  local ok = p:close()
  os.remove(file)
  if not ok then error("psql failed: " .. out, 2) end
  return out
end

--- Starts the server again after a stop (same data).
function Server:start()
  local settings = "-c listen_addresses='' -k " .. self.dir .. (self.fsync and "" or " -c fsync=off")
  for _, setting in ipairs(self.settings) do settings = settings .. " -c " .. setting end
  local ok, out = self:run(("%s/pg_ctl -D %s -l %s -w -o %s start"):format(self.bin, quote(self.dir .. "/data"),
    quote(self.dir .. "/server.log"), quote(settings)))
  if not ok then error("pg_ctl start failed: " .. out, 2) end
  self.running = true
end

--- Stops the server (`mode`: "fast" by default, "immediate" for a crash).
function Server:halt(mode)
  if not self.running then return end
  self:run(("%s/pg_ctl -D %s -w -m %s stop"):format(self.bin, quote(self.dir .. "/data"), mode or "fast"))
  self.running = false
end

--- Stops the server in the background after `seconds` (mode as for
-- `halt`), while the caller is blocked in a statement.
function Server:halt_later(seconds, mode)
  local stop = ("sleep %s; %s%s/pg_ctl -D %s -w -m %s stop"):format(seconds, self.as, self.bin,
    quote(self.dir .. "/data"), mode or "immediate")
  os.execute(("%ssh -c %s >/dev/null 2>&1 &"):format(CLEAN, quote(stop)))
  self.running = false
end

--- Runs `sql` in a background session that then sleeps for a minute
-- inside its transaction (holding its locks); returns once it sleeps.
function Server:hold(sql, dbname)
  local script = "BEGIN;\n" .. sql:gsub("\n", " ") .. "\nSELECT pg_sleep(60);\n"
  os.execute(("printf '%%s' %s | %s%s/psql -X -q %s >/dev/null 2>&1 &"):format(quote(script), CLEAN, self.bin,
    quote(self:conninfo(dbname))))
  for _ = 1, 100 do
    if self:psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep';", dbname):match("^1") then
      return
    end
    postgres.sleep(0.05)
  end
  error("the background session did not start", 2)
end

--- Stops the server and removes its directory.
function Server:stop()
  self:halt("immediate")
  if self.dir then
    expect.remove_dir(self.dir)
    self.dir = nil
  end
end

--- Creates an empty Arvados-like database `dbname` (default "arvados") with
-- the two tables the rake tasks read, with Arvados' column names and types.
function Server:create_arvados(dbname)
  dbname = dbname or "arvados"
  self:psql(("CREATE DATABASE %s;"):format(dbname), "postgres")
  self:psql(postgres.SCHEMA, dbname)
end

-- The columns of Arvados' users and api_client_authorizations tables
-- (services/api/db/structure.sql), with their types.
postgres.SCHEMA = [[
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    uuid character varying(255),
    owner_uuid character varying(255) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    modified_by_client_uuid character varying(255),
    modified_by_user_uuid character varying(255),
    modified_at timestamp without time zone,
    email character varying(255),
    first_name character varying(255),
    last_name character varying(255),
    identity_url character varying(255),
    is_admin boolean,
    prefs text,
    updated_at timestamp without time zone NOT NULL,
    default_owner_uuid character varying(255),
    is_active boolean DEFAULT false,
    username character varying(255),
    redirect_to_user_uuid character varying
);
CREATE UNIQUE INDEX index_users_on_uuid ON users USING btree (uuid);
CREATE TABLE api_client_authorizations (
    id bigserial PRIMARY KEY,
    api_token character varying(255) NOT NULL,
    api_client_id bigint NOT NULL DEFAULT 0,
    user_id bigint NOT NULL,
    created_by_ip_address character varying(255),
    last_used_by_ip_address character varying(255),
    last_used_at timestamp without time zone,
    expires_at timestamp without time zone,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    default_owner_uuid character varying(255),
    scopes text DEFAULT '["all"]'::text,
    uuid character varying(255) NOT NULL,
    refreshes_at timestamp without time zone
);
CREATE UNIQUE INDEX index_api_client_authorizations_on_api_token ON api_client_authorizations USING btree (api_token);
CREATE INDEX index_api_client_authorizations_on_expires_at ON api_client_authorizations USING btree (expires_at);
CREATE INDEX index_api_client_authorizations_on_user_id ON api_client_authorizations USING btree (user_id);
]]

--- Initialises and starts a new cluster; returns the server object.
-- `opts.fsync`: keep fsync on (the specs turn it off for speed).
-- `opts.settings`: more server settings, a list of "name=value" strings.
-- Raises (with the reason) when PostgreSQL is not installed or fails.
function postgres.new(opts)
  local bin = assert(postgres.bindir())
  local dir = expect.new_dir()
  local server = setmetatable({ bin = bin, dir = dir, as = CLEAN, fsync = opts and opts.fsync,
    settings = opts and opts.settings or {} }, Server)
  if is_root() then
    assert(os.execute(CLEAN .. "chown nobody " .. quote(dir)))
    server.as = CLEAN .. "runuser -u nobody -- "
  end
  local ok, out = server:run(("%s/initdb -D %s -U %s -A trust --no-sync -E UTF8"):format(bin,
    quote(dir .. "/data"), SUPERUSER))
  if not ok then
    server:stop()
    error("initdb failed: " .. out, 2)
  end
  local started, why = pcall(server.start, server)
  if not started then
    server:stop()
    error(why, 2)
  end
  return server
end

return postgres
