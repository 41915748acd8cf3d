--- The HAProxy action: verify, judge and revoke bearer tokens per request.
--
-- From a `lua-load` (or `lua-load-per-thread`) file:
--
--     require("tokenpolicy.haproxy").register{
--       name = "tokenpolicy-auth", keys_file = "/etc/haproxy/keys.jwks",
--       iss = "https://op.example", aud = "api", denylist = "/var/lib/haproxy/denylist",
--     }
--
-- gives `http-request lua.tokenpolicy-auth`, which sets `txn.tp.ok`,
-- `txn.tp.code`, `txn.tp.sub`, `txn.tp.scope`, `txn.tp.exp` and `txn.tp.jti`
-- for the configuration's ACLs (docs/haproxy.md).
--
-- Everything that may block (reading files, the first JWKS fetch) happens
-- while HAProxy loads the file; afterwards a task refreshes keys and the
-- denylist through HAProxy's own non-blocking `core.httpclient` and the
-- core's cheap `stat`. The request path only reads one header and calls the
-- core's prepared verifier.
--
-- A Redis denylist (`denylist = "redis://..."`) is synced in full once while
-- HAProxy loads the file, then by a task of its own every `sync_every`
-- seconds over HAProxy's non-blocking `core.tcp` cosocket: the core formats
-- the request and parses the answer (sans-IO), HAProxy moves the bytes.
-- @module tokenpolicy.haproxy

-- The core alone, not `require "tokenpolicy"`: that loads every workflow
-- module (about 250 KiB of Lua objects), and Lua 5.3's collector visits
-- each live object in every cycle, which in HAProxy comes every few hundred
-- requests. policy_from_arvados is loaded when a policy file is given.
local tp = require "tokenpolicy.core"
local util = require "tokenpolicy.util"

local M = {}

local HEADERS = { authorization = true, ["x-rucio-auth-token"] = true }

local function positive_integer(min)
  return function(value)
    if math.type(value) ~= "integer" or value < min then
      return ("must be an integer of at least %d, got %s"):format(min, tostring(value))
    end
  end
end

local function string_list(value)
  if type(value) ~= "table" then
    return "must be a list of strings, got " .. type(value)
  end
  for _, item in ipairs(value) do
    if type(item) ~= "string" then
      return "must be a list of strings"
    end
  end
end

local function string_or_list(value)
  if type(value) ~= "string" then
    return string_list(value)
  end
end

local function policy_option(value)
  local t = type(value)
  if t ~= "string" and t ~= "table" and not (t == "userdata" and tostring(value):find("^tokenpolicy%.Policy")) then
    return "must be a Policy, a table of policy settings or an Arvados config path, got " .. t
  end
end

local function denylist_option(value)
  local t = type(value)
  if t ~= "string" and not (t == "userdata" and tostring(value):find("^tokenpolicy%.Denylist")) then
    return "must be a denylist file path or a Denylist, got " .. t  -- a redis:// URL is a string too
  end
end

local function positive_number(value)
  if type(value) ~= "number" or value ~= value or value <= 0 or value == math.huge then
    return "must be a positive number of seconds, got " .. tostring(value)
  end
end

-- The Redis options are tp.denylist's own (it checks their types and
-- names): only the container is checked here.
local function redis_option(value)
  if type(value) ~= "table" then
    return "must be a table of tp.denylist options (password_file, password_env, ...), got " .. type(value)
  end
end

local function header_option(value)
  if not HEADERS[value] then
    return ("must be \"authorization\" or \"x-rucio-auth-token\", got %s"):format(
      type(value) == "string" and ("%q"):format(value) or type(value))
  end
end

local function name_option(value)
  if type(value) ~= "string" or not value:find("^[%w_%-%.]+$") then
    return "must be a name of letters, digits, '_', '-' and '.'"
  end
end

local OPTIONS = {
  name = name_option,
  keys_file = "string",
  jwks_uri = "string",
  iss = string_or_list,
  aud = string_or_list,
  algs = string_or_list,  -- a name or a list, as tp.verify takes
  typ = "string",
  require = string_or_list,
  leeway = positive_integer(0),
  policy = policy_option,
  denylist = denylist_option,
  denylist_file = "string",
  sync_every = positive_number,
  redis = redis_option,
  header = header_option,
  cache_size = positive_integer(0),
  reload_every = positive_integer(1),
  min_refetch = positive_integer(0),
  jwks_timeout = positive_integer(1),
}

M.defaults = {
  name = "tokenpolicy-auth",
  header = "authorization",
  cache_size = 10000,
  reload_every = 60,
  min_refetch = 30,
  jwks_timeout = 5,
}

--- The default of `sync_every`, filled in only with a Redis denylist.
M.sync_every = 0.2

-- RFC 6750 section 2.1: credentials = "Bearer" 1*SP b64token, the scheme
-- case-insensitive (RFC 9110 section 11.1). Only the scheme is read in
-- Lua, byte by byte: a pattern costs a class test per character in
-- HAProxy's Lua 5.3 (about 9 us a request over the whole token, 0.3 us
-- over the scheme), while the verifier already strips the scheme and
-- checks every character of the token in C.
local function bearer_scheme(value)
  local b, e, a, r, e2, r2, space = value:byte(1, 7)
  -- | 32 folds ASCII upper case to lower; space last, so all seven are there.
  return space == 32 and b | 32 == 98 and e | 32 == 101 and a | 32 == 97 and r | 32 == 114
    and e2 | 32 == 101 and r2 | 32 == 114
end

-- Key files may hold large JWK Sets (thousands of keys); read_config's
-- default cap (1 MiB) is meant for small configuration files.
local KEYS_FILE_MAX = 16 * 1024 * 1024

--- The credentials in a header value, as the verifier takes them, or the
-- code of why there are none.
-- `authorization`: a value with the `Bearer` scheme (any case) followed by
-- a space is returned whole: `v:check` strips the scheme and the spaces
-- around the token and refuses anything that is not a compact JWT
-- (`malformed`, e.g. `Bearer a b` or `Bearer `). Another scheme, or no
-- value, is `missing_token` (RFC 6750: a request without bearer
-- credentials gets a challenge without an error). `x-rucio-auth-token`:
-- the value, unless it is empty or only spaces (`v:check` trims it).
-- @tparam ?string value the header's value (HAProxy gives "" when absent)
-- @tparam string header "authorization" or "x-rucio-auth-token"
-- @treturn[1] string the credentials
-- @treturn[2] nil
-- @treturn[2] string "missing_token"
function M.bearer(value, header)
  if value == nil then
    return nil, "missing_token"
  end
  if header == "x-rucio-auth-token" then
    if not value:find("%S") then
      return nil, "missing_token"
    end
    return value
  end
  if bearer_scheme(value) then
    return value
  end
  return nil, "missing_token"
end

--- Whether a denylist option names a Redis denylist.
-- @param value the `denylist` option
-- @treturn boolean
function M.is_redis(value)
  if type(value) == "userdata" then
    -- A Denylist made with tp.denylist("redis://...") names its URL.
    return tostring(value):find("^tokenpolicy%.Denylist rediss?://") ~= nil
  end
  return type(value) == "string" and value:find("^rediss?://") ~= nil
end

--- The options of `register`, checked, with the defaults filled in.
-- Raises (as `register` does) on an unknown option, a wrong type, or
-- neither or both of `keys_file` and `jwks_uri`.
-- @tparam table opts as for `register`
-- @treturn table
function M.check_options(opts)
  util.check_opts(opts, OPTIONS, "register", 1)
  if opts == nil then
    util.argerror(1, "register", "table expected, got nil", 4)
  end
  if (opts.keys_file == nil) == (opts.jwks_uri == nil) then
    util.argerror(1, "register", "give exactly one of the options 'keys_file' and 'jwks_uri'", 4)
  end
  local redis = M.is_redis(opts.denylist)
  if (opts.denylist_file ~= nil or opts.redis ~= nil) and not redis then
    util.argerror(1, "register", "the options 'denylist_file' and 'redis' go with a redis:// or rediss:// denylist", 4)
  end
  if opts.redis ~= nil and type(opts.denylist) ~= "string" then
    util.argerror(1, "register", "the option 'redis' goes with a redis:// URL, not with a Denylist made already", 4)
  end
  local checked = {}
  for name, value in pairs(M.defaults) do
    checked[name] = value
  end
  for name, value in pairs(opts) do
    checked[name] = value
  end
  if redis and checked.sync_every == nil then
    checked.sync_every = M.sync_every
  end
  return checked
end

-- A URI as it may appear in a log line: without query and fragment.
local function printable_uri(uri)
  return (uri:gsub("[?#].*$", ""))
end

-- The identity of a file as the core's stat gives it: a change of any of
-- these means the file must be read again.
local function signature(st)
  return table.concat({ st.dev, st.ino, st.size, st.mtime, st.mtime_ns or 0 }, ":")
end

-- The gateway of one Lua state: its key source, verifier and denylist.
local Gateway = {}
Gateway.__index = Gateway

--- One line: the action's name, where its keys come from and how many
-- problems it has now (each was logged when it appeared).
function Gateway:__tostring()
  local problems = 0
  for _ in pairs(self.problems) do problems = problems + 1 end
  local source = self.keys_file and ("keys_file " .. self.keys_file) or ("jwks_uri " .. printable_uri(self.jwks_uri))
  return ("tokenpolicy.haproxy.Gateway %s: %s, %d problem%s"):format(self.name, source, problems,
    problems == 1 and "" or "s")
end

--- Logs a problem once: a problem that repeats at every reload is logged
-- when it first appears and when it changes, not every time.
function Gateway:problem(what, message)
  if self.problems[what] ~= message then
    self.problems[what] = message
    self.log.Warning(("%s: %s: %s"):format(self.name, what, message))
  end
end

--- Logs, once, that a problem `problem` logged is over.
-- @tparam string what the source of the problem, as given to `problem`
function Gateway:solved(what)
  if self.problems[what] then
    self.problems[what] = nil
    self.log.Info(("%s: %s: fine again"):format(self.name, what))
  end
end

-- A key set that can verify nothing: a JWK Set without keys (a provider
-- or an operator publishing one by mistake), which would lock every
-- client out where keeping the previous keys loses nothing.
local function empty_set(text)
  local set = tp.keys(text)
  return set ~= nil and #set == 0
end

--- Feeds key material to the source; a failure keeps the previous keys.
-- @tparam string what where the text came from, for the log
-- @tparam string text a JWK Set, a JWK or PEM
-- @treturn boolean whether the keys were replaced
function Gateway:feed(what, text)
  if empty_set(text) then
    self:problem(what, "malformed: the key set is empty (keeping the previous keys)")
    return false
  end
  local set, err = self.keys:set_keys(text)
  if not set then
    self:problem(what, err .. " (keeping the previous keys)")
    return false
  end
  self:solved(what)
  self.log.Info(("%s: %s: %d keys in use"):format(self.name, what, #set))
  return true
end

--- Reads the key file again when its stat changed (one stat otherwise).
-- @treturn boolean whether the keys were replaced
function Gateway:reload_keys_file()
  local what = "keys_file " .. self.keys_file
  local st, err = tp.stat(self.keys_file, { follow = true })
  if not st then
    self:problem(what, err .. " (keeping the previous keys)")
    return false
  end
  if signature(st) == self.keys_signature then
    return false
  end
  local text, read = tp.read_config(self.keys_file, { max_size = KEYS_FILE_MAX })
  if not text then
    self:problem(what, read .. " (keeping the previous keys)")
    return false
  end
  -- The status of what was read, not of the earlier stat: a file replaced
  -- in between is read again next time.
  self.keys_signature = signature(read)
  return self:feed(what, text)
end

--- Feeds a JWKS answer (status, body) to the source unless it is the one
-- already in use.
-- @treturn boolean whether the keys were replaced
function Gateway:take_jwks(status, body)
  local what = "jwks_uri " .. printable_uri(self.jwks_uri)
  if status ~= 200 then
    self:problem(what, ("http: status %s (keeping the previous keys)"):format(tostring(status)))
    return false
  end
  if body == self.jwks_body then
    self:solved(what)
    return false
  end
  if self:feed(what, body) then
    self.jwks_body = body
    return true
  end
  return false
end

-- At most this many JWKS fetches under way at once. HAProxy 2.6's
-- httpclient does not keep to the timeout it is given (a provider that
-- hangs holds a fetch about 20 s, one that trickles as long as it
-- trickles), so a fetch is given up on after jwks_timeout, not waited
-- for, and a new one may start while the old one ends by itself.
local MAX_FETCHES = 3

--- Gives up on a fetch that has run past jwks_timeout: logged as a
-- timeout; the keys in use stay.
function Gateway:give_up(fetch)
  if not fetch.given_up then
    fetch.given_up = true
    self:problem("jwks_uri " .. printable_uri(self.jwks_uri),
      ("timeout: no answer within %d s (keeping the previous keys)"):format(self.jwks_timeout))
  end
end

--- Fetches the JWKS with HAProxy's non-blocking client in a task of its
-- own (task context only), so that a provider that hangs or trickles never
-- holds up the rounds: the denylist is reloaded on time all the same.
-- @treturn boolean whether a fetch was started
function Gateway:fetch_jwks()
  local last = self.fetching
  if last and not last.done then
    if os.time() - last.started < self.jwks_timeout then
      return false  -- still in time
    end
    self:give_up(last)
  end
  if self.in_flight >= MAX_FETCHES then
    return false
  end
  self.generation = self.generation + 1
  local fetch = { generation = self.generation, started = os.time() }
  self.fetching, self.in_flight = fetch, self.in_flight + 1
  core.register_task(function()
    local ok, answer = pcall(function()
      return core.httpclient():get{ url = self.jwks_uri, timeout = self.jwks_timeout * 1000 }
    end)
    self.in_flight = self.in_flight - 1
    fetch.done = true
    -- An answer older than the one in use is not news; nor is a late
    -- failure of a fetch already reported as a timeout. A late success
    -- is taken.
    local good = ok and type(answer) == "table" and answer.status == 200
    if fetch.generation < self.answered or (fetch.given_up and not good) then
      return
    end
    self.answered = fetch.generation
    if not ok or type(answer) ~= "table" then
      self:problem("jwks_uri " .. printable_uri(self.jwks_uri), "unreachable: no answer (keeping the previous keys)")
      return
    end
    self:take_jwks(answer.status, answer.body)
  end)
  return true
end

--- Reloads the denylist file when it changed (one lstat otherwise): the
-- `denylist` file, or with Redis the `denylist_file` beside it. A Redis
-- denylist is never reloaded here (`reload` blocks): its own task syncs it.
function Gateway:reload_denylist()
  local list = self.file_list
  if not list then
    return false
  end
  local changed, err = list:reload()
  if changed == nil then
    self:problem(self.file_what, err .. " (keeping the previous entries)")
    return false
  end
  self:solved(self.file_what)
  if changed then
    self.log.Info(("%s: %s: reloaded, %d entries"):format(self.name, self.file_what, list:count()))
  end
  return changed
end

-- The Redis sync ----------------------------------------------------------

-- Seconds a sync may take on its socket (connect, send, read), at least
-- sync_every: a Redis that hangs holds up only the sync task.
local REDIS_TIMEOUT = 1

-- Syncs one tick may run back to back when the core asks for more.
local MAX_BATCHES = 64

--- The address HAProxy's `core.tcp` takes for a host: its sockets do not
-- resolve names (`connect` refuses "localhost"), so the host of a Redis
-- URL must be an IP address; "localhost" is taken as 127.0.0.1.
-- @tparam string host as `dl:endpoint()` gives it
-- @treturn[1] string the address to connect to
-- @treturn[2] nil when the host is a name
function M.socket_address(host)
  if host == "localhost" then
    return "127.0.0.1"
  elseif host:find("^%d+%.%d+%.%d+%.%d+$") then
    return host
  elseif host:find(":", 1, true) and host:find("^[%x:.]+$") then
    return "ipv6@" .. host
  end
  return nil
end

--- Records the outcome of a sync for the log: a failure is logged when
-- Redis goes from answering to not, not at every sync (nor when the reason
-- changes while it stays down: a Redis restarting is refused, then slow,
-- then loading); the first good sync after one is logged too.
-- @tparam ?string code nil for a good sync, else the failure's code
-- @tparam ?string message the failure's message
function Gateway:redis_status(code, message)
  if code == nil then
    if self.redis_down then
      self.redis_down = nil
      self.log.Info(("%s: %s: answering again, %d entries"):format(self.name, self.redis_what,
        self.denylist:count()))
    end
    return
  end
  if not self.redis_down then
    self.redis_down = code
    self.log.Warning(("%s: %s: %s (keeping the %d entries known; retrying every %g s)"):format(self.name,
      self.redis_what, message, self.denylist:count(), self.sync_every))
  end
end

local FULL_SYNC = { full = true }

--- One sync over HAProxy's cosocket (task context only): connect, send
-- the core's request (it ends with QUIT, so Redis closes the connection
-- after its last answer), read to the end, and give the answer to the
-- core. Every step yields to HAProxy instead of blocking, and is bounded by
-- the socket's timeout. Whatever fails, the local view stays as it was.
-- @treturn ?integer the entries added, nil when the sync failed
-- @treturn boolean whether another sync should follow at once (the core
--   says so after a full batch, or when a full sync is due)
function Gateway:sync()
  local dl = self.denylist
  local socket = core.tcp()
  socket:settimeout(self.redis_timeout)
  local ok, err
  if self.redis_tls then
    ok, err = socket:connect_ssl(self.redis_address, self.redis_port)
  else
    ok, err = socket:connect(self.redis_address, self.redis_port)
  end
  local reply, step = nil, "connecting"
  if ok then
    step = "sending"
    -- after an outage, the whole set (merged into the view): whatever Redis
    -- went through meanwhile, this gateway catches up on it
    ok, err = socket:send(dl:sync_request(self.redis_down and FULL_SYNC or nil))
    if ok then
      step = "receiving"
      reply, err = socket:receive("*a")
    end
  end
  socket:close()
  if not reply then
    -- The core's code and wording for the same failure of its own client.
    self:redis_status("redis_unavailable", ("redis_unavailable: %s: %s"):format(step, tostring(err or "no answer")))
    return nil, false
  end
  -- added, received, more; or nil, message, code (the view unchanged)
  local added, second, third = dl:sync_apply(reply)
  if added == nil then
    self:redis_status(third or "redis_error", second)
    return nil, false
  end
  self:redis_status(nil)
  return added, third == true
end

--- The sync task: a sync every `sync_every` seconds, for ever. A sync
-- that fails is retried at the next tick; a Redis that is down costs one
-- refused connection (or one connect timeout) per tick.
function Gateway:sync_loop()
  local pause = math.max(1, math.floor(self.sync_every * 1000 + 0.5))
  while true do
    -- A full sync of a large set comes in batches: the next one at once,
    -- up to MAX_BATCHES per tick.
    for _ = 1, MAX_BATCHES do
      local ok, added, more = pcall(self.sync, self)
      if not ok then
        self:redis_status("error", "error: " .. tostring(added))
      end
      if not (ok and more) then break end
    end
    core.msleep(pause)
  end
end

--- One round of the task: every source of change, each cheap when nothing changed.
function Gateway:refresh()
  if self.keys_file then
    self:reload_keys_file()
  else
    self:fetch_jwks()
  end
  self:reload_denylist()
end

-- Sets a variable to a claim that is a string without control characters:
-- the configuration may put it in a header (a CR LF there would forge
-- headers), so any other value leaves the variable unset. The test is in
-- C: Lua 5.3's "%c" costs about 1 us over a 70-byte scope.
local header_text = tp.header_text
local function set_text(txn, name, value)
  value = header_text(value)
  if value then
    txn:set_var(name, value)
  end
end

-- RFC 9068 names it scope (a string); some providers send scp, a list of
-- strings, which becomes one space-separated string.
local function joined(list)
  if type(list) ~= "table" then
    return nil
  end
  for _, item in ipairs(list) do
    if type(item) ~= "string" then return nil end
  end
  return table.concat(list, " ")
end

-- How often (milliseconds) the sleeping task looks whether a request asked
-- for an early reload.
local TICK = 250

--- The task: a round at start, then one every `reload_every` seconds, or
-- sooner when a token named an unknown kid (a key rotation shows up that
-- way), but at most once per `min_refetch` seconds, so a flood of tokens
-- with made-up kids costs the provider little.
function Gateway:run()
  while true do
    self.wanted = false
    self.refreshed_at = os.time()
    self:refresh()
    local slept = 0
    while slept < self.reload_every * 1000 do
      core.msleep(TICK)
      slept = slept + TICK
      local fetch = self.fetching
      if fetch and not fetch.done and os.time() - fetch.started >= self.jwks_timeout then
        self:give_up(fetch)
      end
      if self.wanted and os.time() - self.refreshed_at >= self.min_refetch then
        break
      end
    end
  end
end

--- Sets the transaction's variables for one request.
function Gateway:handle(txn)
  local token, code = M.bearer(txn.sf:req_fhdr(self.header), self.header)
  if token then
    local claims, _, fail_code = self.verifier:check(token)
    -- With Redis, the denylist_file is checked too (the verifier holds the
    -- Redis view): a revocation in either refuses the token.
    local extra = self.extra_list
    if claims and extra then
      local jti = claims.jti
      if type(jti) == "string" and extra:contains(jti) then
        claims, fail_code = nil, "revoked"
      end
    end
    if claims then
      txn:set_var("txn.tp.ok", 1)
      txn:set_var("txn.tp.code", "")
      local scope, exp = claims.scope, claims.exp
      if scope == nil then
        scope = joined(claims.scp)
      end
      set_text(txn, "txn.tp.sub", claims.sub)
      set_text(txn, "txn.tp.scope", scope)
      if math.type(exp) == "integer" then txn:set_var("txn.tp.exp", exp) end
      set_text(txn, "txn.tp.jti", claims.jti)
      return
    end
    code = fail_code
    if code == "unknown_key" then
      -- Perhaps a rotation: the task reloads early (see run).
      self.wanted = true
    end
  end
  txn:set_var("txn.tp.ok", 0)
  txn:set_var("txn.tp.code", code or "error")
end

local function build_policy(policy, log, name)
  if type(policy) == "table" then
    return tp.policy(policy)
  elseif type(policy) == "string" then
    local p, warnings = require("tokenpolicy.arvados_config").policy_from_arvados(policy)
    if not p then
      error(("%s: policy %s: %s"):format(name, policy, warnings), 0)
    end
    for _, warning in ipairs(warnings or {}) do
      log.Warning(("%s: policy %s: %s"):format(name, policy, warning))
    end
    return p
  end
  return policy
end

local function open_file_list(path, name, what)
  local list, err = tp.denylist(path)
  if not list then
    error(("%s: %s: %s"):format(name, what, err), 0)
  end
  return list
end

--- Opens the Redis denylist and syncs it in full, blocking (allowed here:
-- HAProxy is still loading the file and serves nothing yet). A Redis that
-- cannot be reached or refuses the password does not stop HAProxy: one
-- line says so, requests are served with what is known (the
-- `denylist_file`, if any), and the sync task keeps trying.
-- A Redis Denylist given as an object is synced the same way (never
-- with its blocking `reload` after load).
function Gateway:open_redis(opts)
  -- sync = false: the object even when Redis cannot be reached (the full
  -- sync follows below, and its failure is not fatal).
  local redis_opts = { sync = false }
  for name, value in pairs(opts.redis or {}) do
    redis_opts[name] = value
  end
  local dl, err = opts.denylist, nil
  if type(dl) == "string" then
    dl, err = tp.denylist(opts.denylist, redis_opts)
  end
  if not dl then
    -- A URL or an option that is wrong, a password file that cannot be
    -- read: the configuration is wrong, so HAProxy does not start. The
    -- message never holds the password (tp.denylist's convention) but the
    -- URL may: only its scheme and host are shown.
    error(("%s: denylist %s: %s"):format(self.name, M.printable_redis(opts.denylist), err), 0)
  end
  local host, port, tls = dl:endpoint()
  self.denylist, self.redis_port, self.redis_tls = dl, port, tls
  self.redis_what = ("denylist %s://%s:%d"):format(tls and "rediss" or "redis", host, port)
  self.redis_address = M.socket_address(host)
  if not self.redis_address then
    error(("%s: %s: the host must be an IP address (HAProxy's Lua sockets do not resolve names)"):format(
      self.name, self.redis_what), 0)
  end
  if opts.denylist_file then
    self.file_what = "denylist_file " .. opts.denylist_file
    self.file_list = open_file_list(opts.denylist_file, self.name, self.file_what)
    self.extra_list = self.file_list
  end
  local ok, message, code = dl:reload()
  if ok == nil then
    self.redis_down = code or "error"
    local fallback = self.file_list
      and ("serving with %s, %d entries"):format(self.file_what, self.file_list:count())
      or "serving with no revocations"
    self.log.Warning(("%s: %s: %s (%s until Redis answers; retrying every %g s)"):format(self.name,
      self.redis_what, message, fallback, self.sync_every))
  else
    self.log.Info(("%s: %s: synced, %d entries"):format(self.name, self.redis_what, dl:count()))
  end
end

--- A Redis URL as it may be shown: scheme, host and port, never the
-- user or password.
-- @tparam string url
-- @treturn string
function M.printable_redis(url)
  local scheme, rest = url:match("^(rediss?://)(.*)$")
  local authority = rest:match("^[^/?#]*")
  return scheme .. authority:gsub("^.*@", "")
end

--- Builds the gateway of this Lua state: everything that may block
-- happens here, while HAProxy loads the file.
-- @tparam table opts checked options (`check_options`)
-- @tparam table log an object with `Info` and `Warning` (HAProxy's `core`)
-- @treturn table the gateway
function M.gateway(opts, log)
  local self = setmetatable({
    name = opts.name, header = opts.header, keys_file = opts.keys_file,
    jwks_uri = opts.jwks_uri, jwks_timeout = opts.jwks_timeout,
    reload_every = opts.reload_every, min_refetch = opts.min_refetch, problems = {}, log = log,
    sync_every = opts.sync_every or M.sync_every,
    redis_timeout = math.max(opts.sync_every or M.sync_every, REDIS_TIMEOUT),
    wanted = false, refreshed_at = 0, generation = 0, answered = 0, in_flight = 0,
  }, Gateway)
  if self.keys_file then
    -- A source without a URI, fed with the file's text: it never touches the network.
    self.keys = tp.jwks{ ttl = opts.reload_every }
    local text, read = tp.read_config(self.keys_file, { max_size = KEYS_FILE_MAX })
    if not text then
      error(("%s: keys_file %s: %s"):format(self.name, self.keys_file, read), 0)
    end
    local set, err = self.keys:set_keys(text)
    if not set then
      error(("%s: keys_file %s: %s"):format(self.name, self.keys_file, err), 0)
    elseif #set == 0 then
      error(("%s: keys_file %s: malformed: the key set is empty"):format(self.name, self.keys_file), 0)
    end
    self.keys_signature = signature(read)
    log.Info(("%s: keys_file %s: %d keys in use"):format(self.name, self.keys_file, #set))
  else
    -- HAProxy's httpclient needs the running scheduler: in 2.6,
    -- core.httpclient is not even defined while the file loads, nor in
    -- core.register_init. A blocking fetch is harmless now, before any
    -- request is served. With
    -- refetch = false the source never fetches by itself afterwards (not
    -- even in verify, for a stale set or an unknown kid): the task feeds
    -- it with set_keys. A provider that is down does not stop HAProxy: the
    -- task retries, and requests get the failed fetch's code meanwhile.
    self.keys = tp.jwks(self.jwks_uri, { refetch = false, ttl = opts.reload_every, timeout = opts.jwks_timeout })
    local set, err = self.keys:refresh{ force = true }
    local what = "jwks_uri " .. printable_uri(self.jwks_uri)
    if set then
      log.Info(("%s: %s: %d keys in use"):format(self.name, what, #set))
    else
      self:problem(what, err .. " (the task retries)")
    end
  end
  if M.is_redis(opts.denylist) then
    self:open_redis(opts)
  elseif type(opts.denylist) == "string" then
    self.file_what = "denylist"
    self.file_list = open_file_list(opts.denylist, self.name, "denylist " .. opts.denylist)
    self.denylist = self.file_list
  else
    self.denylist = opts.denylist
    self.file_what, self.file_list = "denylist", opts.denylist
  end
  self.verifier = tp.verifier{
    keys = self.keys, iss = opts.iss, aud = opts.aud, algs = opts.algs, typ = opts.typ,
    require = opts.require, leeway = opts.leeway, policy = build_policy(opts.policy, log, self.name),
    denylist = self.denylist, cache = opts.cache_size,
  }
  return self
end

--- Registers `http-request lua.<name>` and the reload task. Call it from
-- a file HAProxy loads with `lua-load` or `lua-load-per-thread`.
--
-- Options (docs/haproxy.md): `name` ("tokenpolicy-auth"), exactly one of
-- `keys_file` (JWKS or PEM) and `jwks_uri`, `iss`, `aud`, `algs`, `typ`,
-- `require`, `leeway` (as for `tp.verifier`), `policy` (a Policy, a table
-- for `tp.policy`, or an Arvados config.yml path), `denylist` (a file path
-- or a Denylist), `header` ("authorization" or "x-rucio-auth-token"),
-- `cache_size` (10000; 0: no cache), `reload_every` (60 seconds),
-- `min_refetch` (30 seconds), `jwks_timeout` (5 seconds).
--
-- A wrong option, or a key file, policy or denylist that cannot be read,
-- raises: HAProxy then refuses to start and prints the message.
-- @tparam table opts
-- @treturn table the gateway (its `verifier`, `keys`, `denylist`)
function M.register(opts)
  local checked = M.check_options(opts)
  if type(core) ~= "table" or type(core.register_action) ~= "function" then
    error("tokenpolicy.haproxy: register must be called from a file HAProxy loads (lua-load)", 2)
  end
  local gateway = M.gateway(checked, core)
  core.register_action(gateway.name, { "http-req" }, function(txn)
    gateway:handle(txn)
  end, 0)
  -- The first round runs at start: with a jwks_uri it fetches through the
  -- httpclient at once (so a failed load-time fetch is retried at once).
  core.register_task(function()
    gateway:run()
  end)
  if gateway.redis_what then
    core.register_task(function()
      gateway:sync_loop()
    end)
  end
  return gateway
end

return M
