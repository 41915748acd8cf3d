--- Where each tool keeps its bearer token, and which one it would use.
--
-- `discover` lists every candidate location for the Rucio client, WLCG
-- Bearer Token Discovery and the Arvados clients, in each tool's order of
-- precedence, and marks the one the tool would use. It reads `rucio.cfg`
-- and Arvados' `settings.conf` for their settings, and looks at token files
-- only to tell whether they hold anything: a result never contains a token.
--
-- Every file is reached through the core's safe primitives (`stat`,
-- `read_token`, `read_config`): a FIFO or device planted at a candidate
-- path is reported, never waited on.
--
-- The rules follow the tools' own code (see docs/discovery.md):
--
-- * Rucio 1.27 and later: `<tmp>/<osuser>/.rucio_<osuser>[@<vo>]/`
--   `auth_token_for_account_<account>`, or `[client] auth_token_file_path`;
--   with `auth_type = oidc` a WLCG-discovered token first.
-- * WLCG: `BEARER_TOKEN`, `BEARER_TOKEN_FILE`, `$XDG_RUNTIME_DIR/bt_u<euid>`,
--   `/tmp/bt_u<euid>`; the first that yields a token wins, and a value that
--   is not an RFC 6750 b64token stops the search.
-- * Arvados: `ARVADOS_API_TOKEN`, then `~/.config/arvados/settings.conf`.
--
-- What would stop a tool (no `rucio.cfg`, a malformed config, no user
-- name) is reported as `problem` on that tool's candidates, none of which
-- is then active; the other tools' answers are unaffected.
-- @module tokenpolicy.discovery

local core = require "tokenpolicy.core"
local ini = require "tokenpolicy.ini"
local util = require "tokenpolicy.util"

local fail = util.fail

local M = {}

local SCHEMES = { "rucio", "wlcg", "arvados" }
local KNOWN_SCHEME = { rucio = true, wlcg = true, arvados = true }
local OPTIONS = {
  scheme = function(value)
    if not KNOWN_SCHEME[value] then
      return "must be one of " .. table.concat(SCHEMES, ", ")
    end
  end,
  account = "string",
  vo = "string",
  env = "table",
  uid = function(value)
    if math.type(value) ~= "integer" or value < 0 then
      return "must be a non-negative integer"
    end
  end,
  user = "string",
  config = "string",
}
local NOT_SPACE = "[^ \t\n\v\f\r]" -- C isspace(), as the WLCG text says
local FOLLOW = { follow = true } -- stat's options, made once
-- RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" /
-- "~" / "+" / "/" ) *"="
local B64TOKEN = "^[A-Za-z0-9%-%._~%+/]+=*$"

-- Printing -------------------------------------------------------------------

local COLUMNS = { "scheme", "account", "source", "path", "exists", "active", "problem" }

-- The cells of a candidate's line: never a token (a candidate holds none).
local function cells(c)
  return {
    tostring(c.scheme),
    c.account or "-",
    tostring(c.source),
    c.path or (c.variable and ("$" .. c.variable)) or "-",
    c.exists and "exists" or "missing",
    c.active and "active" or "-",
    c.problem or "",
  }
end

local function render(rows, widths)
  local lines = {}
  for i, row in ipairs(rows) do
    local parts = {}
    for j, cell in ipairs(row) do
      parts[j] = j < #row and cell .. (" "):rep(widths[j] - #cell) or cell
    end
    lines[i] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  return table.concat(lines, "\n")
end

local Candidate = { __name = "tokenpolicy.Candidate" }

--- One line: scheme, account, source, path (or `$VARIABLE`), exists,
-- active, problem.
function Candidate.__tostring(c)
  local row = cells(c)
  local widths = {}
  for j, cell in ipairs(row) do
    widths[j] = #cell
  end
  return render({ row }, widths)
end

local Candidates = { __name = "tokenpolicy.Candidates" }

--- A header and one aligned line per candidate.
function Candidates.__tostring(list)
  if #list == 0 then
    return "no candidates"
  end
  local rows, widths = { COLUMNS }, {}
  for j, name in ipairs(COLUMNS) do
    widths[j] = #name
  end
  for i, c in ipairs(list) do
    rows[i + 1] = cells(c)
    for j, cell in ipairs(rows[i + 1]) do
      widths[j] = math.max(widths[j], #cell)
    end
  end
  return render(rows, widths)
end

local function candidate(t)
  return setmetatable(t, Candidate)
end

-- The context of one call ------------------------------------------------------

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
        util.argerror(1, fname, "option 'env' must map strings to strings", 0)
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
  -- The effective uid names WLCG's files and owns what a tool creates.
  local uid = opts.uid
  ctx.uid = function()
    uid = uid or core.euid()
    return uid
  end
  -- The real uid is what Python's getpass and expanduser fall back to.
  local real_uid = opts.uid
  ctx.real_uid = function()
    real_uid = real_uid or core.uid()
    return real_uid
  end
  return ctx
end

-- Paths -------------------------------------------------------------------------

local function exists(path)
  return core.stat(path) ~= nil
end

-- os.path.join(a, b): b alone when absolute; no "/" added after one.
local function join(a, b)
  if b:sub(1, 1) == "/" then
    return b
  elseif a == "" or a:sub(-1) == "/" then
    return a .. b
  end
  return a .. "/" .. b
end

-- os.path.normpath for absolute paths: no "." or "..", no repeated or
-- trailing "/". POSIX lets "//" alone mean something else, so Python keeps
-- exactly two leading slashes.
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

-- Whether uid may create files in the directory at path (after links):
-- write and search permission by the owner, group or other bits that
-- apply to uid, as the kernel decides them; root may always.
local function writable_dir(ctx, path, uid)
  local st = core.stat(path, FOLLOW)
  if not st or st.type ~= "directory" then
    return false
  end
  if uid == 0 then
    return true
  end
  local bits = st.mode
  if st.uid == uid then
    bits = bits >> 6
  else
    if not ctx.groups then
      ctx.groups = {}
      for _, gid in ipairs(core.groups(uid) or {}) do
        ctx.groups[gid] = true
      end
    end
    if ctx.groups[st.gid] then
      bits = bits >> 3
    end
  end
  return bits & 3 == 3
end

-- Python's tempfile.gettempdir(): the first of TMPDIR, TEMP, TMP (when set
-- and not empty), /tmp, /var/tmp, /usr/tmp and the working directory that
-- is a directory the uid can create files in, made absolute.
local TEMP_VARS = { "TMPDIR", "TEMP", "TMP" }
local TEMP_DIRS = { "/tmp", "/var/tmp", "/usr/tmp" }

local function gettempdir(ctx)
  local uid = ctx.uid()
  local cwd -- asked for only when a relative path needs it
  local tried = {}
  local function usable(dir)
    if dir ~= "." and dir:sub(1, 1) ~= "/" then
      cwd = cwd or core.cwd()
      dir = cwd and join(cwd, dir) or dir
    end
    dir = normpath(dir)
    if writable_dir(ctx, dir, uid) then
      return dir
    end
    tried[#tried + 1] = dir
  end
  for i = 1, #TEMP_VARS do
    local dir = ctx.getenv_set(TEMP_VARS[i])
    dir = dir and usable(dir)
    if dir then
      return dir
    end
  end
  for i = 1, #TEMP_DIRS do
    if usable(TEMP_DIRS[i]) then
      return TEMP_DIRS[i]
    end
  end
  cwd = cwd or core.cwd()
  local last = usable(cwd or ".") -- Python falls back to os.curdir
  if last then
    return last
  end
  return fail("io", ("no usable temporary directory (none of %s is a directory uid %d can write): the Rucio "
    .. "client stops (tempfile finds none)"):format(table.concat(tried, ", "), uid))
end

-- WLCG Bearer Token Discovery ---------------------------------------------

local A_TYPE = {
  file = "a regular file", directory = "a directory", symlink = "a symbolic link", fifo = "a FIFO (named pipe)",
  socket = "a socket", other = "a device",
}

local function strip(s)
  return s:match("^[ \t\n\v\f\r]*(.-)[ \t\n\v\f\r]*$")
end

local function not_b64token(what)
  return ("malformed: %s is not an RFC 6750 b64token (letters, digits, - . _ ~ + / and a trailing '=' run); "
    .. "WLCG discovery stops here"):format(what)
end

-- Whether the file at path (whose lstat is st) holds a token, read only
-- through the core's safe reader: a FIFO, device or directory there is
-- never read, so it cannot hang discovery. Keeps nothing of what it read.
-- The second result is a problem to report.
local function holds_token(path, st)
  if st.type == "symlink" then
    -- read_token never follows a link; the tools do. A link to a regular
    -- file is judged by its target's size, without opening it.
    local target = core.stat(path, FOLLOW)
    if target and target.type ~= "file" then
      return false, ("io: %s is a symbolic link to %s, not to a regular file"):format(path, A_TYPE[target.type])
    end
    return target ~= nil and target.size > 0
  end
  -- Asked for nothing but whether a token is there, whoever owns it.
  local token, msg, code = core.read_token(path, { allow_insecure = true, uid = st.uid })
  if code == "symlink" then
    -- A link among the directories, which read_token follows only when
    -- root's; the tools follow any: judged by the file's size, unopened.
    return st.type == "file" and st.size > 0
  end
  if token then
    if not token:find(B64TOKEN) then
      return false, not_b64token(path)
    end
    return true
  elseif code == "too_large" then
    return true
  elseif code == "io" then
    return false, (msg:gsub("^io: read_token: ", "io: "))
  end
  return false -- only whitespace, or gone since stat
end

local function wlcg_candidates(ctx, out)
  local getenv = ctx.getenv
  local active_taken, stopped = false, false
  local function add(c, yields)
    c.scheme = "wlcg"
    c.active = yields and not active_taken and not stopped
    active_taken = active_taken or yields
    -- A malformed value ends the search: nothing after it is used.
    stopped = stopped or (c.problem ~= nil and c.problem:sub(1, 10) == "malformed:")
    out[#out + 1] = candidate(c)
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
    token = strip(token)
    local yields = token ~= ""
    local problem
    if yields and not token:find(B64TOKEN) then
      yields, problem = false, not_b64token("BEARER_TOKEN")
    end
    add({ source = "env", variable = "BEARER_TOKEN", exists = token ~= "", empty = (token == "") or nil,
          problem = problem }, yields)
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
end

-- Rucio with OIDC asks WLCG first: one call looks at the files once.
local function wlcg(ctx, out)
  if not ctx.wlcg then
    ctx.wlcg = {}
    wlcg_candidates(ctx, ctx.wlcg)
  end
  if out then
    for _, c in ipairs(ctx.wlcg) do
      out[#out + 1] = c
    end
  end
  return ctx.wlcg
end

-- Rucio ------------------------------------------------------------------

local CONFIG_NOT_FOUND = "the Rucio client stops (ConfigNotFound)"

-- The status of a config path at the end of its links, kept for the
-- call (the search looks at it, then the cache).
local function config_stat(ctx, path)
  ctx.config_stats = ctx.config_stats or {}
  local st = ctx.config_stats[path]
  if st == nil then
    st = core.stat(path, FOLLOW) or false
    ctx.config_stats[path] = st
  end
  return st or nil
end

-- The rucio.cfg the client reads, and how it was chosen; or the fail
-- triple saying why the client would stop.
local function rucio_config(ctx)
  local opts, getenv = ctx.opts, ctx.getenv
  local path, source = opts.config, "option"
  if path == nil then
    path, source = getenv("RUCIO_CONFIG"), "env"
  end
  if path ~= nil then
    -- os.path.exists: anything at the end of the links.
    if path == "" then
      return fail("not_found", ("RUCIO_CONFIG is set to the empty string: %s"):format(CONFIG_NOT_FOUND))
    elseif not config_stat(ctx, path) then
      return fail("not_found", ("%s %s, which does not exist: %s"):format(
        source == "env" and "RUCIO_CONFIG names" or "opts.config names", path, CONFIG_NOT_FOUND))
    end
    return path, source
  end
  local looked = {}
  for _, var in ipairs({ "RUCIO_HOME", "VIRTUAL_ENV", "CONDA_PREFIX" }) do
    local dir = getenv(var)
    if dir ~= nil then
      -- os.path.join: an empty RUCIO_HOME means the relative etc/rucio.cfg.
      local candidate_path = join(join(dir, "etc"), "rucio.cfg")
      local st = config_stat(ctx, candidate_path)
      if st and st.type == "file" then
        return candidate_path, "default"
      end
      looked[#looked + 1] = candidate_path
    end
  end
  local default = "/opt/rucio/etc/rucio.cfg"
  local st = config_stat(ctx, default)
  if st and st.type == "file" then
    return default, "default"
  end
  looked[#looked + 1] = default
  return fail("not_found", ("no rucio.cfg at %s: %s"):format(table.concat(looked, ", "), CONFIG_NOT_FOUND))
end

-- getpass.getuser(): the environment, then the real uid's entry.
local function rucio_os_user(ctx)
  if ctx.opts.user then
    return ctx.opts.user
  end
  for _, var in ipairs({ "LOGNAME", "USER", "LNAME", "USERNAME" }) do
    local v = ctx.getenv_set(var)
    if v then
      return v
    end
  end
  local uid = ctx.real_uid()
  local pw = core.user(uid)
  if pw then
    return pw.name
  end
  return fail("not_found", ("no user name: LOGNAME, USER, LNAME and USERNAME are unset and uid %d is not in the "
    .. "password database: the Rucio client stops (getpass finds no user name)"):format(uid))
end

-- Parsed configs, kept while the file is unchanged (same device, inode,
-- size and modification time to the nanosecond): status and discovery run
-- often, the config rarely changes.
-- A process reads few configs, so the cache is small; it is emptied should
-- it ever hold many.
local config_cache, config_cache_size = {}, 0

local function signature(st)
  return ("%d:%d:%d:%d:%d"):format(st.dev, st.ino, st.size, st.mtime, st.mtime_ns)
end

local function read_config(ctx, path)
  local st = config_stat(ctx, path)
  local cached = config_cache[path]
  if st and cached and cached.signature == signature(st) then
    return cached.config
  end
  local cfg, info, code = ini.read(path)
  if not cfg then
    return nil, info, code
  end
  if not cached then
    config_cache_size = config_cache_size + 1
    if config_cache_size > 32 then
      config_cache, config_cache_size = {}, 1
    end
  end
  -- The signature of what was read, not of what stat saw before.
  config_cache[path] = { signature = signature(info), config = cfg }
  return cfg
end

local function rucio(ctx, out)
  local opts, getenv = ctx.opts, ctx.getenv
  local problem -- why the client would stop: set once, on every candidate
  local cfg
  local cfg_path, msg = rucio_config(ctx)
  if cfg_path then
    cfg, msg = read_config(ctx, cfg_path)
    if not cfg then
      problem = msg .. ": the Rucio client cannot load its config and stops"
    end
  else
    problem = msg
  end
  local function client(option)
    if not cfg then
      return nil
    end
    local value, why = cfg:get("client", option)
    if why and not problem then
      problem = why .. ": the Rucio client stops on it"
    end
    -- No path or name holds a NUL byte (Python's open refuses one): the
    -- value is not used, so no primitive is handed a path it must refuse.
    if value and value:find("\0", 1, true) then
      problem = problem or ("malformed: [client] %s holds a NUL byte: the Rucio client stops on it"):format(option)
      return nil
    end
    return value
  end

  local account = opts.account or getenv("RUCIO_ACCOUNT") or client("account")
  local vo = opts.vo or getenv("RUCIO_VO") or client("vo") or "def"
  local auth_type = getenv("RUCIO_AUTH_TYPE") or client("auth_type")
  local file_path = client("auth_token_file_path")
  local at_vo = vo ~= "def" and ("@" .. vo) or ""
  local suffix = account and ("for_account_" .. account) or "for_default_account"

  -- <tmp>/<user>, found only when a path needs it; its failure stops the
  -- client only when the default layout is used.
  local base, base_problem
  local function user_base()
    if base or base_problem then
      return base, base_problem
    end
    local user, why = rucio_os_user(ctx)
    local tmp
    if user then
      tmp, why = gettempdir(ctx)
    end
    if not tmp then
      base_problem = why
      return nil, why
    end
    base = { user = user, dir = join(tmp, user) }
    return base
  end

  local files = {}
  local seen = {}
  local function add(source, path, expiry_path)
    if path and seen[path] then
      return
    end
    seen[path or ""] = true
    files[#files + 1] = candidate({
      scheme = "rucio", account = account, vo = vo, source = source, path = path, expiry_path = expiry_path,
      exists = path ~= nil and exists(path), active = false,
    })
  end

  if file_path and file_path ~= "" then
    -- The exact file: no user name or temporary directory is needed.
    add("config", file_path, dirname(file_path) .. "/auth_token_exp_" .. suffix)
  else
    local b, why = user_base()
    if b then
      local dir = join(b.dir, ".rucio_" .. b.user .. at_vo)
      add("default", join(dir, "auth_token_" .. suffix), join(dir, "auth_token_exp_" .. suffix))
    else
      problem = problem or why
      add("default", nil, nil)
    end
  end
  files[1].active = true
  if account and user_base() then
    -- 1.26 and before named the directory and file after the account.
    local dir = join(base.dir, ".rucio_" .. account .. at_vo)
    add("legacy", join(dir, "auth_token_" .. account), join(dir, "auth_token_exp_" .. account))
    -- The layout many sites' docs show; right only when user = account.
    dir = "/tmp/" .. base.user .. "/.rucio_" .. account
    add("legacy", dir .. "/auth_token_for_account_" .. account, dir .. "/auth_token_exp_for_account_" .. account)
  end

  -- Rucio 38+ with OIDC reads a WLCG-discovered token before its own file.
  if auth_type == "oidc" then
    for _, c in ipairs(wlcg(ctx)) do
      if c.active then
        files[1].active = false
        out[#out + 1] = candidate({
          scheme = "rucio", account = account, vo = vo, source = "wlcg", variable = c.variable, path = c.path,
          exists = c.exists, active = true,
        })
        break
      end
    end
  end
  for _, c in ipairs(files) do
    out[#out + 1] = c
  end
  if problem then
    for _, c in ipairs(out) do
      if c.scheme == "rucio" then
        c.active, c.problem = false, problem
      end
    end
  end
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
    local pw = core.user(ctx.real_uid())
    home = pw and pw.home
  end
  local path = home and (home .. "/.config/arvados/settings.conf")
  -- os.path.exists, as the SDK tests it: at the end of any links.
  local present = path ~= nil and core.stat(path, FOLLOW) ~= nil
  local settings, problem
  if present then
    local msg
    settings, msg = arvados_settings(path)
    if not settings then
      -- The Python SDK reads the file whenever it is there, environment
      -- or not, and stops on what it cannot read.
      problem = msg .. ": the Arvados Python SDK stops on it"
    end
  end
  -- Environment variables override the file's, one by one.
  local host = getenv("ARVADOS_API_HOST")
  if host == nil or host == "" then
    host = settings and settings.host
  end

  local active_taken = problem ~= nil
  local token = getenv("ARVADOS_API_TOKEN")
  if token ~= nil then
    local usable = token:find(NOT_SPACE) ~= nil
    out[#out + 1] = candidate({ scheme = "arvados", source = "env", variable = "ARVADOS_API_TOKEN", host = host,
                                exists = usable, empty = (not usable) or nil, active = usable and not active_taken,
                                problem = problem })
    active_taken = active_taken or usable
  end
  if path then
    local usable = settings and settings.has_token or false
    out[#out + 1] = candidate({ scheme = "arvados", source = "default", path = path, host = host, exists = present,
                                empty = (present and settings and not usable) or nil,
                                active = usable and not active_taken, problem = problem })
  end
end

local DISCOVER = { rucio = rucio, wlcg = wlcg, arvados = arvados }

--- Every candidate token location, in precedence order.
-- Never fails for what it finds: what would stop a tool (no rucio.cfg, a
-- malformed config or settings.conf, no user name, a malformed WLCG token)
-- is that tool's candidates' `problem`, and none of them is then active.
-- The list and each candidate print as aligned lines (`tostring`).
-- @tparam[opt] table opts `scheme` ("rucio", "wlcg" or "arvados"; default
-- all three in that order), `account`, `vo`, `user` (the OS user name),
-- `uid` (default: the effective uid for WLCG's file names and Rucio's
-- temporary directory, the real uid for the password database), `config`
-- (the rucio.cfg to read) and `env` (a table that replaces the process
-- environment).
-- @treturn {table,...} candidates, each with `scheme`, `source` ("env",
-- "config", "default", "legacy" or, for Rucio with OIDC, "wlcg"), `path`
-- or `variable`, `exists`, `active` and, as they apply, `account`, `vo`,
-- `expiry_path`, `host`, `empty` (present but blank) and `problem`
-- ("code: what the tool would do")
function M.discover(opts)
  opts = util.check_opts(opts, OPTIONS, "discover")
  local ctx = context(opts, "discover")
  local out = {}
  for _, scheme in ipairs(SCHEMES) do
    if opts.scheme == nil or opts.scheme == scheme then
      DISCOVER[scheme](ctx, out)
    end
  end
  return setmetatable(out, Candidates)
end

--- The rucio.cfg the Rucio client would read.
-- `RUCIO_CONFIG` alone when set (it must exist), else the first regular
-- file of `$RUCIO_HOME/etc/rucio.cfg`, `$VIRTUAL_ENV/etc/rucio.cfg`,
-- `$CONDA_PREFIX/etc/rucio.cfg`, `/opt/rucio/etc/rucio.cfg`.
-- @tparam[opt] table opts as for `discover` (`config` and `env` matter)
-- @treturn string the path
-- @treturn string its source: "option", "env" or "default"
-- @return or the fail triple `not_found`, whose message says that the
-- Rucio client stops
function M.rucio_config(opts)
  opts = util.check_opts(opts, OPTIONS, "rucio_config")
  return rucio_config(context(opts, "rucio_config"))
end

return M
