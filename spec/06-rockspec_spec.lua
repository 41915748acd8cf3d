-- The rockspec installs the same modules the Makefile builds.
local version = _VERSION:match("%d+%.%d+")

-- Runs a shell command without the sanitizer preload of `make asan`: the
-- compiler and luarocks are not what that run checks.
local function sh(cmd)
  local quoted = "'" .. cmd:gsub("'", "'\\''") .. "'"
  local pipe = assert(io.popen("env -u LD_PRELOAD sh -c " .. quoted .. " 2>&1"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok, out
end

describe("tokenpolicy-scm-1.rockspec", function()
  it("lists every C source file", function()
    local f = assert(io.open("tokenpolicy-scm-1.rockspec"))
    local spec = f:read("a")
    f:close()
    local _, listing = sh("ls csrc/*.c")
    local count = 0
    for path in listing:gmatch("%S+") do
      count = count + 1
      assert.matches('"' .. path .. '"', spec, 1, true)
    end
    assert.is_true(count >= 5)
  end)

  it("lists every Lua module and the command", function()
    local f = assert(io.open("tokenpolicy-scm-1.rockspec"))
    local spec = f:read("a")
    f:close()
    local _, listing = sh("ls lua/tokenpolicy/*.lua lua/tokenpolicy/*/*.lua 2>/dev/null")
    local count = 0
    for path in listing:gmatch("%S+") do
      count = count + 1
      assert.matches('"' .. path .. '"', spec, 1, true)
    end
    assert.is_true(count >= 8)
    assert.matches('tokenpolicy = "bin/tokenpolicy"', spec, 1, true)
  end)

  it("installs a working module with luarocks make", function()
    local _, tree = sh("mktemp -d")
    tree = tree:gsub("%s+$", "")
    -- Build in a copy: luarocks leaves objects next to the sources.
    local ok, out = sh(("mkdir %q/src && cp -r csrc lua bin tokenpolicy-scm-1.rockspec %q/src && cd %q/src && "
      .. "luarocks --lua-version=%s make --tree %q tokenpolicy-scm-1.rockspec "
      .. "CURL_INCDIR=/usr/include/$(gcc -print-multiarch)"):format(tree, tree, tree, version, tree))
    assert.is_true(ok, out)
    local check = [[
      local tp = require "tokenpolicy"
      assert(package.searchpath("tokenpolicy.core", package.cpath):find(os.getenv("TREE"), 1, true))
      local key = assert(tp.keys('{"kty":"oct","k":"' .. tp.b64url_encode(("k"):rep(32)) .. '"}'))
      assert(tp.verify(tp.sign({ sub = "x", exp = 2 ^ 40 // 1 }, key), key, { algs = { "HS256" } }))
      print(tp._VERSION)
    ]]
    local lua_dir, lib_dir = ("%s/share/lua/%s"):format(tree, version), ("%s/lib/lua/%s"):format(tree, version)
    ok, out = sh(("TREE=%q LUA_PATH='%s/?.lua;%s/?/init.lua' LUA_CPATH='%s/?.so' lua%s -e %q")
      :format(tree, lua_dir, lua_dir, lib_dir, version, check))
    sh("rm -rf " .. ("%q"):format(tree))
    assert.is_true(ok, out)
    assert.are.equal("tokenpolicy 0.1.0\n", out)
  end)
end)
