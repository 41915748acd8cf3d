-- The API reference (`make docs`: LDoc over csrc/ and lua/tokenpolicy/, as
-- config.ld says) documents every public function.  The public functions
-- are found, not listed: every name of `require "tokenpolicy"`, every
-- method of every class the C core registers, every function each
-- lua/tokenpolicy module exports, and every method of the Lua classes
-- those functions reach.  LDoc writes an entry only for a doc comment, so a
-- name missing from the generated pages is a function without one.
local tp = require "tokenpolicy"
local core = require "tokenpolicy.core"
local expect = require "helpers.expect"

after_each(function() collectgarbage() end)

-- The anchors of one generated page: { [name] = true }.
local function anchors_of(html)
  local names = {}
  for name in html:gmatch('<a name = "([^"]+)"></a>') do
    names[name] = true
  end
  return names
end

-- Runs LDoc into `dir` (as `make docs` does, into a sandbox) and returns
-- its status and everything it printed.  LDoc's own Lua is not what the
-- sanitizer run checks, hence no preload.
local function ldoc(dir)
  local pipe = assert(io.popen("env -u LD_PRELOAD ldoc --fatalwarnings --testing -d " .. expect.quote(dir)
    .. " . 2>&1", "r"))
  local out = pipe:read("a")
  local ok = pipe:close()
  return ok, out
end

-- The module a Lua function is defined in, from its source file name.
local function module_of_function(fn)
  local source = debug.getinfo(fn, "S").source
  local path = source:match("^@.-lua/(tokenpolicy/.+)%.lua$")
  if not path then return nil end
  return (path:gsub("/init$", ""):gsub("/", "."))
end

-- Every lua/tokenpolicy module, by name.
local function lua_modules()
  local names = {}
  local pipe = assert(io.popen("cd lua && find tokenpolicy -name '*.lua'", "r"))
  for path in pipe:lines() do
    names[#names + 1] = path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
  end
  pipe:close()
  table.sort(names)
  return names
end

-- The methods of a class's metatable: the functions of its __index table,
-- or, when __index is a C function, of the method tables among its
-- upvalues (a table of functions that is not itself a metatable).
local function methods_of(meta)
  local methods = {}
  local function take(t)
    for name, value in pairs(t) do
      if type(name) == "string" and type(value) == "function" and name:sub(1, 2) ~= "__" then
        methods[name] = true
      end
    end
  end
  local index = rawget(meta, "__index")
  if type(index) == "table" then
    take(index)
  elseif type(index) == "function" then
    for i = 1, math.huge do
      local name, value = debug.getupvalue(index, i)
      if name == nil then break end
      if type(value) == "table" and rawget(value, "__name") == nil then take(value) end
    end
  end
  return methods
end

-- The classes of the C core, from the registry: { [short name] = methods }.
local function c_classes()
  local classes = {}
  for name, meta in pairs(debug.getregistry()) do
    if type(name) == "string" and name:match("^tokenpolicy%.") and type(meta) == "table"
        and rawget(meta, "__name") == name then
      classes[name:sub(#"tokenpolicy." + 1)] = methods_of(meta)
    end
  end
  return classes
end

-- The classes the Lua modules define, found among the upvalues of their
-- functions (recursively, within lua/tokenpolicy): a table that is its
-- own __index, named by its upvalue.  { ["module Class"] = {module=, class=, methods=} }.
local function lua_classes(modules)
  local classes, seen = {}, {}
  local function visit(fn)
    if seen[fn] or not module_of_function(fn) then return end
    seen[fn] = true
    for i = 1, math.huge do
      local name, value = debug.getupvalue(fn, i)
      if name == nil then break end
      if type(value) == "function" then
        visit(value)
      elseif type(value) == "table" and rawget(value, "__index") == value and not seen[value] then
        seen[value] = true
        local methods = methods_of(value)
        local module
        for method in pairs(methods) do
          module = module_of_function(value[method])
          visit(value[method])
        end
        if module then
          classes[module .. " " .. name] = { module = module, class = name, methods = methods }
        end
      end
    end
  end
  for _, module in pairs(modules) do
    for _, value in pairs(module) do
      if type(value) == "function" then visit(value) end
    end
  end
  return classes
end

describe("the API reference (make docs)", function()
  local dir, ok, out
  local pages = {}

  -- The anchors of a module's page, loaded once.
  local function documented(module)
    if pages[module] == nil then
      pages[module] = anchors_of(expect.read_file(dir .. "/modules/" .. module .. ".html", true))
    end
    return pages[module]
  end

  -- The names of `list` ({ {module, name}, ... }) that have no entry.
  local function missing(list)
    local out_list = {}
    for _, item in ipairs(list) do
      if not documented(item[1])[item[2]] then
        out_list[#out_list + 1] = item[1] .. ": " .. item[2]
      end
    end
    table.sort(out_list)
    return out_list
  end

  lazy_setup(function()
    dir = expect.new_dir()
    ok, out = ldoc(dir)
  end)

  lazy_teardown(function()
    expect.remove_dir(dir)
  end)

  it("is generated from config.ld without a warning", function()
    assert.is_true(ok, out)
    local other = {}
    for line in out:gmatch("[^\n]+") do
      if not (line:match("^reading configuration from ") or line:match("^found master module")
              or line:match("^output written to ")) then
        other[#other + 1] = line
      end
    end
    assert.are.same({}, other)
    assert.is_true(#expect.read_file(dir .. "/index.html") > 0)
  end)

  it("documents every name of require \"tokenpolicy\"", function()
    local list = {}
    for name, value in pairs(tp) do
      -- a Lua function is documented in the module that defines it, the
      -- core's functions and values in tokenpolicy.core
      local module = type(value) == "function" and module_of_function(value)
      if not module then
        assert.are.equal(core[name], value, name)
        module = "tokenpolicy.core"
      end
      list[#list + 1] = { module, name }
    end
    assert.is_true(#list > 50)
    assert.are.same({}, missing(list))
  end)

  it("documents every method of every class of the C core", function()
    local list, count = {}, 0
    for class, methods in pairs(c_classes()) do
      count = count + 1
      for method in pairs(methods) do
        list[#list + 1] = { "tokenpolicy.core", class .. ":" .. method }
      end
    end
    assert.is_true(count >= 10)
    assert.is_true(#list >= 20)
    assert.are.same({}, missing(list))
  end)

  -- (`tokenpolicy` itself is the spec above: most of its functions are the core's.)
  it("documents every function every lua/tokenpolicy module exports", function()
    local list, modules = {}, {}
    for _, name in ipairs(lua_modules()) do
      modules[name] = require(name)
      for key, value in pairs(modules[name]) do
        if type(value) == "function" and name ~= "tokenpolicy" then
          list[#list + 1] = { name, key }
        end
      end
    end
    assert.is_not_nil(modules["tokenpolicy.store.memory"])
    assert.are.same({}, missing(list))
  end)

  it("documents every method of the classes of the Lua modules", function()
    local modules = {}
    for _, name in ipairs(lua_modules()) do
      modules[name] = require(name)
    end
    local list, found = {}, {}
    for key, class in pairs(lua_classes(modules)) do
      found[#found + 1] = key
      for method in pairs(class.methods) do
        list[#list + 1] = { class.module, class.class .. ":" .. method }
      end
    end
    table.sort(found)
    -- the classes are found, not listed: a few that must be among them
    for _, key in ipairs { "tokenpolicy.ini Config", "tokenpolicy.store.memory Store",
                           "tokenpolicy.migrate Check", "tokenpolicy.haproxy Gateway" } do
      assert.is_truthy(table.concat(found, ","):find(key, 1, true), key)
    end
    assert.are.same({}, missing(list))
  end)
end)
