-- What the outside review (issue 8) found in the HTTP and JWKS area, each
-- point against the real local peer (spec/helpers/http_peer.js):
-- secrets in messages (redirects to a path holding the token, peers echoing
-- it in any encoding), tp.oidc_metadata (was tp.discovery), readable
-- answers, the shared option readers, to-be-closed HTTP calls, and a
-- JWKS source that holds no network code.
local tp = require "tokenpolicy"
local core = require "tokenpolicy.core"
local http_peer = require "helpers.http_peer"

local SECRET_TOKEN = "tok en+/=&x-s3cret"
local CLIENT_ID = "my client"
local CLIENT_SECRET = "p@ss:word-s3cret"
local ARV_UUID = "zzzzz-gj3su-0123456789abcde"
local ARV_PREFIX = "v2/" .. ARV_UUID .. "/"

-- Standard base64 with padding, from tokenpolicy's base64url.
local function base64(s)
  local text = tp.b64url_encode(s):gsub("-", "+"):gsub("_", "/")
  return text .. string.rep("=", (4 - #text % 4) % 4)
end

-- Percent-encoding of everything but RFC 3986's unreserved characters.
local function pct(s, lower)
  return (s:gsub("[^%w%-%._~]", function(c)
    return (lower and "%%%02x" or "%%%02X"):format(c:byte())
  end))
end

-- Every form of secret s a peer could echo back (and, for a client
-- secret, the Basic header value it was sent in).
local function forms_of(s, id)
  local list = { s, pct(s), pct(s, true), pct(s):gsub("%%20", "+"), base64(s), (base64(s):gsub("=+$", "")),
                 tp.b64url_encode(s) }
  if id then
    list[#list + 1] = base64(pct(id) .. ":" .. pct(s))
    list[#list + 1] = base64(id .. ":" .. s)
  end
  return list
end

local function read_source(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("a")
  f:close()
  return text
end

describe("issue 8, HTTP and JWKS", function()
  local peer, seen

  -- The requests the peer recorded since the last before_each.
  local function requests()
    local list = {}
    for line in io.lines(peer.log) do
      list[#list + 1] = assert(tp.json_decode(line))
    end
    return list
  end

  -- A fail triple: keeps the message for the final check, returns code and message.
  local function fails(ok, msg, code)
    assert.is_nil(ok)
    assert.are.equal("string", type(msg))
    assert.are.equal(code .. ": ", msg:sub(1, #code + 2))
    seen[#seen + 1] = msg
    return code, msg
  end

  setup(function()
    peer = http_peer.start()
    seen = {}
  end)
  teardown(function()
    http_peer.stop(peer)
  end)
  before_each(function()
    assert(io.open(peer.log, "w")):close()
  end)
  after_each(function()
    collectgarbage()
  end)

  describe("a redirect to a path holding the token", function()
    local cases = {
      { call = "revoke", status = 302, method = "GET" },
      { call = "revoke", status = 303, method = "GET" },
      { call = "revoke", status = 307, method = "POST" },
      { call = "revoke", status = 302, enc = "pct", method = "GET" },
      { call = "introspect", status = 303, method = "GET" },
      { call = "introspect", status = 302, enc = "pct", method = "GET" },
    }
    for _, case in ipairs(cases) do
      it(("%s, %d%s: shows only the original URL, and %s after it"):format(case.call, case.status,
        case.enc and " (URL-encoded)" or "", case.method), function()
        local query = "?status=" .. case.status .. (case.enc and "&enc=" .. case.enc or "")
        local code, msg = fails(tp[case.call]{ endpoint = peer.base .. "/to-token" .. query, token = SECRET_TOKEN,
          client_id = CLIENT_ID, client_secret = CLIENT_SECRET })
        assert.are.equal("http", code)
        assert.are.equal(("http: %s: %s (after 1 redirect from POST %s/to-token) answered 404: not_found")
          :format(case.call, case.method, peer.base), msg)
        local r = requests()
        assert.are.equal(2, #r)
        assert.are.equal(case.method, r[2].method)
        assert.matches("^/x/", r[2].path)
      end)
    end

    it("refuses another origin without naming it (its host name may be the token)", function()
      local token = "hostlike-s3cret-token"
      local code, msg = fails(tp.revoke{ endpoint = peer.base .. "/to-token-host", token = token })
      assert.are.equal("http", code)
      assert.are.equal("http: revoke: POST " .. peer.base ..
        "/to-token-host: refused a redirect to another origin: credentials would follow", msg)
      assert.is_nil(msg:find(token, 1, true))
    end)

    it("fetch_keys shows the URL it was given, not where it was sent (nor any query)", function()
      local code, msg = fails(tp.fetch_keys(peer.base .. "/to-query?s=query-s3cret"))
      assert.are.equal("http", code)
      assert.are.equal("http: fetch_keys: GET (after 1 redirect from GET " .. peer.base ..
        "/to-query) answered 404: not_found", msg)
      assert.are.equal("/x/query-s3cret", requests()[2].path)
    end)

    it("oidc_metadata shows the URL it was given, not the peer's choice", function()
      local url = peer.base .. "/meta-redirect/.well-known/openid-configuration"
      local code, msg = fails(tp.oidc_metadata(url, { ttl = 0 }))
      assert.are.equal("http", code)
      assert.are.equal("http: oidc_metadata: GET (after 1 redirect from GET " .. url .. ") answered 404: not_found",
        msg)
    end)

    it("Arvados calls show the original request, with the method they used", function()
      local token = ARV_PREFIX .. "redirect_s3cretArvadosTokenValue"
      local host = "127.0.0.1:" .. peer.port
      local _, msg = fails(tp.arvados_current{ host = host, token = token, scheme = "http" })
      assert.are.equal("http: arvados_current: GET (after 1 redirect from GET " .. peer.base ..
        "/arvados/v1/api_client_authorizations/current) answered 404: not_found", msg)
      _, msg = fails(tp.arvados_delete_token{ host = host, token = token, uuid = ARV_UUID, scheme = "http" })
      assert.are.equal("http: arvados_delete_token: DELETE (after 1 redirect from DELETE " .. peer.base ..
        "/arvados/v1/api_client_authorizations/" .. ARV_UUID .. ") answered 404: not_found", msg)
      assert.are.equal("DELETE", requests()[4].method)
    end)
  end)

  describe("a peer echoing a secret in its error", function()
    local encoded = { "raw", "pct", "lower", "plus", "b64", "b64url" }
    for _, call in ipairs{ "revoke", "introspect" } do
      for _, of in ipairs{ "token", "secret" } do
        for _, form in ipairs(encoded) do
          it(("%s: the %s as %s is redacted"):format(call, of, form), function()
            local code, msg = fails(tp[call]{ endpoint = peer.base .. "/echo?of=" .. of .. "&form=" .. form,
              token = SECRET_TOKEN, client_id = CLIENT_ID, client_secret = CLIENT_SECRET })
            assert.are.equal("http", code)
            assert.are.equal(("http: %s: POST %s/echo answered 400: invalid_request: you sent [redacted]")
              :format(call, peer.base), msg)
          end)
        end
      end
    end

    local echoed_parts = { { "basic", "basic" }, { "basic", "header" }, { "basic", "form" }, { "post", "form" } }
    for _, case in ipairs(echoed_parts) do
      local auth, form = case[1], case[2]
      it(("revoke (auth=%s): the request's %s echoed back is redacted"):format(auth, form), function()
        local _, msg = fails(tp.revoke{ endpoint = peer.base .. "/echo?form=" .. form, token = SECRET_TOKEN,
          client_id = CLIENT_ID, client_secret = CLIENT_SECRET, auth = auth })
        assert.matches("answered 400: invalid_request: you sent ", msg, 1, true)
        assert.is_nil(msg:find("s3cret", 1, true))
        for _, secret in ipairs(forms_of(SECRET_TOKEN)) do assert.is_nil(msg:find(secret, 1, true), msg) end
        for _, secret in ipairs(forms_of(CLIENT_SECRET, CLIENT_ID)) do
          assert.is_nil(msg:find(secret, 1, true), msg)
        end
      end)
    end

    it("a Basic header value echoed alone is redacted whole, padding included", function()
      local _, msg = fails(tp.introspect{ endpoint = peer.base .. "/echo?form=basic", token = SECRET_TOKEN,
        client_id = CLIENT_ID, client_secret = CLIENT_SECRET })
      assert.are.equal("http: introspect: POST " .. peer.base ..
        "/echo answered 400: invalid_request: you sent [redacted]", msg)
    end)

    local arvados_forms = { "raw", "pct", "lower", "b64", "b64url", "secret", "header" }
    for _, call in ipairs{ "arvados_current", "arvados_delete_token", "arvados_logout" } do
      for _, form in ipairs(arvados_forms) do
        it(("%s: the token as %s is redacted"):format(call, form), function()
          local token = ARV_PREFIX .. "echo_" .. form .. "_s3cretArvadosTokenValue"
          local code, msg = fails(tp[call]{ host = "127.0.0.1:" .. peer.port, token = token, scheme = "http",
            uuid = call == "arvados_delete_token" and ARV_UUID or nil })
          assert.are.equal("unauthorized", code)
          local expected = (form == "header" and call == "arvados_logout") and "(none)"
            or form == "header" and "Bearer [redacted]" or "[redacted]"
          assert.matches("answered 401: bad token " .. expected:gsub("%p", "%%%0") .. "$", msg)
        end)
      end
    end
  end)

  it("puts no form of any secret in any message", function()
    assert.is_true(#seen >= 60, #seen)
    local secrets = forms_of(SECRET_TOKEN)
    for _, form in ipairs(forms_of(CLIENT_SECRET, CLIENT_ID)) do secrets[#secrets + 1] = form end
    for _, form in ipairs{ "raw", "pct", "lower", "b64", "b64url", "secret", "header", "redirect" } do
      local token = ARV_PREFIX .. (form == "redirect" and "redirect_" or "echo_" .. form .. "_")
        .. "s3cretArvadosTokenValue"
      for _, f in ipairs(forms_of(token)) do secrets[#secrets + 1] = f end
      for _, f in ipairs(forms_of(token:match("[^/]+$"))) do secrets[#secrets + 1] = f end
    end
    for _, msg in ipairs(seen) do
      assert.is_nil(msg:find("s3cret", 1, true), msg)
      for _, secret in ipairs(secrets) do
        assert.is_nil(msg:find(secret, 1, true), msg)
      end
    end
  end)

  describe("oidc_metadata (the call discovery was)", function()
    it("is the only name: tp.discovery is gone, and messages name oidc_metadata", function()
      assert.is_nil(tp.discovery)
      assert.is_nil(core.discovery)
      assert.are.equal("function", type(tp.oidc_metadata))
      local code, msg = fails(tp.oidc_metadata(peer.base .. "/none", { ttl = 0 }))
      assert.are.equal("http", code)
      assert.are.equal("http: oidc_metadata: GET " .. peer.base ..
        "/.well-known/oauth-authorization-server/none answered 404: not_found", msg)
      assert.are.equal("malformed: oidc_metadata: an issuer is an absolute URL without query or fragment",
        select(2, fails(tp.oidc_metadata("op.example"))))
    end)

    it("is what the docs, examples and benchmarks call", function()
      for _, path in ipairs{ "docs/http.md", "docs/jwks.md", "docs/api.md", "README.md", "examples/demo.lua",
                             "bench/run.lua" } do
        local text = read_source(path)
        assert.is_nil(text:find("tp%.discovery%f[^%w_]"), path)
        assert.is_nil(text:find("`discovery`", 1, true), path)
      end
    end)
  end)

  describe("readable answers", function()
    it("metadata prints its issuer and endpoints, cached or not", function()
      local issuer = peer.base .. "/issuer"
      local expected = ("OIDC metadata for %s/issuer: jwks_uri %s/jwks, revocation endpoint %s/revoke, " ..
        "introspection endpoint %s/introspect"):format(peer.base, peer.base, peer.base, peer.base)
      assert.are.equal(expected, tostring(assert(tp.oidc_metadata(issuer, { ttl = 0 }))))
      assert.are.equal(expected, tostring(assert(tp.oidc_metadata(issuer, { ttl = 60, now = 5000 }))))
      assert.are.equal(expected, tostring(assert(tp.oidc_metadata(issuer, { ttl = 60, now = 5001 }))))
      assert.are.equal(2, #requests())
      assert.are.equal(peer.base .. "/jwks", tp.oidc_metadata(issuer, { ttl = 60, now = 5002 }).jwks_uri)
    end)

    it("an introspection answer prints what it says about the token, never the token", function()
      local info = assert(tp.introspect{ endpoint = peer.base .. "/introspect", token = "active-token-abc123" })
      assert.are.equal("introspection: active, sub alice, client_id cli, scope read write, " ..
        "expires 2030-03-17 17:46:40 UTC", tostring(info))
      assert.is_true(info.active)
      assert.are.same({ active = true, exp = 1900000000, scope = "read write", client_id = "cli", sub = "alice" },
        info)
      assert.are.equal("introspection: inactive",
        tostring(assert(tp.introspect{ endpoint = peer.base .. "/introspect", token = "old-token" })))
    end)
  end)

  describe("the shared option readers", function()
    local issuer = "http://127.0.0.1:1/op"
    local cases = {
      { function() tp.jwks(issuer, { ttl = -1 }) end,
        "bad argument #2 to 'jwks' (ttl must be an integer of at least 0)" },
      { function() tp.jwks(issuer, { min_refetch = 1.5 }) end,
        "bad argument #2 to 'jwks' (min_refetch must be an integer of at least 0)" },
      { function() tp.jwks(issuer, { refetch = 1 }) end, "bad argument #2 to 'jwks' (refetch must be a boolean)" },
      { function() tp.jwks(issuer, { ca_file = 5 }) end, "bad argument #2 to 'jwks' (ca_file must be a string)" },
      { function() tp.jwks(issuer):refresh(nil, { force = 1 }) end,
        "bad argument #2 to 'refresh' (force must be a boolean)" },
      { function() tp.oidc_metadata(issuer, { ttl = -1 }) end,
        "bad argument #2 to 'oidc_metadata' (ttl must be an integer of at least 0)" },
      { function() tp.oidc_metadata(issuer, { now = 1.5 }) end,
        "bad argument #2 to 'oidc_metadata' (now must be an integer)" },
      { function() tp.oidc_metadata(issuer, { insecure = "yes" }) end,
        "bad argument #2 to 'oidc_metadata' (insecure must be a boolean)" },
      { function() tp.fetch_keys(issuer, { timeout = "5" }) end,
        "bad argument #2 to 'fetch_keys' (timeout must be a number of seconds in (0, 86400])" },
      { function() tp.revoke{ endpoint = issuer, token = "t", auth = "digest" } end,
        "bad argument #1 to 'revoke' (auth must be one of \"basic\", \"post\")" },
      { function() tp.revoke{ endpoint = issuer, token = "" } end,
        "bad argument #1 to 'revoke' (token must not be empty)" },
      { function() tp.introspect{ endpoint = issuer, token = "t", client_id = "c\n" } end,
        "bad argument #1 to 'introspect' (client_id contains a control character)" },
      { function() tp.arvados_current{ host = "h", token = "t", uuid = ARV_UUID } end,
        "bad argument #1 to 'arvados_current' (unknown option 'uuid')" },
      { function() tp.arvados_logout{ host = "h", token = "t", scheme = "ftp" } end,
        "bad argument #1 to 'arvados_logout' (scheme must be one of \"https\", \"http\")" },
    }
    for i, case in ipairs(cases) do
      it(("raise the one family's message (%d: %s)"):format(i, case[2]:match("%((.*)%)$")), function()
        assert.has_error(case[1], case[2])
      end)
    end

    it("replace the per-file readers, lua_next loops and metatable set-ups", function()
      for _, path in ipairs{ "csrc/http.c", "csrc/jwks.c" } do
        local text = read_source(path)
        assert.is_nil(text:find("static [^\n]*%f[%w_]opt_%w+%s*%("), path)
        assert.is_nil(text:find("luaL_newmetatable", 1, true), path)
        assert.is_nil(text:find("tp_check_options", 1, true), path)
      end
      assert.is_nil(read_source("csrc/jwks.c"):find("lua_next", 1, true))
      assert.are.equal("tokenpolicy.JwksSource", getmetatable(tp.jwks{}).__name)
      assert.are.equal("tokenpolicy.OidcMetadata",
        getmetatable(assert(tp.oidc_metadata(peer.base .. "/issuer", { ttl = 0 }))).__name)
    end)
  end)

  describe("HTTP calls are to-be-closed", function()
    it("a finished call holds nothing", function()
      collectgarbage()
      assert.are.equal(0, core._http_calls_open())
      assert(tp.fetch_keys(peer.base .. "/jwks"))
      fails(tp.fetch_keys(peer.base .. "/revoke-500"))
      assert.are.equal(0, core._http_calls_open())
    end)

    it("an error in the middle of a call releases it at once (Lua 5.4), or at the next collection (5.3)", function()
      collectgarbage()
      assert.are.equal(0, core._http_calls_open())
      -- fetch_keys imports the body with keys while its call is open: make
      -- that import raise.
      debug.sethook(function()
        if debug.getinfo(2, "f").func == core.keys then
          debug.sethook()
          error("raised inside the call")
        end
      end, "c")
      local ok, err = pcall(core.fetch_keys, peer.base .. "/jwks")
      debug.sethook()
      assert.is_false(ok)
      assert.matches("raised inside the call", err, 1, true)
      if _VERSION == "Lua 5.4" then
        assert.are.equal(0, core._http_calls_open())
      else
        assert.are.equal(1, core._http_calls_open())
        collectgarbage()
        collectgarbage()
        assert.are.equal(0, core._http_calls_open())
      end
    end)
  end)

  describe("a JWKS source holds no network code", function()
    it("jwks.c includes no HTTP library and calls nothing of http.c", function()
      local text = read_source("csrc/jwks.c")
      assert.is_nil(text:find("curl", 1, true))
      assert.is_nil(text:find("tp_http_", 1, true))
      local http = read_source("csrc/http.c")
      assert.is_nil(http:find("tp_jwks", 1, true))
      assert.is_nil(http:find("TP_JWKS_CLASS", 1, true))
    end)

    it("a source made without a URI works offline: set_keys, keys and verify", function()
      local pem = require("helpers.crypto").rsa_private()
      local signer = assert(tp.keys(pem, { kid = "k1" }))
      local jwk = require("helpers.crypto").rsa_public_jwk(pem, "k1")
      local src = tp.jwks{ now = 1800000000 }
      assert(src:set_keys(tp.json_encode{ keys = { jwk } }))
      local token = assert(tp.sign({ sub = "alice", exp = 1800003600 }, signer, { alg = "RS256" }))
      assert.are.equal("alice", assert(tp.verify(token, src, { now = 1800000000 })).sub)
      assert.are.equal(0, src:stats().fetches)
      assert.are.equal(0, #requests())
    end)
  end)
end)
