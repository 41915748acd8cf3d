--- A token store over a Lua list of records: for scripts, tests and
-- what-if runs, and the reference the other stores are compared with.
--
-- Each record is `{ id=, user_id=, owner_uuid=, expires_at=, user= }`:
-- `owner_uuid` is `tokenpolicy.null` when the user row is missing (as a
-- store's join gives it), `expires_at` an epoch or `tokenpolicy.null`, and
-- `user` the `{ username=, email=, uuid= }` of the owner (nil when missing).
-- The selection is the C engine's `policy:long_lived`, so this store is
-- by construction what the rake tasks select. See docs/migrate.md.
-- @module tokenpolicy.store.memory

local util = require "tokenpolicy.util"

local Store = {}
Store.__index = Store

local function check_sel(sel, fname)
  if type(sel) ~= "table" then
    util.argerror(1, fname, "selection table expected, got " .. type(sel), 4)
  end
  if sel.policy == nil or math.type(sel.now) ~= "integer" then
    util.argerror(1, fname, "selection needs policy and an integer now", 4)
  end
end

-- Walks the selection in record order: calls on_selected(record) for each
-- selected token and collects the warnings of tokens without a user.
local function walk(self, sel, on_selected)
  local policy, now = sel.policy, sel.now
  local warnings = {}
  for _, record in ipairs(self.records) do
    local selected, _, skip = policy:long_lived(record, now)
    if selected == nil then
      return nil, _, skip
    end
    if selected then
      on_selected(record)
    elseif skip == "invalid_user" then
      warnings[#warnings + 1] = { id = record.id, user_id = record.user_id }
    end
  end
  return warnings
end

--- The rake check's selection: the tokens, their distinct users, warnings.
-- @tparam table sel `{ policy=, lifetime=, now=, cutoff= }`
-- @treturn table `{ tokens=, users={...}, warnings={...} }`, or the fail triple
function Store:check(sel)
  check_sel(sel, "check")
  local users, seen, count = {}, {}, 0
  local warnings, err, code = walk(self, sel, function(record)
    count = count + 1
    local key = record.user_id
    if key == nil then key = record.owner_uuid end
    if not seen[key] then
      seen[key] = true
      local u = record.user or {}
      users[#users + 1] = { username = u.username, email = u.email, uuid = u.uuid or record.owner_uuid }
    end
  end)
  if not warnings then
    return nil, err, code
  end
  return { tokens = count, users = users, warnings = warnings }
end

--- Sets `expires_at` (and `updated_at`) of exactly the selected records.
-- @tparam table sel the selection (see `check`)
-- @tparam table opts `{ dry_run=, expires_at= }`
-- @treturn table `{ updated=, warnings={...} }`, or the fail triple
function Store:fix(sel, opts)
  check_sel(sel, "fix")
  opts = util.check_opts(opts, { dry_run = "boolean", expires_at = "integer" }, "fix", 2)
  local expires_at = opts.expires_at or sel.cutoff
  local chosen = {}
  local warnings, err, code = walk(self, sel, function(record)
    chosen[#chosen + 1] = record
  end)
  if not warnings then
    return nil, err, code
  end
  -- Selected first, updated after: the update never changes the selection.
  if not opts.dry_run then
    for _, record in ipairs(chosen) do
      record.expires_at = expires_at
      record.updated_at = sel.now
    end
  end
  return { updated = #chosen, warnings = warnings }
end

--- Nothing to release; present so that every store closes alike.
function Store:close() -- luacheck: ignore 212
end

Store.__tostring = function(self)
  local n = #self.records
  return ("tokenpolicy.store.memory (%d record%s)"):format(n, n == 1 and "" or "s")
end

--- Makes a memory store over `records` (kept, not copied: fix updates them).
-- @tparam {table,...} records
-- @treturn table the store
-- @function new
local function new(records)
  if type(records) ~= "table" then
    util.argerror(1, "store.memory", "table of records expected, got " .. type(records), 3)
  end
  return setmetatable({ records = records }, Store)
end

return setmetatable({ new = new }, { __call = function(_, records) return new(records) end })
