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
-- Only the libraries are looked for: Debian keeps curl.h in the multiarch
-- include directory (/usr/include/x86_64-linux-gnu/curl/curl.h), where the
-- compiler finds it by itself but luarocks' header check does not, and the
-- library is there only with the -dev package, so this check still says
-- which one is missing.  X_DIR, X_INCDIR and X_LIBDIR (X one of the names
-- below) on the luarocks command line still point the build elsewhere.
external_dependencies = {
  CJOSE = { library = "cjose" },
  JANSSON = { library = "jansson" },
  YAJL = { library = "yajl" },
  CURL = { library = "curl" },
  HIREDIS = { library = "hiredis" },
  SSL = { library = "ssl" },
  CRYPTO = { library = "crypto" },
}
-- The "command" type rather than "builtin": one compiler run builds the C
-- core straight into the rock's lib directory from every csrc/*.c, so that
-- `luarocks make` leaves no object file or module in the checkout (builtin
-- leaves csrc/*.o and tokenpolicy/core.so), and every
-- lua/tokenpolicy/**/*.lua is copied by a wildcard, so a new module is never
-- missed (spec/06-rockspec_spec.lua checks both).
build = {
  type = "command",
  install_command = [[
set -e
mkdir -p "$(LIBDIR)/tokenpolicy"
$(CC) $(CFLAGS) $(LIBFLAG) -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I"$(LUA_INCDIR)" \
  -I"$(CJOSE_INCDIR)" -I"$(JANSSON_INCDIR)" -I"$(YAJL_INCDIR)" -I"$(CURL_INCDIR)" -I"$(HIREDIS_INCDIR)" \
  -I"$(SSL_INCDIR)" -I"$(CRYPTO_INCDIR)" \
  -o "$(LIBDIR)/tokenpolicy/core.so" csrc/*.c \
  -L"$(CJOSE_LIBDIR)" -L"$(JANSSON_LIBDIR)" -L"$(YAJL_LIBDIR)" -L"$(CURL_LIBDIR)" -L"$(HIREDIS_LIBDIR)" \
  -L"$(SSL_LIBDIR)" -L"$(CRYPTO_LIBDIR)" -lcjose -ljansson -lyajl -lcurl -lhiredis -lssl -lcrypto
cd lua
for f in $(find tokenpolicy -type f -name '*.lua'); do
  mkdir -p "$(LUADIR)/${f%/*}"
  cp "$f" "$(LUADIR)/$f"
done
]],
  install = {
    bin = { tokenpolicy = "bin/tokenpolicy" },
  },
  copy_directories = { "docs" },
}
test = {
  type = "busted",
}
