-- tokenpolicy check-long-lived and fix-long-lived: the rake tasks' lines
-- from a records file, every user's token caches with --files, and the
-- one-line errors; run as a subprocess with an explicit environment.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local LUA = "lua" .. _VERSION:match("%d+%.%d+")
local BUILD = os.getenv("TOKENPOLICY_TEST_BUILD") or ("build/" .. _VERSION:match("%d+%.%d+"))
local NOW = 1598326250 -- 2020-08-25 03:30:50 UTC
local it_root = tp.euid() == 0 and it or pending

local quote, slurp, write = expect.quote, expect.read_file, expect.write_file

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

-- bin/tokenpolicy under `env -i` (helpers/expect.lua).
local run = require("helpers.expect").run_cli

local RECORDS = tp.json_encode {
  { id = 1, user_id = 2, owner_uuid = "zzzzz-tpzed-bbbbbbbbbbbbbbb", expires_at = tp.null,
    user = { username = "bob", email = "bob@example.org", uuid = "zzzzz-tpzed-bbbbbbbbbbbbbbb" } },
  { id = 2, user_id = 1, owner_uuid = "zzzzz-tpzed-aaaaaaaaaaaaaaa", expires_at = NOW + 3601,
    user = { username = "alice", email = "alice@example.org", uuid = "zzzzz-tpzed-aaaaaaaaaaaaaaa" } },
  { id = 3, user_id = 42, owner_uuid = tp.null, expires_at = tp.null },
  { id = 4, user_id = 3, owner_uuid = "zzzzz-tpzed-000000000000000", expires_at = tp.null,
    user = { username = "root", uuid = "zzzzz-tpzed-000000000000000" } },
  { id = 5, user_id = 2, owner_uuid = "zzzzz-tpzed-bbbbbbbbbbbbbbb", expires_at = NOW + 3600,
    user = { username = "bob", email = "bob@example.org", uuid = "zzzzz-tpzed-bbbbbbbbbbbbbbb" } },
}

local WARNING = "*** WARNING, found ApiClientAuthorization with invalid user: auth id: 3, user id: 42\n"
local NO_POLICY = "No expiration policy set (API.MaxTokenLifetime nor Login.TokenLifetime is set), nothing to do.\n"

after_each(function() collectgarbage() end)

describe("tokenpolicy check-long-lived / fix-long-lived", function()
  local dir, records
  setup(function()
    dir = expect.new_dir()
    records = dir .. "/records.json"
    write(records, RECORDS)
  end)
  teardown(function() expect.remove_dir(dir) end)

  it("prints the rake check's lines and exits 1 when tokens are found", function()
    local r = run { "check-long-lived", "--records", records, "--max-token-lifetime", "1h",
      "--now", "2020-08-25T03:30:50Z" }
    assert.are.same({ code = 1, err = "", out = WARNING .. "Found 2 long-lived tokens from users:\n"
      .. "bob,bob@example.org,zzzzz-tpzed-bbbbbbbbbbbbbbb\nalice,alice@example.org,zzzzz-tpzed-aaaaaaaaaaaaaaa\n" }, r)
  end)

  it("exits 0 with No long-lived tokens found. when none outlives the policy", function()
    local r = run { "check-long-lived", "--records", records, "--token-lifetime", "2h", "--now", tostring(NOW) }
    -- With 2h only bob's token without expiry remains.
    assert.are.equal(1, r.code)
    assert.matches("Found 1 long-lived tokens from users:", r.out, 1, true)
    write(dir .. "/none.json", "[]")
    r = run { "check-long-lived", "--records", dir .. "/none.json", "--max-token-lifetime", "1h" }
    assert.are.same({ code = 0, err = "", out = "No long-lived tokens found.\n" }, r)
  end)

  it("shows progress on stderr only when stderr is a terminal", function()
    -- `script` gives the command a terminal; stdout goes to a file.
    local out = dir .. "/progress.out"
    local sanitizer = {}  -- under `make asan` the command needs the runtime preloaded again
    for _, name in ipairs { "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" } do
      if os.getenv(name) then sanitizer[#sanitizer + 1] = quote(name .. "=" .. os.getenv(name)) end
    end
    local inner = ("env -i PATH=/usr/bin:/bin TOKENPOLICY_LUA=%s TOKENPOLICY_BUILD=%s %s bin/tokenpolicy "
      .. "check-long-lived --records %s --max-token-lifetime 1h --now %d >%s")
      :format(LUA, BUILD, table.concat(sanitizer, " "), quote(records), NOW, quote(out))
    local pipe = assert(io.popen("env -u LD_PRELOAD script -qec " .. quote(inner) .. " /dev/null"))
    local terminal = pipe:read("a")
    pipe:close()
    assert.matches("^tokenpolicy: checking the records%.%.%. done in %d+s\r?\n$", terminal)
    assert.matches("^%*%*%* WARNING", slurp(out))
    -- not a terminal: stderr stays empty (the other cases assert err = "")
    assert.are.equal("", run({ "check-long-lived", "--records", records, "--max-token-lifetime", "1h" }).err)
  end)

  it("prints the rake task's one line without any lifetime", function()
    assert.are.same({ code = 0, err = "", out = NO_POLICY }, run { "check-long-lived", "--records", records })
    assert.are.same({ code = 0, err = "", out = NO_POLICY }, run { "fix-long-lived", "--records", records })
  end)

  it("takes the policy from Arvados' config.yml", function()
    write(dir .. "/config.yml", "Clusters:\n  zzzzz:\n    API:\n      MaxTokenLifetime: 1h\n")
    local r = run { "check-long-lived", "--config", dir .. "/config.yml", "--records", records, "--now", tostring(NOW) }
    assert.are.equal(1, r.code)
    assert.matches("Found 2 long-lived tokens from users:", r.out, 1, true)
  end)

  it("prints the rake fix's lines, the time in the zone of TZ", function()
    local cases = { { "UTC", "2020-08-25 04:30:50 +0000" }, { "Asia/Kolkata", "2020-08-25 10:00:50 +0530" } }
    for _, case in ipairs(cases) do
      local r = run({ "fix-long-lived", "--records", records, "--max-token-lifetime", "1h", "--now", tostring(NOW),
        "--dry-run" }, { TZ = case[1] })
      assert.are.same({ code = 0, err = "", out = "Setting token expiration to: " .. case[2] .. "\n" .. WARNING
        .. "2 tokens would be updated (dry run: nothing was changed).\n" }, r)
    end
  end)

  it("prints JSON with the lines, lists as lists", function()
    local r = run { "check-long-lived", "--records", records, "--max-token-lifetime", "1h", "--now", tostring(NOW),
      "--json" }
    assert.are.equal(1, r.code)
    local result = assert(tp.json_decode(r.out))
    assert.are.equal(2, result.tokens)
    assert.are.equal(NOW + 3600, result.cutoff)
    assert.are.same({ { id = 3, user_id = 42 } }, result.warnings)
    assert.are.equal("Found 2 long-lived tokens from users:", result.lines[2])
    write(dir .. "/none.json", "[]")
    r = run { "check-long-lived", "--records", dir .. "/none.json", "--max-token-lifetime", "1h", "--json" }
    assert.matches('"users":[]', r.out, 1, true)
    assert.matches('"warnings":[]', r.out, 1, true)
  end)

  it("says in one line, exit 2, when the database cannot be reached, without its password", function()
    local args = { "check-long-lived", "--db", "host=/nonexistent dbname=arvados password=sekrit",
                   "--max-token-lifetime", "1h" }
    assert.are.same({ code = 2, out = "",
                      err = "tokenpolicy: unreachable: PostgreSQL (arvados): cannot connect: "
                        .. "no connection to the server\n" }, run(args))
  end)

  it("refuses what it cannot do in one line, exit 2", function()
    local cases = {
      { { "check-long-lived", "--max-token-lifetime", "1h" }, "say where the tokens are: --config FILE or --db "
        .. "CONNINFO (Arvados' database), --files ROOT, or --records FILE" },
      { { "check-long-lived", "--records", records, "--files", "/tmp" }, "give one of --db, --files and --records" },
      { { "check-long-lived", "--records", records, "--now", "soon" },
        '--now: invalid time "soon"; give seconds since the epoch or 2026-01-01T00:00:00Z' },
      { { "fix-long-lived", "--records", dir .. "/missing.json" } },
      { { "check-long-lived", "--records", records, "--max-token-lifetime", "1 day" } },
    }
    for _, case in ipairs(cases) do
      local r = run(case[1])
      assert.are.equal(2, r.code)
      assert.are.equal("", r.out)
      if case[2] then
        assert.are.equal("tokenpolicy: " .. case[2] .. "\n", r.err)
      else
        assert.matches("^tokenpolicy: [^\n]+\n$", r.err)
      end
    end
  end)

  it("lists both commands in its help", function()
    local r = run { "help" }
    assert.matches("check-long-lived", r.out, 1, true)
    assert.matches("fix-long-lived", r.out, 1, true)
    assert.matches("--dry-run", run({ "fix-long-lived", "--help" }).out, 1, true)
  end)

  it_root("checks and cleans every user's token caches under a root with --files", function()
    local root = dir .. "/tmp"
    sh(("mkdir -m 1777 %s && mkdir -m 755 %s/alice && mkdir -m 700 %s/alice/.rucio_alice"):format(root, root, root))
    local token = root .. "/alice/.rucio_alice/auth_token_for_account_alice"
    write(token, "alice-/DC=ch/CN=Alice-unknown-0123456789abcdef0123456789abcdef")
    write(root .. "/alice/.rucio_alice/auth_token_exp_for_account_alice", tostring(NOW - 60))
    sh(("chown -R 54321 %s/alice && chmod 600 %s/alice/.rucio_alice/*"):format(root, root))
    local line = ("expired %s (uid 54321, rucio rucio, mode 0600, expires 2020-08-25 03:29:50 UTC)"):format(token)
    local r = run { "check-long-lived", "--files", root, "--max-token-lifetime", "1h", "--now", tostring(NOW) }
    assert.are.same({ code = 1, err = "", out = line .. "\n" }, r)
    r = run { "fix-long-lived", "--files", root, "--max-token-lifetime", "1h", "--now", tostring(NOW), "--dry-run" }
    assert.are.same({ code = 0, err = "", out = "would remove " .. line .. "\n1 token files would be removed.\n" }, r)
    assert.is_table(tp.stat(token))
    r = run { "fix-long-lived", "--files", root, "--max-token-lifetime", "1h", "--now", tostring(NOW) }
    assert.are.same({ code = 0, err = "", out = "removed " .. line .. "\n1 token files removed.\n" }, r)
    assert.is_nil(tp.stat(token))
    r = run { "check-long-lived", "--files", root, "--max-token-lifetime", "1h", "--now", tostring(NOW) }
    assert.are.same({ code = 0, err = "", out = "No token files break the policy.\n" }, r)
    r = run { "check-long-lived", "--files", root, "--max-token-lifetime", "1h", "--now", tostring(NOW), "--json" }
    assert.are.equal(0, r.code)
    assert.are.same({}, assert(tp.json_decode(r.out)).files)
  end)
end)
