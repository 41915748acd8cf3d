/***
 * JWKS sources: a key set that verify takes in place of a KeySet, kept
 * current either by fetching a JWKS URI (with `fetch_keys`, given to this
 * file at registration) or by a caller that fetched the JWKS itself and
 * feeds it with `:set_keys(text)` (HAProxy's non-blocking httpclient).
 *
 * This file holds no network code and includes no HTTP library: verify
 * depends on it, and verify does no I/O of its own.  A source reaches the
 * network only through the fetch function in its uservalue, and a source
 * made without a URI has none.  See docs/jwks.md.
 * @module tokenpolicy.core
 */
#include <string.h>
#include <time.h>
#include "tp.h"

#define JWKS_TTL 300
#define JWKS_MIN_REFETCH 60
#define JWKS_MAX_TIMEOUT 86400

/* The counters and times of a source.  Its uservalue table holds the rest:
 * url and fetch (only with a URI), http (the transport options passed to
 * fetch), now (the clock function option), set (the current KeySet), err
 * and code (the last failed fetch). */
typedef struct tp_jwks {
    lua_Integer ttl, min_refetch;
    lua_Integer fetched_at;     /* when the current set was fetched or set */
    lua_Integer attempt_at;     /* the last fetch, successful or not */
    lua_Integer refetch_at;     /* the last refetch (unknown kid or refresh) */
    lua_Integer fixed_now;      /* opts.now as an integer */
    lua_Integer fetches;        /* fetch attempts so far */
    lua_Integer feeds;          /* successful set_keys calls so far */
    int has_uri, has_set, failed, attempted, refetched, refetch, now_kind;
    int set_by_caller;          /* the current set came from set_keys */
} tp_jwks;

enum { JWKS_CLOCK, JWKS_FIXED, JWKS_FUNCTION };

static tp_jwks *check_jwks(lua_State *L, int idx)
{
    return (tp_jwks *)luaL_checkudata(L, idx, TP_JWKS_CLASS);
}

/* The source's time: the method's now argument at arg (when given), else
 * opts.now, else the clock. */
static lua_Integer jwks_now(lua_State *L, int idx, tp_jwks *s, int arg)
{
    lua_Integer now;
    int ok;
    if (arg > 0 && !lua_isnoneornil(L, arg)) {
        now = lua_tointegerx(L, arg, &ok);
        if (!ok || lua_type(L, arg) != LUA_TNUMBER) luaL_argerror(L, arg, "now must be an integer");
        return now;
    }
    if (s->now_kind == JWKS_FIXED) return s->fixed_now;
    if (s->now_kind == JWKS_CLOCK) return (lua_Integer)time(NULL);
    tp_getuservalue(L, idx);
    lua_getfield(L, -1, "now");
    lua_call(L, 0, 1);
    now = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "jwks: the now function must return an integer");
    lua_pop(L, 2);
    return now;
}

/* Makes the KeySet at the top of the stack (popped) the current set. */
static void jwks_store(lua_State *L, int idx, tp_jwks *s, lua_Integer now)
{
    tp_getuservalue(L, idx);
    lua_insert(L, -2);
    lua_setfield(L, -2, "set");
    lua_pop(L, 1);
    s->has_set = 1;
    s->failed = 0;
    s->fetched_at = now;
}

/* Fetches the set (only for a source with a URI).  On success stores it,
 * pushes it and returns 1; on a failure records it and returns 0 with the
 * stack unchanged. */
static int jwks_fetch(lua_State *L, int idx, tp_jwks *s, lua_Integer now)
{
    int top, uv;
    idx = lua_absindex(L, idx);
    top = lua_gettop(L);
    tp_getuservalue(L, idx);
    uv = lua_gettop(L);
    lua_getfield(L, uv, "fetch");
    lua_getfield(L, uv, "url");
    lua_getfield(L, uv, "http");
    /* four results: the set, or nil, message, code and (for `unavailable`)
     * the Retry-After seconds, which a failed refresh passes on */
    lua_call(L, 2, 4);
    s->fetches++;
    s->attempt_at = now;
    s->attempted = 1;
    if (luaL_testudata(L, uv + 1, TP_KEYSET_CLASS)) {
        lua_settop(L, uv + 1);
        lua_pushvalue(L, -1);
        jwks_store(L, idx, s, now);
        s->set_by_caller = 0;
        lua_remove(L, uv);
        return 1;
    }
    lua_setfield(L, uv, "retry_after");
    lua_setfield(L, uv, "code");
    lua_setfield(L, uv, "err");
    s->failed = 1;
    lua_settop(L, top);
    return 0;
}

/* Pushes the fail triple of the last failed fetch, and the Retry-After
 * seconds as a fourth value when the provider gave them. */
static int jwks_push_failure(lua_State *L, int idx)
{
    tp_getuservalue(L, idx);
    lua_pushnil(L);
    lua_getfield(L, -2, "err");
    lua_getfield(L, -3, "code");
    if (lua_getfield(L, -4, "retry_after") == LUA_TNIL) {
        lua_pop(L, 1);
        lua_remove(L, -4);
        return 3;
    }
    lua_remove(L, -5);
    return 4;
}

/* Pushes the current set and returns 1, or pushes the fail triple of the
 * last failure (or of there being no set yet) and returns 3. */
static int jwks_push_current(lua_State *L, int idx, tp_jwks *s)
{
    if (s->has_set) {
        tp_getuservalue(L, idx);
        lua_getfield(L, -1, "set");
        lua_remove(L, -2);
        return 1;
    }
    if (!s->has_uri) return tp_fail(L, "unavailable", "jwks: no key set has been given yet (set_keys)");
    if (!s->attempted) return tp_fail(L, "unavailable", "jwks: no key set has been fetched yet");
    return jwks_push_failure(L, idx);
}

/* The set for use at now: fetched when missing or older than the TTL (and
 * fetching is allowed; after a failure, no sooner than min_refetch).  A
 * source without a URI never fetches: it serves what it was given. */
static int jwks_current(lua_State *L, int idx, tp_jwks *s, lua_Integer now, int may_fetch, int *fetched)
{
    int stale = !s->has_set || tp_sub_sat(now, s->fetched_at) >= s->ttl;
    *fetched = 0;
    if (stale && may_fetch && s->has_uri && (!s->failed || tp_sub_sat(now, s->attempt_at) >= s->min_refetch)) {
        if (jwks_fetch(L, idx, s, now)) {
            *fetched = 1;
            return 1;
        }
    }
    return jwks_push_current(L, idx, s);
}

static int refetch_allowed(const tp_jwks *s, lua_Integer now)
{
    return !s->refetched || tp_sub_sat(now, s->refetch_at) >= s->min_refetch;
}

void tp_check_jwks(lua_State *L, int idx)
{
    if (!luaL_testudata(L, idx, TP_JWKS_CLASS))
        luaL_argerror(L, idx, lua_pushfstring(L, "%s or %s expected, got %s", TP_KEYSET_CLASS, TP_JWKS_CLASS,
                                              luaL_typename(L, idx)));
}

int tp_jwks_keys(lua_State *L, int idx, int *fetched)
{
    tp_jwks *s = check_jwks(L, idx);
    return jwks_current(L, idx, s, jwks_now(L, idx, s, 0), s->refetch, fetched);
}

int tp_jwks_refetch(lua_State *L, int idx)
{
    tp_jwks *s = check_jwks(L, idx);
    lua_Integer now;
    if (!s->refetch) return 0;  /* always the case without a URI */
    now = jwks_now(L, idx, s, 0);
    if (!refetch_allowed(s, now)) return 0;
    s->refetch_at = now;
    s->refetched = 1;
    return jwks_fetch(L, idx, s, now);
}

/* The transport options are only passed on to fetch_keys, which reads
 * them again; they are checked here too so that a mistake raises when the
 * source is made, not in the middle of a verify. */
static void check_transport(lua_State *L, int arg)
{
    int t = lua_getfield(L, arg, "timeout");
    if (t != LUA_TNIL) {
        lua_Number v = lua_tonumber(L, -1);
        if (t != LUA_TNUMBER || !(v > 0 && v <= JWKS_MAX_TIMEOUT))
            luaL_argerror(L, arg, "timeout must be a number of seconds in (0, 86400]");
    }
    lua_pop(L, 1);
    tp_opt_string(L, arg, "ca_file", NULL, NULL);
    tp_opt_boolean(L, arg, "insecure", 0);
}

/***
 * A JWKS source: a key set for `verify` that stays current.
 *
 * `jwks(jwks_uri [, opts])`: the set is fetched from the URI (with
 * `fetch_keys`) when first needed, kept for `ttl` seconds, and refetched at
 * most once per `min_refetch` seconds when `verify` meets an unknown kid.
 *
 * `jwks(opts)` (an options table alone): a source with no URI, fed only by
 * `:set_keys(text)`; it never touches the network.
 *
 * Making a source does no I/O.  See docs/jwks.md.
 * @function jwks
 * @tparam[opt] string jwks_uri
 * @tparam[opt] table opts `ttl` (default 300), `now` (an integer or a
 *   function returning one), `refetch` (default true with a URI, false
 *   without one; false: verify never fetches); with a URI also
 *   `min_refetch` (default 60), `timeout`, `ca_file`, `insecure`
 * @treturn JwksSource
 */
static int tp_jwks_new(lua_State *L)
{
    static const char *const options[] = { "ttl", "min_refetch", "refetch", "now", "timeout", "ca_file",
                                           "insecure", NULL };
    static const char *const fed_options[] = { "ttl", "refetch", "now", NULL };
    tp_jwks *s;
    int arg, has_uri, has_opts, t;
    if (lua_type(L, 1) == LUA_TTABLE && lua_isnoneornil(L, 2)) {
        arg = 1;
        has_uri = 0;
        has_opts = tp_opts(L, arg, fed_options);
    } else if (lua_type(L, 1) == LUA_TSTRING) {
        arg = 2;
        has_uri = 1;
        has_opts = tp_opts(L, arg, options);
        if (lua_isnil(L, lua_upvalueindex(1)))
            return luaL_argerror(L, 1, "this build cannot fetch: make the source with jwks(opts) and set_keys");
    } else {
        return luaL_typeerror(L, 1, "string or table");
    }
    lua_settop(L, 2);
    s = (tp_jwks *)tp_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->has_uri = has_uri;
    s->ttl = tp_opt_integer(L, arg, "ttl", JWKS_TTL, 0);
    s->min_refetch = tp_opt_integer(L, arg, "min_refetch", JWKS_MIN_REFETCH, 0);
    s->refetch = tp_opt_boolean(L, arg, "refetch", has_uri);
    if (s->refetch && !has_uri)
        return luaL_argerror(L, arg, "refetch needs a jwks_uri (a source without one is fed with set_keys)");
    lua_createtable(L, 0, 8);
    t = has_opts ? lua_getfield(L, arg, "now") : LUA_TNIL;
    if (t == LUA_TFUNCTION) {
        s->now_kind = JWKS_FUNCTION;
        lua_setfield(L, -2, "now");
    } else if (t != LUA_TNIL) {
        int ok;
        s->fixed_now = lua_tointegerx(L, -1, &ok);
        if (!ok || t != LUA_TNUMBER) return luaL_argerror(L, arg, "now must be an integer or a function");
        s->now_kind = JWKS_FIXED;
        lua_pop(L, 1);
    } else if (has_opts) {
        lua_pop(L, 1);
    }
    if (has_uri) {
        static const char *const http_options[] = { "timeout", "ca_file", "insecure", NULL };
        if (has_opts) check_transport(L, arg);
        lua_createtable(L, 0, 3);
        for (int i = 0; has_opts && http_options[i]; i++) {
            lua_getfield(L, arg, http_options[i]);
            lua_setfield(L, -2, http_options[i]);
        }
        lua_setfield(L, -2, "http");
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "url");
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_setfield(L, -2, "fetch");
    }
    tp_setuservalue(L, -2);
    luaL_setmetatable(L, TP_JWKS_CLASS);
    return 1;
}

/***
 * Replaces the key set with one the caller fetched itself (HAProxy's
 * `core.httpclient`, a file): `text` is imported with `keys`.  Only a
 * successful import replaces the current set; then the TTL starts again
 * at `now`.  No I/O.
 * @function JwksSource:set_keys
 * @tparam string text a JWK Set (or anything `keys` takes as text)
 * @tparam[opt] integer now
 * @treturn KeySet the new set, or the fail triple of `keys` (the old set
 *   stays in use)
 */
static int tp_jwks_set_keys_method(lua_State *L)
{
    tp_jwks *s = check_jwks(L, 1);
    lua_Integer now;
    tp_check_string(L, 2, NULL);
    lua_settop(L, 3);
    now = jwks_now(L, 1, s, 3);
    lua_pushvalue(L, lua_upvalueindex(1));  /* keys */
    lua_pushvalue(L, 2);
    lua_call(L, 1, 3);
    if (!luaL_testudata(L, 4, TP_KEYSET_CLASS)) return 3;  /* the fail triple of keys */
    lua_settop(L, 4);
    lua_pushvalue(L, 4);
    jwks_store(L, 1, s, now);
    s->set_by_caller = 1;
    s->feeds++;
    return 1;
}

/***
 * The current key set: fetched when there is none yet or it is older than
 * the TTL (only a source with a URI fetches).  When that fetch fails the
 * old set is served; the fail triple comes back only when there is no set
 * at all.
 * @function JwksSource:keys
 * @tparam[opt] integer now
 * @treturn KeySet, or the fail triple
 */
static int tp_jwks_keys_method(lua_State *L)
{
    tp_jwks *s = check_jwks(L, 1);
    int fetched;
    lua_settop(L, 2);
    return jwks_current(L, 1, s, jwks_now(L, 1, s, 2), 1, &fetched);
}

/***
 * Fetches the key set now, unless a refetch happened less than
 * `min_refetch` seconds ago (then the current set comes back, with false);
 * `opts.force` skips that limit.  Raises for a source without a URI.
 * @function JwksSource:refresh
 * @tparam[opt] integer now
 * @tparam[opt] table opts `force`
 * @treturn KeySet
 * @treturn boolean whether it was fetched
 * @return or the fail triple
 */
static int tp_jwks_refresh_method(lua_State *L)
{
    static const char *const options[] = { "force", NULL };
    tp_jwks *s = check_jwks(L, 1);
    lua_Integer now;
    int force;
    if (lua_type(L, 2) == LUA_TTABLE && lua_isnoneornil(L, 3)) {  /* refresh(opts) */
        lua_settop(L, 2);
        lua_pushnil(L);
        lua_insert(L, 2);
    }
    lua_settop(L, 3);
    tp_opts(L, 3, options);
    force = tp_opt_boolean(L, 3, "force", 0);
    if (!s->has_uri) return luaL_argerror(L, 1, "the source has no jwks_uri: feed it with set_keys");
    now = jwks_now(L, 1, s, 2);
    if (!force && !refetch_allowed(s, now)) {
        if (jwks_push_current(L, 1, s) != 1) return 3;
        lua_pushboolean(L, 0);
        return 2;
    }
    s->refetch_at = now;
    s->refetched = 1;
    if (!jwks_fetch(L, 1, s, now)) return jwks_push_failure(L, 1);
    lua_pushboolean(L, 1);
    return 2;
}

/* Pushes url without its query or fragment, at most 200 printable bytes. */
static void push_shown_url(lua_State *L, const char *url)
{
    char shown[204];
    size_t full = strcspn(url, "?#"), n = full > 200 ? 200 : full;
    /* cppcheck-suppress knownConditionTrueFalse ; cppcheck 2.10 applies one caller's zero length to every call */
    for (size_t i = 0; i < n; i++)
        shown[i] = ((unsigned char)url[i] < 0x20 || (unsigned char)url[i] >= 0x7f) ? '?' : url[i];
    memcpy(shown + n, n < full ? "..." : "", n < full ? 4 : 1);
    lua_pushstring(L, shown);
}

/* "tokenpolicy.JwksSource: http://host:port/path, 2 keys, fetched 30s ago"
 * or, for a fed source, "tokenpolicy.JwksSource: fed with set_keys, ...". */
static int tp_jwks__tostring(lua_State *L)
{
    tp_jwks *s = check_jwks(L, 1);
    char span[32];
    int pieces = 2;
    lua_Integer now = jwks_now(L, 1, s, 0);
    size_t count = 0;
    lua_settop(L, 1);
    tp_getuservalue(L, 1);
    if (s->has_set) {
        lua_getfield(L, 2, "set");
        count = ((tp_keyset *)lua_touserdata(L, -1))->count;
        lua_pop(L, 1);
    }
    luaL_checkstack(L, 8, "tostring");
    lua_pushliteral(L, "tokenpolicy.JwksSource: ");
    if (s->has_uri) {
        lua_getfield(L, 2, "url");
        push_shown_url(L, lua_tostring(L, -1));
        lua_remove(L, -2);
    } else {
        lua_pushliteral(L, "fed with set_keys");
    }
    if (s->has_set) {
        lua_Integer age = tp_sub_sat(now, s->fetched_at);
        lua_pushfstring(L, ", %d key%s, %s %s ago%s", (int)count, count == 1 ? "" : "s",
                        s->set_by_caller ? "set" : "fetched", tp_format_span(span, age < 0 ? 0 : age),
                        age >= s->ttl ? " (stale)" : "");
    } else {
        lua_pushliteral(L, ", no keys yet");
    }
    pieces++;
    if (s->failed) {
        lua_pushliteral(L, ", last fetch failed");
        pieces++;
    }
    if (!s->refetch && s->has_uri) {
        lua_pushliteral(L, ", refetch off");
        pieces++;
    }
    lua_concat(L, pieces);
    return 1;
}

#define TP_JWKS_STATS_CLASS "tokenpolicy.JwksStats"

/***
 * Counters for monitoring: `fetches` (attempts), `fed` (successful
 * `set_keys` calls), `fetched_at` (when the current set was fetched or
 * set, if there is one), `failed` (the last fetch failed).
 * @function JwksSource:stats
 * @treturn table
 */
static int tp_jwks_stats_method(lua_State *L)
{
    tp_jwks *s = check_jwks(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, s->fetches);
    lua_setfield(L, -2, "fetches");
    lua_pushinteger(L, s->feeds);
    lua_setfield(L, -2, "fed");
    if (s->has_set) {
        lua_pushinteger(L, s->fetched_at);
        lua_setfield(L, -2, "fetched_at");
    }
    lua_pushboolean(L, s->failed);
    lua_setfield(L, -2, "failed");
    luaL_setmetatable(L, TP_JWKS_STATS_CLASS);
    return 1;
}

/* "tokenpolicy.JwksStats: fetches 2, fed 0, keys of 2026-11-23 14:52:54
 * UTC, failed false" ("no keys yet" before the first set). */
static int tp_jwks_stats__tostring(lua_State *L)
{
    char when[32];
    lua_Integer fetches, fed;
    int failed;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "fetches");
    lua_getfield(L, 1, "fed");
    lua_getfield(L, 1, "failed");
    fetches = lua_tointeger(L, -3);
    fed = lua_tointeger(L, -2);
    failed = lua_toboolean(L, -1);
    if (lua_getfield(L, 1, "fetched_at") == LUA_TNUMBER)
        lua_pushfstring(L, "keys of %s", tp_format_utc(when, lua_tointeger(L, -1)));
    else
        lua_pushliteral(L, "no keys yet");
    lua_pushfstring(L, "%s: fetches %I, fed %I, %s, failed %s", TP_JWKS_STATS_CLASS, fetches, fed,
                    lua_tostring(L, -1), failed ? "true" : "false");
    return 1;
}

void tp_open_jwks(lua_State *L)
{
    static const luaL_Reg meta[] = {
        { "__tostring", tp_jwks__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg methods[] = {
        { "keys", tp_jwks_keys_method },
        { "refresh", tp_jwks_refresh_method },
        { "set_keys", tp_jwks_set_keys_method },
        { "stats", tp_jwks_stats_method },
        { NULL, NULL }
    };
    /* set_keys imports through the Lua-visible keys (registered by keys.c
     * before this), so this file needs no C entry point into keys.c. */
    lua_getfield(L, -1, "keys");
    tp_register_class(L, TP_JWKS_CLASS, meta, methods, 1);
    {
        static const luaL_Reg stats_meta[] = { { "__tostring", tp_jwks_stats__tostring }, { NULL, NULL } };
        tp_register_class(L, TP_JWKS_STATS_CLASS, stats_meta, NULL, 0);
    }
    /* Fetching is given, not linked: the fetch function (fetch_keys from
     * http.c, registered before this) becomes an upvalue of jwks and is
     * kept in each source that has a URI. */
    lua_getfield(L, -1, "fetch_keys");
    lua_pushcclosure(L, tp_jwks_new, 1);
    lua_setfield(L, -2, "jwks");
}
