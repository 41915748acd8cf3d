/***
 * The tokenpolicy C core: `require "tokenpolicy.core"`.  Most programs load
 * it through the facade, `require "tokenpolicy"`, which returns these same
 * functions.
 * @module tokenpolicy.core
 */
#include "tp.h"

/***
 * Whether the thread's OpenSSL error queue holds an error.  A testing aid:
 * tokenpolicy clears the queue after every failed crypto call because an
 * embedding HAProxy shares it.
 * @function _openssl_error_pending
 * @treturn boolean
 */
#include <openssl/err.h>
static int tp_core_openssl_error_pending(lua_State *L)
{
    lua_pushboolean(L, ERR_peek_error() != 0);
    return 1;
}

/***
 * The version: `"tokenpolicy <version>"`.
 * @field _VERSION
 */
__attribute__((visibility("default"))) int luaopen_tokenpolicy_core(lua_State *L);

int luaopen_tokenpolicy_core(lua_State *L)
{
    lua_newtable(L);
    tp_open_util(L);
    tp_open_json(L);
    tp_open_keys(L);
    tp_open_jwt(L);
    tp_open_files(L);
    tp_open_policy(L);
    tp_open_denylist(L);
    tp_open_http(L);
    tp_open_jwks(L);
    tp_open_verifier(L);
    lua_pushcfunction(L, tp_core_openssl_error_pending);
    lua_setfield(L, -2, "_openssl_error_pending");
    lua_pushliteral(L, "tokenpolicy " TP_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
