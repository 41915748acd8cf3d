--- tokenpolicy: find, read, verify, judge and end bearer tokens.
--
-- `require "tokenpolicy"` returns the C core's functions themselves (no
-- wrappers on the hot path) plus `_VERSION`, the workflow functions written
-- in Lua, and `help`.  Every name is a plain field, so `pairs(tp)` and the
-- REPL's completion see them all; `tp.help()` has one line for each.
-- @module tokenpolicy

local core = require "tokenpolicy.core"

local tokenpolicy = {}
for name, value in pairs(core) do
  tokenpolicy[name] = value
end
tokenpolicy._VERSION = core._VERSION

-- Functions written in Lua, each a plain field holding the module's own
-- function (`tp.discover == require("tokenpolicy.discovery").discover`), so
-- that `pairs(tp)` and the REPL's completion see every name.  Loading them
-- here costs about 4 ms and 160 KiB per Lua state, once; none of these
-- modules does I/O or loads an optional library when loaded.
-- Layering: these modules call the core; the core never calls them.
local LUA_FUNCTIONS = {
  discover = "tokenpolicy.discovery",
  rucio_config = "tokenpolicy.discovery",
  classify = "tokenpolicy.classify",
  policy_from_arvados = "tokenpolicy.arvados_config",
  status = "tokenpolicy.session",
  logout = "tokenpolicy.session",
  switch_account = "tokenpolicy.session",
  check_long_lived = "tokenpolicy.migrate",
  fix_long_lived = "tokenpolicy.migrate",
}
for name, module in pairs(LUA_FUNCTIONS) do
  tokenpolicy[name] = require(module)[name]
end

-- One line per public function, in the order a newcomer meets them; `help`
-- prints them and a spec checks that the list and the module agree.
local SUMMARY = {
  { "decode", "decode(token) -> JWT: header and claims, not verified" },
  { "verify", "verify(token, keys, opts) -> claims, header: signature, then iss/aud/exp/... checks" },
  { "keys", "keys(material, opts) -> KeySet from a JWK Set, a JWK or PEM text" },
  { "sign", "sign(claims, keyset, opts) -> compact JWS" },
  { "verifier", "verifier{keys=, iss=, aud=, policy=, denylist=, cache=} -> Verifier; v:check(token) -> claims" },
  { "classify", "classify(token) -> {kind=jwt|rucio|arvados_v2|arvados_v1|opaque, ...}, never the secret" },
  { "discover", "discover(opts) -> every candidate token location (rucio, wlcg, arvados) in precedence order" },
  { "rucio_config", "rucio_config(opts) -> the rucio.cfg the Rucio client would read" },
  { "status", "status(opts) -> every token of the user (all schemes, accounts, VOs): state, expiry, findings" },
  { "logout", "logout(opts) -> report: remove the user's tokens safely, revoke them at their issuer with revoke=true" },
  { "switch_account", "switch_account{account=, vo=} -> the export line for Rucio, the account's token status" },
  { "check_long_lived", "check_long_lived(store, policy, opts) -> long-lived tokens and users, as the rake task" },
  { "fix_long_lived", "fix_long_lived(store, policy, opts) -> set their expiry to now + lifetime (or a dry run)" },
  { "read_token", "read_token(path, opts) -> token, info: a token file read safely" },
  { "write_token", "write_token(path, token, opts): write a token file 0600 through a rename" },
  { "remove_token", "remove_token(path, opts): remove one token file without following links" },
  { "remove_tree", "remove_tree(dir, opts): remove a token cache directory safely" },
  { "audit", "audit(path, opts) -> findings: owner, permissions, links of a token file or directory" },
  { "fix_permissions", "fix_permissions(path, opts): make a token file 0600 and its directory private" },
  { "list_dir", "list_dir(dir) -> the names in a directory, opened without following a link" },
  { "rewrite_config", "rewrite_config(path, text, opts): replace a config file atomically, keeping its mode" },
  { "read_config", "read_config(path, opts) -> text of a configuration file, read without blocking" },
  { "stat", "stat(path) -> {type, mode, uid, gid, size, mtime} without following a link" },
  { "user", "user(uid) -> {name, uid, gid, home} from the password database" },
  { "euid", "euid() -> the effective user id" },
  { "uid", "uid() -> the real user id (whose name getpass would give)" },
  { "cwd", "cwd() -> the current directory, for making relative paths absolute" },
  { "groups", "groups(uid) -> the group ids a user is in (for who may write where)" },
  { "duration", "duration(\"1h30m\") -> 5400: Go-style durations (d, h, m, s, ms)" },
  { "format_duration", "format_duration(5400) -> \"1h30m\"" },
  { "policy", "policy{idle_timeout=, login_token_lifetime=, max_token_lifetime=, ...} -> Policy" },
  { "policy_from_arvados", "policy_from_arvados(path_or_table, opts) -> Policy from an Arvados config.yml" },
  { "oidc_metadata", "oidc_metadata(issuer, opts) -> the provider's OpenID/OAuth metadata" },
  { "fetch_keys", "fetch_keys(jwks_uri, opts) -> KeySet fetched over HTTPS" },
  { "jwks", "jwks(uri, opts) -> JwksSource: cached keys with a TTL, usable wherever a KeySet is" },
  { "revoke", "revoke{endpoint=, token=, ...}: RFC 7009 token revocation" },
  { "introspect", "introspect{endpoint=, token=, ...} -> RFC 7662 introspection answer" },
  { "arvados_current", "arvados_current{host=, token=} -> the Arvados token record of a token" },
  { "arvados_delete_token", "arvados_delete_token{host=, token=, uuid=}: delete an Arvados token" },
  { "arvados_logout", "arvados_logout{host=, token=}: end an Arvados login session" },
  { "denylist", "denylist(path or redis://URL, opts) -> Denylist of revoked jtis (add, contains, purge, reload)" },
  { "json_encode", "json_encode(value) -> JSON text (tokenpolicy.null is null)" },
  { "json_decode", "json_decode(text) -> value, strictly (integers stay integers)" },
  { "b64url_encode", "b64url_encode(bytes) -> unpadded base64url" },
  { "b64url_decode", "b64url_decode(text) -> bytes, canonical unpadded base64url only" },
  { "header_text", "header_text(value) -> value if a string without control characters (fit for a header)" },
  { "null", "null: the JSON null value (prints as tokenpolicy.null)" },
  { "help", "help([name]) -> this list, or the line of one function" },
}

--- One line per public function, or the line of one function.
-- In the REPL: `tp.help()` or `tp.help "verify"`.
-- @tparam[opt] string name a function's name
-- @treturn string
function tokenpolicy.help(name)
  if name ~= nil and type(name) ~= "string" then
    error(("bad argument #1 to 'help' (string expected, got %s)"):format(type(name)), 2)
  end
  local lines = {}
  for _, entry in ipairs(SUMMARY) do
    if name == nil then
      lines[#lines + 1] = ("  %-21s %s"):format(entry[1], entry[2])
    elseif entry[1] == name then
      return "tokenpolicy." .. entry[2] .. "\n(docs/api.md has every option and error code)"
    end
  end
  if name ~= nil then
    return ("tokenpolicy has no function '%s'; tp.help() lists them"):format(name)
  end
  return "tokenpolicy " .. core._VERSION:match("[%d.]+$") .. " (docs/api.md has every option and error code)\n"
    .. table.concat(lines, "\n")
end

--- The names `help` documents, in its order (for specs and tools).
-- @treturn {string,...}
function tokenpolicy._help_names()
  local names = {}
  for i, entry in ipairs(SUMMARY) do
    names[i] = entry[1]
  end
  return names
end

return tokenpolicy
