/***
 * The prepared verifier: `tp.verifier{...}` reads verify's options once
 * (as lua-cjson keeps its configuration in a userdata) and `v:check(token)`
 * runs the same checks as `tp.verify`, through the same jwt.c functions,
 * then a lifetime policy's verdict and a denylist lookup of the `jti`, and
 * keeps an optional cache of verified tokens.  It is the gateway's hot
 * path, so it builds no Lua table per call:
 *
 * - header and payload are read with yajl's event parser straight into a
 *   ClaimsView, a userdata holding the decoded JSON and the members the
 *   checks and a gateway read (alg, kid, typ, crit; exp, nbf, iat,
 *   auth_time, iss, sub, aud, jti, scope) as offsets and integers;
 * - the full Lua table of a view is built only when a member outside that
 *   list is read (or pairs, tostring), once, and kept in its uservalue;
 * - the event reader is deliberately conservative: JSON it is not sure to
 *   read exactly as json.c does (escapes, non-ASCII bytes, numbers other
 *   than plain integers of up to 18 digits, duplicate names, deep nesting)
 *   goes the slow way, through json.c's parser into a table, read by the
 *   same functions verify uses.  So both ways accept the same tokens and
 *   give the same answers.
 *
 * See docs/api.md (Verifier).
 * @module tokenpolicy.core
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <yajl/yajl_parse.h>
#include "tp.h"

#define TP_VERIFIER_CLASS "tokenpolicy.Verifier"
#define TP_VIEW_CLASS "tokenpolicy.ClaimsView"
#define TP_STATS_CLASS "tokenpolicy.VerifierStats"

/* Required names the event reader tracks (one bit each); a verifier
 * requiring more reads claims the slow way. */
#define FAST_REQUIRE 64
/* Nesting and member names (all levels open at once) the event reader
 * handles; deeper or larger JSON goes the slow way. */
#define SCAN_DEPTH 16
#define SCAN_KEYS 128

/* Stack slots v:check may use above its 3 arguments: on a cache hit
 * (within the LUA_MINSTACK every C call gets), and on the full path. */
#define HIT_STACK 16
#define FULL_STACK 24

/* Upvalues of every function here. */
#define UP_VIEW_MT lua_upvalueindex(1)
#define UP_NAMES lua_upvalueindex(2)      /* member name -> field index; "totable" -> the method */
#define UP_CLAIMS_MT lua_upvalueindex(3)
#define UP_VERIFIER_MT lua_upvalueindex(4)
#define UP_EVALUATE lua_upvalueindex(5)   /* Policy:evaluate */
#define UP_COUNT 5

/* Slots of a verifier's uservalue table. */
enum {
    UV_KEYS = 1, UV_ISS, UV_AUD, UV_REQUIRE, UV_POLICY, UV_DENYLIST, UV_HEADER,
    UV_CACHE_SET, UV_CACHE_REFS, UV_CACHE_ENTRIES, UV_SLOTS = UV_CACHE_ENTRIES
};

/* ---- the view ----------------------------------------------------------- */

enum {
    F_ALG, F_KID, F_TYP, F_CRIT, F_EXP, F_NBF, F_IAT, F_AUTH_TIME, F_ISS, F_SUB, F_AUD, F_JTI, F_SCOPE, F_COUNT
};
static const char *const field_names[F_COUNT + 1] = {
    "alg", "kid", "typ", "crit", "exp", "nbf", "iat", "auth_time", "iss", "sub", "aud", "jti", "scope", NULL
};

/* How a field is present in a view read the fast way. */
enum { K_ABSENT = 0, K_INT, K_STR, K_OTHER };

typedef struct vfield {
    lua_Integer i;          /* K_INT */
    uint32_t off, len;      /* K_STR: the bytes, in the view's text */
    int kind;
} vfield;

/* A read-only view of a decoded header or payload.  With slow set the
 * fields were not read and the table in the uservalue answers everything.
 * A view read the fast way is self-contained: the cache keeps a copy of
 * its bytes (view_size) and makes a new view from them on a hit. */
typedef struct tp_view {
    size_t len;
    int slow;
    int crit_array;         /* crit is an array, of crit_items elements */
    uint32_t crit_items;
    vfield f[F_COUNT];
    char text[1];           /* len bytes of JSON and a NUL */
} tp_view;

/* The bytes of a view of len bytes of text. */
static size_t view_size(size_t len)
{
    return offsetof(tp_view, text) + len + 1;
}

/* Pushes a new view of len bytes of text (metatable at mt). */
static tp_view *view_new(lua_State *L, const unsigned char *text, size_t len, int mt)
{
    tp_view *w = (tp_view *)tp_newuserdata(L, view_size(len));
    memset(w, 0, offsetof(tp_view, text));
    w->len = len;
    memcpy(w->text, text, len);
    w->text[len] = '\0';
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    return w;
}

/* Whether view w holds exactly the len bytes of text. */
static int view_has_text(const tp_view *w, const void *text, size_t len)
{
    return w->len == len && memcmp(w->text, text, len) == 0;
}

/* The view at idx, checked against the metatable upvalue (cheaper than a
 * registry lookup by name); raises for anything else. */
static tp_view *self_view(lua_State *L, int idx)
{
    void *p = lua_touserdata(L, idx);
    if (p && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, UP_VIEW_MT);
        lua_pop(L, 1);
        if (same) return (tp_view *)p;
    }
    return (tp_view *)luaL_checkudata(L, idx, TP_VIEW_CLASS);
}

/* Pushes the view's full table, parsing its text the first time. */
static void view_push_table(lua_State *L, int idx, tp_view *w)
{
    const char *why;
    idx = lua_absindex(L, idx);
    if (tp_getuservalue(L, idx) == LUA_TTABLE) return;
    lua_pop(L, 1);
    /* The text parsed when the token was checked: it cannot fail now. */
    if (!tp_json_parse_lua(L, w->text, w->len, NULL, &why))
        luaL_error(L, "%s: the text no longer parses (%s)", TP_VIEW_CLASS, why);
    lua_pushvalue(L, -1);
    tp_setuservalue(L, idx);
}

/* Pushes field f of a view read the fast way; 0 (nothing pushed) when it
 * is not a plain string or integer. */
static int view_push_field(lua_State *L, const tp_view *w, int f)
{
    switch (w->f[f].kind) {
    case K_ABSENT: lua_pushnil(L); return 1;
    case K_INT: lua_pushinteger(L, w->f[f].i); return 1;
    case K_STR: lua_pushlstring(L, w->text + w->f[f].off, w->f[f].len); return 1;
    default: return 0;
    }
}

static int view__index(lua_State *L)
{
    tp_view *w = self_view(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        switch (lua_rawget(L, UP_NAMES)) {
        case LUA_TFUNCTION:
            return 1;   /* totable */
        case LUA_TNUMBER:
            if (!w->slow && view_push_field(L, w, (int)lua_tointeger(L, -1))) return 1;
            break;
        default:
            break;
        }
        lua_pop(L, 1);
    }
    view_push_table(L, 1, w);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int view__newindex(lua_State *L)
{
    return luaL_error(L, "a %s is read-only (claims:totable() gives a table of your own)", TP_VIEW_CLASS);
}

static int view_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1)) return 2;
    lua_pushnil(L);
    return 1;
}

static int view__pairs(lua_State *L)
{
    tp_view *w = self_view(L, 1);
    lua_pushcfunction(L, view_next);
    view_push_table(L, 1, w);
    lua_pushnil(L);
    return 3;
}

static int view__tostring(lua_State *L)
{
    tp_view *w = self_view(L, 1);
    view_push_table(L, 1, w);
    tp_jwt_push_claims_text(L, -1);
    return 1;
}

/***
 * A fresh table of the claims (or header), of your own to change: the
 * same table `tp.verify` returns.
 * @function ClaimsView:totable
 * @treturn table
 */
static int view_totable(lua_State *L)
{
    tp_view *w = self_view(L, 1);
    const char *why;
    if (!tp_json_parse_lua(L, w->text, w->len, NULL, &why))
        return luaL_error(L, "%s: the text no longer parses (%s)", TP_VIEW_CLASS, why);
    lua_pushvalue(L, UP_CLAIMS_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- the event reader ---------------------------------------------------- */

typedef struct tp_verifier tp_verifier;

/* yajl's memory for one parse: a bump arena on the C stack.  The reader
 * bounds depth and names, so yajl's handle, lexer and byte stack always
 * fit; should they not, plain malloc serves and yajl_free releases it (no
 * callback can raise a Lua error, so yajl_free always runs). */
#define SCAN_ARENA 4096

typedef struct scan_arena {
    size_t used;
    /* cppcheck-suppress unusedStructMember ; align and p are never read: they align bytes for any object */
    union { long double align; void *p; unsigned char bytes[SCAN_ARENA]; } mem;
} scan_arena;

typedef struct arena_block {
    size_t size;
    size_t pad;
} arena_block;

static int in_scan_arena(const scan_arena *a, const void *p)
{
    return (const unsigned char *)p >= a->mem.bytes && (const unsigned char *)p < a->mem.bytes + SCAN_ARENA;
}

static void *scan_malloc(void *ctx, size_t size)
{
    scan_arena *a = (scan_arena *)ctx;
    size_t need = (sizeof(arena_block) + size + 15) & ~(size_t)15;
    arena_block *b;
    if (need > SCAN_ARENA - a->used) return malloc(size);
    b = (arena_block *)(a->mem.bytes + a->used);
    a->used += need;
    b->size = size;
    return b + 1;
}

static void scan_free(void *ctx, void *p)
{
    if (p && !in_scan_arena((scan_arena *)ctx, p)) free(p);
}

static void *scan_realloc(void *ctx, void *p, size_t size)
{
    void *fresh;
    size_t old;
    if (!p) return scan_malloc(ctx, size);
    if (!in_scan_arena((scan_arena *)ctx, p)) return realloc(p, size);
    old = ((arena_block *)p - 1)->size;
    if (size <= old) return p;
    if (!(fresh = scan_malloc(ctx, size))) return NULL;
    memcpy(fresh, p, old);
    return fresh;
}

typedef struct scan {
    tp_view *w;
    lua_State *L;
    int aud_opt;            /* stack index of the aud option, or 0 */
    const tp_verifier *v;   /* whose required names to track, or NULL */
    uint64_t seen;          /* bit i: required name i is present */
    int depth;
    int field;              /* the top-level member whose value comes next, or -1 */
    int in_list;            /* F_AUD or F_CRIT inside that member's array, else -1 */
    int aud_ok;
    int bail;               /* JSON for the slow way */
    int nkeys;
    int level_start[SCAN_DEPTH + 2];
    struct { uint32_t off, len, tag; } keys[SCAN_KEYS];
} scan;

struct tp_verifier {
    tp_verify_opts o;       /* iss, aud, require: nonzero when checked */
    int has_policy, has_denylist, source;
    int nrequire;           /* required names; more than FAST_REQUIRE: slow claims */
    struct { const char *s; size_t len; } require[FAST_REQUIRE];
    /* the cache (see "the cache" below) */
    lua_Integer cache_size, hits, misses, evictions, entries;
    EVP_MAC_CTX *mac;       /* the keyed hash, with this verifier's random key */
    struct centry *ents;    /* cache_size entries, then the bucket heads (Lua-owned) */
    int32_t *heads;
    uint32_t nbuckets, used, hand;
    const void *cache_set;  /* the key set the entries were verified with */
};

static int scan_stop(scan *s)
{
    s->bail = 1;
    return 0;
}

/* The field a top-level member name stands for, or -1: most names are no
 * field, so the first byte decides before any comparison. */
static int field_of(const char *name, size_t len)
{
    int f;
    switch (len ? name[0] : 0) {
    case 'a': f = len == 3 ? (name[1] == 'l' ? F_ALG : F_AUD) : F_AUTH_TIME; break;
    case 'c': f = F_CRIT; break;
    case 'e': f = F_EXP; break;
    case 'i': f = len == 3 && name[1] == 's' ? F_ISS : F_IAT; break;
    case 'j': f = F_JTI; break;
    case 'k': f = F_KID; break;
    case 'n': f = F_NBF; break;
    case 's': f = len == 5 ? F_SCOPE : F_SUB; break;
    case 't': f = F_TYP; break;
    default: return -1;
    }
    return strlen(field_names[f]) == len && memcmp(field_names[f], name, len) == 0 ? f : -1;
}

/* A cheap summary of a name (length, first and last byte) that tells most
 * different names apart before a byte comparison. */
static uint32_t name_tag(const char *name, size_t len)
{
    return len ? (uint32_t)len << 16 ^ (uint32_t)(unsigned char)name[0] << 8 ^ (unsigned char)name[len - 1]
               : 0;
}

/* A value: a top-level member's is recorded, and crit's elements counted. */
static void scan_value(scan *s, int kind, uint32_t off, uint32_t len, lua_Integer i)
{
    if (s->depth == 1 && s->field >= 0) {
        vfield *f = &s->w->f[s->field];
        f->kind = kind;
        f->off = off;
        f->len = len;
        f->i = i;
    } else if (s->depth == 2 && s->in_list == F_CRIT) {
        s->w->crit_items++;
    }
}

/* A scalar as the whole text: no JSON object, for the slow way to report. */
#define SCALAR_AT_TOP(s) ((s)->depth == 0)

static int scan_null(void *ctx)
{
    scan *s = (scan *)ctx;
    if (SCALAR_AT_TOP(s)) return scan_stop(s);
    scan_value(s, K_OTHER, 0, 0, 0);
    return 1;
}

static int scan_boolean(void *ctx, int value)
{
    scan *s = (scan *)ctx;
    (void)value;
    if (SCALAR_AT_TOP(s)) return scan_stop(s);
    scan_value(s, K_OTHER, 0, 0, 0);
    return 1;
}

/* Only plain integers of up to 18 digits, which always fit: json.c's
 * rules for other numbers (range, length) are json.c's to apply. */
static int scan_number(void *ctx, const char *text, size_t len)
{
    scan *s = (scan *)ctx;
    const char *p = text, *end = text + len;
    lua_Integer v = 0;
    int negative = p < end && *p == '-';
    p += negative;
    if (SCALAR_AT_TOP(s) || end - p < 1 || end - p > 18) return scan_stop(s);
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return scan_stop(s);
        v = v * 10 + (*p - '0');
    }
    scan_value(s, K_INT, 0, 0, negative ? -v : v);
    return 1;
}

/* Whether text lies in the view's own bytes (yajl passes strings without
 * escapes in place; the pre-check sent every escape the slow way). */
static int in_text(const scan *s, const unsigned char *text, size_t len)
{
    const char *p = (const char *)text;
    return p >= s->w->text && len <= s->w->len && p - s->w->text <= (ptrdiff_t)(s->w->len - len);
}

static int scan_string(void *ctx, const unsigned char *text, size_t len)
{
    scan *s = (scan *)ctx;
    if (SCALAR_AT_TOP(s) || !in_text(s, text, len)) return scan_stop(s);
    if (s->depth == 2 && s->in_list == F_AUD && s->aud_opt && !s->aud_ok)
        s->aud_ok = tp_jwt_matches(s->L, s->aud_opt, (const char *)text, len);
    scan_value(s, K_STR, (uint32_t)((const char *)text - s->w->text), (uint32_t)len, 0);
    return 1;
}

static int scan_key(void *ctx, const unsigned char *text, size_t len)
{
    scan *s = (scan *)ctx;
    const char *name = (const char *)text;
    uint32_t off, tag;
    if (!in_text(s, text, len) || s->nkeys == SCAN_KEYS) return scan_stop(s);
    off = (uint32_t)(name - s->w->text);
    tag = name_tag(name, len);
    /* A name twice in one object: json.c refuses it, with its message. */
    for (int k = s->level_start[s->depth]; k < s->nkeys; k++)
        if (s->keys[k].tag == tag && s->keys[k].len == len && memcmp(s->w->text + s->keys[k].off, name, len) == 0)
            return scan_stop(s);
    s->keys[s->nkeys].off = off;
    s->keys[s->nkeys].len = (uint32_t)len;
    s->keys[s->nkeys].tag = tag;
    s->nkeys++;
    if (s->depth == 1) {
        s->field = field_of(name, len);
        if (s->v)
            for (int i = 0; i < s->v->nrequire; i++)
                if (s->v->require[i].len == len && memcmp(s->v->require[i].s, name, len) == 0)
                    s->seen |= (uint64_t)1 << i;
    }
    return 1;
}

static int scan_open(scan *s, int is_array)
{
    if (s->depth >= SCAN_DEPTH || (s->depth == 0 && is_array)) return scan_stop(s);
    scan_value(s, K_OTHER, 0, 0, 0);
    if (is_array && s->depth == 1 && (s->field == F_AUD || s->field == F_CRIT)) {
        s->in_list = s->field;
        if (s->field == F_CRIT) s->w->crit_array = 1;
    }
    s->depth++;
    s->level_start[s->depth] = s->nkeys;
    return 1;
}

static int scan_start_map(void *ctx) { return scan_open((scan *)ctx, 0); }
static int scan_start_array(void *ctx) { return scan_open((scan *)ctx, 1); }

static int scan_close(void *ctx)
{
    scan *s = (scan *)ctx;
    s->nkeys = s->level_start[s->depth];
    s->depth--;
    if (s->depth == 1) s->in_list = -1;
    return 1;
}

static const yajl_callbacks scan_callbacks = {
    scan_null, scan_boolean, NULL, NULL, scan_number, scan_string,
    scan_start_map, scan_key, scan_close, scan_start_array, scan_close
};

/* Whether the text may be read the fast way: pure ASCII without a
 * backslash (no escapes, nothing for UTF-8 rules to decide). */
static int plain_ascii(const char *p, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w, b;
        memcpy(&w, p + i, 8);
        b = w ^ UINT64_C(0x5c5c5c5c5c5c5c5c);  /* a zero byte where there was a backslash */
        if ((w | ((b - UINT64_C(0x0101010101010101)) & ~b)) & UINT64_C(0x8080808080808080)) return 0;
    }
    for (; i < len; i++)
        if ((unsigned char)p[i] >= 0x80 || p[i] == '\\') return 0;
    return 1;
}

/* Reads the view's text with yajl's events into its fields.  Returns 1,
 * or 0 when the text must go the slow way (the view is then untouched
 * but for its fields, which slow makes irrelevant). */
static int scan_view(lua_State *L, tp_view *w, const tp_verifier *v, int aud_opt, int *aud_ok, uint64_t *seen)
{
    scan_arena arena;
    yajl_alloc_funcs alloc = { scan_malloc, scan_realloc, scan_free, &arena };
    yajl_handle parser;
    scan s;
    int ok;
    if (!plain_ascii(w->text, w->len)) return 0;
    s.w = w;
    s.L = L;
    s.aud_opt = aud_opt;
    s.v = v;
    s.seen = 0;
    s.depth = 0;
    s.field = -1;
    s.in_list = -1;
    s.aud_ok = 0;
    s.bail = 0;
    s.nkeys = 0;
    s.level_start[0] = 0;
    arena.used = 0;
    if (!(parser = yajl_alloc(&scan_callbacks, &alloc, &s))) return 0;
    /* ASCII only (checked above): nothing for yajl's UTF-8 check to find. */
    yajl_config(parser, yajl_dont_validate_strings, 1);
    ok = yajl_parse(parser, (const unsigned char *)w->text, w->len) == yajl_status_ok &&
         yajl_complete_parse(parser) == yajl_status_ok && !s.bail;
    yajl_free(parser);
    if (!ok) return 0;
    if (aud_ok) *aud_ok = s.aud_ok;
    if (seen) *seen = s.seen;
    return 1;
}

/* The kind verify gives a header member read the fast way. */
static int member_kind(const tp_view *w, int f, const char **s, size_t *len)
{
    *s = NULL;
    *len = 0;
    if (w->f[f].kind == K_ABSENT) return TP_ABSENT;
    if (w->f[f].kind != K_STR) return TP_OTHER;
    *s = w->text + w->f[f].off;
    *len = w->f[f].len;
    return TP_STRING;
}

/* The header facts of a view read the fast way. */
static void header_facts(const tp_view *w, tp_jwt_header *h)
{
    h->alg_kind = member_kind(w, F_ALG, &h->alg, &h->alg_len);
    h->kid_kind = member_kind(w, F_KID, &h->kid, &h->kid_len);
    h->typ_kind = member_kind(w, F_TYP, &h->typ, &h->typ_len);
    h->crit = w->f[F_CRIT].kind == K_ABSENT ? 0 : (w->crit_array && w->crit_items > 0) ? 1 : -1;
}

/* A NumericDate read the fast way: 0 absent, 1 set, -1 not a number
 * (floats never come this way). */
static int time_fact(const tp_view *w, int f, lua_Integer *out)
{
    if (w->f[f].kind == K_ABSENT) return 0;
    if (w->f[f].kind != K_INT) return -1;
    *out = w->f[f].i;
    return 1;
}

/* The claims facts of a view read the fast way. */
static void claims_facts(lua_State *L, const tp_verifier *v, const tp_verify_opts *o, const tp_view *w,
                         int aud_ok, uint64_t seen, tp_jwt_claims *c)
{
    memset(c, 0, sizeof *c);
    c->exp = time_fact(w, F_EXP, &c->exp_v);
    c->nbf = time_fact(w, F_NBF, &c->nbf_v);
    c->iat = time_fact(w, F_IAT, &c->iat_v);
    if (o->iss) {
        c->iss = member_kind(w, F_ISS, &c->iss_s, &c->iss_len);
        c->iss_ok = c->iss == TP_STRING && tp_jwt_matches(L, o->iss, c->iss_s, c->iss_len);
    }
    if (o->aud) {
        const char *s;
        size_t len;
        int kind = member_kind(w, F_AUD, &s, &len);
        c->aud = kind != TP_ABSENT;
        c->aud_ok = kind == TP_STRING ? tp_jwt_matches(L, o->aud, s, len) : aud_ok;
    }
    for (int i = 0; i < v->nrequire && o->require; i++)
        if (!(seen & ((uint64_t)1 << i))) {
            c->missing = v->require[i].s;
            c->missing_len = v->require[i].len;
            break;
        }
}

/* ---- the cache ------------------------------------------------------------
 *
 * A bounded cache of verified tokens, one per verifier (so one per Lua
 * state: no locks).  Key: a keyed hash of the stripped token (SipHash
 * through OpenSSL's EVP_MAC, with a random key drawn when the verifier is
 * made), then a full byte comparison; value: the token's times and the
 * bytes of its claims and header views.  Eviction is CLOCK: a hit sets an
 * entry's bit, the hand clears bits until it finds an entry without one.
 *
 * Each entry's bytes (the token, then copies of its two views) are one
 * block of C memory, freed when the entry goes; a hit makes new views from
 * them.  They are kept out of the Lua heap on purpose: Lua 5.3's collector
 * visits every live object in each cycle, and in HAProxy each request's own
 * garbage (its coroutine, the txn objects) starts a cycle every few
 * hundred requests, so a cache of Lua objects was walked again and again,
 * from memory no cache line held any more (bench-haproxy: the collector
 * and those misses took about a third of a cached request's time).  Views
 * read the slow way (claims that are not plain ASCII) hold a Lua table, so
 * for those the views themselves are kept, in the refs table (2 slots per
 * entry).  The entries array and the bucket heads are a Lua userdata. */

#define CACHE_MAX 1000000

typedef struct centry {
    uint64_t hash;
    unsigned char *bytes;   /* malloc'd: the stripped token, then the views' copies */
    size_t len;             /* the token's */
    size_t claims_size;     /* the claims view copy's (0: the views are in the refs table) */
    size_t header_size;     /* the header view copy's, after the claims view's */
    lua_Integer exp, nbf, iat;
    int32_t next;           /* the next entry of the bucket, or -1 */
    unsigned char live, ref, has_nbf, has_iat;
} centry;

/* A 64-bit keyed hash of the token, 0 when the MAC fails (then the cache
 * is simply not used for this call). */
static uint64_t cache_hash(tp_verifier *v, const char *token, size_t len)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    size_t outlen = 0;
    uint64_t h = 0;
    if (!EVP_MAC_init(v->mac, NULL, 0, NULL) || !EVP_MAC_update(v->mac, (const unsigned char *)token, len) ||
        !EVP_MAC_final(v->mac, out, &outlen, sizeof out) || outlen < sizeof h) {
        ERR_clear_error();
        return 0;
    }
    memcpy(&h, out, sizeof h);
    return h | 1;  /* never 0 */
}

/* Makes the keyed hash: SipHash-2-4 (64-bit output), or, where a provider
 * lacks it, HMAC-SHA-256 cut to 64 bits.  0 when neither is there. */
static int cache_mac_new(tp_verifier *v)
{
    unsigned char key[32];
    size_t size = 8;
    OSSL_PARAM sip[] = { OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_construct_end() };
    OSSL_PARAM hmac[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                          OSSL_PARAM_construct_end() };
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    int ok = 0, is_sip = mac != NULL;
    if (!mac) mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac && (v->mac = EVP_MAC_CTX_new(mac)) && RAND_bytes(key, sizeof key) == 1)
        ok = is_sip ? EVP_MAC_init(v->mac, key, 16, sip) : EVP_MAC_init(v->mac, key, sizeof key, hmac);
    EVP_MAC_free(mac);
    OPENSSL_cleanse(key, sizeof key);
    if (!ok) {
        EVP_MAC_CTX_free(v->mac);
        v->mac = NULL;
        ERR_clear_error();
    }
    return ok;
}

/* Frees every entry's bytes and empties the index (no Lua call: the
 * verifier's __gc uses it too). */
static void cache_free_all(tp_verifier *v)
{
    if (!v->ents) return;
    for (uint32_t i = 0; i < v->used; i++) {
        free(v->ents[i].bytes);
        v->ents[i].bytes = NULL;
    }
    for (uint32_t i = 0; i < v->nbuckets; i++) v->heads[i] = -1;
    memset(v->ents, 0, (size_t)v->cache_size * sizeof *v->ents);
    v->used = v->hand = 0;
    v->entries = 0;
}

/* Empties the cache: a new refs table lets the old views go. */
static void cache_flush(lua_State *L, tp_verifier *v, int uv)
{
    if (!v->ents) return;
    cache_free_all(v);
    lua_createtable(L, 0, 0);
    lua_rawseti(L, uv, UV_CACHE_REFS);
}

/* The live entry holding token, or -1. */
static int32_t cache_find(const tp_verifier *v, uint64_t hash, const char *token, size_t len)
{
    for (int32_t i = v->heads[hash & (v->nbuckets - 1)]; i >= 0; i = v->ents[i].next) {
        const centry *e = &v->ents[i];
        if (e->hash == hash && e->len == len && memcmp(e->bytes, token, len) == 0) return i;
    }
    return -1;
}

static void cache_unlink(tp_verifier *v, int32_t i)
{
    int32_t *link = &v->heads[v->ents[i].hash & (v->nbuckets - 1)];
    while (*link != i) link = &v->ents[*link].next;
    *link = v->ents[i].next;
    v->ents[i].live = 0;
    free(v->ents[i].bytes);
    v->ents[i].bytes = NULL;
    v->entries--;
}

/* The slot for a new entry: a never used one, else the CLOCK victim. */
static int32_t cache_slot(tp_verifier *v)
{
    if (v->used < (uint32_t)v->cache_size) return (int32_t)v->used++;
    for (;;) {
        centry *e = &v->ents[v->hand];
        int32_t i = (int32_t)v->hand;
        v->hand = (v->hand + 1) % (uint32_t)v->cache_size;
        if (!e->live) return i;
        if (e->ref) {
            e->ref = 0;
            continue;
        }
        cache_unlink(v, i);
        v->evictions++;
        return i;
    }
}

/* Whether the cached times still hold at now (verify's time checks). */
static int cache_times_ok(const tp_verifier *v, const centry *e, lua_Integer now)
{
    lua_Integer leeway = v->o.leeway;
    return tp_sub_sat(now, leeway) < e->exp && (!e->has_nbf || tp_add_sat(now, leeway) >= e->nbf) &&
           (!e->has_iat || e->iat <= tp_add_sat(now, leeway));
}

/* Makes sure the entries were verified with the keys in use now: a
 * JwksSource whose current set changed (set_keys, a fetch) drops them.
 * Returns 0 when its set cannot be had (the full path then reports it). */
static int cache_keys_current(lua_State *L, tp_verifier *v, int uv, int keys)
{
    int fetched, top = lua_gettop(L);
    const void *set;
    if (!v->source) return 1;
    if (tp_jwks_keys(L, keys, &fetched) != 1) {
        lua_settop(L, top);
        return 0;
    }
    set = lua_touserdata(L, -1);
    if (set != v->cache_set) {
        cache_flush(L, v, uv);
        v->cache_set = set;
        lua_rawseti(L, uv, UV_CACHE_SET);  /* kept, so its address stays its own */
    }
    lua_settop(L, top);
    return 1;
}

/* Adds a verified token (its claims and header views at cl and hdr, its
 * times in c) verified with the set at setidx.  Tokens without exp are
 * not cached: nothing would bound their stay. */
static void cache_add(lua_State *L, tp_verifier *v, int uv, uint64_t hash, const char *token, size_t len,
                      int cl, int hdr, const tp_jwt_claims *c, int setidx)
{
    centry *e;
    const tp_view *cw, *hw;
    unsigned char *bytes;
    size_t claims_size = 0, header_size = 0;
    int in_lua;
    int32_t i;
    if (c->exp != 1) return;
    if (!v->ents) {
        uint32_t nb = 1;
        size_t size;
        while (nb < (uint32_t)v->cache_size) nb <<= 1;
        size = (size_t)v->cache_size * sizeof(centry) + nb * sizeof(int32_t);
        v->ents = (centry *)lua_newuserdata(L, size);
        lua_rawseti(L, uv, UV_CACHE_ENTRIES);
        v->heads = (int32_t *)(v->ents + v->cache_size);
        v->nbuckets = nb;
        v->cache_set = NULL;
        cache_flush(L, v, uv);
    }
    if (lua_touserdata(L, setidx) != v->cache_set) {  /* verified with other keys: start again */
        cache_flush(L, v, uv);
        v->cache_set = lua_touserdata(L, setidx);
        lua_pushvalue(L, setidx);
        lua_rawseti(L, uv, UV_CACHE_SET);
    }
    cw = (const tp_view *)lua_touserdata(L, cl);
    hw = (const tp_view *)lua_touserdata(L, hdr);
    in_lua = cw->slow || hw->slow;
    if (!in_lua) {
        claims_size = view_size(cw->len);
        header_size = view_size(hw->len);
    }
    if (len > SIZE_MAX - claims_size - header_size || !(bytes = malloc(len + claims_size + header_size)))
        return;  /* no memory: simply not cached */
    memcpy(bytes, token, len);
    if (!in_lua) {
        memcpy(bytes + len, cw, claims_size);
        memcpy(bytes + len + claims_size, hw, header_size);
    }
    i = cache_slot(v);
    e = &v->ents[i];
    free(e->bytes);  /* NULL, unless a memory error once left this slot half made */
    e->bytes = bytes;
    e->claims_size = claims_size;
    e->header_size = header_size;
    /* The refs table holds the views of slow entries only (nil otherwise,
     * so that a slot's former views can go). */
    lua_rawgeti(L, uv, UV_CACHE_REFS);
    if (in_lua) lua_pushvalue(L, cl); else lua_pushnil(L);
    lua_rawseti(L, -2, 2 * i + 1);
    if (in_lua) lua_pushvalue(L, hdr); else lua_pushnil(L);
    lua_rawseti(L, -2, 2 * i + 2);
    lua_pop(L, 1);
    e->hash = hash;
    e->len = len;
    e->exp = c->exp_v;
    e->has_nbf = c->nbf == 1;
    e->nbf = c->nbf_v;
    e->has_iat = c->iat == 1;
    e->iat = c->iat_v;
    e->ref = 0;
    e->live = 1;
    e->next = v->heads[hash & (v->nbuckets - 1)];
    v->heads[hash & (v->nbuckets - 1)] = i;
    v->entries++;
}

/* ---- check -------------------------------------------------------------- */

/* The fail message of each policy verdict state other than "valid". */
static const struct { const char *state, *message; } verdict_messages[] = {
    { "expired", "the policy ends the token's validity (past its exp, or its login session is over)" },
    { "not_yet_valid", "the policy does not accept the token yet (nbf)" },
    { "idle", "the token has been idle too long" },
    { "exceeds_max_lifetime", "the token's lifetime exceeds the policy's maximum" },
    { "no_expiry", "the token has no exp and the policy sets a maximum lifetime" },
    { NULL, NULL }
};

static int fail_verdict(lua_State *L, const char *state)
{
    for (int i = 0; verdict_messages[i].state; i++)
        if (strcmp(verdict_messages[i].state, state) == 0)
            return tp_fail(L, verdict_messages[i].state, "%s", verdict_messages[i].message);
    return tp_fail(L, "policy_violation", "the policy's verdict is %s", state);
}

/* The verifier at idx (metatable compared with the upvalue). */
static tp_verifier *self_verifier(lua_State *L, int idx)
{
    void *p = lua_touserdata(L, idx);
    if (p && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, UP_VERIFIER_MT);
        lua_pop(L, 1);
        if (same) return (tp_verifier *)p;
    }
    return (tp_verifier *)luaL_checkudata(L, idx, TP_VERIFIER_CLASS);
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

/* The policy's verdict and the denylist, for the claims view at cl.
 * Returns 0, or 3 with the fail triple pushed. */
static int judge(lua_State *L, const tp_verifier *v, int uv, int cl, lua_Integer now)
{
    tp_view *w = (tp_view *)lua_touserdata(L, cl);
    if (v->has_policy) {
        static const int times[4] = { F_EXP, F_IAT, F_NBF, F_AUTH_TIME };
        lua_Integer t[4] = { 0, 0, 0, 0 };
        unsigned has = 0;
        int plain = !w->slow;
        for (int i = 0; i < 4 && plain; i++) {
            if (w->f[times[i]].kind == K_INT) {
                has |= 1u << i;
                t[i] = w->f[times[i]].i;
            } else if (w->f[times[i]].kind != K_ABSENT) {
                plain = 0;  /* null, or not a number: evaluate's own reading decides */
            }
        }
        lua_rawgeti(L, uv, UV_POLICY);
        if (plain) {
            const char *state = tp_policy_judge_times(L, -1, has, t[0], t[1], t[2], t[3], now);
            if (state) return fail_verdict(L, state);
            lua_pop(L, 1);
        } else {
            const char *state;
            lua_pushvalue(L, UP_EVALUATE);
            lua_insert(L, -2);
            view_push_table(L, cl, w);
            lua_pushinteger(L, now);
            lua_call(L, 3, 3);
            if (lua_isnil(L, -3)) return 3;  /* evaluate's fail triple (malformed) */
            lua_pop(L, 2);
            lua_getfield(L, -1, "state");
            state = lua_tostring(L, -1);
            if (!state || strcmp(state, "valid") != 0) return fail_verdict(L, state ? state : "?");
            lua_pop(L, 2);
        }
    }
    if (v->has_denylist) {
        size_t len = 0;
        const char *jti = NULL;
        int top = lua_gettop(L);
        if (!w->slow) {
            if (w->f[F_JTI].kind == K_STR) {
                jti = w->text + w->f[F_JTI].off;
                len = w->f[F_JTI].len;
            }
        } else {
            view_push_table(L, cl, w);
            if (lua_getfield(L, -1, "jti") == LUA_TSTRING) jti = lua_tolstring(L, -1, &len);
        }
        if (jti) {
            lua_rawgeti(L, uv, UV_DENYLIST);
            if (tp_denylist_denied(L, -1, jti, len, now))
                return tp_fail(L, "revoked", "the token's jti is on the denylist");
        }
        lua_settop(L, top);
    }
    return 0;
}

/* Pushes a view copied from a cache entry's bytes. */
static void view_from_copy(lua_State *L, const unsigned char *copy, size_t size)
{
    void *w = tp_newuserdata(L, size);
    memcpy(w, copy, size);
    lua_pushvalue(L, UP_VIEW_MT);
    lua_setmetatable(L, -2);
}

/* Answers v:check from entry i: its claims view (judged again) and its
 * header view, or the fail triple of the verdict or the denylist.  The
 * header view is the verifier's last one when the bytes are the same (as
 * they are for the tokens of one issuer and key). */
static int cache_hit(lua_State *L, const tp_verifier *v, int uv, const centry *e, int32_t i, lua_Integer now)
{
    const unsigned char *copy;
    int cl;
    if (!e->claims_size) {  /* views read the slow way: kept as they are */
        lua_rawgeti(L, uv, UV_CACHE_REFS);
        lua_rawgeti(L, -1, 2 * i + 1);
        cl = lua_gettop(L);
        if (judge(L, v, uv, cl, now)) return 3;
        lua_rawgeti(L, cl - 1, 2 * i + 2);
        return 2;
    }
    view_from_copy(L, e->bytes + e->len, e->claims_size);
    cl = lua_gettop(L);
    if (judge(L, v, uv, cl, now)) return 3;
    /* The copy follows the token and may be unaligned: only its text is
     * read in place (its length follows from its size). */
    copy = e->bytes + e->len + e->claims_size;
    if (lua_rawgeti(L, uv, UV_HEADER) == LUA_TUSERDATA &&
        view_has_text((const tp_view *)lua_touserdata(L, -1), copy + offsetof(tp_view, text),
                      e->header_size - view_size(0)))
        return 2;
    lua_pop(L, 1);
    view_from_copy(L, copy, e->header_size);
    return 2;
}

/* Pushes the header view of the decoded header and sets its facts: the
 * verifier's last header view when the bytes are the same (tokens of one
 * issuer share their header), else a new one.  Returns 0, or 3 with the
 * fail triple pushed. */
static int read_header(lua_State *L, int uv, const tp_jws *j, tp_jwt_header *h)
{
    tp_view *w;
    const char *msg;
    if (lua_rawgeti(L, uv, UV_HEADER) == LUA_TUSERDATA) {
        w = (tp_view *)lua_touserdata(L, -1);
        if (view_has_text(w, j->part[0], j->plen[0])) {
            header_facts(w, h);
            return 0;
        }
    }
    lua_pop(L, 1);
    w = view_new(L, j->part[0], j->plen[0], UP_VIEW_MT);
    if (scan_view(L, w, NULL, 0, NULL, NULL)) {
        header_facts(w, h);
        lua_pushvalue(L, -1);
        lua_rawseti(L, uv, UV_HEADER);
        return 0;
    }
    if ((msg = tp_jwt_parse_part(L, j, 0)))
        return tp_fail(L, "malformed", "%s", msg);
    w->slow = 1;
    tp_jwt_header_of(L, -1, h);  /* its strings stay referenced by the table */
    tp_setuservalue(L, -2);
    return 0;
}

/* Pushes the claims view of the decoded payload and checks the claims.
 * Returns 0, or 3 with the fail triple pushed. */
static int read_claims(lua_State *L, const tp_verifier *v, const tp_verify_opts *o, const tp_jws *j,
                       const tp_jwt_header *h, tp_jwt_claims *facts)
{
    tp_view *w = view_new(L, j->part[1], j->plen[1], UP_VIEW_MT);
    tp_jwt_claims *c = facts;
    const char *msg;
    int aud_ok = 0;
    uint64_t seen = 0;
    if (v->nrequire <= FAST_REQUIRE && scan_view(L, w, v, o->aud, &aud_ok, &seen)) {
        claims_facts(L, v, o, w, aud_ok, seen, c);
        return tp_jwt_check_claims(L, o, h, c);
    }
    if ((msg = tp_jwt_parse_part(L, j, 1)))
        return tp_fail(L, "malformed", "%s", msg);
    w->slow = 1;
    tp_jwt_claims_of(L, o, -1, c);
    tp_setuservalue(L, -2);
    return tp_jwt_check_claims(L, o, h, c);
}

/***
 * Verifies a token: the same checks, codes and messages as
 * `tp.verify(token, keys, opts)` with the verifier's options, then the
 * policy's verdict (its state as the code when it is not "valid") and the
 * denylist (`revoked`).  Does no I/O of its own (a JwksSource with a URI
 * fetches as it does for `tp.verify`).
 * @function Verifier:check
 * @tparam string token
 * @tparam[opt] integer now default the clock
 * @treturn ClaimsView claims
 * @treturn ClaimsView header
 * @return or the fail triple
 */
static int tp_verifier_check(lua_State *L)
{
    tp_verifier *v = self_verifier(L, 1);
    size_t len, slen;
    const char *token = tp_check_string(L, 2, &len), *stripped = NULL;
    tp_verify_opts o = v->o;
    char work[TP_JWS_WORK];
    tp_jwt_header h;
    tp_jwt_claims c;
    tp_keyset *set;
    uint64_t hash = 0;
    tp_jws j;
    int uv, keys, hdr, cl, alg, setidx;

    o.now = arg_now(L, 3);
    lua_settop(L, 3);
    /* A cache hit needs few slots; Lua gives every C call LUA_MINSTACK
     * (20) free ones, so asking for what the full path needs (below) only
     * there spares a hit the stack reallocation it would cost in a fresh
     * coroutine, as HAProxy runs each request in. */
    luaL_checkstack(L, HIT_STACK, "verifier");
    tp_getuservalue(L, 1);
    uv = lua_gettop(L);
    lua_rawgeti(L, uv, UV_KEYS);
    keys = lua_gettop(L);

    if (v->mac && (lua_Integer)len <= o.max_size) {
        slen = len;
        stripped = tp_jwt_strip(token, &slen);
        hash = cache_hash(v, stripped, slen);
        if (hash && v->ents && cache_keys_current(L, v, uv, keys)) {
            int32_t i = cache_find(v, hash, stripped, slen);
            if (i >= 0 && !cache_times_ok(v, &v->ents[i], o.now)) {
                cache_unlink(v, i);  /* the full path gives the exact failure */
                i = -1;
            }
            if (i >= 0) {
                v->hits++;
                v->ents[i].ref = 1;
                return cache_hit(L, v, uv, &v->ents[i], i, o.now);
            }
        }
        v->misses++;
    }

    luaL_checkstack(L, FULL_STACK, "verifier");
    if (o.iss) { lua_rawgeti(L, uv, UV_ISS); o.iss = lua_gettop(L); }
    if (o.aud) { lua_rawgeti(L, uv, UV_AUD); o.aud = lua_gettop(L); }
    if (o.require) { lua_rawgeti(L, uv, UV_REQUIRE); o.require = lua_gettop(L); }
    if (tp_jwt_split(L, token, len, o.max_size, work, &j)) return 3;
    if (read_header(L, uv, &j, &h)) return 3;
    hdr = lua_gettop(L);
    if (tp_jwt_check_alg(L, &h, o.algs, &alg) || tp_jwt_check_signature(L, keys, &h, alg, &j, &set))
        return 3;
    setidx = v->source ? lua_gettop(L) : keys;  /* a source's set is left pushed */
    if (read_claims(L, v, &o, &j, &h, &c)) return 3;
    cl = lua_gettop(L);
    if (judge(L, v, uv, cl, o.now)) return 3;
    if (hash && lua_touserdata(L, setidx) == (void *)set)
        cache_add(L, v, uv, hash, stripped, slen, cl, hdr, &c, setidx);
    lua_settop(L, cl);
    lua_pushvalue(L, hdr);
    return 2;
}

/***
 * The cache's counters.
 * @function Verifier:stats
 * @treturn table `hits`, `misses`, `entries`, `evictions`
 */
static int tp_verifier_stats(lua_State *L)
{
    tp_verifier *v = self_verifier(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, v->hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, v->misses);
    lua_setfield(L, -2, "misses");
    lua_pushinteger(L, v->entries);
    lua_setfield(L, -2, "entries");
    lua_pushinteger(L, v->evictions);
    lua_setfield(L, -2, "evictions");
    luaL_setmetatable(L, TP_STATS_CLASS);
    return 1;
}

/* "hits 3, misses 1, entries 1, evictions 0": the counters print readably,
 * as every value the core returns does. */
static int tp_stats__tostring(lua_State *L)
{
    static const char *const names[] = { "hits", "misses", "entries", "evictions" };
    lua_Integer n[4];
    luaL_checktype(L, 1, LUA_TTABLE);
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, 1, names[i]);
        n[i] = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_pushfstring(L, "hits %I, misses %I, entries %I, evictions %I", n[0], n[1], n[2], n[3]);
    return 1;
}

/***
 * Empties the cache (the counters stay).
 * @function Verifier:flush
 */
static int tp_verifier_flush(lua_State *L)
{
    tp_verifier *v = self_verifier(L, 1);
    lua_settop(L, 1);
    tp_getuservalue(L, 1);
    cache_flush(L, v, 2);
    return 0;
}

static int tp_verifier__tostring(lua_State *L)
{
    tp_verifier *v = self_verifier(L, 1);
    lua_pushfstring(L, "tokenpolicy.Verifier (%s%s%s, cache %I)", v->source ? "JwksSource" : "KeySet",
                    v->has_policy ? ", policy" : "", v->has_denylist ? ", denylist" : "", v->cache_size);
    return 1;
}

static int tp_verifier__gc(lua_State *L)
{
    tp_verifier *v = (tp_verifier *)luaL_checkudata(L, 1, TP_VERIFIER_CLASS);
    EVP_MAC_CTX_free(v->mac);
    v->mac = NULL;  /* no caching from now on, should the verifier still be called */
    cache_free_all(v);
    return 0;
}

/* ---- construction ------------------------------------------------------- */

/* Replaces the string or list at -1 by a copy the caller cannot change
 * behind the verifier's back (the verifier keeps pointers into it). */
static void own_copy(lua_State *L)
{
    lua_Integer n;
    if (lua_type(L, -1) == LUA_TSTRING) return;
    n = (lua_Integer)lua_rawlen(L, -1);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        lua_rawseti(L, -2, i);
    }
    lua_remove(L, -2);
}

/* The required names at -1 (a string or a list, kept in the uservalue)
 * as C strings for the event reader. */
static void note_required(lua_State *L, tp_verifier *v)
{
    int single = lua_type(L, -1) == LUA_TSTRING;
    lua_Integer n = single ? 1 : (lua_Integer)lua_rawlen(L, -1);
    v->nrequire = n > FAST_REQUIRE ? FAST_REQUIRE + 1 : (int)n;
    if (n > FAST_REQUIRE) return;
    for (lua_Integer i = 1; i <= n; i++) {
        if (single) lua_pushvalue(L, -1); else lua_rawgeti(L, -1, i);
        v->require[i - 1].s = lua_tolstring(L, -1, &v->require[i - 1].len);  /* kept by the list */
        lua_pop(L, 1);
    }
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
    lua_pushvalue(L, UP_VERIFIER_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, UV_SLOTS, 0);                    /* 3 */
    uv = lua_gettop(L);
    lua_pushvalue(L, uv);
    tp_setuservalue(L, 2);

    lua_getfield(L, 1, "keys");
    if (!luaL_testudata(L, -1, TP_KEYSET_CLASS)) {
        if (!luaL_testudata(L, -1, TP_JWKS_CLASS))
            luaL_argerror(L, 1, lua_pushfstring(L, "keys must be a %s or a %s, got %s", TP_KEYSET_CLASS,
                                                TP_JWKS_CLASS, luaL_typename(L, -1)));
        v->source = 1;
    }
    lua_rawseti(L, uv, UV_KEYS);

    tp_jwt_default_opts(&v->o);
    tp_jwt_read_opts(L, 1, &v->o);
    if (v->o.require) {
        own_copy(L);
        note_required(L, v);
        lua_rawseti(L, uv, UV_REQUIRE);
    }
    if (v->o.aud) {
        own_copy(L);
        lua_rawseti(L, uv, UV_AUD);
    }
    if (v->o.iss) {
        own_copy(L);
        lua_rawseti(L, uv, UV_ISS);
    }
    if (v->o.typ) {  /* keep the string the options table holds */
        lua_getfield(L, 1, "typ");
        lua_rawsetp(L, uv, &v->o.typ);
    }

    if (lua_getfield(L, 1, "policy") != LUA_TNIL) {
        if (!luaL_testudata(L, -1, TP_POLICY_CLASS))
            luaL_argerror(L, 1, lua_pushfstring(L, "policy must be a %s, got %s", TP_POLICY_CLASS,
                                                luaL_typename(L, -1)));
        v->has_policy = 1;
        lua_rawseti(L, uv, UV_POLICY);
    } else {
        lua_pop(L, 1);
    }
    if (lua_getfield(L, 1, "denylist") != LUA_TNIL) {
        if (!luaL_testudata(L, -1, TP_DENYLIST_CLASS))
            luaL_argerror(L, 1, lua_pushfstring(L, "denylist must be a %s, got %s", TP_DENYLIST_CLASS,
                                                luaL_typename(L, -1)));
        v->has_denylist = 1;
        lua_rawseti(L, uv, UV_DENYLIST);
    } else {
        lua_pop(L, 1);
    }
    v->cache_size = tp_opt_integer(L, 1, "cache", 0, 0);
    if (v->cache_size > CACHE_MAX)
        luaL_argerror(L, 1, "cache must be an integer of at most 1000000");
    if (v->cache_size > 0 && !cache_mac_new(v))
        return luaL_error(L, "verifier: OpenSSL offers no keyed hash (SipHash or HMAC) for the cache");
    lua_settop(L, 2);
    return 1;
}

/* Pushes the UP_COUNT upvalues (names: the stack index of the names table). */
static void push_upvalues(lua_State *L, int names)
{
    luaL_getmetatable(L, TP_VIEW_CLASS);
    lua_pushvalue(L, names);
    luaL_getmetatable(L, TP_CLAIMS_CLASS);
    luaL_getmetatable(L, TP_VERIFIER_CLASS);
    luaL_getmetatable(L, TP_POLICY_CLASS);
    lua_getfield(L, -1, "__index");
    lua_getfield(L, -1, "evaluate");
    lua_replace(L, -3);
    lua_pop(L, 1);
}

void tp_open_verifier(lua_State *L)
{
    static const luaL_Reg none[] = { { NULL, NULL } };
    static const luaL_Reg methods[] = {
        { "check", tp_verifier_check },
        { "stats", tp_verifier_stats },
        { "flush", tp_verifier_flush },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__tostring", tp_verifier__tostring },
        { "__gc", tp_verifier__gc },
        { NULL, NULL }
    };
    static const luaL_Reg view_meta[] = {
        { "__index", view__index },
        { "__newindex", view__newindex },
        { "__pairs", view__pairs },
        { "__tostring", view__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg view_methods[] = { { "totable", view_totable }, { NULL, NULL } };
    static const luaL_Reg functions[] = { { "verifier", tp_verifier_new }, { NULL, NULL } };
    int module = lua_gettop(L), names;
    /* The metatables first (bare), so that the functions can hold them as
     * upvalues; then the classes are filled in. */
    static const luaL_Reg stats_meta[] = { { "__tostring", tp_stats__tostring }, { NULL, NULL } };
    tp_register_class(L, TP_STATS_CLASS, stats_meta, NULL, 0);
    tp_register_class(L, TP_VIEW_CLASS, none, NULL, 0);
    tp_register_class(L, TP_VERIFIER_CLASS, none, NULL, 0);
    lua_createtable(L, 0, F_COUNT + 1);
    names = lua_gettop(L);
    for (int f = 0; f < F_COUNT; f++) {
        lua_pushinteger(L, f);
        lua_setfield(L, names, field_names[f]);
    }
    lua_pushvalue(L, names);
    push_upvalues(L, names);
    luaL_setfuncs(L, view_methods, UP_COUNT);  /* names.totable */
    lua_pop(L, 1);
    push_upvalues(L, names);
    tp_register_class(L, TP_VIEW_CLASS, view_meta, NULL, UP_COUNT);
    push_upvalues(L, names);
    tp_register_class(L, TP_VERIFIER_CLASS, meta, methods, UP_COUNT);
    lua_pushvalue(L, module);
    push_upvalues(L, names);
    luaL_setfuncs(L, functions, UP_COUNT);
    lua_settop(L, module);
}
