-- luacheck configuration: Lua 5.3/5.4 code, busted specs.
std = "lua53"
max_line_length = 120
files["spec/"] = { std = "+busted" }
exclude_files = { "build/", "build-asan/" }
-- The RFC 7515 test vectors are data and keep their published lines.
files["spec/04-interop_spec.lua"] = { std = "+busted", max_line_length = false }
-- HAProxy's Lua API: only the module that runs inside HAProxy reads its `core`.
files["lua/tokenpolicy/haproxy.lua"] = { read_globals = { "core" } }
-- `make bench-haproxy`: Lua loaded by HAProxy (its `core` global), and
-- wrk's script (LuaJIT; wrk calls the globals init and request).
files["bench/haproxy/header_only.lua"] = { read_globals = { "core" } }
files["bench/haproxy/luaossl_baseline.lua"] = { read_globals = { "core" } }
files["bench/haproxy/experiments.lua"] = { read_globals = { "core" } }
files["bench/haproxy/wrk_tokens.lua"] = { std = "luajit", globals = { "init", "request" }, read_globals = { "wrk" } }
