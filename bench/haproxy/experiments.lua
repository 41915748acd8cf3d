--- `make bench-haproxy EXPERIMENTS=1`: where a request's time goes when an
-- HAProxy Lua action verifies a token.  Not part of tokenpolicy.
--
-- One action, `opts.name`, in one of several modes, so that the difference
-- between two runs is the cost of one thing (per request: 1 / throughput):
--   header         read the Authorization header, set the six variables
--   decode         + tp.decode (JSON to tables, no signature)
--   verify         + tp.verify (what a plain action did before the prepared
--                  verifier)
--   verify_novars  tp.verify, but only txn.tp.ok is set
--   check          + a prepared tp.verifier's v:check, no cache
--   luaossl        luaossl_baseline.verify (`key_per_request`: parse the PEM
--                  on every request, as haproxy-lua-oauth does)
-- and with the Lua garbage collector as configured: `pause` and `stepmul`
-- (collectgarbage setpause / setstepmul; HAProxy's Lua is 5.3, which has no
-- generational mode), or `collect_every` = N: the collector stopped, a full
-- collection every N requests, and the bytes allocated per request
-- measured over each window.
--
-- `bearer_pattern`: find the token with one Lua pattern over the header
-- instead of comparing the scheme and taking the rest.
--
-- A Lua service `x-stats` answers `/stats` with the request count and
-- the allocation per request (`/stats?reset` starts over).
local tp = require "tokenpolicy"

local M = {}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function text(v)
  return type(v) == "string" and v or ""
end

local function set_claims(txn, claims)
  txn:set_var("txn.tp.ok", 1)
  txn:set_var("txn.tp.code", "")
  txn:set_var("txn.tp.sub", text(claims.sub))
  txn:set_var("txn.tp.scope", text(claims.scope))
  txn:set_var("txn.tp.exp", math.tointeger(claims.exp) or 0)
  txn:set_var("txn.tp.jti", text(claims.jti))
end

local function set_failure(txn, code)
  txn:set_var("txn.tp.ok", 0)
  txn:set_var("txn.tp.code", code or "no_token")
end

-- The token without its scheme, found without a Lua pattern: `(%S+)$`
-- over a 600-byte header costs more than the rest of the Lua action (about
-- 75,000 instructions a request under callgrind).
local function bearer(txn)
  local authorization = txn.sf:req_hdr("authorization")
  if authorization and #authorization > 7 and authorization:sub(1, 7):lower() == "bearer " then
    return authorization:sub(8)
  end
  return nil
end

-- The same with one Lua pattern over the whole header, checking every
-- character of the token against RFC 6750's b64token (`bearer_pattern`).
local B64TOKEN = "^[Bb][Ee][Aa][Rr][Ee][Rr] +([%w%-%._~%+/]+=*) *$"

local function bearer_by_pattern(txn)
  local authorization = txn.sf:req_hdr("authorization")
  return authorization and authorization:match(B64TOKEN)
end

-- mode -> function(txn, token) run for a request that carries a token.
local function handlers(opts)
  local pem = read(opts.keys_file)
  local keys = assert(tp.keys(pem))
  local verify_opts = { iss = opts.iss, aud = opts.aud, algs = "RS256" }
  local h = {}
  function h.header(txn)
    set_claims(txn, { sub = "user", scope = "read write", exp = 2000000000, jti = "jti" })
  end
  function h.decode(txn, token)
    local jwt, _, code = tp.decode(token)
    if jwt then
      set_claims(txn, jwt.claims)
    else
      set_failure(txn, code)
    end
  end
  function h.verify(txn, token)
    local claims, _, code = tp.verify(token, keys, verify_opts)
    if claims then
      set_claims(txn, claims)
    else
      set_failure(txn, code)
    end
  end
  function h.verify_novars(txn, token)
    txn:set_var("txn.tp.ok", tp.verify(token, keys, verify_opts) and 1 or 0)
  end
  if tp.verifier then
    local verifier = tp.verifier({ keys = keys, iss = opts.iss, aud = opts.aud, algs = "RS256" })
    function h.check(txn, token)
      local claims, _, code = verifier:check(token)
      if claims then
        set_claims(txn, claims)
      else
        set_failure(txn, code)
      end
    end
  end
  local baseline = require "luaossl_baseline"
  local pkey = require "openssl.pkey"
  local key = pkey.new(pem)
  function h.luaossl(txn, token)
    local claims, code = baseline.verify(opts.key_per_request and pkey.new(pem) or key, opts, token, os.time())
    if claims then
      set_claims(txn, claims)
    else
      set_failure(txn, code)
    end
  end
  return h
end

--- Registers the action `opts.name` and the service `x-stats`.
-- @tparam table opts `name`, `mode`, `keys_file`, `iss`, `aud`, and
-- optionally `pause`, `stepmul`, `collect_every`, `key_per_request`,
-- `bearer_pattern`
function M.register(opts)
  local handle = assert(handlers(opts)[opts.mode], "unknown or unavailable mode " .. tostring(opts.mode))
  if opts.pause then
    collectgarbage("setpause", opts.pause)
  end
  if opts.stepmul then
    collectgarbage("setstepmul", opts.stepmul)
  end
  local every = opts.collect_every
  local requests, window, window_base = 0, 0, 0
  local bytes_per_request           -- over the last complete window
  if every then
    collectgarbage("stop")
    collectgarbage("collect")
    window_base = collectgarbage("count")
  end

  local find_token = opts.bearer_pattern and bearer_by_pattern or bearer
  core.register_action(opts.name, { "http-req" }, function(txn)
    requests = requests + 1
    local token = find_token(txn)
    if token then
      handle(txn, token)
    else
      set_failure(txn, "no_token")
    end
    if every then
      window = window + 1
      if window == every then
        bytes_per_request = (collectgarbage("count") - window_base) * 1024 / every
        collectgarbage("collect")
        collectgarbage("stop")
        window, window_base = 0, collectgarbage("count")
      end
    end
  end, 0)

  core.register_service("x-stats", "http", function(applet)
    if applet.qs == "reset" then
      requests, bytes_per_request = 0, nil
    end
    local body = string.format("mode=%s requests=%d lua_kb=%.0f%s\n", opts.mode, requests,
      collectgarbage("count"),
      bytes_per_request and string.format(" allocated_bytes_per_request=%.0f", bytes_per_request) or "")
    applet:set_status(200)
    applet:add_header("content-length", tostring(#body))
    applet:start_response()
    applet:send(body)
  end)
end

return M
