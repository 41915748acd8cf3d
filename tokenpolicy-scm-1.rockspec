rockspec_format = "3.0"
package = "tokenpolicy"
version = "scm-1"
source = {
  url = "git+file://.",  -- built from a checkout with `luarocks make`
}
description = {
  summary = "Find, read, verify, judge and end bearer tokens",
  detailed = [[
tokenpolicy is a C core with Lua workflows for the whole life of a bearer
token (OIDC JWT access tokens, Rucio and Arvados tokens): discovery, JWT
decode and verify, lifetime policy, and revocation.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.3, < 5.5",
  -- lyaml (Debian: lua-yaml) is needed only by policy_from_arvados given
  -- a config file path, and argparse (Debian: lua-argparse) only by the
  -- tokenpolicy command; neither is listed, so that `luarocks make` works
  -- offline with Debian's packages.
}
external_dependencies = {
  CJOSE = { header = "cjose/cjose.h", library = "cjose" },
  JANSSON = { header = "jansson.h", library = "jansson" },
  YAJL = { header = "yajl/yajl_parse.h", library = "yajl" },
  CURL = { header = "curl/curl.h", library = "curl" },
  HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
  SSL = { header = "openssl/ssl.h", library = "ssl" },
  CRYPTO = { header = "openssl/evp.h", library = "crypto" },
}
build = {
  type = "builtin",
  modules = {
    ["tokenpolicy.core"] = {
      sources = { "csrc/core.c", "csrc/denylist.c", "csrc/files.c", "csrc/http.c", "csrc/json.c", "csrc/jwks.c", "csrc/jwt.c", "csrc/keys.c", "csrc/policy.c", "csrc/redis.c", "csrc/util.c", "csrc/verifier.c" },
      defines = { "_POSIX_C_SOURCE=200809L", "_DEFAULT_SOURCE" },
      incdirs = { "$(CJOSE_INCDIR)", "$(JANSSON_INCDIR)", "$(YAJL_INCDIR)", "$(CURL_INCDIR)", "$(HIREDIS_INCDIR)", "$(SSL_INCDIR)", "$(CRYPTO_INCDIR)" },
      libdirs = { "$(CJOSE_LIBDIR)", "$(JANSSON_LIBDIR)", "$(YAJL_LIBDIR)", "$(CURL_LIBDIR)", "$(HIREDIS_LIBDIR)", "$(SSL_LIBDIR)", "$(CRYPTO_LIBDIR)" },
      libraries = { "cjose", "jansson", "yajl", "curl", "hiredis", "ssl", "crypto" },
    },
    ["tokenpolicy"] = "lua/tokenpolicy/init.lua",
    ["tokenpolicy.arvados_config"] = "lua/tokenpolicy/arvados_config.lua",
    ["tokenpolicy.classify"] = "lua/tokenpolicy/classify.lua",
    ["tokenpolicy.discovery"] = "lua/tokenpolicy/discovery.lua",
    ["tokenpolicy.ini"] = "lua/tokenpolicy/ini.lua",
    ["tokenpolicy.session"] = "lua/tokenpolicy/session.lua",
    ["tokenpolicy.migrate"] = "lua/tokenpolicy/migrate.lua",
    ["tokenpolicy.store.memory"] = "lua/tokenpolicy/store/memory.lua",
    ["tokenpolicy.store.files"] = "lua/tokenpolicy/store/files.lua",
    ["tokenpolicy.store.arvados_pg"] = "lua/tokenpolicy/store/arvados_pg.lua",
    ["tokenpolicy.cli"] = "lua/tokenpolicy/cli.lua",
    ["tokenpolicy.haproxy"] = "lua/tokenpolicy/haproxy.lua",
    ["tokenpolicy.util"] = "lua/tokenpolicy/util.lua",
  },
  install = {
    bin = { tokenpolicy = "bin/tokenpolicy" },
  },
}
test = {
  type = "busted",
}
