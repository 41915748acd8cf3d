--- A throw-away Redis server for the specs: Debian's `redis-server` on
-- 127.0.0.1 with a random free port, its files in a temporary directory,
-- no snapshots (`--save ''`) unless persistence is asked for, an optional
-- password (`requirepass`) and optional TLS (a CA and a server certificate
-- for 127.0.0.1 and localhost made with the `openssl` command in that
-- directory; clients are not asked for certificates).
--
-- Usage: `local srv = redis.start{ password = "...", tls = true }` in
-- `lazy_setup`, `srv:stop()` in `lazy_teardown` (reached when a spec
-- fails too). `srv:url()` is the URL a denylist takes, `srv:cli(...)` runs
-- redis-cli against it, `srv:restart()` stops and starts it on the same
-- port and directory (what persistence keeps survives, nothing else).
-- Several servers may run at once (the fleet specs start one, and three
-- gateways on it).
local expect = require "helpers.expect"

local redis = {}

-- Redis and openssl run without the sanitizer runtime `make asan`
-- preloads into the Lua interpreters: they are not ours to check.
local CLEAN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "

local quote = expect.quote

local function run(cmd)
  local p = io.popen(CLEAN .. cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local function must(cmd)
  local ok, out = run(cmd)
  if not ok then error(("%s failed: %s"):format(cmd, out), 2) end
  return out
end

--- Sleeps `seconds` (fractions allowed).
function redis.sleep(seconds)
  os.execute(CLEAN .. "sleep " .. seconds)
end

--- Whether redis-server is installed (and why not).
function redis.available()
  if run("command -v redis-server && command -v redis-cli") then return true end
  return false, "no redis-server (Debian: redis-server)"
end

local Server = {}
Server.__index = Server

-- The CA, and a server certificate for 127.0.0.1 and localhost signed by it.
local function make_certs(dir, name)
  local ca_key, ca = dir .. "/" .. name .. "-ca.key", dir .. "/" .. name .. "-ca.pem"
  must(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=%s-test-ca -keyout %s -out %s")
    :format(name, quote(ca_key), quote(ca)))
  return ca, ca_key
end

local function make_server_cert(dir, ca, ca_key)
  local key, csr, cert = dir .. "/server.key", dir .. "/server.csr", dir .. "/server.pem"
  local ext = dir .. "/server.ext"
  expect.write_file(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  must(("openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout %s -out %s")
    :format(quote(key), quote(csr)))
  must(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 2 -extfile %s -out %s")
    :format(quote(csr), quote(ca), quote(ca_key), quote(ext), quote(cert)))
  return key, cert
end

--- Starts a server.
-- @tparam[opt] table opts `password` (requirepass), `tls` (true: TLS
-- only, on the port), `persist` (true: `appendonly yes`, fsync always),
-- `port` (a fixed port instead of a random free one)
-- @return the server: fields `host`, `port`, `dir`, `password`, `tls`,
-- `ca_file` (with tls), `wrong_ca_file` (another CA, with tls)
function redis.start(opts)
  opts = opts or {}
  local self = setmetatable({
    host = "127.0.0.1",
    dir = expect.new_dir(),
    password = opts.password,
    tls = opts.tls and true or false,
    persist = opts.persist and true or false,
  }, Server)
  if self.tls then
    local ca, ca_key = make_certs(self.dir, "good")
    self.ca_file = ca
    self.key_file, self.cert_file = make_server_cert(self.dir, ca, ca_key)
    self.wrong_ca_file = make_certs(self.dir, "other")
  end
  local ok, err
  for _ = 1, 20 do
    self.port = opts.port or math.random(20000, 59999)
    ok, err = self:start_server()
    if ok or opts.port then break end
  end
  if not ok then
    self:stop()
    error("redis-server did not start: " .. tostring(err), 2)
  end
  return self
end

-- The arguments of redis-server for this server.
function Server:args()
  local a = {
    -- 127.0.0.2 too: an address the TLS certificate does not name
    "--bind 127.0.0.1 127.0.0.2", "--dir " .. quote(self.dir), "--daemonize yes",
    "--pidfile " .. quote(self.dir .. "/redis.pid"), "--logfile " .. quote(self.dir .. "/redis.log"),
    "--protected-mode no",
  }
  if self.persist then
    a[#a + 1] = "--appendonly yes --appendfsync always --save ''"
  else
    a[#a + 1] = "--save '' --appendonly no"
  end
  if self.password then a[#a + 1] = "--requirepass " .. quote(self.password) end
  if self.tls then
    a[#a + 1] = ("--port 0 --tls-port %d --tls-cert-file %s --tls-key-file %s --tls-ca-cert-file %s "
      .. "--tls-auth-clients no"):format(self.port, quote(self.cert_file), quote(self.key_file), quote(self.ca_file))
  else
    a[#a + 1] = "--port " .. self.port
  end
  return table.concat(a, " ")
end

-- Starts redis-server and waits until it answers (5 s); true, or false
-- and why (the port was taken, say).
function Server:start_server()
  os.remove(self.dir .. "/redis.log")
  local ok, out = run("redis-server " .. self:args())
  if not ok then return false, out end
  for _ = 1, 100 do
    local pong = self:cli("PING")
    if pong:match("PONG") then
      self.pid = expect.read_file(self.dir .. "/redis.pid", true):match("%d+")
      return true
    end
    local log = expect.read_file(self.dir .. "/redis.log", true)
    if log:match("Address already in use") or log:match("Failed listening") then
      return false, "port in use"
    end
    redis.sleep(0.05)
  end
  return false, expect.read_file(self.dir .. "/redis.log", true)
end

--- The redis-cli command line for this server (password through the
-- environment, so no process listing shows it).
function Server:cli_prefix()
  local words = { CLEAN }
  if self.password then words[#words + 1] = "REDISCLI_AUTH=" .. quote(self.password) end
  words[#words + 1] = ("redis-cli --no-auth-warning -h %s -p %d"):format(self.host, self.port)
  if self.tls then words[#words + 1] = "--tls --cacert " .. quote(self.ca_file) end
  return table.concat(words, " ")
end

--- Runs redis-cli with the words `...` (each quoted); its output.
function Server:cli(...)
  local words = { self:cli_prefix() }
  for i = 1, select("#", ...) do words[#words + 1] = quote((select(i, ...))) end
  local p = io.popen(table.concat(words, " ") .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

--- The URL of this server for tp.denylist (no password in it unless
-- `with_password`); `extra` is appended (a path, a query).
function Server:url(extra, with_password)
  local auth = with_password and self.password and (":" .. self.password .. "@") or ""
  return ("%s://%s%s:%d%s"):format(self.tls and "rediss" or "redis", auth, self.host, self.port, extra or "")
end

--- Stops the server, keeping its directory (restart starts it again).
function Server:halt()
  if self.pid then
    os.execute(CLEAN .. "kill " .. self.pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if not run("kill -0 " .. self.pid) then break end
      redis.sleep(0.05)
    end
    self.pid = nil
  end
end

--- Stops and starts the server on the same port and directory.
function Server:restart()
  self:halt()
  local ok, err = self:start_server()
  if not ok then error("redis-server did not restart: " .. tostring(err), 2) end
end

--- Stops the server and removes its directory.
function Server:stop()
  self:halt()
  if self.dir then expect.remove_dir(self.dir) end
  self.dir = nil
end

return redis
