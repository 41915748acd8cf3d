-- `make install` and `make uninstall` into a temporary DESTDIR (PREFIX is
-- the default /usr/local): exactly the expected files, the installed
-- command run under Lua 5.4 and 5.3 with nothing from the checkout, and an
-- uninstall that removes what install put and nothing else
-- (docs/install.md).
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local quote, slurp = expect.quote, expect.read_file
local VERSION = _VERSION:match("%d+%.%d+")
local PREFIX = "/usr/local"
-- The build the suite runs on (build, or build-asan under `make asan`).
local BUILD = (os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. VERSION)):match("^(.*)/[^/]+$")
local VERSIONS = { "5.4", "5.3" }

-- Runs a shell command, `ok, output`.  make and the shell run without the
-- sanitizer preload of `make asan` (they are not what it checks).
local function sh(cmd)
  local pipe = assert(io.popen("env -u LD_PRELOAD sh -c " .. quote(cmd) .. " 2>&1"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok, out
end

-- The lines of a command's output, sorted.
local function lines(cmd)
  local ok, out = sh(cmd)
  assert(ok, out)
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = line end
  table.sort(list)
  return list
end

-- `make TARGET DESTDIR=dest` in the checkout.  The modules the suite runs
-- on are taken as they are (-o: never rebuilt here), so the spec neither
-- compiles nor touches the build other specs are loading.
local function make(target, dest)
  local words = { "make", "--no-print-directory", target, "DESTDIR=" .. quote(dest), "BUILD=" .. quote(BUILD) }
  for _, v in ipairs(VERSIONS) do words[#words + 1] = "-o " .. quote(BUILD .. "/" .. v .. "/tokenpolicy/core.so") end
  return sh(table.concat(words, " "))
end

-- What install must put, relative to DESTDIR, from the checkout's files
-- found here independently of the Makefile's own lists.
local function expected_files()
  local files = { PREFIX .. "/bin/tokenpolicy", PREFIX .. "/share/tokenpolicy/install-manifest" }
  local modules = lines("cd lua && find tokenpolicy -type f -name '*.lua'")
  for _, v in ipairs(VERSIONS) do
    files[#files + 1] = ("%s/lib/lua/%s/tokenpolicy/core.so"):format(PREFIX, v)
    for _, m in ipairs(modules) do files[#files + 1] = ("%s/share/lua/%s/%s"):format(PREFIX, v, m) end
  end
  for _, page in ipairs(lines("ls man 2>/dev/null | grep '\\.[0-9]$' || true")) do
    files[#files + 1] = ("%s/share/man/man%s/%s"):format(PREFIX, page:sub(-1), page)
  end
  for _, doc in ipairs(lines("cd docs && ls *.md *.svg")) do
    files[#files + 1] = PREFIX .. "/share/doc/tokenpolicy/" .. doc
  end
  table.sort(files)
  return files, #modules
end

-- Every file under dest, relative to it.
local function files_under(dest)
  return lines(("cd %s && find . -type f -o -type l | sed 's|^\\.||'"):format(quote(dest)))
end

-- Runs the installed command with `args` under `lua`, with env -i: the
-- interpreter, a PATH, a sandbox HOME and cwd, the DESTDIR tree on
-- LUA_PATH/LUA_CPATH (then the system's own paths, for lua-argparse), and
-- the sanitizer settings of `make asan`.  `{ code =, out =, err = }`.
local function run_installed(dest, home, lua, args, stdin)
  local v = lua:match("%d+%.%d+")
  local share, lib = dest .. PREFIX .. "/share/lua/" .. v, dest .. PREFIX .. "/lib/lua/" .. v
  local env = {
    PATH = "/usr/bin:/bin", HOME = home, TOKENPOLICY_LUA = lua,
    LUA_PATH = share .. "/?.lua;" .. share .. "/?/init.lua;;", LUA_CPATH = lib .. "/?.so;;",
  }
  for _, name in ipairs { "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" } do env[name] = os.getenv(name) end
  local words = { "cd", quote(home), "&&", "env", "-i" }
  for k, val in pairs(env) do words[#words + 1] = quote(k .. "=" .. val) end
  words[#words + 1] = quote(dest .. PREFIX .. "/bin/tokenpolicy")
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  local input, out, err = os.tmpname(), os.tmpname(), os.tmpname()
  expect.write_file(input, stdin or "")
  local _, _, code = os.execute(table.concat(words, " ") .. " <" .. input .. " >" .. out .. " 2>" .. err)
  local result = { code = code, out = slurp(out), err = slurp(err) }
  os.remove(input)
  os.remove(out)
  os.remove(err)
  return result
end

describe("make install", function()
  local sandbox, dest, home, install_ok, install_out

  lazy_setup(function()
    sandbox = expect.new_dir()
    dest, home = sandbox .. "/dest", sandbox .. "/home"
    assert(os.execute("mkdir " .. quote(home)))
    install_ok, install_out = make("install", dest)
  end)

  lazy_teardown(function()
    expect.remove_dir(sandbox)
  end)

  after_each(function() collectgarbage() end)

  it("puts exactly the expected files: each Lua's core, every Lua module, the command, man pages, docs", function()
    assert.is_true(install_ok, install_out)
    local expected, modules = expected_files()
    assert.is_true(modules >= 13)
    assert.are.same(expected, files_under(dest))
  end)

  it("copies the Lua modules and the command byte for byte (no path is written into them)", function()
    assert.is_true(install_ok, install_out)
    for _, m in ipairs(lines("cd lua && find tokenpolicy -type f -name '*.lua'")) do
      for _, v in ipairs(VERSIONS) do
        assert.are.equal(slurp("lua/" .. m), slurp(("%s%s/share/lua/%s/%s"):format(dest, PREFIX, v, m)), m)
      end
    end
    assert.are.equal(slurp("bin/tokenpolicy"), slurp(dest .. PREFIX .. "/bin/tokenpolicy"))
    assert.is_true(os.execute("test -x " .. quote(dest .. PREFIX .. "/bin/tokenpolicy")))
  end)

  it("fetches and installs nothing else on the way (no deps, no apt-get, no network)", function()
    local ok, out = sh("make -n install DESTDIR=/nonexistent BUILD=" .. quote(BUILD)
      .. " -o " .. quote(BUILD .. "/5.4/tokenpolicy/core.so") .. " -o " .. quote(BUILD .. "/5.3/tokenpolicy/core.so"))
    assert.is_true(ok, out)
    for _, word in ipairs { "apt-get", "dpkg", "curl ", "wget", "git ", "luarocks" } do
      assert.is_nil(out:find(word, 1, true), word)
    end
  end)

  for _, lua in ipairs { "lua5.4", "lua5.3" } do
    describe("the installed command under " .. lua, function()
      it("answers --help", function()
        assert.is_true(install_ok, install_out)
        local r = run_installed(dest, home, lua, { "--help" })
        assert.are.equal(0, r.code, r.err)
        assert.matches("^Usage: tokenpolicy ", r.out)
        assert.are.equal("", r.err)
      end)

      it("inspects a token from stdin, with the library and core of the DESTDIR tree", function()
        assert.is_true(install_ok, install_out)
        local key = assert(tp.keys('{"kty":"oct","k":"' .. tp.b64url_encode(("k"):rep(32)) .. '"}'))
        local token = tp.sign({ iss = "https://idp.example.org", sub = "alice", exp = 4102444800 }, key)
        local r = run_installed(dest, home, lua, { "inspect", "--json", "-" }, token)
        assert.are.equal(0, r.code, r.err)
        assert.matches('"sub":"alice"', r.out, 1, true)
        assert.matches('"exp":4102444800', r.out, 1, true)
        assert.matches('"kind":"jwt"', r.out, 1, true)
        assert.is_nil(r.out:find(token, 1, true))
      end)

      it("loads every module from the DESTDIR tree, none from the checkout", function()
        assert.is_true(install_ok, install_out)
        local v = lua:match("%d+%.%d+")
        local check = ("cd %s && env -i PATH=/usr/bin:/bin LUA_PATH=%s LUA_CPATH=%s %s -e %s"):format(quote(home),
          quote(("%s%s/share/lua/%s/?.lua;%s%s/share/lua/%s/?/init.lua;;"):format(dest, PREFIX, v, dest, PREFIX, v)),
          quote(("%s%s/lib/lua/%s/?.so;;"):format(dest, PREFIX, v)), lua, quote([[
            for _, name in ipairs { "tokenpolicy", "tokenpolicy.cli", "tokenpolicy.store.memory" } do
              io.write(package.searchpath(name, package.path), "\n")
            end
            io.write(package.searchpath("tokenpolicy.core", package.cpath), "\n")
          ]]))
        local ok, out = sh(check)
        assert.is_true(ok, out)
        local root = dest .. PREFIX
        assert.are.equal(table.concat({
          ("%s/share/lua/%s/tokenpolicy/init.lua"):format(root, v),
          ("%s/share/lua/%s/tokenpolicy/cli.lua"):format(root, v),
          ("%s/share/lua/%s/tokenpolicy/store/memory.lua"):format(root, v),
          ("%s/lib/lua/%s/tokenpolicy/core.so"):format(root, v),
        }, "\n") .. "\n", out)
      end)
    end)
  end
end)

describe("make uninstall", function()
  local sandbox, dest

  before_each(function()
    sandbox = expect.new_dir()
    dest = sandbox .. "/dest"
  end)

  after_each(function()
    expect.remove_dir(sandbox)
    collectgarbage()
  end)

  it("leaves nothing behind in a DESTDIR install created", function()
    local ok, out = make("install", dest)
    assert.is_true(ok, out)
    ok, out = make("uninstall", dest)
    assert.is_true(ok, out)
    assert.are.same({}, lines("cd " .. quote(dest) .. " && find . -mindepth 1"))
  end)

  it("removes only what install put: other files and directories that were there stay", function()
    local before = {
      "d " .. PREFIX .. "/bin",
      "f " .. PREFIX .. "/bin/other-tool",
      "d " .. PREFIX .. "/share/man/man1",
      "f " .. PREFIX .. "/share/lua/5.4/other.lua",
      "d " .. PREFIX .. "/lib/lua/5.3",
    }
    for _, entry in ipairs(before) do
      local kind, path = entry:match("^(%a) (.*)$")
      if kind == "d" then
        assert(os.execute("mkdir -p " .. quote(dest .. path)))
      else
        assert(os.execute("mkdir -p " .. quote((dest .. path):match("^(.*)/"))))
        expect.write_file(dest .. path, "not tokenpolicy's\n")
      end
    end
    local snapshot = lines("cd " .. quote(dest) .. " && find . -mindepth 1")
    local ok, out = make("install", dest)
    assert.is_true(ok, out)
    -- A second install over the first (an upgrade) is uninstalled as one.
    ok, out = make("install", dest)
    assert.is_true(ok, out)
    ok, out = make("uninstall", dest)
    assert.is_true(ok, out)
    assert.are.same(snapshot, lines("cd " .. quote(dest) .. " && find . -mindepth 1"))
    assert.are.equal("not tokenpolicy's\n", slurp(dest .. PREFIX .. "/bin/other-tool"))
  end)

  it("says so, and succeeds, when nothing is installed", function()
    local ok, out = make("uninstall", dest)
    assert.is_true(ok, out)
    assert.matches("tokenpolicy is not installed under " .. dest .. PREFIX, out, 1, true)
  end)
end)
