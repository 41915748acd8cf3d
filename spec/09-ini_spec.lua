-- INI: rucio.cfg must mean here exactly what it means to Rucio, which reads
-- it with Python's configparser.ConfigParser() and its defaults.
local ini = require "tokenpolicy.ini"

-- { name, text, expected }. The expected results are configparser's own
-- (Python 3.11, each text written to a file and read with
-- ConfigParser().read, then every option of DEFAULT and of each section
-- fetched with get). They are written out here so that the spec needs no
-- Python. A parse failure is { error_line = N[, more = M] }; a value that
-- fails interpolation is "!missing", "!syntax" or "!depth" after the
-- exception class configparser raises.
local cases = {
  { "a plain section",
    "[client]\nrucio_host = https://rucio.example.org\naccount = jdoe\n",
    {
      { "DEFAULT", {} },
      { "client", { { "rucio_host", "https://rucio.example.org" }, { "account", "jdoe" } } } } },
  { "':' as the delimiter",
    "[s]\na: b\nc : d\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "b" }, { "c", "d" } } } } },
  { "the first '=' or ':' splits",
    "[s]\nurl = https://h:443/p?a=b\nk: v=w\n",
    {
      { "DEFAULT", {} },
      { "s", { { "url", "https://h:443/p?a=b" }, { "k", "v=w" } } } } },
  { "option names are lowercased, section names are not",
    "[Client]\nAccount = JDoe\nVO = Atlas\n",
    {
      { "DEFAULT", {} },
      { "Client", { { "account", "JDoe" }, { "vo", "Atlas" } } } } },
  { "names and values are stripped",
    "[s]\nkey   =   value with  spaces   \t\nother\t:\tx\n",
    {
      { "DEFAULT", {} },
      { "s", { { "key", "value with  spaces" }, { "other", "x" } } } } },
  { "no inline comments",
    "[s]\na = b # not a comment\nc = d ; neither\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "b # not a comment" }, { "c", "d ; neither" } } } } },
  { "whole-line comments, also indented",
    "# top\n; top too\n[s]\n# c\n   ; indented comment\na = 1\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "1" } } } } },
  { "continuation lines",
    "[s]\na = first\n  second\n\tthird\nb = x\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "first\nsecond\nthird" }, { "b", "x" } } } } },
  { "empty lines inside a value are kept, trailing ones dropped",
    "[s]\na = one\n\n  two\n\n\nb = 2\n\n  \n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "one\n\ntwo" }, { "b", "2" } } } } },
  { "a comment line inside a value is dropped",
    "[s]\na = one\n# c\n  two\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "one\ntwo" } } } } },
  { "continuation is relative to the option's own indent",
    "[s]\n  a = 1\n  b = 2\n    more\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "1" }, { "b", "2\nmore" } } } } },
  { "an indented first option after a header is not a continuation",
    "[s]\n    a = 1\n[t]\n  b = 2\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "1" } } },
      { "t", { { "b", "2" } } } } },
  { "empty values",
    "[s]\na =\nb:\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "" }, { "b", "" } } } } },
  { "an empty first line of a value",
    "[s]\na =\n  x\n  y\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "\nx\ny" } } } } },
  { "DEFAULT is visible in every section",
    "[DEFAULT]\nvo = def\n[client]\naccount = a\n[other]\n",
    {
      { "DEFAULT", { { "vo", "def" } } },
      { "client", { { "account", "a" }, { "vo", "def" } } },
      { "other", { { "vo", "def" } } } } },
  { "a section overrides DEFAULT",
    "[DEFAULT]\nx = 1\n[s]\nx = 2\n",
    {
      { "DEFAULT", { { "x", "1" } } },
      { "s", { { "x", "2" } } } } },
  { "DEFAULT may appear twice",
    "[DEFAULT]\na = 1\n[s]\n[DEFAULT]\nb = 2\n",
    {
      { "DEFAULT", { { "a", "1" }, { "b", "2" } } },
      { "s", { { "a", "1" }, { "b", "2" } } } } },
  { "interpolation from the same section",
    "[paths]\nhome = /opt/rucio\ncfg = %(home)s/etc/rucio.cfg\n",
    {
      { "DEFAULT", {} },
      { "paths", { { "home", "/opt/rucio" }, { "cfg", "/opt/rucio/etc/rucio.cfg" } } } } },
  { "interpolation from DEFAULT, names case-insensitive",
    "[DEFAULT]\nbase = /srv\n[s]\np = %(BASE)s/x\n",
    {
      { "DEFAULT", { { "base", "/srv" } } },
      { "s", { { "p", "/srv/x" }, { "base", "/srv" } } } } },
  { "'%%' is a literal '%'",
    "[s]\npct = 100%%\nmix = %%(home)s\n",
    {
      { "DEFAULT", {} },
      { "s", { { "pct", "100%" }, { "mix", "%(home)s" } } } } },
  { "nested interpolation",
    "[s]\na = x\nb = %(a)s-y\nc = %(b)s-z\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "x" }, { "b", "x-y" }, { "c", "x-y-z" } } } } },
  { "a DEFAULT value interpolates in the section that reads it",
    "[DEFAULT]\nd = %(x)s\n[s]\nx = 1\n",
    {
      { "DEFAULT", { { "d", "!missing" } } },
      { "s", { { "x", "1" }, { "d", "1" } } } } },
  { "a name with spaces",
    "[s]\nmy key = v\nr = %(my key)s\n",
    {
      { "DEFAULT", {} },
      { "s", { { "my key", "v" }, { "r", "v" } } } } },
  { "a missing reference fails on read only",
    "[s]\na = %(nope)s\nb = ok\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "!missing" }, { "b", "ok" } } } } },
  { "a lone '%' fails",
    "[s]\na = 50%\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "!syntax" } } } } },
  { "'%(name)' without 's' fails",
    "[s]\na = %(a)\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "!syntax" } } } } },
  { "a reference loop fails at depth 10",
    "[s]\na = %(b)s\nb = %(a)s\nc = %(c)s\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "!depth" }, { "b", "!depth" }, { "c", "!depth" } } } } },
  { "a chain of nine references is fine, ten is too deep",
    "[s]\n"
    .. "v0 = end\n"
    .. "v1 = %(v0)s\n"
    .. "v2 = %(v1)s\n"
    .. "v3 = %(v2)s\n"
    .. "v4 = %(v3)s\n"
    .. "v5 = %(v4)s\n"
    .. "v6 = %(v5)s\n"
    .. "v7 = %(v6)s\n"
    .. "v8 = %(v7)s\n"
    .. "v9 = %(v8)s\n"
    .. "v10 = %(v9)s%%\n"
    .. "v11 = %(v10)s\n",
    {
      { "DEFAULT", {} },
      { "s", {
        { "v0", "end" }, { "v1", "end" }, { "v2", "end" }, { "v3", "end" }, { "v4", "end" },
        { "v5", "end" }, { "v6", "end" }, { "v7", "end" }, { "v8", "end" }, { "v9", "end" },
        { "v10", "end%" }, { "v11", "!depth" } } } } },
  { "a duplicate section",
    "[s]\na=1\n[s]\n",
    { error_line = 3 } },
  { "a duplicate option, in any case",
    "[s]\na = 1\nA = 2\n",
    { error_line = 3 } },
  { "the same option in two sections",
    "[s]\na=1\n[t]\na=2\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "1" } } },
      { "t", { { "a", "2" } } } } },
  { "an option before any section",
    "# c\na = 1\n[s]\n",
    { error_line = 2 } },
  { "a line without a delimiter",
    "[s]\njust a line\nb = 2\n",
    { error_line = 2 } },
  { "an empty option name",
    "[s]\n= value\n",
    { error_line = 2 } },
  { "several bad lines: the first is reported",
    "[s]\nx\ny\n",
    { error_line = 2, more = 1 } },
  { "a later duplicate section wins over an earlier bad line",
    "[s]\nbad\n[t]\n[s]\n",
    { error_line = 4 } },
  { "a header ends at the last ']'",
    "[s] trailing\na=1\n[a]b]\nc=2\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "1" } } },
      { "a]b", { { "c", "2" } } } } },
  { "'[]' is not a header",
    "[s]\n[]\n",
    { error_line = 2 } },
  { "CRLF and CR line ends",
    "[s]\r\na = 1\r\n  more\rb = 2\r\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "1\nmore" }, { "b", "2" } } } } },
  { "tabs count as one column",
    "[s]\n\ta = 1\n\t  b\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "1\nb" } } } } },
  { "an empty text",
    "",
    {
      { "DEFAULT", {} } } },
  { "only comments",
    "# nothing\n; here\n",
    {
      { "DEFAULT", {} } } },
  { "Python's other whitespace: \\v, \\f and 0x1C-0x1F",
    "[s]\na = x\028\011\n\012b = y\n",
    {
      { "DEFAULT", {} },
      { "s", { { "a", "x\nb = y" } } } } },
}

-- What our failure message says, in configparser's terms.
local function failure_kind(msg)
  if msg:find("missing option", 1, true) then
    return "!missing"
  elseif msg:find("deeper than", 1, true) then
    return "!depth"
  elseif msg:find("must be followed by", 1, true) or msg:find("variable reference", 1, true) then
    return "!syntax"
  end
  return "?" .. msg
end

-- The same shape the expected results have: DEFAULT, then each section,
-- each with its options (as options() lists them) and their values.
local function dump(cfg)
  local out = {}
  local names = cfg:sections()
  table.insert(names, 1, "DEFAULT")
  for _, section in ipairs(names) do
    local values = {}
    for _, option in ipairs(cfg:options(section)) do
      local v, msg, code = cfg:get(section, option)
      if v == nil then
        assert.are.equal("malformed", code)
        v = failure_kind(msg)
      end
      values[#values + 1] = { option, v }
    end
    out[#out + 1] = { section, values }
  end
  return out
end

describe("ini.parse reads like configparser", function()
  after_each(function() collectgarbage() end)

  for _, case in ipairs(cases) do
    local name, text, want = case[1], case[2], case[3]
    it(name, function()
      local cfg, msg, code = ini.parse(text)
      if want.error_line then
        assert.is_nil(cfg)
        assert.are.equal("malformed", code)
        assert.are.equal("malformed: line " .. want.error_line .. ":", msg:match("^malformed: line %d+:"))
        if want.more then
          assert.truthy(msg:find("(and " .. want.more .. " more)", 1, true))
        end
      else
        assert.is_truthy(cfg, msg)
        assert.are.same(want, dump(cfg))
      end
    end)
  end

  it("has at least 25 cases", function()
    assert.is_true(#cases >= 25)
  end)
end)

describe("ini messages", function()
  it("name the source and the line", function()
    local cfg, msg, code = ini.parse("[client]\naccount = a\n[client]\n", "/etc/rucio.cfg")
    assert.is_nil(cfg)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: /etc/rucio.cfg: line 3: section 'client' already exists", msg)
    assert.are.equal("malformed: line 3: option 'account' in section 'client' already exists",
      select(2, ini.parse("[client]\naccount = a\nACCOUNT = b\n")))
    assert.are.equal("malformed: line 1: an option before any [section] header",
      select(2, ini.parse("account = a\n")))
    assert.are.equal("malformed: line 2: neither a [section] header nor a 'name = value' line (and 1 more)",
      select(2, ini.parse("[s]\nx\ny\n")))
  end)

  it("never quote a value, which may be a password", function()
    local text = "[client]\nusername = jdoe\npassword = hunter2%zz\nother = %(hunter2)s\n"
    local cfg = assert(ini.parse(text, "rucio.cfg"))
    local v, msg, code = cfg:get("client", "password")
    assert.is_nil(v)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: rucio.cfg: [client] password: '%' must be followed by '%' or '('", msg)
    assert.is_nil(msg:find("hunter2", 1, true))
    local _, msg2 = cfg:get("client", "other")
    assert.are.equal("malformed: rucio.cfg: [client] other: refers to the missing option 'hunter2'", msg2)
    local bad = select(2, ini.parse("[client]\npassword hunter2\n"))
    assert.is_nil(bad:find("hunter2", 1, true))
  end)

  it("make names from the file printable and short", function()
    local _, msg = ini.parse("[a\1b]\n[a\1b]\n")
    assert.are.equal("malformed: line 2: section 'a?b' already exists", msg)
    local long = ("x"):rep(100)
    _, msg = ini.parse("[" .. long .. "]\n[" .. long .. "]\n")
    assert.are.equal("malformed: line 2: section '" .. ("x"):rep(61) .. "...' already exists", msg)
  end)
end)

describe("IniConfig", function()
  local cfg
  before_each(function()
    cfg = assert(ini.parse("[DEFAULT]\nvo = def\n[client]\nAccount = jdoe\n[other]\n"))
  end)
  after_each(function() collectgarbage() end)

  it("get returns nil for an absent section or option", function()
    assert.are.equal("jdoe", cfg:get("client", "ACCOUNT"))
    assert.is_nil(cfg:get("client", "auth_token_file_path"))
    assert.is_nil(cfg:get("Client", "account"))
    assert.is_nil(cfg:get("nowhere", "vo"))
    assert.are.equal(1, select("#", cfg:get("nowhere", "vo")))
    assert.are.equal("def", cfg:get("DEFAULT", "vo"))
    assert.are.equal("def", cfg:get("other", "vo"))
  end)

  it("has follows has_option", function()
    assert.is_true(cfg:has("client", "account"))
    assert.is_true(cfg:has("client", "VO"))
    assert.is_true(cfg:has("DEFAULT", "vo"))
    assert.is_true(cfg:has("", "vo"))
    assert.is_false(cfg:has("DEFAULT", "account"))
    assert.is_false(cfg:has("nowhere", "vo"))
    assert.is_false(cfg:has("client", "nothing"))
  end)

  it("sections lists a fresh copy in file order, without DEFAULT", function()
    local list = cfg:sections()
    assert.are.same({ "client", "other" }, list)
    list[1] = "changed"
    assert.are.same({ "client", "other" }, cfg:sections())
  end)

  it("options lists the section's own, then DEFAULT's", function()
    assert.are.same({ "account", "vo" }, cfg:options("client"))
    assert.are.same({ "vo" }, cfg:options("DEFAULT"))
    assert.is_nil(cfg:options("nowhere"))
  end)

  it("prints readably", function()
    assert.are.equal("tokenpolicy.IniConfig: 2 sections", tostring(cfg))
    assert.are.equal("tokenpolicy.IniConfig: 1 section", tostring(assert(ini.parse("[a]"))))
  end)

  it("raises on misuse, naming the argument", function()
    assert.has_error(function() ini.parse(nil) end, "bad argument #1 to 'parse' (string expected, got nil)")
    assert.has_error(function() ini.parse("", 1) end, "bad argument #2 to 'parse' (string expected, got number)")
    assert.has_error(function() cfg:get("client") end, "bad argument #3 to 'get' (string expected, got nil)")
    assert.has_error(function() cfg.get({}, "a", "b") end,
      "bad argument #1 to 'get' (tokenpolicy.IniConfig expected, got table)")
    assert.has_error(function() cfg:has(1, "a") end, "bad argument #2 to 'has' (string expected, got number)")
    assert.has_error(function() ini.read(false) end, "bad argument #1 to 'read' (string expected, got boolean)")
  end)
end)

describe("ini.read", function()
  local dir
  before_each(function()
    -- mktemp leaks at exit: it would abort under the ASan preload.
    local p = assert(io.popen("env -u LD_PRELOAD mktemp -d"))
    dir = p:read("l")
    p:close()
  end)
  after_each(function()
    os.execute("rm -rf '" .. dir .. "'")
    collectgarbage()
  end)

  it("reads a file and names it in messages", function()
    local f = assert(io.open(dir .. "/rucio.cfg", "w"))
    f:write("[client]\r\naccount = jdoe\r\n  x\n")
    f:close()
    local cfg = assert(ini.read(dir .. "/rucio.cfg"))
    assert.are.equal("jdoe\nx", cfg:get("client", "account"))
    f = assert(io.open(dir .. "/bad.cfg", "w"))
    f:write("[client]\n[client]\n")
    f:close()
    local none, msg, code = ini.read(dir .. "/bad.cfg")
    assert.is_nil(none)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: " .. dir .. "/bad.cfg: line 2: section 'client' already exists", msg)
  end)

  it("reads through read_config: the status of the file read, and max_size", function()
    local f = assert(io.open(dir .. "/rucio.cfg", "w"))
    f:write("[client]\naccount = jdoe\n")
    f:close()
    local cfg, st = ini.read(dir .. "/rucio.cfg")
    assert.are.equal("jdoe", cfg:get("client", "account"))
    assert.are.equal("file", st.type)
    assert.are.equal(24, st.size)
    local none, msg, code = ini.read(dir .. "/rucio.cfg", { max_size = 10 })
    assert.is_nil(none)
    assert.are.equal("too_large", code)
    assert.are.equal("too_large: read_config: " .. dir .. "/rucio.cfg is 24 bytes, over the limit of 10", msg)
    assert.has_error(function() ini.read(dir .. "/rucio.cfg", { size = 1 }) end,
      "bad argument #2 to 'read' (unknown option 'size')")
  end)

  it("fails with not_found or io", function()
    local none, msg, code = ini.read(dir .. "/missing.cfg")
    assert.is_nil(none)
    assert.are.equal("not_found", code)
    assert.are.equal("not_found: read_config: " .. dir .. "/missing.cfg does not exist", msg)
    none, msg, code = ini.read(dir)
    assert.is_nil(none)
    assert.are.equal("io", code)
    assert.matches("^io: ", msg)
  end)
end)
