-- The `tokenpolicy` command (bin/tokenpolicy, tokenpolicy.cli), run as a
-- subprocess with an explicit environment (`env -i`): what it prints on
-- stdout and stderr, its exit status, and its --json parsed back. Every
-- path is in a sandbox directory; no run may print the token it was given.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"
local oidc = require "helpers.oidc"

local LUA = "lua" .. _VERSION:match("%d+%.%d+")
local BUILD = os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. _VERSION:match("%d+%.%d+"))

local quote, slurp = expect.quote, expect.read_file

local function write(path, text, mode)
  expect.write_file(path, text)
  assert(os.execute("chmod " .. (mode or "600") .. " " .. quote(path)))
end

-- What every run gets: the Lua under test and its build, a PATH, and the
-- sanitizer settings of `make asan` (the child is checked as well).
local function base_env()
  local env = { PATH = "/usr/bin:/bin", TOKENPOLICY_LUA = LUA, TOKENPOLICY_BUILD = BUILD }
  for _, name in ipairs { "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" } do
    env[name] = os.getenv(name)
  end
  return env
end

-- Every token a spec hands to the command, so that each run can check that
-- none of them comes back in its output.
local secrets = {}

--- Runs bin/tokenpolicy with `args` (a list) and returns
-- `{ code=, out=, err= }`. `opts.env` adds variables to the sandboxed
-- environment; `opts.stdin` is the text on stdin (default: none).
local function run(args, opts)
  opts = opts or {}
  local env = base_env()
  for k, v in pairs(opts.env or {}) do env[k] = v end
  for _, k in ipairs(opts.unset or {}) do env[k] = nil end
  local words = { "env", "-i" }
  local names = {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do words[#words + 1] = quote(k .. "=" .. env[k]) end
  -- opts.bare: args is the whole command line (a shell that runs the command)
  if not opts.bare then words[#words + 1] = opts.bin or "bin/tokenpolicy" end
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  local out, err, input = os.tmpname(), os.tmpname(), os.tmpname()
  write(input, opts.stdin or "")
  local cmd = table.concat(words, " ") .. " <" .. input .. " >" .. out .. " 2>" .. err
  local _, _, code = os.execute(cmd)
  local result = { code = code, out = slurp(out), err = slurp(err) }
  os.remove(out)
  os.remove(err)
  os.remove(input)
  for _, secret in ipairs(secrets) do
    assert.is_nil(result.out:find(secret, 1, true), "a token on stdout")
    assert.is_nil(result.err:find(secret, 1, true), "a token on stderr")
    -- nor its signature alone
    local signature = secret:match("%.([^.]+)$")
    if signature and #signature > 16 then
      assert.is_nil((result.out .. result.err):find(signature, 1, true), "a signature in the output")
    end
  end
  return result
end

local function secret(token)
  secrets[#secrets + 1] = token
  return token
end

-- One line on stderr, nothing on stdout, exit 2.
local function usage_error(r, line)
  assert.are.same({ code = 2, out = "", err = line .. "\n" }, r)
end

describe("the tokenpolicy command", function()
  local dir, key, pub_path, now
  local good, expired, good_path

  setup(function()
    dir = expect.new_dir()
    local pipe = assert(io.popen("env -u LD_PRELOAD openssl genpkey -algorithm EC "
      .. "-pkeyopt ec_paramgen_curve:P-256 2>/dev/null"))
    local pem = pipe:read("a")
    pipe:close()
    key = assert(tp.keys(pem, { kid = "cli-1" }))
    -- the public half, as a PEM file
    pipe = assert(io.popen("env -u LD_PRELOAD openssl pkey -pubout 2>/dev/null <<'EOF'\n" .. pem .. "EOF"))
    local pub = pipe:read("a")
    pipe:close()
    pub_path = dir .. "/keys.pem"
    write(pub_path, pub, "644")
    now = os.time()
    -- Times far enough from now that the relative times do not change
    -- while a spec runs ("expires in 2d23h", "expired 2h ago").
    good = secret(assert(tp.sign({ iss = "https://idp.example.org", sub = "alice", aud = "rucio",
      iat = now - 2 * 86400, exp = now + 3 * 86400 - 1800, jti = "cli-0001" }, key)))
    expired = secret(assert(tp.sign({ iss = "https://idp.example.org", sub = "bob",
      iat = now - 4 * 86400, exp = now - 3 * 86400 + 1800 }, key)))
    good_path = dir .. "/token"
    write(good_path, good .. "\n")
  end)
  teardown(function()
    expect.remove_dir(dir)
  end)
  after_each(function()
    collectgarbage()
  end)

  describe("help", function()
    it("--help lists every command and exits 0", function()
      local r = run { "--help" }
      assert.are.equal(0, r.code)
      assert.are.equal("", r.err)
      assert.matches("^Usage: tokenpolicy", r.out)
      for _, name in ipairs { "status", "inspect", "verify", "logout", "switch", "revoke", "deny", "denylist",
                              "help" } do
        assert.matches("\n   " .. name .. " ", r.out, 1, true)
      end
      assert.matches("Exit status: 0 fine, 1 a finding", r.out, 1, true)
    end)

    it("with no command prints the same help", function()
      assert.are.same(run { "--help" }, run {})
    end)

    it("--version prints the library's version", function()
      assert.are.same({ code = 0, out = tp._VERSION .. "\n", err = "" }, run { "--version" })
    end)

    it("--help on every command shows examples; help COMMAND prints the same", function()
      for _, name in ipairs { "status", "inspect", "verify", "logout", "switch", "revoke", "deny", "denylist",
                              "help" } do
        local r = run { name, "--help" }
        assert.are.equal(0, r.code, name)
        assert.matches("^Usage: tokenpolicy " .. name, r.out)
        assert.matches("\nExamples:\n  [^\n]*tokenpolicy " .. name, r.out)
        assert.are.same(r, run { "help", name })
      end
    end)

    it("recommends - over a token on the command line, which shows in ps", function()
      for _, name in ipairs { "inspect", "verify", "revoke" } do
        local text = run({ name, "--help" }).out:gsub("%s+", " ")
        assert.matches("- to read the token from stdin, or the token itself (avoid that: a command line shows in ps)",
          text, 1, true)
      end
    end)
  end)

  describe("the launcher", function()
    it("installed (no lua/ beside it), runs the modules on the interpreter's paths", function()
      os.execute("mkdir -p " .. quote(dir .. "/usr/bin") .. " && cp bin/tokenpolicy " .. quote(dir .. "/usr/bin/"))
      local cwd = assert(tp.cwd())
      local r = run({ "--version" }, { bin = dir .. "/usr/bin/tokenpolicy", unset = { "TOKENPOLICY_BUILD" },
        env = { LUA_PATH = cwd .. "/lua/?.lua;" .. cwd .. "/lua/?/init.lua;;", LUA_CPATH = cwd .. "/" .. BUILD
        .. "/?.so;;" } })
      assert.are.same({ code = 0, out = tp._VERSION .. "\n", err = "" }, r)
    end)

    it("in a checkout that is not built, says to run make (exit 2)", function()
      local root = dir .. "/checkout"
      os.execute("mkdir -p " .. quote(root .. "/bin") .. " " .. quote(root .. "/lua/tokenpolicy")
        .. " && cp bin/tokenpolicy " .. quote(root .. "/bin/")
        .. " && touch " .. quote(root .. "/lua/tokenpolicy/cli.lua"))
      local r = run({ "status" }, { bin = root .. "/bin/tokenpolicy", unset = { "TOKENPOLICY_BUILD" } })
      assert.are.same({ code = 2, out = "", err = ("tokenpolicy: the C core is not built (%s/bin/../build/%s/"
        .. "tokenpolicy/core.so); run make in %s/bin/..\n"):format(root, LUA:sub(4), root) }, r)
    end)
  end)

  describe("usage errors exit 2 with one line saying what to do", function()
    local cases = {
      { { "verify", "--bogus" }, "tokenpolicy: unknown option '--bogus'; see 'tokenpolicy verify --help'" },
      { { "frob" }, "tokenpolicy: unknown command 'frob'; see 'tokenpolicy --help'" },
      { { "verify", "-" }, "tokenpolicy: missing option '--jwks'; see 'tokenpolicy verify --help'" },
      { { "logout", "--all", "--account", "a" },
        "tokenpolicy: option '--account' can not be used together with option '--all'; "
        .. "see 'tokenpolicy logout --help'" },
      { { "status", "--scheme", "kerberos" },
        "tokenpolicy: argument for option '--scheme' must be one of 'rucio', 'wlcg', 'arvados'; "
        .. "see 'tokenpolicy status --help'" },
      { { "help", "frob" },
        "tokenpolicy: argument 'name' must be one of 'status', 'inspect', 'verify', 'logout', 'switch', "
        .. "'revoke', 'deny', 'denylist', 'check-long-lived', 'fix-long-lived', 'help'; "
        .. "see 'tokenpolicy help --help'" },
      { { "verify", "-", "--jwks", "x", "--leeway", "soon" },
        "tokenpolicy: --leeway must be a number of seconds; see 'tokenpolicy verify --help'" },
      -- an empty value is never a path, URL, account or token (the fuzzer
      -- found `verify --jwks ''` gave "internal error")
      { { "verify", "--jwks", "", "--alg", "HS256", "x" },
        "tokenpolicy: --jwks needs a value, not an empty string; see 'tokenpolicy verify --help'" },
      { { "verify", "--jwks=", "x" },
        "tokenpolicy: --jwks needs a value, not an empty string; see 'tokenpolicy verify --help'" },
      { { "status", "--account", "" },
        "tokenpolicy: --account needs a value, not an empty string; see 'tokenpolicy status --help'" },
      { { "inspect", "" }, "tokenpolicy: the token is an empty string; see 'tokenpolicy inspect --help'" },
      { { "deny", "", "--exp", "+1h", "--denylist", "x" },
        "tokenpolicy: the jti is an empty string; see 'tokenpolicy deny --help'" },
    }
    for _, case in ipairs(cases) do
      it(table.concat(case[1], " "), function()
        usage_error(run(case[1]), case[2])
      end)
    end

    it("a token file that does not exist", function()
      usage_error(run { "inspect", dir .. "/missing" },
        "tokenpolicy: no such token file " .. dir .. "/missing; give an existing file, or - to read the token "
        .. "from stdin")
    end)

    it("nothing on stdin", function()
      usage_error(run { "inspect", "-" },
        "tokenpolicy: no token on stdin; pipe one in, e.g. tokenpolicy inspect - <file")
    end)
  end)

  describe("inspect", function()
    it("shows every claim of a token file with UTC and relative times", function()
      local r = run { "inspect", good_path }
      assert.are.equal(0, r.code, r.err)
      assert.are.equal(tostring(tp.decode(good)) .. "\n", r.out)
      assert.are.equal("token from " .. good_path .. "\n", r.err)
      assert.matches("  exp    " .. os.date("!%Y-%m-%d %H:%M:%S", now + 3 * 86400 - 1800) .. " UTC (expires in 2d",
        r.out, 1, true)
    end)

    it("reads the token from stdin with -", function()
      local r = run({ "inspect", "-" }, { stdin = good .. "\n" })
      assert.are.same({ code = 0, out = tostring(tp.decode(good)) .. "\n", err = "token from stdin\n" }, r)
    end)

    it("accepts the token itself as the argument", function()
      local r = run { "inspect", expired }
      assert.are.equal(0, r.code)
      assert.are.equal(tostring(tp.decode(expired)) .. "\n", r.out)
      assert.matches("(expired 2d23h ago)", r.out, 1, true)
      assert.are.equal("token from the command line\n", r.err)
    end)

    it("--json prints header, claims and kind", function()
      local r = run({ "inspect", "-", "--json" }, { stdin = good })
      assert.are.equal(0, r.code)
      local doc = assert(tp.json_decode(r.out))
      local jwt = tp.decode(good)
      assert.are.same({ header = jwt.header, claims = jwt.claims, kind = "jwt" }, doc)
    end)

    it("shows a token that is not a JWT by its kind only", function()
      local rucio = secret("alice-/DC=org/CN=alice-cli-" .. ("0123456789abcdef"):rep(2))
      local r = run({ "inspect", "-" }, { stdin = rucio })
      assert.are.equal(0, r.code)
      assert.are.equal(tostring(tp.classify(rucio)) .. "\n", r.out)
      local doc = assert(tp.json_decode(run({ "inspect", "-", "--json" }, { stdin = rucio }).out))
      assert.are.same({ header = tp.null, claims = tp.null, kind = "rucio" }, doc)
    end)

    it("without an argument, inspects the active token (here $BEARER_TOKEN)", function()
      local r = run({ "inspect" }, { env = { BEARER_TOKEN = good, HOME = dir .. "/home", TMPDIR = dir,
        XDG_RUNTIME_DIR = dir .. "/run", LOGNAME = "alice" } })
      assert.are.same({ code = 0, out = tostring(tp.decode(good)) .. "\n", err = "token from $BEARER_TOKEN\n" }, r)
    end)

    it("without an argument, inspects the active token file ($XDG_RUNTIME_DIR/bt_u<uid>)", function()
      local run_dir = dir .. "/run"
      os.execute("mkdir -p -m 0700 " .. quote(run_dir))
      local path = run_dir .. "/bt_u" .. tp.euid()
      write(path, expired .. "\n")
      local r = run({ "inspect" }, { env = { HOME = dir .. "/home", TMPDIR = dir, XDG_RUNTIME_DIR = run_dir,
        LOGNAME = "alice" } })
      os.remove(path)
      assert.are.same({ code = 0, out = tostring(tp.decode(expired)) .. "\n", err = "token from " .. path .. "\n" },
        r)
    end)

    it("reads a token file others can read, and warns on stderr", function()
      local path = dir .. "/exposed"
      write(path, good, "644")
      local r = run { "inspect", path }
      assert.are.equal(0, r.code)
      assert.matches("^warning: the token file " .. path:gsub("%p", "%%%0") .. " is readable by others", r.err)
    end)
  end)

  describe("verify", function()
    it("exits 0 for a valid token and says until when", function()
      local r = run({ "verify", "-", "--jwks", pub_path, "--iss", "https://idp.example.org", "--aud", "rucio" },
        { stdin = good })
      assert.are.same({ code = 0, err = "", out = ("valid: ES256, sub alice, iss https://idp.example.org, until %s\n")
        :format(os.date("!%Y-%m-%d %H:%M:%S UTC", now + 3 * 86400 - 1800)) }, r)
    end)

    it("exits 1 for an expired token and prints the code", function()
      local r = run { "verify", expired, "--jwks", pub_path }
      assert.are.same({ code = 1, err = "", out = "invalid: expired: expired 2d23h ago\n" }, r)
    end)

    it("exits 1 for the wrong audience, issuer or algorithm", function()
      assert.are.same({ code = 1, err = "", out = "invalid: bad_audience: the token is not meant for this audience\n" },
        run({ "verify", "-", "--jwks", pub_path, "--aud", "fts" }, { stdin = good }))
      assert.are.equal(1, run({ "verify", "-", "--jwks", pub_path, "--iss", "https://other" }, { stdin = good }).code)
      local r = run({ "verify", "-", "--jwks", pub_path, "--alg", "RS256", "--alg", "PS256" }, { stdin = good })
      assert.are.equal(1, r.code)
      assert.matches("^invalid: alg_not_allowed: ", r.out)
    end)

    it("honours --leeway", function()
      local r = run({ "verify", "-", "--jwks", pub_path, "--leeway", tostring(4 * 86400) }, { stdin = expired })
      assert.are.equal(0, r.code, r.out)
    end)

    it("--json gives valid, claims and header, or valid, code and message", function()
      local r = run({ "verify", "-", "--jwks", pub_path, "--json" }, { stdin = good })
      assert.are.equal(0, r.code)
      local jwt = tp.decode(good)
      assert.are.same({ valid = true, claims = jwt.claims, header = jwt.header }, tp.json_decode(r.out))
      r = run({ "verify", "-", "--jwks", pub_path, "--json" }, { stdin = expired })
      assert.are.equal(1, r.code)
      assert.are.same({ valid = false, code = "expired", message = "expired: expired 2d23h ago" },
        tp.json_decode(r.out))
    end)

    it("exits 2 when the key file cannot be read", function()
      usage_error(run({ "verify", "-", "--jwks", dir .. "/nope.json" }, { stdin = good }),
        ("tokenpolicy: cannot read --jwks: not_found: read_config: %s/nope.json does not exist; give a JWKS/PEM "
        .. "file or an https URL"):format(dir))
    end)

    it("exits 2 when the key file holds no key", function()
      local path = dir .. "/empty.json"
      write(path, '{"keys":[]}')
      local r = run({ "verify", "-", "--jwks", path }, { stdin = good })
      assert.are.equal(2, r.code)
      assert.matches("^tokenpolicy: .*\n$", r.err)
    end)

    it("takes a JWK Set file", function()
      -- the provider's JWKS below is an http one; here a file with the JWK Set
      local path = dir .. "/jwks.json"
      local pipe = assert(io.popen("env -u LD_PRELOAD node -e " .. quote([[
        const crypto = require("crypto"); let pem = require("fs").readFileSync(0, "utf8");
        const jwk = crypto.createPublicKey(pem).export({ format: "jwk" }); jwk.kid = "cli-1";
        process.stdout.write(JSON.stringify({ keys: [jwk] }));]]) .. " <" .. quote(pub_path)))
      write(path, pipe:read("a"), "644")
      pipe:close()
      assert.are.equal(1, #assert(tp.keys(slurp(path))))
      assert.are.equal(0, run({ "verify", "-", "--jwks", path }, { stdin = good }).code)
      assert.are.equal(1, run({ "verify", "-", "--jwks", path }, { stdin = expired }).code)
    end)
  end)

  describe("colour", function()
    -- `script` gives the command a terminal.
    local function on_tty(extra_env)
      local env = base_env()
      for k, v in pairs(extra_env) do env[k] = v end
      local words = {}
      for k, v in pairs(env) do words[#words + 1] = quote(k .. "=" .. v) end
      local inner = "env -i " .. table.concat(words, " ") .. " bin/tokenpolicy verify " .. quote(good_path)
        .. " --jwks " .. quote(pub_path) .. " 2>/dev/null"
      local pipe = assert(io.popen("env -u LD_PRELOAD script -qec " .. quote(inner) .. " /dev/null"))
      local text = pipe:read("a")
      pipe:close()
      return text
    end

    it("colours the verdict on a terminal", function()
      assert.matches("\27[32mvalid\27[0m: ES256", on_tty { TERM = "xterm" }, 1, true)
    end)

    it("never with NO_COLOR, nor when the output is not a terminal", function()
      local text = on_tty { TERM = "xterm", NO_COLOR = "1" }
      assert.matches("valid: ES256", text, 1, true)
      assert.is_nil(text:find("\27", 1, true))
      assert.is_nil(run({ "verify", good_path, "--jwks", pub_path }, { env = { TERM = "xterm" } }).out:find("\27"))
    end)
  end)

  describe("against a real OpenID provider", function()
    local p
    local RESOURCE = "https://rucio.example.org"
    local secret_path

    setup(function()
      p = oidc.start()
      secrets[#secrets + 1] = oidc.client_secret -- never printed either
      secret_path = dir .. "/client-secret"
      write(secret_path, oidc.client_secret .. "\n")
    end)
    teardown(function()
      if p then oidc.stop(p) end
    end)

    local function introspect(token)
      return assert(tp.introspect { endpoint = p.introspection_endpoint, token = token,
        client_id = oidc.client_id, client_secret = oidc.client_secret }).active
    end

    it("verifies a JWT access token against the provider's http JWKS", function()
      local token = secret(oidc.client_credentials(p, { resource = RESOURCE, scope = "storage.read:/" }))
      local r = run({ "verify", "-", "--jwks", p.jwks_uri, "--iss", p.issuer, "--aud", RESOURCE, "--json" },
        { stdin = token })
      assert.are.equal(0, r.code, r.err)
      local doc = tp.json_decode(r.out)
      assert.is_true(doc.valid)
      assert.are.equal(p.issuer, doc.claims.iss)
      assert.are.equal("RS256", doc.header.alg)
      -- the wrong audience
      r = run({ "verify", "-", "--jwks", p.jwks_uri, "--aud", "https://other.example.org" }, { stdin = token })
      assert.are.same({ code = 1, err = "",
        out = "invalid: bad_audience: the token is not meant for this audience\n" }, r)
    end)

    it("revokes an opaque token with the client secret from a file; the provider then calls it inactive", function()
      local token = secret(oidc.client_credentials(p))
      assert.is_true(introspect(token))
      local r = run({ "revoke", "-", "--issuer", p.issuer, "--client-id", oidc.client_id,
        "--client-secret-file", secret_path }, { stdin = token })
      assert.are.same({ code = 0, err = "", out = "revoked at " .. p.revocation_endpoint .. "\n" }, r)
      assert.is_false(introspect(token))
    end)

    it("revokes at --endpoint with the client from the environment, --json", function()
      local token = secret(oidc.client_credentials(p))
      local r = run({ "revoke", "-", "--endpoint", p.revocation_endpoint, "--json" }, { stdin = token,
        env = { TOKENPOLICY_CLIENT_ID = oidc.client_id, TOKENPOLICY_CLIENT_SECRET = oidc.client_secret } })
      assert.are.equal(0, r.code, r.out)
      assert.are.same({ ok = true, endpoint = p.revocation_endpoint }, tp.json_decode(r.out))
      assert.is_false(introspect(token))
    end)

    it("finds the issuer in a JWT's iss, and exits 1 when the issuer cannot revoke a JWT", function()
      local token = secret(oidc.client_credentials(p, { resource = RESOURCE }))
      local r = run({ "revoke", "-", "--client-id", oidc.client_id, "--client-secret-file", secret_path },
        { stdin = token })
      assert.are.same({ code = 1, err = "", out = ("not revoked: http: revoke: POST %s answered 400: "
        .. "unsupported_token_type: Structured JWT Tokens cannot be revoked via the revocation_endpoint\n")
        :format(p.revocation_endpoint) }, r)
    end)

    it("exits 1 when the provider refuses the client, and prints no secret", function()
      local token = secret(oidc.client_credentials(p))
      local wrong = dir .. "/wrong-secret"
      write(wrong, "not-the-secret-42")
      secrets[#secrets + 1] = "not-the-secret-42"
      local r = run({ "revoke", "-", "--issuer", p.issuer, "--client-id", oidc.client_id,
        "--client-secret-file", wrong }, { stdin = token })
      assert.are.equal(1, r.code)
      assert.matches("^not revoked: unauthorized: ", r.out)
      assert.is_true(introspect(token))
    end)

    it("exits 1 when the issuer is unreachable", function()
      local r = run({ "revoke", "-", "--endpoint", "http://127.0.0.1:1/revoke" }, { stdin = good })
      assert.are.equal(1, r.code)
      assert.matches("^not revoked: unreachable: ", r.out)
    end)

    it("exits 2 for a client secret file others can read, or an opaque token with no issuer", function()
      local exposed = dir .. "/exposed-secret"
      write(exposed, oidc.client_secret, "644")
      local r = run({ "revoke", "-", "--endpoint", p.revocation_endpoint, "--client-id", oidc.client_id,
        "--client-secret-file", exposed }, { stdin = good })
      assert.are.equal(2, r.code)
      assert.matches("^tokenpolicy: insecure_permissions: .*the client secret file must be yours and mode 0600%)\n$",
        r.err)
      usage_error(run({ "revoke", "-" }, { stdin = "opaque0123456789" }),
        "tokenpolicy: the token names no issuer; give --issuer URL or --endpoint URL")
    end)
  end)

  describe("status, logout and switch (tokenpolicy.session)", function()
    local box, env, paths

    local RUCIO_ALICE = "alice-/DC=org/CN=alice-cli-" .. ("0123456789abcdef"):rep(2)
    local RUCIO_BOB = "bob-/DC=org/CN=bob-cli-" .. ("fedcba9876543210"):rep(2)
    local ARVADOS = "v2/zzzzz-gj3su-0123456789abcde/" .. ("s3cr3t"):rep(8)

    -- alice's Rucio token (active, valid for an hour), bob's (in the same
    -- cache, expired), a WLCG bearer token file and an Arvados login.
    before_each(function()
      box = expect.new_dir()
      env = { TMPDIR = box, LOGNAME = "alice", RUCIO_CONFIG = box .. "/rucio.cfg", HOME = box .. "/home",
              XDG_RUNTIME_DIR = box .. "/run" }
      os.execute("mkdir -m 0700 " .. quote(box .. "/run") .. " " .. quote(box .. "/home"))
      write(env.RUCIO_CONFIG, "[client]\naccount = alice\n# a comment that stays\n", "644")
      local cache = box .. "/alice/.rucio_alice"
      paths = { alice = cache .. "/auth_token_for_account_alice",
                alice_exp = cache .. "/auth_token_exp_for_account_alice",
                bob = cache .. "/auth_token_for_account_bob", bob_exp = cache .. "/auth_token_exp_for_account_bob",
                cache = cache, wlcg = box .. "/run/bt_u" .. tp.euid(),
                arvados = box .. "/home/.config/arvados/settings.conf" }
      assert(tp.write_token(paths.alice, secret(RUCIO_ALICE)))
      assert(tp.write_token(paths.alice_exp, tostring(now + 3600)))
      assert(tp.write_token(paths.bob, secret(RUCIO_BOB)))
      assert(tp.write_token(paths.bob_exp, tostring(now - 600)))
      assert(tp.write_token(paths.wlcg, good))
      secret(ARVADOS)
      assert(tp.write_token(paths.arvados, "ARVADOS_API_HOST=zzzzz.example.org\nARVADOS_API_TOKEN=" .. ARVADOS .. "\n"))
    end)
    after_each(function()
      expect.remove_dir(box)
    end)

    local function exists(path)
      return tp.stat(path) ~= nil
    end

    it("status --json carries a value that is not UTF-8 as U+FFFD (found by the cli fuzz target)", function()
      -- a token file whose name holds bytes no JSON string can: json_encode raised
      local path = box .. "/tok\255en"
      write(env.RUCIO_CONFIG, "[client]\naccount = alice\nauth_token_file_path = " .. path .. "\n", "644")
      assert(tp.write_token(path, secret(RUCIO_ALICE)))
      local r = run({ "status", "--scheme", "rucio", "--json" }, { env = env })
      assert.are.equal("", r.err)
      local shown = {}
      for _, e in ipairs(assert(tp.json_decode(r.out))) do shown[e.path] = e.source end
      assert.are.equal("config", shown[box .. "/tok\u{FFFD}en"], r.out)
    end)

    it("status lists every token of every scheme and account, and exits 1 for the expired one", function()
      local r = run({ "status" }, { env = env })
      assert.are.equal(1, r.code, r.err)
      assert.are.equal("", r.err)
      local lines = {}
      for line in r.out:gmatch("[^\n]+") do lines[#lines + 1] = line:gsub("%s+", " ") end
      assert.are.same({
        "scheme account vo source path active kind state expires findings",
        ("rucio alice def default %s active rucio valid %s -"):format(paths.alice,
          os.date("!%Y-%m-%d %H:%M:%S UTC", now + 3600)),
        ("rucio bob def cache %s - rucio expired %s expired"):format(paths.bob,
          os.date("!%Y-%m-%d %H:%M:%S UTC", now - 600)),
        ("wlcg - - default %s active jwt valid %s -"):format(paths.wlcg,
          os.date("!%Y-%m-%d %H:%M:%S UTC", now + 3 * 86400 - 1800)),
        ("arvados - - default %s active arvados_v2 unknown - -"):format(paths.arvados),
      }, lines)
    end)

    it("status --json has the fields of session.status; --scheme and --account narrow it", function()
      local r = run({ "status", "--json" }, { env = env })
      assert.are.equal(1, r.code)
      local list = assert(tp.json_decode(r.out))
      assert.are.equal(4, #list)
      assert.are.same({ "rucio", "alice", "def", "default", true, "rucio", "valid", now + 3600, {} },
        { list[1].scheme, list[1].account, list[1].vo, list[1].source, list[1].active, list[1].kind, list[1].state,
          list[1].exp, list[1].findings })
      assert.are.same({ "bob", "expired", { "expired" } }, { list[2].account, list[2].state, list[2].findings })
      assert.are.same({ "wlcg", "alice", "https://idp.example.org", "rucio" },
        { list[3].scheme, list[3].sub, list[3].iss, list[3].aud })
      r = run({ "status", "--json", "--scheme", "wlcg" }, { env = env })
      assert.are.equal(0, r.code)
      local wlcg = tp.json_decode(r.out)
      assert.are.equal(1, #wlcg)
      assert.are.equal(paths.wlcg, wlcg[1].path)
      r = run({ "status", "--json", "--account", "alice", "--scheme", "rucio" }, { env = env })
      assert.are.same({ paths.alice }, { tp.json_decode(r.out)[1].path, tp.json_decode(r.out)[2] })
    end)

    it("logout --dry-run changes nothing and reports what logout would do", function()
      local r = run({ "logout", "--all", "--dry-run", "--json" }, { env = env })
      assert.are.equal(0, r.code, r.err)
      local report = tp.json_decode(r.out)
      assert.is_true(report.dry_run)
      assert.is_false(report.nothing_to_do)
      local targets = {}
      for _, a in ipairs(report.actions) do targets[#targets + 1] = a.action .. " " .. a.target end
      assert.are.same({ "remove " .. paths.alice, "remove " .. paths.alice_exp, "remove " .. paths.bob,
        "remove " .. paths.bob_exp, "remove " .. paths.wlcg, "remove " .. paths.arvados .. " (ARVADOS_API_TOKEN)",
        "remove " .. paths.cache }, targets)
      for _, name in ipairs { "alice", "bob", "wlcg", "arvados" } do
        assert.is_true(exists(paths[name]), name)
      end
      r = run({ "logout", "--all", "--dry-run" }, { env = env })
      assert.are.equal(0, r.code)
      assert.matches("\ndry run: nothing was changed\n$", r.out)
    end)

    it("logout --all removes every token, and a second logout has nothing to do", function()
      local r = run({ "logout", "--all" }, { env = env })
      assert.are.equal(0, r.code, r.out)
      assert.matches("\nlogged out\n$", r.out)
      for _, name in ipairs { "alice", "bob", "wlcg", "cache" } do
        assert.is_false(exists(paths[name]), name)
      end
      assert.are.equal("ARVADOS_API_HOST=zzzzz.example.org\n", assert(tp.read_config(paths.arvados)))
      assert.are.same({ code = 0, err = "", out = "nothing to do: no tokens found\n" }, run({ "logout", "--all" },
        { env = env }))
      r = run({ "logout", "--all", "--json" }, { env = env })
      assert.are.same({ actions = {}, dry_run = false, nothing_to_do = true, ok = true }, tp.json_decode(r.out))
    end)

    it("logout without --all ends the active Rucio account only", function()
      local r = run({ "logout", "--scheme", "rucio" }, { env = env })
      assert.are.equal(0, r.code, r.out)
      assert.is_false(exists(paths.alice))
      assert.is_true(exists(paths.bob))
      assert.is_true(exists(paths.wlcg))
    end)

    it("logout exits 1 when something is left behind: a token in the environment", function()
      local r = run({ "logout", "--scheme", "wlcg" }, { env = { BEARER_TOKEN = good, HOME = env.HOME, TMPDIR = box,
        XDG_RUNTIME_DIR = env.XDG_RUNTIME_DIR } })
      assert.are.equal(1, r.code)
      assert.matches("unset BEARER_TOKEN", r.out, 1, true)
    end)

    it("logout --revoke ends an opaque token at its issuer (the real provider), then removes it", function()
      local p = oidc.start()
      local token = secret(oidc.client_credentials(p))
      assert(tp.write_token(paths.wlcg, token))
      local e = { TOKENPOLICY_ISSUER = p.issuer, TOKENPOLICY_CLIENT_ID = oidc.client_id,
                  TOKENPOLICY_CLIENT_SECRET = oidc.client_secret }
      for k, v in pairs(env) do e[k] = v end
      local r = run({ "logout", "--scheme", "wlcg", "--revoke", "--json" }, { env = e })
      local active = assert(tp.introspect { endpoint = p.introspection_endpoint, token = token,
        client_id = oidc.client_id, client_secret = oidc.client_secret }).active
      oidc.stop(p)
      assert.are.equal(0, r.code, r.out)
      local report = tp.json_decode(r.out)
      assert.are.same({ "revoke", true }, { report.actions[1].action, report.actions[1].ok })
      assert.is_false(active)
      assert.is_false(exists(paths.wlcg))
      assert.is_nil(r.out:find(oidc.client_secret, 1, true))
    end)

    it("logout --revoke with the issuer unreachable still removes the file, says so and exits 1", function()
      local token = secret("opaque-" .. ("0123456789"):rep(4))
      assert(tp.write_token(paths.wlcg, token))
      local e = { TOKENPOLICY_ISSUER = "http://127.0.0.1:1", TOKENPOLICY_CLIENT_ID = "cli" }
      for k, v in pairs(env) do e[k] = v end
      local r = run({ "logout", "--scheme", "wlcg", "--revoke", "--json" }, { env = e })
      assert.are.equal(1, r.code, r.out)
      local report = tp.json_decode(r.out)
      assert.is_false(report.ok)
      assert.are.same({ "revoke", false, "unreachable" },
        { report.actions[1].action, report.actions[1].ok, report.actions[1].code })
      assert.is_false(exists(paths.wlcg))
    end)

    it("switch prints only the export line on stdout, for eval; notes go to stderr", function()
      local r = run({ "switch", "bob" }, { env = env })
      assert.are.same({ code = 0, out = "export RUCIO_ACCOUNT=bob\n",
        err = ("the token expired at %s: run rucio whoami to log in again\n")
          :format(os.date("!%Y-%m-%d %H:%M:%S UTC", now - 600)) }, r)
      r = run({ "switch", "bob", "--vo", "atlas" }, { env = env })
      assert.are.equal("export RUCIO_ACCOUNT=bob; export RUCIO_VO=atlas\n", r.out)
      r = run({ "sh", "-c", 'eval "$(bin/tokenpolicy switch bob 2>/dev/null)"; echo "$RUCIO_ACCOUNT"' },
        { env = env, bare = true })
      assert.are.equal("bob\n", r.out)
    end)

    it("switch --json prints the whole result of session.switch_account", function()
      local r = run({ "switch", "carol", "--json" }, { env = env })
      assert.are.equal(0, r.code, r.err)
      assert.are.same({ actions = {}, export = "export RUCIO_ACCOUNT=carol", previous = "alice", warnings = {},
        message = "no token for carol: run rucio whoami to log in" }, tp.json_decode(r.out))
    end)

    it("switch --persist writes the account into rucio.cfg, keeping every other line", function()
      local r = run({ "switch", "bob", "--persist" }, { env = env })
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("[client]\naccount = bob\n# a comment that stays\n", slurp(env.RUCIO_CONFIG))
    end)
  end)

  describe("deny and denylist", function()
    local list
    before_each(function()
      list = dir .. "/denied"
      os.remove(list)
      os.remove(list .. ".lock")
    end)

    it("deny adds a jti until an epoch time, a +duration or an ISO time; denylist looks it up", function()
      local r = run { "deny", "cli-0001", "--exp", tostring(now + 3600), "--denylist", list }
      assert.are.same({ code = 0, err = "",
        out = "denied cli-0001 until " .. os.date("!%Y-%m-%d %H:%M:%S UTC", now + 3600) .. "\n" }, r)
      local before = os.time()
      r = run({ "deny", "cli-0002", "--exp", "+2h", "--json" }, { env = { TOKENPOLICY_DENYLIST = list } })
      local after = os.time()
      assert.are.equal(0, r.code)
      local answer = tp.json_decode(r.out)
      assert.are.equal("cli-0002", answer.jti)
      assert.is_true(answer.exp >= before + 7200 and answer.exp <= after + 7200)
      assert.are.equal(2, answer.count)
      r = run { "deny", "cli-0003", "--exp", "2026-12-01T12:00:00Z", "--denylist", list }
      assert.are.equal(0, r.code)
      local written = tp.denylist(list)
      assert.is_true(written:contains("cli-0003", 1796126399))
      assert.is_false(written:contains("cli-0003", 1796126400))
      assert.are.same({ code = 0, out = "3\n", err = "" }, run { "denylist", "count", "--denylist", list })
      assert.are.same({ code = 0, out = "denied\n", err = "" },
        run { "denylist", "contains", "cli-0001", "--denylist", list })
      assert.are.same({ code = 1, out = "not denied\n", err = "" },
        run { "denylist", "contains", "cli-0001", "--at", tostring(now + 3600), "--denylist", list })
      assert.are.same({ code = 1, out = "not denied\n", err = "" },
        run { "denylist", "contains", "other", "--denylist", list })
    end)

    it("purges what expired at --at", function()
      assert.are.equal(0, run({ "deny", "a", "--exp", "100", "--denylist", list }).code)
      assert.are.equal(0, run({ "deny", "b", "--exp", "300", "--denylist", list }).code)
      assert.are.same({ code = 0, out = "removed 1 expired entry, 1 left\n", err = "" },
        run { "denylist", "purge", "--at", "200", "--denylist", list })
      local r = run { "denylist", "purge", "--at", "400", "--denylist", list, "--json" }
      assert.are.same({ removed = 1, count = 0, at = 400 }, tp.json_decode(r.out))
    end)

    it("refuses bad input with one line and exit 2", function()
      local cases = {
        { { "deny", "x", "--exp", "tomorrow", "--denylist", list },
          '--exp: "tomorrow" is not a time: give epoch seconds, +DURATION or YYYY-MM-DDTHH:MM:SSZ' },
        { { "deny", "x", "--exp", "2026-02-30T00:00:00Z", "--denylist", list },
          '--exp: "2026-02-30T00:00:00Z" is not a time: give epoch seconds, +DURATION or YYYY-MM-DDTHH:MM:SSZ' },
        { { "deny", "x", "--exp", "+soon", "--denylist", list },
          '--exp: "+soon" is not a duration (e.g. +12h, +1d, +90m)' },
        { { "deny", "a b", "--exp", "5", "--denylist", list },
          "a JTI is 1 to 256 printable ASCII characters without spaces" },
        { { "deny", "x", "--exp", "5" }, "give --denylist FILE (or set TOKENPOLICY_DENYLIST)" },
        { { "denylist", "contains", "--denylist", list }, "denylist contains needs a JTI" },
        -- found by the cli fuzz target: a JTI that is not UTF-8 made --json raise
        { { "denylist", "contains", "j\xc9\xff", "--json", "--denylist", list },
          "a JTI is 1 to 256 printable ASCII characters without spaces" },
        { { "denylist", "purge", "x", "--denylist", list }, "denylist purge takes no JTI" },
        { { "denylist", "count", "--denylist", dir }, "io: denylist " .. dir .. " is not a regular file" },
      }
      for _, case in ipairs(cases) do
        local r = run(case[1])
        assert.are.same({ code = 2, out = "", err = "tokenpolicy: " .. case[2] .. "\n" }, r)
      end
      assert.is_nil(io.open(list))  -- nothing was written
    end)
  end)

  describe("examples/demo.lua", function()
    it("tells the user's story with the command", function()
      local pipe = assert(io.popen(("LUA_PATH=%q LUA_CPATH=%q %s examples/demo.lua 2>&1"):format(
        package.path, package.cpath, LUA)))
      local text = pipe:read("a")
      assert.is_true(pipe:close(), text)
      local story = text:match("== the tokenpolicy command %(in a sandbox%)\n(.*)$")
      assert.is_string(story, text)
      local commands = {}
      for line in story:gmatch("%$ ([^\n]*)") do commands[#commands + 1] = line end
      assert.are.same({ "tokenpolicy status", "tokenpolicy inspect",
        "tokenpolicy inspect - < $XDG_RUNTIME_DIR/bt_u" .. tp.euid(),
        'eval "$(tokenpolicy switch bob)"; echo "now RUCIO_ACCOUNT=$RUCIO_ACCOUNT"',
        "tokenpolicy logout --all --dry-run", "tokenpolicy logout --all", "tokenpolicy logout --all" }, commands)
      assert.matches("rucio +alice +def +default +<sandbox>/alice/.rucio_alice/auth_token_for_account_alice +active"
        .. " +rucio +valid", story)
      assert.matches("rucio +bob +def +cache .* expired +[-0-9: ]+UTC +expired\n", story)
      assert.matches("wlcg .* active +jwt +valid", story)
      assert.matches("arvados .* active +arvados_v2", story)
      assert.matches('tokenpolicy.Classification: rucio (account "alice"', story, 1, true)
      assert.matches("JWT ES256, kid demo-2026, typ at+jwt", story, 1, true)
      assert.matches("now RUCIO_ACCOUNT=bob\n", story, 1, true)
      assert.matches("dry run: nothing was changed\n(exit 0)\n", story, 1, true)
      assert.matches("logged out\n(exit 0)\n", story, 1, true)
      assert.matches("nothing to do: no tokens found\n%(exit 0%)\n$", story)
    end)
  end)
end)
