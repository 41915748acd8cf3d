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

return expect
