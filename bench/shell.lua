--- What the benchmark drivers (bench/run.lua, bench/haproxy/run.lua,
-- bench/migrate.lua) share: running commands and reading and writing
-- their own scratch files. Benchmarks only; the library reaches files
-- through the core.
local shell = {}

--- A string as one single-quoted POSIX shell word.
function shell.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a command; raises, naming it, when it fails.
function shell.run(command)
  local ok, how, code = os.execute(command)
  if not ok then
    error(string.format("command failed (%s %s): %s", how, code, command), 2)
  end
end

--- A command's standard output; raises when the command fails.
function shell.capture(command)
  local pipe = assert(io.popen(command, "r"))
  local output = pipe:read("a")
  local ok, how, code = pipe:close()
  if not ok then
    error(string.format("command failed (%s %s): %s", how, code, command), 2)
  end
  return output
end

--- Writes a scratch file whole.
function shell.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

--- Reads a file whole.
function shell.read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

return shell
