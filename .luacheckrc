-- luacheck configuration: Lua 5.3/5.4 code, busted specs.
std = "lua53"
max_line_length = 120
files["spec/"] = { std = "+busted" }
exclude_files = { "build/", "build-asan/" }
-- The RFC 7515 test vectors are data and keep their published lines.
files["spec/04-interop_spec.lua"] = { std = "+busted", max_line_length = false }
-- HAProxy's Lua API: only the module that runs inside HAProxy reads its `core`.
files["lua/tokenpolicy/haproxy.lua"] = { read_globals = { "core" } }
