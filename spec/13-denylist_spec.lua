-- Denylist: a persistent jti list shared by processes (csrc/denylist.c).
--
-- Everything happens in a sandbox directory made for each test, in /dev/shm
-- when there is one: the concurrency and crash specs rewrite the file
-- thousands of times, and syncing a tmpfs costs nothing (a SIGKILL tests
-- the rename, not the disk).
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local LUA = "lua" .. _VERSION:match("%d+%.%d+")
local WRITER = "spec/helpers/denylist_writer.lua"
local BASE = os.execute("test -d /dev/shm -a -w /dev/shm") and "/dev/shm" or "/tmp"

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function sh(command)
  local ok = os.execute(command)
  assert(ok, command)
end

describe("denylist", function()
  local dir, path
  before_each(function()
    dir = assert(io.popen("env -u LD_PRELOAD mktemp -d " .. BASE .. "/tp-denylist.XXXXXX")):read("l")
    path = dir .. "/denied"
  end)
  after_each(function()
    os.execute("rm -rf " .. dir)
    collectgarbage()
  end)

  describe("semantics", function()
    it("treats a missing file as an empty list and creates it on the first add", function()
      local list = assert(tp.denylist(path))
      assert.are.equal(0, list:count())
      assert.is_false(list:contains("a", 0))
      assert.is_nil(io.open(path))
      assert.is_true(list:add("a", 100))
      assert.are.equal("a 100\n", read_file(path))
      assert.are.equal("file", tp.stat(path).type)
      assert.are.equal(tonumber("600", 8), tp.stat(path).mode)
      assert.are.equal(tonumber("600", 8), tp.stat(path .. ".lock").mode)
    end)

    it("denies while now < exp", function()
      local list = assert(tp.denylist(path))
      assert(list:add("jti-1", 1000))
      assert.is_true(list:contains("jti-1", -5))
      assert.is_true(list:contains("jti-1", 999))
      assert.is_false(list:contains("jti-1", 1000))
      assert.is_false(list:contains("jti-1", 1001))
      assert.is_false(list:contains("jti-2", 0))
    end)

    it("uses the clock when now is left out", function()
      local list = assert(tp.denylist(path))
      assert(list:add("past", os.time() - 10))
      assert(list:add("future", os.time() + 3600))
      assert.is_false(list:contains("past"))
      assert.is_true(list:contains("future"))
    end)

    it("keeps the later expiry when a jti is added twice", function()
      local list = assert(tp.denylist(path))
      assert(list:add("j", 200))
      assert(list:add("j", 100))
      assert.are.equal(1, list:count())
      assert.is_true(list:contains("j", 150))
      assert(list:add("j", 300))
      assert.is_true(list:contains("j", 250))
      -- the journal: the later expiry is appended, the earlier one wrote nothing
      assert.are.equal("j 200\nj 300\n", read_file(path))
    end)

    it("purges entries whose exp <= now and says how many", function()
      local list = assert(tp.denylist(path))
      for i = 1, 10 do assert(list:add("j" .. i, 100 + i)) end
      assert.are.equal(0, list:purge(100))
      assert.are.equal(10, list:count())
      assert.are.equal(3, list:purge(103))
      assert.are.equal(7, list:count())
      assert.is_false(list:contains("j3", 0))
      assert.is_true(list:contains("j4", 0))
      assert.are.equal(7, assert(tp.denylist(path)):count())
      assert.are.equal(7, list:purge(1000))
      assert.are.equal(0, list:count())
      assert.are.equal("", read_file(path))
    end)

    it("accepts negative and large expiries", function()
      local list = assert(tp.denylist(path))
      assert(list:add("neg", -5))
      assert(list:add("big", math.maxinteger))
      local again = assert(tp.denylist(path))
      assert.is_true(again:contains("neg", -6))
      assert.is_false(again:contains("neg", -5))
      assert.is_true(again:contains("big", math.maxinteger - 1))
    end)

    it("persists across objects", function()
      local a = assert(tp.denylist(path))
      assert(a:add("x", 50))
      assert(a:add("y", 60))
      local b = assert(tp.denylist(path))
      assert.are.equal(2, b:count())
      assert.is_true(b:contains("y", 59))
      assert(b:add("z", 70))
      assert.is_false(a:contains("z", 0))
      assert(a:add("w", 80))  -- a writer merges what is on disk first
      assert.is_true(a:contains("z", 0))
      assert.are.equal(4, a:count())
    end)

    it("reloads another object's writes, and only a stat when nothing changed", function()
      local a = assert(tp.denylist(path))
      local b = assert(tp.denylist(path))
      assert.is_false(b:reload())  -- missing then, missing now
      assert(a:add("x", 50))
      assert.is_false(b:contains("x", 0))
      assert.is_true(b:reload())
      assert.is_true(b:contains("x", 0))
      assert.are.equal(1, b:count())
      assert.is_false(b:reload())
      assert.is_false(a:reload())  -- its own write is known
      -- An unchanged file is not read again: make it unreadable as a list
      -- but keep its identity (same inode, size and mtime).
      local st = assert(tp.stat(path))
      local f = assert(io.open(path, "r+"))
      f:write(" ")
      f:close()
      sh(("touch -d @%d.%09d %s"):format(st.mtime, st.mtime_ns, path))
      assert.are.same(st, assert(tp.stat(path)))
      assert.is_false(b:reload())
      assert.are.equal(1, b:count())
      local ok, msg, code = tp.denylist(path)
      assert.is_nil(ok)
      assert.are.equal("malformed", code)
      assert.matches("line 1", msg)
    end)

    it("keeps its entries when its file disappears, and reads the file that comes back", function()
      -- a gateway that can no longer see its file (a chroot, an unmounted
      -- volume) must not let revoked tokens through again
      local list = assert(tp.denylist(path))
      assert(list:add("x", 50))
      os.remove(path)
      for _ = 1, 2 do
        assert.are.equal("not_found: denylist " .. path .. " has disappeared; its 1 entries are kept (open it "
          .. "anew to start an empty list)", expect.fails("not_found", list:reload()))
        assert.are.equal(1, list:count())
        assert.is_true(list:contains("x", 10))
      end
      -- a new object starts from the missing file as an empty list
      local fresh = assert(tp.denylist(path))
      assert.are.equal(0, fresh:count())
      assert(fresh:add("z", 50))
      assert.is_true(list:reload())
      assert.are.equal(1, list:count())
      assert.is_false(list:contains("x", 10))
      assert.is_true(list:contains("z", 10))
    end)

    it("keeps every entry through growth and purges (the C hash table)", function()
      -- 300 adds cross several resizes of the index; a purge then compacts
      -- the entries in place and rebuilds it.
      local list = assert(tp.denylist(path))
      for i = 1, 300 do assert(list:add("g-" .. i, i)) end
      assert.are.equal(300, list:count())
      for i = 1, 300 do
        assert.is_true(list:contains("g-" .. i, i - 1))
        assert.is_false(list:contains("g-" .. i, i))
      end
      assert.is_false(list:contains("g-0", 0))
      assert.is_false(list:contains("g-301", 0))
      assert.are.equal(150, list:purge(150))
      assert.are.equal(150, list:count())
      for i = 1, 300 do assert.are.equal(i > 150, list:contains("g-" .. i, 0)) end
      assert(list:add("g-1", 1000))  -- re-added after its purge
      assert(list:add("g-300", 2000))  -- an existing entry, later expiry
      local again = assert(tp.denylist(path))
      assert.are.equal(151, again:count())
      assert.is_true(again:contains("g-1", 999))
      assert.is_true(again:contains("g-300", 1999))
      assert.is_false(again:contains("g-150", 0))
      -- the purge wrote the 150 left, then two lines were appended
      local lines = 0
      for _ in read_file(path):gmatch("\n") do lines = lines + 1 end
      assert.are.equal(152, lines)
    end)

    it("merges duplicate lines of a file, keeping the later expiry", function()
      write_file(path, "d 5\ne 1\nd 9\nd 7\n")
      local list = assert(tp.denylist(path))
      assert.are.equal(2, list:count())
      assert.is_true(list:contains("d", 8))
      assert.is_false(list:contains("d", 9))
      assert(list:add("e", 2))
      assert.are.equal("d 5\ne 1\nd 9\nd 7\ne 2\n", read_file(path))
      assert.are.equal(2, assert(tp.denylist(path)):count())
    end)

    it("tells apart jtis that share long prefixes", function()
      local list = assert(tp.denylist(path))
      local long = ("p"):rep(255)
      assert(list:add(long .. "a", 10))
      assert(list:add(("p"):rep(16), 10))
      assert.is_true(list:contains(long .. "a", 0))
      assert.is_false(list:contains(long .. "b", 0))
      assert.is_false(list:contains(long, 0))
      assert.is_false(list:contains(long .. "a" .. "x", 0))  -- 257 bytes: never stored
      assert.is_true(list:contains(("p"):rep(16), 0))
      assert.is_false(list:contains(("p"):rep(15), 0))
      assert.is_false(list:contains(("p"):rep(17), 0))
      assert.is_false(list:contains("", 0))
    end)

    it("is readable in the REPL", function()
      local list = assert(tp.denylist(path))
      assert.are.equal("tokenpolicy.Denylist " .. path .. " (0 entries)", tostring(list))
      assert(list:add("a", 1))
      assert.are.equal("tokenpolicy.Denylist " .. path .. " (1 entry)", tostring(list))
      list:close()
      assert.are.equal("tokenpolicy.Denylist (closed)", tostring(list))
    end)

    it("closes idempotently and raises on use after close", function()
      local list = assert(tp.denylist(path))
      list:close()
      list:close()
      for _, call in ipairs {
        function() list:contains("a", 0) end,
        function() list:add("a", 1) end,
        function() list:purge(0) end,
        function() list:count() end,
        function() list:reload() end,
      } do
        assert.has_error(call, "attempt to use a closed denylist")
      end
    end)
  end)

  describe("misuse", function()
    local list
    before_each(function() list = assert(tp.denylist(path)) end)

    it("raises on a bad jti for add", function()
      for _, jti in ipairs { "", "a b", "tab\there", "nl\n", "\0", "caf\195\169", ("x"):rep(257) } do
        assert.has_error(function() list:add(jti, 1) end,
          "bad argument #1 to 'add' (jti must be 1 to 256 printable ASCII characters without spaces)")
      end
      assert.has_error(function() list:add(42, 1) end)
      assert.is_true(list:add(("x"):rep(256), 1))
    end)

    it("raises on an exp or now that is not an integer", function()
      assert.has_error(function() list:add("a", 1.5) end,
        "bad argument #2 to 'add' (exp must be an integer (epoch seconds), got a float)")
      assert.has_error(function() list:add("a", "10") end,
        "bad argument #2 to 'add' (exp must be an integer (epoch seconds), got string)")
      assert.has_error(function() list:add("a") end)
      assert.has_error(function() list:contains("a", 1.5) end)
      assert.has_error(function() list:purge() end)
      assert.has_error(function() list:contains(nil, 1) end)
    end)

    it("answers false for a string that cannot be a jti", function()
      assert.is_false(list:contains("a b", 0))
      assert.is_false(list:contains(("x"):rep(300), 0))
    end)

    it("raises on bad paths and options", function()
      assert.has_error(function() tp.denylist(1) end)
      assert.has_error(function() tp.denylist("a\0b") end, "bad argument #1 to 'denylist' (path contains a NUL byte)")
      assert.has_error(function() tp.denylist(dir .. "/") end)
      assert.has_error(function() tp.denylist(path, { bogus = 1 }) end,
        "bad argument #2 to 'denylist' (unknown option 'bogus')")
      assert.has_error(function() tp.denylist(path, { max_size = 0 }) end)
    end)
  end)

  describe("failures", function()
    it("rejects a malformed file naming the line, never its text", function()
      local cases = {
        { "ok 1\nSECRET-no-expiry\n", 2 },
        { "ok 1\nok2 2\nSECRET 12x\n", 3 },
        { "SECRET  1\n", 1 },
        { "\n", 1 },
        { "SECRET 99999999999999999999\n", 1 },
        { "SECRET\t1\n", 1 },
        { ("S"):rep(257) .. " 1\n", 1 },
      }
      for _, case in ipairs(cases) do
        write_file(path, case[1])
        local list, msg, code = tp.denylist(path)
        assert.is_nil(list)
        assert.are.equal("malformed", code)
        assert.matches("line " .. case[2] .. ":", msg, 1, true)
        assert.is_nil(msg:find("SECRET", 1, true))
        assert.is_nil(msg:find("SSSS", 1, true))
      end
    end)

    it("ignores a last line without its newline (a write cut short) and cuts it off at the next add", function()
      write_file(path, "a 1\nb 2")
      local list = assert(tp.denylist(path))
      assert.are.equal(1, list:count())
      assert.is_false(list:contains("b", 0))
      assert(list:add("c", 3))
      assert.are.equal("a 1\nc 3\n", read_file(path))
      -- a line cut inside its jti is no entry either
      write_file(path, "a 1\nc 3\nSECRE")
      assert.is_false(list:reload())  -- no whole line was added
      assert.are.equal(2, list:count())
      assert.are.equal(2, assert(tp.denylist(path)):count())
    end)

    it("refuses, and never cuts, an unterminated last line that is no denylist line cut short", function()
      local cases = {
        { "opaqueTOKENwithoutNEWLINE0123456789", 1 },      -- a token file: no space, nothing before it
        { ("x"):rep(257), 1 },                              -- longer than any jti
        { "a 1\nb 12x", 2 },                                -- not digits after the space
        { "a 1\nb 1 2", 2 },                                -- a second space
        { "a 1\n" .. ("y"):rep(300), 2 },
      }
      for _, case in ipairs(cases) do
        write_file(path, case[1])
        local list, msg, code = tp.denylist(path)
        assert.is_nil(list)
        assert.are.equal("malformed", code)
        assert.are.equal("malformed: denylist " .. path .. " line " .. case[2]
          .. ": not a line of a denylist, nor one cut short", msg)
        assert.are.equal(case[1], read_file(path))
      end
      -- a reader of the list sees the same when the tail appears later
      write_file(path, "a 1\n")
      local list = assert(tp.denylist(path))
      sh("printf 'TOKEN-with space and more' >> " .. path)
      assert.are.equal("malformed", select(3, list:reload()))
      assert.are.equal("malformed", select(3, list:add("b", 2)))
      assert.are.equal("a 1\nTOKEN-with space and more", read_file(path))
    end)

    it("keeps the old entries when a reload fails", function()
      local list = assert(tp.denylist(path))
      assert(list:add("a", 10))
      write_file(path .. ".new", "garbage\n")
      assert(os.rename(path .. ".new", path))
      local ok, _, code = list:reload()
      assert.is_nil(ok)
      assert.are.equal("malformed", code)
      assert.is_true(list:contains("a", 0))
      local added, _, code2 = list:add("b", 10)  -- a writer never overwrites what it cannot read
      assert.is_nil(added)
      assert.are.equal("malformed", code2)
      assert.are.equal("garbage\n", read_file(path))
    end)

    it("refuses a symbolic link at the path or the lock", function()
      write_file(dir .. "/real", "a 1\n")
      sh("ln -s real " .. path)
      local list, msg, code = tp.denylist(path)
      assert.is_nil(list)
      assert.are.equal("symlink", code)
      assert.matches("symbolic link", msg)
      os.remove(path)
      sh("ln -s real " .. path .. ".lock")
      list = assert(tp.denylist(path))
      local ok, _, code2 = list:add("b", 1)
      assert.is_nil(ok)
      assert.are.equal("symlink", code2)
      assert.are.equal("a 1\n", read_file(dir .. "/real"))
    end)

    it("reports a file over the size limit as too_large", function()
      sh("truncate -s 67108865 " .. path)  -- sparse: 64 MiB and a byte
      local list, _, code = tp.denylist(path)
      assert.is_nil(list)
      assert.are.equal("too_large", code)
      write_file(path, "a 1\nb 2\n")
      assert.are.equal(2, assert(tp.denylist(path, { max_size = 8 })):count())
      assert.are.equal("too_large", select(3, tp.denylist(path, { max_size = 7 })))
      local small = assert(tp.denylist(path, { max_size = 8 }))
      assert.are.equal("too_large", select(3, small:add("c", 3)))
      assert.are.equal("a 1\nb 2\n", read_file(path))
      assert.is_false(small:contains("c", 0))
    end)

    it("reports a directory at the path as io", function()
      sh("mkdir " .. path)
      assert.are.equal("io", select(3, tp.denylist(path)))
    end)
  end)

  describe("the journal", function()
    local function line_count(text)
      local n = 0
      for _ in text:gmatch("\n") do n = n + 1 end
      return n
    end

    it("appends one line per add, whatever the size of the list", function()
      local lines = {}
      for i = 1, 2000 do lines[i] = ("old-%d 99\n"):format(i) end
      write_file(path, table.concat(lines))
      local before = read_file(path)
      local list = assert(tp.denylist(path))
      assert(list:add("new-1", 99))
      assert.are.equal(before .. "new-1 99\n", read_file(path))
    end)

    it("reloads only what was appended while the file keeps its inode", function()
      local lines = {}
      for i = 1, 10 do lines[i] = ("line-%02d 99\n"):format(i) end
      write_file(path, table.concat(lines))
      local reader = assert(tp.denylist(path))
      -- Break the first line in place (same size, same inode), outside the
      -- bytes a reload compares: only a reader that read it again would see.
      local f = assert(io.open(path, "r+b"))
      f:write("line 01 99")
      f:close()
      assert.are.equal("malformed", select(3, tp.denylist(path)))  -- read whole, it fails
      write_file(path .. ".tail", "appended 99\n")
      sh("cat " .. path .. ".tail >> " .. path)
      assert.is_true(reader:reload())
      assert.are.equal(11, reader:count())
      assert.is_true(reader:contains("appended", 0))
    end)

    it("reads a compacted (renamed) file whole", function()
      local reader = assert(tp.denylist(path))
      local writer = assert(tp.denylist(path))
      for i = 1, 5 do assert(writer:add("p-" .. i, i)) end
      assert(reader:reload())
      assert.are.equal(5, reader:count())
      assert.are.equal(3, writer:purge(3))
      assert.is_true(reader:reload())
      assert.are.equal(2, reader:count())
      assert.is_false(reader:contains("p-1", 0))
    end)

    it("reads a file that shrank whole", function()
      local list = assert(tp.denylist(path))
      assert(list:add("a", 9))
      assert(list:add("b", 9))
      write_file(path, "c 9\n")
      assert.is_true(list:reload())
      assert.are.equal(1, list:count())
      assert.is_true(list:contains("c", 0))
    end)

    it("compacts once it holds twice as many lines as entries (1,024 lines at least)", function()
      local list = assert(tp.denylist(path))
      assert(list:add("other", 5))
      for i = 1, 1021 do assert(list:add("again", 100 + i)) end
      assert.are.equal(1022, line_count(read_file(path)))
      assert(list:add("again", 5000))      -- line 1,023
      assert(list:add("again", 5001))      -- line 1,024: compacted to the two entries
      assert.are.equal("other 5\nagain 5001\n", read_file(path))
      assert.are.equal(2, assert(tp.denylist(path)):count())
      assert(list:add("third", 7))
      assert.are.equal("other 5\nagain 5001\nthird 7\n", read_file(path))
    end)
  end)

  describe("across processes", function()
    local function temp_files()
      local names = {}
      for name in assert(io.popen("ls -A " .. dir)):lines() do
        if name ~= "denied" and name ~= "denied.lock" then names[#names + 1] = name end
      end
      return names
    end

    it("loses no entry of two concurrent writers", function()
      local cmd = ("%s %s %s a 5000 99 & %s %s %s b 5000 99 & wait"):format(
        LUA, WRITER, path, LUA, WRITER, path)
      sh(cmd)
      local list = assert(tp.denylist(path))
      assert.are.equal(10000, list:count())
      for _, jti in ipairs { "a-1", "a-5000", "b-1", "b-5000", "a-2500" } do
        assert.is_true(list:contains(jti, 0))
      end
      assert.are.same({}, temp_files())
    end)

    it("leaves the old file or the new one when a writer is killed mid-rewrite", function()
      -- 20,000 entries make each rewrite long enough to be caught in it.
      local lines = {}
      for i = 1, 20000 do lines[i] = ("base-%d 99\n"):format(i) end
      write_file(path, table.concat(lines))
      math.randomseed(os.time())
      local previous = 20000
      for round = 1, 6 do
        local delay = 0.05 + math.random() * 0.25
        sh(("%s %s %s r%d forever 99 & pid=$!; sleep %.3f; kill -9 $pid; wait $pid 2>/dev/null; true"):format(
          LUA, WRITER, path, round, delay))
        local list, msg = tp.denylist(path)
        assert(list, msg)
        -- Every add is durable before the next starts, so the file holds a
        -- whole prefix of this round's entries: the count tells which.
        local added = list:count() - previous
        assert.is_true(added >= 0)
        for i = 1, added do assert.is_true(list:contains(("r%d-%d"):format(round, i), 0)) end
        assert.is_false(list:contains(("r%d-%d"):format(round, added + 1), 0))
        previous = list:count()
        -- A temporary file left by the kill is never the list.
        for _, name in ipairs(temp_files()) do
          assert.matches("^%.denied%.[0-9a-f]+%.tmp$", name)
        end
      end
      assert.is_true(previous > 20000)
    end)
  end)

  describe("benchmark", function()
    it("loads 100,000 entries (prints the time)", function()
      math.randomseed(42)
      local lines = {}
      local function hex(n) return ("%0" .. n .. "x"):format(math.random(0, 16 ^ n - 1)) end
      for i = 1, 100000 do
        lines[i] = ("%s-%s-4%s-a%s-%s%s %d\n"):format(hex(8), hex(4), hex(3), hex(3), hex(6), hex(6), 1700000000 + i)
      end
      write_file(path, table.concat(lines))
      lines = nil  -- luacheck: ignore 311
      collectgarbage()
      local start = os.clock()
      local list = assert(tp.denylist(path))
      local first = (os.clock() - start) * 1000
      list:close()
      collectgarbage()
      start = os.clock()
      list = assert(tp.denylist(path))
      local second = (os.clock() - start) * 1000
      assert.are.equal(100000, list:count())
      print(("\n%s: loading 100,000 denylist entries took %.1f ms (first), %.1f ms (again)"):format(
        _VERSION, first, second))
    end)
  end)
end)
