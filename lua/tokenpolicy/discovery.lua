--- Where each tool keeps its bearer token, and which one it would use.
--
-- `discover` lists every candidate location for the Rucio client, WLCG
-- Bearer Token Discovery and the Arvados clients, in each tool's order of
-- precedence, and marks the one the tool would use. It reads `rucio.cfg`
-- and Arvados' `settings.conf` for their settings, and looks at token files
-- only to tell whether they hold anything: a result never contains a token.
--
-- The rules follow the tools' own code (see docs/discovery.md):
--
-- * Rucio 1.27 and later: `<tmp>/<osuser>/.rucio_<osuser>[@<vo>]/`
--   `auth_token_for_account_<account>`, or `[client] auth_token_file_path`.
-- * WLCG: `BEARER_TOKEN`, `BEARER_TOKEN_FILE`, `$XDG_RUNTIME_DIR/bt_u<euid>`,
--   `/tmp/bt_u<euid>`; the first that yields a token wins.
-- * Arvados: `ARVADOS_API_TOKEN`, then `~/.config/arvados/settings.conf`.
-- @module tokenpolicy.discovery

local core = require "tokenpolicy.core"
local ini = require "tokenpolicy.ini"

local M = {}

local SCHEMES = { "rucio", "wlcg", "arvados" }
local OPTIONS = {
  scheme = "string",
  account = "string",
  vo = "string",
  env = "table",
  uid = "integer",
  user = "string",
  config = "string",
}
local NOT_SPACE = "[^ \t\n\v\f\r]" -- C isspace(), as the WLCG text says

local function fail(code, msg)
  return nil, code .. ": " .. msg, code
end

local function check_opts(opts, fname)
  if opts == nil then
    return {}
  end
  local function bad(msg)
    error(("bad argument #1 to '%s' (%s)"):format(fname, msg), 4)
  end
  if type(opts) ~= "table" then
    bad("table expected, got " .. type(opts))
  end
  for name, value in pairs(opts) do
    local want = OPTIONS[name]
    if not want then
      bad(("unknown option '%s'"):format(tostring(name)))
    end
    if want == "integer" then
      if math.type(value) ~= "integer" or value < 0 then
        bad(("option '%s' must be a non-negative integer"):format(name))
      end
    elseif type(value) ~= want then
      bad(("option '%s' must be a %s, got %s"):format(name, want, type(value)))
    end
  end
  if opts.scheme ~= nil then
    local known = false
    for _, s in ipairs(SCHEMES) do
      known = known or s == opts.scheme
    end
    if not known then
      bad(("option 'scheme' must be one of %s"):format(table.concat(SCHEMES, ", ")))
    end
  end
  return opts
end

-- One call's view of the world. With opts.env the process environment is
-- not consulted at all, so a caller can ask "what would happen if".
local function context(opts, fname)
  local env = opts.env
  local ctx = { opts = opts }
  if env then
    -- Values are checked as they are read: discovery reads a dozen names,
    -- a copied environment may hold a hundred.
    ctx.getenv = function(name)
      local v = env[name]
      if v ~= nil and type(v) ~= "string" then
        error(("bad argument #1 to '%s' (option 'env' must map strings to strings)"):format(fname), 0)
      end
      return v
    end
  else
    ctx.getenv = function(name) return os.getenv(name) end
  end
  -- Python's `if value:` tests: set and not empty.
  ctx.getenv_set = function(name)
    local v = ctx.getenv(name)
    return v ~= "" and v or nil
  end
  local uid = opts.uid
  ctx.uid = function()
    uid = uid or core.euid()
    return uid
  end
  return ctx
end

local function exists(path)
  return core.stat(path) ~= nil
end

local A_TYPE = {
  file = "a regular file", directory = "a directory", symlink = "a symbolic link", fifo = "a FIFO (named pipe)",
  socket = "a socket", other = "a device",
}

-- Whether the file at path (whose lstat is st) holds anything but
-- whitespace, read only through the core's safe reader: a FIFO, device or
-- directory there is never read, so it cannot hang discovery. Keeps
-- nothing of what it read. The second result is a problem to report.
local function holds_token(path, st)
  if st.type == "symlink" then
    -- read_token never follows a link; the tools do. A link to a regular
    -- file is judged by its target's size, without opening it.
    local target = core.stat(path, { follow = true })
    if target and target.type ~= "file" then
      return false, ("io: %s is a symbolic link to %s, not to a regular file"):format(path, A_TYPE[target.type])
    end
    return target ~= nil and target.size > 0
  end
  -- Asked for nothing but whether a token is there, whoever owns it.
  local token, msg, code = core.read_token(path, { allow_insecure = true, uid = st.uid })
  if token or code == "too_large" then
    return true
  elseif code == "io" then
    return false, (msg:gsub("^io: read_token: ", "io: "))
  end
  return false  -- only whitespace, or gone since stat
end

-- os.path.abspath for absolute paths (Rucio takes its tmp dir through it):
-- no "." or "..", no repeated or trailing "/". POSIX lets "//" alone mean
-- something else, so Python keeps exactly two leading slashes.
local function normpath(path)
  -- Most paths are already normal: no "//", no "." or ".." segment, no
  -- trailing "/".
  if path:sub(1, 1) ~= "/" or not (path:find("//", 1, true) or path:find("/%.%.?/") or path:find("/%.?%.?$")) then
    return path
  end
  local parts = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      parts[#parts] = nil
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  local lead = (path:sub(1, 2) == "//" and path:sub(3, 3) ~= "/") and "//" or "/"
  return lead .. table.concat(parts, "/")
end

local function dirname(path)
  -- Rucio: '/'.join(path.split('/')[:-1]), so "token" gives "".
  return path:match("^(.*)/[^/]*$") or ""
end

-- Rucio ------------------------------------------------------------------

local function rucio_config(ctx)
  local opts, getenv = ctx.opts, ctx.getenv
  if opts.config then
    return opts.config, "option"
  end
  local v = getenv("RUCIO_CONFIG")
  if v ~= nil then
    return v, "env"
  end
  local looked = {}
  for _, var in ipairs({ "RUCIO_HOME", "VIRTUAL_ENV", "CONDA_PREFIX" }) do
    local dir = getenv(var)
    if dir ~= nil then
      local path = dir .. "/etc/rucio.cfg"
      if exists(path) then
        return path, "default"
      end
      looked[#looked + 1] = path
    end
  end
  local path = "/opt/rucio/etc/rucio.cfg"
  if exists(path) then
    return path, "default"
  end
  looked[#looked + 1] = path
  return fail("not_found", "no rucio.cfg at " .. table.concat(looked, ", "))
end

local function rucio_os_user(ctx)
  if ctx.opts.user then
    return ctx.opts.user
  end
  -- getpass.getuser()
  for _, var in ipairs({ "LOGNAME", "USER", "LNAME", "USERNAME" }) do
    local v = ctx.getenv_set(var)
    if v then
      return v
    end
  end
  local pw = core.user(ctx.uid())
  if pw then
    return pw.name
  end
  return fail("not_found", ("no user name: LOGNAME, USER, LNAME and USERNAME are unset and uid %d is not in the "
    .. "password database"):format(ctx.uid()))
end

-- Parsed configs, kept while the file is unchanged (same device, inode,
-- size and modification time to the nanosecond): status and discovery run
-- often, the config rarely changes.
-- A process reads few configs, so the cache is small; it is emptied should
-- it ever hold many.
local config_cache, config_cache_size = {}, 0

local function read_config(path)
  local st = core.stat(path, { follow = true })
  if st then
    local cached = config_cache[path]
    if cached and cached.signature == ("%d:%d:%d:%d:%d"):format(st.dev, st.ino, st.size, st.mtime, st.mtime_ns) then
      return cached.config
    end
  end
  local cfg, info, code = ini.read(path)
  if not cfg then
    return nil, info, code
  end
  if not config_cache[path] then
    config_cache_size = config_cache_size + 1
    if config_cache_size > 32 then
      config_cache, config_cache_size = {}, 1
    end
  end
  -- The signature of what was read, not of what stat saw before.
  config_cache[path] = {
    signature = ("%d:%d:%d:%d:%d"):format(info.dev, info.ino, info.size, info.mtime, info.mtime_ns),
    config = cfg,
  }
  return cfg
end

local function rucio(ctx, out)
  local opts, getenv = ctx.opts, ctx.getenv
  local cfg
  local cfg_path = rucio_config(ctx)
  if cfg_path then
    local msg, code
    cfg, msg, code = read_config(cfg_path)
    if not cfg and code ~= "not_found" then
      return nil, msg, code
    end
  end
  local function client(option)
    if not cfg then
      return nil
    end
    return cfg:get("client", option)
  end

  local account, vo, file_path, msg, code
  account = opts.account or getenv("RUCIO_ACCOUNT")
  if account == nil then
    account, msg, code = client("account")
    if msg then
      return nil, msg, code
    end
  end
  vo = opts.vo or getenv("RUCIO_VO")
  if vo == nil then
    vo, msg, code = client("vo")
    if msg then
      return nil, msg, code
    end
    vo = vo or "def"
  end
  file_path, msg, code = client("auth_token_file_path")
  if msg then
    return nil, msg, code
  end

  local user
  user, msg, code = rucio_os_user(ctx)
  if not user then
    return nil, msg, code
  end
  local tmp = "/tmp"
  for _, var in ipairs({ "TMPDIR", "TEMP", "TMP" }) do
    local v = ctx.getenv_set(var)
    if v then
      tmp = normpath(v)
      break
    end
  end
  local at_vo = vo ~= "def" and ("@" .. vo) or ""
  local suffix = account and ("for_account_" .. account) or "for_default_account"
  local base = tmp .. "/" .. user

  local seen = {}
  local function add(source, path, expiry_path, active)
    if seen[path] then
      return
    end
    seen[path] = true
    out[#out + 1] = {
      scheme = "rucio", account = account, vo = vo, source = source,
      path = path, expiry_path = expiry_path, exists = exists(path), active = active,
    }
  end

  if file_path and file_path ~= "" then
    add("config", file_path, dirname(file_path) .. "/auth_token_exp_" .. suffix, true)
  else
    local dir = base .. "/.rucio_" .. user .. at_vo
    add("default", dir .. "/auth_token_" .. suffix, dir .. "/auth_token_exp_" .. suffix, true)
  end
  if account then
    -- 1.26 and before named the directory and file after the account.
    local dir = base .. "/.rucio_" .. account .. at_vo
    add("legacy", dir .. "/auth_token_" .. account, dir .. "/auth_token_exp_" .. account, false)
    -- The layout many sites' docs show; right only when user = account.
    dir = "/tmp/" .. user .. "/.rucio_" .. account
    add("legacy", dir .. "/auth_token_for_account_" .. account, dir .. "/auth_token_exp_for_account_" .. account,
      false)
  end
  return true
end

-- WLCG Bearer Token Discovery ---------------------------------------------

local function wlcg(ctx, out)
  local getenv = ctx.getenv
  local active_taken = false
  local function add(c, yields)
    c.scheme = "wlcg"
    c.active = yields and not active_taken
    active_taken = active_taken or yields
    out[#out + 1] = c
  end
  local function file(source, variable, path)
    local st = core.stat(path)
    local present = st ~= nil
    local yields, problem = false, nil
    if present then
      yields, problem = holds_token(path, st)
    end
    add({ source = source, variable = variable, path = path, exists = present,
          empty = (present and not yields and not problem) or nil, problem = problem }, yields)
  end

  local token = getenv("BEARER_TOKEN")
  if token ~= nil then
    local yields = token:find(NOT_SPACE) ~= nil
    add({ source = "env", variable = "BEARER_TOKEN", exists = yields, empty = (not yields) or nil }, yields)
  end
  local token_file = getenv("BEARER_TOKEN_FILE")
  if token_file == "" then
    add({ source = "env", variable = "BEARER_TOKEN_FILE", exists = false, empty = true }, false)
  elseif token_file ~= nil then
    file("env", "BEARER_TOKEN_FILE", token_file)
  end
  local name = "bt_u" .. ctx.uid()
  local runtime = ctx.getenv_set("XDG_RUNTIME_DIR")
  if runtime then
    file("default", nil, runtime .. "/" .. name)
  end
  file("default", nil, "/tmp/" .. name)
  return true
end

-- Arvados -------------------------------------------------------------------

-- settings.conf: KEY=VALUE lines; blank lines and "#" comments skipped.
-- Returns the host and whether a token is there, never the token.
local function arvados_settings(path)
  local text, msg, code = core.read_config(path)
  if not text then
    return nil, msg, code
  end
  local host, has_token
  local lineno = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    if line:find(NOT_SPACE) and not line:find("^%s*#") then
      local key, value = line:match("^([^=]*)=(.-)%s*$")
      if not key then
        return fail("malformed", ("%s: line %d: not a KEY=VALUE line"):format(path, lineno))
      end
      if key == "ARVADOS_API_HOST" then
        host = value
      elseif key == "ARVADOS_API_TOKEN" then
        has_token = value ~= ""
      end
    end
  end
  return { host = host, has_token = has_token or false }
end

local function arvados(ctx, out)
  local getenv = ctx.getenv
  local home = ctx.getenv_set("HOME")
  if not home then
    local pw = core.user(ctx.uid())
    home = pw and pw.home
  end
  local path = home and (home .. "/.config/arvados/settings.conf")
  local present = path and exists(path)
  local settings
  if present then
    local msg, code
    settings, msg, code = arvados_settings(path)
    if not settings then
      return nil, msg, code
    end
  end
  -- Environment variables override the file's, one by one.
  local host = getenv("ARVADOS_API_HOST")
  if host == nil or host == "" then
    host = settings and settings.host
  end

  local active_taken = false
  local token = getenv("ARVADOS_API_TOKEN")
  if token ~= nil then
    local usable = token:find(NOT_SPACE) ~= nil
    out[#out + 1] = { scheme = "arvados", source = "env", variable = "ARVADOS_API_TOKEN", host = host,
                      exists = usable, empty = (not usable) or nil, active = usable }
    active_taken = usable
  end
  if path then
    local usable = settings and settings.has_token or false
    out[#out + 1] = { scheme = "arvados", source = "default", path = path, host = host, exists = present,
                      empty = (present and not usable) or nil, active = usable and not active_taken }
  end
  return true
end

local DISCOVER = { rucio = rucio, wlcg = wlcg, arvados = arvados }

--- Every candidate token location, in precedence order.
-- @tparam[opt] table opts `scheme` ("rucio", "wlcg" or "arvados"; default
-- all three in that order), `account`, `vo`, `user` (the OS user name),
-- `uid` (default the effective uid), `config` (the rucio.cfg to read) and
-- `env` (a table that replaces the process environment).
-- @treturn {table,...} candidates, each with `scheme`, `source` ("env",
-- "config", "default" or "legacy"), `path` or `variable`, `exists`,
-- `active` and, as they apply, `account`, `vo`, `expiry_path`, `host`,
-- `empty` (present but blank)
-- @return or the fail triple: `malformed` or `io` for a bad rucio.cfg or
-- settings.conf, `not_found` when Rucio's user name cannot be found
function M.discover(opts)
  opts = check_opts(opts, "discover")
  local ctx = context(opts, "discover")
  local out = {}
  for _, scheme in ipairs(SCHEMES) do
    if opts.scheme == nil or opts.scheme == scheme then
      local ok, msg, code = DISCOVER[scheme](ctx, out)
      if not ok then
        return nil, msg, code
      end
    end
  end
  return out
end

--- The rucio.cfg the Rucio client would read.
-- `RUCIO_CONFIG` alone when set (even if the file does not exist), else the
-- first existing of `$RUCIO_HOME/etc/rucio.cfg`, `$VIRTUAL_ENV/etc/rucio.cfg`,
-- `$CONDA_PREFIX/etc/rucio.cfg`, `/opt/rucio/etc/rucio.cfg`.
-- @tparam[opt] table opts as for `discover` (`config` and `env` matter)
-- @treturn string the path
-- @treturn string its source: "option", "env" or "default"
-- @return or the fail triple `not_found`
function M.rucio_config(opts)
  opts = check_opts(opts, "rucio_config")
  return rucio_config(context(opts, "rucio_config"))
end

return M
