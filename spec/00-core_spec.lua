-- The facade, the shared helpers (JSON, base64url, durations) and the
-- conventions every function follows.
local tp = require "tokenpolicy"
local core = require "tokenpolicy.core"

describe("require 'tokenpolicy'", function()
  after_each(function() collectgarbage() end)

  it("returns the core's functions themselves, not wrappers", function()
    for _, name in ipairs { "decode", "verify", "sign", "keys", "json_encode", "json_decode",
                            "b64url_encode", "b64url_decode", "format_duration" } do
      assert.is_function(tp[name], name)
      assert.are.equal(core[name], tp[name], name)
    end
  end)

  it("has a version", function()
    assert.are.equal("tokenpolicy 0.1.0", tp._VERSION)
  end)

  it("exposes the JSON null sentinel", function()
    assert.are.equal("userdata", type(tp.null))
    assert.are.equal(tp.null, tp.json_decode("null"))
  end)
end)

describe("json_decode", function()
  it("keeps integers as integers and floats as floats", function()
    local v = tp.json_decode('{"i": 1700000000, "f": 1.5, "big": 9007199254740993}')
    assert.are.equal("integer", math.type(v.i))
    assert.are.equal(1700000000, v.i)
    assert.are.equal("float", math.type(v.f))
    assert.are.equal(9007199254740993, v.big)
  end)

  it("maps arrays, objects, booleans and null", function()
    local v = tp.json_decode('[true, false, null, {"a": [1, 2]}]')
    assert.are.same({ true, false, tp.null, { a = { 1, 2 } } }, v)
  end)

  it("refuses duplicate member names", function()
    local v, msg, code = tp.json_decode('{"a": 1, "a": 2}')
    assert.is_nil(v)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: invalid JSON: a member name appears twice", msg)
  end)

  for _, case in ipairs {
    { "invalid UTF-8", '"\xff"', "a string is not well-formed UTF-8" },
    { "an overlong UTF-8 form", '"\xc0\xaf"', "a string is not well-formed UTF-8" },
    { "a UTF-8 encoded surrogate", '"\xed\xa0\x80"', "a string is not well-formed UTF-8" },
    { "an escaped lone surrogate", '"\\ud800"', "an escaped surrogate is not part of a pair" },
    { "an escaped lone low surrogate", '["\\udc00"]', "an escaped surrogate is not part of a pair" },
    { "a NUL escape", '"a\\u0000b"', "a string holds a NUL character" },
    { "an integer beyond 64 bits", "9223372036854775808", "an integer is out of the 64-bit range" },
    { "a float beyond double range", "1e400", "a number is out of range" },
    { "a comment", "[1] // no", "invalid JSON syntax or encoding" },
    { "two values", "1 2", "invalid JSON syntax or encoding" },
    { "nothing", "", "invalid JSON syntax or encoding" },
  } do
    it("refuses " .. case[1], function()
      local v, msg, code = tp.json_decode(case[2])
      assert.is_nil(v)
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: invalid JSON: " .. case[3], msg)
    end)
  end

  it("accepts escaped surrogate pairs and the extremes of the integer range", function()
    assert.are.equal("\u{1F600}", tp.json_decode('"\\ud83d\\ude00"'))
    assert.are.equal(math.mininteger, tp.json_decode("-9223372036854775808"))
    assert.are.equal(math.maxinteger, tp.json_decode("9223372036854775807"))
  end)

  it("refuses nesting over 64 levels", function()
    local deep = ("["):rep(65) .. ("]"):rep(65)
    local v, msg, code = tp.json_decode(deep)
    assert.is_nil(v)
    assert.are.equal("malformed", code)
    assert.are.equal("malformed: invalid JSON: nested deeper than 64 levels", msg)
    assert.is_table(tp.json_decode(("["):rep(64) .. ("]"):rep(64)))
  end)

  it("parses escaped strings larger than its working memory", function()
    local escaped = ("\\u00e9"):rep(3000)
    local v = assert(tp.json_decode('["' .. escaped .. '", {"a": "' .. escaped .. '"}]'))
    assert.are.equal(("\u{e9}"):rep(3000), v[1])
    assert.are.equal(v[1], v[2].a)
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() tp.json_decode(42) end)
  end)
end)

describe("json_encode", function()
  it("encodes compactly with sorted keys", function()
    assert.are.equal('{"a":[1,2.5,"x"],"b":true,"c":null}',
      tp.json_encode { b = true, a = { 1, 2.5, "x" }, c = tp.null })
  end)

  it("encodes the empty table as an object", function()
    assert.are.equal("{}", tp.json_encode {})
  end)

  it("round-trips through json_decode", function()
    local v = { sub = "alice", n = 3, list = { "a", "b" }, nested = { deep = { x = false } } }
    assert.are.same(v, tp.json_decode(tp.json_encode(v)))
  end)

  for _, case in ipairs {
    { "a function", function() end, "function values cannot be encoded" },
    { "NaN", 0 / 0, "NaN and infinity cannot be encoded" },
    { "infinity", math.huge, "NaN and infinity cannot be encoded" },
    { "a mixed table", { 1, x = 2 }, "object keys must be strings" },
    { "a sparse array", { [1] = 1, [3] = 3 }, "object keys must be strings" },
    { "invalid UTF-8", "\xff", "strings must be valid UTF-8 without NUL bytes" },
  } do
    it("raises on " .. case[1], function()
      local ok, err = pcall(tp.json_encode, case[2])
      assert.is_false(ok)
      assert.matches("bad argument #1 to '[%w_.]*json_encode' %(" .. case[3]:gsub("%p", "%%%0"), err)
    end)
  end

  it("raises on a cycle instead of recursing forever", function()
    local t = {}
    t.self = t
    local ok, err = pcall(tp.json_encode, t)
    assert.is_false(ok)
    assert.matches("nested deeper than 64 levels", err)
  end)
end)

describe("b64url_encode / b64url_decode", function()
  it("uses the URL-safe alphabet without padding", function()
    assert.are.equal("-_8", tp.b64url_encode("\xfb\xff"))
    assert.are.equal("\xfb\xff", tp.b64url_decode("-_8"))
    assert.are.equal("", tp.b64url_encode(""))
    assert.are.equal("", tp.b64url_decode(""))
  end)

  it("round-trips every byte value", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for len = 0, 7 do
      local s = all:sub(1, 250 + len)
      assert.are.equal(s, tp.b64url_decode(tp.b64url_encode(s)))
    end
  end)

  for _, bad in ipairs { "-_8=", "+/8", "A", "AB==", "-_9", "a b", "\0AA" } do
    it("refuses the non-canonical " .. ("%q"):format(bad), function()
      local v, msg, code = tp.b64url_decode(bad)
      assert.is_nil(v)
      assert.are.equal("malformed", code)
      assert.are.equal("malformed: not canonical unpadded base64url", msg)
    end)
  end
end)

describe("format_duration", function()
  for _, case in ipairs {
    { 0, "0s" }, { 45, "45s" }, { 60, "1m" }, { 90, "1m30s" }, { 3600, "1h" },
    { 5400, "1h30m" }, { 3605, "1h5s" }, { 86399, "23h59m59s" }, { 86400, "1d" },
    { 3 * 86400 + 4 * 3600 + 59, "3d4h" }, { -300, "-5m" },
    { math.mininteger, "-106751991167300d15h" },
  } do
    it(("formats %d as %s"):format(case[1], case[2]), function()
      assert.are.equal(case[2], tp.format_duration(case[1]))
    end)
  end

  it("raises on a non-integer", function()
    assert.has_error(function() tp.format_duration(1.5) end)
    assert.has_error(function() tp.format_duration("x") end)
  end)
end)
