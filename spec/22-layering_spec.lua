-- The layering rules of docs/architecture.md, checked on the sources, and
-- the facade's own promises: help, a printable null, one option family.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function list(pattern)
  local out = {}
  local p = assert(io.popen("ls " .. pattern .. " 2>/dev/null"))
  for line in p:lines() do
    out[#out + 1] = line
  end
  p:close()
  return out
end

-- Every line of the files matching pattern where lua_pattern matches,
-- comments included (a rule broken in a comment is still worth a look).
local function grep(files, lua_pattern, except)
  local hits = {}
  for _, file in ipairs(files) do
    if not (except and except[file:match("[^/]+$")]) then
      local n = 0
      for line in (read(file) .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        if line:find(lua_pattern) then
          hits[#hits + 1] = ("%s:%d: %s"):format(file, n, line)
        end
      end
    end
  end
  return hits
end

after_each(function() collectgarbage() end)

describe("layering", function()
  local c_files = list("csrc/*.c")
  local lua_files = list("lua/tokenpolicy/*.lua lua/tokenpolicy/*/*.lua")

  it("finds the sources", function()
    assert.is_true(#c_files >= 9)
    assert.is_true(#lua_files >= 6)
  end)

  it("has no C function that loads a Lua module", function()
    assert.are.same({}, grep(c_files, 'getglobal%([^)]*"require"'))
    assert.are.same({}, grep(c_files, "luaL_requiref"))
    assert.are.same({}, grep(c_files, "luaL_dostring"))
    assert.are.same({}, grep(c_files, "luaL_loadstring"))
  end)

  it("registers every class through tp_register_class", function()
    assert.are.same({}, grep(c_files, "luaL_newmetatable", { ["util.c"] = true }))
  end)

  it("reads every options table through the tp_opt family", function()
    -- A hand-written option loop is what says "unknown option" itself.
    assert.are.same({}, grep(c_files, "unknown option", { ["util.c"] = true }))
    assert.are.same({}, grep(c_files, "tp_check_options%(", { ["util.c"] = true }))
    assert.are.same({}, grep(c_files, "^static[^(]*[ *]opt_[%w_]+%("))
    assert.are.same({}, grep(c_files, "^static[^(]*[ *]check_opt_[%w_]+%("))
  end)

  it("keeps Lua away from io.open: files are reached through the core", function()
    assert.are.same({}, grep(lua_files, "io%.open"))
    assert.are.same({}, grep(lua_files, "io%.lines"))
    assert.are.same({}, grep(lua_files, "dofile"))
    assert.are.same({}, grep(lua_files, "loadfile"))
  end)

  it("builds every Lua fail triple in tokenpolicy.util", function()
    assert.are.same({}, grep(lua_files, "local function fail%(", { ["util.lua"] = true }))
    assert.are.same({}, grep(lua_files, "local function check_opts%(", { ["util.lua"] = true }))
  end)
end)

describe("tokenpolicy.util", function()
  local util = require "tokenpolicy.util"

  it("builds the fail triple", function()
    assert.are.equal("not_found: no such thing", expect.fails("not_found", util.fail("not_found", "no such thing")))
  end)

  it("checks options by type and rejects unknown names, naming the caller", function()
    local function public(opts)
      return util.check_opts(opts, { path = "string", uid = "integer", env = "table", any = "any",
                                     list = "string|table" }, "public")
    end
    assert.are.same({}, public(nil))
    assert.are.same({ path = "/x", uid = 3, list = {} }, public { path = "/x", uid = 3, list = {} })
    assert.has_error(function() public { nope = 1 } end, "bad argument #1 to 'public' (unknown option 'nope')")
    assert.has_error(function() public { uid = 1.5 } end,
      "bad argument #1 to 'public' (option 'uid' must be integer, got number)")
    assert.has_error(function() public { list = 1 } end,
      "bad argument #1 to 'public' (option 'list' must be string or table, got number)")
    assert.has_error(function() public { [1] = true } end, "bad argument #1 to 'public' (option names must be strings)")
    assert.has_error(function() public "x" end, "bad argument #1 to 'public' (table expected, got string)")
  end)
end)

describe("tp.help", function()
  it("lists every public function of the module, one line each", function()
    local text = tp.help()
    local names = tp._help_names()
    local listed = {}
    for _, name in ipairs(names) do
      listed[name] = true
      assert.is_not_nil(tp[name], name)
      assert.is_truthy(text:find("\n  " .. name .. " ", 1, true), name)
    end
    for name in pairs(require "tokenpolicy.core") do
      if name:sub(1, 1) ~= "_" then
        assert.is_true(listed[name] == true, name .. " is missing from tp.help()")
      end
    end
    assert.are.equal(#names + 1, select(2, text:gsub("\n", "\n")) + 1)
  end)

  it("shows one function's line, and says so when there is no such function", function()
    assert.are.equal("tokenpolicy.duration(\"1h30m\") -> 5400: Go-style durations (d, h, m, s, ms)\n"
      .. "(docs/api.md has every option and error code)", tp.help "duration")
    assert.are.equal("tokenpolicy has no function 'nope'; tp.help() lists them", tp.help "nope")
    assert.has_error(function() tp.help(1) end, "bad argument #1 to 'help' (string expected, got number)")
  end)
end)

describe("tokenpolicy.null", function()
  it("prints as tokenpolicy.null and is the JSON null both ways", function()
    assert.are.equal("tokenpolicy.null", tostring(tp.null))
    assert.are.equal("userdata", type(tp.null))
    assert.are.equal(tp.null, tp.json_decode("null"))
    assert.are.equal(tp.null, tp.json_decode('{"a":null}').a)
    assert.are.equal('{"a":null}', tp.json_encode { a = tp.null })
  end)

  it("is not confused with another userdata", function()
    local set = tp.keys('{"kty":"oct","k":"' .. tp.b64url_encode(("k"):rep(32)) .. '"}')
    assert.has_error(function() tp.json_encode { a = set } end)
  end)

  it("stays the same value when the core is loaded again", function()
    local saved = package.loaded["tokenpolicy.core"]
    package.loaded["tokenpolicy.core"] = nil
    local again = require "tokenpolicy.core"
    package.loaded["tokenpolicy.core"] = saved
    assert.are.equal(tp.null, again.null)
    assert.are.equal(tp.null, again.json_decode("null"))
  end)
end)

describe("deterministic release", function()
  local dir
  before_each(function()
    dir = expect.new_dir()
  end)
  after_each(function()
    collectgarbage("restart")
    expect.remove_dir(dir)
  end)

  -- Descriptors this process holds on the sandbox (io.open reads
  -- /proc/self in-process; the listing runs in a child, on our pid).  Only
  -- the sandbox's count: libraries may open and close their own meanwhile.
  local function open_fds()
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("l"):match("^(%d+)")
    f:close()
    local n = 0
    local p = assert(io.popen("ls -l /proc/" .. pid .. "/fd"))
    for line in p:lines() do
      if line:find(dir, 1, true) then n = n + 1 end
    end
    p:close()
    return n
  end

  it("a denylist call that fails after taking the lock leaves no lock and no descriptor", function()
    local path = dir .. "/deny"
    local full = assert(tp.denylist(path))
    assert(full:add("a", 4102444800))
    assert(full:add("b", 4102444800))
    local small = assert(tp.denylist(dir .. "/other", { max_size = 8 }))
    os.execute("cp '" .. path .. "' '" .. dir .. "/other'")
    collectgarbage("stop")  -- only the call itself may release what it took
    assert.are.equal(0, open_fds())
    expect.fails("too_large", small:add("c", 4102444800))
    assert.are.equal(0, open_fds())
    -- another process can take the lock at once
    assert.is_true(os.execute("flock -n '" .. dir .. "/other.lock' true"))
  end)
end)
