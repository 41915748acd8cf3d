-- Switch between Rucio accounts: which account and token the client uses,
-- the `export` line a shell evaluates, what switching says about the new
-- account's token, and a switch that logs the previous account out and
-- writes the new account into rucio.cfg.
--
-- Everything happens in a sandbox the example makes and removes (a user
-- jdoe with tokens for the accounts root, alice and bob), with an explicit
-- environment, so no real token or rucio.cfg is read or touched. Run from
-- the checkout (after `make`):
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' lua5.4 examples/switch_account.lua
-- Optional argument: NOW, the time to judge at in epoch seconds (default
-- 1800000000, 2027-01-15 08:00:00 UTC, so the output is the same every run).
-- The same from the shell: eval "$(tokenpolicy switch alice)" (docs/cli.md).
local tp = require "tokenpolicy"

local NOW = arg[1] and math.tointeger(tonumber(arg[1])) or 1800000000
local UID = tp.euid()

local function section(title)
  io.write("\n== ", title, "\n")
end

local pipe = assert(io.popen("mktemp -d"))
local sandbox = assert(pipe:read("l"), "mktemp -d failed")
pipe:close()

-- The user's world: Rucio's temporary directory, HOME and rucio.cfg.
local env = { LOGNAME = "jdoe", TMPDIR = sandbox .. "/tmp", HOME = sandbox .. "/home",
              RUCIO_CONFIG = sandbox .. "/rucio.cfg" }

-- Paths are shown relative to the sandbox.
local function shown(text)
  return (tostring(text):gsub(sandbox:gsub("%p", "%%%0"), "<sandbox>"))
end

-- What `tp.status` says of each Rucio token (it prints a table of its own too).
local function list_tokens()
  print(("%-7s %-8s %-6s %-8s %-23s %s"):format("account", "source", "active", "state", "expires", "path"))
  for _, t in ipairs(tp.status { scheme = "rucio", env = env, uid = UID, now = NOW }) do
    print(("%-7s %-8s %-6s %-8s %-23s %s"):format(t.account, t.source, t.active and "yes" or "-", t.state,
      t.exp and os.date("!%Y-%m-%d %H:%M:%S UTC", t.exp) or "-", shown(t.path)))
  end
end

os.execute("mkdir -p '" .. env.TMPDIR .. "' '" .. env.HOME .. "'")
local cfg = assert(io.open(env.RUCIO_CONFIG, "w"))
cfg:write("# the site's client settings\n[client]\nrucio_host = https://rucio.example.org\naccount = root\n"
  .. "auth_type = userpass\n")
cfg:close()

-- Tokens as `rucio whoami` leaves them: one per account, with the expiry
-- beside it. root's and alice's are valid; bob's expired ten minutes ago.
local expiries = { root = NOW + 3600, alice = NOW + 7200, bob = NOW - 600 }
for _, account in ipairs { "root", "alice", "bob" } do
  local dir = env.TMPDIR .. "/jdoe/.rucio_jdoe"
  assert(tp.write_token(dir .. "/auth_token_for_account_" .. account,
    account .. "-jdoe-webui-" .. ("%032x"):format(#account * 1234567)))
  assert(tp.write_token(dir .. "/auth_token_exp_for_account_" .. account, tostring(expiries[account])))
end

section("jdoe's Rucio tokens")
list_tokens()

section("switch to alice")
-- The result prints as the export line, then what is known of the token.
print(tp.switch_account { account = "alice", env = env, uid = UID, now = NOW })

section("switch to bob")
print(tp.switch_account { account = "bob", env = env, uid = UID, now = NOW })

section("switch to carol")
print(tp.switch_account { account = "carol", env = env, uid = UID, now = NOW })

section("switch to alice for good: log root out, write alice into rucio.cfg")
local result = tp.switch_account { account = "alice", logout_previous = true, persist = true,
                                   env = env, uid = UID, now = NOW }
-- Its lines: the export line, the token's state, then each action.
print(shown(result))
print("rucio.cfg now reads:")
io.write((assert(tp.read_config(env.RUCIO_CONFIG))))

section("jdoe's Rucio tokens after the switch")
-- No RUCIO_ACCOUNT in the environment: the client now takes alice from rucio.cfg.
list_tokens()

assert(tp.remove_tree(sandbox))
