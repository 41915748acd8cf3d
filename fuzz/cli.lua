-- luacheck: globals fuzz_answers
-- The command line tool (tokenpolicy.cli) on fuzzed argument vectors,
-- token files, key files, stdin, rucio.cfg and denylists.
--
-- The input: one argument per line, then an empty line, then the files,
-- separated by lines "--file--": the token file, the keys file, stdin,
-- the rucio.cfg, the Rucio expiry file and the denylist.  In arguments,
-- "@token", "@keys" and "@dir" name the token file, the keys file and the
-- sandbox directory.
--
-- Everything runs in a sandbox: os.getenv answers from a made-up
-- environment (TMPDIR, HOME, XDG_RUNTIME_DIR in the sandbox, RUCIO_CONFIG
-- its rucio.cfg, BEARER_TOKEN_FILE the token file, TOKENPOLICY_DENYLIST its
-- denylist), stdout and stderr are captured, stdin is the input's,
-- fetch_keys is served by the harness's loopback server (the keys file as
-- the JWKS answer), and os.exit (argparse's --help and --version) ends the
-- run instead of the process.  Only these commands run: inspect, verify,
-- status and help, which read, and deny and denylist on the sandbox's
-- denylist (any --denylist, or a prefix of it, is rewritten to name it);
-- an argument naming another command (logout, switch, revoke,
-- check-long-lived, fix-long-lived) becomes "inspect", so no run removes,
-- revokes or rewrites anything outside the sandbox.
--
-- The oracle: main returns 0, 1 or 2; never an "internal error" (a Lua
-- error inside a command); nothing printed holds the token file's token.
local F = require "fuzzlib"

local sandbox = F.sandbox()
local rucio_dir = sandbox .. "/fuzz/.rucio_fuzz"

-- text with every occurrence of the sandbox's path replaced by "<sandbox>".
local function without_sandbox(text)
  local parts, at = {}, 1
  while true do
    local i, j = text:find(sandbox, at, true)
    if not i then break end
    parts[#parts + 1] = text:sub(at, i - 1) .. "<sandbox>"
    at = j + 1
  end
  parts[#parts + 1] = text:sub(at)
  return table.concat(parts)
end
os.execute(F.SH .. ("mkdir -p '%s/home' '%s/run' '%s'"):format(sandbox, sandbox, rucio_dir))
os.execute(F.SH .. ("chmod 700 '%s'"):format(rucio_dir))

local ENV = {
  TMPDIR = sandbox, HOME = sandbox .. "/home", XDG_RUNTIME_DIR = sandbox .. "/run", LOGNAME = "fuzz",
  USER = "fuzz", NO_COLOR = "1", TERM = "dumb", RUCIO_CONFIG = sandbox .. "/rucio.cfg", PATH = "/usr/bin:/bin",
  BEARER_TOKEN_FILE = sandbox .. "/token", TOKENPOLICY_DENYLIST = sandbox .. "/denylist",
}
os.getenv = function(name) return ENV[name] end -- luacheck: ignore 122

local Exited = setmetatable({}, { __tostring = function() return "os.exit called" end })
os.exit = function() error(Exited, 0) end -- luacheck: ignore 122

local out = {}
local function capture()
  return { write = function(self, ...)
    for i = 1, select("#", ...) do out[#out + 1] = tostring((select(i, ...))) end
    return self
  end, flush = function(self) return self end, close = function() return true end, lines = function()
    return function() return nil end
  end, read = function() return nil end, setvbuf = function() return true end }
end
local stdin_text = ""
io.stdout, io.stderr = capture(), capture() -- luacheck: ignore 122
io.write = function(...) return io.stdout:write(...) end -- luacheck: ignore 122
print = function(...) -- luacheck: ignore 121
  local n = select("#", ...)
  for i = 1, n do io.stdout:write(tostring((select(i, ...))), i < n and "\t" or "") end
  io.stdout:write("\n")
end
io.read = function(fmt) -- luacheck: ignore 122
  if fmt == "a" or fmt == "*a" then
    local s = stdin_text
    stdin_text = ""
    return s
  end
  return nil
end

local tp = require "tokenpolicy"
local core = require "tokenpolicy.core"
local cli = require "tokenpolicy.cli"

-- fetch_keys through the loopback server: the keys file is the answer.
local keys_text = ""
tp.fetch_keys = function(_, opts)
  local port = fuzz_answers {
    ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"):format(#keys_text, keys_text),
  }
  return core.fetch_keys(("http://127.0.0.1:%d/jwks"):format(port), opts)
end

local READING = { inspect = true, verify = true, status = true, help = true, deny = true, denylist = true }
local WRITING = { logout = true, switch = true, revoke = true, ["check-long-lived"] = true,
  ["fix-long-lived"] = true }
local FIRST = { "inspect", "verify", "status", "help", "deny", "denylist", "--help", "--version" }

return function(data)
  local head, files = data:match("^(.-)\n\n(.*)$")
  if not head then head, files = data, "" end
  local argv = {}
  for line in (head .. "\n"):gmatch("([^\n]*)\n") do
    if #argv >= 16 then break end
    -- An argument from the OS ends at its first NUL, as C strings do.
    argv[#argv + 1] = line:match("^[^\0]*")
  end
  local parts = F.split(files, "\n--file--\n", 6)
  local token, keys = parts[1] or "", parts[2] or ""
  keys_text = keys
  stdin_text = parts[3] or ""
  local paths = { ["@token"] = F.write("token", token), ["@keys"] = F.write("keys", keys), ["@dir"] = sandbox }
  F.write("rucio.cfg", parts[4] or "[client]\naccount = fuzz\n")
  -- The token is also where WLCG discovery (BEARER_TOKEN_FILE) and Rucio's
  -- default layout find it, with an expiry file, for status and inspect.
  -- Mode 0600 (as a token's owner keeps it) through the core's writer; an
  -- empty token, which it refuses, stays 0644 from F.write.
  core.write_token(paths["@token"], token)
  core.write_token(F.write("fuzz/.rucio_fuzz/auth_token_for_account_fuzz", token), token)
  F.write("fuzz/.rucio_fuzz/auth_token_exp_for_account_fuzz", parts[5] or "1800000000")
  F.write("denylist", parts[6] or "jti-1 1800000100\n")
  os.remove(sandbox .. "/denylist.lock")
  for i, a in ipairs(argv) do
    if paths[a] then argv[i] = paths[a] end
    if WRITING[a] then argv[i] = "inspect" end
    -- deny and denylist write only the sandbox's denylist: a --denylist
    -- (or a prefix of it) names that file, whatever the input says.
    if a:find("^%-%-d") and ("--denylist"):sub(1, #a) == a then
      argv[i] = "--denylist=" .. sandbox .. "/denylist"
    elseif a:find("^%-%-denylist=") then
      argv[i] = "--denylist=" .. sandbox .. "/denylist"
    end
  end
  if not READING[argv[1]] and argv[1] ~= "--help" and argv[1] ~= "--version" then
    table.insert(argv, 1, FIRST[(#data % #FIRST) + 1])
  end

  for k in pairs(out) do out[k] = nil end
  local code = cli.main(argv)
  -- The sandbox's path, which the output names as it names any path, is
  -- ours: a token that repeats a piece of it is not shown by being named.
  local text = without_sandbox(table.concat(out))
  if code ~= 0 and code ~= 1 and code ~= 2 then F.finding("cli", "exit code " .. tostring(code)) end
  if text:find("internal error", 1, true) and not text:find("internal error: os.exit called", 1, true) then
    F.finding("cli", text:sub(1, 600))
  end
  local secret = token:match("^%s*(.-)%s*$")
  if #secret >= 24 and text:find(secret, 1, true) then
    -- Unless it is the output's own wording: the same run with another
    -- token prints it too.
    F.write("token", "neutral-token-for-comparison")
    for k in pairs(out) do out[k] = nil end
    keys_text, stdin_text = keys, parts[3] or ""
    cli.main(argv)
    if not without_sandbox(table.concat(out)):find(secret, 1, true) then
      F.finding("cli", "the token file's token is in the output")
    end
  end
end
