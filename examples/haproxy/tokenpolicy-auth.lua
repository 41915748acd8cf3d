-- The lua-load file of examples/haproxy/haproxy.cfg: registers
-- `http-request lua.tokenpolicy-auth` with settings taken from the
-- environment, which haproxy.cfg fills with `presetenv` (a value already in
-- HAProxy's environment wins, so a test or a systemd unit can override it).
--
-- Debian's HAProxy 2.6 embeds Lua 5.3, so it needs the core built for 5.3.
-- Installed with `luarocks --lua-version 5.3`, the modules are on Lua 5.3's
-- default paths and nothing needs setting. From a checkout, set
--   TOKENPOLICY_LUA_DIR=<checkout>/lua      (tokenpolicy/*.lua)
--   TOKENPOLICY_BUILD=<checkout>/build/5.3  (tokenpolicy/core.so, `make`)

local lua_dir, build = os.getenv("TOKENPOLICY_LUA_DIR"), os.getenv("TOKENPOLICY_BUILD")
if lua_dir and lua_dir ~= "" then
  package.path = lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;" .. package.path
end
if build and build ~= "" then
  package.cpath = build .. "/?.so;" .. package.cpath
end

-- A setting, or nil when unset or empty.
local function setting(name)
  local value = os.getenv("TOKENPOLICY_" .. name)
  if value ~= nil and value ~= "" then
    return value
  end
end

local function integer_setting(name)
  local value = setting(name)
  if value == nil then
    return nil
  end
  return math.tointeger(tonumber(value)) or error(("TOKENPOLICY_%s must be an integer, got %q"):format(name, value))
end

local function list_setting(name)
  local value = setting(name)
  if value == nil then
    return nil
  end
  local list = {}
  for item in value:gmatch("[^,%s]+") do
    list[#list + 1] = item
  end
  return list
end

local function number_setting(name)
  local value = setting(name)
  if value == nil then
    return nil
  end
  return tonumber(value) or error(("TOKENPOLICY_%s must be a number, got %q"):format(name, value))
end

-- A JWKS URI, when given, replaces the key file.
local jwks_uri = setting("JWKS_URI")
-- An Arvados config.yml, when given, is the policy; else a maximum lifetime.
local policy = setting("ARVADOS_CONFIG")
if policy == nil and setting("MAX_TOKEN_LIFETIME") then
  policy = { max_token_lifetime = setting("MAX_TOKEN_LIFETIME") }
end

-- A fleet: TOKENPOLICY_DENYLIST is a redis:// URL shared by the gateways,
-- its password in a file (never in the URL: HAProxy's environment is
-- readable by root in /proc), with a local denylist file beside it.
-- With rediss://, TOKENPOLICY_REDIS_CA_FILE is the CA that signed Redis's
-- certificate.
local redis_opts = { password_file = setting("REDIS_PASSWORD_FILE"), ca_file = setting("REDIS_CA_FILE") }

require("tokenpolicy.haproxy").register{
  name = "tokenpolicy-auth",
  keys_file = not jwks_uri and setting("KEYS_FILE") or nil,
  jwks_uri = jwks_uri,
  iss = setting("ISS"),
  aud = setting("AUD"),
  algs = list_setting("ALGS"),
  leeway = integer_setting("LEEWAY"),
  policy = policy,
  denylist = setting("DENYLIST"),
  denylist_file = setting("DENYLIST_FILE"),
  sync_every = number_setting("SYNC_EVERY"),
  redis = next(redis_opts) and redis_opts or nil,
  header = setting("HEADER"),
  cache_size = integer_setting("CACHE_SIZE"),
  reload_every = integer_setting("RELOAD_EVERY"),
  min_refetch = integer_setting("MIN_REFETCH"),
}
