-- Secrets hygiene (issue 12): every workflow, every command of
-- bin/tokenpolicy and their error paths run with recognisable secrets --
-- tokens whose signature and payload carry a unique marker, an identity
-- provider's opaque and JWT tokens, a Rucio and an Arvados token, a client
-- secret, a database password and an HMAC key -- and nothing a person or a
-- log could see holds any of them: stdout, stderr, HAProxy's log and its
-- answers, every error value and every returned table (walked, userdata
-- printed), in any form (raw, JSON-escaped, percent-encoded, base64 and
-- base64url at each byte alignment: spec/helpers/secrets.lua).
--
-- The peers are real: the pinned oidc-provider (spec/helpers/oidc.lua),
-- the scripted HTTP peer that echoes what it was sent
-- (spec/helpers/http_peer.lua), PostgreSQL with password authentication
-- (spec/helpers/postgres.lua) and HAProxy (spec/helpers/haproxy.lua).
--
-- What a token says about itself (its claims, a Rucio token's account,
-- an Arvados token's uuid) is what inspect and status are for; the
-- secrets are the parts that make a token usable: the whole token, a
-- JWT's signature, a Rucio token's random suffix, an Arvados token's
-- secret. A JWT's encoded payload segment is searched as well: no output
-- needs it, and finding it would mean a piece of the token was copied.
--
-- Each table row is one case; a new command or error path is one line.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"
local oidc = require "helpers.oidc"
local http_peer = require "helpers.http_peer"
local postgres = require "helpers.postgres"
local haproxy = require "helpers.haproxy"
local secrets = require "helpers.secrets"

local LUA = "lua" .. _VERSION:match("%d+%.%d+")
local BUILD = os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. _VERSION:match("%d+%.%d+"))
local ISS = "https://idp.example.org"

local quote, slurp = expect.quote, expect.read_file

local function write(path, text, mode)
  expect.write_file(path, text)
  assert(os.execute("chmod " .. (mode or "600") .. " " .. quote(path)))
end

-- A random marker: letters and digits, unique to this run.
local function marker(prefix, n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(n or 12)
  f:close()
  return prefix .. (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- Every secret of the run.
local SET = secrets.new()

-- A compact JWS's three segments.
local function segments(token)
  return token:match("^([^.]*)%.([^.]*)%.([^.]*)$")
end

-- Registers a JWT: the whole token, its signature and its payload segment.
local function jwt_secret(name, token)
  local _, payload, signature = segments(token)
  SET:add(name, token)
  SET:add(name .. " (signature)", signature, { pieces = true })
  SET:add(name .. " (payload segment)", payload)
  return token
end

-- Fails the running spec when `text` holds a form of any secret.
local function assert_clean(where, text)
  local name, form, context = SET:find(text)
  if name then
    error(("%s holds the %s (%s): ...%s..."):format(where, name, form, context), 2)
  end
end

-- Runs bin/tokenpolicy under `env -i` with `args`, opts.env and
-- opts.stdin; returns { code=, out=, err= }. The sanitizer preload of
-- `make asan` is passed on, without its leak check: LuaDBI leaks the
-- handle of a failed connection (spec/30), which is not what this checks.
local function cli(args, opts)
  opts = opts or {}
  local env = { PATH = "/usr/bin:/bin", TOKENPOLICY_LUA = LUA, TOKENPOLICY_BUILD = BUILD }
  for _, name in ipairs { "LD_PRELOAD", "UBSAN_OPTIONS" } do env[name] = os.getenv(name) end
  if os.getenv("ASAN_OPTIONS") then env.ASAN_OPTIONS = os.getenv("ASAN_OPTIONS") .. ":detect_leaks=0" end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local words = { "env", "-i" }
  local names = {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do words[#words + 1] = quote(k .. "=" .. env[k]) end
  words[#words + 1] = "bin/tokenpolicy"
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  local out, err, input = os.tmpname(), os.tmpname(), os.tmpname()
  write(input, opts.stdin or "")
  local _, _, code = os.execute(table.concat(words, " ") .. " <" .. input .. " >" .. out .. " 2>" .. err)
  local result = { code = code, out = slurp(out), err = slurp(err) }
  os.remove(out)
  os.remove(err)
  os.remove(input)
  return result
end

describe("secrets hygiene", function()
  -- F: the fixtures every case reads (keys, tokens, peers, files).
  local F = {}
  local dirs = {}

  local function new_dir()
    local dir = expect.new_dir()
    dirs[#dirs + 1] = dir
    return dir
  end

  -- A fresh sandbox of the user alice: her Rucio token (active), bob's
  -- Rucio JWT, a WLCG token file (tokens.wlcg, default F.jwt) and an
  -- Arvados login, with the environment that finds them. tokens.env_wlcg
  -- puts a token in BEARER_TOKEN too.
  function F.box(tokens)
    tokens = tokens or {}
    local box = new_dir()
    local env = { TMPDIR = box, LOGNAME = "alice", RUCIO_CONFIG = box .. "/rucio.cfg", HOME = box .. "/home",
                  XDG_RUNTIME_DIR = box .. "/run", TOKENPOLICY_CLIENT_ID = oidc.client_id,
                  TOKENPOLICY_CLIENT_SECRET = tokens.client_secret or oidc.client_secret,
                  TOKENPOLICY_ISSUER = F.idp and F.idp.issuer or nil, BEARER_TOKEN = tokens.env_wlcg }
    os.execute("mkdir -m 0700 " .. quote(box .. "/run") .. " " .. quote(box .. "/home"))
    write(env.RUCIO_CONFIG, "[client]\naccount = alice\n", "644")
    local cache = box .. "/alice/.rucio_alice"
    assert(tp.write_token(cache .. "/auth_token_for_account_alice", F.rucio))
    assert(tp.write_token(cache .. "/auth_token_exp_for_account_alice", tostring(os.time() + 3600)))
    assert(tp.write_token(cache .. "/auth_token_for_account_bob", F.expired))
    assert(tp.write_token(box .. "/run/bt_u" .. tp.euid(), tokens.wlcg or F.jwt))
    assert(tp.write_token(box .. "/home/.config/arvados/settings.conf",
      "ARVADOS_API_HOST=127.0.0.1:" .. F.peer.port .. "\nARVADOS_API_TOKEN=" .. F.arvados .. "\n"))
    return env, box
  end

  setup(function()
    -- Keys: the issuer's (EC P-256), another one, and an HMAC secret.
    local function openssl(cmd, input)
      local path = os.tmpname()
      write(path, input or "")
      local pipe = assert(io.popen("env -u LD_PRELOAD openssl " .. cmd .. " <" .. path .. " 2>/dev/null"))
      local text = pipe:read("a")
      pipe:close()
      os.remove(path)
      return text
    end
    local pem = openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256")
    F.key = assert(tp.keys(pem, { kid = "secrets-1" }))
    F.keys_dir = new_dir()
    F.pub = F.keys_dir .. "/issuer.pem"
    write(F.pub, openssl("pkey -pubout", pem), "644")
    F.other_pem = openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256")
    SET:add("private key (PEM body)", (F.other_pem:gsub("%-%-%-%-%-[^\n]*%-%-%-%-%-", ""):gsub("%s", "")),
      { pieces = true })
    F.other = F.keys_dir .. "/other.pem"
    write(F.other, openssl("pkey -pubout", F.other_pem), "644")
    F.hmac_k = SET:add("HMAC key", marker("hmacMARK", 24), { pieces = true })
    F.hmac = F.keys_dir .. "/hmac.jwk"
    write(F.hmac, tp.json_encode { kty = "oct", kid = "hs-1", alg = "HS256", k = tp.b64url_encode(F.hmac_k) })

    -- Tokens with a marker in the payload (tp_marker) and in the signature.
    local now = os.time()
    local function claims(extra)
      local c = { iss = ISS, sub = "alice", aud = "rucio", scope = "read", iat = now - 600, exp = now + 86400,
                  jti = marker("jti-", 6), tp_marker = marker("PAYMARK-") }
      for k, v in pairs(extra or {}) do c[k] = v end
      return c
    end
    F.jwt = jwt_secret("JWT", assert(tp.sign(claims(), F.key)))
    F.expired = jwt_secret("expired JWT", assert(tp.sign(claims { iat = now - 7200, exp = now - 3600 }, F.key)))
    F.denied = jwt_secret("denylisted JWT", assert(tp.sign(claims(), F.key)))
    F.hs = jwt_secret("HS256 JWT", assert(tp.sign(claims(), assert(tp.keys(slurp(F.hmac))), { alg = "HS256" })))
    local header, payload = segments(F.jwt)
    local sig = tp.b64url_encode(marker("SIGMARK-", 24) .. ("\0"):rep(16))
    F.forged = jwt_secret("forged JWT", header .. "." .. payload .. "." .. sig)
    local none = tp.b64url_encode('{"alg":"none","typ":"JWT"}')
    F.none = jwt_secret("alg none JWT", none .. "." .. payload .. "." .. sig)
    F.bad_b64 = SET:add("JWT with a bad payload", header .. "." .. payload:sub(1, 20) .. "*!" .. payload:sub(21)
      .. "." .. sig)
    F.two_parts = SET:add("JWT without signature", header .. "." .. payload .. sig)
    F.huge = SET:add("oversized token", header .. "." .. payload .. "." .. sig:rep(math.ceil(70000 / #sig)))
    F.rucio = SET:add("Rucio token", "alice-/DC=org/CN=alice-secrets-" .. marker("", 16))
    SET:add("Rucio token (suffix)", F.rucio:sub(-32), { pieces = true })
    local arv_secret = marker("arvmark", 20)
    F.arvados = SET:add("Arvados token", "v2/zzzzz-gj3su-0123456789abcde/" .. arv_secret)
    SET:add("Arvados token (secret)", arv_secret, { pieces = true })
    -- A wrong client secret, with characters every encoding changes.
    F.client_secret = SET:add("client secret", marker("csMARK+/=&% \"") .. "-never", { pieces = true })
    SET:add("the provider's client secret", oidc.client_secret)
    F.client_secret_file = F.keys_dir .. "/client-secret"
    write(F.client_secret_file, F.client_secret)
    F.denylist = F.keys_dir .. "/denylist"
    local dl = assert(tp.denylist(F.denylist))
    assert(dl:add(tp.decode(F.denied).claims.jti, now + 86400))

    -- The peers.
    F.peer = http_peer.start()
    F.idp = oidc.start()
    F.idp_jwt = jwt_secret("provider's JWT", (oidc.client_credentials(F.idp, { resource = "https://rucio.example.org",
      scope = "storage.read:/" })))
    F.opaque = {}
    for i = 1, 4 do
      -- A random base64url token starts with "-" once in 64: on a command
      -- line that reads as an option (the user would write --iss=TOKEN or
      -- put -- first), so the cases below get one that does not.
      local token
      repeat token = (oidc.client_credentials(F.idp)) until token:sub(1, 1) ~= "-"
      F.opaque[i] = SET:add("provider's opaque token " .. i, token, { pieces = true })
    end
    F.closed = "http://127.0.0.1:9"  -- discard: nothing listens
  end)

  teardown(function()
    if F.peer then http_peer.stop(F.peer) end
    if F.idp then oidc.stop(F.idp) end
    for _, dir in ipairs(dirs) do expect.remove_dir(dir) end
  end)

  after_each(function()
    collectgarbage()
  end)

  -- Library calls: { name, call returning what the caller gets, the
  -- expected code ("ok": a result, not a fail triple; "raises": an error
  -- raised) }. Everything returned is walked; raised errors too.
  local LIBRARY = {
    { "decode: tostring of a JWT", function() return tostring(tp.decode(F.jwt)) end, "ok" },
    { "decode: a bad payload", function() return tp.decode(F.bad_b64) end, "malformed" },
    { "decode: two segments", function() return tp.decode(F.two_parts) end, "malformed" },
    { "decode: oversized", function() return tp.decode(F.huge) end, "too_large" },
    { "classify: each kind, printed", function()
      return tostring(tp.classify(F.jwt)), tostring(tp.classify(F.rucio)), tostring(tp.classify(F.arvados)),
        tostring(tp.classify(F.opaque[4]))
    end, "ok" },
    { "verify: valid", function() return tp.verify(F.jwt, tp.keys(slurp(F.pub)), { aud = "rucio" }) end, "ok" },
    { "verify: the wrong key", function() return tp.verify(F.jwt, tp.keys(slurp(F.other))) end, "bad_signature" },
    { "verify: expired", function() return tp.verify(F.expired, tp.keys(slurp(F.pub))) end, "expired" },
    { "verify: forged signature", function() return tp.verify(F.forged, tp.keys(slurp(F.pub))) end,
      "bad_signature" },
    { "verify: alg none", function() return tp.verify(F.none, tp.keys(slurp(F.pub))) end, "alg_not_allowed" },
    { "verify: HS256 not allowed", function() return tp.verify(F.hs, tp.keys(slurp(F.hmac))) end,
      "alg_not_allowed" },
    { "verify: HS256 with the HMAC key", function()
      return tp.verify(F.hs, tp.keys(slurp(F.hmac)), { algs = { "HS256" } })
    end, "ok" },
    { "verify: wrong issuer", function() return tp.verify(F.jwt, tp.keys(slurp(F.pub)), { iss = "x" }) end,
      "bad_issuer" },
    { "verify: malformed", function() return tp.verify(F.bad_b64, tp.keys(slurp(F.pub))) end, "malformed" },
    { "verify: oversized", function() return tp.verify(F.huge, tp.keys(slurp(F.pub))) end, "too_large" },
    { "verify: no key set (misuse)", function() return tp.verify(F.jwt, nil) end, "raises" },
    { "keys: a token is not key material", function() return tp.keys(F.jwt) end, "malformed" },
    { "keys: a private key, printed and listed", function()
      local set = tp.keys(F.other_pem)
      return tostring(set), set:list(), set:kids()
    end, "ok" },
    { "keys: an encrypted private key", function()
      local body = F.other_pem:gsub("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
      return tp.keys(body)
    end, "malformed" },
    { "discover and status: BEARER_TOKEN holding \"Bearer <token>\"", function()
      local env = F.box { env_wlcg = "Bearer " .. F.opaque[4] }
      return tp.discover { env = env }, tp.status { env = env }
    end, "ok" },
    { "keys: the HMAC key set, printed and listed", function()
      local set = tp.keys(slurp(F.hmac))
      return tostring(set), set:list()
    end, "ok" },
    { "keys: an HMAC key too short, with the secret in it", function()
      return tp.keys(tp.json_encode { kty = "oct", k = tp.b64url_encode(F.hmac_k:sub(1, 20)) })
    end, "alg_not_allowed" },
    { "verifier: valid, denylisted, forged, wrong key", function()
      local v = tp.verifier { keys = tp.keys(slurp(F.pub)), denylist = tp.denylist(F.denylist), aud = "rucio" }
      local out = { tostring(v), { v:check(F.jwt) }, { v:check(F.denied) }, { v:check(F.forged) },
                    { v:check(F.none) }, { v:check(F.expired) }, { v:check(F.huge) }, v:stats() }
      return out
    end, "ok" },
    { "denylist: a token file is not a denylist", function()
      -- (with its newline: a last line without one is a torn write,
      -- which the journal ignores)
      local path = new_dir() .. "/token"
      write(path, F.jwt .. "\n")
      return tp.denylist(path)
    end, "malformed" },
    { "read_token: a file others can read", function()
      local path = new_dir() .. "/token"
      write(path, F.jwt, "644")
      local _, info = tp.read_token(path)
      return info
    end, "ok" },
    { "read_token: insecure, refused", function()
      local path = new_dir() .. "/token"
      write(path, F.jwt, "644")
      return tp.read_token(path)
    end, "insecure_permissions" },
    { "write_token: where no directory can be made", function()
      return tp.write_token("/proc/none/token", F.jwt)
    end, "io" },
    { "introspect: an active token at the provider", function()
      return tp.introspect { endpoint = F.idp.introspection_endpoint, token = F.opaque[4],
                             client_id = oidc.client_id, client_secret = oidc.client_secret }
    end, "ok" },
    { "introspect: the wrong client secret", function()
      return tp.introspect { endpoint = F.idp.introspection_endpoint, token = F.opaque[4],
                             client_id = oidc.client_id, client_secret = F.client_secret }
    end, "unauthorized" },
    { "revoke: the wrong client secret", function()
      return tp.revoke { endpoint = F.idp.revocation_endpoint, token = F.opaque[4], client_id = oidc.client_id,
                         client_secret = F.client_secret }
    end, "unauthorized" },
    { "revoke: an unreachable provider", function()
      return tp.revoke { endpoint = F.closed .. "/revoke?token=" .. F.opaque[4], token = F.opaque[4],
                         client_id = oidc.client_id, client_secret = F.client_secret }
    end, "unreachable" },
    { "revoke: a provider echoing the request", function()
      return tp.revoke { endpoint = F.peer.base .. "/echo?form=form", token = F.jwt, client_id = oidc.client_id,
                         client_secret = F.client_secret, auth = "post" }
    end, "http" },
    { "revoke: a control character in the token (misuse)", function()
      return tp.revoke { endpoint = F.idp.revocation_endpoint, token = F.jwt .. "\n" }
    end, "raises" },
    { "fetch_keys: the provider's JWKS, a secret in the query", function()
      return tp.fetch_keys(F.idp.jwks_uri .. "?access_token=" .. F.opaque[4])
    end, "ok" },
    { "fetch_keys: unreachable, a secret in the query", function()
      return tp.fetch_keys(F.closed .. "/jwks?access_token=" .. F.opaque[4])
    end, "unreachable" },
    { "fetch_keys: credentials in the URL", function()
      return tp.fetch_keys("http://alice:" .. F.client_secret .. "@127.0.0.1:" .. F.peer.port .. "/jwks")
    end, "malformed" },
    { "jwks: refresh from an unreachable URI with a secret in the query", function()
      local src = tp.jwks(F.closed .. "/jwks?access_token=" .. F.opaque[4])
      return { tostring(src), { src:refresh { force = true } }, { tp.verify(F.jwt, src) } }
    end, "ok" },
    { "arvados_logout: a peer echoing the token", function()
      return tp.arvados_logout { host = "127.0.0.1:" .. F.peer.port, scheme = "http",
                                 token = "v2/zzzzz-gj3su-0123456789abcde/echo_raw_" .. F.arvados:sub(-40) }
    end, "unauthorized" },
    { "arvados_current: unreachable", function()
      return tp.arvados_current { host = "127.0.0.1:9", scheme = "http", token = F.arvados }
    end, "unreachable" },
    { "status: every token of the sandbox", function()
      local env = F.box { env_wlcg = F.idp_jwt }
      return tp.status { env = env }
    end, "ok" },
    { "logout --all --revoke --denylist, dry run", function()
      local env = F.box { wlcg = F.opaque[1] }
      return tp.logout { env = env, all = true, revoke = true, denylist = F.keys_dir .. "/logout.denylist",
                         dry_run = true }
    end, "ok" },
    { "logout --all --revoke: the provider revokes, JWTs are denylisted", function()
      local env = F.box { wlcg = F.opaque[1] }
      return tp.logout { env = env, all = true, revoke = true, denylist = F.keys_dir .. "/logout.denylist",
                         client_id = oidc.client_id, client_secret = oidc.client_secret, issuer = F.idp.issuer }
    end, "ok" },
    { "logout --revoke: the wrong client secret", function()
      local env = F.box { wlcg = F.opaque[2] }
      return tp.logout { env = env, all = true, revoke = true, client_id = oidc.client_id,
                         client_secret = F.client_secret, issuer = F.idp.issuer, arvados_scheme = "http" }
    end, "ok" },
    { "logout --revoke: an unreachable provider", function()
      local env = F.box { wlcg = F.opaque[2] }
      return tp.logout { env = env, all = true, revoke = true, client_id = oidc.client_id,
                         client_secret = F.client_secret, issuer = F.closed, timeout = 2 }
    end, "ok" },
    { "logout: the denylist path is a directory", function()
      local env = F.box()
      return tp.logout { env = env, all = true, revoke = true, denylist = F.keys_dir }
    end, "io" },
    { "switch_account --persist --logout-previous", function()
      local env = F.box()
      return tp.switch_account { env = env, account = "bob", persist = true, logout_previous = true }
    end, "ok" },
    { "switch_account: rucio.cfg is a token file", function()
      local env, box = F.box()
      write(box .. "/rucio.cfg", F.jwt .. "\n" .. F.rucio .. "\n", "644")
      return tp.switch_account { env = env, account = "bob", persist = true }
    end, "ok" },
    { "migrate on the token caches: check and fix", function()
      local _, box = F.box()
      local store = require("tokenpolicy.store.files") { root = box }
      local migrate = require "tokenpolicy.migrate"
      local policy = tp.policy { max_token_lifetime = 60 }
      local check = migrate.check_long_lived(store, policy)
      local fix = migrate.fix_long_lived(store, policy)
      return check, check and check:lines(), fix, fix and fix:lines()
    end, "ok" },
    { "policy_from_arvados: a config holding the tokens", function()
      local path = new_dir() .. "/config.yml"
      write(path, "Clusters:\n  zzzzz:\n    SystemRootToken: " .. F.arvados:sub(-40) .. "\n    API:\n"
        .. "      MaxTokenLifetime: " .. F.jwt .. "\n")
      return tp.policy_from_arvados(path)
    end, "malformed" },
    { "policy_from_arvados: invalid YAML around a token", function()
      local path = new_dir() .. "/config.yml"
      write(path, "Clusters:\n  zzzzz:\n    SystemRootToken: \"" .. F.arvados:sub(-40) .. "\n   : [\n")
      return tp.policy_from_arvados(path)
    end, "malformed" },
    { "duration: a token given as a duration", function() return tp.duration(F.jwt) end, "malformed" },
    { "duration: an opaque token given as a duration", function() return tp.duration(F.opaque[4]) end, "malformed" },
    { "policy: an opaque token given as a time", function()
      return tp.policy { max_token_lifetime = 60 }:evaluate({ expires_at = F.opaque[4] })
    end, "malformed" },
    { "policy: an opaque token given as now", function()
      return tp.policy { max_token_lifetime = 60 }:evaluate({ expires_at = 1 }, F.opaque[4])
    end, "malformed" },
  }

  -- Commands: { name, the arguments and options of cli(), the exit
  -- status }. The cases are functions of F (made in setup).
  local COMMANDS = {
    { "status", function() return { "status" }, { env = F.box() } end, 1 },
    { "status --json", function() return { "status", "--json" }, { env = F.box { env_wlcg = F.idp_jwt } } end, 1 },
    { "inspect the active token", function() return { "inspect" }, { env = F.box() } end, 0 },
    { "inspect - --json", function() return { "inspect", "-", "--json" }, { stdin = F.jwt } end, 0 },
    { "inspect a Rucio token", function() return { "inspect", "-" }, { stdin = F.rucio } end, 0 },
    { "inspect an Arvados token --json", function() return { "inspect", "-", "--json" }, { stdin = F.arvados } end,
      0 },
    { "inspect a token on the command line", function() return { "inspect", F.opaque[4] } end, 0 },
    { "inspect a malformed JWT", function() return { "inspect", "-" }, { stdin = F.bad_b64 } end, 0 },
    { "inspect an oversized token", function() return { "inspect", "-" }, { stdin = F.huge } end, 0 },
    { "inspect a file others can read", function()
      local path = new_dir() .. "/token"
      write(path, F.jwt, "644")
      return { "inspect", path }
    end, 0 },
    { "inspect: a token with a control character", function()
      return { "inspect", "-" }, { stdin = F.opaque[4] .. "\1" .. F.opaque[4] }
    end, 0 },
    { "inspect: BEARER_TOKEN holding \"Bearer <token>\"", function()
      return { "inspect" }, { env = F.box { env_wlcg = "Bearer " .. F.opaque[4] } }
    end, 0 },
    { "status: BEARER_TOKEN holding \"Bearer <token>\"", function()
      return { "status", "--scheme", "wlcg" }, { env = F.box { env_wlcg = "Bearer " .. F.opaque[4] } }
    end, 1 },
    { "inspect: no active token", function() return { "inspect" }, { env = { HOME = new_dir() } } end, 2 },
    { "verify: valid", function() return { "verify", "-", "--jwks", F.pub }, { stdin = F.jwt } end, 0 },
    { "verify --json: valid", function() return { "verify", "-", "--jwks", F.pub, "--json" }, { stdin = F.jwt } end,
      0 },
    { "verify: the provider's JWT at its JWKS URL", function()
      return { "verify", "-", "--jwks", F.idp.jwks_uri, "--aud", "https://rucio.example.org" }, { stdin = F.idp_jwt }
    end, 0 },
    { "verify: a Rucio token", function() return { "verify", "-", "--jwks", F.pub }, { stdin = F.rucio } end, 1 },
    { "verify: an Arvados token", function() return { "verify", "-", "--jwks", F.pub }, { stdin = F.arvados } end,
      1 },
    { "verify: the wrong key", function() return { "verify", "-", "--jwks", F.other }, { stdin = F.jwt } end, 1 },
    { "verify: expired", function() return { "verify", "-", "--jwks", F.pub, "--json" }, { stdin = F.expired } end,
      1 },
    { "verify: forged", function() return { "verify", "-", "--jwks", F.pub }, { stdin = F.forged } end, 1 },
    { "verify: alg none", function() return { "verify", "-", "--jwks", F.pub }, { stdin = F.none } end, 1 },
    { "verify: malformed", function() return { "verify", "-", "--jwks", F.pub }, { stdin = F.bad_b64 } end, 1 },
    { "verify: two segments", function() return { "verify", F.two_parts, "--jwks", F.pub } end, 1 },
    { "verify: oversized", function() return { "verify", "-", "--jwks", F.pub, "--json" }, { stdin = F.huge } end,
      1 },
    { "verify: HS256 with the HMAC key", function()
      return { "verify", "-", "--jwks", F.hmac, "--alg", "HS256", "--json" }, { stdin = F.hs }
    end, 0 },
    { "verify: the HMAC key, HS256 not allowed", function()
      return { "verify", "-", "--jwks", F.hmac }, { stdin = F.hs }
    end, 1 },
    { "verify: --jwks is a token file", function()
      local path = new_dir() .. "/token"
      assert(tp.write_token(path, F.jwt))
      return { "verify", "-", "--jwks", path }, { stdin = F.jwt }
    end, 2 },
    { "verify: --jwks is the private key", function()
      local path = new_dir() .. "/key.pem"
      write(path, F.other_pem)
      return { "verify", "-", "--jwks", path }, { stdin = F.jwt }
    end, 1 },
    { "verify: an unreachable JWKS URL with a secret in the query", function()
      return { "verify", "-", "--jwks", F.closed .. "/jwks?access_token=" .. F.opaque[4] }, { stdin = F.jwt }
    end, 2 },
    { "verify: the token in the wrong place (--iss)", function()
      return { "verify", "-", "--jwks", F.pub, "--iss", F.opaque[4] }, { stdin = F.jwt }
    end, 1 },
    { "verify: a bad --leeway", function()
      return { "verify", "-", "--jwks", F.pub, "--leeway", F.opaque[4] }, { stdin = F.jwt }
    end, 2 },
    { "verify: a token as an unknown option", function()
      return { "verify", "--" .. F.opaque[4], "--jwks", F.pub }
    end, 2 },
    { "verify: too many arguments", function()
      return { "verify", F.jwt, F.opaque[4], "--jwks", F.pub }
    end, 2 },
    { "revoke at the provider (secret file)", function()
      return { "revoke", "-", "--issuer", F.idp.issuer, "--client-id", oidc.client_id, "--client-secret-file",
               F.good_secret_file() }, { stdin = F.opaque[3] }
    end, 0 },
    { "revoke --json at the endpoint (secret in the environment)", function()
      return { "revoke", "-", "--endpoint", F.idp.revocation_endpoint, "--json" },
        { stdin = F.opaque[3], env = { TOKENPOLICY_CLIENT_ID = oidc.client_id,
                                       TOKENPOLICY_CLIENT_SECRET = oidc.client_secret } }
    end, 0 },
    { "revoke: the wrong client secret", function()
      return { "revoke", "-", "--endpoint", F.idp.revocation_endpoint, "--client-id", oidc.client_id,
               "--client-secret-file", F.client_secret_file }, { stdin = F.opaque[4] }
    end, 1 },
    { "revoke --json: the wrong client secret in the environment", function()
      return { "revoke", "-", "--issuer", F.idp.issuer, "--json" },
        { stdin = F.opaque[4], env = { TOKENPOLICY_CLIENT_ID = oidc.client_id,
                                       TOKENPOLICY_CLIENT_SECRET = F.client_secret } }
    end, 1 },
    { "revoke: an unreachable provider", function()
      return { "revoke", "-", "--issuer", F.closed }, { stdin = F.opaque[4],
        env = { TOKENPOLICY_CLIENT_SECRET = F.client_secret } }
    end, 1 },
    { "revoke: a provider echoing the token", function()
      return { "revoke", "-", "--endpoint", F.peer.base .. "/revoke-400" }, { stdin = F.opaque[4],
        env = { TOKENPOLICY_CLIENT_SECRET = F.client_secret, TOKENPOLICY_CLIENT_ID = "cli" } }
    end, 1 },
    { "revoke: a provider echoing the client secret", function()
      return { "revoke", "-", "--endpoint", F.peer.base .. "/echo?of=secret&form=b64", "--json" },
        { stdin = F.opaque[4], env = { TOKENPOLICY_CLIENT_SECRET = F.client_secret,
                                       TOKENPOLICY_CLIENT_ID = "cli" } }
    end, 1 },
    { "revoke: an Arvados token", function() return { "revoke", "-" }, { stdin = F.arvados } end, 2 },
    { "revoke: the secret file others can read", function()
      local path = new_dir() .. "/secret"
      write(path, F.client_secret, "644")
      return { "revoke", "-", "--endpoint", F.idp.revocation_endpoint, "--client-secret-file", path },
        { stdin = F.opaque[4] }
    end, 2 },
    { "revoke: the JWT names an issuer that is not reachable", function()
      return { "revoke", "-" }, { stdin = F.jwt }
    end, 1 },
    { "logout --dry-run --json", function() return { "logout", "--all", "--dry-run", "--json" }, { env = F.box() } end,
      0 },
    { "logout --all", function() return { "logout", "--all" }, { env = F.box() } end, 0 },
    { "logout --all --revoke --denylist", function()
      return { "logout", "--all", "--revoke", "--denylist", F.keys_dir .. "/cli.denylist", "--json" },
        { env = F.box { wlcg = F.opaque[1] } }
    end, 1 },
    { "logout --revoke: the wrong client secret", function()
      return { "logout", "--scheme", "wlcg", "--revoke" },
        { env = F.box { wlcg = F.opaque[2], client_secret = F.client_secret } }
    end, 1 },
    { "logout --revoke: an unreachable provider", function()
      local env = F.box { wlcg = F.opaque[2], client_secret = F.client_secret }
      env.TOKENPOLICY_ISSUER = F.closed
      return { "logout", "--scheme", "wlcg", "--revoke", "--json" }, { env = env }
    end, 1 },
    { "logout --revoke: the denylist is a token file", function()
      local path = new_dir() .. "/token"
      write(path, F.jwt .. "\n")
      return { "logout", "--all", "--revoke", "--denylist", path }, { env = F.box() }
    end, 2 },
    { "logout: a token in the environment", function()
      return { "logout", "--scheme", "wlcg" }, { env = F.box { env_wlcg = F.opaque[4] } }
    end, 1 },
    { "switch --persist --logout-previous", function()
      return { "switch", "bob", "--persist", "--logout-previous" }, { env = F.box() }
    end, 0 },
    { "switch --json", function() return { "switch", "bob", "--json" }, { env = F.box() } end, 0 },
    { "switch: rucio.cfg is a token file", function()
      local env, box = F.box()
      write(box .. "/rucio.cfg", F.jwt .. "\n" .. F.rucio .. "\n", "644")
      return { "switch", "bob", "--persist" }, { env = env }
    end, 0 },
    { "check-long-lived --files", function()
      local _, box = F.box()
      return { "check-long-lived", "--files", box, "--max-token-lifetime", "1m", "--json" }
    end, 1 },
    { "fix-long-lived --files", function()
      local _, box = F.box()
      return { "fix-long-lived", "--files", box, "--max-token-lifetime", "1m" }
    end, 0 },
    { "check-long-lived --records holding tokens", function()
      local path = new_dir() .. "/records.json"
      write(path, tp.json_encode { { id = 1, user_id = 1, api_token = F.arvados, expires_at = tp.null,
        owner_uuid = "zzzzz-tpzed-aaaaaaaaaaaaaaa", user = { username = "a", uuid = "zzzzz-tpzed-aaaaaaaaaaaaaaa" } } })
      return { "check-long-lived", "--records", path, "--max-token-lifetime", "1h", "--json" }
    end, 1 },
    { "check-long-lived --records is a token file", function()
      local path = new_dir() .. "/token"
      assert(tp.write_token(path, F.jwt))
      return { "check-long-lived", "--records", path, "--max-token-lifetime", "1h" }
    end, 2 },
    { "check-long-lived --config is a token file", function()
      local path = new_dir() .. "/token"
      assert(tp.write_token(path, F.jwt))
      return { "check-long-lived", "--config", path }
    end, 2 },
    { "check-long-lived: a token as --max-token-lifetime", function()
      return { "check-long-lived", "--records", F.pub, "--max-token-lifetime", F.jwt }
    end, 2 },
    { "check-long-lived: an opaque token as --max-token-lifetime", function()
      return { "check-long-lived", "--records", F.pub, "--max-token-lifetime", F.opaque[4] }
    end, 2 },
    { "check-long-lived: a token as --now", function()
      return { "check-long-lived", "--records", F.pub, "--max-token-lifetime", "1h", "--now", F.opaque[4] }
    end, 2 },
    { "deny a jti", function()
      return { "deny", "jti-secrets-cli", "--exp", "+1h", "--denylist", F.keys_dir .. "/deny.list", "--json" }
    end, 0 },
    { "deny: a token as --exp", function()
      return { "deny", "jti-secrets-cli", "--exp", F.opaque[4], "--denylist", F.keys_dir .. "/deny.list" }
    end, 2 },
    { "deny: a token as the duration of --exp", function()
      return { "deny", "jti-secrets-cli", "--exp", "+" .. F.opaque[4], "--denylist", F.keys_dir .. "/deny.list" }
    end, 2 },
    { "deny: the denylist is a token file", function()
      local path = new_dir() .. "/token"
      write(path, F.jwt .. "\n")
      return { "deny", "jti-secrets-cli", "--exp", "+1h", "--denylist", path }
    end, 2 },
    { "denylist count, contains, purge", function()
      return { "denylist", "contains", "jti-secrets-cli", "--denylist", F.keys_dir .. "/deny.list" }
    end, 0 },
    { "denylist: a token as --at", function()
      return { "denylist", "purge", "--at", F.opaque[4], "--denylist", F.keys_dir .. "/deny.list" }
    end, 2 },
    { "help revoke", function() return { "help", "revoke" } end, 0 },
    { "--version", function() return { "--version" } end, 0 },
    { "an unknown command that is a token", function() return { F.opaque[4] } end, 2 },
  }

  -- A client secret file holding the provider's real secret.
  function F.good_secret_file()
    local path = new_dir() .. "/secret"
    write(path, oidc.client_secret)
    return path
  end

  it("knows every secret in every form", function()
    local function found(text)
      local name, form = SET:find(text)
      return { name, form }
    end
    assert.is_true(SET:count() >= 30, SET:count())
    -- A secret in the middle of a text, base64-encoded at each alignment,
    -- is found: the form a careless encoder of a whole message would give.
    for k = 0, 2 do
      local text = tp.b64url_encode(("x"):rep(k + 5) .. "alg " .. F.jwt .. " tail")
      assert.is_not_nil((SET:find(text)), k)
    end
    assert.are.equal("Rucio token", (SET:find(tp.json_encode { message = F.rucio })))
    local pct = F.client_secret:gsub("[^%w%-%._~]", function(c) return ("%%%02x"):format(c:byte()) end)
    assert.are.same({ "client secret", "percent-encoded (lower case)" }, found("secret=" .. pct .. "&a=b"))
    assert.are.same({ "client secret", "JSON-escaped" },
      found(tp.json_encode { F.client_secret }))
  end)

  it("docs/security.md names only specs and describe blocks that exist", function()
    local doc = slurp("docs/security.md")
    local checked = 0
    for file, rest in doc:gmatch("`(spec/[%w%-_]+_spec%.lua)([^`]*)`") do
      local f = io.open(file, "r")
      if f then  -- specs other branches are adding are checked once merged
        local text = f:read("a")
        f:close()
        -- split at " › " (plain find: the separator is several bytes)
        local parts, at = {}, 1
        rest = rest:gsub("%s+", " ") .. " › "
        while true do
          local i, j = rest:find(" › ", at, true)
          if not i then break end
          parts[#parts + 1] = rest:sub(at, i - 1)
          at = j + 1
        end
        for k = 2, #parts do
          local segment = parts[k]:gsub("%s+", " ")
          if not segment:find("…", 1, true) then
            assert.is_truthy(text:find('"' .. segment .. '"', 1, true), file .. " has no " .. segment)
            checked = checked + 1
          end
        end
      end
    end
    assert.is_true(checked >= 40, checked)
  end)

  describe("library calls: no returned value, error or printed form holds a secret", function()
    for _, case in ipairs(LIBRARY) do
      local name, call, want = case[1], case[2], case[3]
      it(("%s (%s)"):format(name, want), function()
        local results = table.pack(pcall(call))
        if want == "raises" then
          assert.is_false(results[1], "it did not raise")
        else
          assert.is_true(results[1], results[2])
          if want == "ok" then
            assert.is_not_nil(results[2], results[3])
          else
            expect.fails(want, table.unpack(results, 2, results.n))
          end
        end
        local texts = secrets.texts(table.unpack(results, 2, results.n))
        assert_clean(name, table.concat(texts, "\n"))
      end)
    end
  end)

  describe("bin/tokenpolicy: nothing on stdout or stderr holds a secret", function()
    for _, case in ipairs(COMMANDS) do
      local name, make, want = case[1], case[2], case[3]
      it(("%s (exit %d)"):format(name, want), function()
        local args, opts = make()
        local r = cli(args, opts)
        assert.are.equal(want, r.code, r.out .. r.err)
        assert_clean(name .. ": stdout", r.out)
        assert_clean(name .. ": stderr", r.err)
      end)
    end
  end)

  describe("on PostgreSQL with password authentication", function()
    local pg, box, password, conninfo

    -- Arvados' config.yml naming the database and the policy.
    local function config(pass)
      local path = box .. "/config.yml"
      write(path, ("Clusters:\n  zzzzz:\n    API:\n      MaxTokenLifetime: 1h\n    PostgreSQL:\n      Connection:\n"
        .. "        host: %q\n        dbname: arvados\n        user: arv\n        password: %q\n"):format(pg.dir, pass))
      return path
    end

    setup(function()
      box = new_dir()
      password = SET:add("database password", marker("pgMARK+/=&.", 10), { pieces = true })
      pg = postgres.new()
      pg:create_arvados()
      pg:psql(("CREATE ROLE arv LOGIN PASSWORD '%s'; GRANT ALL ON ALL TABLES IN SCHEMA public TO arv;"
        .. " GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO arv;"):format(password))
      -- The tokens in the table are secrets too: no line may show one.
      local rows = { "INSERT INTO users (id, uuid, owner_uuid, email, username, created_at, updated_at) VALUES"
        .. " (1, 'zzzzz-tpzed-aaaaaaaaaaaaaaa', 'zzzzz-tpzed-000000000000000', 'a@example.org', 'alice',"
        .. " '2020-01-01', '2020-01-01');" }
      for i = 1, 3 do
        local token = SET:add("api_token " .. i, marker("apiMARK", 20), { pieces = true })
        rows[#rows + 1] = ("INSERT INTO api_client_authorizations (id, api_token, user_id, expires_at, created_at,"
          .. " updated_at, uuid) VALUES (%d, '%s', %d, NULL, '2020-01-01', '2020-01-01', 'zzzzz-gj3su-%015d');")
          :format(i, token, i == 3 and 42 or 1, i)
      end
      pg:psql(table.concat(rows, "\n"))
      -- Password (SCRAM) authentication for arv; trust stays for the
      -- helper's superuser.
      local hba = pg.dir .. "/data/pg_hba.conf"
      local text = slurp(hba)
      local f = assert(io.open(hba, "w"))
      f:write("local all arv scram-sha-256\n", text)
      f:close()
      pg:psql("SELECT pg_reload_conf();", "postgres")
      conninfo = ("host=%s dbname=arvados user=arv password='%s'"):format(pg.dir, password)
    end)

    teardown(function()
      if pg then pg:stop() end
    end)

    it("the store's results, printed and walked", function()
      local store = assert(require("tokenpolicy.store.arvados_pg") { conninfo = conninfo })
      local migrate = require "tokenpolicy.migrate"
      local policy = tp.policy { max_token_lifetime = 3600 }
      local check = assert(migrate.check_long_lived(store, policy))
      local fix = assert(migrate.fix_long_lived(store, policy, { dry_run = true }))
      local texts = secrets.texts(store, check, check:lines(), fix, fix:lines())
      store:close()
      assert.are.same({ 2, 1 }, { check.tokens, #check.warnings })
      assert_clean("check and fix", table.concat(texts, "\n"))
    end)
    local PG = {
      { "check-long-lived --db", function()
        return { "check-long-lived", "--db", conninfo, "--max-token-lifetime", "1h" }
      end, 1 },
      { "check-long-lived --db --json", function()
        return { "check-long-lived", "--db", conninfo, "--max-token-lifetime", "1h", "--json" }
      end, 1 },
      { "check-long-lived --config", function() return { "check-long-lived", "--config", config(password) } end, 1 },
      { "fix-long-lived --config --dry-run", function()
        return { "fix-long-lived", "--config", config(password), "--dry-run", "--json" }
      end, 0 },
      { "check-long-lived --db: the wrong password", function()
        return { "check-long-lived", "--db", conninfo:gsub("pgMARK", "pgWRONG"), "--max-token-lifetime", "1h" }
      end, 2 },
      { "check-long-lived --config: the wrong password", function()
        return { "check-long-lived", "--config", config(password:gsub("pgMARK", "pgWRONG")) }
      end, 2 },
      { "check-long-lived --db: a malformed connection string", function()
        return { "check-long-lived", "--db", conninfo .. " sslmode", "--max-token-lifetime", "1h" }
      end, 2 },
      { "check-long-lived --db: an unknown setting", function()
        return { "check-long-lived", "--db", "secret=" .. password .. " " .. conninfo, "--max-token-lifetime", "1h" }
      end, 2 },
      { "check-long-lived --db: no server there", function()
        return { "check-long-lived", "--db", conninfo:gsub("host=%S+", "host=/nonexistent"),
                 "--max-token-lifetime", "1h" }
      end, 2 },
      { "fix-long-lived --db", function()
        return { "fix-long-lived", "--db", conninfo, "--max-token-lifetime", "1h", "--json" }
      end, 0 },
    }
    for _, case in ipairs(PG) do
      local name, make, want = case[1], case[2], case[3]
      it(("%s (exit %d)"):format(name, want), function()
        local r = cli(make())
        assert.are.equal(want, r.code, r.out .. r.err)
        assert_clean(name .. ": stdout", r.out)
        assert_clean(name .. ": stderr", r.err)
      end)
    end


    -- Not a secret, but the same peer: the store binds every value (the
    -- threat model's SQL injection row, docs/security.md).
    it("values that look like SQL stay data: printed back as they are, nothing run", function()
      local name = "x'); DROP TABLE users; --"
      pg:psql(("INSERT INTO users (id, uuid, owner_uuid, email, username, created_at, updated_at) VALUES"
        .. " (7, 'zzzzz-tpzed-%%_''%%', 'zzzzz-tpzed-000000000000000', '%%''; --', '%s', '2020-01-01',"
        .. " '2020-01-01'); INSERT INTO api_client_authorizations (id, api_token, user_id, expires_at, created_at,"
        .. " updated_at, uuid) VALUES (7, 'x', 7, NULL, '2020-01-01', '2020-01-01', 'zzzzz-gj3su-7');")
        :format(name:gsub("'", "''")))
      local r = cli { "check-long-lived", "--db", conninfo, "--max-token-lifetime", "1h" }
      assert.are.equal(1, r.code, r.err)
      assert.matches("\n" .. (name .. ",%'; --,zzzzz-tpzed-%_'%"):gsub("%p", "%%%0") .. "\n", r.out)
      assert.are.equal("2\n", pg:psql("SELECT count(*) FROM users;"))
    end)
  end)

  describe("in HAProxy", function()
    local h, dir, example
    local STATUS_LINE = "tp.ok=%[var(txn.tp.ok)] tp.code=%[var(txn.tp.code)] tp.sub=%[var(txn.tp.sub)]"
      .. " tp.scope=%[var(txn.tp.scope)] tp.jti=%[var(txn.tp.jti)] tp.exp=%[var(txn.tp.exp)]"

    -- The example configuration logging every request to stderr (HAProxy's
    -- output file), with the transaction's variables the action sets.
    local function logging_example()
      local text = haproxy.config()
      text = text:gsub("\nglobal\n", "\nglobal\n    log stderr format raw local0 info\n", 1)
      text = text:gsub("\ndefaults\n", "\ndefaults\n    log global\n    log-format \"%%ST %%{+Q}r "
        .. STATUS_LINE:gsub("%%", "%%%%") .. "\"\n", 1)
      local path = F.keys_dir .. "/haproxy-logging.cfg"
      write(path, text, "644")
      return path
    end

    -- Starts HAProxy with the given settings on top of the issuer's key file.
    local function start(settings)
      dir = haproxy.sandbox()
      local all = { KEYS_FILE = dir .. "/keys.pem", ISS = ISS, AUD = "rucio", ALGS = "ES256,HS256",
                    DENYLIST = dir .. "/denylist", RELOAD_EVERY = "1", MIN_REFETCH = "1",
                    MAX_TOKEN_LIFETIME = "48h" }
      for k, v in pairs(settings or {}) do all[k] = v ~= false and v or nil end
      write(dir .. "/keys.pem", slurp(F.pub), "644")
      write(dir .. "/denylist", slurp(F.denylist), "644")
      return haproxy.start { dir = dir, settings = all }
    end

    setup(function()
      example = haproxy.example
      haproxy.example = logging_example()
      F.other_signed = jwt_secret("JWT of another key", assert(tp.sign({ iss = ISS, sub = "mallory", aud = "rucio",
        exp = os.time() + 600, jti = marker("jti-", 6) }, assert(tp.keys(F.other_pem, { kid = "secrets-1" })))))
    end)

    teardown(function()
      haproxy.example = example
      haproxy.stop(h)
    end)

    -- { name, Authorization header (nil: none), status }
    local REQUESTS = {
      { "a valid token", function() return "Bearer " .. F.jwt end, 200 },
      { "an expired token", function() return "Bearer " .. F.expired end, 401 },
      { "a forged signature", function() return "Bearer " .. F.forged end, 401 },
      { "alg none", function() return "Bearer " .. F.none end, 401 },
      { "a bad payload", function() return "Bearer " .. F.bad_b64 end, 401 },
      { "two segments", function() return "Bearer " .. F.two_parts end, 401 },
      { "another key's token", function() return "Bearer " .. F.other_signed end, 401 },
      { "a denylisted token", function() return "Bearer " .. F.denied end, 401 },
      { "an HS256 token with no HMAC key", function() return "Bearer " .. F.hs end, 401 },
      { "an opaque token", function() return "Bearer " .. F.opaque[4] end, 401 },
      { "a Rucio token", function() return "Bearer " .. F.rucio end, 401 },
      { "another scheme", function() return "Basic " .. F.opaque[4] end, 401 },
      { "a token with 12,000 bytes appended", function() return "Bearer " .. F.jwt .. ("A"):rep(12000) end, 401 },
      { "no token", function() return nil end, 401 },
    }

    it("no answer, header, variable or log line holds a secret", function()
      -- The policy from an Arvados config whose SystemRootToken draws a
      -- warning into the log at load.
      local root_token = SET:add("SystemRootToken", marker("rootMARK", 6), { pieces = true })
      local config = F.keys_dir .. "/arvados.yml"
      write(config, "Clusters:\n  zzzzz:\n    SystemRootToken: " .. root_token .. "\n    API:\n"
        .. "      MaxTokenLifetime: 48h\n", "644")
      h = start { ARVADOS_CONFIG = config }
      assert.are.equal(1, haproxy.count(h, "SystemRootToken: shorter than 32 characters"))
      for _, req in ipairs(REQUESTS) do
        local value = req[2]()
        local status, headers, body = haproxy.get(h, { authorization = value })
        assert.are.equal(req[3], status, req[1])
        assert_clean(req[1] .. ": the answer", body .. "\n" .. table.concat(secrets.texts(headers), "\n"))
      end
      -- Every request was logged, with the variables the action set.
      -- (and the helper's probe when it started)
      haproxy.wait_for("the log lines", function()
        return haproxy.count(h, " tp.ok=0 ") + haproxy.count(h, " tp.ok=1 ") == #REQUESTS + 1
      end)
      assert.are.equal(1, haproxy.count(h, "tp.ok=1 tp.code=- tp.sub=alice tp.scope=read"))
      assert.are.equal(1, haproxy.count(h, "tp.code=revoked"))
      assert_clean("HAProxy's log", haproxy.output(h))
    end)

    it("a key file replaced by secrets is reported without them; the old keys stay", function()
      write(dir .. "/keys.pem", F.jwt .. "\n" .. slurp(F.hmac) .. "\n")
      haproxy.wait_for("the warning", function()
        return haproxy.count(h, "keeping the previous keys") > 0
      end)
      assert.are.equal(200, (haproxy.get(h, { authorization = "Bearer " .. F.jwt })))
      write(dir .. "/keys.pem", F.client_secret)
      haproxy.wait_for("the second warning", function()
        return haproxy.count(h, "keeping the previous keys") > 1
      end)
      assert_clean("HAProxy's log", haproxy.output(h))
      haproxy.stop(h)
    end)

    it("a JWKS URI with a secret in its query, reachable or not, is logged without it", function()
      h = start { KEYS_FILE = false, JWKS_URI = F.idp.jwks_uri .. "?access_token=" .. F.opaque[4] }
      assert.are.equal(401, (haproxy.get(h, { authorization = "Bearer " .. F.jwt })))
      local ok_output = haproxy.output(h)
      assert.matches("jwks_uri " .. F.idp.jwks_uri:gsub("%p", "%%%0") .. ": 1 keys in use", ok_output)
      haproxy.stop(h)
      h = start { KEYS_FILE = false, JWKS_URI = F.closed .. "/jwks?access_token=" .. F.opaque[4] }
      assert.are.equal(401, (haproxy.get(h, { authorization = "Bearer " .. F.jwt })))
      haproxy.wait_for("the warning", function()
        return haproxy.count(h, "unreachable") > 0
      end)
      -- HAProxy's own httpclient logs the request line it sent, query
      -- included: its log line is HAProxy's, not tokenpolicy's (a JWKS URI
      -- is public; docs/security.md leaves credentials in it to the operator).
      local httpclient = "\n[^\n]*<HTTPCLIENT>[^\n]*"
      assert.matches(httpclient, ok_output)
      assert_clean("HAProxy's log (reachable)", (ok_output:gsub(httpclient, "")))
      assert_clean("HAProxy's log (unreachable)", (haproxy.output(h):gsub(httpclient, "")))
    end)
  end)
end)
