/* JWT (compact JWS) decode, verify and sign on cjose and jansson.
 *
 * cjose takes the algorithm from the token header, so every binding that
 * makes verification safe is enforced here before cjose is called: the
 * allow-list, `none`, key type and curve for the algorithm, HMAC key size,
 * exact signature lengths (cjose's HMAC check reads digest-length bytes of
 * the signature before comparing lengths), `crit`, and canonical
 * base64url.  Claims are checked only after the signature verified. */
#include <math.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/err.h>
#include "tp.h"

#define TP_DEFAULT_MAX_SIZE 16384
#define TP_DEFAULT_LEEWAY 60

/* ---- compact serialization ---------------------------------------------- */

typedef struct compact {
    const char *part[3];
    size_t len[3];
} compact;

/* Checks the structure (three parts, header and payload not empty);
 * returns a message for `malformed`, or NULL.  The encoding of each part is
 * checked when it is decoded. */
static const char *check_compact(lua_State *L, const char *token, size_t len, compact *c)
{
    static const char *const names[2] = { "header", "payload" };
    const char *end = token + len, *start = token, *dot;
    int parts = 0;
    while ((dot = memchr(start, '.', (size_t)(end - start)))) {
        if (parts < 2) {
            c->part[parts] = start;
            c->len[parts] = (size_t)(dot - start);
        }
        parts++;
        start = dot + 1;
    }
    if (parts < 3) {
        c->part[parts] = start;
        c->len[parts] = (size_t)(end - start);
    }
    parts++;
    if (parts == 5)
        return "an encrypted token (JWE) cannot be decoded or verified";
    if (parts != 3)
        return lua_pushfstring(L, "a JWS has 3 dot-separated parts, this has %d", parts);
    for (int i = 0; i < 2; i++)
        if (c->len[i] == 0)
            return lua_pushfstring(L, "the %s is empty", names[i]);
    return NULL;
}

/* Working memory for one call: base64url scratch and the three decoded
 * parts.  A buffer on the C stack serves typical tokens; larger ones get
 * Lua-owned memory, so no path needs to free anything. */
#define TP_SMALL_WORK 4096

typedef struct decoded {
    unsigned char *part[3];
    size_t len[3];
} decoded;

/* Decodes all three parts; returns NULL, or a message for `malformed`. */
static const char *decode_parts(lua_State *L, const compact *c, char *small, decoded *d)
{
    static const char *const names[3] = { "header", "payload", "signature" };
    size_t total = c->len[0] + c->len[1] + c->len[2];
    size_t need = total + 3 + tp_b64url_decoded_len(total) + 3 * 2;
    char *scratch = need <= TP_SMALL_WORK ? small : (char *)lua_newuserdata(L, need);
    unsigned char *out = (unsigned char *)scratch + total + 3;
    for (int i = 0; i < 3; i++) {
        int n = tp_b64url_decode(c->part[i], c->len[i], out, scratch);
        if (n < 0)
            return lua_pushfstring(L, "the %s is not canonical unpadded base64url", names[i]);
        d->part[i] = out;
        d->len[i] = (size_t)n;
        out += n + 2;
    }
    return NULL;
}

/* Parses a decoded header or payload into a Lua table pushed on the stack;
 * returns NULL, or a message for `malformed`. */
static const char *parse_part(lua_State *L, const decoded *d, int part)
{
    static const char *const names[2] = { "header", "payload" };
    const char *why;
    int is_object = 0;
    if (!tp_json_parse_lua(L, (const char *)d->part[part], d->len[part], &is_object, &why))
        return lua_pushfstring(L, "the %s is not valid JSON (%s)", names[part], why);
    if (!is_object) {
        lua_pop(L, 1);
        return lua_pushfstring(L, "the %s is not a JSON object", names[part]);
    }
    return NULL;
}

/* ---- decode ------------------------------------------------------------- */

static lua_Integer opt_max_size(lua_State *L, int idx)
{
    lua_Integer max = TP_DEFAULT_MAX_SIZE;
    lua_getfield(L, idx, "max_size");
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) <= 0)
            luaL_argerror(L, idx, "max_size must be a positive integer");
        max = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return max;
}

/***
 * Decodes a JWT without verifying it.  The result has `header`, `claims`
 * (JSON integers stay integers, null is `tokenpolicy.null`),
 * `signing_input` (the first two parts) and `signature` (raw bytes), and a
 * `__tostring` that shows alg, kid, typ, the main claims and the times.
 * @function decode
 * @tparam string token
 * @tparam[opt] table opts `max_size` (bytes, default 16384)
 * @treturn JWT or the fail triple (`too_large`, `malformed`)
 */
static int tp_jwt_decode(lua_State *L)
{
    static const char *const options[] = { "max_size", NULL };
    size_t len;
    const char *token = tp_check_string(L, 1, &len);
    lua_Integer max_size = TP_DEFAULT_MAX_SIZE;
    const char *msg;
    char small[TP_SMALL_WORK];
    decoded d;
    compact c;

    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        tp_check_options(L, 2, options);
        max_size = opt_max_size(L, 2);
    }
    if ((lua_Integer)len > max_size)
        return tp_fail(L, "too_large", "token of %I bytes is over the %I-byte limit",
                       (lua_Integer)len, max_size);
    if ((msg = check_compact(L, token, len, &c)) || (msg = decode_parts(L, &c, small, &d)))
        return tp_fail(L, "malformed", "%s", msg);
    lua_createtable(L, 0, 4);
    if ((msg = parse_part(L, &d, 0)))
        return tp_fail(L, "malformed", "%s", msg);
    lua_setfield(L, -2, "header");
    if ((msg = parse_part(L, &d, 1)))
        return tp_fail(L, "malformed", "%s", msg);
    lua_setfield(L, -2, "claims");
    lua_pushlstring(L, token, c.len[0] + 1 + c.len[1]);
    lua_setfield(L, -2, "signing_input");
    lua_pushlstring(L, (const char *)d.part[2], d.len[2]);
    lua_setfield(L, -2, "signature");
    luaL_setmetatable(L, TP_JWT_CLASS);
    return 1;
}

/* ---- verify ------------------------------------------------------------- */

typedef struct verify_opts {
    unsigned algs;
    lua_Integer now, leeway, max_size;
    int require_exp;
    int has_iss, has_aud, has_typ, has_require;
} verify_opts;

/* Checks that the option value at -1 is a string or a non-empty list of
 * strings. */
static void check_string_or_list(lua_State *L, int opts_idx, const char *name)
{
    if (lua_type(L, -1) == LUA_TSTRING) return;
    if (lua_type(L, -1) == LUA_TTABLE && lua_rawlen(L, -1) > 0) {
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
            int t = lua_rawgeti(L, -1, i);
            lua_pop(L, 1);
            if (t != LUA_TSTRING)
                luaL_argerror(L, opts_idx, lua_pushfstring(L, "%s must be a string or a list of strings", name));
        }
        return;
    }
    luaL_argerror(L, opts_idx, lua_pushfstring(L, "%s must be a string or a list of strings", name));
}

static lua_Integer check_opt_integer(lua_State *L, int opts_idx, const char *name, lua_Integer min)
{
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < min)
        luaL_argerror(L, opts_idx, lua_pushfstring(L, "%s must be an integer of at least %I", name, min));
    return lua_tointeger(L, -1);
}

static unsigned parse_algs(lua_State *L, int opts_idx)
{
    unsigned algs = 0;
    lua_Integer n = 0;
    if (!lua_istable(L, -1) || (n = (lua_Integer)lua_rawlen(L, -1)) == 0)
        luaL_argerror(L, opts_idx, "algs must be a non-empty list of algorithm names");
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        const char *name;
        int alg;
        lua_rawgeti(L, -1, i);
        name = lua_tolstring(L, -1, &len);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, opts_idx, "algs must be a list of strings");
        if ((alg = tp_alg_lookup(name, len)) < 0)
            luaL_argerror(L, opts_idx, lua_pushfstring(L, "algs: '%s' is not a supported signature algorithm"
                                                       " (none is never allowed)", name));
        algs |= 1u << alg;
        lua_pop(L, 1);
    }
    return algs;
}

/* One pass over the options table: rejects unknown names and reads all
 * scalar options; list options are only type-checked here and read when
 * the claims are checked. */
static void parse_verify_opts(lua_State *L, int idx, verify_opts *o)
{
    o->algs = TP_ALGS_ASYMMETRIC;
    o->now = (lua_Integer)time(NULL);
    o->leeway = TP_DEFAULT_LEEWAY;
    o->max_size = TP_DEFAULT_MAX_SIZE;
    o->require_exp = 1;
    o->has_iss = o->has_aud = o->has_typ = o->has_require = 0;
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(key, "now") == 0) {
            o->now = check_opt_integer(L, idx, "now", LUA_MININTEGER);
        } else if (strcmp(key, "leeway") == 0) {
            o->leeway = check_opt_integer(L, idx, "leeway", 0);
        } else if (strcmp(key, "max_size") == 0) {
            o->max_size = check_opt_integer(L, idx, "max_size", 1);
        } else if (strcmp(key, "algs") == 0) {
            o->algs = parse_algs(L, idx);
        } else if (strcmp(key, "iss") == 0) {
            check_string_or_list(L, idx, "iss");
            o->has_iss = 1;
        } else if (strcmp(key, "aud") == 0) {
            check_string_or_list(L, idx, "aud");
            o->has_aud = 1;
        } else if (strcmp(key, "typ") == 0) {
            if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, idx, "typ must be a string");
            o->has_typ = 1;
        } else if (strcmp(key, "require") == 0) {
            if (lua_type(L, -1) != LUA_TTABLE) luaL_argerror(L, idx, "require must be a list of claim names");
            for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
                if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                    luaL_argerror(L, idx, "require must be a list of claim names");
                lua_pop(L, 1);
            }
            o->has_require = 1;
        } else if (strcmp(key, "require_exp") == 0) {
            if (!lua_isboolean(L, -1)) luaL_argerror(L, idx, "require_exp must be a boolean");
            o->require_exp = lua_toboolean(L, -1);
        } else if (lua_type(L, -2) == LUA_TSTRING) {
            luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", key));
        } else {
            luaL_argerror(L, idx, "option names must be strings");
        }
        lua_pop(L, 1);
    }
}

/* Reads a NumericDate claim from the claims table at idx.  Returns 0 when
 * absent, 1 when set (in *out, rounded toward the stricter side given by
 * round_up), -1 when it is not a number in range. */
static int numeric_date(lua_State *L, int idx, const char *name, int round_up, lua_Integer *out)
{
    int type = lua_getfield(L, idx, name);
    double d;
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_isinteger(L, -1)) {
        *out = lua_tointeger(L, -1);
        lua_pop(L, 1);
        return 1;
    }
    d = type == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : NAN;
    lua_pop(L, 1);
    if (!(d > -9.0e18 && d < 9.0e18)) return -1;  /* also NaN and non-numbers */
    *out = (lua_Integer)(round_up ? ceil(d) : floor(d));
    return 1;
}

/* Media types compare case-insensitively, and "application/" may be left
 * out (RFC 7515 section 4.1.9), so "at+jwt" matches "application/at+JWT". */
static int typ_equal(const char *a, const char *b)
{
    if (strncasecmp(a, "application/", 12) == 0) a += 12;
    if (strncasecmp(b, "application/", 12) == 0) b += 12;
    return strcasecmp(a, b) == 0;
}

/* 1 when the string at value_idx equals the option at -1 (a string or a
 * list of strings). */
static int matches_option(lua_State *L, int value_idx)
{
    size_t len, olen;
    const char *s, *o;
    if (lua_type(L, value_idx) != LUA_TSTRING) return 0;
    s = lua_tolstring(L, value_idx, &len);
    if (lua_type(L, -1) == LUA_TSTRING) {
        o = lua_tolstring(L, -1, &olen);
        return olen == len && memcmp(o, s, len) == 0;
    }
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
        int found;
        lua_rawgeti(L, -1, i);
        o = lua_tolstring(L, -1, &olen);
        found = olen == len && memcmp(o, s, len) == 0;
        lua_pop(L, 1);
        if (found) return 1;
    }
    return 0;
}

/* Checks header typ and the claims (tables at hdr and cl); pushes the fail
 * triple and returns 3 on a failure, else returns 0 with the stack as it
 * was. */
static int check_claims(lua_State *L, int opts_idx, const verify_opts *o, int hdr, int cl)
{
    lua_Integer exp, nbf, iat;
    int has;
    char safe[40], span[32];

    has = numeric_date(L, cl, "exp", 0, &exp);
    if (has < 0) return tp_fail(L, "malformed", "exp is not a number");
    if (has == 0 && o->require_exp) return tp_fail(L, "missing_claim", "exp is required");
    /* Valid while now < exp + leeway (RFC 7519 4.1.4: "on or after" expires). */
    if (has && tp_sub_sat(o->now, o->leeway) >= exp)
        return tp_fail(L, "expired", "expired %s ago", tp_format_span(span, tp_sub_sat(o->now, exp)));
    has = numeric_date(L, cl, "nbf", 1, &nbf);
    if (has < 0) return tp_fail(L, "malformed", "nbf is not a number");
    /* Not yet valid while now + leeway < nbf (RFC 7519 4.1.5: valid "on or after"). */
    if (has && tp_add_sat(o->now, o->leeway) < nbf)
        return tp_fail(L, "not_yet_valid", "valid only in %s", tp_format_span(span, tp_sub_sat(nbf, o->now)));
    has = numeric_date(L, cl, "iat", 0, &iat);
    if (has < 0) return tp_fail(L, "malformed", "iat is not a number");
    if (has && iat > tp_add_sat(o->now, o->leeway))
        return tp_fail(L, "issued_in_future", "issued %s in the future", tp_format_span(span, tp_sub_sat(iat, o->now)));

    if (o->has_iss) {
        int ok;
        if (lua_getfield(L, cl, "iss") == LUA_TNIL) return tp_fail(L, "missing_claim", "iss is required");
        lua_getfield(L, opts_idx, "iss");
        ok = matches_option(L, -2);
        lua_pop(L, 1);
        if (!ok) {
            size_t len = 0;
            const char *iss = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            return tp_fail(L, "bad_issuer", "issuer %s is not accepted",
                           iss ? tp_printable(safe, iss, len) : "(not a string)");
        }
        lua_pop(L, 1);
    }
    if (o->has_aud) {
        int ok = 0, type = lua_getfield(L, cl, "aud");
        if (type == LUA_TNIL) return tp_fail(L, "missing_claim", "aud is required");
        lua_getfield(L, opts_idx, "aud");
        if (type == LUA_TTABLE) {
            for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -2) && !ok; i++) {
                lua_rawgeti(L, -2, i);
                lua_insert(L, -2);      /* value below the option */
                ok = matches_option(L, -2);
                lua_remove(L, -2);
            }
        } else {
            ok = matches_option(L, -2);
        }
        lua_pop(L, 2);
        if (!ok) return tp_fail(L, "bad_audience", "the token is not meant for this audience");
    }
    if (o->has_typ) {
        size_t len = 0;
        const char *typ = lua_getfield(L, hdr, "typ") == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        int ok;
        lua_getfield(L, opts_idx, "typ");
        ok = typ && typ_equal(typ, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!ok)
            return tp_fail(L, "bad_type", "typ %s is not accepted", typ ? tp_printable(safe, typ, len) : "(absent)");
        lua_pop(L, 1);
    }
    if (o->has_require) {
        lua_getfield(L, opts_idx, "require");
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
            lua_rawgeti(L, -1, i);
            if (lua_rawget(L, cl) == LUA_TNIL) {
                lua_rawgeti(L, -2, i);
                return tp_fail(L, "missing_claim", "%s is required",
                               tp_printable(safe, lua_tostring(L, -1), lua_rawlen(L, -1)));
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Whether key may verify or sign with alg: the key's own algorithm set
 * already encodes type, curve, HMAC size and a JWK's `alg`. */
static int key_fits(const tp_key *key, int alg)
{
    return (key->algs >> alg) & 1u;
}

/* The signature must have the exact length the algorithm and key produce. */
static int signature_length_ok(const tp_key *key, int alg, size_t siglen)
{
    if (tp_algs[alg].kty == TP_KTY_OCT) return siglen == tp_algs[alg].hash_bytes;
    if (tp_algs[alg].kty == TP_KTY_EC) return siglen == 2 * tp_algs[alg].ec_coord;
    return siglen == (size_t)(key->bits + 7) / 8;
}

/* Whether a key of the set has exactly this kid. */
static int keyset_has_kid(const tp_keyset *set, const char *kid, size_t kidlen)
{
    for (size_t i = 0; i < set->count; i++)
        if (set->key[i].kid && strlen(set->key[i].kid) == kidlen && memcmp(set->key[i].kid, kid, kidlen) == 0)
            return 1;
    return 0;
}

/***
 * Verifies a JWT's signature with a key set, then its claims.
 *
 * Keys: with a `kid`, keys of that kid (or, when none has it, keys without
 * a kid); without a `kid`, every key.  Only keys that fit the algorithm
 * (type, curve, HMAC size, a JWK's `alg`) are tried.  Time checks use
 * `leeway`: expired when `now - leeway >= exp`, not yet valid when
 * `now + leeway < nbf`, issued in the future when `iat > now + leeway`.
 * @function verify
 * @tparam string token
 * @tparam KeySet keyset
 * @tparam[opt] table opts `algs`, `iss`, `aud`, `typ`, `leeway`, `require`,
 *   `require_exp`, `max_size`, `now`
 * @treturn table claims
 * @treturn table header
 * @return or the fail triple
 */
static int tp_jwt_verify(lua_State *L)
{
    size_t len, kidlen = 0, alglen;
    const char *token = tp_check_string(L, 1, &len);
    tp_keyset *set = (tp_keyset *)luaL_testudata(L, 2, TP_KEYSET_CLASS);  /* NULL: a JwksSource */
    verify_opts o;
    compact c;
    const char *msg, *algname, *kid = NULL;
    char small[TP_SMALL_WORK], safe[40];
    decoded d;
    int alg, hdr, cl, tried = 0, verified = 0, kid_known = 0, pool = 0, fetched = 0;
    int source = set == NULL;

    if (source) tp_check_jwks(L, 2);
    parse_verify_opts(L, 3, &o);
    lua_settop(L, 3);
    if ((lua_Integer)len > o.max_size)
        return tp_fail(L, "too_large", "token of %I bytes is over the %I-byte limit", (lua_Integer)len, o.max_size);
    if ((msg = check_compact(L, token, len, &c)) || (msg = decode_parts(L, &c, small, &d)))
        return tp_fail(L, "malformed", "%s", msg);
    if ((msg = parse_part(L, &d, 0)))
        return tp_fail(L, "malformed", "%s", msg);
    hdr = lua_gettop(L);

    switch (lua_getfield(L, hdr, "alg")) {
    case LUA_TNIL: return tp_fail(L, "malformed", "the header has no alg");
    case LUA_TSTRING: break;
    default: return tp_fail(L, "malformed", "alg is not a string");
    }
    algname = lua_tolstring(L, -1, &alglen);
    lua_pop(L, 1);  /* still referenced by the header table */
    if (strcasecmp(algname, "none") == 0)
        return tp_fail(L, "alg_not_allowed", "alg none is never accepted");
    if ((alg = tp_alg_lookup(algname, alglen)) < 0)
        return tp_fail(L, "alg_not_allowed", "alg %s is not supported", tp_printable(safe, algname, alglen));
    if (!((o.algs >> alg) & 1u))
        return tp_fail(L, "alg_not_allowed", "alg %s is not in the allow-list", tp_algs[alg].name);
    if (lua_getfield(L, hdr, "crit") != LUA_TNIL) {
        if (!lua_istable(L, -1) || lua_rawlen(L, -1) == 0)
            return tp_fail(L, "malformed", "crit must be a non-empty array");
        return tp_fail(L, "unsupported_crit", "the token requires extensions this verifier does not implement");
    }
    lua_pop(L, 1);
    if (source) {  /* the source's current set stays on the stack while in use */
        int n = tp_jwks_keys(L, 2, &fetched);
        if (n != 1) return n;
        set = (tp_keyset *)lua_touserdata(L, -1);
    }
    switch (lua_getfield(L, hdr, "kid")) {
    case LUA_TNIL: break;
    case LUA_TSTRING:
        kid = lua_tolstring(L, -1, &kidlen);
        kid_known = keyset_has_kid(set, kid, kidlen);
        break;
    default: return tp_fail(L, "malformed", "kid is not a string");
    }
    lua_pop(L, 1);
    if (source && kid && !kid_known && !fetched && tp_jwks_refetch(L, 2)) {
        /* A JwksSource that did not know the kid: retry with the new set. */
        set = (tp_keyset *)lua_touserdata(L, -1);
        kid_known = keyset_has_kid(set, kid, kidlen);
    }

    for (size_t i = 0; i < set->count && !verified; i++) {
        tp_key *key = &set->key[i];
        if (kid_known) {
            if (!key->kid || strlen(key->kid) != kidlen || memcmp(key->kid, kid, kidlen) != 0) continue;
        } else if (kid && key->kid) {
            continue;  /* a key with another kid is never tried */
        }
        pool++;
        if (!key_fits(key, alg)) continue;
        tried++;
        if (!signature_length_ok(key, alg, d.len[2])) continue;
        verified = tp_key_verify(set, key, alg, (const unsigned char *)token, c.len[0] + 1 + c.len[1],
                                 d.part[2], d.len[2]);
    }
    if (!verified) {
        if (tried)
            return tp_fail(L, "bad_signature", "the signature does not verify");
        if (pool)
            return tp_fail(L, "alg_not_allowed", "no key%s%s fits alg %s", kid_known ? " with kid " : "",
                           kid_known ? tp_printable(safe, kid, kidlen) : "", tp_algs[alg].name);
        if (kid)
            return tp_fail(L, "unknown_key", "no key has kid %s", tp_printable(safe, kid, kidlen));
        return tp_fail(L, "unknown_key", "the key set has no key for alg %s", tp_algs[alg].name);
    }

    if ((msg = parse_part(L, &d, 1)))
        return tp_fail(L, "malformed", "%s", msg);
    cl = lua_gettop(L);
    if (check_claims(L, 3, &o, hdr, cl))
        return 3;
    lua_pushvalue(L, hdr);
    return 2;
}

/* ---- sign --------------------------------------------------------------- */

/* The string option at idx (NULL when nil); raises for other types. */
static const char *opt_string(lua_State *L, int idx, const char *name)
{
    if (lua_isnil(L, idx)) return NULL;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_argerror(L, 3, lua_pushfstring(L, "%s must be a string", name));
    return lua_tostring(L, idx);
}

static int default_alg(const tp_key *key)
{
    for (int a = 0; a < TP_ALG_COUNT; a++) {
        int pick = a;
        if (key->kty == TP_KTY_RSA) pick = TP_ALG_RS256;
        if ((key->algs >> pick) & 1u) return pick;
    }
    return -1;
}

/***
 * Signs claims into a compact JWS with a private key of the set.
 * @function sign
 * @tparam table claims
 * @tparam KeySet key a set holding a private key (or an HMAC secret)
 * @tparam[opt] table opts `alg` (default RS256, ES256/384/512 by curve,
 *   HS256), `kid` (selects the key and goes into the header; default the
 *   key's kid), `typ` (default "JWT"), `header` (more header members)
 * @treturn string token, or the fail triple (`unknown_key`, `alg_not_allowed`)
 */
static int tp_jwt_sign(lua_State *L)
{
    static const char *const options[] = { "alg", "kid", "typ", "header", NULL };
    const char *algname = NULL, *kid = NULL, *typ = "JWT";
    tp_keyset *set;
    const tp_key *key = NULL;
    tp_box *box;
    char err_text[128];
    cjose_err err;
    const char *out;
    char *payload;
    int alg = -1;

    luaL_checktype(L, 1, LUA_TTABLE);
    set = tp_check_keyset(L, 2);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        tp_check_options(L, 3, options);
        lua_getfield(L, 3, "alg");
        lua_getfield(L, 3, "kid");
        lua_getfield(L, 3, "typ");
        lua_getfield(L, 3, "header");
        algname = opt_string(L, -4, "alg");
        kid = opt_string(L, -3, "kid");
        if (!lua_isnil(L, -2)) typ = opt_string(L, -2, "typ");
        if (!lua_isnil(L, -1) && !lua_istable(L, -1)) luaL_argerror(L, 3, "header must be a table");
        lua_pop(L, 4);  /* the strings stay alive in opts */
    }
    lua_settop(L, 3);
    if (algname) {
        if ((alg = tp_alg_lookup(algname, strlen(algname))) < 0)
            return luaL_argerror(L, 3, lua_pushfstring(L, "alg '%s' is not a supported signature algorithm", algname));
    }
    for (size_t i = 0; i < set->count && !key; i++) {
        const tp_key *k = &set->key[i];
        if (!k->has_private) continue;
        if (kid && k->kid && strcmp(k->kid, kid) != 0) continue;
        if (alg >= 0 && !key_fits(k, alg)) continue;
        key = k;
    }
    if (!key) {
        for (size_t i = 0; i < set->count; i++)
            if (set->key[i].has_private && (!kid || !set->key[i].kid || strcmp(set->key[i].kid, kid) == 0))
                return tp_fail(L, "alg_not_allowed", "no private key in the set fits alg %s", algname);
        return tp_fail(L, "unknown_key", "the key set holds no private key%s", kid ? " with that kid" : "");
    }
    if (alg < 0) alg = default_alg(key);
    if (!kid) kid = key->kid;

    box = tp_box_new(L);
    if (!(box->json[0] = tp_json_from_lua(L, 1, err_text, sizeof err_text)))
        return luaL_argerror(L, 1, err_text);
    if (!json_is_object(box->json[0]))
        return luaL_argerror(L, 1, "claims must be a table with string keys");
    box->json[1] = json_object();
    if (!lua_isnil(L, 3)) {
        lua_getfield(L, 3, "header");
        if (lua_istable(L, -1)) {
            json_t *extra = tp_json_from_lua(L, -1, err_text, sizeof err_text);
            if (!extra) return luaL_argerror(L, 3, err_text);
            if (!json_is_object(extra) || json_object_get(extra, "alg")) {
                json_decref(extra);
                return luaL_argerror(L, 3, "header must be a table of names other than alg (use opts.alg)");
            }
            json_object_update(box->json[1], extra);
            json_decref(extra);
        }
        lua_pop(L, 1);
    }
    json_object_set_new(box->json[1], "alg", json_string(tp_algs[alg].name));
    if (typ && !json_object_get(box->json[1], "typ")) json_object_set_new(box->json[1], "typ", json_string(typ));
    if (kid) json_object_set_new(box->json[1], "kid", json_string(kid));

    payload = json_dumps(box->json[0], JSON_COMPACT | JSON_SORT_KEYS);
    if (!payload) return luaL_error(L, "sign: out of memory");
    box->jws = cjose_jws_sign(key->jwk, (cjose_header_t *)box->json[1], (const uint8_t *)payload, strlen(payload), &err);
    free(payload);
    if (!box->jws || !cjose_jws_export(box->jws, &out, &err))
        return tp_fail(L, "malformed", "signing failed (%s)", err.message);
    lua_pushstring(L, out);
    tp_box_clear(box);
    return 1;
}

/* ---- JWT __tostring ----------------------------------------------------- */

/* Appends s with everything but printable ASCII replaced by '?', cut at
 * 96 bytes: claims come from the token and may hold terminal escapes. */
static void add_printable(luaL_Buffer *b, const char *s, size_t len)
{
    size_t n = len < 96 ? len : 96;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        luaL_addchar(b, (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?');
    }
    if (len > n) luaL_addstring(b, "...");
}

/* Appends the value at -1 (string, number, or list of those); pops it. */
static void add_value(lua_State *L, luaL_Buffer *b)
{
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        lua_pop(L, 1);  /* the buffer may use the stack: pop first, the */
        add_printable(b, s, len); /* string stays referenced by its table */
    } else if (t == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        int tbl = lua_gettop(L);
        for (lua_Integer i = 1; i <= n && i <= 8; i++) {
            lua_rawgeti(L, tbl, i);
            if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
                size_t len;
                const char *s = lua_tolstring(L, -1, &len);
                if (i > 1) luaL_addstring(b, ", ");
                lua_pop(L, 1);
                add_printable(b, s, len);
            } else {
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
        luaL_addstring(b, "?");
    }
}

static int tp_jwt__tostring(lua_State *L)
{
    static const char *const shown[] = { "iss", "sub", "aud", "scope", "azp", "jti", NULL };
    static const char *const times[] = { "iat", "nbf", "exp", NULL };
    lua_Integer now = (lua_Integer)time(NULL);
    luaL_Buffer b;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "header");   /* 2 */
    lua_getfield(L, 1, "claims");   /* 3 */
    if (!lua_istable(L, 2)) { lua_newtable(L); lua_replace(L, 2); }
    if (!lua_istable(L, 3)) { lua_newtable(L); lua_replace(L, 3); }
    /* Pre-push every value so the buffer never interleaves with the stack. */
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "JWT");
    {
        static const char *const hdr[] = { "alg", "kid", "typ", NULL };
        for (int i = 0; hdr[i]; i++) {
            lua_getfield(L, 2, hdr[i]);
            if (lua_isnil(L, -1)) { lua_pop(L, 1); continue; }
            luaL_addstring(&b, i ? ", " : " ");
            if (i) { luaL_addstring(&b, hdr[i]); luaL_addchar(&b, ' '); }
            add_value(L, &b);
        }
    }
    for (int i = 0; shown[i]; i++) {
        lua_getfield(L, 3, shown[i]);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); continue; }
        luaL_addstring(&b, "\n  ");
        luaL_addstring(&b, shown[i]);
        luaL_addstring(&b, &"       "[strlen(shown[i])]);
        add_value(L, &b);
    }
    for (int i = 0; times[i]; i++) {
        char when[32], span[32];
        lua_Integer t;
        lua_getfield(L, 3, times[i]);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); continue; }
        if (lua_isinteger(L, -1)) {
            t = lua_tointeger(L, -1);
        } else {
            double d = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : NAN;
            if (!(d > -9.0e18 && d < 9.0e18)) { lua_pop(L, 1); continue; }  /* also NaN */
            t = (lua_Integer)d;
        }
        lua_pop(L, 1);
        luaL_addstring(&b, "\n  ");
        luaL_addstring(&b, times[i]);
        luaL_addstring(&b, "    ");
        luaL_addstring(&b, tp_format_utc(when, t));
        if (strcmp(times[i], "exp") == 0)
            luaL_addstring(&b, t > now ? " (expires in " : " (expired ");
        else
            luaL_addstring(&b, t > now ? " (in " : " (");
        luaL_addstring(&b, tp_format_span(span, t > now ? tp_sub_sat(t, now) : tp_sub_sat(now, t)));
        luaL_addstring(&b, t > now ? ")" : " ago)");
    }
    luaL_pushresult(&b);
    return 1;
}

void tp_open_jwt(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "decode", tp_jwt_decode },
        { "verify", tp_jwt_verify },
        { "sign", tp_jwt_sign },
        { NULL, NULL }
    };
    luaL_newmetatable(L, TP_JWT_CLASS);
    lua_pushcfunction(L, tp_jwt__tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
}
