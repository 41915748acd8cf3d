/***
 * The prepared verifier: `tp.verifier{...}` reads verify's options once
 * (as lua-cjson keeps its configuration in a userdata) and `v:check(token)`
 * runs the same checks as `tp.verify`, then a lifetime policy's verdict
 * and a denylist lookup of the `jti`.  It is the gateway's hot path.
 * See docs/api.md (Verifier).
 * @module tokenpolicy.core
 */
#include <string.h>
#include <time.h>
#include "tp.h"

#define TP_VERIFIER_CLASS "tokenpolicy.Verifier"

/* Slots of a verifier's uservalue table: the Lua values it keeps. */
enum { UV_KEYS = 1, UV_ISS, UV_AUD, UV_REQUIRE, UV_POLICY, UV_DENYLIST, UV_SLOTS = UV_DENYLIST };

typedef struct tp_verifier {
    tp_verify_opts o;       /* iss, aud, require: nonzero when checked */
    int has_policy, has_denylist, source;
    lua_Integer cache_size;
    lua_Integer hits, misses, evictions, entries;
} tp_verifier;

static tp_verifier *check_verifier(lua_State *L, int idx)
{
    return (tp_verifier *)luaL_checkudata(L, idx, TP_VERIFIER_CLASS);
}

/* ---- check -------------------------------------------------------------- */

/* The fail message of each policy verdict state that is not "valid". */
static const struct { const char *state, *message; } verdict_messages[] = {
    { "expired", "the policy ends the token's validity (past its expiry or its login session)" },
    { "not_yet_valid", "the token is not yet valid" },
    { "idle", "the token has been idle too long" },
    { "exceeds_max_lifetime", "the token's lifetime exceeds the policy's maximum" },
    { "no_expiry", "the token has no expiry and the policy sets a maximum lifetime" },
    { NULL, NULL }
};

/* The fail triple for a policy verdict state other than "valid". */
static int fail_verdict(lua_State *L, const char *state)
{
    for (int i = 0; verdict_messages[i].state; i++)
        if (strcmp(verdict_messages[i].state, state) == 0)
            return tp_fail(L, verdict_messages[i].state, "%s", verdict_messages[i].message);
    return tp_fail(L, "policy_violation", "the policy's verdict is %s", state);
}

/* The optional time argument at idx: an integer (or an integral float),
 * else the clock. */
static lua_Integer arg_now(lua_State *L, int idx)
{
    lua_Integer now;
    int ok;
    if (lua_isnoneornil(L, idx)) return (lua_Integer)time(NULL);
    now = lua_tointegerx(L, idx, &ok);
    if (!ok || lua_type(L, idx) != LUA_TNUMBER) luaL_argerror(L, idx, "now must be an integer (epoch seconds)");
    return now;
}

/* The policy's verdict on the claims table at cl (through Policy:evaluate,
 * which reads claims as it always does).  Returns 0 when valid, else 3
 * with the fail triple pushed. */
static int judge_table(lua_State *L, int uv, int cl, lua_Integer now)
{
    const char *state;
    lua_rawgeti(L, uv, UV_POLICY);
    luaL_getmetafield(L, -1, "__index");
    lua_getfield(L, -1, "evaluate");
    lua_insert(L, -3);
    lua_pop(L, 1);          /* evaluate, policy */
    lua_pushvalue(L, cl);
    lua_pushinteger(L, now);
    lua_call(L, 3, 3);
    if (lua_isnil(L, -3)) return 3;  /* evaluate's fail triple (malformed) */
    lua_pop(L, 2);
    lua_getfield(L, -1, "state");
    state = lua_tostring(L, -1);
    if (strcmp(state, "valid") != 0) return fail_verdict(L, state);
    lua_pop(L, 2);
    return 0;
}

/***
 * Verifies a token with the verifier's keys and options: the same checks,
 * codes and messages as `tp.verify(token, keys, opts)`, then the policy's
 * verdict (its state as the code when it is not "valid") and the denylist
 * (`revoked`).  Never does I/O of its own (see docs/api.md for a
 * JwksSource with a URI).
 * @function Verifier:check
 * @tparam string token
 * @tparam[opt] integer now default the clock
 * @treturn ClaimsView claims
 * @treturn ClaimsView header
 * @return or the fail triple
 */
static int tp_verifier_check(lua_State *L)
{
    tp_verifier *v = check_verifier(L, 1);
    size_t len;
    const char *token = tp_check_string(L, 2, &len);
    tp_verify_opts o = v->o;
    int uv, keys, meta, cl;
    o.now = arg_now(L, 3);
    lua_settop(L, 3);
    tp_getuservalue(L, 1);
    uv = lua_gettop(L);
    if (o.iss) { lua_rawgeti(L, uv, UV_ISS); o.iss = lua_gettop(L); }
    if (o.aud) { lua_rawgeti(L, uv, UV_AUD); o.aud = lua_gettop(L); }
    if (o.require) { lua_rawgeti(L, uv, UV_REQUIRE); o.require = lua_gettop(L); }
    lua_rawgeti(L, uv, UV_KEYS);
    keys = lua_gettop(L);
    luaL_getmetatable(L, "tokenpolicy.Claims");
    meta = lua_gettop(L);
    if (tp_jwt_verify_token(L, token, len, keys, &o, meta) != 2) return 3;
    cl = lua_gettop(L) - 1;
    if (v->has_policy && judge_table(L, uv, cl, o.now)) return 3;
    if (v->has_denylist && lua_getfield(L, cl, "jti") == LUA_TSTRING) {
        size_t jlen;
        const char *jti = lua_tolstring(L, -1, &jlen);
        lua_rawgeti(L, uv, UV_DENYLIST);
        if (tp_denylist_denied(L, -1, jti, jlen, o.now))
            return tp_fail(L, "revoked", "the token's jti is on the denylist");
        lua_pop(L, 1);
    }
    lua_settop(L, cl + 1);
    return 2;
}

/***
 * The cache's counters.
 * @function Verifier:stats
 * @treturn table `hits`, `misses`, `entries`, `evictions`
 */
static int tp_verifier_stats(lua_State *L)
{
    tp_verifier *v = check_verifier(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, v->hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, v->misses);
    lua_setfield(L, -2, "misses");
    lua_pushinteger(L, v->entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, v->evictions);
    lua_setfield(L, -2, "evictions");
    return 1;
}

/***
 * Empties the cache (the counters stay).
 * @function Verifier:flush
 */
static int tp_verifier_flush(lua_State *L)
{
    tp_verifier *v = check_verifier(L, 1);
    v->entries = 0;
    return 0;
}

static int tp_verifier__tostring(lua_State *L)
{
    tp_verifier *v = check_verifier(L, 1);
    lua_pushfstring(L, "tokenpolicy.Verifier (%s%s%s, cache %I)", v->source ? "JwksSource" : "KeySet",
                    v->has_policy ? ", policy" : "", v->has_denylist ? ", denylist" : "", v->cache_size);
    return 1;
}

/* ---- construction ------------------------------------------------------- */

/* Stores the value at -1 (popped) in slot of the uservalue table at uv. */
static void keep(lua_State *L, int uv, int slot)
{
    lua_rawseti(L, uv, slot);
}

/***
 * A prepared verifier.  The options are verify's (`algs`, `iss`, `aud`,
 * `typ`, `leeway`, `require`, `require_exp`, `max_size`: same meanings,
 * defaults and errors) and: `keys` (a KeySet or a JwksSource; required),
 * `policy` (a Policy: its verdict on the claims must be "valid"),
 * `denylist` (a Denylist: a listed `jti` fails with `revoked`), `cache`
 * (entries of the verified-token cache; default 0, off).
 * @function verifier
 * @tparam table opts
 * @treturn Verifier
 */
static int tp_verifier_new(lua_State *L)
{
    static const char *const options[] = {
        "keys", "algs", "iss", "aud", "typ", "leeway", "require", "require_exp", "max_size",
        "policy", "denylist", "cache", NULL
    };
    tp_verifier *v;
    int uv;
    luaL_checktype(L, 1, LUA_TTABLE);
    tp_opts(L, 1, options);
    lua_settop(L, 1);
    v = (tp_verifier *)tp_newuserdata(L, sizeof *v);   /* 2 */
    memset(v, 0, sizeof *v);
    luaL_setmetatable(L, TP_VERIFIER_CLASS);
    lua_createtable(L, UV_SLOTS, 0);                    /* 3 */
    uv = lua_gettop(L);

    lua_getfield(L, 1, "keys");
    if (!luaL_testudata(L, -1, TP_KEYSET_CLASS)) {
        if (!luaL_testudata(L, -1, TP_JWKS_CLASS))
            luaL_argerror(L, 1, lua_pushfstring(L, "keys must be a %s or a %s, got %s", TP_KEYSET_CLASS,
                                                TP_JWKS_CLASS, luaL_typename(L, -1)));
        v->source = 1;
    }
    keep(L, uv, UV_KEYS);

    tp_jwt_default_opts(&v->o);
    tp_jwt_read_opts(L, 1, &v->o);
    if (v->o.require) keep(L, uv, UV_REQUIRE);
    if (v->o.aud) keep(L, uv, UV_AUD);
    if (v->o.iss) keep(L, uv, UV_ISS);

    if (lua_getfield(L, 1, "policy") != LUA_TNIL) {
        if (!luaL_testudata(L, -1, TP_POLICY_CLASS))
            luaL_argerror(L, 1, lua_pushfstring(L, "policy must be a %s, got %s", TP_POLICY_CLASS,
                                                luaL_typename(L, -1)));
        v->has_policy = 1;
        keep(L, uv, UV_POLICY);
    } else {
        lua_pop(L, 1);
    }
    if (lua_getfield(L, 1, "denylist") != LUA_TNIL) {
        if (!luaL_testudata(L, -1, TP_DENYLIST_CLASS))
            luaL_argerror(L, 1, lua_pushfstring(L, "denylist must be a %s, got %s", TP_DENYLIST_CLASS,
                                                luaL_typename(L, -1)));
        v->has_denylist = 1;
        keep(L, uv, UV_DENYLIST);
    } else {
        lua_pop(L, 1);
    }
    v->cache_size = tp_opt_integer(L, 1, "cache", 0, 0);
    lua_settop(L, uv);
    tp_setuservalue(L, 2);
    return 1;
}

void tp_open_verifier(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "check", tp_verifier_check },
        { "stats", tp_verifier_stats },
        { "flush", tp_verifier_flush },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__tostring", tp_verifier__tostring },
        { NULL, NULL }
    };
    tp_register_class(L, TP_VERIFIER_CLASS, meta, methods, 0);
    lua_pushcfunction(L, tp_verifier_new);
    lua_setfield(L, -2, "verifier");
}
