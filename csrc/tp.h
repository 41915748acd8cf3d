/* Shared declarations of the tokenpolicy C core.  Everything here is
 * internal to core.so (hidden visibility); the only exported symbol is
 * luaopen_tokenpolicy_core. */
#ifndef TP_H
#define TP_H

#include <stddef.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <cjose/cjose.h>
#include "compat.h"

#define TP_VERSION "0.1.0"
#define TP_INTERNAL __attribute__((visibility("hidden")))

/* Class names (also the metatable names in the registry). */
#define TP_KEYSET_CLASS "tokenpolicy.KeySet"
#define TP_JWT_CLASS "tokenpolicy.JWT"
#define TP_BOX_CLASS "tokenpolicy.Box"
#define TP_JWKS_CLASS "tokenpolicy.JwksSource"
#define TP_NULL_CLASS "tokenpolicy.null"

/* ---- errors (util.c) ---------------------------------------------------- */

/* Pushes the fail triple nil, "code: message", "code" and returns 3.  It also
 * clears the thread's OpenSSL error queue, which an embedding HAProxy shares,
 * so no failure path can leave stale errors behind.  The format is Lua's
 * (lua_pushfstring): %s %d %I %f %p %c %%. */
TP_INTERNAL int tp_fail(lua_State *L, const char *code, const char *fmt, ...);

/* Like luaL_checklstring, but a number is not accepted as a string:
 * passing a number where a token or key is expected is a bug to report. */
TP_INTERNAL const char *tp_check_string(lua_State *L, int idx, size_t *len);

/* ---- option tables (util.c) ---------------------------------------------
 * Every C function that takes an options table reads it through this one
 * family, so the rules are the same everywhere: the table may be absent
 * (none or nil: every option has its default), any other non-table raises,
 * an unknown or non-string key raises, and a value of the wrong type raises
 * "bad argument #arg to 'fn' (<name> must be ...)".  `arg` is the stack
 * index of the options table; the readers only look at it, so it may be an
 * absent argument.  Strings they return stay referenced by the table. */

/* Checks the table at arg against allowed (NULL-terminated).  Returns 1
 * when a table is there, 0 when the argument is none or nil. */
TP_INTERNAL int tp_opts(lua_State *L, int arg, const char *const allowed[]);

/* An integer option of at least min (dflt when absent); floats with an
 * integral value are accepted, other numbers and types raise. */
TP_INTERNAL lua_Integer tp_opt_integer(lua_State *L, int arg, const char *name, lua_Integer dflt,
                                       lua_Integer min);

/* A boolean option (dflt when absent). */
TP_INTERNAL int tp_opt_boolean(lua_State *L, int arg, const char *name, int dflt);

/* A string option (dflt when absent; len, when not NULL, gets its length).
 * Numbers are not strings here. */
TP_INTERNAL const char *tp_opt_string(lua_State *L, int arg, const char *name, const char *dflt,
                                      size_t *len);

/* One of choices (NULL-terminated) by name: its index, dflt when absent. */
TP_INTERNAL int tp_opt_choice(lua_State *L, int arg, const char *name, const char *const choices[],
                              int dflt);

/* A string or a non-empty list of strings: pushes it and returns 1, or
 * pushes nothing and returns 0 when absent. */
TP_INTERNAL int tp_opt_strings(lua_State *L, int arg, const char *name);

/* Kept for existing callers: tp_opts on a table that must be there. */
TP_INTERNAL void tp_check_options(lua_State *L, int idx, const char *const allowed[]);

/* ---- classes (util.c) ----------------------------------------------------
 * Registers the class `name` (also its metatable's __name, so error
 * messages and luaL_checkudata use it): the metamethods in meta and, when
 * methods is not NULL, the methods as __index.  The nup values on top of
 * the stack become upvalues of every function in both lists and are
 * popped.  Leaves the stack otherwise as on entry.  Every class in the core
 * is registered through this one function. */
TP_INTERNAL void tp_register_class(lua_State *L, const char *name, const luaL_Reg *meta,
                                   const luaL_Reg *methods, int nup);

/* Copies at most 32 printable ASCII bytes of s into out (size >= 40),
 * replacing others with '?' and marking truncation with "...".  Used for
 * attacker-controlled text (kid, alg, typ) that goes into messages. */
TP_INTERNAL const char *tp_printable(char *out, const char *s, size_t len);

/* ---- JSON <-> Lua (json.c) ---------------------------------------------- */


#define TP_JSON_MAX_DEPTH 64

/* The JSON null sentinel, tokenpolicy.null (a light userdata). */
TP_INTERNAL void tp_push_null(lua_State *L);
TP_INTERNAL int tp_is_null(lua_State *L, int idx);

/* Parses JSON text strictly into a Lua value pushed on the stack (see
 * json.c for the rules).  Returns 1 (and, when is_object is not NULL,
 * whether the value is a JSON object), or 0 with *why set and the stack as
 * on entry.  It allocates no C memory, so a Lua error raised inside (out of
 * memory) leaks nothing. */
TP_INTERNAL int tp_json_parse_lua(lua_State *L, const char *text, size_t len, int *is_object,
                                  const char **why);

/* Converts the Lua value at idx into a new JSON value (caller owns it).
 * Returns NULL and writes why into err when the value cannot be encoded. */
TP_INTERNAL json_t *tp_json_from_lua(lua_State *L, int idx, char *err, size_t errlen);

/* A box is a userdata owning C resources for one call, so that a Lua error
 * (out of memory while pushing results) can never leak them: its __gc frees
 * whatever is still in it. */
typedef struct tp_box {
    json_t *json[2];
    cjose_jws_t *jws;
} tp_box;
TP_INTERNAL tp_box *tp_box_new(lua_State *L);
TP_INTERNAL void tp_box_clear(tp_box *box);

/* ---- algorithms and keys (keys.c) --------------------------------------- */

/* OKP (RFC 8037): Ed25519 and Ed448 keys, held by OpenSSL alone (cjose
 * has no OKP, so an OKP key's jwk is NULL). */
enum tp_kty { TP_KTY_NONE = 0, TP_KTY_RSA, TP_KTY_EC, TP_KTY_OCT, TP_KTY_OKP };

enum tp_alg {
    TP_ALG_HS256, TP_ALG_HS384, TP_ALG_HS512,
    TP_ALG_RS256, TP_ALG_RS384, TP_ALG_RS512,
    TP_ALG_PS256, TP_ALG_PS384, TP_ALG_PS512,
    TP_ALG_ES256, TP_ALG_ES384, TP_ALG_ES512,
    TP_ALG_EDDSA,
    TP_ALG_COUNT
};

typedef struct tp_alg_info {
    const char *name;
    enum tp_kty kty;
    size_t hash_bytes;  /* SHA-2 output size: also the minimum HMAC key size */
    size_t ec_coord;    /* ES: bytes of one coordinate (R and S each); else 0 */
} tp_alg_info;

TP_INTERNAL extern const tp_alg_info tp_algs[TP_ALG_COUNT];

/* Every RSA, RSA-PSS, ECDSA and EdDSA algorithm: the default allow-list. */
#define TP_ALGS_ASYMMETRIC (((1u << TP_ALG_COUNT) - 1) & ~7u)

/* The index of the named algorithm, or -1. */
TP_INTERNAL int tp_alg_lookup(const char *name, size_t len);

typedef struct tp_key {
    cjose_jwk_t *jwk;   /* for signing and key facts; NULL for OKP keys */
    EVP_PKEY *pkey;     /* RSA, EC and OKP: the key verification uses (OKP: signing too) */
    EVP_PKEY_CTX *verify_ctx[TP_ALG_COUNT];  /* prepared on first use */
    EVP_MAC_CTX *mac_ctx[3];                 /* oct: keyed HMAC per hash */
    const unsigned char *secret;  /* oct: the HMAC secret (cjose's copy) */
    size_t secret_len;
    char *kid;          /* NUL-terminated copy, or NULL when the key has none */
    enum tp_kty kty;
    int bits;           /* modulus bits, curve bits or secret bits */
    unsigned algs;      /* bit set of tp_alg this key may be used with */
    int has_private;    /* holds a private part (or is a secret) */
    unsigned ops;       /* TP_KEY_OP_* a JWK's key_ops allows (all without key_ops) */
} tp_key;

/* What a key may be used for (RFC 7517 section 4.3, key_ops). */
#define TP_KEY_OP_VERIFY 1u
#define TP_KEY_OP_SIGN 2u

/* Whether key may verify (key_ops), and whether it may sign (a private
 * part, and key_ops). */
#define tp_key_can_verify(key) (((key)->ops & TP_KEY_OP_VERIFY) != 0)
#define tp_key_can_sign(key) ((key)->has_private && ((key)->ops & TP_KEY_OP_SIGN) != 0)

struct tp_kid_index;    /* keys.c: the set's keys by kid */

typedef struct tp_keyset {
    EVP_MD_CTX *md_ctx; /* reused for every digest verify computes */
    EVP_MD_CTX *ed_ctx; /* reused for EdDSA, which binds its key at init */
    struct tp_kid_index *kid_index;  /* built with the set; NULL: linear scan */
    size_t count;
    size_t capacity;
    tp_key key[1];      /* capacity entries (allocated past the struct) */
} tp_keyset;

TP_INTERNAL tp_keyset *tp_check_keyset(lua_State *L, int idx);

/* The index of the next key after `after` (-1: from the start) whose kid
 * is exactly kid, or -1 when there is none.  Keys of any use are
 * returned; callers filter with tp_key_can_verify/tp_key_can_sign.
 * O(1) per step: the set is indexed by kid when it is built (keys sharing
 * a kid are chained in set order). */
TP_INTERNAL long tp_keyset_kid_next(const tp_keyset *set, const char *kid, size_t kidlen, long after);

/* Checks sig over input with key for alg (which the key must fit, and sig
 * must have the length alg and key produce).  1 when it verifies. */
TP_INTERNAL int tp_key_verify(tp_keyset *set, tp_key *key, int alg, const unsigned char *input,
                              size_t inlen, const unsigned char *sig, size_t siglen);

/* Pushes the compact JWS of claims under header (both JSON objects; the
 * caller keeps them) signed with an OKP key, and returns 1; or pushes the
 * fail triple and returns 3.  Memory is Lua's, so a raise leaks nothing. */
TP_INTERNAL int tp_key_sign_okp(lua_State *L, const tp_key *key, json_t *header, json_t *claims);

/* ---- JWKS sources (jwks.c), for verify ---------------------------------
 * jwks.c holds no network code: a source fetches only through the fetch
 * function (fetch_keys) it was given at registration, and a source made
 * without a URI (fed with :set_keys) never fetches. */

/* Raises an argument error unless idx holds a JwksSource (verify calls it
 * once the value at idx has turned out not to be a KeySet). */
TP_INTERNAL void tp_check_jwks(lua_State *L, int idx);

/* Pushes the source's current KeySet (fetching it when missing or past its
 * TTL, unless the source has refetch=false or no URI) and returns 1, with
 * *fetched telling whether it was just fetched; or pushes the fail triple
 * and returns 3 when there is no set. */
TP_INTERNAL int tp_jwks_keys(lua_State *L, int idx, int *fetched);

/* For a token whose kid is unknown: refetches when the source allows it
 * (refetch on, no refetch within min_refetch).  Returns 1 with the new
 * KeySet pushed, else 0 with the stack unchanged. */
TP_INTERNAL int tp_jwks_refetch(lua_State *L, int idx);

/* ---- temporary files (util.c) ------------------------------------------- */

/* 16 random hex digits and a NUL into out (17 bytes), for temporary file
 * names.  O_EXCL | O_NOFOLLOW already make a planted name harmless, so an
 * unpredictable name only spares a writer a denial of service, and a
 * clock-based fallback is enough when getrandom cannot answer. */
TP_INTERNAL void tp_random_hex(char *out);
/* write(2) until all of p is written (retrying EINTR); 0, or -1 (errno). */
TP_INTERNAL int tp_write_all(int fd, const char *p, size_t len);

/* ---- time (util.c) ------------------------------------------------------ */

/* Saturating a + b and a - b: times and durations come from tokens, records
 * and configs, so sums near the integer limits must saturate instead of
 * overflowing (undefined behaviour, able to flip a comparison). */
static inline lua_Integer tp_add_sat(lua_Integer a, lua_Integer b)
{
    lua_Integer r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? LUA_MAXINTEGER : LUA_MININTEGER;
    return r;
}

static inline lua_Integer tp_sub_sat(lua_Integer a, lua_Integer b)
{
    lua_Integer r;
    if (__builtin_sub_overflow(a, b, &r))
        return b < 0 ? LUA_MAXINTEGER : LUA_MININTEGER;
    return r;
}

/* "2026-11-23 14:52:54 UTC" into buf (size >= 32). */
TP_INTERNAL const char *tp_format_utc(char *buf, lua_Integer t);
/* "1h30m", "45s", "3d4h", "-5m" into buf (size >= 32). */
TP_INTERNAL const char *tp_format_span(char *buf, lua_Integer seconds);
/* The exact form, every unit kept: "1d1m", "3d4h5m6s", "-5m" (size >= 32).
 * For sentences that compare spans, where the short form could make a
 * day and a minute read as "1d". */
TP_INTERNAL const char *tp_format_span_exact(char *buf, lua_Integer seconds);

/* ---- base64url (util.c) ------------------------------------------------- */

/* Bytes that len characters of unpadded base64url decode to. */
TP_INTERNAL size_t tp_b64url_decoded_len(size_t len);
/* Decodes base64url in into out (tp_b64url_decoded_len(len) + 2 bytes),
 * using scratch (len + 3 bytes).  Returns the length, or -1 when the text
 * is not canonical unpadded base64url (see util.c). */
TP_INTERNAL int tp_b64url_decode(const char *in, size_t len, unsigned char *out, char *scratch);

/* ---- text (util.c) ----------------------------------------------------- */

/* Whether len bytes at s hold a control character (0-31 or 127): what may
 * not go into an HTTP header field (a CR LF would forge the next one). */
TP_INTERNAL int tp_has_control(const char *s, size_t len);

/* ---- registration of each area into the module table at -1 ------------- */

TP_INTERNAL void tp_open_util(lua_State *L);
TP_INTERNAL void tp_open_json(lua_State *L);
TP_INTERNAL void tp_open_keys(lua_State *L);
TP_INTERNAL void tp_open_jwt(lua_State *L);
TP_INTERNAL void tp_open_files(lua_State *L);
TP_INTERNAL void tp_open_policy(lua_State *L);
TP_INTERNAL void tp_open_denylist(lua_State *L);
TP_INTERNAL void tp_open_http(lua_State *L);
/* After keys and http: a JwksSource imports with keys and fetches with fetch_keys. */
TP_INTERNAL void tp_open_jwks(lua_State *L);

/* ---- verifier (verifier.c, on pieces shared with jwt.c) -----------------
 * tp.verify and the prepared verifier run the same checks through these
 * jwt.c functions, so both give the same codes and messages for the same
 * options: verify reads header and claims from Lua tables, the verifier
 * from yajl's events, and both hand the facts to the same checks. */

/* Classes of jwt.c, policy.c and denylist.c the verifier uses. */
#define TP_CLAIMS_CLASS "tokenpolicy.Claims"
#define TP_POLICY_CLASS "tokenpolicy.Policy"
#define TP_DENYLIST_CLASS "tokenpolicy.Denylist"

/* verify's options once read: iss, aud and require are the stack indices
 * of their (string or list) values, 0 when not checked. */
typedef struct tp_verify_opts {
    unsigned algs;
    lua_Integer now, leeway, max_size;
    int require_exp;
    int iss, aud, require;
    const char *typ;        /* NULL when not checked */
} tp_verify_opts;

/* The defaults of every option (now 0). */
TP_INTERNAL void tp_jwt_default_opts(tp_verify_opts *o);

/* Reads algs, iss, aud, typ, leeway, require, require_exp and max_size
 * from the options table at idx (checked by tp_opts already), with verify's
 * meanings and argument errors; pushes the values of iss, aud and require
 * (indices in o). */
TP_INTERNAL void tp_jwt_read_opts(lua_State *L, int idx, tp_verify_opts *o);

/* A compact JWS taken apart: the token once stripped (whitespace, a
 * "Bearer " prefix), the length of its signing input and its three parts
 * decoded (into the caller's TP_JWS_WORK-byte buffer, or Lua-owned memory
 * pushed on the stack for a larger token). */
#define TP_JWS_WORK 4096
typedef struct tp_jws {
    const char *token;
    size_t len, input_len;
    const unsigned char *part[3];
    size_t plen[3];
} tp_jws;

/* Size check, strip, structure and base64url of every part, with verify's
 * codes and messages: 0, or 3 with the fail triple pushed. */
TP_INTERNAL int tp_jwt_split(lua_State *L, const char *token, size_t len, lua_Integer max_size, char *work,
                             tp_jws *j);

/* The token without what tp_jwt_split strips first (surrounding
 * whitespace, a "Bearer " prefix); *len is updated. */
TP_INTERNAL const char *tp_jwt_strip(const char *token, size_t *len);

/* Parses part 0 (header) or 1 (payload) into a table pushed on the stack:
 * NULL, or the message for `malformed` (nothing pushed but the message). */
TP_INTERNAL const char *tp_jwt_parse_part(lua_State *L, const tp_jws *j, int part);

/* How a member is present. */
enum { TP_ABSENT = 0, TP_STRING, TP_OTHER };

/* What the checks read from a header.  The strings are not NUL-terminated
 * and must stay alive while in use. */
typedef struct tp_jwt_header {
    int alg_kind, kid_kind, typ_kind;
    int crit;               /* 0 absent, 1 a non-empty array, -1 anything else */
    const char *alg, *kid, *typ;
    size_t alg_len, kid_len, typ_len;
} tp_jwt_header;

/* What the checks read from claims (under the options in use). */
typedef struct tp_jwt_claims {
    int exp, nbf, iat;      /* 0 absent, 1 set (the value below), -1 not a number */
    lua_Integer exp_v, nbf_v, iat_v;
    int iss;                /* TP_ABSENT, TP_STRING or TP_OTHER (with o->iss) */
    const char *iss_s;
    size_t iss_len;
    int iss_ok;             /* the iss option accepts it */
    int aud, aud_ok;        /* present; accepted (a string, or a list holding one) */
    const char *missing;    /* the first required name that is absent, or NULL */
    size_t missing_len;
} tp_jwt_claims;

/* The facts of a header or claims table at idx, as verify reads them. */
TP_INTERNAL void tp_jwt_header_of(lua_State *L, int idx, tp_jwt_header *h);
TP_INTERNAL void tp_jwt_claims_of(lua_State *L, const tp_verify_opts *o, int idx, tp_jwt_claims *c);

/* Whether the string or list option at opt holds exactly s. */
TP_INTERNAL int tp_jwt_matches(lua_State *L, int opt, const char *s, size_t len);

/* alg (present, a string, not none, supported, allowed) and crit: 0 with
 * *alg set, or 3 with the fail triple pushed. */
TP_INTERNAL int tp_jwt_check_alg(lua_State *L, const tp_jwt_header *h, unsigned algs, int *alg);

/* The signature, with the KeySet or JwksSource at keys (a source's set is
 * fetched or refetched as verify does, and left pushed): 0 with *used (when
 * not NULL) the set that verified, or 3 with the fail triple pushed. */
TP_INTERNAL int tp_jwt_check_signature(lua_State *L, int keys, const tp_jwt_header *h, int alg, const tp_jws *j,
                                       tp_keyset **used);

/* Times (with o->now and o->leeway), iss, aud, typ and required names, in
 * verify's order: 0, or 3 with the fail triple pushed. */
TP_INTERNAL int tp_jwt_check_claims(lua_State *L, const tp_verify_opts *o, const tp_jwt_header *h,
                                    const tp_jwt_claims *c);

/* Pushes the text claims tables print as (one line per member, "{}" when
 * empty) for the table at idx. */
TP_INTERNAL void tp_jwt_push_claims_text(lua_State *L, int idx);

/* The state a Policy (at idx) gives claims with these times (has: the
 * TP_TIME_* bits of those present), as Policy:evaluate judges a claims
 * table at now: NULL for "valid", else the state's name (policy.c). */
#define TP_TIME_EXP 1u
#define TP_TIME_IAT 2u
#define TP_TIME_NBF 4u
#define TP_TIME_AUTH 8u
TP_INTERNAL const char *tp_policy_judge_times(lua_State *L, int idx, unsigned has, lua_Integer exp,
                                              lua_Integer iat, lua_Integer nbf, lua_Integer auth_time,
                                              lua_Integer now);

/* Whether jti is denied at now by the Denylist at idx (a closed one
 * raises), as Denylist:contains answers (denylist.c). */
TP_INTERNAL int tp_denylist_denied(lua_State *L, int idx, const char *jti, size_t len, lua_Integer now);

TP_INTERNAL void tp_open_verifier(lua_State *L);

/* ---- the Redis backend of the denylist (redis.c) ------------------------
 * A Denylist made from a redis:// or rediss:// URL keeps its view in
 * denylist.c's table and reaches Redis through redis.c: denylist.c owns
 * the object and dispatches add, purge and reload; redis.c owns the
 * link (a private userdata in the object's user value) and changes the
 * view only through the two functions below. */

/* An entry of a sync answer: the jti points into the answer. */
typedef struct tp_dl_entry {
    const char *jti;
    size_t len;
    lua_Integer exp;
} tp_dl_entry;

/* denylist.c: merges n entries into the view of the Denylist at idx, all
 * or nothing (a jti already there keeps the later expiry).  Returns how
 * many were new or got a later expiry, or -1 when out of memory (the view
 * unchanged). */
TP_INTERNAL lua_Integer tp_denylist_merge(lua_State *L, int idx, const tp_dl_entry *e, size_t n);
/* denylist.c: drops the view's entries expired at now; how many. */
TP_INTERNAL lua_Integer tp_denylist_forget(lua_State *L, int idx, lua_Integer now);
/* denylist.c: whether s can be a jti of the list (1 to 256 printable
 * ASCII bytes, no space). */
TP_INTERNAL int tp_denylist_valid_jti(const char *s, size_t len);

/* redis.c: whether the string is a redis:// or rediss:// URL. */
TP_INTERNAL int tp_redis_url(const char *s, size_t len);
/* redis.c: reads the URL at url and the options at opts (raising on
 * misuse) and pushes the link; returns 0, or 3 with the fail triple pushed
 * above it.  *sync: whether the caller should sync at once. */
TP_INTERNAL int tp_redis_open(lua_State *L, int url, int opts, int *sync);
/* redis.c: wipes the link's password (Denylist:close). */
TP_INTERNAL void tp_redis_forget(lua_State *L, int link);
/* redis.c: pushes "redis://host:port/db prefix P" (never a password). */
TP_INTERNAL void tp_redis_push_name(lua_State *L, int link);
/* redis.c: the blocking operations and the sans-IO pair, for the
 * Denylist at dl and its link at link; each returns its Lua results. */
TP_INTERNAL int tp_redis_add(lua_State *L, int dl, int link, const char *jti, size_t len, lua_Integer exp);
TP_INTERNAL int tp_redis_purge(lua_State *L, int dl, int link, lua_Integer now);
TP_INTERNAL int tp_redis_reload(lua_State *L, int dl, int link);
TP_INTERNAL int tp_redis_sync_request(lua_State *L, int link, int full);
TP_INTERNAL int tp_redis_sync_apply(lua_State *L, int dl, int link, const char *bytes, size_t len);
TP_INTERNAL int tp_redis_endpoint(lua_State *L, int link);
/* redis.c: registers its private classes (called by tp_open_denylist). */
TP_INTERNAL void tp_open_redis(lua_State *L);

#endif
