/* HTTP peers on libcurl: OpenID discovery, JWKS, RFC 7009 revocation, RFC 7662 introspection, Arvados token calls. */
#include "tp.h"

void tp_open_http(lua_State *L)
{
    (void)L;
}
