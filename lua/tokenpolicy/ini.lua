--- INI files read the way Python's `configparser.ConfigParser()` reads them.
--
-- Rucio's client reads `rucio.cfg` with a default `ConfigParser`, so a file
-- it accepts must mean the same thing here and a file it rejects must be
-- rejected here too. The rules, all configparser defaults:
--
-- * `[section]` headers; `DEFAULT` is special: its options are visible in
--   every section and it is not listed by `sections()`.
-- * `name = value` or `name : value` (the first `=` or `:` splits); names
--   are lowercased, names and values are stripped of whitespace.
-- * Whole-line comments start with `#` or `;` (after any indentation); there
--   are no inline comments, so `a = b # c` has the value `b # c`.
-- * A line indented more than its option's line continues the value; empty
--   lines inside a value are kept, trailing ones are dropped.
-- * Errors: a duplicate section or a duplicate option within a section; an
--   option line before any section header; a line that is neither a header
--   nor has a delimiter.
-- * `%(name)s` is replaced by another option of the same section (or of
--   `DEFAULT`), `%%` is a literal `%`; anything else after `%` is an error,
--   reported when the value is read, as configparser does.
--
-- Messages name lines, sections and options but never quote a value: a
-- `rucio.cfg` may hold a password.
-- @module tokenpolicy.ini

local core = require "tokenpolicy.core"
local util = require "tokenpolicy.util"

local ini = {}

-- Python's str.isspace() for the ASCII range, which is what strip() and
-- `\s` use: it includes the four separators 0x1C-0x1F.
local WS = " \t\n\r\v\f\28\29\30\31"
local NONSPACE = "[^" .. WS .. "]"
local MAX_DEPTH = 10 -- configparser.MAX_INTERPOLATION_DEPTH
local DEFAULT = "DEFAULT"

local function strip(s)
  local first = s:find(NONSPACE)
  if not first then
    return ""
  end
  local last = #s
  while WS:find(s:sub(last, last), 1, true) do
    last = last - 1
  end
  return s:sub(first, last)
end

local function rstrip(s)
  local last = #s
  while last > 0 and WS:find(s:sub(last, last), 1, true) do
    last = last - 1
  end
  return s:sub(1, last)
end

-- Names from the file go into messages; keep them short and printable.
local function shown(name)
  local s = name:gsub("[^\32-\126]", "?")
  if #s > 64 then
    s = s:sub(1, 61) .. "..."
  end
  return "'" .. s .. "'"
end

local fail = util.fail

-- A file read in Python's text mode ends lines at "\n", "\r\n" or "\r".
local function split_lines(text)
  local lines, pos, n = {}, 1, #text
  -- The next "\r" is looked for again only once passed: looking from
  -- every line to the end of a text without one made splitting quadratic.
  local cr = text:find("\r", 1, true)
  while pos <= n do
    local s, e = text:find("\r?\n", pos)
    if cr and cr < pos then
      cr = text:find("\r", pos, true)
    end
    if cr and (not s or cr < s) then
      s, e = cr, cr
    end
    if not s then
      lines[#lines + 1] = text:sub(pos)
      break
    end
    lines[#lines + 1] = text:sub(pos, s - 1)
    pos = e + 1
  end
  return lines
end

local function new_section()
  return { names = {}, values = {} }
end

local Config = {}
Config.__index = Config
Config.__name = "tokenpolicy.IniConfig"

function Config.__tostring(self)
  local n = #self._order
  return ("tokenpolicy.IniConfig: %d section%s"):format(n, n == 1 and "" or "s")
end

-- Level 4: argerror, this check, the public function, its caller.
local function check_string(value, n, fname)
  if type(value) ~= "string" then
    util.argerror(n, fname, "string expected, got " .. type(value), 4)
  end
end

local function check_config(self, fname)
  if getmetatable(self) ~= Config then
    util.argerror(1, fname, "tokenpolicy.IniConfig expected, got " .. type(self), 4)
  end
end

--- Parse INI text.
-- @tparam string text the file's contents
-- @tparam[opt] string name what to call the text in messages (a path)
-- @treturn IniConfig the configuration
-- @return or the fail triple: `malformed` with the line number
function ini.parse(text, name)
  check_string(text, 1, "parse")
  if name ~= nil then
    check_string(name, 2, "parse")
  end
  local where = name and (name .. ": ") or ""
  local sections, order = {}, {}
  local defaults = new_section()
  local added = {} -- "section" and "section\0option" seen in this text
  local cursect, sectname, optname
  local indent = 0
  local first_bad, bad_count -- configparser reports these at the end

  for lineno, line in ipairs(split_lines(text)) do
    local value = strip(line)
    local comment = value:sub(1, 1) == "#" or value:sub(1, 1) == ";"
    if comment or value == "" then
      -- An empty line may belong to a value; a comment line never does.
      if not comment and cursect and optname then
        local v = cursect.values[optname]
        v[#v + 1] = ""
      end
    else
      local cur_indent = line:find(NONSPACE) - 1
      if cursect and optname and cur_indent > indent then
        local v = cursect.values[optname]
        v[#v + 1] = value
      else
        indent = cur_indent
        -- "[" .+ "]" matched greedily from the start: the header ends at
        -- the last "]" and anything after it is ignored.
        local close = value:sub(1, 1) == "[" and value:match(".*()%]")
        if close and close > 2 then
          sectname = value:sub(2, close - 1)
          if sections[sectname] then
            return fail("malformed", ("%sline %d: section %s already exists"):format(where, lineno, shown(sectname)))
          elseif sectname == DEFAULT then
            cursect = defaults
          else
            cursect = new_section()
            sections[sectname] = cursect
            order[#order + 1] = sectname
            added[sectname] = true
          end
          optname = nil
        elseif not cursect then
          return fail("malformed", ("%sline %d: an option before any [section] header"):format(where, lineno))
        else
          local delim = value:find("[=:]")
          if delim then
            local opt = rstrip(value:sub(1, delim - 1)):lower()
            if opt == "" then
              first_bad = first_bad or lineno
              bad_count = (bad_count or 0) + 1
            end
            local key = sectname .. "\0" .. opt
            if added[key] then
              return fail("malformed", ("%sline %d: option %s in section %s already exists"):format(
                where, lineno, shown(opt), shown(sectname)))
            end
            added[key] = true
            if cursect.values[opt] == nil then
              cursect.names[#cursect.names + 1] = opt
            end
            cursect.values[opt] = { strip(value:sub(delim + 1)) }
            optname = opt ~= "" and opt or nil
          else
            -- configparser keeps going (and keeps optname) and raises at
            -- the end, so a later fatal error is the one reported.
            first_bad = first_bad or lineno
            bad_count = (bad_count or 0) + 1
          end
        end
      end
    end
  end

  if first_bad then
    local more = bad_count > 1 and (" (and %d more)"):format(bad_count - 1) or ""
    return fail("malformed", ("%sline %d: neither a [section] header nor a 'name = value' line%s"):format(
      where, first_bad, more))
  end

  -- Join continuation lines; rstrip drops the trailing empty lines.
  for _, sect in pairs(sections) do
    for opt, lines in pairs(sect.values) do
      sect.values[opt] = rstrip(table.concat(lines, "\n"))
    end
  end
  for opt, lines in pairs(defaults.values) do
    defaults.values[opt] = rstrip(table.concat(lines, "\n"))
  end

  return setmetatable({ _sections = sections, _order = order, _defaults = defaults, _name = name }, Config)
end

--- Read and parse an INI file.
-- The file is read through the core's `read_config`: a FIFO or device at
-- the path is refused without blocking, a link is followed (as Python's
-- `open` follows it), and the size is capped.
-- @tparam string path the file
-- @tparam[opt] table opts `max_size` (bytes, default 1 MiB)
-- @treturn IniConfig the configuration
-- @treturn table the status of the file read (as `stat` gives it)
-- @return or the fail triple: `not_found`, `io`, `too_large` or `malformed`
function ini.read(path, opts)
  check_string(path, 1, "read")
  opts = util.check_opts(opts, { max_size = "integer" }, "read", 2)
  local text, st, code = core.read_config(path, opts)
  if not text then
    return nil, st, code
  end
  local cfg, msg
  cfg, msg, code = ini.parse(text, path)
  if not cfg then
    return nil, msg, code
  end
  return cfg, st
end

local function lookup(self, sect, opt)
  local v = sect and sect.values[opt]
  if v == nil then
    v = self._defaults.values[opt]
  end
  return v
end

-- BasicInterpolation._interpolate_some: `option` stays the one asked for,
-- so depth counts nested references, not distinct names.
local function interpolate(self, sect, label, rest, depth, out)
  if depth > MAX_DEPTH then
    return fail("malformed", ("%s: interpolation deeper than %d levels"):format(label, MAX_DEPTH))
  end
  while rest ~= "" do
    local p = rest:find("%", 1, true)
    if not p then
      out[#out + 1] = rest
      return true
    end
    if p > 1 then
      out[#out + 1] = rest:sub(1, p - 1)
      rest = rest:sub(p)
    end
    local c = rest:sub(2, 2)
    if c == "%" then
      out[#out + 1] = "%"
      rest = rest:sub(3)
    elseif c == "(" then
      local var, after = rest:match("^%%%(([^)]+)%)s()")
      if not var then
        return fail("malformed", label .. ": bad interpolation variable reference")
      end
      var = var:lower()
      rest = rest:sub(after)
      local v = lookup(self, sect, var)
      if v == nil then
        return fail("malformed", ("%s: refers to the missing option %s"):format(label, shown(var)))
      end
      if v:find("%", 1, true) then
        local ok, msg, code = interpolate(self, sect, label, v, depth + 1, out)
        if not ok then
          return nil, msg, code
        end
      else
        out[#out + 1] = v
      end
    else
      return fail("malformed", label .. ": '%' must be followed by '%' or '('")
    end
  end
  return true
end

--- An option's value, interpolated.
-- @tparam string section the section name (case-sensitive; `"DEFAULT"` reads the defaults)
-- @tparam string option the option name (case-insensitive)
-- @treturn ?string the value, or nil when the section or option is absent
-- @return or the fail triple `malformed` when the interpolation is bad
function Config:get(section, option)
  check_config(self, "get")
  check_string(section, 2, "get")
  check_string(option, 3, "get")
  local sect
  if section ~= DEFAULT then
    sect = self._sections[section]
    if not sect then
      return nil
    end
  end
  option = option:lower()
  local raw = lookup(self, sect, option)
  if raw == nil then
    return nil
  end
  if not raw:find("%", 1, true) then
    return raw                  -- nothing to interpolate: the common case
  end
  local out = {}
  local label = (self._name and (self._name .. ": ") or "") .. ("[%s] %s"):format(section, option)
  local ok, msg, code = interpolate(self, sect, label, raw, 1, out)
  if not ok then
    return nil, msg, code
  end
  return table.concat(out)
end

--- The section names in file order, without `DEFAULT`.
-- @treturn {string,...} a new list
function Config:sections()
  check_config(self, "sections")
  local list = {}
  for i, name in ipairs(self._order) do
    list[i] = name
  end
  return list
end

--- The option names of a section, its own first, then those of `DEFAULT`.
-- @tparam string section the section name; `"DEFAULT"` lists the defaults
-- @treturn ?{string,...} a new list, or nil when there is no such section
function Config:options(section)
  check_config(self, "options")
  check_string(section, 2, "options")
  local own = { names = {} }
  if section ~= DEFAULT then
    own = self._sections[section]
    if not own then
      return nil
    end
  end
  local list, seen = {}, {}
  for _, names in ipairs({ own.names, self._defaults.names }) do
    for _, opt in ipairs(names) do
      if not seen[opt] then
        seen[opt] = true
        list[#list + 1] = opt
      end
    end
  end
  return list
end

--- Whether an option is set in a section (or in `DEFAULT`).
-- As configparser's `has_option`: an empty name or `"DEFAULT"` asks about
-- the defaults; a missing section has no options.
-- @tparam string section the section name
-- @tparam string option the option name (case-insensitive)
-- @treturn boolean
function Config:has(section, option)
  check_config(self, "has")
  check_string(section, 2, "has")
  check_string(option, 3, "has")
  option = option:lower()
  if section == "" or section == DEFAULT then
    return self._defaults.values[option] ~= nil
  end
  local sect = self._sections[section]
  if not sect then
    return false
  end
  return sect.values[option] ~= nil or self._defaults.values[option] ~= nil
end

return ini
