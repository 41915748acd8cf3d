/* Lua 5.3 / 5.4 differences, kept in one place. */
#ifndef TP_COMPAT_H
#define TP_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 503
#error "tokenpolicy needs Lua 5.3 or 5.4"
#endif

#if LUA_VERSION_NUM >= 504
/* Every tokenpolicy userdata carries exactly one user value. */
#define tp_newuserdata(L, size) lua_newuserdatauv((L), (size), 1)
#define tp_getuservalue(L, idx) lua_getiuservalue((L), (idx), 1)
#define tp_setuservalue(L, idx) lua_setiuservalue((L), (idx), 1)
#else
#define tp_newuserdata(L, size) lua_newuserdata((L), (size))
#define tp_getuservalue(L, idx) lua_getuservalue((L), (idx))
#define tp_setuservalue(L, idx) lua_setuservalue((L), (idx))
#endif

#if LUA_VERSION_NUM >= 504
/* A work object (descriptors, locks) marked to-be-closed is released the
 * moment an error unwinds the call, not at the next collection.  Lua 5.3
 * has no such slots: there its __gc is the only safety net, and every
 * normal path releases the object itself. */
#define tp_toclose(L, idx) lua_toclose((L), (idx))
#else
#define tp_toclose(L, idx) ((void)(L), (void)(idx))
#endif

#if LUA_VERSION_NUM < 504
/* luaL_typeerror is public from 5.4 on. */
static inline int tp_typeerror(lua_State *L, int arg, const char *tname)
{
    return luaL_argerror(L, arg, lua_pushfstring(L, "%s expected, got %s", tname, luaL_typename(L, arg)));
}
#define luaL_typeerror tp_typeerror
#endif

#endif
