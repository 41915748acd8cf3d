-- A real OpenID provider for integration specs: spec/helpers/oidc/provider.mjs
-- (oidc-provider on Node), started in the background on a free loopback port.
--
--   local oidc = require "helpers.oidc"
--   local p = oidc.start()        -- { issuer=, port=, pid=, token_endpoint=, ... }
--   local t = oidc.client_credentials(p, { resource = "https://rucio.example.org", scope = "storage.read:/" })
--   oidc.rotate(p)                -- a fresh signing key (new kid), same port
--   oidc.stop(p)
--
-- The provider's dependencies are installed with `npm ci` (from the
-- committed package-lock.json) the first time they are missing.  Tokens
-- are never printed: errors name the provider's error code only.
local tp = require "tokenpolicy"

local oidc = {}

oidc.client_id = "tp-client"          -- HTTP Basic client authentication
oidc.post_client_id = "tp-post-client" -- client_secret_post
oidc.client_secret = "tp-secret"

local START_TIMEOUT = 20 -- seconds to wait for "READY <port>"

-- The directory of this file, so that the helper works from any working directory.
local HERE = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".")
local DIR = HERE .. "/oidc"

local function quote(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local function slurp(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local text = f:read("a")
  f:close()
  return text
end

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

-- Installs node_modules from package-lock.json unless present.
function oidc.install()
  local probe = io.open(DIR .. "/node_modules/oidc-provider/package.json", "r")
  if probe then
    probe:close()
    return
  end
  local log = os.tmpname()
  local ok = os.execute("cd " .. quote(DIR) .. " && env -u LD_PRELOAD npm ci --no-audit --no-fund --loglevel=error >"
    .. quote(log) .. " 2>&1")
  local output = slurp(log)
  os.remove(log)
  if not ok then
    error("npm ci in " .. DIR .. " failed:\n" .. output, 2)
  end
end

-- True while the process runs (a zombie counts as ended).
local function alive(pid)
  local stat = io.open("/proc/" .. pid .. "/stat", "r")
  if not stat then return false end
  local text = stat:read("a") or ""
  stat:close()
  local state = text:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

function oidc.start()
  oidc.install()
  local out, err, pidfile = os.tmpname(), os.tmpname(), os.tmpname()
  -- env execs node, so $! is node's pid.
  assert(os.execute("cd " .. quote(DIR) .. " && { env -u LD_PRELOAD node provider.mjs >" .. quote(out)
    .. " 2>" .. quote(err) .. " </dev/null & echo $! >" .. quote(pidfile) .. "; }"))
  local pid = assert(slurp(pidfile):match("^(%d+)"), "no pid for the provider")
  os.remove(pidfile)
  local p = { pid = pid, out = out, err = err }
  local step = 0.05
  for _ = 1, START_TIMEOUT / step do
    local port = slurp(out):match("READY (%d+)\n")
    if port then
      p.port = math.tointeger(tonumber(port))
      p.issuer = "http://127.0.0.1:" .. port
      p.token_endpoint = p.issuer .. "/token"
      p.revocation_endpoint = p.issuer .. "/token/revocation"
      p.introspection_endpoint = p.issuer .. "/token/introspection"
      p.jwks_uri = p.issuer .. "/jwks"
      return p
    end
    if not alive(pid) then break end
    sleep(step)
  end
  local message = slurp(err)
  oidc.stop(p)
  error("the OpenID provider did not start (it ended, or no READY line within " .. START_TIMEOUT .. " s):\n"
    .. message, 2)
end

-- Stops the provider and waits (up to 5 s) until it has ended.
function oidc.stop(p)
  if p.stopped then return end
  p.stopped = true
  os.execute("kill " .. p.pid .. " 2>/dev/null")
  for i = 1, 100 do
    if not alive(p.pid) then break end
    if i == 60 then os.execute("kill -9 " .. p.pid .. " 2>/dev/null") end
    sleep(0.05)
  end
  os.remove(p.out)
  os.remove(p.err)
end

-- Runs curl with the given arguments and returns its output, decoded as JSON.
-- Without the sanitizer preload of `make asan`: curl is not what that run
-- checks, and under the preload it can deadlock.
local function curl_json(args, what)
  local handle = assert(io.popen("env -u LD_PRELOAD curl -sS --max-time 10 " .. args .. " 2>&1", "r"))
  local body = handle:read("a")
  handle:close()
  local doc = tp.json_decode(body)
  if type(doc) ~= "table" then
    error(what .. ": the answer is not JSON", 3)
  end
  return doc
end

-- Obtains an access token with the client_credentials grant (HTTP Basic).
-- opts: resource, scope, client_id, client_secret.  Returns the token and
-- the whole token response.
function oidc.client_credentials(p, opts)
  opts = opts or {}
  local args = { "-u", quote((opts.client_id or oidc.client_id) .. ":" .. (opts.client_secret or oidc.client_secret)),
    "--data-urlencode", "grant_type=client_credentials" }
  if opts.resource then
    args[#args + 1] = "--data-urlencode"
    args[#args + 1] = quote("resource=" .. opts.resource)
  end
  if opts.scope then
    args[#args + 1] = "--data-urlencode"
    args[#args + 1] = quote("scope=" .. opts.scope)
  end
  args[#args + 1] = quote(p.token_endpoint)
  local doc = curl_json(table.concat(args, " "), "token request")
  if type(doc.access_token) ~= "string" then
    error("token request failed: " .. tostring(doc.error) .. ": " .. tostring(doc.error_description), 2)
  end
  return doc.access_token, doc
end

-- Replaces the provider's signing key by a new one (same port); returns the new kid.
function oidc.rotate(p)
  local doc = curl_json("-X POST " .. quote(p.issuer .. "/__admin/rotate"), "rotate")
  return assert(doc.kid, "rotate: no kid in the answer")
end

return oidc
