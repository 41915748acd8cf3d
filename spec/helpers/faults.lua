--- Faults for spec/37-faults_spec.lua: a wall clock for timing calls, and
-- a small tmpfs that can be filled to the last byte (a full disk).
--
--   local faults = require "helpers.faults"
--   local fs = faults.tmpfs("256k")   -- mounted on a fresh 0700 directory
--   ... files under fs.dir ...
--   faults.fill(fs)                    -- from now on every write fails (ENOSPC)
--   faults.unmount(fs)                 -- in a finally: unmounts, removes the dir
--
-- Mounting needs root (the specs run as root; elsewhere they are pending).
local expect = require "helpers.expect"

local faults = {}

local quote = expect.quote

-- Without the sanitizer preload of `make asan`: these programs are not
-- what that run checks.
local CLEAN = "env -u LD_PRELOAD "

--- Seconds since boot, from /proc/uptime (hundredths): a wall clock that
-- no one sets, to time calls against their timeout.
function faults.clock()
  local f = assert(io.open("/proc/uptime", "r"))
  local t = f:read("n")
  f:close()
  return t
end

--- Runs fn(...) and returns the seconds it took, then its results packed.
function faults.timed(fn, ...)
  local start = faults.clock()
  local results = table.pack(fn(...))
  return faults.clock() - start, results
end

--- Mounts a tmpfs of `size` (mount's syntax: "256k") on a new private
-- directory: `{ dir = }`.
function faults.tmpfs(size)
  local dir = expect.new_dir()
  local ok = os.execute(CLEAN .. "mount -t tmpfs -o size=" .. size .. ",mode=0700 tmpfs " .. quote(dir))
  if not ok then
    expect.remove_dir(dir)
    error("cannot mount a tmpfs on " .. dir, 2)
  end
  return { dir = dir }
end

--- Fills the tmpfs to its last byte: every later write to it fails with
-- ENOSPC (creating an empty file still works: tmpfs counts inodes apart).
function faults.fill(fs)
  os.execute(CLEAN .. "dd if=/dev/zero of=" .. quote(fs.dir .. "/.filler") .. " bs=4096 >/dev/null 2>&1")
  -- A page-sized remainder cannot be left: the size is in pages, and dd
  -- writes whole pages until the last one fails.
  local p = assert(io.popen(CLEAN .. "stat -f -c %a " .. quote(fs.dir)))
  local free = tonumber(p:read("l"))
  p:close()
  assert(free == 0, "the tmpfs still has free blocks: " .. tostring(free))
end

--- Frees the tmpfs again (removes the filler).
function faults.unfill(fs)
  os.remove(fs.dir .. "/.filler")
end

--- Unmounts the tmpfs (lazily, should something still hold it) and
-- removes its directory; idempotent.
function faults.unmount(fs)
  if not fs or fs.gone then return end
  fs.gone = true
  os.execute(CLEAN .. "umount " .. quote(fs.dir) .. " 2>/dev/null || " .. CLEAN .. "umount -l " .. quote(fs.dir))
  expect.remove_dir(fs.dir)
end

--- The names in a directory, sorted, without the filler (to show that a
-- failed write left no temporary file behind).
function faults.names(dir)
  local p = assert(io.popen(CLEAN .. "ls -A " .. quote(dir)))
  local names = {}
  for name in p:lines() do
    if name ~= ".filler" then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  return names
end

return faults
