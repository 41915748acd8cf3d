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
  -- A linked token directory (a neighbour's trap) is reported and not
  -- read (read_token would refuse it too, unless root's).
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
    scheme = opts.scheme, account = opts.account, vo = opts.vo, env = opts.env, uid = opts.uid, config = opts.config,
  })
  local list, seen = {}, {}
  local function add(e)
    e.findings = e.findings or {}
    list[#list + 1] = setmetatable(e, Entry)
  end
  -- Rucio with OIDC uses the WLCG bearer token: listed under wlcg when
  -- every scheme is (once), and under rucio when only Rucio's are asked
  -- for, by status only: logout of Rucio alone leaves that token, which
  -- other WLCG tools share.
  local rucio_uses_wlcg = opts.scheme == "rucio" and not tokens
  for _, c in ipairs(candidates) do
    local key = c.path or ("$" .. tostring(c.variable))
    if c.exists and not c.empty and not seen[key]
        and not (c.scheme == "rucio" and c.source == "wlcg" and not rucio_uses_wlcg) then
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

-- Logout --------------------------------------------------------------------

local Report = { __name = "tokenpolicy.LogoutReport" }

--- One line per action (`ok`/`FAILED`/`would`, action, target, message),
-- then a summary line. Never a token.
function Report.__tostring(r)
  if r.nothing_to_do then
    return "nothing to do: no tokens found"
  end
  local rows = {}
  for i, a in ipairs(r.actions) do
    local status = a.ok and (r.dry_run and "would" or "ok") or (a.code or "failed")
    rows[i] = { status, a.action, a.target, a.message or "" }
  end
  local last = r.ok and (r.dry_run and "dry run: nothing was changed" or "logged out")
    or "not everything could be ended: see above"
  return render(rows) .. "\n" .. last
end

local function check_denylist(value)
  if type(value) == "string" then
    return nil
  end
  local mt = getmetatable(value)
  if type(mt) ~= "table" or mt.__name ~= "tokenpolicy.Denylist" then
    return "must be a path or a tokenpolicy.Denylist (tp.denylist(path))"
  end
end

local LOGOUT_OPTIONS = {
  scheme = check_scheme, account = "string", all = "boolean", revoke = "boolean", denylist = check_denylist,
  dry_run = "boolean", client_id = "string", client_secret = "string", issuer = "string", timeout = "number",
  ca_file = "string", arvados_scheme = function(value)
    if value ~= "http" and value ~= "https" then
      return 'must be "http" or "https"'
    end
  end,
  env = check_env, uid = check_uid, now = "integer", config = "string",
}

-- Rucio's own leftovers in its cache directory: the temporaries of
-- tempfile.mkstemp ("tmp" and 8 characters of [a-z0-9_]) that a crashed
-- write left behind.
local function rucio_leftover(name)
  return name:find("^tmp[a-z0-9_]+$") ~= nil
end

local function has_finding(e, code)
  for _, have in ipairs(e.findings) do
    if have == code then
      return true
    end
  end
  return false
end

-- The entries logout ends, from status's list.
local function select_targets(opts, list)
  if opts.all then
    return list
  end
  local account, vo = opts.account, nil
  local rucio_scope = opts.scheme == nil or opts.scheme == "rucio"
  if rucio_scope then
    local candidates = discovery.discover({ scheme = "rucio", account = opts.account, env = opts.env,
                                            uid = opts.uid, config = opts.config })
    local first = candidates[1]
    if first then
      account, vo = first.account, first.vo
    end
  end
  local out = {}
  for _, e in ipairs(list) do
    if e.scheme == "rucio" then
      if e.account == account and e.vo == vo then
        out[#out + 1] = e
      end
    elseif opts.account == nil or opts.scheme ~= nil then
      -- An account names a Rucio account: WLCG and Arvados tokens are
      -- the user's own, ended unless the caller asked for an account.
      out[#out + 1] = e
    end
  end
  return out
end

-- Ends the token at its issuer, adding revoke/denylist actions.
local function revoke_token(ctx, e, token)
  local opts, act = ctx.opts, ctx.act
  local function net_opts(t)
    t.timeout, t.ca_file = opts.timeout, opts.ca_file
    return t
  end
  if e.kind == "jwt" then
    -- Resource servers check a JWT access token offline: whatever its
    -- issuer does, it stays good to them until it expires, so the one
    -- way to end it is the gateways' jti denylist.
    local target = "jti " .. tostring(e.jti)
    if not e.jti or not e.exp then
      return act("denylist", "JWT of " .. tostring(e.iss), false, "not_revocable",
        "it has no jti and exp, so no denylist can hold it; it stays valid until it expires")
    elseif not ctx.denylist then
      return act("denylist", target, false, "not_revocable",
        ("a JWT access token cannot be revoked at its issuer; it stays valid until %s unless its jti is "
         .. "denylisted (pass denylist)"):format(utc(e.exp)))
    elseif opts.dry_run then
      return act("denylist", target, true, nil, "would add it to " .. tostring(ctx.denylist_name))
    end
    local ok, msg, code = ctx.denylist:add(e.jti, e.exp)
    return act("denylist", target, ok ~= nil, code, ok and ("added until " .. utc(e.exp)) or msg)
  end
  if e.scheme == "arvados" then
    local host = e.host
    if not host or host == "" then
      return act("revoke", "Arvados", false, "not_found", "no ARVADOS_API_HOST: cannot call Arvados' logout")
    end
    local scheme = opts.arvados_scheme or "https"
    local target = ("%s://%s/logout"):format(scheme, host)
    if opts.dry_run then
      return act("revoke", target, true, nil, "would call Arvados' logout")
    end
    local ok, msg, code, retry = core.arvados_logout(net_opts({ host = host, token = token, scheme = scheme }))
    return act("revoke", target, ok ~= nil, code, ok and "Arvados expired the token" or msg, retry)
  end
  if e.kind == "rucio" then
    return act("revoke", "Rucio token of " .. tostring(e.account), false, "not_revocable",
      "Rucio has no call that ends a native token: it stays valid until "
        .. (e.exp and utc(e.exp) or "it expires"))
  end
  local issuer = opts.issuer or ctx.getenv("TOKENPOLICY_ISSUER")
  if not issuer or issuer == "" then
    return act("revoke", "issuer", false, "not_found",
      "the token does not name its issuer: pass issuer (or set TOKENPOLICY_ISSUER) to revoke it")
  end
  if opts.dry_run then
    return act("revoke", issuer, true, nil, "would revoke it at its issuer (RFC 7009)")
  end
  local meta, msg, code, retry = core.oidc_metadata(issuer, net_opts({}))
  if not meta then
    return act("revoke", issuer, false, code, msg, retry)
  end
  if not meta.revocation_endpoint then
    return act("revoke", issuer, false, "not_revocable", "the issuer publishes no revocation endpoint")
  end
  local ok
  ok, msg, code, retry = core.revoke(net_opts({
    endpoint = meta.revocation_endpoint, token = token, token_type_hint = "access_token",
    client_id = ctx.client_id, client_secret = ctx.client_secret,
  }))
  return act("revoke", meta.revocation_endpoint, ok ~= nil, code, ok and "revoked" or msg, retry)
end

-- Removes one file with remove_token (a link at the path itself is
-- removed, never followed; a linked directory on the path is refused).
local function remove_file(ctx, path, linked_dir)
  local opts, act = ctx.opts, ctx.act
  local st = core.stat(path)
  if not st then
    return true
  end
  if opts.dry_run then
    if linked_dir then
      return act("remove", path, false, "symlink", "a directory on the path is a symbolic link; left in place")
    elseif st.uid ~= ctx.uid then
      return act("remove", path, false, "not_owner", ("it belongs to uid %d; left in place"):format(st.uid))
    end
    ctx.gone[path] = true
    return act("remove", path, true, nil, "would remove it")
  end
  local ok, msg, code = core.remove_token(path, { uid = ctx.uid })
  if ok or code == "not_found" then
    ctx.gone[path] = true
    return act("remove", path, true, nil, "removed")
  end
  return act("remove", path, false, code, msg .. "; left in place")
end

-- settings.conf without its ARVADOS_API_TOKEN lines, every other line kept.
local function remove_arvados_token(ctx, path)
  local opts, act = ctx.opts, ctx.act
  local text, msg, code = core.read_config(path)
  local target = path .. " (ARVADOS_API_TOKEN)"
  if not text then
    return act("remove", target, false, code, msg)
  end
  local kept = {}
  for line in text:gmatch("([^\n]*)\n?") do
    if not line:find("^ARVADOS_API_TOKEN=") then
      kept[#kept + 1] = line
    end
  end
  -- gmatch yields one empty match at the end of a text ending in "\n"
  if kept[#kept] == "" then
    kept[#kept] = nil
  end
  local new = table.concat(kept, "\n") .. ((#kept > 0 and text:sub(-1) == "\n") and "\n" or "")
  if opts.dry_run then
    return act("remove", target, true, nil, "would remove the token line, keeping the others")
  end
  local ok
  ok, msg, code = core.rewrite_config(path, new, { uid = ctx.uid })
  return act("remove", target, ok ~= nil, code, ok and "removed the token line" or msg)
end

-- Removes a Rucio cache directory once nothing but Rucio's leftovers is in it.
local function remove_cache_dir(ctx, dir)
  local opts, act = ctx.opts, ctx.act
  local names = core.list_dir(dir)
  if not names then
    return
  end
  for _, name in ipairs(names) do
    if not ctx.gone[dir .. "/" .. name] and not rucio_leftover(name) then
      return -- another account's token, or something else of the user's
    end
  end
  if opts.dry_run then
    local st = core.stat(dir)
    if st and st.uid ~= ctx.uid then
      return act("remove", dir, false, "not_owner", ("it belongs to uid %d; left in place"):format(st.uid))
    end
    return act("remove", dir, true, nil, "would remove the directory (only Rucio's leftovers remain)")
  end
  local result, msg, code = core.remove_tree(dir, { uid = ctx.uid })
  if not result then
    return act("remove", dir, false, code, msg .. "; left in place")
  end
  if #result.skipped > 0 then
    -- not_owner when only other users' entries kept it ("it belongs to
    -- uid N", remove_tree's reason); io when something else did (it was
    -- swapped or refilled meanwhile, a mount point, a system error).
    local why, code_ = {}, "not_owner"
    for _, sk in ipairs(result.skipped) do
      why[#why + 1] = sk.path .. ": " .. sk.reason
      if not sk.reason:find("^it belongs to uid %d+$") then
        code_ = "io"
      end
    end
    return act("remove", dir, false, code_, "left in place: " .. table.concat(why, "; "))
  end
  return act("remove", dir, true, nil, "removed the directory")
end

--- Logs the user out: removes their tokens safely and, with `revoke`,
-- ends them where they were issued first. See docs/session.md.
-- @tparam[opt] table opts `scheme`, `account` (default: the active Rucio
-- account; when given, Rucio tokens only unless `scheme` says otherwise),
-- `all` (every account, VO and layout), `revoke` (default false),
-- `denylist` (a tp.denylist or its path: where JWT `jti`s go), `dry_run`,
-- `issuer` (the issuer of tokens that do not name one; or
-- TOKENPOLICY_ISSUER), `client_id`, `client_secret` (or
-- TOKENPOLICY_CLIENT_ID, TOKENPOLICY_CLIENT_SECRET), `timeout`, `ca_file`,
-- `arvados_scheme` ("https"), `env`, `uid`, `now`, `config`
-- @treturn table a report: `actions` (each `{action=, target=, ok=, code=,
-- message=, retry_after=}`), `ok`, `nothing_to_do`, `dry_run`; or the fail triple when
-- the denylist cannot be opened
function M.logout(opts)
  opts = util.check_opts(opts, LOGOUT_OPTIONS, "logout")
  local getenv = getenv_of(opts)
  local report = { actions = {}, ok = true, nothing_to_do = false, dry_run = opts.dry_run == true }
  setmetatable(report, Report)
  local ctx = { opts = opts, uid = opts.uid or core.euid(), gone = {}, getenv = getenv }
  ctx.client_id = opts.client_id or getenv("TOKENPOLICY_CLIENT_ID")
  ctx.client_secret = opts.client_secret or getenv("TOKENPOLICY_CLIENT_SECRET")
  -- retry_after: the seconds an `unavailable` provider asked to wait
  -- (its Retry-After), said in the message too.
  function ctx.act(action, target, ok, code, message, retry_after)
    if retry_after then
      message = ("%s; the provider asks to try again in %d s"):format(message, retry_after)
    end
    report.actions[#report.actions + 1] = { action = action, target = target, ok = ok, code = code,
                                            message = message, retry_after = retry_after }
    report.ok = report.ok and ok
    return ok
  end
  local tokens = {}
  local list = collect({ scheme = opts.scheme or (opts.account and not opts.all and "rucio") or nil,
                         env = opts.env, uid = opts.uid, now = opts.now, config = opts.config }, tokens)
  local targets = select_targets(opts, list)
  if #targets == 0 then
    report.nothing_to_do = true
    return report
  end
  if opts.revoke and opts.denylist then
    local redis = type(opts.denylist) == "string" and opts.denylist:match("^rediss?://") ~= nil
    if type(opts.denylist) == "string" and opts.dry_run and not redis then
      -- Opening a denylist creates it: a dry run only names it.
      ctx.denylist, ctx.denylist_name = true, opts.denylist
    elseif type(opts.denylist) == "string" then
      -- A Redis denylist is only written to here (add): no sync first.
      -- Its name is its tostring, which never shows a password.
      local dl, msg, code = core.denylist(opts.denylist, redis and { sync = false } or nil)
      if not dl then
        return nil, msg, code
      end
      ctx.denylist, ctx.denylist_name = dl, redis and tostring(dl) or opts.denylist
    else
      ctx.denylist, ctx.denylist_name = opts.denylist, tostring(opts.denylist)
    end
  end
  local dirs, dir_seen = {}, {}
  for _, e in ipairs(targets) do
    local token = tokens[e]
    if opts.revoke and token then
      revoke_token(ctx, e, token)
    end
    if not e.path then
      ctx.act("instruction", "$" .. e.variable, false, "environment",
        ("unset %s in the shell that set it: a program cannot change its parent's environment"):format(e.variable))
    elseif e.scheme == "arvados" then
      remove_arvados_token(ctx, e.path)
    else
      local linked = has_finding(e, "symlink") and (core.stat(e.path) or {}).type ~= "symlink"
      remove_file(ctx, e.path, linked)
      if e.scheme == "rucio" and e.expiry_path and not linked then
        remove_file(ctx, e.expiry_path, false)
      end
      local dir = dirname(e.path)
      if e.scheme == "rucio" and e.source ~= "config" and not linked and basename(dir):find("^%.rucio_")
        and not dir_seen[dir] then
        dir_seen[dir] = true
        dirs[#dirs + 1] = dir
      end
    end
  end
  for _, dir in ipairs(dirs) do
    remove_cache_dir(ctx, dir)
  end
  return report
end

-- Switching accounts ---------------------------------------------------------

local Switch = { __name = "tokenpolicy.AccountSwitch" }

--- The export line, then the message, warnings and actions, one a line.
function Switch.__tostring(r)
  local lines = { r.export, r.message }
  for _, w in ipairs(r.warnings) do
    lines[#lines + 1] = "warning: " .. w
  end
  for _, a in ipairs(r.actions) do
    lines[#lines + 1] = ("%s %s %s: %s"):format(a.ok and "ok" or (a.code or "failed"), a.action, a.target,
      a.message or "")
  end
  return table.concat(lines, "\n")
end

-- A value as one shell word: bare when it holds only characters no shell
-- treats specially, else single-quoted ('\'' for a quote).
local function shell_quote(value)
  if value:find("^[%w%._,:@%%+/=-]+$") then
    return value
  end
  return "'" .. value:gsub("'", [['\'']]) .. "'"
end

local function check_name(value)
  if type(value) ~= "string" then
    return "must be string, got " .. type(value)
  elseif value == "" then
    return "must not be empty"
  elseif value:find("[%c]") then
    return "must not hold control characters"
  end
end

local SWITCH_OPTIONS = {
  account = check_name, vo = check_name, logout_previous = "boolean", persist = "boolean", env = check_env,
  uid = check_uid, now = "integer", config = "string",
}

-- The text of an INI file with `[client]` options set, every other line,
-- comment and blank kept. values: a list of {name, value}.
local function set_client_options(text, values)
  local lines = {}
  for line in text:gmatch("([^\n]*)\n") do
    lines[#lines + 1] = line
  end
  local rest = text:match("([^\n]+)$")
  if rest then
    lines[#lines + 1] = rest
  end
  -- configparser: a header is a line (not indented) like "[name]"; an
  -- option is "name = value" or "name: value", names case-insensitive;
  -- indented lines after it continue its value.
  local first, last -- the [client] section's header and last non-blank line
  local i = 1
  while i <= #lines do
    local header = lines[i]:match("^%[(.*)%]")
    if header then
      if first and not last then
        last = i - 1
      end
      if header == "client" and not first then
        first = i
      end
    end
    i = i + 1
  end
  if first and not last then
    last = #lines
  end
  for _, pair in ipairs(values) do
    local name, value = pair[1], pair[2]:gsub("%%", "%%%%")
    local line = name .. " = " .. value
    if not first then
      if #lines > 0 and lines[#lines] ~= "" then
        lines[#lines + 1] = ""
      end
      lines[#lines + 1] = "[client]"
      first = #lines
      lines[#lines + 1] = line
      last = #lines
    else
      local found
      for j = first + 1, last do
        local key = lines[j]:match("^([^%s=:][^=:]-)%s*[=:]")
        if key and key:lower() == name then
          found = j
          break
        end
      end
      if found then
        lines[found] = line
        -- drop the old value's continuation lines
        while lines[found + 1] and found + 1 <= last and lines[found + 1]:find("^%s+%S") do
          table.remove(lines, found + 1)
          last = last - 1
        end
      else
        local at = last
        while at > first and not lines[at]:find("%S") do
          at = at - 1
        end
        table.insert(lines, at + 1, line)
        last = last + 1
      end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Rewrites [client] account (and vo) of the rucio.cfg the client reads.
local function persist(opts, uid, act)
  local path, msg, code = discovery.rucio_config({ env = opts.env, config = opts.config })
  if not path then
    return act("persist", "rucio.cfg", false, code, msg)
  end
  local text
  text, msg, code = core.read_config(path)
  if not text then
    return act("persist", path, false, code, msg)
  end
  local values = { { "account", opts.account } }
  if opts.vo then
    values[2] = { "vo", opts.vo }
  end
  local ok
  ok, msg, code = core.rewrite_config(path, set_client_options(text, values), { uid = uid })
  return act("persist", path, ok ~= nil, code, ok and ("[client] account = " .. opts.account
    .. (opts.vo and (", vo = " .. opts.vo) or "")) or msg)
end

--- Prepares the switch to another Rucio account: the shell line to run,
-- the new account's token status, and what stands in the way.
-- @tparam table opts `account` (required), `vo`, `logout_previous` (log the
-- previous account out, or remove the shared `auth_token_file_path`),
-- `persist` (rewrite `[client] account` and `vo` in rucio.cfg, keeping
-- every other line and the file's mode), `env`, `uid`, `now`, `config`
-- @treturn table `export` (`export RUCIO_ACCOUNT=<account>[; export
-- RUCIO_VO=<vo>]`, values shell-quoted), `status` (the new account's
-- status entry, or nil), `message`, `warnings`, `actions` (of the logout
-- and persist steps), `previous` (the account before)
function M.switch_account(opts)
  opts = util.check_opts(opts, SWITCH_OPTIONS, "switch_account")
  if opts.account == nil then
    util.argerror(1, "switch_account", "option 'account' is required")
  end
  local uid = opts.uid or core.euid()
  local result = setmetatable({ warnings = {}, actions = {} }, Switch)
  local function act(action, target, ok, code, message)
    result.actions[#result.actions + 1] = { action = action, target = target, ok = ok, code = code,
                                            message = message }
    return ok
  end
  result.export = "export RUCIO_ACCOUNT=" .. shell_quote(opts.account)
    .. (opts.vo and ("; export RUCIO_VO=" .. shell_quote(opts.vo)) or "")

  local common = { scheme = "rucio", env = opts.env, uid = opts.uid, config = opts.config }
  local before = discovery.discover(common)[1]
  result.previous = before and before.account
  local after_opts = { account = opts.account, vo = opts.vo }
  for k, v in pairs(common) do after_opts[k] = v end
  local after = discovery.discover(after_opts)
  local file
  for _, c in ipairs(after) do
    if c.source ~= "wlcg" then
      file = c
      break
    end
  end
  local shared = file and file.source == "config"
  if shared then
    result.warnings[#result.warnings + 1] = ("[client] auth_token_file_path makes %s the token file of every "
      .. "account: it holds the token of whichever account logged in last (%s), so Rucio would authenticate as "
      .. "that account; switch with logout_previous to remove it"):format(file.path,
        tostring(result.previous or "the default account"))
  end
  if file and file.problem then
    result.warnings[#result.warnings + 1] = file.problem
  end

  if opts.logout_previous and (shared or result.previous ~= opts.account) then
    local report = M.logout({ scheme = "rucio", account = result.previous, env = opts.env, uid = opts.uid,
                              now = opts.now, config = opts.config })
    for _, a in ipairs(report.actions) do
      result.actions[#result.actions + 1] = a
    end
  end
  if opts.persist then
    persist(opts, uid, act)
  end

  local list = collect({ scheme = "rucio", account = opts.account, vo = opts.vo, env = opts.env, uid = opts.uid,
                         now = opts.now, config = opts.config })
  for _, e in ipairs(list) do
    if file and e.path == file.path then
      result.status = e
    end
  end
  local e = result.status
  if shared and e then
    result.message = ("no token of its own for %s: the shared file holds the last login's token; switch with "
      .. "logout_previous, then run rucio whoami"):format(opts.account)
  elseif not e then
    result.message = ("no token for %s: run rucio whoami to log in"):format(opts.account)
  elseif e.state == "expired" then
    result.message = ("the token expired at %s: run rucio whoami to log in again"):format(utc(e.exp))
  elseif e.exp then
    result.message = ("valid until %s"):format(utc(e.exp))
  else
    result.message = "a token is there; its expiry is known only to the server"
  end
  return result
end

return M
