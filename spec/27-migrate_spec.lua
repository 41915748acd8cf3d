-- tokenpolicy.migrate over the memory store: the rake tasks'
-- db:check_long_lived_tokens and db:fix_long_lived_tokens, line for line.
local tp = require "tokenpolicy"
local migrate = require "tokenpolicy.migrate"
local memory = require "tokenpolicy.store.memory"
local expect = require "helpers.expect"

local NOW = 1598326250 -- 2020-08-25 03:30:50 UTC
local H = 3600

local function user(name)
  local uuid = "zzzzz-tpzed-" .. (name .. ("0"):rep(15)):sub(1, 15)
  return { username = name, email = name .. "@example.org", uuid = uuid }
end

local ALICE, BOB = user("alice"), user("bob")

local function token(id, owner, expires_at)
  return { id = id, user_id = owner and owner.user_id or 999, owner_uuid = owner and owner.uuid or tp.null,
    expires_at = expires_at == nil and tp.null or expires_at, user = owner and owner.user }
end

local alice = { user_id = 1, uuid = ALICE.uuid, user = ALICE }
local bob = { user_id = 2, uuid = BOB.uuid, user = BOB }
local ROOT_UUID, ANON_UUID = "zzzzz-tpzed-000000000000000", "xxxxx-tpzed-anonymouspublic"
local root = { user_id = 3, uuid = ROOT_UUID, user = { username = "root", uuid = ROOT_UUID } }
local anon = { user_id = 4, uuid = ANON_UUID, user = { username = "anonymous", uuid = ANON_UUID } }

-- The rake tasks' own cases: every kind of row they meet.
local function records()
  return {
    token(1, bob, nil),                 -- no expiry: found
    token(2, alice, NOW + H + 1),       -- one second past the cutoff: found
    token(3, alice, NOW + H),           -- exactly at the cutoff: not found
    token(4, nil, nil),                 -- its user row is missing: warning
    token(5, root, nil),                -- the system root user's: skipped
    token(6, anon, NOW + 10 * H),       -- the anonymous user's: skipped
    token(7, bob, NOW + 2 * H),         -- bob again: counted, listed once
    token(8, alice, NOW - H),           -- already expired: not found
  }
end

local NO_POLICY = "No expiration policy set (API.MaxTokenLifetime nor Login.TokenLifetime is set), nothing to do."

local max1h = tp.policy { max_token_lifetime = "1h" }

after_each(function() collectgarbage() end)

describe("migrate.check_long_lived", function()
  it("prints the rake task's lines: warnings, the count of tokens, each user once in first-seen order", function()
    local result = assert(migrate.check_long_lived(memory(records()), max1h, { now = NOW }))
    assert.are.same({
      "*** WARNING, found ApiClientAuthorization with invalid user: auth id: 4, user id: 999",
      "Found 3 long-lived tokens from users:",
      "bob,bob@example.org," .. BOB.uuid,
      "alice,alice@example.org," .. ALICE.uuid,
    }, result:lines())
    assert.are.equal(3, result.tokens)
    assert.are.same({ { id = 4, user_id = 999 } }, result.warnings)
    assert.are.equal(NOW + H, result.cutoff)
  end)

  it("says No long-lived tokens found. when none is", function()
    local result = assert(migrate.check_long_lived(memory({ token(3, alice, NOW + H), token(5, root, nil) }),
      max1h, { now = NOW }))
    assert.are.same({ "No long-lived tokens found." }, result:lines())
  end)

  it("uses MaxTokenLifetime, else TokenLifetime", function()
    local both = tp.policy { max_token_lifetime = "1h", login_token_lifetime = "3h" }
    local login = tp.policy { login_token_lifetime = "3h" }
    assert.are.equal(3, assert(migrate.check_long_lived(memory(records()), both, { now = NOW })).tokens)
    -- With 3h only bob's token without expiry remains.
    assert.are.equal(1, assert(migrate.check_long_lived(memory(records()), login, { now = NOW })).tokens)
  end)

  it("prints the one line of the rake task without any lifetime", function()
    local result = assert(migrate.check_long_lived(memory(records()), tp.policy {}, { now = NOW }))
    assert.are.same({ NO_POLICY }, result:lines())
    assert.is_true(result.no_policy)
  end)

  it("prints a missing username or email as Ruby prints nil: empty", function()
    local uuid = "zzzzz-tpzed-nonamenoname123"
    local noname = { user_id = 9, uuid = uuid, user = { uuid = uuid } }
    local result = assert(migrate.check_long_lived(memory({ token(1, noname, nil) }), max1h, { now = NOW }))
    assert.are.same({ "Found 1 long-lived tokens from users:", ",,zzzzz-tpzed-nonamenoname123" }, result:lines())
  end)

  it("passes on a store's fail triple", function()
    local broken = { check = function() return nil, "unreachable: the database went away", "unreachable" end }
    expect.fails("unreachable", migrate.check_long_lived(broken, max1h, { now = NOW }))
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() migrate.check_long_lived(nil, max1h) end,
      "bad argument #1 to 'check_long_lived' (store expected)")
    assert.has_error(function() migrate.check_long_lived(memory({}), "1h") end,
      "bad argument #2 to 'check_long_lived' (policy expected)")
    assert.has_error(function() migrate.check_long_lived(memory({}), max1h, { when = 1 }) end,
      "bad argument #3 to 'check_long_lived' (unknown option 'when')")
  end)
end)

describe("migrate.fix_long_lived", function()
  it("prints the cutoff as Ruby's Time#to_s, the warnings, the count, and updates exactly the selection", function()
    local list = records()
    local result = assert(migrate.fix_long_lived(memory(list), max1h, { now = NOW, tz = "UTC" }))
    assert.are.same({
      "Setting token expiration to: 2020-08-25 04:30:50 +0000",
      "*** WARNING, found ApiClientAuthorization with invalid user: auth id: 4, user id: 999",
      "3 tokens updated.",
    }, result:lines())
    local expiries, updated = {}, {}
    for i, r in ipairs(list) do
      expiries[i] = r.expires_at
      updated[i] = r.updated_at or false
    end
    assert.are.same({ NOW + H, NOW + H, NOW + H, tp.null, tp.null, NOW + 10 * H, NOW + H, NOW - H }, expiries)
    assert.are.same({ NOW, NOW, false, false, false, false, NOW, false }, updated)
    -- Fixed, nothing is long-lived any more.
    assert.are.same({ "*** WARNING, found ApiClientAuthorization with invalid user: auth id: 4, user id: 999",
      "No long-lived tokens found." }, assert(migrate.check_long_lived(memory(list), max1h, { now = NOW })):lines())
  end)

  it("changes nothing in a dry run and says what fix would update", function()
    local list = records()
    local result = assert(migrate.fix_long_lived(memory(list), max1h, { now = NOW, tz = "UTC", dry_run = true }))
    assert.are.equal("3 tokens would be updated (dry run: nothing was changed).", result:lines()[3])
    assert.is_true(result.dry_run)
    assert.are.same(records(), list)
  end)

  it("prints the time in the zone given, as Ruby does in the server's zone", function()
    local cases = {
      { "UTC", "2020-08-25 04:30:50 +0000" },
      { "+0200", "2020-08-25 06:30:50 +0200" },
      { "-05:00", "2020-08-24 23:30:50 -0500" },
      { "+0530", "2020-08-25 10:00:50 +0530" },
    }
    for _, case in ipairs(cases) do
      local result = assert(migrate.fix_long_lived(memory({}), max1h, { now = NOW, tz = case[1] }))
      assert.are.same({ "Setting token expiration to: " .. case[2], "0 tokens updated." }, result:lines())
    end
    expect.fails("malformed", migrate.fix_long_lived(memory({}), max1h, { now = NOW, tz = "Mars/Olympus" }))
  end)

  it("prints the one line of the rake task without any lifetime, and changes nothing", function()
    local list = records()
    local result = assert(migrate.fix_long_lived(memory(list), tp.policy {}, { now = NOW }))
    assert.are.same({ NO_POLICY }, result:lines())
    assert.are.same(records(), list)
  end)
end)

describe("store.memory", function()
  it("selects exactly what policy:long_lived selects, over many generated rows", function()
    local owners = { alice, bob, root, anon, { user_id = 5, uuid = "aaaaa-tpzed-000000000000000", user = {} },
      { user_id = 6, uuid = "bbbbb-tpzed-anonymouspublic", user = {} } }
    local list, want = {}, 0
    for i = 1, 3000 do
      local owner = owners[i % 7 + 1] -- the seventh is a missing user
      local e = ({ nil, NOW + H - 1, NOW + H, NOW + H + 1, NOW, NOW + 99 * H })[i % 6 + 1]
      list[i] = token(i, owner, e)
      if max1h:long_lived(list[i], NOW) then want = want + 1 end
    end
    local result = assert(migrate.check_long_lived(memory(list), max1h, { now = NOW }))
    assert.are.equal(want, result.tokens)
    assert.are.equal(want, assert(migrate.fix_long_lived(memory(list), max1h, { now = NOW, tz = "UTC" })).updated)
    assert.are.equal(0, assert(migrate.check_long_lived(memory(list), max1h, { now = NOW })).tokens)
  end)

  it("raises for records that are not a table", function()
    assert.has_error(function() memory("rows") end)
  end)
end)
