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

return expect
