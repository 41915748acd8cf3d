/***
 * JWTs: decode, verify and sign compact JWS tokens.
 * @module tokenpolicy.core
 */
/* JWT (compact JWS) decode, verify and sign on cjose and jansson.
 *
 * cjose takes the algorithm from the token header, so every binding that
 * makes verification safe is enforced here before cjose is called: the
 * allow-list, `none`, key type and curve for the algorithm, HMAC key size,
 * exact signature lengths (cjose's HMAC check reads digest-length bytes of
 * the signature before comparing lengths), `crit`, and canonical
 * base64url.  Claims are checked only after the signature verified. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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
 * parts.  A buffer on the C stack (TP_JWS_WORK bytes) serves typical
 * tokens; larger ones get Lua-owned memory, so no path needs to free
 * anything. */

/* Decodes all three parts; returns NULL, or a message for `malformed`. */
static const char *decode_parts(lua_State *L, const compact *c, char *small, tp_jws *j)
{
    static const char *const names[3] = { "header", "payload", "signature" };
    size_t total = c->len[0] + c->len[1] + c->len[2];
    size_t need = total + 3 + tp_b64url_decoded_len(total) + 3 * 2;
    char *scratch = need <= TP_JWS_WORK ? small : (char *)lua_newuserdata(L, need);
    unsigned char *out = (unsigned char *)scratch + total + 3;
    for (int i = 0; i < 3; i++) {
        int n = tp_b64url_decode(c->part[i], c->len[i], out, scratch);
        if (n < 0)
            return lua_pushfstring(L, "the %s is not canonical unpadded base64url", names[i]);
        j->part[i] = out;
        j->plen[i] = (size_t)n;
        out += n + 2;
    }
    return NULL;
}

const char *tp_jwt_parse_part(lua_State *L, const tp_jws *j, int part)
{
    static const char *const names[2] = { "header", "payload" };
    const char *why;
    int is_object = 0;
    if (!tp_json_parse_lua(L, (const char *)j->part[part], j->plen[part], &is_object, &why))
        return lua_pushfstring(L, "the %s is not valid JSON (%s)", names[part], why);
    if (!is_object) {
        lua_pop(L, 1);
        return lua_pushfstring(L, "the %s is not a JSON object", names[part]);
    }
    return NULL;
}

/* ---- forgiving input ---------------------------------------------------- */

/* Whether the token may need strip_token: a compact JWS starts with 'e'
 * (base64url of '{'), so only a space or a 'B' of "Bearer" in front, or
 * a space at the end, sends a token the slow way. */
static int needs_strip(const char *token, size_t len)
{
    unsigned char first = len ? (unsigned char)token[0] : 'e', last = len ? (unsigned char)token[len - 1] : 'e';
    return isspace(first) || first == 'B' || first == 'b' || isspace(last);
}

/* Strips what people paste along with a token: surrounding whitespace (C
 * isspace, as WLCG discovery does; a file's trailing newline) and an
 * Authorization header's "Bearer" scheme (any case) with the spaces after
 * it. */
static const char *strip_token(const char *token, size_t *len)
{
    const char *end = token + *len;
    while (token < end && isspace((unsigned char)*token)) token++;
    while (end > token && isspace((unsigned char)end[-1])) end--;
    /* cppcheck-suppress knownConditionTrueFalse ; false positive: true for any token of 6 bytes or more */
    if (end - token >= 6 && strncasecmp(token, "bearer", 6) == 0 &&
        (end - token == 6 || token[6] == ' ' || token[6] == '\t')) {
        token += 6;
        while (token < end && (*token == ' ' || *token == '\t')) token++;
    }
    *len = (size_t)(end - token);
    return token;
}

static int contains(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(s + i, needle, n) == 0) return 1;
    return 0;
}

/* A hint for a malformed token that is something else: a file path
 * (starts with "/", "./", "../" or "~/", or holds a '/', which base64url
 * never does, and fewer than two dots), or a key (PEM, or a JSON object
 * with a "kty" or "keys" member). */
static const char *token_hint(const char *token, size_t len)
{
    static const char *const starts[] = { "/", "./", "../", "~/", NULL };
    size_t dots = 0;
    if (len >= 11 && memcmp(token, "-----BEGIN ", 11) == 0)
        return " (looks like a key: load it with tp.keys(material))";
    if (len && token[0] == '{' && (contains(token, len, "\"kty\"") || contains(token, len, "\"keys\"")))
        return " (looks like a key: load it with tp.keys(material))";
    for (int i = 0; starts[i]; i++)
        if (len >= strlen(starts[i]) && memcmp(token, starts[i], strlen(starts[i])) == 0)
            return " (looks like a file path: read it with tp.read_token(path))";
    for (size_t i = 0; i < len; i++) dots += token[i] == '.';
    if (dots < 2 && memchr(token, '/', len))
        return " (looks like a file path: read it with tp.read_token(path))";
    return "";
}

/* The malformed fail triple for a token that did not parse, with a hint
 * when the input looks like something else. */
static int fail_token(lua_State *L, const char *msg, const char *token, size_t len)
{
    if (len == 0) return tp_fail(L, "malformed", "the token is empty");
    return tp_fail(L, "malformed", "%s%s", msg, token_hint(token, len));
}

const char *tp_jwt_strip(const char *token, size_t *len)
{
    return needs_strip(token, *len) ? strip_token(token, len) : token;
}

int tp_jwt_split(lua_State *L, const char *token, size_t len, lua_Integer max_size, char *small, tp_jws *j)
{
    const char *msg;
    compact c;
    if ((lua_Integer)len > max_size)
        return tp_fail(L, "too_large", "token of %I bytes is over the %I-byte limit", (lua_Integer)len, max_size);
    if (needs_strip(token, len)) token = strip_token(token, &len);
    if ((msg = check_compact(L, token, len, &c)) || (msg = decode_parts(L, &c, small, j)))
        return fail_token(L, msg, token, len);
    j->token = token;
    j->len = len;
    j->input_len = c.len[0] + 1 + c.len[1];
    return 0;
}

/* ---- decode ------------------------------------------------------------- */

/* Upvalues of decode and verify: the metatables they give their results. */
#define CLAIMS_META lua_upvalueindex(1)
#define JWT_META lua_upvalueindex(2)

/***
 * Decodes a JWT without verifying it.  The result has `header`, `claims`
 * (JSON integers stay integers, null is `tokenpolicy.null`),
 * `signing_input` (the first two parts) and `signature` (raw bytes), and a
 * `__tostring` that shows alg, kid, typ and every claim (the known ones
 * first, the times as times).  Surrounding whitespace and a "Bearer "
 * prefix are stripped first.
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
    char small[TP_JWS_WORK];
    tp_jws j;

    tp_opts(L, 2, options);
    max_size = tp_opt_integer(L, 2, "max_size", TP_DEFAULT_MAX_SIZE, 1);
    if (tp_jwt_split(L, token, len, max_size, small, &j))
        return 3;
    lua_createtable(L, 0, 4);
    if ((msg = tp_jwt_parse_part(L, &j, 0)))
        return tp_fail(L, "malformed", "%s", msg);
    lua_pushvalue(L, CLAIMS_META);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "header");
    if ((msg = tp_jwt_parse_part(L, &j, 1)))
        return tp_fail(L, "malformed", "%s", msg);
    lua_pushvalue(L, CLAIMS_META);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "claims");
    lua_pushlstring(L, j.token, j.input_len);
    lua_setfield(L, -2, "signing_input");
    lua_pushlstring(L, (const char *)j.part[2], j.plen[2]);
    lua_setfield(L, -2, "signature");
    lua_pushvalue(L, JWT_META);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- verify ------------------------------------------------------------- */

/* The allow-list from the string or list at -1 (checked by
 * tp_opt_strings). */
static unsigned parse_algs(lua_State *L, int opts_idx)
{
    unsigned algs = 0;
    int single = lua_type(L, -1) == LUA_TSTRING;
    lua_Integer n = single ? 1 : (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        const char *name;
        int alg;
        if (single) lua_pushvalue(L, -1); else lua_rawgeti(L, -1, i);
        name = lua_tolstring(L, -1, &len);
        if ((alg = tp_alg_lookup(name, len)) < 0)
            luaL_argerror(L, opts_idx, lua_pushfstring(L, "algs: '%s' is not a supported signature algorithm"
                                                       " (none is never allowed)", name));
        /* cppcheck-suppress [shiftTooManyBits, signConversionCond] ; alg >= 0 here: luaL_argerror does not return */
        algs |= 1u << alg;
        lua_pop(L, 1);
    }
    return algs;
}

/* Reads the options verify and the verifier share from the table at idx
 * (already checked by tp_opts; `now` is verify's alone and read by it).
 * The values of iss, aud and require stay pushed (their indices in o) for
 * the claim checks. */
void tp_jwt_read_opts(lua_State *L, int idx, tp_verify_opts *o)
{
    o->leeway = tp_opt_integer(L, idx, "leeway", TP_DEFAULT_LEEWAY, 0);
    o->max_size = tp_opt_integer(L, idx, "max_size", TP_DEFAULT_MAX_SIZE, 1);
    o->require_exp = tp_opt_boolean(L, idx, "require_exp", 1);
    o->typ = tp_opt_string(L, idx, "typ", NULL, NULL);
    if (tp_opt_strings(L, idx, "algs")) {
        o->algs = parse_algs(L, idx);
        lua_pop(L, 1);
    }
    if (tp_opt_strings(L, idx, "iss")) o->iss = lua_gettop(L);
    if (tp_opt_strings(L, idx, "aud")) o->aud = lua_gettop(L);
    /* An empty require list (built by a caller) requires nothing. */
    if (lua_getfield(L, idx, "require") == LUA_TTABLE && lua_rawlen(L, -1) == 0) {
        lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
        if (tp_opt_strings(L, idx, "require")) o->require = lua_gettop(L);
    }
}

void tp_jwt_default_opts(tp_verify_opts *o)
{
    o->algs = TP_ALGS_ASYMMETRIC;
    o->leeway = TP_DEFAULT_LEEWAY;
    o->max_size = TP_DEFAULT_MAX_SIZE;
    o->require_exp = 1;
    o->iss = o->aud = o->require = 0;
    o->typ = NULL;
    o->now = 0;
}

/* Reads verify's options table at idx through the shared readers. */
static void parse_verify_opts(lua_State *L, int idx, tp_verify_opts *o)
{
    static const char *const options[] = {
        "algs", "iss", "aud", "typ", "leeway", "require", "require_exp", "max_size", "now", NULL
    };
    tp_jwt_default_opts(o);
    if (!tp_opts(L, idx, options)) {
        o->now = (lua_Integer)time(NULL);
        return;
    }
    {
        int has_now = lua_getfield(L, idx, "now") != LUA_TNIL;
        lua_pop(L, 1);
        o->now = has_now ? tp_opt_integer(L, idx, "now", 0, LUA_MININTEGER) : (lua_Integer)time(NULL);
    }
    tp_jwt_read_opts(L, idx, o);
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
 * out (RFC 7515 section 4.1.9), so "at+jwt" matches "application/at+JWT".
 * The header's typ is not NUL-terminated (the JSON parser refuses NUL). */
static int typ_equal(const char *typ, size_t len, const char *want)
{
    size_t wlen;
    if (len >= 12 && strncasecmp(typ, "application/", 12) == 0) typ += 12, len -= 12;
    if (strncasecmp(want, "application/", 12) == 0) want += 12;
    wlen = strlen(want);
    return len == wlen && strncasecmp(typ, want, len) == 0;
}

int tp_jwt_matches(lua_State *L, int opt, const char *s, size_t len)
{
    size_t olen;
    const char *o;
    if (lua_type(L, opt) == LUA_TSTRING) {
        o = lua_tolstring(L, opt, &olen);
        return olen == len && memcmp(o, s, len) == 0;
    }
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, opt); i++) {
        int found;
        lua_rawgeti(L, opt, i);
        o = lua_tolstring(L, -1, &olen);
        found = olen == len && memcmp(o, s, len) == 0;
        lua_pop(L, 1);
        if (found) return 1;
    }
    return 0;
}

/* 1 when the value at value_idx is a string the option at opt accepts. */
static int value_matches(lua_State *L, int value_idx, int opt)
{
    size_t len;
    const char *s;
    if (lua_type(L, value_idx) != LUA_TSTRING) return 0;
    s = lua_tolstring(L, value_idx, &len);
    return tp_jwt_matches(L, opt, s, len);
}

/* A string member of a header table, its kind and its text (which the
 * table keeps alive). */
static int header_member(lua_State *L, int hdr, const char *name, const char **s, size_t *len)
{
    int type = lua_getfield(L, hdr, name), kind;
    *s = NULL;
    *len = 0;
    kind = type == LUA_TNIL ? TP_ABSENT : type == LUA_TSTRING ? TP_STRING : TP_OTHER;
    if (kind == TP_STRING) *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1);
    return kind;
}

void tp_jwt_header_of(lua_State *L, int hdr, tp_jwt_header *h)
{
    hdr = lua_absindex(L, hdr);
    h->alg_kind = header_member(L, hdr, "alg", &h->alg, &h->alg_len);
    h->kid_kind = header_member(L, hdr, "kid", &h->kid, &h->kid_len);
    h->typ_kind = header_member(L, hdr, "typ", &h->typ, &h->typ_len);
    if (lua_getfield(L, hdr, "crit") == LUA_TNIL)
        h->crit = 0;
    else
        h->crit = lua_istable(L, -1) && lua_rawlen(L, -1) > 0 ? 1 : -1;
    lua_pop(L, 1);
}

void tp_jwt_claims_of(lua_State *L, const tp_verify_opts *o, int cl, tp_jwt_claims *c)
{
    int type;
    cl = lua_absindex(L, cl);
    memset(c, 0, sizeof *c);
    c->exp = numeric_date(L, cl, "exp", 0, &c->exp_v);
    c->nbf = numeric_date(L, cl, "nbf", 1, &c->nbf_v);
    c->iat = numeric_date(L, cl, "iat", 0, &c->iat_v);
    if (o->iss) {
        type = lua_getfield(L, cl, "iss");
        c->iss = type == LUA_TNIL ? TP_ABSENT : type == LUA_TSTRING ? TP_STRING : TP_OTHER;
        if (c->iss == TP_STRING) {
            c->iss_s = lua_tolstring(L, -1, &c->iss_len);  /* kept alive by the table */
            c->iss_ok = tp_jwt_matches(L, o->iss, c->iss_s, c->iss_len);
        }
        lua_pop(L, 1);
    }
    if (o->aud) {
        type = lua_getfield(L, cl, "aud");
        c->aud = type != LUA_TNIL;
        if (type == LUA_TTABLE) {
            for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1) && !c->aud_ok; i++) {
                lua_rawgeti(L, -1, i);
                c->aud_ok = value_matches(L, -1, o->aud);
                lua_pop(L, 1);
            }
        } else {
            c->aud_ok = value_matches(L, -1, o->aud);
        }
        lua_pop(L, 1);
    }
    if (o->require) {
        int single = lua_type(L, o->require) == LUA_TSTRING;
        lua_Integer n = single ? 1 : (lua_Integer)lua_rawlen(L, o->require);
        for (lua_Integer i = 1; i <= n && !c->missing; i++) {
            if (single) lua_pushvalue(L, o->require); else lua_rawgeti(L, o->require, i);
            lua_pushvalue(L, -1);
            if (lua_rawget(L, cl) == LUA_TNIL)  /* the name stays referenced by the option */
                c->missing = lua_tolstring(L, -2, &c->missing_len);
            lua_pop(L, 2);
        }
    }
}

int tp_jwt_check_claims(lua_State *L, const tp_verify_opts *o, const tp_jwt_header *h, const tp_jwt_claims *c)
{
    char safe[40], span[32];

    if (c->exp < 0) return tp_fail(L, "malformed", "exp is not a number");
    if (c->exp == 0 && o->require_exp) return tp_fail(L, "missing_claim", "exp is required");
    /* Valid while now < exp + leeway (RFC 7519 4.1.4: "on or after" expires). */
    if (c->exp && tp_sub_sat(o->now, o->leeway) >= c->exp_v)
        return tp_fail(L, "expired", "expired %s ago", tp_format_span(span, tp_sub_sat(o->now, c->exp_v)));
    if (c->nbf < 0) return tp_fail(L, "malformed", "nbf is not a number");
    /* Not yet valid while now + leeway < nbf (RFC 7519 4.1.5: valid "on or after"). */
    if (c->nbf && tp_add_sat(o->now, o->leeway) < c->nbf_v)
        return tp_fail(L, "not_yet_valid", "valid only in %s", tp_format_span(span, tp_sub_sat(c->nbf_v, o->now)));
    if (c->iat < 0) return tp_fail(L, "malformed", "iat is not a number");
    if (c->iat && c->iat_v > tp_add_sat(o->now, o->leeway))
        return tp_fail(L, "issued_in_future", "issued %s in the future",
                       tp_format_span(span, tp_sub_sat(c->iat_v, o->now)));

    if (o->iss) {
        if (c->iss == TP_ABSENT) return tp_fail(L, "missing_claim", "iss is required");
        if (!c->iss_ok)
            return tp_fail(L, "bad_issuer", "issuer %s is not accepted",
                           c->iss == TP_STRING ? tp_printable(safe, c->iss_s, c->iss_len) : "(not a string)");
    }
    if (o->aud) {
        if (!c->aud) return tp_fail(L, "missing_claim", "aud is required");
        if (!c->aud_ok) return tp_fail(L, "bad_audience", "the token is not meant for this audience");
    }
    if (o->typ && (h->typ_kind != TP_STRING || !typ_equal(h->typ, h->typ_len, o->typ)))
        return tp_fail(L, "bad_type", "typ %s is not accepted",
                       h->typ_kind == TP_STRING ? tp_printable(safe, h->typ, h->typ_len) : "(absent)");
    if (c->missing)
        return tp_fail(L, "missing_claim", "%s is required", tp_printable(safe, c->missing, c->missing_len));
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
    if (tp_algs[alg].kty == TP_KTY_OKP) return siglen == (key->bits == 256 ? 64u : 114u);  /* Ed25519, Ed448 */
    return siglen == (size_t)(key->bits + 7) / 8;
}

/* Whether a key of the set that may verify has exactly this kid. */
static int keyset_has_kid(const tp_keyset *set, const char *kid, size_t kidlen)
{
    for (long i = tp_keyset_kid_next(set, kid, kidlen, -1); i >= 0; i = tp_keyset_kid_next(set, kid, kidlen, i))
        if (tp_key_can_verify(&set->key[i])) return 1;
    return 0;
}

int tp_jwt_check_alg(lua_State *L, const tp_jwt_header *h, unsigned algs, int *alg)
{
    char safe[40];
    if (h->alg_kind == TP_ABSENT) return tp_fail(L, "malformed", "the header has no alg");
    if (h->alg_kind != TP_STRING) return tp_fail(L, "malformed", "alg is not a string");
    if (h->alg_len == 4 && strncasecmp(h->alg, "none", 4) == 0)
        return tp_fail(L, "alg_not_allowed", "alg none is never accepted");
    if ((*alg = tp_alg_lookup(h->alg, h->alg_len)) < 0)
        return tp_fail(L, "alg_not_allowed", "alg %s is not supported", tp_printable(safe, h->alg, h->alg_len));
    if (!((algs >> *alg) & 1u))
        return tp_fail(L, "alg_not_allowed", "alg %s is not in the allow-list", tp_algs[*alg].name);
    if (h->crit < 0) return tp_fail(L, "malformed", "crit must be a non-empty array");
    if (h->crit > 0)
        return tp_fail(L, "unsupported_crit", "the token requires extensions this verifier does not implement");
    return 0;
}

/* Signature verifications one token may cost when its kid does not
 * choose the key (no kid, or one no key has): without this bound a token
 * that names no kid would be tried against every key of a large set (with
 * a 10,000-key JWKS, 10,000 RSA verifications for one forged token). */
#define TP_MAX_UNNAMED_TRIES 16

int tp_jwt_check_signature(lua_State *L, int keys, const tp_jwt_header *h, int alg, const tp_jws *j,
                           tp_keyset **used)
{
    tp_keyset *set = (tp_keyset *)luaL_testudata(L, keys, TP_KEYSET_CLASS);  /* NULL: a JwksSource */
    const char *kid = h->kid_kind == TP_STRING ? h->kid : NULL;
    size_t kidlen = h->kid_len;
    int tried = 0, verified = 0, kid_known = 0, pool = 0, fetched = 0, source = set == NULL;
    char safe[40];

    if (source) {  /* the source's current set stays on the stack while in use */
        int n = tp_jwks_keys(L, keys, &fetched);
        if (n != 1) return n;
        set = (tp_keyset *)lua_touserdata(L, -1);
    }
    if (h->kid_kind == TP_OTHER) return tp_fail(L, "malformed", "kid is not a string");
    if (kid) kid_known = keyset_has_kid(set, kid, kidlen);
    if (source && kid && !kid_known && !fetched && tp_jwks_refetch(L, keys)) {
        /* A JwksSource that did not know the kid: retry with the new set. */
        set = (tp_keyset *)lua_touserdata(L, -1);
        kid_known = keyset_has_kid(set, kid, kidlen);
    }

    /* With a known kid, only that kid's keys (through the set's index);
     * otherwise every key, but never one with another kid. */
    for (long i = kid_known ? tp_keyset_kid_next(set, kid, kidlen, -1) : 0;
         i >= 0 && (size_t)i < set->count && !verified;
         i = kid_known ? tp_keyset_kid_next(set, kid, kidlen, i) : i + 1) {
        tp_key *key = &set->key[i];
        if (!kid_known && kid && key->kid) continue;
        if (!tp_key_can_verify(key)) continue;  /* key_ops without verify */
        pool++;
        if (!key_fits(key, alg)) continue;
        if (!kid_known && tried == TP_MAX_UNNAMED_TRIES)
            return tp_fail(L, "unknown_key", "the token names no key (kid) and more than %d keys fit alg %s: "
                           "a kid is needed to choose", TP_MAX_UNNAMED_TRIES, tp_algs[alg].name);
        tried++;
        if (!signature_length_ok(key, alg, j->plen[2])) continue;
        verified = tp_key_verify(set, key, alg, (const unsigned char *)j->token, j->input_len, j->part[2],
                                 j->plen[2]);
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
    if (used) *used = set;
    return 0;
}

/***
 * Verifies a JWT's signature with a key set, then its claims.
 *
 * Keys: with a `kid`, keys of that kid (or, when none has it, keys without
 * a kid); without a `kid`, every key, up to 16 that fit the algorithm
 * (more: `unknown_key`, a kid is needed).  Only keys that fit the algorithm
 * (type, curve, HMAC size, a JWK's `alg`) are tried.  Time checks use
 * `leeway`: expired when `now - leeway >= exp`, not yet valid when
 * `now + leeway < nbf`, issued in the future when `iat > now + leeway`.
 * @function verify
 * @tparam string token
 * @tparam KeySet keyset
 * @tparam[opt] table opts `algs` (a name or a list), `iss`, `aud`, `typ`,
 *   `leeway`, `require`, `require_exp`, `max_size`, `now`
 * @treturn table claims
 * @treturn table header
 * @return or the fail triple
 */
static int tp_jwt_verify(lua_State *L)
{
    size_t len;
    const char *token = tp_check_string(L, 1, &len);
    tp_verify_opts o;
    char small[TP_JWS_WORK];
    const char *msg;
    tp_jws j;
    tp_jwt_header h;
    tp_jwt_claims c;
    int alg, hdr, cl;

    if (!luaL_testudata(L, 2, TP_KEYSET_CLASS)) tp_check_jwks(L, 2);
    lua_settop(L, 3);
    parse_verify_opts(L, 3, &o);
    if (tp_jwt_split(L, token, len, o.max_size, small, &j))
        return 3;
    if ((msg = tp_jwt_parse_part(L, &j, 0)))
        return tp_fail(L, "malformed", "%s", msg);
    hdr = lua_gettop(L);
    tp_jwt_header_of(L, hdr, &h);
    if (tp_jwt_check_alg(L, &h, o.algs, &alg) || tp_jwt_check_signature(L, 2, &h, alg, &j, NULL))
        return 3;
    if ((msg = tp_jwt_parse_part(L, &j, 1)))
        return tp_fail(L, "malformed", "%s", msg);
    cl = lua_gettop(L);
    tp_jwt_claims_of(L, &o, cl, &c);
    if (tp_jwt_check_claims(L, &o, &h, &c))
        return 3;
    /* One shared metatable, so that claims and header print readably. */
    lua_pushvalue(L, CLAIMS_META);
    lua_setmetatable(L, cl);
    lua_pushvalue(L, CLAIMS_META);
    lua_setmetatable(L, hdr);
    lua_pushvalue(L, hdr);
    return 2;
}

/* ---- sign --------------------------------------------------------------- */

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
 *   EdDSA for Ed25519/Ed448, HS256), `kid` (selects the key and goes into
 *   the header; default the key's kid), `typ` (default "JWT"), `header`
 *   (more header members)
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
    lua_settop(L, 3);
    if (tp_opts(L, 3, options)) {
        algname = tp_opt_string(L, 3, "alg", NULL, NULL);
        kid = tp_opt_string(L, 3, "kid", NULL, NULL);
        typ = tp_opt_string(L, 3, "typ", typ, NULL);
        if (lua_getfield(L, 3, "header") != LUA_TNIL && !lua_istable(L, -1))
            luaL_argerror(L, 3, "header must be a table");
        lua_pop(L, 1);
    }
    if (algname) {
        if ((alg = tp_alg_lookup(algname, strlen(algname))) < 0)
            return luaL_argerror(L, 3, lua_pushfstring(L, "alg '%s' is not a supported signature algorithm", algname));
    }
    for (size_t i = 0; i < set->count && !key; i++) {
        const tp_key *k = &set->key[i];
        if (!tp_key_can_sign(k)) continue;
        if (kid && k->kid && strcmp(k->kid, kid) != 0) continue;
        if (alg >= 0 && !key_fits(k, alg)) continue;
        key = k;
    }
    if (!key) {
        int forbidden = 0;
        for (size_t i = 0; i < set->count; i++) {
            const tp_key *k = &set->key[i];
            if (!k->has_private || (kid && k->kid && strcmp(k->kid, kid) != 0)) continue;
            if (tp_key_can_sign(k))
                return tp_fail(L, "alg_not_allowed", "no private key in the set fits alg %s", algname);
            forbidden = 1;
        }
        if (forbidden)  /* private keys whose key_ops leave out sign */
            return tp_fail(L, "unknown_key", "the key set holds no private key%s whose key_ops allow sign",
                           kid ? " with that kid" : "");
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

    if (key->kty == TP_KTY_OKP) {  /* EdDSA: OpenSSL signs, cjose has no OKP */
        int n = tp_key_sign_okp(L, key, box->json[1], box->json[0]);
        if (n == 1) tp_box_clear(box);
        return n;
    }
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

/* ---- printing ------------------------------------------------------------
 *
 * Everything shown comes from a token, so every value is made printable
 * (no terminal escapes, no invisible or bidirectional characters) and cut.
 * Values are formatted into C buffers while the Lua stack is used in
 * balanced pairs, and only then copied into a luaL_Buffer: no value is
 * ever pushed, popped or converted while a buffer operation could see it
 * (the buffer rule; breaking it corrupted memory once). */

#define SHOW_MAX 120        /* bytes of one shown value before "..." */
#define SHOW_NAME_MAX 32    /* bytes of one shown claim name */
#define SHOW_DEPTH 3        /* nesting levels shown before [...] / {...} */

typedef struct shown {
    char buf[SHOW_MAX + 8];
    size_t len, max;
    int cut;
} shown;

static void show_init(shown *s, size_t max)
{
    s->len = 0;
    s->max = max;
    s->cut = 0;
}

/* Appends n bytes, or marks the text cut when they do not fit. */
static void show_raw(shown *s, const char *p, size_t n)
{
    if (s->cut) return;
    if (s->len + n > s->max) {
        s->cut = 1;
        return;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

#define show_lit(s, lit) show_raw((s), (lit), sizeof(lit) - 1)

/* The length of the character at p (n bytes left): a valid UTF-8
 * sequence, else 1.  *ok tells whether it prints as itself: C0 and C1
 * controls (C1 includes the one-byte CSI), DEL, invalid or overlong
 * sequences, surrogates, and the invisible and bidirectional formatting
 * characters do not. */
static size_t utf8_char(const unsigned char *p, size_t n, int *ok)
{
    unsigned c = p[0], cp;
    size_t len;
    *ok = c >= 0x20 && c < 0x7f;
    if (c < 0xc2 || c > 0xf4) return 1;
    len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (len > n) return 1;
    cp = c & (0x7fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 1;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 1;
    *ok = !(cp < 0xa0 || cp == 0xad || (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
            (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb));
    return len;
}

/* Appends text made printable: a character that does not print as itself
 * becomes one '?', and no character is split by the cut. */
static void show_text(shown *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !s->cut;) {
        int ok;
        size_t k = utf8_char((const unsigned char *)p + i, n - i, &ok);
        if (ok) show_raw(s, p + i, k); else show_lit(s, "?");
        i += k;
    }
}

/* The shown text, with "..." when it was cut (buf has room for it). */
static const char *show_end(shown *s)
{
    if (s->cut) {
        memcpy(s->buf + s->len, "...", 3);
        s->len += 3;
    }
    return s->buf;
}

/* Orders claim names bytewise, a shorter prefix first. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

static void show_value(lua_State *L, int idx, shown *s, int depth, int quote);

/* A table compactly: a list as [a, b] (at the top level a, b), an object
 * as {"k": v} with its keys in order.  The keys are found by repeated
 * passes (the next larger one each time), which needs no memory, and the
 * cut at SHOW_MAX bounds the number of passes. */
static void show_table(lua_State *L, int idx, shown *s, int depth)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    const char *prev = NULL;
    size_t prevlen = 0;
    if (n > 0) {
        if (depth >= SHOW_DEPTH) {
            show_lit(s, "[...]");
            return;
        }
        if (depth) show_lit(s, "[");
        for (lua_Integer i = 1; i <= n && !s->cut; i++) {
            if (i > 1) show_lit(s, ", ");
            lua_rawgeti(L, idx, i);
            show_value(L, -1, s, depth + 1, depth > 0);
            lua_pop(L, 1);
        }
        if (depth) show_lit(s, "]");
        return;
    }
    if (depth >= SHOW_DEPTH) {
        show_lit(s, "{...}");
        return;
    }
    show_lit(s, "{");
    while (!s->cut) {
        const char *best = NULL;
        size_t bestlen = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            size_t klen;
            const char *k;
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING) continue;
            k = lua_tolstring(L, -1, &klen);  /* a string key: no conversion */
            if (prev && name_cmp(k, klen, prev, prevlen) <= 0) continue;
            if (!best || name_cmp(k, klen, best, bestlen) < 0) {
                best = k;  /* stays referenced by the table */
                bestlen = klen;
            }
        }
        if (!best) break;
        if (prev) show_lit(s, ", ");
        show_lit(s, "\"");
        show_text(s, best, bestlen);
        show_lit(s, "\": ");
        lua_pushlstring(L, best, bestlen);
        lua_rawget(L, idx);
        show_value(L, -1, s, depth + 1, 1);
        lua_pop(L, 1);
        prev = best;
        prevlen = bestlen;
    }
    show_lit(s, "}");
}

/* Appends the value at idx; strings in quotes when quote is set (inside
 * lists and objects). */
static void show_value(lua_State *L, int idx, shown *s, int depth, int quote)
{
    char num[64];
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *p = lua_tolstring(L, idx, &len);
        if (quote) show_lit(s, "\"");
        show_text(s, p, len);
        if (quote) show_lit(s, "\"");
        break;
    }
    case LUA_TNUMBER:
        /* Formatted here, never converted in place on the stack. */
        if (lua_isinteger(L, idx))
            snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
        else
            snprintf(num, sizeof num, "%.14g", (double)lua_tonumber(L, idx));
        show_raw(s, num, strlen(num));
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) show_lit(s, "true"); else show_lit(s, "false");
        break;
    case LUA_TTABLE:
        luaL_checkstack(L, 4, "printing a claim");
        show_table(L, idx, s, depth);
        break;
    default:
        if (tp_is_null(L, idx)) {
            show_lit(s, "null");
        } else {
            show_lit(s, "<");
            show_raw(s, luaL_typename(L, idx), strlen(luaL_typename(L, idx)));
            show_lit(s, ">");
        }
        break;
    }
}

/* The claims shown first, in this order; the last three are times. */
static const char *const known_claims[] = { "iss", "sub", "aud", "scope", "azp", "jti", "iat", "nbf", "exp", NULL };
#define FIRST_TIME_CLAIM 6
#define KNOWN_CLAIMS 9

static int is_known_claim(const char *name, size_t len)
{
    for (int i = 0; known_claims[i]; i++)
        if (strlen(known_claims[i]) == len && memcmp(known_claims[i], name, len) == 0) return 1;
    return 0;
}

/* A time claim's value: "2026-11-23 14:52:54 UTC (expires in 47m)".
 * Returns 0 (showing nothing) when the value at -1 is no time. */
static int show_time(lua_State *L, shown *s, const char *name, lua_Integer now)
{
    char when[32], span[32], text[112];
    lua_Integer t;
    int future;
    if (lua_isinteger(L, -1)) {
        t = lua_tointeger(L, -1);
    } else {
        double d = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : NAN;
        if (!(d > -9.0e18 && d < 9.0e18)) return 0;  /* also NaN and non-numbers */
        t = (lua_Integer)d;
    }
    future = t > now;
    snprintf(text, sizeof text, "%s (%s%s%s)", tp_format_utc(when, t),
             strcmp(name, "exp") == 0 ? (future ? "expires in " : "expired ") : (future ? "in " : ""),
             tp_format_span(span, future ? tp_sub_sat(t, now) : tp_sub_sat(now, t)), future ? "" : " ago");
    show_raw(s, text, strlen(text));
    return 1;
}

/* One claim's line into name and value ("iss    " and its value); 0 when
 * the table at tbl has no such member.  Uses the stack in balance only. */
static int show_claim(lua_State *L, int tbl, const char *name, size_t len, int is_time, lua_Integer now,
                      shown *label, shown *value)
{
    show_init(label, SHOW_NAME_MAX);
    show_init(value, SHOW_MAX);
    lua_pushlstring(L, name, len);
    if (lua_rawget(L, tbl) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    show_text(label, name, len);
    show_end(label);
    do label->buf[label->len++] = ' '; while (label->len < 7);  /* buf has room past max */
    if (!is_time || !show_time(L, value, name, now))
        show_value(L, -1, value, 0, 0);
    show_end(value);
    lua_pop(L, 1);
    return 1;
}

typedef struct claim_name {
    const char *name;
    size_t len;
} claim_name;

static int claim_name_cmp(const void *a, const void *b)
{
    const claim_name *x = (const claim_name *)a, *y = (const claim_name *)b;
    return name_cmp(x->name, x->len, y->name, y->len);
}

/* Pushes one line per member of the table at tbl, each starting with
 * indent, joined by newlines ("" for an empty table): the known claims
 * first (the times as times), then the others by name. */
static void push_claim_lines(lua_State *L, int tbl, const char *indent)
{
    lua_Integer now = (lua_Integer)time(NULL);
    size_t count = 0, n = 0;
    claim_name *others;
    shown label, value;
    luaL_Buffer b;
    int lines = 0;
    tbl = lua_absindex(L, tbl);
    lua_pushnil(L);
    while (lua_next(L, tbl)) {
        lua_pop(L, 1);
        count += lua_type(L, -1) == LUA_TSTRING;
    }
    /* The names of the other members, sorted; Lua owns the array.  It is
     * pushed before the buffer opens. */
    others = (claim_name *)lua_newuserdata(L, (count ? count : 1) * sizeof *others);
    lua_pushnil(L);
    while (lua_next(L, tbl)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING && n < count) {
            others[n].name = lua_tolstring(L, -1, &others[n].len);
            if (!is_known_claim(others[n].name, others[n].len)) n++;
        }
    }
    qsort(others, n, sizeof *others, claim_name_cmp);
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < KNOWN_CLAIMS + n; i++) {
        int is_time = i >= FIRST_TIME_CLAIM && i < KNOWN_CLAIMS;
        const char *name = i < KNOWN_CLAIMS ? known_claims[i] : others[i - KNOWN_CLAIMS].name;
        size_t len = i < KNOWN_CLAIMS ? strlen(name) : others[i - KNOWN_CLAIMS].len;
        /* Balanced stack use, then buffer operations only. */
        if (!show_claim(L, tbl, name, len, is_time, now, &label, &value)) continue;
        if (lines++) luaL_addchar(&b, '\n');
        luaL_addstring(&b, indent);
        luaL_addlstring(&b, label.buf, label.len);
        luaL_addlstring(&b, value.buf, value.len);
    }
    luaL_pushresult(&b);
    lua_remove(L, -2);  /* the name array */
}

static int tp_jwt__tostring(lua_State *L)
{
    static const char *const hdr[] = { "alg", "kid", "typ", NULL };
    char head[3 * (SHOW_MAX + 16) + 8] = "JWT";
    size_t used = 3;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "header");   /* 2 */
    lua_getfield(L, 1, "claims");   /* 3 */
    if (!lua_istable(L, 2)) { lua_newtable(L); lua_replace(L, 2); }
    if (!lua_istable(L, 3)) { lua_newtable(L); lua_replace(L, 3); }
    for (int i = 0; hdr[i]; i++) {
        shown value;
        show_init(&value, SHOW_MAX);
        if (lua_getfield(L, 2, hdr[i]) != LUA_TNIL) {
            show_value(L, -1, &value, 0, 0);
            show_end(&value);
            used += (size_t)snprintf(head + used, sizeof head - used, "%s%s%s%.*s", i ? ", " : " ",
                                     i ? hdr[i] : "", i ? " " : "", (int)value.len, value.buf);
        }
        lua_pop(L, 1);
    }
    lua_pushlstring(L, head, used);
    push_claim_lines(L, 3, "  ");
    if (lua_rawlen(L, -1) > 0) {
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
    }
    return 1;
}

void tp_jwt_push_claims_text(lua_State *L, int idx)
{
    push_claim_lines(L, idx, "");
    if (lua_rawlen(L, -1) == 0) {
        lua_pop(L, 1);
        lua_pushliteral(L, "{}");
    }
}

/* Claims and header tables print one line per member ("{}" when empty). */
static int tp_claims__tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    tp_jwt_push_claims_text(L, 1);
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
    static const luaL_Reg jwt_meta[] = { { "__tostring", tp_jwt__tostring }, { NULL, NULL } };
    static const luaL_Reg claims_meta[] = { { "__tostring", tp_claims__tostring }, { NULL, NULL } };
    tp_register_class(L, TP_JWT_CLASS, jwt_meta, NULL, 0);
    tp_register_class(L, TP_CLAIMS_CLASS, claims_meta, NULL, 0);
    /* The metatables as upvalues (CLAIMS_META, JWT_META): one
     * lua_setmetatable per result, no registry lookup. */
    luaL_getmetatable(L, TP_CLAIMS_CLASS);
    luaL_getmetatable(L, TP_JWT_CLASS);
    luaL_setfuncs(L, functions, 2);
}
