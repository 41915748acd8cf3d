/* Lifetime policy: durations, the Arvados token lifetime rules, and the
 * evaluation of tokens and token records against them. */
#include "tp.h"

void tp_open_policy(lua_State *L)
{
    (void)L;
}
