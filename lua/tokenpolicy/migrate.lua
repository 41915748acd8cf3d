--- Policy migration: find and fix long-lived tokens, as Arvados' rake
-- tasks `db:check_long_lived_tokens` and `db:fix_long_lived_tokens` do,
-- over any store (`tokenpolicy.store.memory`, `.files`, `.arvados_pg`).
--
-- The results print, through `:lines()`, exactly the lines the rake tasks
-- print, so an admin can compare the two runs line for line. The store
-- does the selection (set-based where it can); the policy's `long_lived`
-- is the reference every store must equal. See docs/migrate.md.
-- @module tokenpolicy.migrate

local util = require "tokenpolicy.util"

local M = {}

local NO_POLICY = "No expiration policy set (API.MaxTokenLifetime nor Login.TokenLifetime is set), nothing to do."

-- Ruby prints nil as the empty string in "#{...}".
local function text(value)
  if value == nil or type(value) == "userdata" then
    return ""
  end
  return tostring(value)
end

local function integer_text(value)
  if math.type(value) == "float" and value == math.floor(value) then
    return ("%d"):format(value)
  end
  return text(value)
end

local function warning_line(w)
  return ("*** WARNING, found ApiClientAuthorization with invalid user: auth id: %s, user id: %s")
    :format(integer_text(w.id), integer_text(w.user_id))
end

--- Ruby's `Time#to_s` of an epoch: `2020-08-25 03:30:50 +0000`.
-- Without `tz` the local zone of the process (its TZ); `tz` may be `"UTC"`
-- or a fixed offset (`"+0200"`, `"-05:00"`).
-- @tparam integer epoch
-- @tparam[opt] string tz
-- @treturn string|nil the time, or nil and a message for an unknown zone
function M.ruby_time(epoch, tz)
  if tz == nil then
    return os.date("%Y-%m-%d %H:%M:%S %z", epoch)
  end
  if tz == "UTC" or tz == "UTC0" or tz == "Z" then
    return os.date("!%Y-%m-%d %H:%M:%S +0000", epoch)
  end
  local sign, hh, mm = tz:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then
    return nil, ('unknown zone "%s": give UTC or an offset such as +0200'):format(tz:sub(1, 32))
  end
  local offset = (tonumber(hh) * 3600 + tonumber(mm) * 60) * (sign == "-" and -1 or 1)
  return os.date("!%Y-%m-%d %H:%M:%S ", epoch + offset) .. sign .. hh .. mm
end

-- The lifetime the rake tasks use: MaxTokenLifetime, else TokenLifetime.
local function lifetime_of(policy)
  local settings = policy:settings()
  local lifetime = settings.max_token_lifetime
  if not lifetime or lifetime == 0 then
    lifetime = settings.login_token_lifetime
  end
  if not lifetime or lifetime == 0 then
    return nil
  end
  return lifetime
end

local function check_args(store, policy, fname)
  if type(store) ~= "table" or type(store.check) ~= "function" then
    util.argerror(1, fname, "store expected", 4)
  end
  if (type(policy) ~= "userdata" and type(policy) ~= "table") or not policy.settings then
    util.argerror(2, fname, "policy expected", 4)
  end
end

-- The store's own extra fields (files, skipped, removed, ...) stay in the
-- result, under the migration's.
local function merge(extra, result)
  for k, v in pairs(extra) do
    if result[k] == nil then
      result[k] = v
    end
  end
  return result
end

local function now_of(opts)
  local now = opts.now or os.time()
  return math.tointeger(now) or math.floor(now)
end

local Check = {}
Check.__index = Check

--- The rake check task's output lines.
-- @treturn {string,...}
function Check:lines()
  if self.no_policy then
    return { NO_POLICY }
  end
  local lines = {}
  for _, w in ipairs(self.warnings) do
    lines[#lines + 1] = warning_line(w)
  end
  if #self.users > 0 then
    lines[#lines + 1] = ("Found %d long-lived tokens from users:"):format(self.tokens)
    for _, u in ipairs(self.users) do
      lines[#lines + 1] = ("%s,%s,%s"):format(text(u.username), text(u.email), text(u.uuid))
    end
  else
    lines[#lines + 1] = "No long-lived tokens found."
  end
  return lines
end

Check.__tostring = function(self)
  return table.concat(self:lines(), "\n")
end

--- Finds the long-lived tokens and their users, as `db:check_long_lived_tokens`.
-- With no lifetime set the result has `no_policy = true` and its one line.
-- @tparam table store a store (docs/migrate.md)
-- @param policy a `tokenpolicy.policy`
-- @tparam[opt] table opts `{ now= }`
-- @treturn table `{ tokens=, users=, warnings=, lifetime=, now=, cutoff= }` with `:lines()`, or the fail triple
function M.check_long_lived(store, policy, opts)
  check_args(store, policy, "check_long_lived")
  opts = util.check_opts(opts, { now = "number" }, "check_long_lived", 3)
  local now = now_of(opts)
  local lifetime = lifetime_of(policy)
  if not lifetime then
    return setmetatable({ no_policy = true, tokens = 0, users = {}, warnings = {}, now = now }, Check)
  end
  local sel = { policy = policy, lifetime = lifetime, now = now, cutoff = now + lifetime }
  local found, err, code = store:check(sel)
  if not found then
    return nil, err, code
  end
  return setmetatable(merge(found, { tokens = found.tokens, users = found.users, warnings = found.warnings,
    lifetime = lifetime, now = now, cutoff = sel.cutoff }), Check)
end

local Fix = {}
Fix.__index = Fix

--- The rake fix task's output lines (a dry run's last line says what would
-- be updated, and that nothing was).
-- @treturn {string,...}
function Fix:lines()
  if self.no_policy then
    return { NO_POLICY }
  end
  local lines = { "Setting token expiration to: " .. self.expires_at_text }
  for _, w in ipairs(self.warnings) do
    lines[#lines + 1] = warning_line(w)
  end
  -- a dry run says so on its last line: the same count, read as "would"
  if self.dry_run then
    lines[#lines + 1] = ("%d tokens would be updated (dry run: nothing was changed)."):format(self.updated)
  else
    lines[#lines + 1] = ("%d tokens updated."):format(self.updated)
  end
  return lines
end

Fix.__tostring = Check.__tostring

--- Sets the expiry of every long-lived token to now + lifetime, as
-- `db:fix_long_lived_tokens` does; `dry_run` changes nothing and reports
-- what would be updated.
-- @tparam table store a store (docs/migrate.md)
-- @param policy a `tokenpolicy.policy`
-- @tparam[opt] table opts `{ now=, dry_run=, tz= }`
-- @treturn table `{ updated=, warnings=, expires_at=, expires_at_text=, dry_run= }` with `:lines()`, or the fail triple
function M.fix_long_lived(store, policy, opts)
  check_args(store, policy, "fix_long_lived")
  opts = util.check_opts(opts, { now = "number", dry_run = "boolean", tz = "string" }, "fix_long_lived", 3)
  local now = now_of(opts)
  local lifetime = lifetime_of(policy)
  if not lifetime then
    return setmetatable({ no_policy = true, updated = 0, warnings = {}, now = now }, Fix)
  end
  local cutoff = now + lifetime
  local when, why = M.ruby_time(cutoff, opts.tz)
  if not when then
    return util.fail("malformed", why)
  end
  local sel = { policy = policy, lifetime = lifetime, now = now, cutoff = cutoff }
  local done, err, code = store:fix(sel, { dry_run = opts.dry_run == true, expires_at = cutoff })
  if not done then
    return nil, err, code
  end
  return setmetatable(merge(done, { updated = done.updated, warnings = done.warnings, expires_at = cutoff,
    expires_at_text = when, dry_run = opts.dry_run == true, lifetime = lifetime, now = now }), Fix)
end

return M
