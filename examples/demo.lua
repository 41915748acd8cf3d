-- A tour of tokenpolicy: mint a token with a fresh key, show what is in it,
-- verify it, and show what verify says about tokens that must not pass;
-- then find, read and remove a token in a sandbox, judge tokens against
-- the Arvados admin guide's policy, and run the `tokenpolicy` command in a
-- sandbox (nothing real is read or touched).
--
-- Run from the checkout: `make demo`, which is
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' lua5.4 examples/demo.lua
local tp = require "tokenpolicy"

local function section(title)
  io.write("\n== ", title, "\n")
end

-- A fresh P-256 key from the openssl CLI; nothing secret is kept on disk.
local pipe = assert(io.popen("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null"))
local pem = pipe:read("a")
pipe:close()
local key = assert(tp.keys(pem, { kid = "demo-2026" }))
section("key set")
print(key)

local now = os.time()
local token = assert(tp.sign({
  iss = "https://idp.example.org",
  sub = "alice",
  aud = { "rucio", "fts" },
  scope = "storage.read:/ storage.create:/home/alice",
  iat = now,
  nbf = now,
  exp = now + 3600,
  jti = "demo-0001",
}, key, { typ = "at+jwt" }))

section("decoded (not verified)")
print(tp.decode(token))

section("verified")
local claims, header = tp.verify(token, key, { iss = "https://idp.example.org", aud = "rucio", typ = "at+jwt" })
assert(claims, header)
print(("signature %s by key %s, subject %s, valid until %s UTC"):format(
  header.alg, header.kid, claims.sub, os.date("!%Y-%m-%d %H:%M:%S", claims.exp)))

section("refused")
local function show(label, ...)
  local _, message = ...
  print(("%-30s %s"):format(label, message))
end
show("an hour after expiry:", tp.verify(token, key, { now = now + 7200 }))
show("for another audience:", tp.verify(token, key, { aud = "dcache" }))
-- Change one character in the middle of the payload (the claims).
local at = token:find(".", 1, true) + 20
local forged = token:sub(1, at - 1) .. (token:sub(at, at) == "A" and "B" or "A") .. token:sub(at + 1)
show("with one claim byte changed:", tp.verify(forged, key))
show("unsigned (alg none):", tp.verify(tp.b64url_encode('{"alg":"none"}') .. "."
  .. tp.b64url_encode('{"sub":"mallory"}') .. ".", key))

-- Where tokens live: a sandbox stands in for a shared machine, and an
-- explicit environment for the user's, so nothing real is read or touched.
section("where is my token? (discover, in a sandbox)")
local sandbox = assert(io.popen("mktemp -d")):read("l")
-- The Rucio client refuses to start without a rucio.cfg: give it one.
local cfg = assert(io.open(sandbox .. "/rucio.cfg", "w"))
cfg:write("[client]\n")
cfg:close()
local env = { TMPDIR = sandbox, LOGNAME = "alice", RUCIO_ACCOUNT = "alice",
              RUCIO_CONFIG = sandbox .. "/rucio.cfg", HOME = sandbox .. "/home" }
local rucio_path
for _, c in ipairs(assert(tp.discover { env = env, scheme = "rucio" })) do
  if c.active then rucio_path = c.path end
end
assert(tp.write_token(rucio_path, token))   -- as the Rucio client does: 0700 dir, 0600 file
for _, c in ipairs(assert(tp.discover { env = env })) do
  print(("%-8s %-8s %-6s %s%s"):format(c.scheme, c.source, c.exists and "exists" or "-",
    (c.path or c.variable):gsub("^" .. sandbox:gsub("%p", "%%%0"), "<sandbox>"), c.active and "   <- in use" or ""))
end
local stored, info = assert(tp.read_token(rucio_path))
print(("read back %d bytes, mode %o, kind %s"):format(#stored, info.mode, tp.classify(stored).kind))
local removed = assert(tp.remove_tree(sandbox .. "/alice"))
print(("logged out: removed %d entries, touched nothing that was not alice's"):format(#removed.removed))
os.execute("rm -rf '" .. sandbox .. "'")

-- Lifetime policy: the Arvados admin guide's example cluster.
section("lifetime policy (examples/sample/arvados-config.yml)")
local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "examples"
local policy = assert(tp.policy_from_arvados(here .. "/sample/arvados-config.yml"))
print(policy)
local records = {
  { name = "a fresh API token", created_at = now - 3600, expires_at = now + 6 * 3600, kind = "api",
    owner_uuid = "zzzzz-tpzed-000000000000001" },
  { name = "a token that never expires", created_at = now - 40 * 86400, expires_at = tp.null, kind = "api",
    owner_uuid = "zzzzz-tpzed-000000000000002" },
  { name = "an idle Workbench login", created_at = now - 600, expires_at = now + 11 * 3600,
    last_used_at = now - 400, kind = "login", owner_uuid = "zzzzz-tpzed-000000000000003" },
}
for _, record in ipairs(records) do
  local verdict = policy:evaluate(record, now)
  print(("%-28s %-12s long-lived: %s"):format(record.name .. ":", verdict.state,
    tostring((policy:long_lived(record, now)))))
end
print(policy:evaluate(tp.decode(token), now))

-- The same jobs from the shell: the `tokenpolicy` command (bin/tokenpolicy)
-- in a sandbox that stands in for a user with tokens of all three kinds.
section("the tokenpolicy command (in a sandbox)")
do
  local function q(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
  end
  -- The checkout's launcher, under the Lua running this demo and its build.
  local bin = here .. "/../bin/tokenpolicy"
  local lua = "lua" .. _VERSION:match("%d+%.%d+")
  local build = assert(package.searchpath("tokenpolicy.core", package.cpath)):match("^(.*)/tokenpolicy/[^/]*$")
  local box = assert(io.popen("mktemp -d")):read("l")
  local shell_env = { PATH = "/usr/bin:/bin", TMPDIR = box, LOGNAME = "alice", RUCIO_CONFIG = box .. "/rucio.cfg",
                HOME = box .. "/home", XDG_RUNTIME_DIR = box .. "/run", NO_COLOR = "1",
                TOKENPOLICY_LUA = lua, TOKENPOLICY_BUILD = build, LD_PRELOAD = os.getenv("LD_PRELOAD") }
  local words = {}
  for k, v in pairs(shell_env) do words[#words + 1] = q(k .. "=" .. v) end
  table.sort(words)
  local prefix = "env -i " .. table.concat(words, " ") .. " "
  local function shown(text)
    return (text:gsub(box:gsub("%p", "%%%0"), "<sandbox>"))
  end
  -- Runs a command line (`tokenpolicy` is the launcher) and shows it,
  -- its output and its exit status.
  local function shell(line)
    print("$ " .. line)
    local cmd = line:gsub("tokenpolicy", q(bin))
    local p = assert(io.popen(prefix .. "sh -c " .. q(cmd) .. " 2>&1"))
    local text = p:read("a")
    local _, _, status = p:close()
    io.write(shown(text))
    print(("(exit %d)"):format(status))
  end

  os.execute("mkdir -p -m 0700 " .. q(box .. "/run") .. " " .. q(box .. "/home"))
  local cfg_file = assert(io.open(shell_env.RUCIO_CONFIG, "w"))
  cfg_file:write("[client]\naccount = alice\n")
  cfg_file:close()
  -- alice's and bob's Rucio tokens (as `rucio whoami` leaves them), the
  -- demo JWT as her WLCG bearer token, and an Arvados login.
  local rucio_env = { TMPDIR = box, LOGNAME = "alice", RUCIO_CONFIG = shell_env.RUCIO_CONFIG, HOME = shell_env.HOME }
  for _, account in ipairs { "alice", "bob" } do
    rucio_env.RUCIO_ACCOUNT = account
    for _, c in ipairs(assert(tp.discover { env = rucio_env, scheme = "rucio" })) do
      if c.active then
        assert(tp.write_token(c.path, account .. "-/DC=org/CN=" .. account .. "-rucio-" .. ("5f3a9c"):rep(5) .. "ab"))
        assert(tp.write_token(c.expiry_path, tostring(now + (account == "alice" and 3600 or -600))))
      end
    end
  end
  local bt_path = shell_env.XDG_RUNTIME_DIR .. "/bt_u" .. tp.euid()
  assert(tp.write_token(bt_path, token))
  assert(tp.write_token(shell_env.HOME .. "/.config/arvados/settings.conf", "ARVADOS_API_HOST=zzzzz.example.org\n"
    .. "ARVADOS_API_TOKEN=v2/zzzzz-gj3su-0123456789abcde/" .. ("k3y"):rep(17) .. "\n"))

  shell("tokenpolicy status")
  shell("tokenpolicy inspect")
  shell("tokenpolicy inspect - < $XDG_RUNTIME_DIR/bt_u" .. tp.euid())
  shell('eval "$(tokenpolicy switch bob)"; echo "now RUCIO_ACCOUNT=$RUCIO_ACCOUNT"')
  shell("tokenpolicy logout --all --dry-run")
  shell("tokenpolicy logout --all")
  shell("tokenpolicy logout --all")
  os.execute("rm -rf " .. q(box))
end
