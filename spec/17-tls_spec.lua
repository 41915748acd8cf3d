-- TLS: peers are verified against the system CA bundle or opts.ca_file,
-- and nothing turns verification off.
local tp = require "tokenpolicy"

-- Commands run without the sanitizer preload of `make asan`: they are not
-- what it checks, and a tool that leaks at exit would abort under it.
local function sh(cmd)
  local quoted = "'" .. cmd:gsub("'", "'\\''") .. "'"
  local pipe = assert(io.popen("env -u LD_PRELOAD sh -c " .. quoted .. " 2>&1"))
  local out = pipe:read("a")
  local ok = pipe:close()
  assert(ok, out)
  return out
end

-- A one-route HTTPS peer serving an OpenID configuration for itself.
local SERVER = [[
const https = require("https"), fs = require("fs");
const s = https.createServer({ key: fs.readFileSync(process.argv[2]), cert: fs.readFileSync(process.argv[3]) },
  (q, r) => {
    r.setHeader("content-type", "application/json");
    r.end(JSON.stringify({ issuer: "https://127.0.0.1:" + s.address().port, jwks_uri: "https://127.0.0.1/jwks" }));
  });
s.listen(0, "127.0.0.1", () => console.log(s.address().port + " " + process.pid));
]]

-- Generous: under valgrind, loading the system CA bundle alone took more
-- than 5 s of a busy CI run (a timeout here is not what is tested).
local TIMEOUT = 60

describe("https peers", function()
  local dir, peer, issuer

  setup(function()
    dir = sh("mktemp -d"):gsub("%s+$", "")
    sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 1 "
      .. "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"):format(dir, dir))
    local f = assert(io.open(dir .. "/server.js", "w"))
    f:write(SERVER)
    f:close()
    peer = assert(io.popen(("exec env -u LD_PRELOAD node %s/server.js %s/key.pem %s/cert.pem")
      :format(dir, dir, dir)))
    local port, pid = assert(peer:read("l")):match("^(%d+) (%d+)$")
    peer = { handle = peer, pid = pid }
    issuer = "https://127.0.0.1:" .. port
  end)

  teardown(function()
    if peer and peer.pid then
      os.execute("kill " .. peer.pid)
      peer.handle:close()
    end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  after_each(function() collectgarbage() end)

  it("refuses a certificate no trusted CA signed", function()
    local meta, msg, code = tp.oidc_metadata(issuer, { ttl = 0, timeout = TIMEOUT })
    assert.is_nil(meta)
    assert.are.equal("http", code, msg)
    assert.matches("^http: ", msg)
  end)

  it("trusts the CA given as ca_file", function()
    local meta = assert(tp.oidc_metadata(issuer, { ttl = 0, timeout = TIMEOUT, ca_file = dir .. "/cert.pem" }))
    assert.are.equal(issuer, meta.issuer)
  end)

  it("does not turn verification off with insecure=true", function()
    local meta, _, code = tp.oidc_metadata(issuer, { ttl = 0, timeout = TIMEOUT, insecure = true })
    assert.is_nil(meta)
    assert.are.equal("http", code)
  end)
end)
