-- `luarocks make tokenpolicy-scm-1.rockspec`, run in the checkout with
-- Debian's own luarocks (which runs under Lua 5.1), into a temporary tree:
-- the Lua it builds for, what it installs, that it all runs from that tree
-- alone, and that it leaves nothing in the checkout (docs/install.md).
local expect = require "helpers.expect"

local quote = expect.quote
local VERSION = _VERSION:match("%d+%.%d+")

-- Runs a shell command without the sanitizer preload of `make asan` (the
-- compiler and luarocks are not what that run checks) and with a sandbox
-- HOME, so that no user luarocks config is read: `ok, output`.
local function sh(cmd, home)
  local pipe = assert(io.popen(("env -u LD_PRELOAD HOME=%s sh -c %s 2>&1"):format(quote(home), quote(cmd))))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok, out
end

-- The lines of a command's output, sorted, as a list.
local function lines(cmd, home)
  local ok, out = sh(cmd, home)
  assert(ok, out)
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = line end
  table.sort(list)
  return list
end

describe("tokenpolicy-scm-1.rockspec", function()
  local sandbox, tree, home, status_before, make_ok, make_out

  lazy_setup(function()
    sandbox = expect.new_dir()
    tree, home = sandbox .. "/tree", sandbox .. "/home"
    assert(os.execute("mkdir " .. quote(home)))
    status_before = lines("git status --porcelain --ignored", home)
    -- Under Lua 5.4 exactly what the README says, no flag at all; under
    -- 5.3 the one flag docs/install.md gives for it.
    local flag = VERSION == "5.4" and "" or "--lua-version=" .. VERSION .. " "
    make_ok, make_out = sh(("luarocks %smake --tree %s tokenpolicy-scm-1.rockspec"):format(flag, quote(tree)), home)
  end)

  lazy_teardown(function()
    expect.remove_dir(sandbox)
  end)

  after_each(function() collectgarbage() end)

  it("is built for Lua 5.4 by default in the checkout, although Debian's luarocks runs under 5.1", function()
    local ok, out = sh("luarocks config lua_version", home)
    assert.is_true(ok, out)
    assert.are.equal("5.4\n", out)
  end)

  it("builds and installs without extra variables (curl.h in the multiarch include directory)", function()
    assert.is_true(make_ok, make_out)
    assert.matches("tokenpolicy scm-1 is now installed in " .. tree, make_out, 1, true)
  end)

  it("installs every lua/tokenpolicy/**/*.lua, and nothing else, as Lua modules", function()
    local expected = lines("cd lua && find tokenpolicy -type f", home)
    assert.is_true(#expected >= 13)
    local installed = lines(("cd %s/share/lua/%s && find . -type f | sed 's|^\\./||'")
      :format(quote(tree), VERSION), home)
    assert.are.same(expected, installed)
  end)

  it("installs a working core and library, loaded from the tree alone", function()
    local check = [[
      local tp = require "tokenpolicy"
      for _, name in ipairs { "tokenpolicy", "tokenpolicy.cli", "tokenpolicy.store.files" } do
        assert(package.searchpath(name, package.path):find(os.getenv("TREE"), 1, true) == 1, name)
        require(name)
      end
      assert(package.searchpath("tokenpolicy.core", package.cpath):find(os.getenv("TREE"), 1, true) == 1)
      local key = assert(tp.keys('{"kty":"oct","k":"' .. tp.b64url_encode(("k"):rep(32)) .. '"}'))
      assert(tp.verify(tp.sign({ sub = "x", exp = 2 ^ 40 // 1 }, key), key, { algs = { "HS256" } }))
      print(tp._VERSION)
    ]]
    -- LUA_PATH ends in ";;" for Debian's lua-argparse; the run is in the
    -- sandbox, so the default "./?.lua" finds nothing of the checkout.
    local lua_dir, lib_dir = ("%s/share/lua/%s"):format(tree, VERSION), ("%s/lib/lua/%s"):format(tree, VERSION)
    local ok, out = sh(("cd %s && env -i PATH=/usr/bin:/bin TREE=%s LUA_PATH=%s LUA_CPATH=%s lua%s -e %s"):format(
      quote(home), quote(tree), quote(lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;;"),
      quote(lib_dir .. "/?.so"), VERSION, quote(check)), home)
    assert.is_true(ok, out)
    assert.are.equal("tokenpolicy 0.1.0\n", out)
  end)

  it("installs the command, which runs from the tree with no LUA_PATH", function()
    local ok, out = sh(("cd %s && env -i PATH=/usr/bin:/bin HOME=%s %s/bin/tokenpolicy --version"):format(
      quote(home), quote(home), quote(tree)), home)
    assert.is_true(ok, out)
    assert.are.equal("tokenpolicy 0.1.0\n", out)
    ok, out = sh(("head -c 300 %s/bin/tokenpolicy"):format(quote(tree)), home)
    assert.is_true(ok, out)
    assert.matches("/usr/bin/lua" .. VERSION, out, 1, true)
  end)

  it("installs the docs in the rock's directory", function()
    local expected = lines("cd docs && ls", home)
    assert.is_true(#expected >= 10)
    local rock = ("%s/lib/luarocks/rocks-%s/tokenpolicy/scm-1/docs"):format(tree, VERSION)
    assert.are.same(expected, lines("cd " .. quote(rock) .. " && ls", home))
  end)

  it("leaves nothing in the checkout, not even an ignored file", function()
    assert.is_true(make_ok, make_out)
    assert.are.same(status_before, lines("git status --porcelain --ignored", home))
  end)
end)
