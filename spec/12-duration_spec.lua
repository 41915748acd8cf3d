-- Durations as Arvados configs write them (Go's time.ParseDuration syntax),
-- plus whole seconds.
local tp = require "tokenpolicy"

describe("duration", function()
  after_each(function() collectgarbage() end)

  for _, case in ipairs {
    -- the forms Arvados configs and docs use
    { "12h", 43200 }, { "24h", 86400 }, { "5m", 300 }, { "1h30m", 5400 }, { "90s", 90 },
    { "0", 0 }, { "0s", 0 }, { "0h0m0s", 0 }, { "168h", 604800 }, { "2h45m30s", 9930 },
    -- fractions, as Go takes them
    { "1.5h", 5400 }, { "0.5m", 30 }, { "1m30.5s", 91 }, { ".5s", 1 }, { "5.s", 5 }, { "1.0h", 3600 },
    -- sub-second units: rounded up to whole seconds, so nonzero stays nonzero
    { "300ms", 1 }, { "999ms", 1 }, { "1000ms", 1 }, { "1001ms", 2 }, { "1500ms", 2 },
    { "1us", 1 }, { "1\u{b5}s", 1 }, { "1\u{3bc}s", 1 }, { "1ns", 1 },
    { "1000000000ns", 1 }, { "1000000001ns", 2 }, { "1s1ns", 2 }, { "0.000000001s", 1 },
    -- signs (a policy refuses negative values; the parser does not)
    { "+5m", 300 }, { "-5m", -300 }, { "-300ms", -1 }, { "-0", 0 }, { "+0", 0 }, { "-1h30m", -5400 },
    -- a bare integer is seconds (Go would want a unit)
    { "3600", 3600 }, { "0000", 0 }, { "-90", -90 }, { "9223372036854775807", math.maxinteger },
    -- the ends of Go's range (int64 nanoseconds)
    { "2562047h47m16.854775807s", 9223372037 }, { "-2562047h47m16.854775808s", -9223372037 },
    -- digits of a fraction beyond 63 bits are ignored, as in Go
    { "1.00000000000000000000000000001h", 3600 },
  } do
    it(("parses %q as %d"):format(case[1], case[2]), function()
      local seconds = tp.duration(case[1])
      assert.are.equal("integer", math.type(seconds))
      assert.are.equal(case[2], seconds)
    end)
  end

  for _, case in ipairs {
    { 0, 0 }, { 42, 42 }, { -5, -5 }, { 3600.0, 3600 }, { math.maxinteger, math.maxinteger },
  } do
    it(("takes the number %s as seconds"):format(case[1]), function()
      local seconds = tp.duration(case[1])
      assert.are.equal("integer", math.type(seconds))
      assert.are.equal(case[2], seconds)
    end)
  end

  for _, case in ipairs {
    { "", "empty" }, { "-", "empty" }, { "+", "empty" },
    { "1w", 'unknown unit "w"' }, { "1D", 'unknown unit "D"' }, { "1H", 'unknown unit "H"' },
    { "1hh", 'unknown unit "hh"' }, { "1 hour", 'unknown unit " hour"' },
    { "1h 30m", 'unknown unit "h "' }, { "12h ", 'unknown unit "h "' }, { "1sec", 'unknown unit "sec"' },
    { "h", "expected a number" }, { " 1h", "expected a number" }, { ".", "expected a number" },
    { ".h", "expected a number" }, { "1h-5m", 'unknown unit "h-"' }, { "1.5.3h", "missing unit" },
    { "1h5", "missing unit" }, { "1e3s", 'unknown unit "e"' }, { "0x10s", 'unknown unit "x"' },
    { "2562047h47m16.854775808s", "out of range" }, { "3000000h", "out of range" },
    { "9223372036854775808", "out of range" }, { "99999999999999999999s", "out of range" },
    { "-2562047h47m16.854775809s", "out of range" },
  } do
    it(("refuses %q as malformed (%s)"):format(case[1], case[2]), function()
      local v, msg, code = tp.duration(case[1])
      assert.is_nil(v)
      assert.are.equal("malformed", code)
      assert.are.equal(('malformed: invalid duration "%s": %s'):format(case[1], case[2]), msg)
    end)
  end

  it("shows at most 32 printable characters of the offending text, none of one over 40", function()
    local v, msg, code = tp.duration(("9"):rep(20) .. "h and then some more")
    assert.is_nil(v)
    assert.are.equal("malformed", code)
    assert.are.equal('malformed: invalid duration "99999999999999999999h and then s...": out of range', msg)
    -- no duration is that long, a token is: not even a piece of it is shown
    v, msg = tp.duration(("9"):rep(20) .. "h and then some more text")
    assert.is_nil(v)
    assert.are.equal('malformed: invalid duration (45 bytes, not shown): out of range', msg)
    v, msg = tp.duration("1\0\27[31mh")
    assert.is_nil(v)
    assert.are.equal('malformed: invalid duration "1??[31mh": unknown unit "??["', msg)
  end)

  it("raises on a number that is not whole, and on other types", function()
    assert.has_error(function() tp.duration(1.5) end,
      "bad argument #1 to 'duration' (a number of seconds must be whole)")
    assert.has_error(function() tp.duration({}) end,
      "bad argument #1 to 'duration' (a duration is text or whole seconds, not table)")
    assert.has_error(function() tp.duration(true) end,
      "bad argument #1 to 'duration' (a duration is text or whole seconds, not boolean)")
    assert.has_error(function() tp.duration() end,
      "bad argument #1 to 'duration' (a duration is text or whole seconds, not no value)")
  end)

  it("reads back what format_duration writes, under a day", function()
    for _, seconds in ipairs { 0, 1, 45, 59, 60, 90, 3599, 3600, 3605, 5400, 43200, 86399 } do
      assert.are.equal(seconds, tp.duration(tp.format_duration(seconds)))
    end
  end)

  it("reads format_duration's days, which Go has no unit for (policy_from_arvados refuses them)", function()
    assert.are.equal("1d", tp.format_duration(86400))
    assert.are.equal(86400, tp.duration("1d"))
    assert.are.equal(3 * 86400 + 4 * 3600, tp.duration(tp.format_duration(3 * 86400 + 4 * 3600)))
  end)
end)
