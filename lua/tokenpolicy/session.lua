--- The jobs people run on their own tokens: status, logout, switch account.
--
-- `status` lists every token the user has (Rucio, every account and VO and
-- layout; WLCG bearer tokens; Arvados), `logout` ends them (locally, and
-- with `revoke` at their issuer), `switch_account` prepares the shell line
-- that makes Rucio use another account. All three are built on the core's
-- safe primitives only: token files are read with `read_token`, configs
-- with `read_config`, removed with `remove_token`/`remove_tree`, rewritten
-- with `rewrite_config`, listed with `list_dir`; none of them follows a
-- symbolic link where a token lives, and a FIFO cannot hang them.
--
-- A result never holds a token: only what `classify` and `decode` say
-- about it (kind, subject, issuer, audience, scope, times).
-- @module tokenpolicy.session

local core = require "tokenpolicy.core"
local discovery = require "tokenpolicy.discovery"
local classify = require("tokenpolicy.classify").classify
local ini = require "tokenpolicy.ini"
local util = require "tokenpolicy.util"

local fail = util.fail

local M = {}

local KNOWN_SCHEME = { rucio = true, wlcg = true, arvados = true }

local function check_scheme(value)
  if not KNOWN_SCHEME[value] then
    return "must be one of rucio, wlcg, arvados"
  end
end

local function check_uid(value)
  if math.type(value) ~= "integer" or value < 0 then
    return "must be a non-negative integer"
  end
end

local function check_policy(value)
  local mt = getmetatable(value)
  if type(mt) ~= "table" or mt.__name ~= "tokenpolicy.Policy" then
    return "must be a tokenpolicy.Policy (tp.policy{...})"
  end
end

local function check_env(value)
  if type(value) ~= "table" then
    return "must be table, got " .. type(value)
  end
  for k, v in pairs(value) do
    if type(k) ~= "string" or type(v) ~= "string" then
      return "must map strings to strings"
    end
  end
end

-- Helpers ------------------------------------------------------------------

local function getenv_of(opts)
  if opts.env then
    return function(name) return opts.env[name] end
  end
  return os.getenv
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function basename(path)
  return path:match("([^/]*)$")
end

local function utc(t)
  return t and os.date("!%Y-%m-%d %H:%M:%S UTC", t) or "-"
end

-- Aligned columns, trailing blanks cut.
local function render(rows)
  local widths = {}
  for _, row in ipairs(rows) do
    for j, cell in ipairs(row) do
      widths[j] = math.max(widths[j] or 0, #cell)
    end
  end
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

-- Rucio's refresh window: `[client] auth_oidc_refresh_before_exp` minutes
-- of the rucio.cfg the client reads, 20 when absent or unreadable.
local function rucio_refresh_window(opts)
  local path = discovery.rucio_config({ env = opts.env, config = opts.config })
  if path then
    local cfg = ini.read(path)
    local minutes = cfg and tonumber((cfg:get("client", "auth_oidc_refresh_before_exp")))
    if minutes and minutes >= 0 then
      return math.floor(minutes * 60)
    end
  end
  return 20 * 60
end

-- Arvados' settings.conf: the value of ARVADOS_API_TOKEN (nil if none).
local function arvados_file_token(path)
  local text = core.read_config(path)
  if not text then
    return nil
  end
  local token
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local value = line:match("^ARVADOS_API_TOKEN=(.-)%s*$")
    if value then
      token = value
    end
  end
  return token ~= "" and token or nil
end

-- Status -----------------------------------------------------------------

local COLUMNS = { "scheme", "account", "vo", "source", "path", "active", "kind", "state", "expires", "findings" }

local function entry_cells(e)
  local where = e.path or (e.variable and ("$" .. e.variable)) or "-"
  return {
    e.scheme, e.account or "-", e.vo or "-", e.source, where, e.active and "active" or "-", e.kind or "-",
    e.state or "-", e.exp and utc(e.exp) or "-", #e.findings > 0 and table.concat(e.findings, ",") or "-",
  }
end

local Entry = { __name = "tokenpolicy.TokenStatus" }

--- One line: scheme, account, VO, source, path, active, kind, state,
-- expiry, findings. Never the token.
function Entry.__tostring(e)
  return render({ entry_cells(e) })
end

local Status = { __name = "tokenpolicy.Status" }

--- A header and one aligned line per token.
function Status.__tostring(list)
  if #list == 0 then
    return "no tokens"
  end
  local rows = { COLUMNS }
  for i, e in ipairs(list) do
    rows[i + 1] = entry_cells(e)
  end
  return render(rows)
end

local function add_finding(e, code)
  for _, have in ipairs(e.findings) do
    if have == code then
      return
    end
  end
  e.findings[#e.findings + 1] = code
end

-- Reads a token file for status: the user's own, whatever its mode (the
-- mode is a finding, not a reason to look away). Returns the token or nil
-- with the failure's code recorded as a finding.
local function read_file_token(e, path, uid)
  local token, msg, code = core.read_token(path, { uid = uid, allow_insecure = true })
  if token then
    return token
  end
  add_finding(e, code)
  e.problem = e.problem or msg
end

-- Fills what classify and decode say about the token (never the token).
local function describe(e, token)
  local c = classify(token)
  e.kind = c.kind
  if c.kind == "jwt" then
    local jwt = core.decode(token)
    if jwt then
      local claims = jwt.claims
      local function take(name, want)
        local v = claims[name]
        if type(v) == want or (want == "table" and type(v) == "string") then
          return v
        end
      end
      e.sub, e.iss, e.aud, e.scope = take("sub", "string"), take("iss", "string"), take("aud", "table"),
        take("scope", "string")
      e.jti = take("jti", "string")
      local iat, exp = claims.iat, claims.exp
      e.iat = type(iat) == "number" and math.floor(iat) or nil
      e.exp = type(exp) == "number" and math.floor(exp) or nil
      e.claims = claims
    end
  elseif c.kind == "rucio" then
    e.sub = c.account
  elseif c.kind == "arvados_v2" then
    e.sub = c.uuid
  end
end

local function judge(e, policy, now)
  local record
  if e.claims then
    record = e.claims
  elseif e.exp then
    record = { expires_at = e.exp }
  end
  e.claims = nil
  if not record then
    -- An opaque or Arvados token's expiry is known only to its server.
    e.state = e.kind and "unknown" or nil
    e.refresh_due = false
    return
  end
  local verdict = policy:evaluate(record, now)
  e.state, e.refresh_due = verdict.state, verdict.refresh_due
  if verdict.state == "expired" then
    add_finding(e, "expired")
  end
end

-- Every file token's entry: read, classified, audited.
local function file_entry(e, uid, token_out)
  local st = core.stat(e.path)
  if st and st.type == "symlink" then
    add_finding(e, "symlink")
  end
  local findings = core.audit(e.path, { uid = uid })
  for _, f in ipairs(findings or {}) do
    add_finding(e, f.code)
  end
  -- read_token follows links among the directories of a path: a linked
  -- token directory (a neighbour's trap) is reported, never read through.
  for _, code in ipairs(e.findings) do
    if code == "symlink" then
      return
    end
  end
  local token
  if e.scheme == "arvados" then
    token = arvados_file_token(e.path)
  else
    token = read_file_token(e, e.path, uid)
  end
  if token then
    describe(e, token)
    if token_out then
      token_out[e] = token
    end
  end
  if e.scheme == "rucio" and e.expiry_path and e.kind ~= "jwt" then
    local text = core.read_token(e.expiry_path, { uid = uid, allow_insecure = true })
    local epoch = text and tonumber(text)
    e.exp = epoch and math.floor(epoch) or e.exp
  end
end

local STATUS_OPTIONS = {
  env = check_env, uid = check_uid, now = "integer", scheme = check_scheme, account = "string",
  policy = check_policy, config = "string",
}

-- The Rucio cache directories of the user: `<tmp>/<user>/.rucio_<user>[@vo]`,
-- found from the default candidate's path (or a legacy one's).
local function rucio_cache_dirs(candidates)
  for _, c in ipairs(candidates) do
    if c.scheme == "rucio" and c.source == "default" and c.path then
      local dir = dirname(c.path)
      local user = basename(dir):match("^%.rucio_([^@]*)")
      return dirname(dir), user
    end
  end
  for _, c in ipairs(candidates) do
    if c.scheme == "rucio" and c.source == "legacy" and c.path and c.path:find("/auth_token_[^/]*$") then
      local base = dirname(dirname(c.path))
      return base, basename(base)
    end
  end
end

-- Collects the entries (and, in tokens, each entry's token for logout).
local function collect(opts, tokens)
  local uid = opts.uid or core.euid()
  local getenv = getenv_of(opts)
  local candidates = discovery.discover({
    scheme = opts.scheme, account = opts.account, env = opts.env, uid = opts.uid, config = opts.config,
  })
  local list, seen = {}, {}
  local function add(e)
    e.findings = e.findings or {}
    list[#list + 1] = setmetatable(e, Entry)
  end
  for _, c in ipairs(candidates) do
    local key = c.path or ("$" .. tostring(c.variable))
    if c.exists and not c.empty and not seen[key] and not (c.scheme == "rucio" and c.source == "wlcg") then
      seen[key] = true
      local e = {
        scheme = c.scheme, account = c.account, vo = c.vo, source = c.source, path = c.path,
        variable = c.variable, active = c.active, expiry_path = c.expiry_path, host = c.host, findings = {},
      }
      if c.problem then
        add_finding(e, "problem")
        e.problem = c.problem
      end
      if c.path then
        file_entry(e, uid, tokens)
      else
        local token = getenv(c.variable)
        token = token and token:match("^%s*(.-)%s*$")
        if token and token ~= "" then
          describe(e, token)
          if tokens then
            tokens[e] = token
          end
        end
      end
      add(e)
    end
  end
  -- Every other account's token in the user's Rucio cache directories.
  if opts.scheme == nil or opts.scheme == "rucio" then
    local base, user = rucio_cache_dirs(candidates)
    local names = base and user and core.list_dir(base)
    for _, dirname_ in ipairs(names or {}) do
      local vo = dirname_ == ".rucio_" .. user and "def" or (dirname_:sub(1, #user + 8) == ".rucio_" .. user .. "@"
        and dirname_:sub(#user + 9))
      local dir = base .. "/" .. dirname_
      local files = vo and vo ~= "" and core.list_dir(dir)
      for _, name in ipairs(files or {}) do
        local account = name:match("^auth_token_for_account_(.+)$")
        local default = name == "auth_token_for_default_account"
        local path = dir .. "/" .. name
        if (account or default) and not seen[path] and (opts.account == nil or opts.account == account) then
          seen[path] = true
          local suffix = account and ("for_account_" .. account) or "for_default_account"
          local e = {
            scheme = "rucio", account = account, vo = vo, source = "cache", path = path,
            expiry_path = dir .. "/auth_token_exp_" .. suffix, active = false, findings = {},
          }
          file_entry(e, uid, tokens)
          add(e)
        end
      end
    end
  end
  -- Each scheme's tokens together, in discovery's order of schemes.
  local order = { rucio = 1, wlcg = 2, arvados = 3 }
  for i, e in ipairs(list) do
    e.position = i
  end
  table.sort(list, function(a, b)
    if a.scheme ~= b.scheme then
      return order[a.scheme] < order[b.scheme]
    end
    return a.position < b.position
  end)
  for _, e in ipairs(list) do
    e.position = nil
  end
  local policy = opts.policy
  local now = opts.now or os.time()
  if not policy then
    policy = core.policy({ refresh_before_exp = rucio_refresh_window(opts) })
  end
  for _, e in ipairs(list) do
    judge(e, policy, now)
  end
  return setmetatable(list, Status)
end

--- Every token the user has, one entry each, never the token itself.
-- Every candidate `discover` finds that exists (legacy layouts and
-- environment tokens included) and every other account's token in the
-- user's Rucio cache directories (`auth_token_for_account_*` under each
-- `.rucio_<user>[@vo]`, source `"cache"`).
-- @tparam[opt] table opts `env` (replaces the environment), `uid`, `now`,
-- `scheme`, `account` (Rucio: this account only), `policy` (a
-- tp.policy; default: Rucio's refresh window `auth_oidc_refresh_before_exp`
-- minutes, 20 when not set), `config` (the rucio.cfg)
-- @treturn table a list of entries: `scheme`, `account`, `vo`, `source`,
-- `path` (nil for an environment token; then `variable`), `active`, `kind`,
-- `sub`, `iss`, `aud`, `scope`, `iat`, `exp`, `state` ("unknown" when the
-- expiry is known only to the server), `refresh_due`, `findings` (codes),
-- `problem` (a message, when there is one); it prints as an aligned table
function M.status(opts)
  opts = util.check_opts(opts, STATUS_OPTIONS, "status")
  return collect(opts)
end

return M
