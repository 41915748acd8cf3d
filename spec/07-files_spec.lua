-- Files: what discovery and the safe token file primitives stand on.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

describe("stat", function()
  local dir
  before_each(function() dir = expect.new_dir() end)
  after_each(function()
    expect.remove_dir(dir)
    collectgarbage()
  end)

  it("describes a file without following a symbolic link", function()
    local f = assert(io.open(dir .. "/token", "w"))
    f:write("abc")
    f:close()
    assert(os.execute("chmod 0600 " .. dir .. "/token && ln -s token " .. dir .. "/link"))
    local st = assert(tp.stat(dir .. "/token"))
    assert.are.equal("file", st.type)
    assert.are.equal(tonumber("600", 8), st.mode)
    assert.are.equal(3, st.size)
    assert.are.equal(tp.euid(), st.uid)
    assert.are.equal("symlink", tp.stat(dir .. "/link").type)
    assert.are.equal("directory", tp.stat(dir).type)
  end)

  it("tells a rewritten file from the old one (inode, device, nanoseconds)", function()
    local path = dir .. "/token"
    local f = assert(io.open(path, "w"))
    f:write("abc")
    f:close()
    local before = assert(tp.stat(path))
    assert.are.equal("integer", math.type(before.ino))
    assert.are.equal("integer", math.type(before.dev))
    assert.is_true(before.mtime_ns >= 0 and before.mtime_ns < 1000000000)
    assert.are.same(before, assert(tp.stat(path)))
    assert(os.execute("cp -p " .. path .. " " .. path .. ".new && mv " .. path .. ".new " .. path))
    assert.are_not.equal(before.ino, assert(tp.stat(path)).ino)
  end)

  it("reports a missing path as not_found", function()
    local st, msg, code = tp.stat(dir .. "/missing")
    assert.is_nil(st)
    assert.are.equal("not_found", code)
    assert.are.equal("not_found: stat: " .. dir .. "/missing does not exist", msg)
  end)

  it("raises on a path with a NUL byte", function()
    assert.has_error(function() tp.stat("a\0b") end, "bad argument #1 to 'stat' (path contains a NUL byte)")
  end)
end)

describe("user", function()
  it("reads the password database", function()
    local me = assert(tp.user())
    assert.are.equal(tp.euid(), me.uid)
    assert.are.same({ uid = 0, name = "root", home = "/root" }, assert(tp.user(0)))
  end)

  it("reports an unknown uid as not_found", function()
    local u, msg, code = tp.user(4000000000)
    assert.is_nil(u)
    assert.are.equal("not_found", code)
    assert.are.equal("not_found: no user with uid 4000000000 in the password database", msg)
  end)
end)

-- ---- the safe token file primitives ---------------------------------------
--
-- Everything happens inside a sandbox directory made for each test under
-- /tmp; no real token file is ever touched.  The suite runs as root, so
-- other users are simulated with chown to an unused uid, and since root
-- passes every permission check, the tests assert on what the functions
-- return and leave behind, never on EACCES.

local OTHER = 54321                        -- a uid nobody uses
local it_root = tp.euid() == 0 and it or pending  -- chown needs root

local function oct(s) return tonumber(s, 8) end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function put(path, bytes, mode)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  sh("chmod " .. (mode or "0600") .. " " .. q(path))
end

local function get(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function mode(path) return assert(tp.stat(path)).mode end

local function ls(path)
  local p = assert(io.popen("ls -A " .. q(path)))
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

local function inode(path)
  local p = assert(io.popen("stat -c %i " .. q(path)))
  local n = p:read("l")
  p:close()
  return n
end

-- Runs Lua code in a child interpreter (the same version, the same module
-- path) under a time limit, in directory dir with umask mask; returns what
-- it wrote and its exit status (124 when it had to be stopped).
local function absolute(paths, cwd)
  return (paths:gsub("[^;]+", function(entry)
    return entry:sub(1, 1) == "/" and entry or cwd .. "/" .. entry
  end))
end

local function child(dir, mask, code)
  local script = os.tmpname()
  local p = assert(io.popen("pwd"))
  local cwd = p:read("l")
  p:close()
  local f = assert(io.open(script, "w"))
  f:write(("package.path = %q\npackage.cpath = %q\n"):format(absolute(package.path, cwd),
    absolute(package.cpath, cwd)))
  f:write("local tp = require 'tokenpolicy'\n", code)
  f:close()
  local lua = "lua" .. _VERSION:match("%d+%.%d+")
  p = assert(io.popen("cd " .. q(dir) .. " && umask " .. mask .. " && timeout 10 " .. lua .. " "
    .. q(script) .. " 2>&1; echo \" $?\""))
  local out = p:read("a")
  p:close()
  os.remove(script)
  local text, status = out:match("^(.-) (%d+)\n$")
  return text, tonumber(status)
end

-- Asserts the fail triple with this code; returns the message.
local function fails(code, ok, msg, got)
  assert.is_nil(ok)
  assert.are.equal(code, got)
  assert.are.equal(code .. ": ", msg:sub(1, #code + 2))
  return msg
end

-- A fresh sandbox directory (mode 0700, owned by the caller) per test.
local S
local function sandbox()
  before_each(function()
    S = os.tmpname()
    os.remove(S)
    sh("mkdir -m 0700 " .. q(S))
  end)
  after_each(function()
    sh("rm -rf " .. q(S))
    collectgarbage()
  end)
end

local TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"

describe("read_token", function()
  sandbox()

  it("reads a private token file and describes it", function()
    local path = S .. "/token"
    put(path, TOKEN .. "\n")
    local token, info = tp.read_token(path)
    assert.are.equal(TOKEN, token)
    local st = tp.stat(path)
    assert.are.same({ mode = oct("600"), uid = tp.euid(), size = #TOKEN + 1, mtime = st.mtime }, info)
  end)

  it("accepts a read-only file", function()
    put(S .. "/token", TOKEN, "0400")
    assert.are.equal(TOKEN, (tp.read_token(S .. "/token")))
  end)

  describe("strips C isspace whitespace around the token", function()
    local cases = {
      { "spaces", "  " .. TOKEN .. "  " },
      { "tabs", "\t\t" .. TOKEN .. "\t" },
      { "newlines", "\n" .. TOKEN .. "\n\n" },
      { "CR LF", TOKEN .. "\r\n" },
      { "vertical tab and form feed", "\v\f" .. TOKEN .. "\f\v" },
      { "all of them", " \t\n\v\f\r" .. TOKEN .. "\r\f\v\n\t " },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        put(S .. "/token", case[2])
        assert.are.equal(TOKEN, (tp.read_token(S .. "/token")))
      end)
    end

    it("and keeps inner whitespace (Rucio tokens may hold spaces)", function()
      local rucio = "jdoe-/DC=ch/CN=John Doe-unknown-0123456789abcdef0123456789abcdef"
      put(S .. "/token", "\t" .. rucio .. " \n")
      assert.are.equal(rucio, (tp.read_token(S .. "/token")))
    end)

    it("and leaves other bytes alone", function()
      put(S .. "/token", "\0" .. TOKEN .. "\194\160")
      assert.are.equal("\0" .. TOKEN .. "\194\160", (tp.read_token(S .. "/token")))
    end)
  end)

  it("refuses an empty or blank file as malformed", function()
    for _, content in ipairs({ "", " \t\r\n\v\f" }) do
      put(S .. "/token", content)
      local msg = fails("malformed", tp.read_token(S .. "/token"))
      assert.are.equal("malformed: read_token: the token file " .. S .. "/token is empty", msg)
    end
  end)

  it("reports a missing file or directory as not_found", function()
    local msg = fails("not_found", tp.read_token(S .. "/missing"))
    assert.are.equal("not_found: read_token: " .. S .. "/missing does not exist", msg)
    put(S .. "/file", TOKEN)
    fails("not_found", tp.read_token(S .. "/file/token"))
    fails("not_found", tp.read_token(S .. "/nodir/token"))
  end)

  it("refuses a token file replaced by a symbolic link (attack 2)", function()
    put(S .. "/real", TOKEN)
    sh("ln -s real " .. q(S .. "/token"))
    local msg = fails("symlink", tp.read_token(S .. "/token"))
    assert.is_nil(msg:find(TOKEN, 1, true))
  end)

  it("returns io for a FIFO at the path without blocking (attack 8)", function()
    sh("mkfifo -m 0600 " .. q(S .. "/token"))
    -- In a child with a time limit first, so a regression fails instead of
    -- hanging the suite.
    local out, status = child(S, "022", "local _, _, code = tp.read_token('token') io.write(tostring(code))")
    assert.are.same({ "io", 0 }, { out, status })
    local msg = fails("io", tp.read_token(S .. "/token"))
    assert.are.equal("io: read_token: " .. S .. "/token is a FIFO (named pipe), not a regular file", msg)
  end)

  it("returns io for a directory or a device", function()
    fails("io", tp.read_token(S))
    fails("io", tp.read_token("/dev/null"))
  end)

  it_root("refuses a file of another owner unless that uid is expected", function()
    put(S .. "/token", TOKEN)
    sh("chown " .. OTHER .. " " .. q(S .. "/token"))
    local msg = fails("not_owner", tp.read_token(S .. "/token"))
    assert.are.equal("not_owner: read_token: " .. S .. "/token belongs to uid " .. OTHER .. ", not uid "
      .. tp.euid(), msg)
    local token, info = tp.read_token(S .. "/token", { uid = OTHER })
    assert.are.equal(TOKEN, token)
    assert.are.equal(OTHER, info.uid)
    fails("not_owner", tp.read_token(S .. "/token", { uid = OTHER + 1 }))
  end)

  describe("refuses a file others can access (attack 4)", function()
    for _, m in ipairs({ "0644", "0640", "0604", "0610", "0601", "0660", "0666" }) do
      it("mode " .. m, function()
        put(S .. "/token", TOKEN, m)
        local msg = fails("insecure_permissions", tp.read_token(S .. "/token"))
        assert.are.equal("insecure_permissions: read_token: group or others can access " .. S
          .. "/token (mode " .. m .. "): run chmod 600 on it", msg)
      end)
    end

    it("unless allow_insecure, which returns it with a warning", function()
      put(S .. "/token", TOKEN, "0644")
      local token, info = tp.read_token(S .. "/token", { allow_insecure = true })
      assert.are.equal(TOKEN, token)
      assert.are.equal(oct("644"), info.mode)
      assert.are.equal("the token file " .. S .. "/token is readable by others (mode 0644); fix it with: "
        .. "chmod 600 " .. S .. "/token", info.warning)
      local _, quiet = tp.read_token(S .. "/token", { allow_insecure = true, uid = tp.euid() })
      assert.is_string(quiet.warning)
      sh("chmod 0600 " .. q(S .. "/token"))
      _, info = tp.read_token(S .. "/token", { allow_insecure = true })
      assert.is_nil(info.warning)
    end)
  end)

  it("refuses a 10 MiB file as too_large (attack 5)", function()
    local f = assert(io.open(S .. "/token", "wb"))
    for _ = 1, 10 do f:write(("x"):rep(1024 * 1024)) end
    f:close()
    sh("chmod 0600 " .. q(S .. "/token"))
    local msg = fails("too_large", tp.read_token(S .. "/token"))
    assert.are.equal("too_large: read_token: " .. S .. "/token is 10485760 bytes, over the limit of 65536", msg)
  end)

  it("takes max_size in bytes, counting the whitespace", function()
    put(S .. "/token", TOKEN .. "\n")
    assert.are.equal(TOKEN, (tp.read_token(S .. "/token", { max_size = #TOKEN + 1 })))
    fails("too_large", tp.read_token(S .. "/token", { max_size = #TOKEN }))
    put(S .. "/token", ("y"):rep(65536))
    assert.are.equal(65536, #tp.read_token(S .. "/token"))
    put(S .. "/token", ("y"):rep(65537))
    fails("too_large", tp.read_token(S .. "/token"))
  end)

  it_root("never puts the token into a message", function()
    local path = S .. "/token"
    local function check(code, ...)
      local msg = fails(code, ...)
      assert.is_nil(msg:find(TOKEN, 1, true), msg)
      assert.is_nil(msg:find(TOKEN:sub(1, 16), 1, true), msg)
    end
    put(path, TOKEN, "0644")
    check("insecure_permissions", tp.read_token(path))
    put(path, TOKEN)
    check("too_large", tp.read_token(path, { max_size = 8 }))
    sh("chown " .. OTHER .. " " .. q(path))
    check("not_owner", tp.read_token(path))
  end)

  it("raises on misuse, naming the argument", function()
    local path = S .. "/token"
    assert.has_error(function() tp.read_token(42) end,
      "bad argument #1 to 'read_token' (string expected, got number)")
    assert.has_error(function() tp.read_token("a\0b") end,
      "bad argument #1 to 'read_token' (path contains a NUL byte)")
    assert.has_error(function() tp.read_token("") end, "bad argument #1 to 'read_token' (path is empty)")
    assert.has_error(function() tp.read_token(path, "opts") end,
      "bad argument #2 to 'read_token' (table expected, got string)")
    assert.has_error(function() tp.read_token(path, { maxsize = 1 }) end,
      "bad argument #2 to 'read_token' (unknown option 'maxsize')")
    assert.has_error(function() tp.read_token(path, { newline = true }) end,
      "bad argument #2 to 'read_token' (unknown option 'newline')")
    assert.has_error(function() tp.read_token(path, { max_size = "10" }) end,
      "bad argument #2 to 'read_token' (max_size must be an integer of at least 1)")
    assert.has_error(function() tp.read_token(path, { max_size = 0 }) end,
      "bad argument #2 to 'read_token' (max_size must be an integer of at least 1)")
    assert.has_error(function() tp.read_token(path, { allow_insecure = 1 }) end,
      "bad argument #2 to 'read_token' (allow_insecure must be a boolean)")
    for _, uid in ipairs({ -1, 1.5, "0" }) do
      assert.has_error(function() tp.read_token(path, { uid = uid }) end,
        "bad argument #2 to 'read_token' (uid must be an integer of at least 0)")
    end
    -- (uid_t)-1 means "no change" to chown: it names nobody.
    assert.has_error(function() tp.read_token(path, { uid = 4294967295 }) end,
      "bad argument #2 to 'read_token' (uid must be an integer below 4294967295)")
  end)
end)

describe("write_token", function()
  sandbox()

  it("creates missing directories 0700 and the file 0600, with no trailing newline", function()
    local path = S .. "/jdoe/.rucio_jdoe/auth_token_for_account_jdoe"
    assert.is_true(tp.write_token(path, TOKEN))
    assert.are.equal(TOKEN, get(path))  -- the bytes, as Rucio writes them
    assert.are.equal(oct("600"), mode(path))
    assert.are.equal(oct("700"), mode(S .. "/jdoe"))
    assert.are.equal(oct("700"), mode(S .. "/jdoe/.rucio_jdoe"))
    assert.are.equal(tp.euid(), tp.stat(path).uid)
    assert.are.same({ "auth_token_for_account_jdoe" }, ls(S .. "/jdoe/.rucio_jdoe"))
    assert.are.equal(TOKEN, (tp.read_token(path)))
  end)

  it("adds a newline when asked", function()
    assert.is_true(tp.write_token(S .. "/bt_u0", TOKEN, { newline = true }))
    assert.are.equal(TOKEN .. "\n", get(S .. "/bt_u0"))
    assert.are.equal(TOKEN, (tp.read_token(S .. "/bt_u0")))
  end)

  it("sets modes 0600 and 0700 whatever the umask", function()
    for _, mask in ipairs({ "0277", "0000" }) do
      local out, status = child(S, mask, "io.write(tostring(tp.write_token('" .. mask .. "/token', 'x')))")
      assert.are.same({ "true", 0 }, { out, status })
      assert.are.equal(oct("700"), mode(S .. "/" .. mask))
      assert.are.equal(oct("600"), mode(S .. "/" .. mask .. "/token"))
    end
  end)

  it("takes a path relative to the working directory", function()
    local out = child(S, "022", "assert(tp.write_token('rel/token', 'x')) assert(tp.write_token('top', 'y'))"
      .. " io.write((tp.read_token('rel/token')), (tp.read_token('top')))")
    assert.are.equal("xy", out)
  end)

  it("reports a missing directory as not_found with make_dirs = false", function()
    local msg = fails("not_found", tp.write_token(S .. "/missing/token", TOKEN, { make_dirs = false }))
    assert.are.equal("not_found: write_token: the directory " .. S .. "/missing does not exist", msg)
    assert.are.same({}, ls(S))
    assert.is_true(tp.write_token(S .. "/token", TOKEN, { make_dirs = false }))
  end)

  it("replaces an existing token and leaves no temporary file", function()
    assert.is_true(tp.write_token(S .. "/token", "old"))
    assert.is_true(tp.write_token(S .. "/token", TOKEN))
    assert.are.equal(TOKEN, get(S .. "/token"))
    assert.are.same({ "token" }, ls(S))
  end)

  it("replaces a planted file atomically, never writing its inode (attack 3)", function()
    put(S .. "/token", "planted", "0644")
    sh("ln " .. q(S .. "/token") .. " " .. q(S .. "/witness"))
    local planted = inode(S .. "/witness")
    assert.is_true(tp.write_token(S .. "/token", TOKEN))
    assert.are.equal(TOKEN, get(S .. "/token"))
    assert.are_not.equal(planted, inode(S .. "/token"))
    assert.are.equal("planted", get(S .. "/witness"))
    assert.are.equal(oct("644"), mode(S .. "/witness"))
    assert.are.same({ "token", "witness" }, ls(S))
  end)

  it("replaces a planted symbolic link, never writing its target", function()
    put(S .. "/victim", "victim data", "0644")
    sh("ln -s victim " .. q(S .. "/token"))
    assert.is_true(tp.write_token(S .. "/token", TOKEN))
    assert.are.equal("file", tp.stat(S .. "/token").type)
    assert.are.equal(TOKEN, get(S .. "/token"))
    assert.are.equal("victim data", get(S .. "/victim"))
  end)

  it_root("refuses to replace another user's file in a sticky shared directory (attack 3)", function()
    sh("mkdir -m 1777 " .. q(S .. "/shared"))
    put(S .. "/shared/bt_u0", "theirs", "0644")
    sh("chown " .. OTHER .. " " .. q(S .. "/shared/bt_u0"))
    local msg = fails("not_owner", tp.write_token(S .. "/shared/bt_u0", TOKEN))
    assert.are.equal("not_owner: write_token: " .. S .. "/shared/bt_u0 already exists and belongs to uid "
      .. OTHER, msg)
    assert.are.equal("theirs", get(S .. "/shared/bt_u0"))
    assert.are.same({ "bt_u0" }, ls(S .. "/shared"))
    -- a link of theirs there is refused the same way
    sh("ln -s /etc/passwd " .. q(S .. "/shared/link") .. " && chown -h " .. OTHER .. " " .. q(S .. "/shared/link"))
    fails("not_owner", tp.write_token(S .. "/shared/link", TOKEN))
    -- and a file of one's own there is replaced
    assert.is_true(tp.write_token(S .. "/shared/mine", "old"))
    assert.is_true(tp.write_token(S .. "/shared/mine", TOKEN))
    assert.are.equal(TOKEN, get(S .. "/shared/mine"))
  end)

  describe("refuses a symbolic link planted as a directory on the path (attack 6)", function()
    it_root("another user's link in a shared directory", function()
      sh("mkdir -m 1777 " .. q(S .. "/shared") .. " && mkdir -m 0700 " .. q(S .. "/victim"))
      sh("ln -s ../victim " .. q(S .. "/shared/.rucio_jdoe") .. " && chown -h " .. OTHER .. " "
        .. q(S .. "/shared/.rucio_jdoe"))
      local msg = fails("symlink", tp.write_token(S .. "/shared/.rucio_jdoe/auth_token", TOKEN))
      assert.are.equal("symlink: write_token: " .. S .. "/shared/.rucio_jdoe is a symbolic link (owned by uid "
        .. OTHER .. " in a directory of uid 0); only root's links in directories only root can change are "
        .. "followed", msg)
      assert.are.same({}, ls(S .. "/victim"))
      assert.are.same({ ".rucio_jdoe" }, ls(S .. "/shared"))
    end)

    it_root("even root's link, in a directory others can write", function()
      sh("mkdir -m 1777 " .. q(S .. "/shared") .. " && mkdir -m 0700 " .. q(S .. "/victim"))
      sh("ln -s ../victim " .. q(S .. "/shared/dir"))
      fails("symlink", tp.write_token(S .. "/shared/dir/token", TOKEN))
      assert.are.same({}, ls(S .. "/victim"))
    end)

    it_root("a link deeper down, created after make_dirs made the first levels", function()
      sh("mkdir -m 0700 " .. q(S .. "/victim") .. " && mkdir -m 1777 " .. q(S .. "/a"))
      sh("ln -s ../victim " .. q(S .. "/a/b") .. " && chown -h " .. OTHER .. " " .. q(S .. "/a/b"))
      fails("symlink", tp.write_token(S .. "/a/b/c/token", TOKEN))
      assert.are.same({}, ls(S .. "/victim"))
    end)
  end)

  it_root("follows root's links in directories only root can write (like /var/run)", function()
    sh("mkdir -m 0755 " .. q(S .. "/sys") .. " " .. q(S .. "/real"))
    sh("ln -s ../real " .. q(S .. "/sys/run") .. " && ln -s " .. q(S .. "/real") .. " " .. q(S .. "/sys/abs"))
    assert.is_true(tp.write_token(S .. "/sys/run/token", TOKEN))
    assert.is_true(tp.write_token(S .. "/sys/abs/sub/token2", TOKEN))
    assert.are.equal(TOKEN, get(S .. "/real/token"))
    assert.are.equal(TOKEN, get(S .. "/real/sub/token2"))
  end)

  it_root("refuses a directory on the path owned by another user", function()
    sh("mkdir -m 0755 " .. q(S .. "/theirs") .. " && chown " .. OTHER .. " " .. q(S .. "/theirs"))
    local msg = fails("not_owner", tp.write_token(S .. "/theirs/token", TOKEN))
    assert.are.equal("not_owner: write_token: the directory " .. S .. "/theirs belongs to uid " .. OTHER
      .. " (neither uid 0 nor root), who could swap the token", msg)
    fails("not_owner", tp.write_token(S .. "/theirs/sub/token", TOKEN))
    assert.are.same({}, ls(S .. "/theirs"))
  end)

  it_root("refuses a directory others can write unless it is root's and sticky", function()
    sh("mkdir -m 0777 " .. q(S .. "/open") .. " && mkdir -m 0770 " .. q(S .. "/group"))
    local msg = fails("insecure_permissions", tp.write_token(S .. "/open/token", TOKEN))
    assert.are.equal("insecure_permissions: write_token: group or others can write the directory " .. S
      .. "/open (mode 0777) and it is not a root-owned sticky directory like /tmp, so they could swap the "
      .. "token: run chmod go-w on it", msg)
    fails("insecure_permissions", tp.write_token(S .. "/group/token", TOKEN))
    sh("mkdir -m 1777 " .. q(S .. "/sticky") .. " && chown " .. OTHER .. " " .. q(S .. "/sticky"))
    fails("not_owner", tp.write_token(S .. "/sticky/token", TOKEN))
    assert.are.same({}, ls(S .. "/open"))
    sh("chown 0 " .. q(S .. "/sticky"))
    assert.is_true(tp.write_token(S .. "/sticky/token", TOKEN))
  end)

  it_root("writes for another uid into their directory, or into a root-owned sticky one", function()
    sh("mkdir -m 0700 " .. q(S .. "/home") .. " && chown " .. OTHER .. " " .. q(S .. "/home"))
    assert.is_true(tp.write_token(S .. "/home/.rucio/token", TOKEN, { uid = OTHER }))
    assert.are.equal(OTHER, tp.stat(S .. "/home/.rucio").uid)
    assert.are.equal(oct("700"), mode(S .. "/home/.rucio"))
    assert.are.equal(OTHER, tp.stat(S .. "/home/.rucio/token").uid)
    assert.are.equal(TOKEN, (tp.read_token(S .. "/home/.rucio/token", { uid = OTHER })))
    sh("mkdir -m 1777 " .. q(S .. "/tmp"))
    assert.is_true(tp.write_token(S .. "/tmp/bt_u" .. OTHER, TOKEN, { uid = OTHER }))
    assert.are.equal(OTHER, tp.stat(S .. "/tmp/bt_u" .. OTHER).uid)
    -- the sandbox is root's and not sticky: no place for their token
    local msg = fails("not_owner", tp.write_token(S .. "/token", TOKEN, { uid = OTHER }))
    assert.are.equal("not_owner: write_token: the directory " .. S .. " belongs to uid 0; tokens of uid "
      .. OTHER .. " go into a directory of theirs or a root-owned sticky directory like /tmp", msg)
    assert.are.same({ "home", "tmp" }, ls(S))
  end)

  it("refuses an empty token and a directory at the path", function()
    local msg = fails("malformed", tp.write_token(S .. "/token", ""))
    assert.are.equal("malformed: write_token: the token is empty", msg)
    sh("mkdir " .. q(S .. "/dir"))
    fails("io", tp.write_token(S .. "/dir", TOKEN))
    fails("not_found", tp.write_token(S .. "/dir/../nodir/x/../token", TOKEN, { make_dirs = false }))
    assert.are.same({ "dir" }, ls(S))
  end)

  it("raises on misuse, naming the argument", function()
    local path = S .. "/token"
    assert.has_error(function() tp.write_token(nil, TOKEN) end,
      "bad argument #1 to 'write_token' (string expected, got nil)")
    assert.has_error(function() tp.write_token(path, 42) end,
      "bad argument #2 to 'write_token' (string expected, got number)")
    for _, bad in ipairs({ S .. "/", "/", S .. "/.", S .. "/.." }) do
      assert.has_error(function() tp.write_token(bad, TOKEN) end,
        "bad argument #1 to 'write_token' (path must end in a name (not '/', '.' or '..'))")
    end
    assert.has_error(function() tp.write_token(path, TOKEN, { mode = 384 }) end,
      "bad argument #3 to 'write_token' (unknown option 'mode')")
    assert.has_error(function() tp.write_token(path, TOKEN, { newline = "yes" }) end,
      "bad argument #3 to 'write_token' (newline must be a boolean)")
    assert.has_error(function() tp.write_token(path, TOKEN, { make_dirs = 0 }) end,
      "bad argument #3 to 'write_token' (make_dirs must be a boolean)")
    assert.has_error(function() tp.write_token(path, TOKEN, { uid = "root" }) end,
      "bad argument #3 to 'write_token' (uid must be an integer of at least 0)")
    assert.are.same({}, ls(S))
  end)
end)

describe("remove_token", function()
  sandbox()

  it("removes the file and says so", function()
    put(S .. "/token", TOKEN)
    assert.are.same({ removed = { S .. "/token" } }, tp.remove_token(S .. "/token"))
    assert.are.same({}, ls(S))
  end)

  it("reports a missing file as not_found", function()
    local msg = fails("not_found", tp.remove_token(S .. "/token"))
    assert.are.equal("not_found: remove_token: " .. S .. "/token does not exist", msg)
    fails("not_found", tp.remove_token(S .. "/nodir/token"))
  end)

  it("removes a link of the uid, never its target", function()
    put(S .. "/victim", "victim data")
    sh("ln -s victim " .. q(S .. "/token"))
    assert.are.same({ removed = { S .. "/token" } }, tp.remove_token(S .. "/token"))
    assert.are.same({ "victim" }, ls(S))
    assert.are.equal("victim data", get(S .. "/victim"))
  end)

  it_root("refuses a file or a link of another user", function()
    put(S .. "/token", TOKEN)
    sh("chown " .. OTHER .. " " .. q(S .. "/token"))
    local msg = fails("not_owner", tp.remove_token(S .. "/token"))
    assert.are.equal("not_owner: remove_token: " .. S .. "/token belongs to uid " .. OTHER .. ", not uid 0", msg)
    put(S .. "/victim", "victim data")
    sh("ln -s victim " .. q(S .. "/link") .. " && chown -h " .. OTHER .. " " .. q(S .. "/link"))
    fails("not_owner", tp.remove_token(S .. "/link"))
    assert.are.same({ "link", "token", "victim" }, ls(S))
    assert.are.same({ removed = { S .. "/token" } }, tp.remove_token(S .. "/token", { uid = OTHER }))
  end)

  it_root("refuses a path through another user's link", function()
    sh("mkdir -m 1777 " .. q(S .. "/shared") .. " && mkdir " .. q(S .. "/victim"))
    put(S .. "/victim/token", "victim token")
    sh("ln -s ../victim " .. q(S .. "/shared/dir") .. " && chown -h " .. OTHER .. " " .. q(S .. "/shared/dir"))
    fails("symlink", tp.remove_token(S .. "/shared/dir/token"))
    assert.are.equal("victim token", get(S .. "/victim/token"))
  end)

  it("leaves a directory to remove_tree", function()
    sh("mkdir " .. q(S .. "/dir"))
    local msg = fails("io", tp.remove_token(S .. "/dir"))
    assert.are.equal("io: remove_token: " .. S .. "/dir is a directory (remove_tree removes directories)", msg)
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() tp.remove_token({}) end,
      "bad argument #1 to 'remove_token' (string expected, got table)")
    assert.has_error(function() tp.remove_token(S .. "/token", { force = true }) end,
      "bad argument #2 to 'remove_token' (unknown option 'force')")
    assert.has_error(function() tp.remove_token(S .. "/") end,
      "bad argument #1 to 'remove_token' (path must end in a name (not '/', '.' or '..'))")
  end)
end)

describe("remove_tree", function()
  sandbox()

  it("removes a tree of the uid, children first, and the directory itself", function()
    local top = S .. "/.rucio_jdoe"
    sh("mkdir -p " .. q(top .. "/sub/deeper") .. " " .. q(top .. "/empty"))
    put(top .. "/auth_token_for_account_jdoe", TOKEN)
    put(top .. "/sub/deeper/f", "x")
    put(top .. "/sub/g", "y")
    local report = tp.remove_tree(top)
    assert.are.same({
      removed = {
        top .. "/auth_token_for_account_jdoe",
        top .. "/empty",
        top .. "/sub/deeper/f",
        top .. "/sub/deeper",
        top .. "/sub/g",
        top .. "/sub",
        top,
      },
      skipped = {},
    }, report)
    assert.are.same({}, ls(S))
  end)

  it("accepts a trailing slash", function()
    sh("mkdir " .. q(S .. "/d"))
    assert.are.same({ removed = { S .. "/d" }, skipped = {} }, tp.remove_tree(S .. "/d//"))
  end)

  it("refuses a symbolic link in place of the directory, leaving the victim alone (attack 1)", function()
    sh("mkdir " .. q(S .. "/victim"))
    put(S .. "/victim/precious", "precious")
    sh("ln -s victim " .. q(S .. "/.rucio_jdoe"))
    local msg = fails("symlink", tp.remove_tree(S .. "/.rucio_jdoe"))
    assert.are.equal("symlink: remove_tree: " .. S .. "/.rucio_jdoe is a symbolic link; nothing was followed "
      .. "or removed", msg)
    assert.are.same({ "precious" }, ls(S .. "/victim"))
    assert.are.equal("precious", get(S .. "/victim/precious"))
    assert.are.same({ ".rucio_jdoe", "victim" }, ls(S))
  end)

  it("removes links inside as entries, never following them", function()
    sh("mkdir " .. q(S .. "/victim") .. " " .. q(S .. "/top"))
    put(S .. "/victim/precious", "precious")
    sh("ln -s ../victim " .. q(S .. "/top/dirlink") .. " && ln -s ../victim/precious " .. q(S .. "/top/filelink"))
    assert.are.same({ removed = { S .. "/top/dirlink", S .. "/top/filelink", S .. "/top" }, skipped = {} },
      tp.remove_tree(S .. "/top"))
    assert.are.same({ "precious" }, ls(S .. "/victim"))
  end)

  it_root("keeps another user's entries and the directories holding them (attack 7)", function()
    local top = S .. "/top"
    sh("mkdir -p " .. q(top .. "/shared/inner") .. " " .. q(top .. "/mine"))
    put(top .. "/mine/f", "x")
    put(top .. "/shared/theirs", "theirs")
    put(top .. "/shared/inner/mine", "x")
    sh("chown " .. OTHER .. " " .. q(top .. "/shared/theirs"))
    sh("ln -s /etc/passwd " .. q(top .. "/shared/theirlink") .. " && chown -h " .. OTHER .. " "
      .. q(top .. "/shared/theirlink"))
    local report = tp.remove_tree(top)
    assert.are.same({
      removed = { top .. "/mine/f", top .. "/mine", top .. "/shared/inner/mine", top .. "/shared/inner" },
      skipped = {
        { path = top .. "/shared/theirlink", reason = "it belongs to uid " .. OTHER },
        { path = top .. "/shared/theirs", reason = "it belongs to uid " .. OTHER },
      },
    }, report)
    assert.are.same({ "theirlink", "theirs" }, ls(top .. "/shared"))
    assert.are.equal("theirs", get(top .. "/shared/theirs"))
    assert.are.same({ "shared" }, ls(top))
  end)

  it_root("skips another user's directory without looking inside", function()
    sh("mkdir -p " .. q(S .. "/top/theirs"))
    put(S .. "/top/theirs/mine", "x")
    sh("chown " .. OTHER .. " " .. q(S .. "/top/theirs"))
    assert.are.same({
      removed = {},
      skipped = { { path = S .. "/top/theirs", reason = "it belongs to uid " .. OTHER } },
    }, tp.remove_tree(S .. "/top"))
    assert.are.same({ "mine" }, ls(S .. "/top/theirs"))
  end)

  it("stops 32 levels down", function()
    local top, deep = S .. "/top", S .. "/top"
    for _ = 1, 34 do deep = deep .. "/d" end
    sh("mkdir -p " .. q(deep))
    put(deep .. "/f", "x")
    local report = tp.remove_tree(top)
    local level33 = top .. ("/d"):rep(33)
    assert.are.same({
      removed = {},
      skipped = { { path = level33, reason = "it is more than 32 levels below the top" } },
    }, report)
    assert.are.equal("x", get(deep .. "/f"))
  end)

  it("reports a missing directory and a file", function()
    fails("not_found", tp.remove_tree(S .. "/missing"))
    put(S .. "/file", "x")
    local msg = fails("io", tp.remove_tree(S .. "/file"))
    assert.are.equal("io: remove_tree: " .. S .. "/file is a regular file, not a directory", msg)
  end)

  it_root("refuses a directory of another owner", function()
    sh("mkdir " .. q(S .. "/theirs") .. " && chown " .. OTHER .. " " .. q(S .. "/theirs"))
    local msg = fails("not_owner", tp.remove_tree(S .. "/theirs"))
    assert.are.equal("not_owner: remove_tree: " .. S .. "/theirs belongs to uid " .. OTHER .. ", not uid 0", msg)
    assert.are.same({ removed = { S .. "/theirs" }, skipped = {} }, tp.remove_tree(S .. "/theirs", { uid = OTHER }))
  end)

  it_root("refuses a path through another user's link", function()
    sh("mkdir -m 1777 " .. q(S .. "/shared") .. " && mkdir -p " .. q(S .. "/victim/dir"))
    sh("ln -s ../victim " .. q(S .. "/shared/x") .. " && chown -h " .. OTHER .. " " .. q(S .. "/shared/x"))
    fails("symlink", tp.remove_tree(S .. "/shared/x/dir"))
    assert.are.same({ "dir" }, ls(S .. "/victim"))
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() tp.remove_tree(1) end,
      "bad argument #1 to 'remove_tree' (string expected, got number)")
    assert.has_error(function() tp.remove_tree("/") end,
      "bad argument #1 to 'remove_tree' (path must end in a name (not '/', '.' or '..'))")
    assert.has_error(function() tp.remove_tree(S, { depth = 3 }) end,
      "bad argument #2 to 'remove_tree' (unknown option 'depth')")
    assert.has_error(function() tp.remove_tree(S, { uid = true }) end,
      "bad argument #2 to 'remove_tree' (uid must be an integer of at least 0)")
  end)
end)

describe("audit", function()
  sandbox()

  -- The findings as "code path" lines, for short comparisons.
  local function summary(findings)
    local lines = {}
    for i, f in ipairs(findings) do
      assert.is_string(f.problem)
      lines[i] = f.code .. " " .. f.path
    end
    return lines
  end

  it("finds nothing wrong with a token write_token wrote", function()
    assert.is_true(tp.write_token(S .. "/d/token", TOKEN))
    assert.are.same({}, tp.audit(S .. "/d/token"))
  end)

  it("finds a token file others can read, and says how to fix it", function()
    put(S .. "/token", TOKEN, "0644")
    assert.are.same({ {
      path = S .. "/token",
      code = "insecure_permissions",
      problem = "group or others can access the token file " .. S .. "/token (mode 0644): run chmod 600 "
        .. S .. "/token",
    } }, tp.audit(S .. "/token"))
  end)

  it("finds a symbolic link at the token's path", function()
    put(S .. "/real", TOKEN)
    sh("ln -s real " .. q(S .. "/token"))
    assert.are.same({ "symlink " .. S .. "/token" }, summary(tp.audit(S .. "/token")))
  end)

  it_root("finds a planted link among the directories", function()
    sh("mkdir -m 1777 " .. q(S .. "/shared") .. " && mkdir " .. q(S .. "/victim"))
    put(S .. "/victim/token", TOKEN)
    sh("ln -s ../victim " .. q(S .. "/shared/dir") .. " && chown -h " .. OTHER .. " " .. q(S .. "/shared/dir"))
    assert.are.same({ "symlink " .. S .. "/shared/dir" }, summary(tp.audit(S .. "/shared/dir/token")))
  end)

  it_root("finds files and directories of other users", function()
    sh("mkdir -p " .. q(S .. "/a/b") .. " && chown " .. OTHER .. " " .. q(S .. "/a"))
    put(S .. "/a/b/token", TOKEN)
    sh("chown " .. OTHER .. " " .. q(S .. "/a/b/token"))
    local findings = tp.audit(S .. "/a/b/token")
    assert.are.same({ "not_owner " .. S .. "/a/b/token", "not_owner " .. S .. "/a" }, summary(findings))
    assert.are.equal("the directory " .. S .. "/a belongs to uid " .. OTHER .. ", who can replace or remove "
      .. "the token: keep the token in a directory of your own", findings[2].problem)
    -- seen as that user's token, all is well (b is root's)
    assert.are.same({}, tp.audit(S .. "/a/b/token", { uid = OTHER }))
  end)

  it_root("finds directories others can write, unless root's and sticky", function()
    sh("mkdir -m 0777 " .. q(S .. "/open") .. " && mkdir -m 1777 " .. q(S .. "/open/sticky")
      .. " && mkdir -m 1777 " .. q(S .. "/open/sticky/theirs"))
    sh("chown " .. OTHER .. " " .. q(S .. "/open/sticky/theirs"))
    put(S .. "/open/sticky/theirs/token", TOKEN)
    local findings = tp.audit(S .. "/open/sticky/theirs/token")
    assert.are.same({
      "not_owner " .. S .. "/open/sticky/theirs",
      "insecure_permissions " .. S .. "/open/sticky/theirs",
      "insecure_permissions " .. S .. "/open",
    }, summary(findings))
    assert.are.equal("group or others can write the directory " .. S .. "/open/sticky/theirs (mode 1777); the "
      .. "sticky bit protects only directories root owns: run chmod go-w " .. S .. "/open/sticky/theirs",
      findings[2].problem)
    assert.are.equal("group or others can write the directory " .. S .. "/open (mode 0777), so they can "
      .. "replace the token: run chmod go-w " .. S .. "/open", findings[3].problem)
  end)

  it("finds a FIFO where the token should be", function()
    sh("mkfifo -m 0600 " .. q(S .. "/token"))
    assert.are.same({ "io " .. S .. "/token" }, summary(tp.audit(S .. "/token")))
  end)

  it("takes relative paths, ending at the working directory", function()
    sh("mkdir " .. q(S .. "/d"))
    put(S .. "/d/token", TOKEN, "0640")
    local out = child(S, "022", "for _, f in ipairs(tp.audit('d/token')) do io.write(f.code, ' ', f.path, ';') end"
      .. " io.write(#tp.audit('.'))")
    assert.are.equal("insecure_permissions d/token;0", out)
  end)

  it("reports a missing file as not_found", function()
    fails("not_found", tp.audit(S .. "/missing"))
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() tp.audit() end, "bad argument #1 to 'audit' (string expected, got no value)")
    assert.has_error(function() tp.audit(S, { fix = true }) end, "bad argument #2 to 'audit' (unknown option 'fix')")
  end)
end)

describe("fix_permissions", function()
  sandbox()

  it_root("makes the file 0600, its directory 0700, and removes write from the caller's others", function()
    sh("mkdir -p -m 0777 " .. q(S .. "/home/.rucio") .. " && chmod 0775 " .. q(S .. "/home"))
    put(S .. "/home/.rucio/token", TOKEN, "0644")
    sh("chown -R " .. OTHER .. " " .. q(S .. "/home"))
    local changes = tp.fix_permissions(S .. "/home/.rucio/token", { uid = OTHER })
    assert.are.same({
      { path = S .. "/home", from = oct("775"), to = oct("755") },
      { path = S .. "/home/.rucio", from = oct("777"), to = oct("700") },
      { path = S .. "/home/.rucio/token", from = oct("644"), to = oct("600") },
    }, changes)
    assert.are.equal(oct("600"), mode(S .. "/home/.rucio/token"))
    assert.are.equal(oct("700"), mode(S .. "/home/.rucio"))
    assert.are.equal(oct("755"), mode(S .. "/home"))
    assert.are.equal(oct("700"), mode(S))  -- root's: not the caller's to change
    assert.are.same({}, tp.audit(S .. "/home/.rucio/token", { uid = OTHER }))
    assert.are.same({}, tp.fix_permissions(S .. "/home/.rucio/token", { uid = OTHER }))
  end)

  it_root("for root, only removes write from root's directories and leaves /tmp alone", function()
    sh("mkdir -m 0777 " .. q(S .. "/d"))
    put(S .. "/d/token", TOKEN, "0640")
    assert.are.same({
      { path = S .. "/d", from = oct("777"), to = oct("755") },
      { path = S .. "/d/token", from = oct("640"), to = oct("600") },
    }, tp.fix_permissions(S .. "/d/token"))
    assert.are.equal(oct("1777"), mode("/tmp"))
  end)

  it_root("leaves what others own alone", function()
    sh("mkdir -m 0777 " .. q(S .. "/d"))
    put(S .. "/d/token", TOKEN, "0644")
    sh("chown " .. OTHER .. " " .. q(S .. "/d/token"))
    assert.are.same({ { path = S .. "/d", from = oct("777"), to = oct("755") } }, tp.fix_permissions(S .. "/d/token"))
    assert.are.equal(oct("644"), mode(S .. "/d/token"))
  end)

  it("changes nothing when a link is at the path or the file is missing", function()
    sh("mkdir -m 0700 " .. q(S .. "/d"))
    put(S .. "/d/real", TOKEN, "0644")
    sh("ln -s real " .. q(S .. "/d/token") .. " && chmod 0777 " .. q(S .. "/d"))
    fails("symlink", tp.fix_permissions(S .. "/d/token"))
    fails("not_found", tp.fix_permissions(S .. "/d/missing"))
    assert.are.equal(oct("777"), mode(S .. "/d"))
    assert.are.equal(oct("644"), mode(S .. "/d/real"))
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() tp.fix_permissions(false) end,
      "bad argument #1 to 'fix_permissions' (string expected, got boolean)")
    assert.has_error(function() tp.fix_permissions(S .. "/t", { mode = 1 }) end,
      "bad argument #2 to 'fix_permissions' (unknown option 'mode')")
  end)
end)

describe("the token file primitives", function()
  sandbox()

  -- The descriptors of this process open on "/" or inside the sandbox:
  -- all the primitives ever open. (Counting every descriptor made the
  -- count depend on what the test runner itself had open at the moment.)
  local function open_descriptors()
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("a"):match("^%d+")
    f:close()
    local p = assert(io.popen("ls -l /proc/" .. pid .. "/fd"))
    local n = 0
    for line in p:lines() do
      local target = line:match(" %-> (.*)$")
      if target and (target == "/" or target:sub(1, #S + 1) == S .. "/" or target == S) then
        n = n + 1
      end
    end
    p:close()
    return n
  end

  it("close every descriptor, on success and on failure", function()
    sh("mkdir -p " .. q(S .. "/tree/a/b") .. " && mkfifo " .. q(S .. "/fifo") .. " && ln -s tree " .. q(S .. "/link"))
    put(S .. "/open", TOKEN, "0644")
    local before = open_descriptors()
    for _ = 1, 50 do
      assert(tp.write_token(S .. "/d/token", TOKEN))
      assert(tp.read_token(S .. "/d/token"))
      assert(tp.read_token(S .. "/open", { allow_insecure = true }))
      assert.is_nil(tp.read_token(S .. "/open"))
      assert.is_nil(tp.read_token(S .. "/fifo"))
      assert(tp.audit(S .. "/d/token"))
      assert(tp.fix_permissions(S .. "/d/token"))
      assert(tp.remove_token(S .. "/d/token"))
      assert.is_nil(tp.remove_token(S .. "/d/token"))
      sh("mkdir -p " .. q(S .. "/tree/a/b"))
      assert(tp.remove_tree(S .. "/tree"))
      assert.is_nil(tp.remove_tree(S .. "/link"))
      assert.is_nil(tp.write_token(S .. "/link/x", TOKEN, { make_dirs = false }))
    end
    collectgarbage()
    assert.are.equal(before, open_descriptors())
  end)
end)
