-- luarocks reads this in a project directory (one holding .luarocks/ and
-- lua_modules/): Debian's luarocks runs under Lua 5.1 and would otherwise
-- build for 5.1, which tokenpolicy does not support.  `luarocks
-- --lua-version=5.3 make` still builds for 5.3 (docs/install.md).
return "5.4"
