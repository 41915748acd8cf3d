--- A token store over the token caches of every user under a temporary
-- directory (`/tmp`): Rucio's `<root>/<user>/.rucio_<user>[@vo]/
-- auth_token_for_*` files (with the expiry file `auth_token_exp_for_*`
-- beside them) and WLCG's `<root>/bt_u<uid>`.
--
-- A site admin runs it as root, so everything here assumes that the users
-- whose files it reads are hostile: it never follows a symbolic link, it
-- reads and removes only regular files owned by the uid whose directory
-- holds them (for `bt_u<uid>`, that uid), and it reaches files only through
-- the core's safe primitives (`list_dir`, `stat`, `read_token`,
-- `remove_token`), which walk paths without following links either, so a
-- directory swapped for a link between two calls gains nothing.
--
-- `check` lists the files that break the policy (no expiry, or an expiry
-- after now + lifetime: the rake tasks' selection, by `policy:long_lived`)
-- or are already expired, and the ones group or others can read; `fix`
-- removes the expired and policy-breaking ones. See docs/migrate.md.
-- @module tokenpolicy.store.files

local core = require "tokenpolicy.core"
local util = require "tokenpolicy.util"
local classify = require("tokenpolicy.classify").classify

local Store = {}
Store.__index = Store

local function utc(epoch)
  return os.date("!%Y-%m-%d %H:%M:%S UTC", epoch)
end

local function join(dir, name)
  if dir:sub(-1) == "/" then
    return dir .. name
  end
  return dir .. "/" .. name
end

-- The name of a uid, for the users list (the uid when it has none).
local function user_name(names, uid)
  local name = names[uid]
  if name == nil then
    local pw = core.user(uid)
    name = pw and pw.name or ("uid " .. uid)
    names[uid] = name
  end
  return name
end

-- The expiry epoch in a Rucio expiry file (Rucio writes an integer; a
-- fraction is dropped), or nil.
local function read_expiry(path, uid)
  local text = core.read_token(path, { uid = uid, allow_insecure = true })
  if not text then
    return nil
  end
  local number = tonumber(text:match("^%d+%.?%d*$"))
  return number and math.floor(number) or nil
end

-- One token file: read (never kept), classified, its expiry found.
local function describe(ctx, path, uid, scheme, expiry_path)
  local token, info = core.read_token(path, { uid = uid, allow_insecure = true })
  if not token then
    ctx.skipped[#ctx.skipped + 1] = { path = path, reason = info }
    return
  end
  local kind = classify(token).kind
  local expires_at
  if expiry_path then
    expires_at = read_expiry(expiry_path, uid)
    if expires_at == nil then
      expiry_path = core.stat(expiry_path) and expiry_path or nil
    end
  end
  if expires_at == nil and kind == "jwt" then
    local jwt = core.decode(token)
    local exp = jwt and jwt.claims.exp
    if math.type(exp) == "integer" then
      expires_at = exp
    end
  end
  ctx.entries[#ctx.entries + 1] = { path = path, uid = uid, user = user_name(ctx.names, uid), scheme = scheme,
    kind = kind, mode = info.mode, expires_at = expires_at, expiry_path = expiry_path,
    readable_by_others = info.mode & 63 ~= 0 }
end

local function skip(ctx, path, reason)
  ctx.skipped[#ctx.skipped + 1] = { path = path, reason = reason }
end

-- What is at path, without following a link: the stat table, or nil after
-- recording why it is skipped.
local function regular_of(ctx, path, uid)
  local st = core.stat(path)
  if not st then
    return nil
  end
  if st.type == "symlink" then
    return skip(ctx, path, "a symbolic link: not followed")
  end
  if st.type ~= "file" then
    return skip(ctx, path, "not a regular file")
  end
  if st.uid ~= uid then
    return skip(ctx, path, ("it belongs to uid %d, not uid %d"):format(st.uid, uid))
  end
  return st
end

-- One user's `<root>/<user>` directory (owned by uid): its `.rucio_*` caches.
local function scan_rucio(ctx, dir, uid)
  local names = core.list_dir(dir)
  for _, name in ipairs(names or {}) do
    if name:find("^%.rucio_") then
      local cache = join(dir, name)
      local st = core.stat(cache)
      if st and st.type == "symlink" then
        skip(ctx, cache, "a symbolic link: not followed")
      elseif st and st.type == "directory" and st.uid ~= uid then
        skip(ctx, cache, ("it belongs to uid %d, not uid %d who owns %s"):format(st.uid, uid, dir))
      elseif st and st.type == "directory" then
        local files, err = core.list_dir(cache)
        if not files then skip(ctx, cache, err) end
        for _, file in ipairs(files or {}) do
          local rest = file:match("^auth_token_for_(.+)$")
          if rest then
            local path = join(cache, file)
            if regular_of(ctx, path, uid) then
              describe(ctx, path, uid, "rucio", join(cache, "auth_token_exp_for_" .. rest))
            end
          end
        end
      end
    end
  end
end

--- Every token file under the root: `{ path=, uid=, user=, scheme=, kind=,
-- mode=, expires_at=, expiry_path=, readable_by_others= }` (never the
-- token), and what was left alone with why (`{ path=, reason= }`).
-- @treturn table entries, or the fail triple
-- @treturn table skipped
function Store:scan()
  local names, err, code = core.list_dir(self.root)
  if not names then
    return nil, err, code
  end
  local ctx = { entries = {}, skipped = {}, names = {} }
  for _, name in ipairs(names) do
    local path = join(self.root, name)
    local wlcg_uid = math.tointeger(tonumber(name:match("^bt_u(%d+)$")))
    if wlcg_uid then
      if regular_of(ctx, path, wlcg_uid) then
        describe(ctx, path, wlcg_uid, "wlcg", nil)
      end
    else
      local st = core.stat(path)
      if st and st.type == "directory" then
        scan_rucio(ctx, path, st.uid)
      end
    end
  end
  return ctx.entries, ctx.skipped
end

local function check_sel(sel, fname)
  if type(sel) ~= "table" or sel.policy == nil then
    util.argerror(1, fname, "selection table with a policy expected", 4)
  end
end

-- Judges each entry against the selection: state and the line to print.
local function judge(entries, sel, default_now)
  local now = sel.now or default_now or os.time()
  for _, e in ipairs(entries) do
    local selected, _, skipped = sel.policy:long_lived({ expires_at = e.expires_at or core.null }, now)
    if selected == nil then
      return nil, _, skipped
    end
    if e.expires_at and e.expires_at <= now then
      e.state = "expired"
    elseif selected then
      e.state = e.expires_at and "exceeds_policy" or "no_expiry"
    else
      e.state = "valid"
    end
    e.long_lived = selected
    local expiry = e.expires_at and ("expires " .. utc(e.expires_at)) or "no expiry"
    e.line = ("%s %s (uid %d, %s %s, mode %04o, %s)%s"):format(e.state, e.path, e.uid, e.scheme, e.kind, e.mode,
      expiry, e.readable_by_others and "; readable by others: chmod 600" or "")
  end
  return entries
end

-- What check and fix return prints its count, then each file's line and
-- each path left alone with why.
local Result = { __name = "tokenpolicy.store.files.Result" }
function Result.__tostring(r)
  local lines = { r.updated and ("%d token file%s %s"):format(r.updated, r.updated == 1 and "" or "s",
                    r.dry_run and "would be removed" or "removed")
                  or ("%d long-lived token file%s"):format(r.tokens, r.tokens == 1 and "" or "s") }
  for _, e in ipairs(r.files) do
    lines[#lines + 1] = e.line
  end
  for _, s in ipairs(r.skipped) do
    lines[#lines + 1] = ("skipped %s: %s"):format(s.path, s.reason)
  end
  return table.concat(lines, "\n")
end

--- The store interface's check, plus `files` (the entries that break the
-- policy, are expired or are readable by others, each with `state` and
-- `line`) and `skipped`. `tokens` counts the policy-breaking files,
-- `users` their owners (`uuid` is the uid), `warnings` is empty.
-- @tparam table sel `{ policy=, lifetime=, now=, cutoff= }`
-- @treturn table the result, or the fail triple
function Store:check(sel)
  check_sel(sel, "check")
  local entries, skipped, code = self:scan()
  if not entries then
    return nil, skipped, code
  end
  local ok, err, ecode = judge(entries, sel, self.now)
  if not ok then
    return nil, err, ecode
  end
  local files, users, seen, tokens = {}, {}, {}, 0
  for _, e in ipairs(entries) do
    if e.long_lived then
      tokens = tokens + 1
      if not seen[e.uid] then
        seen[e.uid] = true
        users[#users + 1] = { username = e.user, uuid = tostring(e.uid) }
      end
    end
    if e.state ~= "valid" or e.readable_by_others then
      files[#files + 1] = e
    end
  end
  return setmetatable({ tokens = tokens, users = users, warnings = {}, files = files, skipped = skipped }, Result)
end

--- Removes the expired and policy-breaking token files (and the Rucio
-- expiry file beside each), each only if it is still a regular file owned
-- by its uid; `dry_run` removes nothing. `updated` counts the files
-- removed (or that would be), `files` lists them with `line`, `removed`
-- every path removed, and `skipped` what failed or was left alone.
-- @tparam table sel the selection (see `check`)
-- @tparam[opt] table opts `{ dry_run=, expires_at= }`
-- @treturn table the result, or the fail triple
function Store:fix(sel, opts)
  check_sel(sel, "fix")
  opts = util.check_opts(opts, { dry_run = "boolean", expires_at = "integer" }, "fix", 2)
  local entries, skipped, code = self:scan()
  if not entries then
    return nil, skipped, code
  end
  local ok, err, ecode = judge(entries, sel, self.now)
  if not ok then
    return nil, err, ecode
  end
  local files, removed = {}, {}
  for _, e in ipairs(entries) do
    if e.state == "expired" or e.long_lived then
      if opts.dry_run then
        e.line = "would remove " .. e.line
        files[#files + 1] = e
      else
        local done, why = core.remove_token(e.path, { uid = e.uid })
        if done then
          removed[#removed + 1] = e.path
          e.line = "removed " .. e.line
          files[#files + 1] = e
          if e.expiry_path and core.stat(e.expiry_path) then
            local gone, why2 = core.remove_token(e.expiry_path, { uid = e.uid })
            if gone then
              removed[#removed + 1] = e.expiry_path
            else
              skipped[#skipped + 1] = { path = e.expiry_path, reason = why2 }
            end
          end
        else
          skipped[#skipped + 1] = { path = e.path, reason = why }
        end
      end
    end
  end
  return setmetatable({ updated = #files, warnings = {}, files = files, removed = removed, skipped = skipped,
                        dry_run = opts.dry_run or nil }, Result)
end

--- Nothing to release; present so that every store closes alike.
function Store:close() -- luacheck: ignore 212
end

Store.__tostring = function(self)
  return "tokenpolicy.store.files (" .. self.root .. ")"
end

--- Makes a store over the token caches under `opts.root`.
-- @tparam table opts `{ root= }` (default "/tmp")
-- @treturn table the store
-- @function new
local function new(opts)
  opts = util.check_opts(opts, { root = "string", now = "number" }, "store.files", 1)
  return setmetatable({ root = opts.root or "/tmp", now = opts.now }, Store)
end

return setmetatable({ new = new }, { __call = function(_, opts) return new(opts) end })
