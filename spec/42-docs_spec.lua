-- The documentation keeps up with the code: the man page names every
-- command and option the real parser defines (asked of bin/tokenpolicy's
-- own --help, never a list kept here) and every TOKENPOLICY_* variable the
-- code reads; both man pages render without a groff warning; every
-- relative link of the Markdown docs reaches a file; and the commands the
-- user guides show are commands and options that exist.
local tp = require "tokenpolicy"
local expect = require "helpers.expect"

local slurp, quote = expect.read_file, expect.quote
local run = expect.run_cli

local MAN1, MAN3 = "man/tokenpolicy.1", "man/tokenpolicy.3"

-- Output of a shell command, and whether it succeeded. Each command is
-- run under `env -i`, so that no sanitizer runtime is preloaded into it.
local function capture(cmd)
  local pipe = assert(io.popen(cmd))
  local text = pipe:read("a")
  local ok = pipe:close()
  return text, ok
end

-- The sections of an argparse help text ("Options:", "Commands:", ...),
-- each a list of its lines.
local function help_sections(text)
  local sections, current = {}, nil
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local title = line:match("^(%u[%a ]*):$")
    if title then
      current = {}
      sections[title] = current
    elseif line == "" then
      current = nil
    elseif current then
      current[#current + 1] = line
    end
  end
  return sections
end

-- The long options of a help's Options section ("-h, --help", "--json").
local function long_options(help)
  local found = {}
  for _, line in ipairs(help_sections(help).Options or {}) do
    local opt = line:match("^   %-%a, (%-%-[%w%-]+)") or line:match("^   (%-%-[%w%-]+)")
    if opt then found[#found + 1] = opt end
  end
  return found
end

-- The parser, as bin/tokenpolicy shows it: its commands and, for each,
-- its long options; "" holds the top level's.
local parser_cache
local function parser()
  if parser_cache then return parser_cache end
  local top = run({ "--help" })
  assert(top.code == 0, top.err)
  local commands, options = {}, { [""] = long_options(top.out) }
  for _, line in ipairs(help_sections(top.out).Commands or {}) do
    local name = line:match("^   ([%w%-]+)")
    if name then
      commands[#commands + 1] = name
      local sub = run({ name, "--help" })
      assert(sub.code == 0, sub.err)
      options[name] = long_options(sub.out)
    end
  end
  parser_cache = { commands = commands, options = options }
  return parser_cache
end

-- A roff source as the words a reader sees: escaped minus signs as '-',
-- font changes and zero-width escapes removed.
local function roff_text(source)
  return (source:gsub("\\%-", "-"):gsub("\\f%[[^%]]*%]", ""):gsub("\\f%(..", ""):gsub("\\f.", "")
    :gsub("\\&", ""):gsub("\\%%", ""):gsub("\\%(dq", '"'))
end

-- The man page's sections (.SH, with their subsections) and subsections
-- (.SS), by title, as text.
local function man_parts(source)
  local parts, section, sub = {}, nil, nil
  for line in (roff_text(source) .. "\n"):gmatch("([^\n]*)\n") do
    local kind, title = line:match("^%.(S[HS])%s+(.-)%s*$")
    if kind then
      title = title:gsub('^"(.*)"$', "%1")
      sub = {}
      parts[title] = sub
      if kind == "SH" then section = sub end
    end
    if sub then sub[#sub + 1] = line end
    if section and section ~= sub then section[#section + 1] = line end
  end
  local joined = {}
  for title, lines in pairs(parts) do joined[title] = table.concat(lines, "\n") end
  return joined
end

-- The first line of a roff source that is not a comment.
local function first_request(source)
  for line in source:gmatch("[^\n]+") do
    if not line:find('^%.\\"') then return line end
  end
  return ""
end

-- Whether `word` occurs in text as a whole word (options and commands
-- hold '-', which a frontier of letters alone would split).
local function has_word(text, word)
  return text:find("%f[%w%-]" .. word:gsub("%p", "%%%0") .. "%f[^%w%-]") ~= nil
end

-- Every file under `dir` (recursively) whose name ends with `suffix`,
-- listed by the core (no `find` child: under `make asan` every child gets
-- the sanitizer runtimes).
local function files_under(dir, suffix, list)
  list = list or {}
  for _, name in ipairs(assert(tp.list_dir(dir))) do
    local path = dir .. "/" .. name
    local st = assert(tp.stat(path))
    if st.type == "directory" then
      files_under(path, suffix, list)
    elseif st.type == "file" and name:sub(-#suffix) == suffix then
      list[#list + 1] = path
    end
  end
  return list
end

-- Lines of a Markdown file outside its fenced code blocks, and the fenced
-- blocks themselves as { lang =, lines = }.
local function markdown(path)
  local prose, blocks, block = {}, {}, nil
  for line in (slurp(path) .. "\n"):gmatch("([^\n]*)\n") do
    local fence, lang = line:match("^%s*(```+)%s*([%w%-]*)")
    if fence and not block then
      block = { lang = lang, lines = {} }
    elseif fence and block then
      blocks[#blocks + 1] = block
      block = nil
    elseif block then
      block.lines[#block.lines + 1] = line
    else
      prose[#prose + 1] = line
    end
  end
  return prose, blocks
end

-- The anchors of a Markdown file's headings, as GitHub makes them:
-- lower case, every character but letters, digits, spaces, '-' and '_'
-- dropped (inline code marks and arrows included), spaces made '-'; a
-- repeated heading gets "-1", "-2", ...
local function anchors(path)
  local prose = markdown(path)
  local set, seen = {}, {}
  for _, line in ipairs(prose) do
    local title = line:match("^#+%s+(.-)%s*#*%s*$")
    if title then
      local slug = title:lower():gsub("[^%w%s%-_]", ""):gsub("%s", "-")
      local n = seen[slug]
      seen[slug] = (n or -1) + 1
      set[n and (slug .. "-" .. (n + 1)) or slug] = true
    end
  end
  return set
end

describe("the documentation", function()
  after_each(function() collectgarbage() end)

  describe("tokenpolicy(1)", function()
    local source = slurp(MAN1)
    local text = roff_text(source)
    local parts = man_parts(source)

    it("has a subsection for every command of the parser, naming each of the command's long options", function()
      local p = parser()
      assert.is_true(#p.commands >= 11, "the help lists the commands")
      for _, command in ipairs(p.commands) do
        local part = parts[command]
        assert.is_not_nil(part, ("%s: no '.SS %s' subsection"):format(MAN1, command))
        for _, opt in ipairs(p.options[command]) do
          if opt ~= "--help" then
            assert.is_true(has_word(part, opt), ("%s: '%s %s' is not in its subsection"):format(MAN1, command, opt))
          end
        end
      end
    end)

    it("names the top-level options in OPTIONS", function()
      local top = parser().options[""]
      assert.is_true(#top >= 2)
      for _, opt in ipairs(top) do
        assert.is_true(has_word(parts.OPTIONS or "", opt), ("%s: %s is not in OPTIONS"):format(MAN1, opt))
      end
    end)

    it("lists in ENVIRONMENT every TOKENPOLICY_* variable the code reads", function()
      local names, seen = {}, {}
      local sources = files_under("lua", ".lua")
      sources[#sources + 1] = "bin/tokenpolicy"
      for _, path in ipairs(sources) do
        for name in slurp(path):gmatch("TOKENPOLICY_[%u%d_]*[%u%d]") do
          if not seen[name] then
            seen[name] = true
            names[#names + 1] = name
          end
        end
      end
      assert.is_true(seen.TOKENPOLICY_DENYLIST and seen.TOKENPOLICY_LUA and true, "the scan finds variables")
      for _, name in ipairs(names) do
        assert.is_true(has_word(parts.ENVIRONMENT or "", name), ("%s: %s is not in ENVIRONMENT"):format(MAN1, name))
      end
    end)

    it("gives every exit status in EXIT STATUS", function()
      local part = parts["EXIT STATUS"] or ""
      for _, code in ipairs { "0", "1", "2" } do
        assert.is_truthy(part:find("\n%.TP[^\n]*\n%.?B?%s*" .. code .. "\n"), ("%s: exit %s"):format(MAN1, code))
      end
    end)

    it("has the sections of a man page", function()
      for _, title in ipairs { "NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "EXIT STATUS",
                               "ENVIRONMENT", "FILES", "SEE ALSO" } do
        assert.is_not_nil(parts[title], ("%s: no %s section"):format(MAN1, title))
      end
      assert.is_truthy(first_request(source):find('^%.TH TOKENPOLICY 1 '), ".TH comes first")
      assert.is_truthy(text:find("tokenpolicy %- "), "NAME says what it is")
    end)
  end)

  describe("tokenpolicy(3)", function()
    it("names require, the error convention and the reference", function()
      local source = slurp(MAN3)
      local text = roff_text(source)
      assert.is_truthy(first_request(source):find('^%.TH TOKENPOLICY 3 '))
      assert.is_truthy(text:find('require "tokenpolicy"', 1, true))
      assert.is_truthy(text:find('nil, "code: message", "code"', 1, true))
      assert.is_truthy(text:find("docs/api.md", 1, true))
      for _, name in ipairs { "decode", "verify", "keys", "policy", "discover", "status", "logout",
                              "switch_account", "verifier", "denylist" } do
        assert.is_true(has_word(text, name), ("%s: %s"):format(MAN3, name))
      end
    end)
  end)

  describe("the man pages render", function()
    for _, page in ipairs { MAN1, MAN3 } do
      it(page .. " without a groff warning", function()
        local err = os.tmpname()
        local _, ok = capture("env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 " .. quote(page)
          .. " 2>" .. quote(err))
        local warnings = slurp(err)
        os.remove(err)
        assert.are.equal("", warnings)
        assert.is_true(ok)
      end)
    end
  end)

  describe("links", function()
    local pages = files_under("docs", ".md")
    pages[#pages + 1] = "README.md"

    it("every relative link of docs/*.md and README.md reaches a file (and a heading of it)", function()
      local broken = {}
      for _, page in ipairs(pages) do
        local dir = page:match("^(.*)/") or "."
        local prose = markdown(page)
        for _, line in ipairs(prose) do
          -- Inline code is text, not a link.
          local plain = line:gsub("`[^`]*`", "")
          local targets = {}
          for target in plain:gmatch("%]%(([^%s%)]+)[^%)]*%)") do targets[#targets + 1] = target end
          local ref = plain:match("^%s*%[[^%]]+%]:%s*(%S+)")
          if ref then targets[#targets + 1] = ref end
          for _, target in ipairs(targets) do
            local file, fragment = target:match("^([^#]*)#?(.*)$")
            if not target:find("^%a[%w+.-]*:") then
              local path = file == "" and page or (dir .. "/" .. file)
              local f = io.open(path, "rb")
              if not f then
                broken[#broken + 1] = page .. ": " .. target
              else
                f:close()
                -- A heading of a Markdown file: the fragment must name one.
                if fragment ~= "" and path:find("%.md$") and not anchors(path)[fragment] then
                  broken[#broken + 1] = page .. ": " .. target .. " (no such heading)"
                end
              end
            end
          end
        end
      end
      assert.are.same({}, broken)
    end)

    it("finds links at all (the scan is not blind)", function()
      local prose = markdown("README.md")
      assert.is_truthy(table.concat(prose, "\n"):find("%]%(docs/cli%.md%)"))
    end)
  end)

  describe("commands the guides show", function()
    for _, page in ipairs { "docs/rucio.md", "docs/policy.md", "docs/haproxy.md" } do
      it(page .. ": every tokenpolicy command in a ```sh block exists, with options it has", function()
        local p = parser()
        local known = {}
        for _, command in ipairs(p.commands) do known[command] = true end
        local _, blocks = markdown(page)
        local shown = 0
        for _, block in ipairs(blocks) do
          if block.lang == "sh" then
            for _, line in ipairs(block.lines) do
              -- A prompt and variable assignments (TZ=UTC) come before the command.
              local command_line = line:gsub("^%s*%$ ", "")
              repeat
                local before = command_line
                command_line = command_line:gsub("^[%a_][%w_]*=%S*%s+", "")
              until command_line == before
              local command, rest = command_line:match("^tokenpolicy ([^%s]+)(.*)")
              if not command then command, rest = command_line:match("%$%(tokenpolicy ([^%s%)]+)(.*)") end
              if command then
                shown = shown + 1
                assert.is_true(known[command] or false, ("%s: unknown command in: %s"):format(page, line))
                local has = {}
                for _, opt in ipairs(p.options[command]) do has[opt] = true end
                for opt in rest:gmatch("%f[%-]%-%-[%w%-]+") do
                  assert.is_true(has[opt] or false, ("%s: %s has no option %s: %s"):format(page, command, opt, line))
                end
              end
            end
          end
        end
        if page == "docs/rucio.md" then
          assert.is_true(shown >= 5, page .. " shows the commands")
        end
      end)
    end
  end)
end)
