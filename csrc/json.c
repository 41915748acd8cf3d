/* JSON <-> Lua on jansson, the JSON null sentinel, json_encode and
 * json_decode for Lua code, and the resource box. */
#include <math.h>
#include <string.h>
#include "tp.h"

/* tokenpolicy.null is the NULL light userdata: unique, cheap to compare,
 * and the same value in every Lua state. */
void tp_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, NULL);
}

int tp_is_null(lua_State *L, int idx)
{
    return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == NULL;
}

/* Strict parsing: duplicate member names are refused (two readers could
 * otherwise see different claims), strings must be valid UTF-8 without
 * NUL, and any top-level value is accepted so callers can say precisely
 * what they expected. */
json_t *tp_json_parse(const char *text, size_t len, json_error_t *err)
{
    return json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, err);
}

static int push_value(lua_State *L, json_t *v, int depth)
{
    if (depth > TP_JSON_MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *member;
        luaL_checkstack(L, 3, "JSON nesting");
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_foreach(v, key, member) {
            if (push_value(L, member, depth + 1) < 0) {
                lua_pop(L, 1);
                return -1;
            }
            lua_setfield(L, -2, key);
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        luaL_checkstack(L, 3, "JSON nesting");
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            if (push_value(L, json_array_get(v, i), depth + 1) < 0) {
                lua_pop(L, 1);
                return -1;
            }
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 0;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        return 0;
    case JSON_REAL:
        lua_pushnumber(L, (lua_Number)json_real_value(v));
        return 0;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        return 0;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        return 0;
    case JSON_NULL:
    default:
        tp_push_null(L);
        return 0;
    }
}

int tp_json_push(lua_State *L, json_t *v)
{
    return push_value(L, v, 1);
}

/* A table is a JSON array when its keys are exactly 1..n with n > 0;
 * any other table is an object and must have only string keys.  The
 * empty table is an empty object. */
static int table_array_length(lua_State *L, int idx, size_t *n)
{
    size_t count = 0;
    lua_Integer max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > max) max = k;
            count++;
        } else {
            lua_pop(L, 1);
            return 0;
        }
    }
    *n = count;
    return count > 0 && (lua_Integer)count == max;
}

static json_t *from_lua(lua_State *L, int idx, int depth, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    if (depth > TP_JSON_MAX_DEPTH) {
        snprintf(err, errlen, "nested deeper than %d levels (or a cycle)", TP_JSON_MAX_DEPTH);
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        snprintf(err, errlen, "nil cannot be encoded (use tokenpolicy.null)");
        return NULL;
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        if (!isfinite(lua_tonumber(L, idx))) {
            snprintf(err, errlen, "NaN and infinity cannot be encoded");
            return NULL;
        }
        return json_real((double)lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *str = json_stringn(s, len);
        if (!str)
            snprintf(err, errlen, "strings must be valid UTF-8 without NUL bytes");
        return str;
    }
    case LUA_TLIGHTUSERDATA:
        if (tp_is_null(L, idx))
            return json_null();
        break;
    case LUA_TTABLE: {
        size_t n = 0;
        json_t *out;
        luaL_checkstack(L, 4, "JSON nesting");
        if (table_array_length(L, idx, &n)) {
            out = json_array();
            for (size_t i = 1; out && i <= n; i++) {
                lua_rawgeti(L, idx, (lua_Integer)i);
                json_t *item = from_lua(L, -1, depth + 1, err, errlen);
                lua_pop(L, 1);
                if (!item || json_array_append_new(out, item) != 0) {
                    json_decref(out);
                    return NULL;
                }
            }
            return out;
        }
        out = json_object();
        lua_pushnil(L);
        while (out && lua_next(L, idx)) {
            size_t klen;
            const char *key;
            json_t *item;
            if (lua_type(L, -2) != LUA_TSTRING) {
                lua_pop(L, 2);
                json_decref(out);
                snprintf(err, errlen, "object keys must be strings");
                return NULL;
            }
            key = lua_tolstring(L, -2, &klen);
            item = from_lua(L, -1, depth + 1, err, errlen);
            lua_pop(L, 1);
            if (!item) {
                lua_pop(L, 1);
                json_decref(out);
                return NULL;
            }
            if (strlen(key) != klen || json_object_set_new(out, key, item) != 0) {
                lua_pop(L, 1);
                json_decref(out);
                snprintf(err, errlen, "object keys must be valid UTF-8 without NUL bytes");
                return NULL;
            }
        }
        return out;
    }
    default:
        break;
    }
    snprintf(err, errlen, "%s values cannot be encoded", luaL_typename(L, idx));
    return NULL;
}

json_t *tp_json_from_lua(lua_State *L, int idx, char *err, size_t errlen)
{
    return from_lua(L, idx, 1, err, errlen);
}

/* ---- resource box ------------------------------------------------------- */

void tp_box_clear(tp_box *box)
{
    for (size_t i = 0; i < sizeof box->json / sizeof box->json[0]; i++) {
        json_decref(box->json[i]);
        box->json[i] = NULL;
    }
    if (box->jws) {
        cjose_jws_release(box->jws);
        box->jws = NULL;
    }
    if (box->bytes) {
        cjose_get_dealloc()(box->bytes);
        box->bytes = NULL;
    }
}

static int tp_box__gc(lua_State *L)
{
    tp_box_clear((tp_box *)luaL_checkudata(L, 1, TP_BOX_CLASS));
    return 0;
}

tp_box *tp_box_new(lua_State *L)
{
    tp_box *box = (tp_box *)tp_newuserdata(L, sizeof *box);
    memset(box, 0, sizeof *box);
    luaL_setmetatable(L, TP_BOX_CLASS);
    return box;
}

/* ---- Lua functions ------------------------------------------------------ */

/***
 * Encodes a Lua value as compact JSON.  Tables with keys 1..n are arrays,
 * other tables objects (string keys only); `tokenpolicy.null` is null.
 * @function json_encode
 * @param value
 * @treturn string JSON text
 * @raise when the value cannot be represented (functions, NaN, cycles)
 */
static int tp_json_encode(lua_State *L)
{
    char err[128];
    json_t *v;
    char *text;
    luaL_checkany(L, 1);
    v = tp_json_from_lua(L, 1, err, sizeof err);
    if (!v)
        return luaL_argerror(L, 1, err);
    text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    json_decref(v);
    if (!text)
        return luaL_error(L, "json_encode: out of memory");
    lua_pushstring(L, text);
    free(text);
    return 1;
}

/***
 * Decodes JSON text strictly (valid UTF-8, no duplicate member names,
 * nesting at most 64 levels).  Integers stay Lua integers; null is
 * `tokenpolicy.null`.
 * @function json_decode
 * @tparam string text
 * @return the value, or the fail triple with code `malformed`
 */
static int tp_json_decode(lua_State *L)
{
    size_t len;
    const char *text = tp_check_string(L, 1, &len);
    json_error_t jerr;
    tp_box *box = tp_box_new(L);
    box->json[0] = tp_json_parse(text, len, &jerr);
    if (!box->json[0])
        return tp_fail(L, "malformed", "invalid JSON at line %d, column %d",
                       jerr.line, jerr.column);
    if (tp_json_push(L, box->json[0]) < 0)
        return tp_fail(L, "malformed", "JSON nested deeper than %d levels", TP_JSON_MAX_DEPTH);
    tp_box_clear(box);
    return 1;
}

void tp_open_json(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "json_encode", tp_json_encode },
        { "json_decode", tp_json_decode },
        { NULL, NULL }
    };
    if (luaL_newmetatable(L, TP_BOX_CLASS)) {
        lua_pushcfunction(L, tp_box__gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
    tp_push_null(L);
    lua_setfield(L, -2, "null");
}
