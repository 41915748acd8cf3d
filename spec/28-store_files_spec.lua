-- tokenpolicy.store.files: every user's token caches under a tmp root,
-- judged against the policy and cleaned up without following a link or
-- touching another user's file. Other users are faked with chown (root).
local tp = require "tokenpolicy"
local migrate = require "tokenpolicy.migrate"
local files = require "tokenpolicy.store.files"
local expect = require "helpers.expect"

local NOW = 1800000000
local H = 3600
local it_root = tp.euid() == 0 and it or pending
local ALICE, BOB, MALLORY, VICTIM = 54321, 54322, 54329, 54330

local hmac = tp.keys('{"kty":"oct","kid":"k","k":"' .. tp.b64url_encode(("s"):rep(32)) .. '"}')
local function jwt(claims)
  return assert(tp.sign(claims, hmac, { alg = "HS256" }))
end

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

-- Writes a file as the spec (root) and gives it to uid with mode.
local function put(path, text, uid, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  sh(("chown %d '%s' && chmod %s '%s'"):format(uid, path, mode or "600", path))
end

local function mkdir(path, uid, mode)
  sh(("mkdir -p '%s' && chown %d '%s' && chmod %s '%s'"):format(path, uid, path, mode or "700", path))
end

local function exists(path)
  return tp.stat(path) ~= nil
end

local function native(account)
  return account .. "-/DC=ch/CN=Someone-unknown-0123456789abcdef0123456789abcdef"
end

-- The sandbox: a sticky tmp root with alice's and bob's Rucio caches,
-- WLCG files, a wrong-owner file, and mallory's links to a victim.
local function sandbox()
  local dir = expect.new_dir()
  local root = dir .. "/tmp"
  sh(("mkdir -m 1777 '%s'"):format(root))
  local s = { dir = dir, root = root }
  -- alice: a token living 10h (beyond a 1h policy), and one in a VO cache
  -- valid for 30m but readable by others.
  mkdir(root .. "/alice", ALICE, "755")
  mkdir(root .. "/alice/.rucio_alice", ALICE)
  s.a1 = root .. "/alice/.rucio_alice/auth_token_for_account_alice"
  s.a1exp = root .. "/alice/.rucio_alice/auth_token_exp_for_account_alice"
  put(s.a1, native("alice"), ALICE)
  put(s.a1exp, tostring(NOW + 10 * H), ALICE)
  mkdir(root .. "/alice/.rucio_alice@atlas", ALICE)
  s.a2 = root .. "/alice/.rucio_alice@atlas/auth_token_for_account_prod"
  put(s.a2, native("prod"), ALICE, "644")
  put(root .. "/alice/.rucio_alice@atlas/auth_token_exp_for_account_prod", tostring(NOW + H // 2), ALICE)
  -- bob: an expired token.
  mkdir(root .. "/bob", BOB, "755")
  mkdir(root .. "/bob/.rucio_bob", BOB)
  s.b1 = root .. "/bob/.rucio_bob/auth_token_for_account_bob"
  s.b1exp = root .. "/bob/.rucio_bob/auth_token_exp_for_account_bob"
  put(s.b1, native("bob"), BOB)
  put(s.b1exp, tostring(NOW - H), BOB)
  -- WLCG: bob's JWT valid 20m; alice's JWT without exp; a bt_u file of
  -- another uid than its name says.
  s.wb = root .. "/bt_u" .. BOB
  put(s.wb, jwt { sub = "bob", exp = NOW + 20 * 60 }, BOB)
  s.wa = root .. "/bt_u" .. ALICE
  put(s.wa, jwt { sub = "alice" }, ALICE)
  s.wrong = root .. "/bt_u54323"
  put(s.wrong, jwt { sub = "x", exp = NOW - H }, ALICE)
  -- The victim's expired token, outside the root; mallory links to it.
  mkdir(dir .. "/victim", VICTIM)
  mkdir(dir .. "/victim/.rucio_victim", VICTIM)
  s.victim = dir .. "/victim/.rucio_victim/auth_token_for_account_victim"
  put(s.victim, native("victim"), VICTIM)
  put(dir .. "/victim/.rucio_victim/auth_token_exp_for_account_victim", tostring(NOW - H), VICTIM)
  mkdir(root .. "/mallory", MALLORY, "755")
  s.link_dir = root .. "/mallory/.rucio_mallory"
  sh(("ln -s '%s' '%s' && chown -h %d '%s'"):format(dir .. "/victim/.rucio_victim", s.link_dir, MALLORY, s.link_dir))
  sh(("ln -s '%s' '%s' && chown -h %d '%s'"):format(dir .. "/victim", root .. "/eve", MALLORY, root .. "/eve"))
  mkdir(root .. "/mallory/.rucio_m2", MALLORY)
  s.link_file = root .. "/mallory/.rucio_m2/auth_token_for_account_m"
  sh(("ln -s '%s' '%s' && chown -h %d '%s'"):format(s.victim, s.link_file, MALLORY, s.link_file))
  -- A file of bob's in alice's cache; alice's cache in mallory's directory.
  s.bobs = root .. "/alice/.rucio_alice/auth_token_for_account_zbob"
  put(s.bobs, native("bob"), BOB)
  s.foreign = root .. "/mallory/.rucio_zz"
  mkdir(s.foreign, ALICE)
  put(s.foreign .. "/auth_token_for_account_alice", native("alice"), ALICE)
  return s
end

local max1h = tp.policy { max_token_lifetime = "1h" }

local function lines_of(list)
  local out = {}
  for i, e in ipairs(list) do out[i] = e.line end
  return out
end

after_each(function() collectgarbage() end)

describe("store.files", function()
  local s
  before_each(function() if tp.euid() == 0 then s = sandbox() end end)
  after_each(function() if s then expect.remove_dir(s.dir) end s = nil end)

  it_root("lists the files that break the policy, are expired, or are readable by others, one line each", function()
    local store = files { root = s.root }
    local result = assert(store:check { policy = max1h, lifetime = H, now = NOW, cutoff = NOW + H })
    assert.are.same({
      ("exceeds_policy %s (uid %d, rucio rucio, mode 0600, expires 2027-01-15 18:00:00 UTC)"):format(s.a1, ALICE),
      ("valid %s (uid %d, rucio rucio, mode 0644, expires 2027-01-15 08:30:00 UTC); readable by others: chmod 600")
        :format(s.a2, ALICE),
      ("expired %s (uid %d, rucio rucio, mode 0600, expires 2027-01-15 07:00:00 UTC)"):format(s.b1, BOB),
      ("no_expiry %s (uid %d, wlcg jwt, mode 0600, no expiry)"):format(s.wa, ALICE),
    }, lines_of(result.files))
    assert.are.equal(2, result.tokens)
    assert.are.same({ { username = "uid " .. ALICE, uuid = tostring(ALICE) } }, result.users)
    assert.are.same({
      { path = s.bobs, reason = ("it belongs to uid %d, not uid %d"):format(BOB, ALICE) },
      { path = s.wrong, reason = ("it belongs to uid %d, not uid 54323"):format(ALICE) },
      { path = s.link_file, reason = "a symbolic link: not followed" },
      { path = s.link_dir, reason = "a symbolic link: not followed" },
      { path = s.foreign, reason = ("it belongs to uid %d, not uid %d who owns %s"):format(ALICE, MALLORY,
        s.root .. "/mallory") },
    }, result.skipped)
    -- JSON-able: no functions, no userdata.
    assert.is_string(tp.json_encode(result))
  end)

  it_root("gives the rake task's lines through migrate.check_long_lived", function()
    local result = assert(migrate.check_long_lived(files { root = s.root }, max1h, { now = NOW }))
    assert.are.same({ "Found 2 long-lived tokens from users:", ("uid %d,,%d"):format(ALICE, ALICE) }, result:lines())
    assert.are.equal(4, #result.files)
  end)

  it_root("removes the expired and policy-breaking files and their expiry files, and nothing else", function()
    local result = assert(migrate.fix_long_lived(files { root = s.root }, max1h, { now = NOW, tz = "UTC" }))
    assert.are.equal(3, result.updated)
    assert.are.same({ s.a1, s.a1exp, s.b1, s.b1exp, s.wa }, result.removed)
    assert.are.same({
      ("removed exceeds_policy %s (uid %d, rucio rucio, mode 0600, expires 2027-01-15 18:00:00 UTC)")
        :format(s.a1, ALICE),
      ("removed expired %s (uid %d, rucio rucio, mode 0600, expires 2027-01-15 07:00:00 UTC)"):format(s.b1, BOB),
      ("removed no_expiry %s (uid %d, wlcg jwt, mode 0600, no expiry)"):format(s.wa, ALICE),
    }, lines_of(result.files))
    for _, gone in ipairs { s.a1, s.a1exp, s.wa, s.b1, s.b1exp } do
      assert.is_false(exists(gone), gone)
    end
    -- Left alone: the valid ones, the wrong owner's, the links and the victim's.
    for _, kept in ipairs { s.a2, s.wb, s.wrong, s.link_dir, s.link_file, s.victim, s.root .. "/eve", s.bobs,
      s.foreign .. "/auth_token_for_account_alice" } do
      assert.is_true(exists(kept), kept)
    end
    -- A second run finds nothing more to do.
    assert.are.equal(0, assert(migrate.fix_long_lived(files { root = s.root }, max1h, { now = NOW })).updated)
  end)

  it_root("removes nothing in a dry run", function()
    local result = assert(files { root = s.root }:fix({ policy = max1h, lifetime = H, now = NOW, cutoff = NOW + H },
      { dry_run = true }))
    assert.are.equal(3, result.updated)
    assert.are.same({}, result.removed)
    assert.are.equal("would remove expired " .. s.b1, result.files[2].line:match("^(would remove expired %S+)"))
    for _, kept in ipairs { s.a1, s.a1exp, s.wa, s.b1, s.b1exp } do
      assert.is_true(exists(kept), kept)
    end
  end)

  it("fails with not_found for a root that does not exist", function()
    expect.fails("not_found", files { root = "/nonexistent-tokenpolicy-root" }:check { policy = max1h, now = NOW })
  end)

  it("raises on an unknown option", function()
    assert.has_error(function() files { dir = "/tmp" } end, "bad argument #1 to 'store.files' (unknown option 'dir')")
  end)
end)
