-- A site policy script: report every user's token files that break the
-- site's lifetime policy (or are expired, or readable by others), as a
-- table of user, token and verdict. It only reads; `tokenpolicy
-- fix-long-lived --files ROOT` removes what it reports (docs/migrate.md).
--
-- Run from the checkout (after `make`):
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' lua5.4 examples/policy_report.lua
-- Without arguments it makes a sandbox with the token caches of alice, bob
-- and carol, reports on it and removes it. Arguments, all optional:
--   ROOT    the directory holding the users' caches, as /tmp does:
--           <ROOT>/<user>/.rucio_<user>[@vo]/auth_token_for_* and <ROOT>/bt_u<uid>
--           (a site admin runs it as root with ROOT=/tmp; "-" makes the sandbox)
--   NOW     the time to judge at, epoch seconds (default: the clock; the
--           sandbox's default is 1800000000, 2027-01-15 08:00:00 UTC)
--   CONFIG  an Arvados config.yml whose MaxTokenLifetime (else
--           TokenLifetime) is the policy (default examples/sample/arvados-config.yml: 24h)
-- Exit status: 0 when no token breaks the policy, 1 when some do.
local tp = require "tokenpolicy"
local migrate = require "tokenpolicy.migrate"
local files_store = require "tokenpolicy.store.files"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local root = arg[1] ~= "-" and arg[1] or nil
local now = arg[2] and math.tointeger(tonumber(arg[2])) or (root and os.time() or 1800000000)
local config = arg[3] or (here .. "/sample/arvados-config.yml")

-- The sandbox: what three users' caches could hold on a shared host.
local function make_sandbox()
  local pipe = assert(io.popen("mktemp -d"))
  local dir = assert(pipe:read("l"), "mktemp -d failed")
  pipe:close()
  -- JWTs signed with a throw-away secret: only their claims matter here.
  local secret = assert(tp.keys { kty = "oct", k = tp.b64url_encode(("example secret "):rep(3)) })
  local function jwt(sub, exp)
    return assert(tp.sign({ iss = "https://idp.example.org", sub = sub, iat = now - 60, exp = exp }, secret))
  end
  local function rucio(user, vo, account, token, exp)
    local cache = ("%s/%s/.rucio_%s%s"):format(dir, user, user, vo and ("@" .. vo) or "")
    local name = account and ("account_" .. account) or "default_account"
    assert(tp.write_token(cache .. "/auth_token_for_" .. name, token))
    if exp then
      assert(tp.write_token(cache .. "/auth_token_exp_for_" .. name, tostring(exp)))
    end
    return cache .. "/auth_token_for_" .. name
  end
  local hex = ("0123456789abcdef"):rep(2)
  -- alice: a token for an hour (fine), and one for her VO's production
  -- account that lives 30 days.
  rucio("alice", nil, "alice", "alice-/CN=alice-webui-" .. hex, now + 3600)
  rucio("alice", "atlas", "atlasprod", "atlasprod-/CN=alice-webui-" .. hex, now + 30 * 86400)
  -- bob: an expired token, and one without an expiry file.
  rucio("bob", nil, "bob", "bob-/CN=bob-webui-" .. hex, now - 600)
  rucio("bob", nil, nil, "bob-/CN=bob-webui-" .. hex)
  -- carol: an OIDC token (a JWT) for two hours, left readable by everyone.
  local carol = rucio("carol", nil, "carol", jwt("carol", now + 7200))
  os.execute("chmod 644 '" .. carol .. "'")
  -- And the WLCG bearer token of whoever runs this, for 90 days.
  assert(tp.write_token(dir .. "/bt_u" .. tp.euid(), jwt("me", now + 90 * 86400)))
  return dir
end

local sandbox = not root and make_sandbox() or nil
root = root or sandbox

local policy = assert(tp.policy_from_arvados(config))
local store = files_store { root = root }
-- The Arvados rake task's rule, over token files: expires_at IS NULL OR
-- expires_at > now + lifetime. Nothing is changed.
local result = assert(migrate.check_long_lived(store, policy, { now = now }))

local function relative(path)
  return path:sub(1, #root + 1) == root .. "/" and path:sub(#root + 2) or path
end

-- The user a file belongs to: the name in its Rucio layout (the store has
-- checked that the uid owning <ROOT>/<user> owns the file), else the
-- owner's name (bt_u<uid>).
local function user_of(entry)
  return relative(entry.path):match("^([^/]+)/%.rucio_") or entry.user
end

print(("policy: tokens may live %s (%s); judged at %s"):format(tp.format_duration(result.lifetime),
  config:match("[^/]*$"), os.date("!%Y-%m-%d %H:%M:%S UTC", now)))
local rows = { { "user", "token", "verdict", "expires" } }
for _, entry in ipairs(result.files) do
  local verdict = entry.state
  if entry.readable_by_others then
    verdict = verdict .. ", readable by others"
  end
  rows[#rows + 1] = { user_of(entry), relative(entry.path), verdict,
    entry.expires_at and os.date("!%Y-%m-%d %H:%M", entry.expires_at) or "never" }
end
local widths = { 0, 0, 0 }
for _, row in ipairs(rows) do
  for i = 1, 3 do widths[i] = math.max(widths[i], #row[i]) end
end
for _, row in ipairs(rows) do
  print(("%-" .. widths[1] .. "s  %-" .. widths[2] .. "s  %-" .. widths[3] .. "s  %s"):format(table.unpack(row)))
end
for _, skipped in ipairs(result.skipped) do
  print(("skipped %s: %s"):format(relative(skipped.path), skipped.reason))
end
local expired, readable = 0, 0
for _, entry in ipairs(result.files) do
  if entry.state == "expired" then expired = expired + 1 end
  if entry.readable_by_others then readable = readable + 1 end
end
print(("%d token files break the policy; %d expired; %d readable by others"):format(result.tokens, expired,
  readable))

if sandbox then
  assert(tp.remove_tree(sandbox))
end
os.exit(result.tokens == 0 and 0 or 1)
