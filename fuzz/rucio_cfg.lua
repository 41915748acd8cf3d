-- The rucio.cfg reader: any text parses (tokenpolicy.ini) into a config
-- whose every method answers, or fails with `malformed`; read from a file
-- (ini.read, through the core's read_config) it answers the same; and
-- discover, told to read it as RUCIO_CONFIG, lists candidates (it never
-- fails for what it finds) that print without the text of the file.
local ini = require "tokenpolicy.ini"
local discovery = require "tokenpolicy.discovery"
local F = require "fuzzlib"

return function(data)
  local cfg = F.result("ini.parse", ini.parse(data, "rucio.cfg"))
  if cfg then
    F.tostring("tostring(config)", cfg)
    for _, section in ipairs(cfg:sections()) do
      for _, option in ipairs(F.result("options", cfg:options(section)) or {}) do
        F.result("get", cfg:get(section, option))
        cfg:has(section, option)
      end
    end
    for _, key in ipairs { "account", "vo", "auth_type", "auth_token_file_path", "rucio_host" } do
      F.maybe("get", cfg:get("client", key))
    end
  end
  local path = F.write("rucio.cfg", data)
  local again = F.result("ini.read", ini.read(path))
  if (cfg == nil) ~= (again == nil) then F.finding("ini.read", "reading the file and parsing the text disagree") end
  local sandbox = F.sandbox()
  local list = discovery.discover { env = { RUCIO_CONFIG = path, TMPDIR = sandbox, LOGNAME = "fuzz",
    HOME = sandbox, XDG_RUNTIME_DIR = sandbox }, uid = 4242 }
  F.tostring("tostring(discover)", list)
  for _, c in ipairs(list) do F.tostring("candidate", c) end
  F.result("rucio_config", discovery.rucio_config { env = { RUCIO_CONFIG = path } })
end
