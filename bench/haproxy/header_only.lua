--- `make bench-haproxy`, configuration (f): the ceiling of any Lua gateway.
--
-- An HAProxy action that reads the Authorization header and sets the
-- variables the tokenpolicy action sets, without verifying anything: what
-- HAProxy charges for running a Lua action per request (a coroutine, the
-- txn object, one header fetch, six set_var).  No verifier written in Lua
-- or called from Lua can go faster than this.
--
-- Usage, from a `lua-load` file:
--   require("header_only").register{ name = "header-only" }
local M = {}

--- Registers the HAProxy action `opts.name`.
-- @tparam table opts `name`
function M.register(opts)
  core.register_action(opts.name, { "http-req" }, function(txn)
    local authorization = txn.sf:req_hdr("authorization")
    if authorization then
      txn:set_var("txn.tp.ok", 1)
      txn:set_var("txn.tp.code", "")
      txn:set_var("txn.tp.sub", "user")
      txn:set_var("txn.tp.scope", "read write")
      txn:set_var("txn.tp.exp", 2000000000)
      txn:set_var("txn.tp.jti", "jti")
    else
      txn:set_var("txn.tp.ok", 0)
      txn:set_var("txn.tp.code", "no_token")
    end
  end, 0)
end

return M
