-- Against a real OpenID provider (oidc-provider, spec/helpers/oidc): metadata,
-- JWKS, verifying its JWT access tokens, revocation and introspection of its
-- opaque tokens, key rotation, and a provider that is gone.
local tp = require "tokenpolicy"
local oidc = require "helpers.oidc"

local RESOURCE = "https://rucio.example.org"
local SCOPE = "storage.read:/"

describe("a real OpenID provider", function()
  local p, meta

  -- A fail triple: returns the code, and checks that the message holds no secret.
  local function fails(secrets, ok, msg, code)
    assert.is_nil(ok)
    assert.are.equal("string", type(msg))
    for _, secret in ipairs(secrets) do
      assert.is_nil(msg:find(secret, 1, true))
    end
    assert.are.equal(code, msg:match("^([%w_]+):"))
    return code
  end

  local function client(extra)
    local opts = { client_id = oidc.client_id, client_secret = oidc.client_secret }
    for k, v in pairs(extra) do opts[k] = v end
    return opts
  end

  setup(function()
    p = oidc.start()
  end)
  teardown(function()
    if p then oidc.stop(p) end
  end)
  after_each(function()
    collectgarbage()
  end)

  it("publishes its metadata (oidc_metadata)", function()
    local err, code
    meta, err, code = tp.oidc_metadata(p.issuer, { ttl = 0 })
    assert.is_table(meta, err or code)
    assert.are.equal(p.issuer, meta.issuer)
    assert.are.equal(p.jwks_uri, meta.jwks_uri)
    assert.are.equal(p.token_endpoint, meta.token_endpoint)
    assert.are.equal(p.revocation_endpoint, meta.revocation_endpoint)
    assert.are.equal(p.introspection_endpoint, meta.introspection_endpoint)
    assert.are.equal(("OIDC metadata for %s: jwks_uri %s, token endpoint %s, revocation endpoint %s, "
      .. "introspection endpoint %s"):format(p.issuer, p.jwks_uri, p.token_endpoint, p.revocation_endpoint,
      p.introspection_endpoint), tostring(meta))
  end)

  it("issues JWT access tokens for a resource that verify against its JWKS", function()
    local keys = assert(tp.fetch_keys(p.jwks_uri))
    assert.are.equal(1, #keys)
    local token, answer = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
    assert.are.equal(SCOPE, answer.scope)
    local claims, header = tp.verify(token, keys, { iss = p.issuer, aud = RESOURCE, typ = "at+jwt" })
    assert.is_table(claims, header)
    assert.are.equal("RS256", header.alg)
    assert.are.equal(keys:kids()[1], header.kid)
    assert.are.equal(SCOPE, claims.scope)
    assert.are.equal(oidc.client_id, claims.client_id)
    assert.are.equal(p.issuer, claims.iss)
    assert.are.equal(RESOURCE, claims.aud)
    assert.are.equal("integer", math.type(claims.exp))
    -- the wrong audience is refused
    assert.are.equal("bad_audience", fails({ token },
      tp.verify(token, keys, { iss = p.issuer, aud = "https://other.example.org", typ = "at+jwt" })))
  end)

  it("introspects an opaque token as active, revokes it, then as inactive", function()
    local token = oidc.client_credentials(p)
    assert.is_nil(token:find(".", 1, true)) -- opaque, not a JWT
    local info = assert(tp.introspect(client{ endpoint = p.introspection_endpoint, token = token }))
    assert.is_true(info.active)
    assert.are.equal(("introspection: active, client_id %s, token_type Bearer, iss %s, expires %s"):format(
      oidc.client_id, p.issuer, os.date("!%Y-%m-%d %H:%M:%S UTC", info.exp)), tostring(info))
    assert.is_nil(tostring(info):find(token, 1, true))
    assert.are.equal(oidc.client_id, info.client_id)
    assert.are.equal(p.issuer, info.iss)
    assert.are.equal("integer", math.type(info.exp))
    assert.is_true(tp.revoke(client{ endpoint = p.revocation_endpoint, token = token,
      token_type_hint = "access_token" }))
    info = assert(tp.introspect(client{ endpoint = p.introspection_endpoint, token = token }))
    assert.is_false(info.active)
  end)

  it("authenticates a client with the secret in the form body (auth = \"post\")", function()
    local token = oidc.client_credentials(p, { client_id = oidc.post_client_id })
    local opts = { endpoint = p.introspection_endpoint, token = token, auth = "post",
      client_id = oidc.post_client_id, client_secret = oidc.client_secret }
    assert.is_true(assert(tp.introspect(opts)).active)
    opts.endpoint = p.revocation_endpoint
    assert.is_true(tp.revoke(opts))
    opts.endpoint = p.introspection_endpoint
    assert.is_false(assert(tp.introspect(opts)).active)
  end)

  it("accepts the revocation of an unknown token", function()
    assert.is_true(tp.revoke(client{ endpoint = p.revocation_endpoint, token = "no-such-token-0123456789" }))
  end)

  it("answers unauthorized to a wrong client secret", function()
    local token = oidc.client_credentials(p)
    local wrong = "not-the-secret-42"
    local secrets = { token, wrong }
    assert.are.equal("unauthorized", fails(secrets, tp.revoke(client{ endpoint = p.revocation_endpoint,
      token = token, client_secret = wrong })))
    assert.are.equal("unauthorized", fails(secrets, tp.introspect(client{ endpoint = p.introspection_endpoint,
      token = token, client_secret = wrong })))
    -- the token is still alive
    assert.is_true(assert(tp.introspect(client{ endpoint = p.introspection_endpoint, token = token })).active)
  end)

  it("signs with a new key after rotation: unknown_key until the keys are fetched again", function()
    local old_keys = assert(tp.fetch_keys(p.jwks_uri))
    local old_kid = old_keys:kids()[1]
    local new_kid = oidc.rotate(p)
    assert.are_not.equal(old_kid, new_kid)
    local token = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
    local opts = { iss = p.issuer, aud = RESOURCE, typ = "at+jwt" }
    assert.are.equal("unknown_key", fails({ token }, tp.verify(token, old_keys, opts)))
    local new_keys = assert(tp.fetch_keys(p.jwks_uri))
    assert.are.same({ new_kid }, new_keys:kids())
    local claims, header = tp.verify(token, new_keys, opts)
    assert.is_table(claims, header)
    assert.are.equal(new_kid, header.kid)
    assert.are.equal(SCOPE, claims.scope)
  end)

  it("picks up a rotated key through a JWKS source, with one refetch on the unknown kid", function()
    local source = tp.jwks(p.jwks_uri)
    local opts = { iss = p.issuer, aud = RESOURCE, typ = "at+jwt" }
    local before = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
    assert.is_table(tp.verify(before, source, opts))
    assert.are.equal(1, source:stats().fetches)
    local new_kid = oidc.rotate(p)
    local after = oidc.client_credentials(p, { resource = RESOURCE, scope = SCOPE })
    local claims, header = tp.verify(after, source, opts)
    assert.is_table(claims, header)
    assert.are.equal(new_kid, header.kid)
    assert.are.equal(2, source:stats().fetches)
  end)

  it("is unreachable once stopped, quickly", function()
    oidc.stop(p)
    local started = os.time()
    assert.are.equal("unreachable", fails({}, tp.oidc_metadata(p.issuer, { timeout = 2, ttl = 0 })))
    assert.is_true(os.time() - started <= 3)
  end)
end)
