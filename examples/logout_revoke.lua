-- Log out with revocation: end a user's tokens at their issuer, then on
-- disk. An opaque access token is revoked at the identity provider (RFC
-- 7009) and its introspection turns inactive; a JWT access token cannot be
-- revoked there (resource servers check it offline), so its jti goes into a
-- denylist file that gateways read, and a gateway verifier refuses it.
--
-- The tokens are copied into a sandbox the example makes and removes (a
-- user's XDG runtime dir and BEARER_TOKEN_FILE), with an explicit
-- environment: the given files and the real user's tokens are left alone.
-- Run from the checkout (after `make`), against a provider that issues
-- tokens to a confidential client (spec/helpers/oidc.lua starts one):
--   TOKENPOLICY_CLIENT_ID=tp-client TOKENPOLICY_CLIENT_SECRET=tp-secret \
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' \
--     lua5.4 examples/logout_revoke.lua ISSUER DENYLIST TOKEN_FILE [TOKEN_FILE]
-- Arguments:
--   ISSUER      the provider's issuer URL (its metadata gives the endpoints)
--   DENYLIST    the gateways' jti denylist file (made if missing)
--   TOKEN_FILE  the user's token, as $XDG_RUNTIME_DIR/bt_u<uid>; a second
--               one becomes the file BEARER_TOKEN_FILE names
-- The client credentials come from TOKENPOLICY_CLIENT_ID and
-- TOKENPOLICY_CLIENT_SECRET (never the command line).
-- Exit status: 0 when every token was ended, 1 when something was left.
local tp = require "tokenpolicy"

local issuer, denylist_path = arg[1], arg[2]
local token_files = { table.unpack(arg, 3) }
if not issuer or not denylist_path or #token_files < 1 or #token_files > 2 then
  io.stderr:write("usage: logout_revoke.lua ISSUER DENYLIST TOKEN_FILE [TOKEN_FILE]\n")
  os.exit(2)
end
local client_id, client_secret = os.getenv("TOKENPOLICY_CLIENT_ID"), os.getenv("TOKENPOLICY_CLIENT_SECRET")

local function section(title)
  io.write("\n== ", title, "\n")
end

-- Stops with the fail triple's message and exit status 2.
local function check(value, message)
  if value == nil then
    io.stderr:write(message, "\n")
    os.exit(2)
  end
  return value
end

-- A gateway's view: the provider's keys, and the denylist it reads.
local metadata = check(tp.oidc_metadata(issuer))
local keys = check(tp.fetch_keys(metadata.jwks_uri))
local denylist = check(tp.denylist(denylist_path))
local gateway = tp.verifier { keys = keys, iss = issuer, denylist = denylist }

-- The user's tokens, read as tokenpolicy reads token files (theirs, 0600).
local tokens = {}
for i, file in ipairs(token_files) do
  tokens[i] = check(tp.read_token(file))
end

local pipe = assert(io.popen("mktemp -d"))
local sandbox = assert(pipe:read("l"), "mktemp -d failed")
pipe:close()

-- Paths are shown relative to the sandbox, and the issuer by name.
local function shown(text)
  return (tostring(text):gsub(sandbox:gsub("%p", "%%%0"), "<sandbox>"):gsub(issuer:gsub("%p", "%%%0"), "<issuer>"))
end

-- The user's environment: only what logout needs, nothing of the real one.
local UID = tp.euid()
local env = {
  LOGNAME = "jdoe", HOME = sandbox .. "/home", XDG_RUNTIME_DIR = sandbox .. "/run",
  TOKENPOLICY_ISSUER = issuer, TOKENPOLICY_CLIENT_ID = client_id, TOKENPOLICY_CLIENT_SECRET = client_secret,
}
local places = { env.XDG_RUNTIME_DIR .. "/bt_u" .. UID, env.HOME .. "/.config/bearer_token" }
for i, token in ipairs(tokens) do
  assert(tp.write_token(places[i], token))
end
if places[2] and tokens[2] then
  env.BEARER_TOKEN_FILE = places[2]
end


-- What the provider and the gateway say of each token (never the token).
local function judge()
  for i, token in ipairs(tokens) do
    local kind = tp.classify(token).kind
    local verdict
    if kind == "jwt" then
      local claims, message = gateway:check(token)
      verdict = claims and "the gateway accepts it" or ("the gateway refuses it: " .. message)
    else
      local info, message = tp.introspect { endpoint = metadata.introspection_endpoint, token = token,
                                            client_id = client_id, client_secret = client_secret }
      verdict = info and ("the provider says it is " .. (info.active and "active" or "inactive"))
        or ("introspection failed: " .. message)
    end
    print(("token %d (%s, %s): %s"):format(i, kind, shown(places[i]), verdict))
  end
end

-- One line per action of a logout report, then its summary (the report
-- prints so itself; here the paths are shown relative to the sandbox).
local function show(r)
  for _, a in ipairs(r.actions) do
    local status = a.ok and (r.dry_run and "would" or "ok") or (a.code or "failed")
    print(("%-5s %-8s %s: %s"):format(status, a.action, shown(a.target), shown(a.message)))
  end
  print((tostring(r):match("([^\n]*)$")))
end

section("before")
judge()

section("logout, dry run")
local opts = { scheme = "wlcg", revoke = true, denylist = denylist, env = env, uid = UID }
opts.dry_run = true
show(tp.logout(opts))

section("logout")
opts.dry_run = nil
local report = tp.logout(opts)
show(report)

section("after")
judge()
-- Another process (a gateway) sees the entry in the file.
local other = assert(tp.denylist(denylist_path))
print(("the denylist file holds %d entries"):format(other:count()))
other:close()

section("logout again")
show(tp.logout(opts))

denylist:close()
assert(tp.remove_tree(sandbox))
os.exit(report.ok and 0 or 1)
