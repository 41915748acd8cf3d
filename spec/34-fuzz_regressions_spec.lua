-- What fuzzing found stays fixed: every input the fuzz targets crashed on is
-- committed under fuzz/regressions/<target>/ and replayed here through the
-- target itself (fuzz/replay.lua: the target's own oracles, without
-- libFuzzer or clang, on this Lua and this build of the core), and each
-- bug has its own spec below, with the exact result the fix gives.
-- docs/fuzzing.md says how the targets run (`make fuzz`).
local discovery = require "tokenpolicy.discovery"

local VERSION = _VERSION:match("%d+%.%d+")
local LUA = "lua" .. VERSION
local BUILD = os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. VERSION)

-- Commands run without the sanitizer preload of `make asan`, under which
-- LeakSanitizer aborts tools that never free (mktemp).
local SH = "env -u LD_PRELOAD "

local function lines_of(cmd)
  local pipe = assert(io.popen(SH .. cmd, "r"))
  local list = {}
  for line in pipe:lines() do list[#list + 1] = line end
  pipe:close()
  return list
end

-- Runs fuzz/replay.lua on files; its whole stdout and exit status.
local function replay(target, files)
  local quoted = {}
  for i, f in ipairs(files) do quoted[i] = "'" .. f .. "'" end
  local cmd = ("LUA_PATH='lua/?.lua;lua/?/init.lua;fuzz/?.lua;;' LUA_CPATH='%s/?.so;;' %s fuzz/replay.lua %s %s"
    .. " </dev/null 2>&1"):format(BUILD, LUA, target, table.concat(quoted, " "))
  local pipe = assert(io.popen(cmd, "r"))
  local out = pipe:read("a")
  local _, _, status = pipe:close()
  return out, status
end

-- A sandbox directory, removed after each spec.
local function sandbox()
  return assert(io.popen(SH .. "mktemp -d"):read("l"))
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- bin/tokenpolicy with args (quoted here): its stdout and stderr together,
-- and its exit status.
local function tokenpolicy(args)
  local cmd = ("TOKENPOLICY_LUA=%s TOKENPOLICY_BUILD=%s bin/tokenpolicy %s </dev/null 2>&1"):format(LUA, BUILD, args)
  local pipe = assert(io.popen(cmd, "r"))
  local out = pipe:read("a")
  local _, _, status = pipe:close()
  return out, status
end

describe("fuzz regressions", function()
  after_each(function() collectgarbage() end)

  describe("every committed crash input, replayed through its target", function()
    for _, target in ipairs(lines_of("ls fuzz/regressions")) do
      local files = lines_of("ls -d fuzz/regressions/" .. target .. "/*")
      it(("fuzz/regressions/%s/ (%d inputs) passes fuzz/%s.lua's oracles"):format(target, #files, target), function()
        assert.is_true(#files > 0)
        local out, status = replay(target, files)
        assert.are.equal(("ok %d inputs\n"):format(#files), out)
        assert.are.equal(0, status)
      end)
    end
  end)

  describe("every committed seed, replayed through its target", function()
    for _, target in ipairs(lines_of("ls fuzz/corpus")) do
      local files = lines_of("ls -d fuzz/corpus/" .. target .. "/*")
      it(("fuzz/corpus/%s/ (%d seeds) passes fuzz/%s.lua's oracles"):format(target, #files, target), function()
        assert.is_true(#files > 0)
        local out, status = replay(target, files)
        assert.are.equal(("ok %d inputs\n"):format(#files), out)
        assert.are.equal(0, status)
      end)
    end
  end)

  describe("the replay tool", function()
    it("reports an input that breaks an oracle, with the input's name", function()
      local dir = sandbox()
      local target = write(dir .. "/selftest.lua",
        'return function(data) require("fuzzlib").finding("selftest", "input " .. data) end')
      write(dir .. "/in", "x")
      local out, status = replay(target, { dir .. "/in" })
      os.execute(SH .. "rm -rf '" .. dir .. "'")
      assert.are.equal(1, status)
      assert.matches("^FAILED " .. dir:gsub("%p", "%%%0") .. "/in: [^\n]*FINDING in selftest: input x", out)
    end)
  end)

  describe("tokenpolicy verify --alg (found by fuzz/cli)", function()
    -- verify raises on an algorithm name it does not support; the CLI
    -- passed --alg through and reported an internal error.
    for _, alg in ipairs { "HS271", "none", "rs256" } do
      it(("refuses --alg %s as a usage error (exit 2), not an internal error"):format(alg), function()
        local out, status = tokenpolicy("verify --jwks /dev/null --alg " .. alg .. " some.token.text")
        assert.are.equal("tokenpolicy: argument for option '--alg' must be one of 'RS256', 'RS384', 'RS512', "
          .. "'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384', 'HS512'; "
          .. "see 'tokenpolicy verify --help'\n", out)
        assert.are.equal(2, status)
      end)
    end

    it("still takes every supported algorithm", function()
      local out, status = tokenpolicy("verify --jwks /dev/null --alg HS256 --alg EdDSA --alg PS512 some.token.text")
      assert.are.equal("tokenpolicy: cannot read --jwks: io: read_config: /dev/null is a character device, "
        .. "not a regular file; give a JWKS/PEM file or an https URL\n", out)
      assert.are.equal(2, status)
    end)
  end)

  describe("rucio.cfg (found by fuzz/rucio_cfg)", function()
    local dir
    before_each(function() dir = sandbox() end)
    after_each(function() os.execute(SH .. "rm -rf '" .. dir .. "'") end)

    local function discover_with(cfg)
      local path = write(dir .. "/rucio.cfg", cfg)
      return discovery.discover { scheme = "rucio", uid = 4242,
        env = { RUCIO_CONFIG = path, TMPDIR = dir, LOGNAME = "fuzz", HOME = dir } }
    end

    -- Python's open() refuses a path with a NUL byte, so the Rucio client
    -- stops; discover used to hand the path to stat, which raises.
    for _, case in ipairs {
      { "auth_token_file_path", "[client]\nhome = /n\0x\nauth_token_file_path = %(home)s/token\n" },
      { "account", "[client]\naccount = jd\0oe\n" },
      { "vo", "[client]\naccount = jdoe\nvo = at\0las\n" },
    } do
      it(("stops the Rucio scheme on a NUL byte in [client] %s, instead of raising"):format(case[1]), function()
        local list = discover_with(case[2])
        assert.is_true(#list >= 1)
        for _, c in ipairs(list) do
          assert.are.equal("rucio", c.scheme)
          assert.is_false(c.active)
          assert.are.equal(("malformed: [client] %s holds a NUL byte: the Rucio client stops on it"):format(case[1]),
            c.problem)
        end
      end)
    end

    it("still reads a config without NUL bytes", function()
      local list = discover_with("[client]\naccount = jdoe\n")
      assert.are.equal("jdoe", list[1].account)
      assert.is_nil(list[1].problem)
      assert.is_true(list[1].active)
    end)
  end)

end)
