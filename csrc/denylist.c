/* A persistent jti denylist: a file of "jti exp" lines shared by processes. */
#include "tp.h"

void tp_open_denylist(lua_State *L)
{
    (void)L;
}
