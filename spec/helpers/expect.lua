--- Assertions shared by the specs.
local luassert = require "luassert"

local expect = {}

--- Asserts the fail triple with `code` (message starting "code: ") and
-- returns the message.
function expect.fails(code, ...)
  local value, msg, got = ...
  luassert.is_nil(value)
  luassert.are.equal(code, got, msg)
  luassert.are.equal(code .. ": ", msg:sub(1, #code + 2))
  return msg
end

--- A private (0700) temporary directory, and its removal.
function expect.new_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 0700 " .. dir))
  return dir
end

function expect.remove_dir(dir)
  os.execute("rm -rf " .. dir)
end

--- A string as one single-quoted POSIX shell word.
function expect.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- A file's whole text; raises when it cannot be read, unless
-- `missing_ok`, when an unreadable file reads as "".
function expect.read_file(path, missing_ok)
  local f, err = io.open(path, "rb")
  if not f then
    if missing_ok then return "" end
    error(err, 2)
  end
  local text = f:read("a")
  f:close()
  return text
end

--- Writes a file whole (a spec's own scratch file).
function expect.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- Runs bin/tokenpolicy with the list args under `env -i` (a PATH, the Lua
-- under test and its build, the sanitizer settings of `make asan`, plus
-- the table env) with no stdin: `{ code =, out =, err = }`.
function expect.run_cli(args, env)
  local lua = "lua" .. _VERSION:match("%d+%.%d+")
  local build = os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. _VERSION:match("%d+%.%d+"))
  local words = { "env", "-i", "PATH=/usr/bin:/bin", "TOKENPOLICY_LUA=" .. lua, "TOKENPOLICY_BUILD=" .. build }
  for _, name in ipairs { "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" } do
    if os.getenv(name) then words[#words + 1] = expect.quote(name .. "=" .. os.getenv(name)) end
  end
  for k, v in pairs(env or {}) do words[#words + 1] = expect.quote(k .. "=" .. v) end
  words[#words + 1] = "bin/tokenpolicy"
  for _, a in ipairs(args) do words[#words + 1] = expect.quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local _, _, code = os.execute(table.concat(words, " ") .. " </dev/null >" .. out .. " 2>" .. err)
  local result = { code = code, out = expect.read_file(out), err = expect.read_file(err) }
  os.remove(out)
  os.remove(err)
  return result
end

return expect
