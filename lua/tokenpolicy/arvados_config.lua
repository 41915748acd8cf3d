--- Reading an Arvados cluster configuration (config.yml) into a token policy.
--
-- `tokenpolicy.policy_from_arvados` (C) calls this module's
-- `policy_from_arvados`; the module is loaded on first use, and lyaml only
-- when a file is to be read, so a parsed table needs neither YAML nor I/O.
-- @module tokenpolicy.arvados_config

local core = require "tokenpolicy.core"

local M = {}

-- Arvados config files are small (tens of KiB); this only keeps a wrong
-- path (a disk image, /dev/zero) from being read whole.
M.MAX_SIZE = 16 * 1024 * 1024

local function fail(code, message)
  return nil, code .. ": " .. message, code
end

-- At most 32 printable ASCII characters of text from the configuration, as
-- the C core shows attacker- or user-controlled text in messages.
local function printable(s)
  s = tostring(s)
  local cut = #s > 32
  s = s:sub(1, 32):gsub("[^\32-\126]", "?")
  return cut and s .. "..." or s
end

local function is_null(v)
  return v == nil or v == core.null or (package.loaded.lyaml ~= nil and v == package.loaded.lyaml.null)
end

local function read_file(path)
  local f, err, errno = io.open(path, "rb")
  if not f then
    if errno == 2 then  -- ENOENT
      return fail("not_found", ("%s does not exist"):format(path))
    end
    return fail("io", err)
  end
  local text, rerr = f:read(M.MAX_SIZE + 1)
  f:close()
  if not text and rerr then
    return fail("io", ("%s: %s"):format(path, rerr))
  end
  text = text or ""
  if #text > M.MAX_SIZE then
    return fail("too_large", ("%s is over the %d-byte limit for a configuration"):format(path, M.MAX_SIZE))
  end
  return text
end

local function parse_yaml(path)
  local text, msg, code = read_file(path)
  if not text then return nil, msg, code end
  local found, lyaml = pcall(require, "lyaml")
  if not found then
    error("policy_from_arvados: reading a file needs lyaml (Debian: lua-yaml, LuaRocks: lyaml)", 0)
  end
  local ok, doc = pcall(lyaml.load, text)
  if not ok then
    -- lyaml's messages are "line:column: problem", without the text
    -- around it, which may hold secrets (SystemRootToken).
    return fail("malformed", ("%s: invalid YAML (%s)"):format(path, tostring(doc):sub(1, 120)))
  end
  return doc
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = printable(k) end
  table.sort(keys)
  return keys
end

-- The section `name` of cluster (absent: an empty table).
local function section(cluster, prefix, name)
  local s = cluster[name]
  if is_null(s) then return {} end
  if type(s) ~= "table" then
    return nil, ("%s.%s is not a mapping"):format(prefix, name)
  end
  return s
end

-- A duration setting: Go duration text or whole seconds, never negative.
local function duration(value, where)
  if is_null(value) then return 0 end
  if math.type(value) == "float" and value == math.floor(value) and value > -2 ^ 63 and value < 2 ^ 63 then
    value = math.tointeger(value)
  end
  if type(value) ~= "string" and math.type(value) ~= "integer" then
    local shown = type(value) == "table" and "a list or mapping" or printable(value)
    return nil, ("%s: a duration is text like \"12h\" or whole seconds, not %s"):format(where, shown)
  end
  local seconds, msg = core.duration(value)
  if not seconds then
    return nil, ("%s: %s"):format(where, (msg:gsub("^malformed: ", "")))
  end
  if seconds < 0 then
    return nil, ("%s: a duration must not be negative (%s)"):format(where, printable(value))
  end
  return seconds
end

local function boolean(value, where)
  if is_null(value) then return nil end
  if type(value) ~= "boolean" then
    return nil, ("%s: not true or false (%s)"):format(where, printable(value))
  end
  return value
end

-- The settings of one cluster, or nil and a message for `malformed`.
local function settings(cluster, prefix)
  local api, login, workbench, err
  api, err = section(cluster, prefix, "API")
  if not api then return nil, err end
  login, err = section(cluster, prefix, "Login")
  if not login then return nil, err end
  workbench, err = section(cluster, prefix, "Workbench")
  if not workbench then return nil, err end

  local s = {}
  s.max_token_lifetime, err = duration(api.MaxTokenLifetime, prefix .. ".API.MaxTokenLifetime")
  if not s.max_token_lifetime then return nil, err end
  s.login_token_lifetime, err = duration(login.TokenLifetime, prefix .. ".Login.TokenLifetime")
  if not s.login_token_lifetime then return nil, err end
  s.idle_timeout, err = duration(workbench.IdleTimeout, prefix .. ".Workbench.IdleTimeout")
  if not s.idle_timeout then return nil, err end

  -- IssueTrustedTokens is the key Arvados reads; the documentation calls
  -- it TrustLoginTokens.  Both are accepted; disagreeing is an error.
  local issue, trust
  issue, err = boolean(login.IssueTrustedTokens, prefix .. ".Login.IssueTrustedTokens")
  if err then return nil, err end
  trust, err = boolean(login.TrustLoginTokens, prefix .. ".Login.TrustLoginTokens")
  if err then return nil, err end
  if issue ~= nil and trust ~= nil and issue ~= trust then
    return nil, ("%s.Login: IssueTrustedTokens (%s) and TrustLoginTokens (%s) disagree")
      :format(prefix, tostring(issue), tostring(trust))
  end
  if issue == nil then issue = trust end
  if issue == nil then issue = true end  -- Arvados' default
  s.issue_trusted_tokens = issue
  return s
end

--- Builds a policy from an Arvados configuration.
-- @tparam string|table config the path of a config.yml, or its parsed content
-- @tparam[opt] table opts `cluster` (the cluster id; required when the
--   configuration has several clusters), `compat` ("docs" or "arvados")
-- @treturn tokenpolicy.Policy or the fail triple: `malformed` (YAML, the
--   structure, a setting, the cluster choice), `not_found`, `io`, `too_large`
function M.policy_from_arvados(config, opts)
  local where = "configuration"
  if type(config) ~= "string" and type(config) ~= "table" then
    error(("bad argument #1 to 'policy_from_arvados' (path or table expected, got %s)"):format(type(config)), 0)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #2 to 'policy_from_arvados' (table expected, got %s)"):format(type(opts)), 0)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "cluster" and k ~= "compat" then
      error(("bad argument #2 to 'policy_from_arvados' (unknown option '%s')"):format(tostring(k)), 0)
    end
  end
  if opts.cluster ~= nil and type(opts.cluster) ~= "string" then
    error("bad argument #2 to 'policy_from_arvados' (cluster must be a string)", 0)
  end
  if opts.compat ~= nil and opts.compat ~= "docs" and opts.compat ~= "arvados" then
    error("bad argument #2 to 'policy_from_arvados' (compat must be \"docs\" or \"arvados\")", 0)
  end

  if type(config) == "string" then
    where = config
    local doc, msg, code = parse_yaml(config)
    if msg then return nil, msg, code end
    config = doc
  end
  if type(config) ~= "table" or is_null(config.Clusters) or type(config.Clusters) ~= "table" then
    return fail("malformed", ("%s has no Clusters mapping"):format(where))
  end

  local ids = sorted_keys(config.Clusters)
  local id = opts.cluster
  if id == nil then
    if #ids == 0 then
      return fail("malformed", ("%s has no clusters"):format(where))
    elseif #ids > 1 then
      return fail("malformed", ("%s has %d clusters (%s): choose one with {cluster = ...}")
        :format(where, #ids, table.concat(ids, ", ")))
    end
    id = next(config.Clusters)
  end
  local cluster = config.Clusters[id]
  if cluster == nil then
    return fail("malformed", ("%s has no cluster %s (it has %s)")
      :format(where, printable(id), #ids > 0 and table.concat(ids, ", ") or "none"))
  end
  if type(id) ~= "string" then
    return fail("malformed", ("%s: cluster ids are text, not %s"):format(where, printable(id)))
  end
  if is_null(cluster) then cluster = {} end
  if type(cluster) ~= "table" then
    return fail("malformed", ("Clusters.%s is not a mapping"):format(printable(id)))
  end

  local s, err = settings(cluster, "Clusters." .. printable(id))
  if not s then return fail("malformed", err) end
  s.compat = opts.compat
  return core.policy(s)
end

return M
