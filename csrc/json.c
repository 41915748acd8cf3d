/***
 * JSON for Lua code (integers stay integers) and `tokenpolicy.null`.
 * @module tokenpolicy.core
 */
/* JSON <-> Lua on jansson, the JSON null sentinel, json_encode and
 * json_decode for Lua code, and the resource box. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>
#include "tp.h"

/* tokenpolicy.null is one empty full userdata per Lua state, kept in the
 * registry: unique and cheap to compare like a light userdata, but with a
 * metatable of its own, so that it prints as "tokenpolicy.null" in the REPL
 * (every light userdata shares one metatable, which a library must not
 * claim). */
static const char null_key = 'n';

void tp_push_null(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &null_key);
}

int tp_is_null(lua_State *L, int idx)
{
    int same;
    if (lua_type(L, idx) != LUA_TUSERDATA) return 0;
    idx = lua_absindex(L, idx);
    tp_push_null(L);
    same = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    return same;
}

static int tp_null__tostring(lua_State *L)
{
    lua_pushliteral(L, "tokenpolicy.null");
    return 1;
}

/* ---- parsing: yajl events straight into Lua values ---------------------
 *
 * Tokens are parsed on every decode and verify, so parsing builds Lua
 * tables directly from yajl's events instead of an intermediate tree.  The
 * rules are strict: valid UTF-8 (yajl checks it), no NUL in strings or
 * names (\u0000 would make C and Lua readers disagree), no duplicate member
 * names (two readers could see different claims), no comments, nothing
 * after the value, and nesting at most TP_JSON_MAX_DEPTH levels. */

typedef struct sax_state {
    lua_State *L;
    size_t text_len;
    int depth;
    int top_is_object;
    const char *why;    /* set when a callback stops the parse */
    struct { int is_array; lua_Integer count; } level[TP_JSON_MAX_DEPTH + 1];
} sax_state;

/* Stores the value on top of the stack into its container (the table
 * below it, and for objects the key between them). */
static int sax_store(sax_state *s)
{
    if (s->depth == 0) return 1;  /* the top-level value stays on the stack */
    if (s->level[s->depth].is_array)
        lua_rawseti(s->L, -2, ++s->level[s->depth].count);
    else
        lua_rawset(s->L, -3);
    return 1;
}

static int sax_null(void *ctx)
{
    sax_state *s = (sax_state *)ctx;
    tp_push_null(s->L);
    return sax_store(s);
}

static int sax_boolean(void *ctx, int value)
{
    sax_state *s = (sax_state *)ctx;
    lua_pushboolean(s->L, value);
    return sax_store(s);
}

/* Numbers arrive as text (yajl has checked the JSON syntax) and are
 * converted by Lua itself: integers that fit 64 bits become Lua integers,
 * everything else a float.  An integer beyond 64 bits, which Lua would
 * quietly turn into a float, and a float beyond double range are refused
 * rather than rounded. */
static int sax_number(void *ctx, const char *text, size_t len)
{
    sax_state *s = (sax_state *)ctx;
    char buf[64];
    int is_integer = 1;
    if (len >= sizeof buf) {
        s->why = "a number is too long";
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] = text[i];
        is_integer &= text[i] != '.' && text[i] != 'e' && text[i] != 'E';
    }
    buf[len] = '\0';
    if (lua_stringtonumber(s->L, buf) != len + 1) {
        s->why = "a number is out of range";
        return 0;
    }
    if (is_integer && !lua_isinteger(s->L, -1)) {
        lua_pop(s->L, 1);
        s->why = "an integer is out of the 64-bit range";
        return 0;
    }
    if (!is_integer && !isfinite((double)lua_tonumber(s->L, -1))) {
        lua_pop(s->L, 1);
        s->why = "a number is out of range";
        return 0;
    }
    return sax_store(s);
}

/* Strings must be well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) without NUL, which would make C and
 * Lua readers disagree; yajl itself only checks the byte pattern. */
static int utf8_valid_without_nul(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf;  /* range of the second byte */
        if (c < 0x80) {
            /* ASCII, the common case: eight bytes at a time while no byte
             * has its high bit set or is zero. */
            while (len - i >= 8) {
                uint64_t word;
                memcpy(&word, s + i, 8);
                if ((word & 0x8080808080808080ull) ||
                    ((word - 0x0101010101010101ull) & ~word & 0x8080808080808080ull))
                    break;
                i += 8;
            }
            if (i < len && s[i] < 0x80) {
                if (s[i] == 0) return 0;
                i++;
            }
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) n = 1;
        else if (c == 0xe0) { n = 2; lo = 0xa0; }
        else if (c == 0xed) { n = 2; hi = 0x9f; }   /* surrogates */
        else if (c >= 0xe1 && c <= 0xef) n = 2;
        else if (c == 0xf0) { n = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) n = 3;
        else if (c == 0xf4) { n = 3; hi = 0x8f; }   /* up to U+10FFFF */
        else return 0;
        if (len - i <= n) return 0;  /* truncated */
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80) return 0;
        i += n + 1;
    }
    return 1;
}

static int sax_string(void *ctx, const unsigned char *text, size_t len)
{
    sax_state *s = (sax_state *)ctx;
    if (!utf8_valid_without_nul(text, len)) {
        s->why = memchr(text, 0, len) ? "a string holds a NUL character" : "a string is not well-formed UTF-8";
        return 0;
    }
    lua_pushlstring(s->L, (const char *)text, len);
    return sax_store(s);
}

static int sax_key(void *ctx, const unsigned char *text, size_t len)
{
    sax_state *s = (sax_state *)ctx;
    if (!utf8_valid_without_nul(text, len)) {
        s->why = "a member name holds a NUL character or is not well-formed UTF-8";
        return 0;
    }
    lua_pushlstring(s->L, (const char *)text, len);
    lua_pushvalue(s->L, -1);
    if (lua_rawget(s->L, -3) != LUA_TNIL) {
        lua_pop(s->L, 2);
        s->why = "a member name appears twice";
        return 0;
    }
    lua_pop(s->L, 1);
    return 1;
}

static int sax_open(sax_state *s, int is_array)
{
    if (s->depth >= TP_JSON_MAX_DEPTH || !lua_checkstack(s->L, 4)) {
        s->why = "nested deeper than 64 levels";
        return 0;
    }
    /* Room up front for the members of the top-level object, guessed from
     * the text length (a token member takes some 40 bytes): growing
     * a table one rehash at a time costs more than a few spare slots. */
    int slots = 0;
    if (s->depth == 0 && !is_array)
        slots = s->text_len < 160 ? 4 : s->text_len > 1280 ? 32 : (int)(s->text_len / 40);
    lua_createtable(s->L, 0, slots);
    if (s->depth == 0) s->top_is_object = !is_array;
    s->depth++;
    s->level[s->depth].is_array = is_array;
    s->level[s->depth].count = 0;
    return 1;
}

static int sax_start_map(void *ctx) { return sax_open((sax_state *)ctx, 0); }
static int sax_start_array(void *ctx) { return sax_open((sax_state *)ctx, 1); }

static int sax_close(void *ctx)
{
    sax_state *s = (sax_state *)ctx;
    s->depth--;
    return sax_store(s);
}

static const yajl_callbacks sax_callbacks = {
    sax_null, sax_boolean, NULL, NULL, sax_number, sax_string,
    sax_start_map, sax_key, sax_close, sax_start_array, sax_close
};

/* The code of the \uXXXX escape at p, or -1. */
static long escape_code(const char *p, const char *end)
{
    long code = 0;
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return -1;
    for (int k = 2; k < 6; k++) {
        char h = p[k];
        int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 :
                h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (v < 0) return -1;
        code = code * 16 + v;
    }
    return code;
}

/* yajl turns an escaped lone surrogate (\ud800) into '?', which another
 * parser would read differently: such escapes are refused before parsing.
 * Returns 1 when every escaped surrogate is half of a proper pair. */
static int surrogate_escapes_paired(const char *text, size_t len)
{
    const char *end = text + len;
    const char *p = memchr(text, '\\', len);
    while (p) {
        long code = escape_code(p, end);
        if (code >= 0xdc00 && code <= 0xdfff) return 0;       /* a lone low half */
        if (code >= 0xd800 && code <= 0xdbff) {
            long low = escape_code(p + 6, end);
            if (low < 0xdc00 || low > 0xdfff) return 0;      /* a lone high half */
            p += 12;
        } else {
            p += 2;  /* any other escape: skip the escaped character */
        }
        p = p < end ? memchr(p, '\\', (size_t)(end - p)) : NULL;
    }
    return 1;
}

/* yajl's memory for one parse: a bump arena on the C stack, and blocks that
 * do not fit as Lua userdata anchored in a table at a fixed stack slot.
 * Nothing is malloc'd, so a Lua error raised mid-parse (out of memory while
 * building a value) leaks nothing and needs no finalizer. */
#define TP_ARENA_SIZE 4096

typedef struct block_header {
    size_t size;
    size_t pad;         /* keeps payloads 16-byte aligned */
} block_header;

typedef struct parse_arena {
    lua_State *L;
    int anchor;         /* stack index: nil, or the table of overflow blocks */
    size_t used;
    /* cppcheck-suppress unusedStructMember ; align and p are never read: they align bytes for any object */
    union { long double align; void *p; unsigned char bytes[TP_ARENA_SIZE]; } mem;
} parse_arena;

static int in_arena(const parse_arena *a, const void *ptr)
{
    const unsigned char *p = (const unsigned char *)ptr;
    return p >= a->mem.bytes && p < a->mem.bytes + TP_ARENA_SIZE;
}

static void *arena_malloc(void *ctx, size_t size)
{
    parse_arena *a = (parse_arena *)ctx;
    size_t need = (sizeof(block_header) + size + 15) & ~(size_t)15;
    block_header *h;
    if (need <= TP_ARENA_SIZE - a->used) {
        h = (block_header *)(a->mem.bytes + a->used);
        a->used += need;
    } else {
        if (lua_isnil(a->L, a->anchor)) {
            lua_newtable(a->L);
            lua_replace(a->L, a->anchor);
        }
        h = (block_header *)lua_newuserdata(a->L, sizeof(block_header) + size);
        lua_rawsetp(a->L, a->anchor, h);  /* anchored under its own address */
    }
    h->size = size;
    return h + 1;
}

static void arena_free(void *ctx, void *ptr)
{
    parse_arena *a = (parse_arena *)ctx;
    if (!ptr || in_arena(a, ptr)) return;  /* the arena goes with the C frame */
    lua_pushnil(a->L);
    lua_rawsetp(a->L, a->anchor, (block_header *)ptr - 1);
}

static void *arena_realloc(void *ctx, void *ptr, size_t size)
{
    void *fresh;
    size_t old;
    if (!ptr) return arena_malloc(ctx, size);
    old = ((block_header *)ptr - 1)->size;
    if (size <= old) return ptr;
    fresh = arena_malloc(ctx, size);
    memcpy(fresh, ptr, old);
    arena_free(ctx, ptr);
    return fresh;
}

int tp_json_parse_lua(lua_State *L, const char *text, size_t len, int *is_object, const char **why)
{
    sax_state s;
    parse_arena arena;
    yajl_alloc_funcs alloc = { arena_malloc, arena_realloc, arena_free, &arena };
    int top = lua_gettop(L), ok;
    yajl_handle parser;

    if (memchr(text, '\\', len) && !surrogate_escapes_paired(text, len)) {
        *why = "an escaped surrogate is not part of a pair";
        return 0;
    }
    s.L = L;
    s.text_len = len;
    s.depth = 0;
    s.top_is_object = 0;
    s.why = NULL;
    arena.L = L;
    arena.used = 0;
    lua_pushnil(L);
    arena.anchor = lua_gettop(L);
    parser = yajl_alloc(&sax_callbacks, &alloc, &s);
    /* Every string and name goes through utf8_valid_without_nul, which is
     * stricter than yajl's own check: no need to run both. */
    if (parser) yajl_config(parser, yajl_dont_validate_strings, 1);
    ok = parser && yajl_parse(parser, (const unsigned char *)text, len) == yajl_status_ok &&
         yajl_complete_parse(parser) == yajl_status_ok && lua_gettop(L) == arena.anchor + 1;
    if (parser) yajl_free(parser);
    if (!ok) {
        *why = s.why ? s.why : "invalid JSON syntax or encoding";
        lua_settop(L, top);
        return 0;
    }
    lua_remove(L, arena.anchor);
    if (is_object) *is_object = s.top_is_object;
    return 1;
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
    case LUA_TUSERDATA:
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
 * Decodes JSON text strictly (valid UTF-8, no NUL, no duplicate member
 * names, no comments, nesting at most 64 levels).  Integers stay Lua integers; null is
 * `tokenpolicy.null`.
 * @function json_decode
 * @tparam string text
 * @return the value, or the fail triple with code `malformed`
 */
static int tp_json_decode(lua_State *L)
{
    size_t len;
    const char *text = tp_check_string(L, 1, &len);
    const char *why;
    if (!tp_json_parse_lua(L, text, len, NULL, &why))
        return tp_fail(L, "malformed", "invalid JSON: %s", why);
    return 1;
}

/***
 * The JSON null: `json_decode` and `decode` give it for a JSON null, and
 * `json_encode` writes it as null (a Lua nil cannot be a table's value).
 * It is one value per Lua state, prints as `tokenpolicy.null`, and is
 * compared with `==`.
 * @field null
 */
void tp_open_json(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "json_encode", tp_json_encode },
        { "json_decode", tp_json_decode },
        { NULL, NULL }
    };
    static const luaL_Reg box_meta[] = {
        { "__gc", tp_box__gc },
        { "__close", tp_box__gc },
        { NULL, NULL }
    };
    static const luaL_Reg null_meta[] = {
        { "__tostring", tp_null__tostring },
        { NULL, NULL }
    };
    tp_register_class(L, TP_BOX_CLASS, box_meta, NULL, 0);
    tp_register_class(L, TP_NULL_CLASS, null_meta, NULL, 0);
    /* Loaded again into the same state (package.loaded cleared): keep the
     * null that values already decoded hold. */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &null_key) == LUA_TNIL) {
        lua_newuserdata(L, 0);
        luaL_setmetatable(L, TP_NULL_CLASS);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &null_key);
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
    tp_push_null(L);
    lua_setfield(L, -2, "null");
}
