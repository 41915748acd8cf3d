--- The `tokenpolicy` command: status, inspect, verify, logout, switch, revoke,
-- deny and denylist, check-long-lived and fix-long-lived.
--
-- `bin/tokenpolicy` runs `require("tokenpolicy.cli").main(arg)` and exits
-- with what it returns: 0 all is well, 1 a finding (an invalid or expired
-- token, a failed revocation, something left behind), 2 a usage or
-- environment error, with one line on stderr saying what to do.
--
-- Options are parsed by lua-argparse. The library itself is loaded only
-- once a command runs, so `--help` and usage errors start fast, and each
-- command loads only the workflow module it needs.
--
-- No output ever holds a token or a secret: tokens are shown through
-- `decode`/`classify`, whose printed forms leave out the secret parts, and
-- client secrets are read from a file or the environment, never argv.
-- @module tokenpolicy.cli

local argparse = require "argparse"

local M = {}

local PROG = "tokenpolicy"

-- Loaded on first use (see the module comment).
local tp
local function lib()
  tp = tp or require "tokenpolicy"
  return tp
end

--- Raised (as a table) to end a command with an exit code and one line.
local Exit = {}
Exit.__index = Exit
Exit.__tostring = function(e)
  return ("tokenpolicy: exit %d: %s"):format(e.code, e.line or "")
end

local function exit(code, line)
  error(setmetatable({ code = code, line = line }, Exit), 0)
end

-- Usage or environment error: one line saying what to do.
local function usage(line)
  exit(2, line)
end

-- Output -------------------------------------------------------------------

local out = {}

-- Colour only on a terminal and never with NO_COLOR (https://no-color.org).
-- Whether stdout is a terminal is asked of `test -t 1` only when stdout is a
-- character device, so pipes and files (the usual case) cost nothing.
local colour_on
local function colour_enabled()
  if colour_on == nil then
    colour_on = false
    local no_colour = os.getenv("NO_COLOR")
    local term = os.getenv("TERM")
    if (no_colour == nil or no_colour == "") and term ~= "dumb" then
      local st = lib().stat("/dev/stdout", { follow = true })
      if st and st.type == "other" then
        colour_on = os.execute("test -t 1") == true
      end
    end
  end
  return colour_on
end

local COLOURS = { green = "32", red = "31", yellow = "33", bold = "1" }

--- Wraps `text` in an ANSI colour when colour is enabled.
-- @tparam string name green, red, yellow or bold
-- @tparam string text
-- @treturn string
function out.paint(name, text)
  if colour_enabled() then
    return "\27[" .. COLOURS[name] .. "m" .. text .. "\27[0m"
  end
  return text
end

local function say(text)
  io.stdout:write(text, "\n")
end

local function note(text)
  io.stderr:write(text, "\n")
end

-- The result fields that are lists. json_encode writes every empty table
-- as `{}`; these are marked while copying and written as `[]`.
local LIST_FIELDS = { findings = true, actions = true, warnings = true, algs = true, reasons = true }
local EMPTY_LIST = "\1tokenpolicy-empty-list\1"

-- A string as JSON can carry it: JSON is UTF-8 without NUL (the core's
-- json_encode refuses anything else), while a path, a rucio.cfg value or a
-- file's name may hold any byte. Each byte that is not part of a valid
-- character, and each NUL, becomes U+FFFD; the core's encoder judges.
local REPLACEMENT = "\u{FFFD}"
local function json_text(s)
  if not s:find("[\0\128-\255]") or pcall(lib().json_encode, s) then return s end
  local parts, at = {}, 1
  while at <= #s do
    local n, bad = utf8.len(s, at)
    if n then
      parts[#parts + 1] = s:sub(at)
      break
    end
    parts[#parts + 1] = s:sub(at, bad - 1) .. REPLACEMENT
    at = bad + 1
  end
  local text = table.concat(parts):gsub("\0", REPLACEMENT)
  if pcall(lib().json_encode, text) then return text end
  -- what Lua 5.3's laxer utf8.len lets through (surrogates, code points
  -- over U+10FFFF): every byte outside ASCII goes
  return (s:gsub("[\0\128-\255]", REPLACEMENT))
end

-- Plain copies of result tables (no metatables, no functions), so that
-- json_encode sees data only, with the empty lists marked.
local function plain(value, seen)
  if type(value) ~= "table" then
    if type(value) == "function" or type(value) == "thread" then return nil end
    if type(value) == "string" then return json_text(value) end
    return value
  end
  seen = seen or {}
  if seen[value] then return nil end
  seen[value] = true
  local copy = {}
  for k, v in pairs(value) do
    if type(k) == "string" or math.type(k) == "integer" then
      if LIST_FIELDS[k] and type(v) == "table" and next(v) == nil then
        copy[k] = EMPTY_LIST
      else
        copy[type(k) == "string" and json_text(k) or k] = plain(v, seen)
      end
    end
  end
  seen[value] = nil
  return copy
end

-- JSON of a result (copied by `plain`); an empty top-level list is `[]`.
local function json(value, empty_is_array)
  if empty_is_array and type(value) == "table" and next(value) == nil then
    return "[]"
  end
  return (lib().json_encode(plain(value)):gsub('":"\\u0001tokenpolicy%-empty%-list\\u0001"', '":[]'))
end

-- Reading tokens -------------------------------------------------------------

local SPACE = "[ \t\n\v\f\r]"

local function strip(s)
  return (s:gsub("^" .. SPACE .. "+", ""):gsub(SPACE .. "+$", ""))
end

-- The token of the active discovered candidate: the first active one that
-- holds something, in discover's precedence order.
local function active_token()
  local t = lib()
  local list = t.discover()
  for _, c in ipairs(list) do
    if c.active and c.exists and not c.problem then
      local where = c.path or ("$" .. c.variable)
      if c.scheme == "arvados" and c.path then
        local text, err = t.read_config(c.path)
        if not text then usage(err .. "; fix the file or give the token with -") end
        for line in (text .. "\n"):gmatch("([^\n]*)\n") do
          local value = line:match("^%s*ARVADOS_API_TOKEN%s*=%s*(.-)%s*$")
          if value and value ~= "" then return value, where end
        end
      elseif c.path then
        local token, info = t.read_token(c.path, { allow_insecure = true })
        if not token then usage(info .. "; fix the file or give the token with -") end
        if info.warning then note("warning: " .. info.warning) end
        return token, where
      else
        local value = os.getenv(c.variable)
        if value and strip(value) ~= "" then return strip(value), where end
      end
    end
  end
  usage("no active token found (tokenpolicy status shows where tokens are looked for); give one with -")
end

--- The token a command works on, and where it came from (never the token).
-- `spec` is nil (the active token), `-` (stdin), a path to a token file,
-- or the token itself.
-- @tparam string|nil spec the TOKEN|FILE|- argument
-- @treturn string token
-- @treturn string where it came from, for messages
function M.token_from(spec)
  if spec == nil then
    return active_token()
  end
  if spec == "-" then
    local text = io.read("a")
    if not text or strip(text) == "" then usage("no token on stdin; pipe one in, e.g. tokenpolicy inspect - <file") end
    return strip(text), "stdin"
  end
  local t = lib()
  -- An existing path is a token file; anything else is the token itself
  -- (never echoed: a path that does not exist is not named either).
  if t.stat(spec) then
    local token, info = t.read_token(spec, { allow_insecure = true })
    if not token then usage(info) end
    if info.warning then note("warning: " .. info.warning) end
    return token, spec
  end
  -- No token begins like a path, so this one is a file that is missing.
  if spec:find("^%.?%.?/") then
    usage(("no such token file %s; give an existing file, or - to read the token from stdin"):format(spec))
  end
  return spec, "the command line"
end

-- A client secret: from a file (read as token files are, 0600 and owned by
-- the user) or from TOKENPOLICY_CLIENT_SECRET; never from the command line.
local function client_secret(path)
  if path then
    local secret, info = lib().read_token(path)
    if not secret then usage(info .. " (the client secret file must be yours and mode 0600)") end
    return secret
  end
  local value = os.getenv("TOKENPOLICY_CLIENT_SECRET")
  if value and value ~= "" then return value end
  return nil
end

-- Commands -------------------------------------------------------------------

local commands = {}

function commands.inspect(args)
  local t = lib()
  local token, where = M.token_from(args.token)
  local class = t.classify(token)
  local jwt = class.kind == "jwt" and t.decode(token) or nil
  if args.json then
    say(json({ header = jwt and plain(jwt.header) or t.null, claims = jwt and plain(jwt.claims) or t.null,
      kind = class.kind }))
  else
    note(("token from %s"):format(where))
    say(jwt and tostring(jwt) or tostring(class))
  end
  return 0
end

-- Keys for verify: an http(s) JWKS URL, else a JWKS/JWK/PEM file.
local function load_keys(spec)
  local t = lib()
  if spec:find("^https?://") then
    local keys, err, code = t.fetch_keys(spec)
    if not keys then usage(("cannot get the keys (%s); check --jwks and the network"):format(err or code)) end
    return keys
  end
  local text, err = t.read_config(spec)
  if not text then usage(("cannot read --jwks: %s; give a JWKS/PEM file or an https URL"):format(err)) end
  local keys, kerr = t.keys(text)
  if not keys or #keys == 0 then
    usage(("--jwks %s holds no usable key%s; give the issuer's JWKS"):format(spec, kerr and (": " .. kerr) or ""))
  end
  return keys
end

function commands.verify(args)
  local t = lib()
  local keys = load_keys(args.jwks)
  local token = M.token_from(args.token)
  local opts = { iss = args.iss, aud = args.aud, leeway = args.leeway }
  if args.alg and #args.alg > 0 then opts.algs = args.alg end
  local claims, header, code = t.verify(token, keys, opts)
  if args.json then
    if claims then
      say(json({ valid = true, claims = plain(claims), header = plain(header) }))
    else
      say(json({ valid = false, code = code, message = header }))
    end
  elseif claims then
    local exp = claims.exp and os.date("!%Y-%m-%d %H:%M:%S UTC", claims.exp) or "no expiry"
    say(("%s: %s, sub %s, iss %s, until %s"):format(out.paint("green", "valid"), header.alg,
      tostring(claims.sub or "-"), tostring(claims.iss or "-"), exp))
  else
    say(("%s: %s"):format(out.paint("red", "invalid"), header))
  end
  return claims and 0 or 1
end

-- What an `unavailable` provider's Retry-After asks for, or "".
local function retry_note(retry)
  return retry and ("; the provider asks to try again in %d s"):format(retry) or ""
end

function commands.revoke(args)
  local t = lib()
  local token = M.token_from(args.token)
  local endpoint = args.endpoint
  local issuer = args.issuer
  if not endpoint then
    if not issuer then
      local class = t.classify(token)
      local jwt = class.kind == "jwt" and t.decode(token)
      issuer = jwt and type(jwt.claims.iss) == "string" and jwt.claims.iss or nil
      if not issuer then
        usage("the token names no issuer; give --issuer URL or --endpoint URL")
      end
    end
    local meta, err, code, retry = t.oidc_metadata(issuer)
    if not meta then
      -- The issuer could not say where to revoke: the revocation failed.
      say(args.json and json({ ok = false, code = code, message = err, retry_after = retry })
        or ("%s: %s%s"):format(out.paint("red", "not revoked"), err, retry_note(retry)))
      return 1
    end
    endpoint = meta.revocation_endpoint
    if type(endpoint) ~= "string" then
      usage(("%s publishes no revocation endpoint; give --endpoint URL"):format(issuer))
    end
  end
  local client_id = args.client_id or os.getenv("TOKENPOLICY_CLIENT_ID")
  if client_id == "" then client_id = nil end
  local ok, err, code, retry = t.revoke { endpoint = endpoint, token = token, client_id = client_id,
    client_secret = client_secret(args.client_secret_file) }
  if args.json then
    say(json({ ok = ok == true, endpoint = endpoint, code = code, message = err, retry_after = retry }))
  elseif ok then
    say(("%s at %s"):format(out.paint("green", "revoked"), endpoint))
  else
    say(("%s: %s%s"):format(out.paint("red", "not revoked"), err, retry_note(retry)))
  end
  return ok and 0 or 1
end

-- tokenpolicy.session, loaded when a command needs it.
local function session()
  local ok, mod = pcall(require, "tokenpolicy.session")
  if not ok then
    usage("this installation has no tokenpolicy.session module; update tokenpolicy")
  end
  return mod
end

-- A fail triple from a workflow: exit 2 with its message.
local function check(result, err, code)
  if result == nil then
    usage(("%s; see tokenpolicy help"):format(err or code or "failed"))
  end
  return result
end

local function has_findings(entry)
  return type(entry.findings) == "table" and #entry.findings > 0
end

function commands.status(args)
  local list = check(session().status { scheme = args.scheme, account = args.account })
  local findings = false
  for _, entry in ipairs(list) do
    if has_findings(entry) then findings = true end
  end
  if args.json then
    say(json(plain(list), true))
  else
    say(tostring(list))
  end
  return findings and 1 or 0
end

local function is_redis_url(where)
  return where:match("^rediss?://") ~= nil
end

-- The options of a redis:// denylist: the password from
-- --redis-password-file or TOKENPOLICY_REDIS_PASSWORD_FILE, else from the
-- environment variable TOKENPOLICY_REDIS_PASSWORD (never the command
-- line); the CA from --redis-ca-file or TOKENPOLICY_REDIS_CA_FILE.
local function redis_options(args, sync)
  local function pick(option, env)
    local v = option
    if v == nil or v == "" then v = os.getenv(env) end
    if v ~= "" then return v end
  end
  local opts = { sync = sync }
  opts.password_file = pick(args.redis_password_file, "TOKENPOLICY_REDIS_PASSWORD_FILE")
  if not opts.password_file and (os.getenv("TOKENPOLICY_REDIS_PASSWORD") or "") ~= "" then
    opts.password_env = "TOKENPOLICY_REDIS_PASSWORD"
  end
  opts.ca_file = pick(args.redis_ca_file, "TOKENPOLICY_REDIS_CA_FILE")
  return opts
end

-- The denylist a command works on: --denylist, else TOKENPOLICY_DENYLIST;
-- a file or a redis:// or rediss:// URL (then read from Redis at once
-- unless sync is false).
local function open_denylist(args, sync)
  local where = args.denylist
  if where == nil or where == "" then where = os.getenv("TOKENPOLICY_DENYLIST") end
  if where == nil or where == "" then
    usage("give --denylist FILE (or set TOKENPOLICY_DENYLIST)")
  end
  local opts
  if is_redis_url(where) then
    opts = redis_options(args, sync ~= false)
    if opts.ca_file and not where:match("^rediss://") then opts.ca_file = nil end
  end
  local list, err = lib().denylist(where, opts)
  if not list then
    usage(("%s"):format(err))
  end
  return list
end

function commands.logout(args)
  if args.all and args.account then
    usage("give --account A or --all, not both")
  end
  local secret
  if args.revoke then secret = client_secret(nil) end
  local client_id = os.getenv("TOKENPOLICY_CLIENT_ID")
  local denylist = args.denylist
  if args.revoke and denylist and is_redis_url(denylist) then
    -- Opened here, with the Redis password options; a dry run reads nothing.
    denylist = open_denylist(args, not args.dry_run)
  end
  local report = check(session().logout {
    scheme = args.scheme, account = args.account, all = args.all or nil, revoke = args.revoke or nil,
    denylist = denylist, dry_run = args.dry_run or nil,
    client_id = client_id ~= "" and client_id or nil, client_secret = secret })
  if args.json then
    say(json(plain(report)))
  else
    say(tostring(report))
  end
  if args.dry_run then return 0 end
  return report.ok == false and 1 or 0
end

function commands.switch(args)
  local result = check(session().switch_account {
    account = args.account, vo = args.vo, logout_previous = args.logout_previous or nil,
    persist = args.persist or nil })
  if args.json then
    say(json(plain(result)))
    return 0
  end
  -- stdout holds only what the shell evaluates; everything else is a note.
  say(result.export)
  if result.message then note(result.message) end
  for _, warning in ipairs(result.warnings or {}) do
    note("warning: " .. warning)
  end
  -- A step asked for that was not done (a rucio.cfg that could not be
  -- rewritten, a file left behind) is a finding: exit 1. The export line
  -- stands either way.
  local failed = false
  for _, action in ipairs(result.actions or {}) do
    local text = tostring(action.message or action.target or action.action)
    if action.ok == false then
      failed = true
      text = "not done: " .. text
    end
    note(text)
  end
  return failed and 1 or 0
end

-- Migration: check-long-lived and fix-long-lived ------------------------------

-- The result lists of the migration, written as [] when empty.
for _, name in ipairs { "users", "files", "skipped", "removed", "lines" } do
  LIST_FIELDS[name] = true
end

-- A time from --now: seconds since the epoch or ISO-8601 text with a zone,
-- read by the core's own time parser (a one-second policy's long_lived
-- returns now + 1).
-- A value of the command line as a message quotes it: a text longer than
-- any time or duration is described by its length instead, since it may be
-- a token given in the wrong place.
local function quoted(text)
  if #text <= 40 then
    return ("%q"):format(text)
  end
  return ("(%d characters, not shown)"):format(#text)
end

local function parse_now(text)
  local t = lib()
  local value = math.tointeger(tonumber(text)) or text
  local selected, after = t.policy { max_token_lifetime = 1 }:long_lived({ expires_at = t.null }, value)
  if selected == nil then
    usage(("--now: invalid time %s; give seconds since the epoch or 2026-01-01T00:00:00Z"):format(quoted(text)))
  end
  return after - 1
end

-- The policy: the Arvados config's, with --max-token-lifetime and
-- --token-lifetime overriding it (or alone).
local function migrate_policy(args)
  local t = lib()
  local settings = {}
  if args.config then
    local p, err = t.policy_from_arvados(args.config)
    if not p then usage(("--config: %s"):format(err)) end
    settings = p:settings()
  end
  for option, key in pairs { max_token_lifetime = "max_token_lifetime", token_lifetime = "login_token_lifetime" } do
    if args[option] then
      local seconds, err = t.duration(args[option])
      if not seconds or seconds < 0 then
        usage(("--%s: %s"):format(option:gsub("_", "-"), err or "must not be negative"))
      end
      settings[key] = seconds
    end
  end
  return t.policy(settings)
end

-- The store the options name: --files, --records, --db, or --config's database.
local function migrate_store(args)
  local given = 0
  for _, name in ipairs { "files", "records", "db" } do
    if args[name] then given = given + 1 end
  end
  if given > 1 then usage("give one of --db, --files and --records") end
  if args.files then
    return require("tokenpolicy.store.files") { root = args.files }
  end
  if args.records then
    local t = lib()
    local text, err = t.read_config(args.records, { max_size = 1 << 30 })
    if not text then usage(("--records: %s"):format(err)) end
    local records, jerr = t.json_decode(text)
    if type(records) ~= "table" then
      usage(("--records: %s"):format(jerr or "a JSON list of token records expected"))
    end
    return require("tokenpolicy.store.memory")(records)
  end
  if not args.db and not args.config then
    usage("say where the tokens are: --config FILE or --db CONNINFO (Arvados' database), --files ROOT, "
      .. "or --records FILE")
  end
  local ok, pg = pcall(require, "tokenpolicy.store.arvados_pg")
  if not ok then
    if tostring(pg):find("module 'tokenpolicy.store.arvados_pg' not found", 1, true) then
      usage("PostgreSQL support is not installed")
    end
    usage(("PostgreSQL support failed to load: %s"):format(tostring(pg):match("^[^\n]*")))
  end
  local store, err = pg { conninfo = args.db, config = not args.db and args.config or nil }
  if not store then usage(err) end
  return store
end

-- Prints a migration result: the rake lines, or one line per token file.
local function print_migration(args, result, verb)
  if args.json then
    local copy = plain(result)
    copy.lines = result:lines()
    say(json(copy))
    return
  end
  if args.files then
    for _, entry in ipairs(result.files or {}) do say(entry.line) end
    if verb then
      say(("%d token files %s."):format(result.updated or 0, verb))
    elseif #(result.files or {}) == 0 then
      say("No token files break the policy.")  -- silence would look like a failure
    end
  else
    for _, line in ipairs(result:lines()) do say(line) end
  end
  for _, skipped in ipairs(result.skipped or {}) do
    note(("skipped %s: %s"):format(skipped.path, skipped.reason))
  end
end

-- Progress for long runs, on stderr and only when it is a terminal: a
-- check or fix is one statement on a database (or one pass over the token
-- caches), so progress is what runs now and, at the end, how long it took.
local function progress(what)
  if os.execute("test -t 2") ~= true then
    return function() end
  end
  local started = os.time()
  io.stderr:write("tokenpolicy: ", what, "...")
  io.stderr:flush()
  return function()
    io.stderr:write((" done in %ds\n"):format(os.time() - started))
  end
end

local function migration_source(args)
  return args.db and "the database" or args.config and "the database of " .. args.config
    or args.files and "the token caches under " .. args.files or "the records"
end

-- The denylist ------------------------------------------------------------------

--- A time on the command line: epoch seconds, "+DURATION" from now
-- (`+12h`, `+1d`), or an ISO 8601 UTC time (`2026-12-01T12:00:00Z`).
-- @tparam string text
-- @tparam integer now
-- @treturn ?integer the time, or nil and a message
function M.parse_time(text, now)
  local n = math.tointeger(tonumber(text))
  if n and text:match("^%-?%d+$") then return n end
  if text:sub(1, 1) == "+" then
    local seconds = lib().duration(text:sub(2))
    if seconds then return now + seconds end
    return nil, ("%s is not a duration (e.g. +12h, +1d, +90m)"):format(quoted(text))
  end
  local y, mo, d, h, mi, sec = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)Z$")
  if y then
    y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
    if mo >= 1 and mo <= 12 and d >= 1 and d <= 31 and h <= 23 and mi <= 59 and sec <= 59 then
      -- Days since 1970-01-01 of a proleptic Gregorian date (civil calendar).
      local yy = mo <= 2 and y - 1 or y
      local era = yy // 400
      local yoe = yy - era * 400
      local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
      local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
      local t = (era * 146097 + doe - 719468) * 86400 + h * 3600 + mi * 60 + sec
      local back = os.date("!*t", t)  -- 2026-02-30 comes back as March
      if back.day == d and back.month == mo then return t end
    end
  end
  return nil, ("%s is not a time: give epoch seconds, +DURATION or YYYY-MM-DDTHH:MM:SSZ"):format(quoted(text))
end

local function time_option(args, name, now)
  local t, err = M.parse_time(args[name], now)
  if not t then usage(("--%s: %s"):format(name:gsub("_", "-"), err)) end
  return t
end

-- A jti as a denylist holds it (tp.denylist raises on others).
local function check_jti(jti)
  if #jti > 256 or not jti:match("^[\33-\126]+$") then
    usage("a JTI is 1 to 256 printable ASCII characters without spaces")
  end
end

function commands.deny(args)
  check_jti(args.jti)
  local now = os.time()
  local exp = time_option(args, "exp", now)
  local list = open_denylist(args)
  local ok, err = list:add(args.jti, exp)
  if not ok then usage(err) end
  if args.json then
    say(json({ ok = true, jti = args.jti, exp = exp, count = list:count() }))
  else
    say(("%s %s until %s"):format(out.paint("green", "denied"), args.jti, os.date("!%Y-%m-%d %H:%M:%S UTC", exp)))
  end
  list:close()
  return 0
end

commands.denylist = function(args)
  local now = args.at and time_option(args, "at", os.time()) or os.time()
  local list = open_denylist(args)
  local result, status
  if args.action == "count" then
    result, status = { count = list:count() }, 0
    if not args.json then say(tostring(result.count)) end
  elseif args.action == "contains" then
    if not args.jti then usage("denylist contains needs a JTI") end
    check_jti(args.jti)
    local denied = list:contains(args.jti, now)
    result, status = { jti = args.jti, denied = denied, at = now }, denied and 0 or 1
    if not args.json then
      say(denied and out.paint("red", "denied") or out.paint("green", "not denied"))
    end
  else
    if args.jti then usage("denylist purge takes no JTI") end
    local removed, err = list:purge(now)
    if not removed then usage(err) end
    result, status = { removed = removed, count = list:count(), at = now }, 0
    if not args.json then
      say(("removed %d expired %s, %d left"):format(removed, removed == 1 and "entry" or "entries", list:count()))
    end
  end
  if args.json then say(json(result)) end
  list:close()
  return status
end

commands["check-long-lived"] = function(args)
  local policy = migrate_policy(args)
  local now = args.now and parse_now(args.now) or nil
  local store = migrate_store(args)
  local done = progress("checking " .. migration_source(args))
  local result, msg, code = require("tokenpolicy.migrate").check_long_lived(store, policy, { now = now })
  done()  -- before any error line, which then starts a line of its own
  result = check(result, msg, code)
  store:close()
  print_migration(args, result)
  local found = (result.tokens or 0) > 0 or (result.files and #result.files > 0)
  return found and 1 or 0
end

commands["fix-long-lived"] = function(args)
  local policy = migrate_policy(args)
  local now = args.now and parse_now(args.now) or nil
  local store = migrate_store(args)
  local done = progress((args.dry_run and "dry run: fixing " or "fixing ") .. migration_source(args))
  local result, msg, code = require("tokenpolicy.migrate").fix_long_lived(store, policy,
    { now = now, dry_run = args.dry_run or nil })
  done()
  -- On the database the fix is one transaction: a failure before its
  -- COMMIT (the server gone in the middle of the UPDATE) changed nothing,
  -- which is what the person who ran it needs to know. A connection lost
  -- during COMMIT leaves the outcome unknown: that keeps the plain line.
  if not result and not args.files and not args.records and not tostring(msg):find(": fix %(commit%): ") then
    usage(("%s; nothing was changed (the fix is one transaction, rolled back)%s"):format(msg,
      code == "unreachable" and ": run it again once the database answers" or ""))
  end
  result = check(result, msg, code)
  store:close()
  print_migration(args, result, args.dry_run and "would be removed" or "removed")
  return (result.skipped and #result.skipped > 0) and 1 or 0
end

-- The two commands' options, shared.
local function migrate_options(cmd)
  cmd:option("--config"):description("Arvados' config.yml: the policy, and the database unless --db, --files or "
    .. "--records says otherwise."):argname("FILE")
  cmd:option("--db"):description("The PostgreSQL connection string of Arvados' database."):argname("CONNINFO")
  cmd:option("--files"):description("Every user's token caches under this tmp root instead (Rucio, WLCG).")
    :argname("ROOT")
  cmd:option("--records"):description("A JSON list of token records instead (scripts and tests)."):argname("FILE")
  cmd:option("--max-token-lifetime"):description("API.MaxTokenLifetime (overrides --config)."):argname("D")
  cmd:option("--token-lifetime"):description("Login.TokenLifetime (overrides --config)."):argname("D")
  cmd:option("--now"):description("Judge as of this time (epoch seconds or ISO-8601), for what-if runs.")
    :argname("TIME")
  cmd:flag("--json"):description("Print JSON.")
end

local function add_migrate_commands(parser)
  local checkc = parser:command("check-long-lived")
    :summary("Find long-lived tokens, as Arvados' db:check_long_lived_tokens.")
    :description("List the users with tokens that outlive the policy (MaxTokenLifetime, else TokenLifetime), "
      .. "printing exactly what the rake task prints; with --files, every token file under ROOT that breaks the "
      .. "policy, has expired or others can read. Exit 0 nothing found, 1 found, 2 error.")
    :epilog("Examples:\n  tokenpolicy check-long-lived --config /etc/arvados/config.yml\n"
      .. "  tokenpolicy check-long-lived --files /tmp --max-token-lifetime 24h --json")
  migrate_options(checkc)
  local fixc = parser:command("fix-long-lived")
    :summary("Fix long-lived tokens, as Arvados' db:fix_long_lived_tokens.")
    :description("Set the expiry of every long-lived token to now + lifetime in one transaction, printing "
      .. "exactly what the rake task prints; with --files, remove the expired and policy-breaking token files.")
    :epilog("Examples:\n  tokenpolicy fix-long-lived --config /etc/arvados/config.yml --dry-run\n"
      .. "  tokenpolicy fix-long-lived --files /tmp --max-token-lifetime 24h")
  migrate_options(fixc)
  fixc:flag("--dry-run"):description("Change nothing; print what fix would print.")
end

-- The parser ---------------------------------------------------------------------

local TOKEN_ARG = "A token file, - to read the token from stdin, or the token itself "
  .. "(avoid that: a command line shows in ps). Without it, the active token (tokenpolicy status)."

local function version_action()
  print(lib()._VERSION)
  os.exit(0)
end

-- The longest word of the command line an error message may quote: no
-- option or command name is longer, every token is.
local ECHO_MAX = 24

-- A usage error of argparse without the long words of argv in it: argparse
-- quotes the option or command it did not understand, and that word may be
-- a token given in the wrong place (`tokenpolicy $TOKEN`).
local function unechoed(msg, argv)
  for _, arg in ipairs(argv) do
    for _, word in ipairs { arg, arg:match("^([^=]*)=") } do
      if #word > ECHO_MAX then
        local at = msg:find(word, 1, true)
        while at do
          msg = msg:sub(1, at - 1) .. ("(%d characters, not shown)"):format(#word) .. msg:sub(at + #word)
          at = msg:find(word, 1, true)
        end
      end
    end
  end
  return msg
end

-- The options of a command that may open a redis:// denylist.
local function add_redis_options(cmd)
  cmd:option("--redis-password-file"):argname("FILE")
    :description("The Redis password, from this file (default: TOKENPOLICY_REDIS_PASSWORD_FILE, else the "
      .. "variable TOKENPOLICY_REDIS_PASSWORD).")
  cmd:option("--redis-ca-file"):argname("FILE")
    :description("The CA of a rediss:// server (default: TOKENPOLICY_REDIS_CA_FILE, else the system's).")
end

local function build_parser(argv)
  local parser = argparse(PROG)
    :description("Find, inspect, verify and end your bearer tokens (Rucio, WLCG, Arvados).")
    :epilog("Exit status: 0 fine, 1 a finding (invalid or expired token, failed revocation, something "
      .. "left behind), 2 usage or environment error.\nSee 'tokenpolicy help COMMAND' and docs/cli.md.")
    :help_max_width(100)
  parser:flag("--version"):description("Print the version and exit."):action(version_action)
  parser:command_target("command")
  parser:require_command(false)

  local status = parser:command("status")
    :summary("Every token you have, with its state.")
    :description("List every token of every scheme and account: where it is, whose, until when, and what is wrong.")
    :epilog("Examples:\n  tokenpolicy status\n  tokenpolicy status --scheme rucio --account alice\n"
      .. "  tokenpolicy status --json")
  status:option("--scheme"):description("Only this scheme."):choices { "rucio", "wlcg", "arvados" }
  status:option("--account"):description("Only this Rucio account."):argname("A")
  status:flag("--json"):description("Print JSON.")

  local inspect = parser:command("inspect")
    :summary("Show what a token says (not verified).")
    :description("Show a token's kind, header and every claim, with UTC and relative times. Nothing is verified.")
    :epilog("Examples:\n  tokenpolicy inspect\n  tokenpolicy inspect - < token.jwt\n"
      .. "  tokenpolicy inspect /tmp/bt_u1000 --json")
  inspect:argument("token"):args("?"):argname("TOKEN|FILE|-"):description(TOKEN_ARG)
  inspect:flag("--json"):description('Print {"header":...,"claims":...,"kind":...}.')

  local verify = parser:command("verify")
    :summary("Verify a token's signature and claims.")
    :description("Verify a JWT against a JWKS (URL or file) and check its claims. Exit 0 valid, 1 invalid.")
    :epilog("Examples:\n  tokenpolicy verify - --jwks https://idp.example.org/jwks --aud rucio < token.jwt\n"
      .. "  tokenpolicy verify --jwks keys.json --iss https://idp.example.org --alg ES256")
  verify:argument("token"):args("?"):argname("TOKEN|FILE|-"):description(TOKEN_ARG)
  verify:option("--jwks"):description("The keys: an https (or loopback http) JWKS URL, or a JWKS, JWK or PEM file.")
    :argname("URL|FILE"):count(1)
  verify:option("--iss"):description("The accepted issuer."):argname("I")
  verify:option("--aud"):description("An accepted audience."):argname("A")
  verify:option("--alg"):argname("A"):description("An accepted algorithm (repeat for more; default RS*, PS*, ES*).")
    :count("*")
    -- verify raises on a name it does not support: a usage error here.
    :choices { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
               "HS256", "HS384", "HS512" }
  verify:option("--leeway"):argname("S"):description("Seconds of clock skew allowed (default 60)."):convert(function(s)
    local n = math.tointeger(tonumber(s))
    if not n or n < 0 then return nil, "--leeway must be a number of seconds" end
    return n
  end)
  verify:flag("--json"):description("Print JSON.")

  local logout = parser:command("logout")
    :summary("Remove (and optionally revoke) your tokens.")
    :description("Remove the token files of an account (default: the active one) or of every account, "
      .. "without following links or touching what is not yours. With --revoke, end the tokens at their "
      .. "issuer first: the client from TOKENPOLICY_CLIENT_ID and TOKENPOLICY_CLIENT_SECRET (never the "
      .. "command line), the issuer of tokens that name none from TOKENPOLICY_ISSUER.")
    :epilog("Examples:\n  tokenpolicy logout --dry-run\n  tokenpolicy logout --all\n"
      .. "  tokenpolicy logout --scheme wlcg --revoke --denylist /var/lib/gw/denylist")
  logout:mutex(
    logout:option("--account"):description("This Rucio account (default: the active one)."):argname("A"),
    logout:flag("--all"):description("Every account, VO and layout.")
  )
  logout:option("--scheme"):description("Only this scheme."):choices { "rucio", "wlcg", "arvados" }
  logout:flag("--revoke"):description("Revoke each token at its issuer first.")
  logout:option("--denylist"):description("Add JWTs the issuer cannot revoke to this denylist (a file, or a "
    .. "redis:// or rediss:// URL shared by gateways).")
    :argname("FILE|URL")
  add_redis_options(logout)
  logout:flag("--dry-run"):description("Change nothing; report what would be done.")
  logout:flag("--json"):description("Print JSON.")

  local switch = parser:command("switch")
    :summary("Switch to another Rucio account.")
    :description("Print the export line for another Rucio account (stdout holds only that line) and notes "
      .. "on its token on stderr.")
    :epilog('Examples:\n  eval "$(tokenpolicy switch alice)"\n'
      .. '  eval "$(tokenpolicy switch bob --vo atlas --logout-previous)"')
  switch:argument("account"):argname("ACCOUNT"):description("The Rucio account.")
  switch:option("--vo"):description("The Rucio VO."):argname("V")
  switch:flag("--logout-previous"):description("Log the previous account out.")
  switch:flag("--persist"):description("Also write the account (and VO) into your rucio.cfg.")
  switch:flag("--json"):description("Print the whole result as JSON instead of the export line.")

  local revoke = parser:command("revoke")
    :summary("Revoke a token at its issuer (RFC 7009).")
    :description("Revoke a token at its issuer: the revocation endpoint from --endpoint, else from the "
      .. "metadata of --issuer or of the token's iss. The client secret comes from --client-secret-file "
      .. "or TOKENPOLICY_CLIENT_SECRET, never the command line; the client id from --client-id or "
      .. "TOKENPOLICY_CLIENT_ID.")
    :epilog("Examples:\n  tokenpolicy revoke - --issuer https://idp.example.org --client-id cli "
      .. "--client-secret-file ~/.cli-secret < token\n  tokenpolicy revoke /tmp/bt_u1000")
  revoke:argument("token"):args("?"):argname("TOKEN|FILE|-"):description(TOKEN_ARG)
  revoke:mutex(
    revoke:option("--issuer"):description("The issuer whose metadata names the endpoint."):argname("URL"),
    revoke:option("--endpoint"):description("The revocation endpoint itself."):argname("URL")
  )
  revoke:option("--client-id"):description("The OAuth client id."):argname("ID")
  revoke:option("--client-secret-file"):description("A file (yours, mode 0600) holding the client secret.")
    :argname("F")
  revoke:flag("--json"):description("Print JSON.")

  local deny = parser:command("deny")
    :summary("Deny a token id (jti) at gateways until a time.")
    :description("Add a jti to a denylist, durably, until --exp; gateways reading that denylist refuse "
      .. "tokens with that jti from their next reload (or sync, for Redis). The denylist from --denylist or "
      .. "TOKENPOLICY_DENYLIST: a file, or a redis:// or rediss:// URL.")
    :epilog("Examples:\n  tokenpolicy deny 6f1c9a2e-jti --exp +12h --denylist /var/lib/gw/denylist\n"
      .. "  tokenpolicy deny 6f1c9a2e-jti --exp 2026-12-01T12:00:00Z\n"
      .. "  tokenpolicy deny 6f1c9a2e-jti --exp +1h --denylist redis://redis.internal:6379/0?prefix=gw: "
      .. "--redis-password-file /etc/tokenpolicy/redis.pass")
  deny:argument("jti"):argname("JTI"):description("The token's jti claim (tokenpolicy inspect shows it).")
  deny:option("--exp"):argname("TIME"):count(1)
    :description("Until when: epoch seconds, +DURATION (+12h, +1d) or YYYY-MM-DDTHH:MM:SSZ; use the token's exp.")
  deny:option("--denylist"):argname("FILE|URL"):description("The denylist (default: TOKENPOLICY_DENYLIST).")
  add_redis_options(deny)
  deny:flag("--json"):description("Print JSON.")

  local denylist = parser:command("denylist")
    :summary("Count, look up or purge a denylist.")
    :description("count: the entries (expired ones until purged). contains JTI: exit 0 if denied at --at "
      .. "(default now), 1 if not. purge: remove the entries expired at --at. The denylist from --denylist or "
      .. "TOKENPOLICY_DENYLIST: a file, or a redis:// or rediss:// URL (read from Redis first).")
    :epilog("Examples:\n  tokenpolicy denylist count --denylist /var/lib/gw/denylist\n"
      .. "  tokenpolicy denylist contains 6f1c9a2e-jti\n  tokenpolicy denylist purge --at +0s")
  denylist:argument("action"):argname("ACTION"):choices { "count", "contains", "purge" }
    :description("count, contains or purge.")
  denylist:argument("jti"):args("?"):argname("JTI"):description("The jti (contains only).")
  denylist:option("--denylist"):argname("FILE|URL"):description("The denylist (default: TOKENPOLICY_DENYLIST).")
  add_redis_options(denylist)
  denylist:option("--at"):argname("TIME"):description("The time to judge at (default now).")
  denylist:flag("--json"):description("Print JSON.")

  add_migrate_commands(parser)

  local help = parser:command("help"):summary("Show help for a command.")
    :description("Show the help of tokenpolicy or of one command.")
    :epilog("Examples:\n  tokenpolicy help\n  tokenpolicy help verify")
  help:argument("name"):args("?"):description("The command.")
    :choices { "status", "inspect", "verify", "logout", "switch", "revoke", "deny", "denylist", "check-long-lived",
               "fix-long-lived", "help" }

  -- argparse's own usage errors: one line and exit 2 (its default prints
  -- the usage and exits 1, which would read as "a finding").
  function parser.error(p, msg) -- luacheck: ignore 212
    local name = p._name ~= PROG and (" " .. p._name) or ""
    exit(2, ("%s; see 'tokenpolicy%s --help'"):format(unechoed(msg, argv), name))
  end
  return parser
end

-- An empty value is never a path, URL, account or token: a usage error
-- naming the option (or the argument) it was given to, before any command
-- reads it (the core raises on an empty path, as a misuse).
local function refuse_empty(args, argv)
  local see = ("; see 'tokenpolicy%s --help'"):format(args.command and (" " .. args.command) or "")
  for name, value in pairs(args) do
    if value == "" then
      local option = "--" .. name:gsub("_", "-")
      for _, word in ipairs(argv) do
        if word == option or word:sub(1, #option + 1) == option .. "=" then
          usage(("%s needs a value, not an empty string%s"):format(option, see))
        end
      end
      usage(("the %s is an empty string%s"):format(name:gsub("_", " "), see))
    end
  end
end

--- Runs the command line and returns the exit status.
-- @tparam {string,...} argv the arguments (the launcher's `arg`)
-- @treturn integer 0 fine, 1 a finding, 2 a usage or environment error
function M.main(argv)
  local args_list = {}
  for i = 1, #argv do args_list[i] = argv[i] end
  local ok, status = pcall(function()
    local parser = build_parser(args_list)
    local args = parser:parse(args_list)
    refuse_empty(args, args_list)
    local command = args.command
    if command == nil then
      io.stdout:write(parser:get_help(), "\n")
      return 0
    end
    if command == "help" then
      if args.name then
        for _, sub in ipairs(parser._commands) do
          if sub._name == args.name then
            say(sub:get_help())
          end
        end
      else
        say(parser:get_help())
      end
      return 0
    end
    return commands[command](args)
  end)
  if ok then
    return status
  end
  if getmetatable(status) == Exit then
    if status.line then
      note(PROG .. ": " .. status.line)
    end
    return status.code
  end
  note(PROG .. ": internal error: " .. tostring(status))
  return 2
end

return M
