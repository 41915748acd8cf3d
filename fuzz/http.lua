-- luacheck: globals fuzz_answers
-- The HTTP answer handling of oidc_metadata, fetch_keys (and a JwksSource
-- fetching through it), revoke, introspect and Arvados' token calls.
--
-- The input is a call's name on its first line, then raw answers (status
-- line, headers, body) separated by lines "--next answer--".  Each
-- connection the call's libcurl opens gets the next answer through the
-- core's raw-answer seam (fuzz_answers, fuzz/harness.c): the bytes go
-- through libcurl and the core's code exactly as a peer's would, redirects
-- and the 404 fallback of oidc_metadata included.  No network is used: a
-- connection with no answer left fails at once.
--
-- The oracle: each call gives its value or the fail triple (a 4th value,
-- Retry-After, only with `unavailable`); no message holds the token or the
-- client secret sent; every libcurl handle is released by the time the
-- call returns; results print.
local tp = require "tokenpolicy.core"
local F = require "fuzzlib"

-- Seeds name the peer http://127.0.0.1:00009; each input is rewritten to
-- the harness's server, whose port changes from run to run, written with
-- five digits so that no Content-Length changes.
local BASE
local HOST
local ANSWERS = ""  -- the answers of this input, as the peer sends them
local TOKEN = "fuzz-token-Zq8xWv3Kp0"
local SECRET = "fuzz-client-secret-Hj4Lm9"
local ARV = "v2/zzzzz-gj3su-0123456789abcde/fuzzArvadosSecretT0k3n"
-- FUZZ_TRACE=1 prints each result (to see what a seed exercises).
local TRACE = os.getenv("FUZZ_TRACE")
local SEP = "\n--next answer--\n"
local T = { timeout = 5 }

local calls = {
  metadata = function()
    return "oidc_metadata", tp.oidc_metadata(BASE .. "/realm", { ttl = 0, timeout = 5 })
  end,
  metadata_url = function()
    return "oidc_metadata", tp.oidc_metadata(BASE .. "/realm/.well-known/openid-configuration", { ttl = 0 })
  end,
  jwks = function()
    return "fetch_keys", tp.fetch_keys(BASE .. "/jwks", T)
  end,
  jwks_source = function()
    local src = tp.jwks(BASE .. "/jwks", { timeout = 5, min_refetch = 0, now = 1800000000 })
    local token = "eyJhbGciOiJFUzI1NiIsImtpZCI6InAyNTYifQ.eyJzdWIiOiJhIn0." .. ("A"):rep(86)
    local r = table.pack(tp.verify(token, src, { now = 1800000000 }))
    F.tostring("tostring(source)", src)
    return "verify(jwks source)", table.unpack(r, 1, r.n)
  end,
  revoke = function()
    return "revoke", tp.revoke { endpoint = BASE .. "/revoke", token = TOKEN, client_id = "cli",
      client_secret = SECRET, timeout = 5 }
  end,
  revoke_post = function()
    return "revoke", tp.revoke { endpoint = BASE .. "/revoke", token = TOKEN, client_id = "cli",
      client_secret = SECRET, auth = "post", token_type_hint = "access_token", timeout = 5 }
  end,
  introspect = function()
    return "introspect", tp.introspect { endpoint = BASE .. "/introspect", token = TOKEN, client_id = "cli",
      client_secret = SECRET, timeout = 5 }
  end,
  arvados_current = function()
    return "arvados_current", tp.arvados_current { host = HOST, token = ARV, scheme = "http", timeout = 5 }
  end,
  arvados_delete = function()
    return "arvados_delete_token", tp.arvados_delete_token { host = HOST, token = ARV,
      uuid = "zzzzz-gj3su-0123456789abcde", scheme = "http", timeout = 5 }
  end,
  arvados_logout = function()
    return "arvados_logout", tp.arvados_logout { host = HOST, token = ARV, scheme = "http", timeout = 5 }
  end,
}
local names = {}
for name in pairs(calls) do names[#names + 1] = name end
table.sort(names)

-- What each call sends and must never show (calls not listed send none).
local SENT = {
  revoke = { TOKEN, SECRET }, introspect = { TOKEN, SECRET },
  arvados_current = { ARV, "fuzzArvadosSecretT0k3n" }, arvados_delete_token = { ARV, "fuzzArvadosSecretT0k3n" },
  arvados_logout = { ARV, "fuzzArvadosSecretT0k3n" },
}

local function check(what, ...)
  local n = select("#", ...)
  local v, msg, code, retry = ...
  F.result(what, ...)
  -- A secret the peer's own answer holds may come back in what the call
  -- shows of that answer (an issuer named so): not a leak of ours.
  local secrets = {}
  for _, s in ipairs(SENT[what] or {}) do
    if not ANSWERS:find(s, 1, true) then secrets[#secrets + 1] = s end
  end
  if TRACE then io.stderr:write(what, ": ", tostring(v), " ", tostring(msg), " ", tostring(retry), "\n") end
  if v == nil then
    for _, s in ipairs(secrets) do F.no_secret(what, msg, s) end
    if code == "unavailable" and n == 4 and retry ~= nil and (math.type(retry) ~= "integer" or retry < 0) then
      F.finding(what, "Retry-After is " .. tostring(retry))
    end
  else
    local text = F.tostring(what, v)
    for _, s in ipairs(secrets) do F.no_secret(what .. " tostring", text, s) end
  end
end

return function(data)
  local first, rest = data:match("^([^\n]*)\n(.*)$")
  if not first then first, rest = data, "" end
  local call = calls[first]
  if not call then
    call = calls[names[(first:byte(1) or 0) % #names + 1]]
  end
  local port = fuzz_answers({})
  HOST = ("127.0.0.1:%05d"):format(port)
  BASE = "http://" .. HOST
  rest = rest:gsub("127%.0%.0%.1:00009", HOST)
  ANSWERS = rest
  fuzz_answers(F.split(rest, SEP, 8))
  check(call())
  if tp._http_calls_open() ~= 0 then
    F.finding(first, tp._http_calls_open() .. " libcurl handles still open after the call returned")
  end
end
