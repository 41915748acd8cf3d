-- HTTP peers: revocation, introspection, OpenID provider metadata, JWKS and Arvados' token
-- calls against spec/helpers/http_peer.js, a scripted local Node server
-- that records every request it gets.
local tp = require "tokenpolicy"

local VERSION = tp._VERSION:match("^tokenpolicy (.+)$")
local ACTIVE = "active-token-abc123"
local SECRET_TOKEN = "tok en+/=&x-s3cret"
local CLIENT_SECRET = "p@ss:word-s3cret"
local ARV_TOKEN = "v2/zzzzz-gj3su-0123456789abcde/s3cretArvadosTokenValue"
local ARV_UUID = "zzzzz-gj3su-0123456789abcde"

local http_peer = require "helpers.http_peer"
local start_peer, stop_peer = http_peer.start, http_peer.stop

-- Standard base64 with padding, from tokenpolicy's base64url.
local function base64(s)
  local text = tp.b64url_encode(s):gsub("-", "+"):gsub("_", "/")
  return text .. string.rep("=", (4 - #text % 4) % 4)
end

describe("HTTP peers", function()
  local peer, seen

  -- Every request the peer recorded since the last before_each.
  local function requests()
    local list = {}
    for line in io.lines(peer.log) do
      list[#list + 1] = assert(tp.json_decode(line))
    end
    return list
  end

  -- Collects every message so that the last spec can check none holds a secret.
  local function fails(ok, msg, code, extra)
    assert.is_nil(ok)
    assert.are.equal("string", type(msg))
    seen[#seen + 1] = msg
    return code, msg, extra
  end

  setup(function()
    peer = start_peer()
    seen = {}
  end)
  teardown(function()
    stop_peer(peer)
  end)
  before_each(function()
    assert(io.open(peer.log, "w")):close()
  end)
  after_each(function()
    collectgarbage()
  end)

  describe("revoke", function()
    it("posts the form-encoded token with HTTP Basic client authentication", function()
      assert.is_true(tp.revoke{ endpoint = peer.base .. "/revoke", token = SECRET_TOKEN,
        token_type_hint = "access_token", client_id = "my client", client_secret = CLIENT_SECRET })
      local r = requests()
      assert.are.equal(1, #r)
      assert.are.equal("POST", r[1].method)
      assert.are.equal("/revoke", r[1].path)
      assert.are.equal("token=tok%20en%2B%2F%3D%26x-s3cret&token_type_hint=access_token", r[1].body)
      assert.are.equal("application/x-www-form-urlencoded", r[1].headers["content-type"])
      assert.are.equal("Basic " .. base64("my%20client:p%40ss%3Aword-s3cret"), r[1].headers.authorization)
      assert.are.equal("tokenpolicy/" .. VERSION, r[1].headers["user-agent"])
      assert.are.equal("application/json", r[1].headers.accept)
      assert.is_nil(r[1].headers.expect)
    end)

    it("sends the client credentials in the body with auth=post", function()
      assert.is_true(tp.revoke{ endpoint = peer.base .. "/revoke", token = "t", client_id = "c",
        client_secret = "s&s", auth = "post" })
      local r = requests()[1]
      assert.are.equal("token=t&client_id=c&client_secret=s%26s", r.body)
      assert.is_nil(r.headers.authorization)
    end)

    it("names a public client (client_id only) in the body", function()
      assert.is_true(tp.revoke{ endpoint = peer.base .. "/revoke", token = "t", client_id = "pub" })
      local r = requests()[1]
      assert.are.equal("token=t&client_id=pub", r.body)
      assert.is_nil(r.headers.authorization)
    end)

    it("reports 503 as unavailable with the Retry-After seconds as a fourth value", function()
      local code, msg, retry = fails(tp.revoke{ endpoint = peer.base .. "/revoke-503", token = SECRET_TOKEN })
      assert.are.equal("unavailable", code)
      assert.are.equal(7, retry)
      assert.are.equal("unavailable: revoke: POST " .. peer.base .. "/revoke-503 answered 503: temporarily_unavailable",
        msg)
    end)

    it("reports 401 as unauthorized with the provider's error and description", function()
      local code, msg = fails(tp.revoke{ endpoint = peer.base .. "/revoke-401", token = SECRET_TOKEN,
        client_id = "c", client_secret = CLIENT_SECRET })
      assert.are.equal("unauthorized", code)
      assert.are.equal("unauthorized: revoke: POST " .. peer.base ..
        "/revoke-401 answered 401: invalid_client: Client authentication failed", msg)
    end)

    it("reports a 400 invalid_client as unauthorized", function()
      local code, msg = fails(tp.revoke{ endpoint = peer.base .. "/revoke-400-client", token = SECRET_TOKEN })
      assert.are.equal("unauthorized", code)
      assert.are.equal("unauthorized: revoke: POST " .. peer.base .. "/revoke-400-client answered 400: invalid_client",
        msg)
    end)

    it("reports other errors as http, the description cut to 200 characters and the token redacted", function()
      local code, msg = fails(tp.revoke{ endpoint = peer.base .. "/revoke-400", token = SECRET_TOKEN })
      assert.are.equal("http", code)
      local desc = msg:match("answered 400: unsupported_token_type: (.*)$")
      assert.are.equal("cannot revoke [redacted] " .. string.rep("x", 200 - 25) .. "...", desc)
      code = fails(tp.revoke{ endpoint = peer.base .. "/revoke-500", token = SECRET_TOKEN })
      assert.are.equal("http", code)
    end)

    it("follows a same-origin 307 redirect with the same method and body", function()
      assert.is_true(tp.revoke{ endpoint = peer.base .. "/same-307", token = "t" })
      local r = requests()
      assert.are.equal(2, #r)
      assert.are.equal("/revoke", r[2].path)
      assert.are.equal("POST", r[2].method)
      assert.are.equal("token=t", r[2].body)
    end)

    it("refuses a redirect to another host and never sends the token there", function()
      local code, msg = fails(tp.revoke{ endpoint = peer.base .. "/other-host", token = SECRET_TOKEN,
        client_id = "c", client_secret = CLIENT_SECRET })
      assert.are.equal("http", code)
      assert.matches("refused a redirect to another origin", msg, 1, true)
      assert.are.equal(1, #requests())
    end)

    it("stops after 3 redirects", function()
      local code, msg = fails(tp.revoke{ endpoint = peer.base .. "/loop", token = "t" })
      assert.are.equal("http", code)
      assert.matches("more than 3 redirects", msg, 1, true)
      assert.are.equal(4, #requests())
    end)

    it("refuses plain http to a host that is not loopback, and odd URLs, as malformed", function()
      for _, url in ipairs{ "http://example.com/revoke", "ftp://127.0.0.1/x", "revoke",
                            "https://user:pw@example.com/revoke" } do
        local code = fails(tp.revoke{ endpoint = url, token = SECRET_TOKEN })
        assert.are.equal("malformed", code)
      end
    end)

    it("gives up after the timeout", function()
      local started = os.time()
      local code, msg = fails(tp.revoke{ endpoint = peer.base .. "/slow?token=s3cretQuery",
        token = SECRET_TOKEN, timeout = 1 })
      assert.are.equal("timeout", code)
      assert.are.equal("timeout: revoke: POST " .. peer.base .. "/slow: Timeout was reached", msg)
      assert.is_true(os.time() - started <= 2)
    end)

    it("raises on misuse", function()
      assert.has_error(function() tp.revoke{ endpoint = peer.base, token = "t", bogus = 1 } end,
        "bad argument #1 to 'revoke' (unknown option 'bogus')")
      assert.has_error(function() tp.revoke{ endpoint = peer.base } end,
        "bad argument #1 to 'revoke' (token must be a string)")
      assert.has_error(function() tp.revoke{ endpoint = peer.base, token = "a\r\nX: y" } end,
        "bad argument #1 to 'revoke' (token contains a control character)")
      assert.has_error(function() tp.revoke{ endpoint = peer.base, token = "t", auth = "digest" } end,
        "bad argument #1 to 'revoke' (auth must be one of \"basic\", \"post\")")
      assert.has_error(function() tp.revoke{ endpoint = peer.base, token = "t", timeout = 0 } end)
    end)
  end)

  describe("introspect", function()
    it("returns the answer of an active token", function()
      local info = assert(tp.introspect{ endpoint = peer.base .. "/introspect", token = ACTIVE,
        client_id = "rs", client_secret = CLIENT_SECRET })
      assert.are.same({ active = true, exp = 1900000000, scope = "read write", client_id = "cli", sub = "alice" },
        info)
      assert.are.equal("integer", math.type(info.exp))
      local r = requests()[1]
      assert.are.equal("token=" .. ACTIVE, r.body)
      assert.are.equal("Basic " .. base64("rs:p%40ss%3Aword-s3cret"), r.headers.authorization)
    end)

    it("returns active=false for an inactive token", function()
      assert.are.same({ active = false }, tp.introspect{ endpoint = peer.base .. "/introspect", token = "old" })
    end)

    it("refuses an answer without a boolean active as malformed", function()
      local code = fails(tp.introspect{ endpoint = peer.base .. "/introspect-bad", token = SECRET_TOKEN })
      assert.are.equal("malformed", code)
    end)

    it("maps errors as revoke does", function()
      local code, _, retry = fails(tp.introspect{ endpoint = peer.base .. "/revoke-503", token = SECRET_TOKEN })
      assert.are.equal("unavailable", code)
      assert.are.equal(7, retry)
      assert.are.equal("unauthorized", (fails(tp.introspect{ endpoint = peer.base .. "/revoke-401",
        token = SECRET_TOKEN })))
    end)

    it("caps the answer at 1 MiB", function()
      local code, msg = fails(tp.introspect{ endpoint = peer.base .. "/big", token = SECRET_TOKEN })
      assert.are.equal("too_large", code)
      assert.are.equal("too_large: introspect: POST " .. peer.base .. "/big: the response is over the 1 MiB limit",
        msg)
    end)
  end)

  describe("oidc_metadata", function()
    it("fetches the OpenID configuration and checks its issuer", function()
      local meta = assert(tp.oidc_metadata(peer.base .. "/issuer", { ttl = 0 }))
      assert.are.equal(peer.base .. "/issuer", meta.issuer)
      assert.are.equal(peer.base .. "/jwks", meta.jwks_uri)
      local r = requests()
      assert.are.equal(1, #r)
      assert.are.equal("GET", r[1].method)
      assert.are.equal("/issuer/.well-known/openid-configuration", r[1].path)
    end)

    it("refuses metadata for another issuer as malformed", function()
      local code, msg = fails(tp.oidc_metadata(peer.base .. "/wrong", { ttl = 0 }))
      assert.are.equal("malformed", code)
      assert.matches("the metadata's issuer 'https://evil.example/wrong' is not '" .. peer.base .. "/wrong'",
        msg, 1, true)
    end)

    it("falls back to the RFC 8414 path on 404", function()
      local meta = assert(tp.oidc_metadata(peer.base .. "/as", { ttl = 0 }))
      assert.are.equal(peer.base .. "/token", meta.token_endpoint)
      local r = requests()
      assert.are.equal("/as/.well-known/openid-configuration", r[1].path)
      assert.are.equal("/.well-known/oauth-authorization-server/as", r[2].path)
    end)

    it("takes a well-known URL as it is", function()
      assert(tp.oidc_metadata(peer.base .. "/.well-known/oauth-authorization-server/as", { ttl = 0 }))
      assert(tp.oidc_metadata(peer.base .. "/issuer/.well-known/openid-configuration", { ttl = 0 }))
      assert.are.equal(2, #requests())
    end)

    it("caches the metadata for ttl seconds", function()
      local issuer = peer.base .. "/issuer"
      local first = assert(tp.oidc_metadata(issuer, { now = 1000, ttl = 60 }))
      local again = assert(tp.oidc_metadata(issuer, { now = 1059, ttl = 60 }))
      assert.are.same(first, again)
      again.issuer = "changed"  -- a copy: the cache is not affected
      assert.are.equal(issuer, tp.oidc_metadata(issuer, { now = 1059, ttl = 60 }).issuer)
      assert.are.equal(1, #requests())
      assert(tp.oidc_metadata(issuer, { now = 1060, ttl = 60 }))
      assert.are.equal(2, #requests())
    end)

    it("reports a missing document as http", function()
      local code, msg = fails(tp.oidc_metadata(peer.base .. "/none", { ttl = 0 }))
      assert.are.equal("http", code)
      assert.are.equal("http: oidc_metadata: GET " .. peer.base ..
        "/.well-known/oauth-authorization-server/none answered 404: not_found", msg)
    end)
  end)

  describe("fetch_keys", function()
    it("imports the JWK Set", function()
      local set = assert(tp.fetch_keys(peer.base .. "/jwks"))
      assert.are.equal(1, #set)
      assert.are.same({ "peer-1" }, set:kids())
    end)

    it("follows a redirect to another host (no credentials are sent)", function()
      local set = assert(tp.fetch_keys(peer.base .. "/jwks-other"))
      assert.are.equal(1, #set)
      assert.are.equal(2, #requests())
    end)

    it("passes on the codes of keys and caps the size", function()
      assert.are.equal("http", (fails(tp.fetch_keys(peer.base .. "/revoke-500"))))
      local code, _, retry = fails(tp.fetch_keys(peer.base .. "/revoke-503"))
      assert.are.equal("unavailable", code)
      assert.are.equal(7, retry)
      assert.are.equal("http", (fails(tp.fetch_keys(peer.base .. "/loop"))))
      assert.are.equal("malformed", (fails(tp.fetch_keys(peer.base .. "/revoke"))))
      -- A JWK Set may take 32 MiB (20,000 keys): 2 MiB that are no JSON
      -- are malformed, 33 MiB too large.
      assert.are.equal("malformed", (fails(tp.fetch_keys(peer.base .. "/big"))))
      local _, msg = fails(tp.fetch_keys(peer.base .. "/bigger"))
      assert.are.equal("too_large: fetch_keys: GET " .. peer.base .. "/bigger: the response is over the 32 MiB limit",
        msg)
      assert.are.equal("malformed", (fails(tp.fetch_keys(peer.base .. "/issuer/.well-known/openid-configuration"))))
    end)
  end)

  describe("Arvados", function()
    local host
    before_each(function()
      host = "127.0.0.1:" .. peer.port
    end)

    it("reads the current token's record with Bearer authentication", function()
      local record = assert(tp.arvados_current{ host = host, token = ARV_TOKEN, scheme = "http" })
      assert.are.equal(ARV_UUID, record.uuid)
      assert.are.equal(tp.null, record.expires_at)
      local r = requests()[1]
      assert.are.equal("GET", r.method)
      assert.are.equal("/arvados/v1/api_client_authorizations/current", r.path)
      assert.are.equal("Bearer " .. ARV_TOKEN, r.headers.authorization)
    end)

    it("reports a refused token as unauthorized with Arvados' error", function()
      local code, msg = fails(tp.arvados_current{ host = host, token = ARV_TOKEN .. "x", scheme = "http" })
      assert.are.equal("unauthorized", code)
      assert.are.equal("unauthorized: arvados_current: GET " .. peer.base ..
        "/arvados/v1/api_client_authorizations/current answered 401: Not logged in", msg)
    end)

    it("deletes a token by uuid and returns the deleted record", function()
      local record = assert(tp.arvados_delete_token{ host = host, token = ARV_TOKEN, uuid = ARV_UUID,
        scheme = "http" })
      assert.are.equal("2026-11-23T16:00:00.000000000Z", record.expires_at)
      local r = requests()[1]
      assert.are.equal("DELETE", r.method)
      assert.are.equal("/arvados/v1/api_client_authorizations/" .. ARV_UUID, r.path)
      assert.are.equal("Bearer " .. ARV_TOKEN, r.headers.authorization)
      assert.are.equal("malformed", (fails(tp.arvados_delete_token{ host = host, token = ARV_TOKEN,
        uuid = "../x", scheme = "http" })))
    end)

    it("logs out, not following the redirect", function()
      assert.is_true(tp.arvados_logout{ host = host, token = ARV_TOKEN, scheme = "http" })
      local r = requests()
      assert.are.equal(1, #r)
      assert.are.equal("GET", r[1].method)
      assert.are.equal("/logout?api_token=v2%2Fzzzzz-gj3su-0123456789abcde%2Fs3cretArvadosTokenValue", r[1].path)
      assert.is_nil(r[1].headers.authorization)
    end)

    it("needs https for a host that is not loopback, and a plain host name", function()
      assert.are.equal("malformed", (fails(tp.arvados_current{ host = "example.com", token = ARV_TOKEN,
        scheme = "http" })))
      assert.has_error(function() tp.arvados_current{ host = "a/b", token = "t" } end,
        "bad argument #1 to 'arvados_current' (host must be a host name or address, with an optional :port)")
    end)
  end)

  it("reports a stopped peer as unreachable, quickly", function()
    local gone = start_peer()
    stop_peer(gone)
    local started = os.time()
    local code, msg = fails(tp.revoke{ endpoint = gone.base .. "/revoke", token = SECRET_TOKEN })
    assert.are.equal("unreachable", code)
    assert.are.equal("unreachable: revoke: POST " .. gone.base .. "/revoke: Couldn't connect to server", msg)
    assert.is_true(os.time() - started <= 1)
  end)

  it("never puts a token or secret in a message", function()
    assert.is_true(#seen >= 20)
    for _, msg in ipairs(seen) do
      for _, secret in ipairs{ SECRET_TOKEN, "s3cret", CLIENT_SECRET, ARV_TOKEN, "ArvadosTokenValue" } do
        assert.is_nil(msg:find(secret, 1, true), msg)
      end
    end
  end)
end)
