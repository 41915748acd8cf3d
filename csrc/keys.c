/***
 * Key sets: JWK Sets, single JWKs and PEM (docs/jwks.md).
 * @module tokenpolicy.core
 */
/* Key sets: import JWK Sets, single JWKs and PEM (SPKI public keys, X.509
 * certificates, PKCS#1/PKCS#8 private keys) into cjose keys, with the
 * metadata verify needs to bind algorithms to keys. */
/* ECDSA verification calls ECDSA_do_verify on the key's EC_KEY (see
 * ecdsa_verify): deprecated in OpenSSL 3 but kept by it, and a build
 * without the deprecated API (OPENSSL_NO_DEPRECATED_3_0) takes the EVP
 * way instead.  Only that call is concerned. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <openssl/x509.h>
#include "tp.h"

#define TP_RSA_MIN_BITS 2048

/* At most this many keys in one set by default (opts.max_keys changes it,
 * up to TP_KEYS_HARD_MAX): a gateway's JWKS of 10,000 keys fits twice.
 * Key material may hold TP_KEY_BYTES per key plus TP_KEY_BYTES_EXTRA,
 * enough for RSA-8192 private keys with certificate chains: per key
 * allowed before parsing (so a body that could never be imported is not
 * parsed), per key it holds after (so one huge key cannot pass for a
 * set). */
#define TP_KEYS_DEFAULT_MAX 20000
#define TP_KEYS_HARD_MAX 1000000
#define TP_KEY_BYTES 8192
#define TP_KEY_BYTES_EXTRA 65536

/* Classes of the plain tables list() and skipped() return, for printing. */
#define TP_KEYINFO_CLASS "tokenpolicy.KeyInfo"
#define TP_SKIPPED_CLASS "tokenpolicy.SkippedKey"
#define TP_KEYLIST_CLASS "tokenpolicy.KeyList"
#define TP_KIDS_CLASS "tokenpolicy.KeyIds"

const tp_alg_info tp_algs[TP_ALG_COUNT] = {
    [TP_ALG_HS256] = { "HS256", TP_KTY_OCT, 32, 0 },
    [TP_ALG_HS384] = { "HS384", TP_KTY_OCT, 48, 0 },
    [TP_ALG_HS512] = { "HS512", TP_KTY_OCT, 64, 0 },
    [TP_ALG_RS256] = { "RS256", TP_KTY_RSA, 32, 0 },
    [TP_ALG_RS384] = { "RS384", TP_KTY_RSA, 48, 0 },
    [TP_ALG_RS512] = { "RS512", TP_KTY_RSA, 64, 0 },
    [TP_ALG_PS256] = { "PS256", TP_KTY_RSA, 32, 0 },
    [TP_ALG_PS384] = { "PS384", TP_KTY_RSA, 48, 0 },
    [TP_ALG_PS512] = { "PS512", TP_KTY_RSA, 64, 0 },
    [TP_ALG_ES256] = { "ES256", TP_KTY_EC, 32, 32 },
    [TP_ALG_ES384] = { "ES384", TP_KTY_EC, 48, 48 },
    [TP_ALG_ES512] = { "ES512", TP_KTY_EC, 64, 66 },
    [TP_ALG_EDDSA] = { "EdDSA", TP_KTY_OKP, 0, 0 },
};

int tp_alg_lookup(const char *name, size_t len)
{
    if (len != 5) return -1;
    for (int i = 0; i < TP_ALG_COUNT; i++)
        if (memcmp(name, tp_algs[i].name, 5) == 0)
            return i;
    return -1;
}

static const char *kty_name(enum tp_kty kty)
{
    switch (kty) {
    case TP_KTY_RSA: return "RSA";
    case TP_KTY_EC: return "EC";
    case TP_KTY_OCT: return "oct";
    case TP_KTY_OKP: return "OKP";
    default: return "?";
    }
}

/* The algorithms a key of this type and size can serve. */
static unsigned natural_algs(enum tp_kty kty, int bits)
{
    switch (kty) {
    case TP_KTY_RSA:
        return (1u << TP_ALG_RS256) | (1u << TP_ALG_RS384) | (1u << TP_ALG_RS512) |
               (1u << TP_ALG_PS256) | (1u << TP_ALG_PS384) | (1u << TP_ALG_PS512);
    case TP_KTY_EC:
        return bits == 256 ? 1u << TP_ALG_ES256 :
               bits == 384 ? 1u << TP_ALG_ES384 :
               bits == 521 ? 1u << TP_ALG_ES512 : 0;
    case TP_KTY_OKP:
        return 1u << TP_ALG_EDDSA;
    case TP_KTY_OCT: {
        /* An HMAC key must be at least as long as the hash output. */
        unsigned algs = 0;
        for (int a = TP_ALG_HS256; a <= TP_ALG_HS512; a++)
            if ((size_t)bits >= tp_algs[a].hash_bytes * 8) algs |= 1u << a;
        return algs;
    }
    default:
        return 0;
    }
}

/* ---- the kid index ------------------------------------------------------
 *
 * A hash table built once per set: buckets chain the first key of each
 * distinct kid, and each key links to the next key of its kid in set
 * order.  Buckets are picked by SipHash under a per-process random key, so
 * a hostile JWKS cannot choose kids that all land in one bucket.  A lookup
 * hashes the token's kid once; the following steps follow the links. */

typedef struct tp_kid_index {
    EVP_MAC_CTX *mac;    /* SipHash, keyed; reset (not rekeyed) per lookup */
    size_t mask;         /* buckets - 1 (a power of two) */
    int32_t *head;       /* per bucket: first key of its first kid, or -1 */
    int32_t *next_kid;   /* per first key of a kid: first key of the bucket's next kid */
    int32_t *next_same;  /* per key: next key with the same kid, or -1 */
    uint64_t *hash;      /* per key with a kid: the kid's hash */
    int32_t last;        /* the first key of the kid found last, or -1 */
} tp_kid_index;

static EVP_MAC *siphash;
static unsigned char siphash_key[16];
static int siphash_ready;
static pthread_once_t siphash_once = PTHREAD_ONCE_INIT;

static void fetch_siphash(void)
{
    siphash = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    siphash_ready = siphash && RAND_bytes(siphash_key, sizeof siphash_key) == 1;
    ERR_clear_error();
}

__attribute__((destructor)) static void free_siphash(void)
{
    EVP_MAC_free(siphash);
    siphash = NULL;
    OPENSSL_cleanse(siphash_key, sizeof siphash_key);
}

/* The keyed hash of a kid; 0 when OpenSSL fails (the caller then scans). */
static int kid_hash(EVP_MAC_CTX *mac, const char *kid, size_t len, uint64_t *out)
{
    unsigned char h[8];
    size_t n = 0;
    if (EVP_MAC_init(mac, NULL, 0, NULL) && EVP_MAC_update(mac, (const unsigned char *)kid, len) &&
        EVP_MAC_final(mac, h, &n, sizeof h) && n == sizeof h) {
        memcpy(out, h, sizeof h);
        return 1;
    }
    ERR_clear_error();
    return 0;
}

static void kid_index_free(tp_kid_index *ix)
{
    if (!ix) return;
    EVP_MAC_CTX_free(ix->mac);
    free(ix);
}

static int kid_equal(const char *k, const char *kid, size_t kidlen)
{
    return k && strlen(k) == kidlen && memcmp(k, kid, kidlen) == 0;
}

/* The first key with this kid through the index, or -1; -2 when the
 * hash cannot be computed.  The kid found last is compared first: verify
 * looks each token's kid up twice, and a gateway sees the same few kids
 * all day.  Only a first key of its kid is ever remembered, so a match
 * is the right answer whatever string asks. */
static long kid_index_first(const tp_keyset *set, const char *kid, size_t kidlen)
{
    tp_kid_index *ix = set->kid_index;
    uint64_t h;
    if (ix->last >= 0 && kid_equal(set->key[ix->last].kid, kid, kidlen)) return ix->last;
    if (!kid_hash(ix->mac, kid, kidlen, &h)) return -2;
    for (int32_t i = ix->head[h & ix->mask]; i >= 0; i = ix->next_kid[i])
        if (ix->hash[i] == h && kid_equal(set->key[i].kid, kid, kidlen)) return ix->last = i;
    return -1;
}

/* Indexes the set's keys by kid (replacing any index).  Without memory or
 * SipHash the set stays unindexed and lookups scan: slower, still right. */
static void kid_index_build(tp_keyset *set)
{
    size_t buckets = 8, n = set->count;
    tp_kid_index *ix;
    int32_t *tail;
    OSSL_PARAM params[2];
    size_t out_size = 8;

    kid_index_free(set->kid_index);
    set->kid_index = NULL;
    pthread_once(&siphash_once, fetch_siphash);
    if (!siphash_ready || n > INT32_MAX / 4) return;
    while (buckets < 2 * n) buckets *= 2;
    /* One block: the struct, then hash[n], head[buckets], next_kid[n],
     * next_same[n], tail[n] (tail only while building). */
    ix = (tp_kid_index *)calloc(1, sizeof *ix + n * sizeof(uint64_t) + (buckets + 4 * n) * sizeof(int32_t));
    if (!ix) return;
    ix->hash = (uint64_t *)(ix + 1);
    ix->head = (int32_t *)(ix->hash + n);
    ix->next_kid = ix->head + buckets;
    ix->next_same = ix->next_kid + n;
    tail = ix->next_same + n;
    ix->mask = buckets - 1;
    ix->last = -1;
    params[0] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &out_size);
    params[1] = OSSL_PARAM_construct_end();
    if (!(ix->mac = EVP_MAC_CTX_new(siphash)) ||
        !EVP_MAC_init(ix->mac, siphash_key, sizeof siphash_key, params)) {
        ERR_clear_error();
        kid_index_free(ix);
        return;
    }
    for (size_t b = 0; b < buckets; b++) ix->head[b] = -1;
    for (size_t i = 0; i < n; i++) {
        const char *kid = set->key[i].kid;
        size_t len = kid ? strlen(kid) : 0;
        int32_t g;
        ix->next_kid[i] = ix->next_same[i] = tail[i] = -1;
        if (!kid) continue;
        if (!kid_hash(ix->mac, kid, len, &ix->hash[i])) {
            kid_index_free(ix);
            return;
        }
        for (g = ix->head[ix->hash[i] & ix->mask]; g >= 0; g = ix->next_kid[g])
            if (ix->hash[g] == ix->hash[i] && kid_equal(set->key[g].kid, kid, len)) break;
        if (g >= 0) {  /* another key of a kid seen before: chain it last */
            ix->next_same[tail[g]] = (int32_t)i;
            tail[g] = (int32_t)i;
        } else {       /* a new kid: the first of its group, at its bucket's front */
            size_t b = ix->hash[i] & ix->mask;
            ix->next_kid[i] = ix->head[b];
            ix->head[b] = (int32_t)i;
            tail[i] = (int32_t)i;
        }
    }
    set->kid_index = ix;
}

static void key_clear(tp_key *key)
{
    for (int a = 0; a < TP_ALG_COUNT; a++)
        EVP_PKEY_CTX_free(key->verify_ctx[a]);
    for (int h = 0; h < 3; h++)
        EVP_MAC_CTX_free(key->mac_ctx[h]);
    EVP_PKEY_free(key->pkey);
    if (key->jwk) cjose_jwk_release(key->jwk);
    free(key->kid);
    memset(key, 0, sizeof *key);
}

tp_keyset *tp_check_keyset(lua_State *L, int idx)
{
    return (tp_keyset *)luaL_checkudata(L, idx, TP_KEYSET_CLASS);
}

static int tp_keyset__gc(lua_State *L)
{
    tp_keyset *set = tp_check_keyset(L, 1);
    for (size_t i = 0; i < set->count; i++)
        key_clear(&set->key[i]);
    set->count = 0;
    EVP_MD_CTX_free(set->md_ctx);
    set->md_ctx = NULL;
    EVP_MD_CTX_free(set->ed_ctx);
    set->ed_ctx = NULL;
    kid_index_free(set->kid_index);
    set->kid_index = NULL;
    return 0;
}

/* Appends a skip reason {index=, kid=, reason=} to the set's skip list,
 * which lives in the user value of the set at index 1 of the stack frame
 * (the caller keeps the set at absolute index set_idx). */
static void add_skipped(lua_State *L, int set_idx, int index, const char *kid, const char *fmt, ...)
{
    va_list ap;
    tp_getuservalue(L, set_idx);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, index);
    lua_setfield(L, -2, "index");
    if (kid) {
        char safe[40];
        lua_pushstring(L, tp_printable(safe, kid, strlen(kid)));
        lua_setfield(L, -2, "kid");
    }
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_setfield(L, -2, "reason");
    luaL_setmetatable(L, TP_SKIPPED_CLASS);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
    ERR_clear_error();
}

/* The bits of an OKP key (its raw public key's), 0 for other keys. */
static int okp_bits(EVP_PKEY *pkey)
{
    int id = pkey ? EVP_PKEY_get_base_id(pkey) : 0;
    return id == EVP_PKEY_ED25519 ? 256 : id == EVP_PKEY_ED448 ? 456 : 0;
}

/* Takes ownership of jwk and pkey: stores them in the set, or frees them.
 * pkey may be NULL for oct keys; jwk is NULL for OKP keys (Ed25519 and
 * Ed448 live in pkey alone). */
static int add_key(tp_keyset *set, cjose_jwk_t *jwk, EVP_PKEY *pkey, const char *kid, int has_private,
                   unsigned alg_limit, unsigned ops)
{
    cjose_err err;
    tp_key *key;
    enum tp_kty kty = TP_KTY_NONE;
    if (!jwk)
        kty = okp_bits(pkey) ? TP_KTY_OKP : TP_KTY_NONE;
    else switch (cjose_jwk_get_kty(jwk, &err)) {
    case CJOSE_JWK_KTY_RSA: kty = TP_KTY_RSA; break;
    case CJOSE_JWK_KTY_EC: kty = TP_KTY_EC; break;
    case CJOSE_JWK_KTY_OCT: kty = TP_KTY_OCT; break;
    default: kty = TP_KTY_NONE; break;
    }
    if (set->count >= set->capacity || kty == TP_KTY_NONE || (kty != TP_KTY_OCT && !pkey)) {
        if (jwk) cjose_jwk_release(jwk);
        EVP_PKEY_free(pkey);
        return 0;
    }
    key = &set->key[set->count];
    memset(key, 0, sizeof *key);
    key->jwk = jwk;
    key->pkey = pkey;
    if (kid && !(key->kid = strdup(kid))) {
        key_clear(key);
        return 0;
    }
    key->kty = kty;
    key->bits = jwk ? (int)cjose_jwk_get_keysize(jwk, &err) : okp_bits(pkey);
    if (kty == TP_KTY_OCT) {
        key->secret = (const unsigned char *)cjose_jwk_get_keydata(jwk, &err);
        key->secret_len = (size_t)key->bits / 8;
    }
    key->has_private = has_private;
    key->ops = ops;
    key->algs = natural_algs(kty, key->bits) & alg_limit;
    set->count++;
    return 1;
}

/* ---- verification ------------------------------------------------------- */

/* Digests fetched once: an implicit fetch on every call (EVP_sha256()
 * under OpenSSL 3) costs more than hashing a token. */
static const char *const digest_names[3] = { "SHA2-256", "SHA2-384", "SHA2-512" };
static EVP_MD *digests[3];
static EVP_MAC *hmac;
static pthread_once_t digests_once = PTHREAD_ONCE_INIT;

static void fetch_digests(void)
{
    for (int i = 0; i < 3; i++)
        digests[i] = EVP_MD_fetch(NULL, digest_names[i], NULL);
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static int hash_index(int alg)
{
    return tp_algs[alg].hash_bytes == 32 ? 0 : tp_algs[alg].hash_bytes == 48 ? 1 : 2;
}

/* Runs when the module is unloaded (lua_close dlcloses it): the digests
 * are released so leak checkers see a clean exit. */
__attribute__((destructor)) static void free_digests(void)
{
    for (int i = 0; i < 3; i++) {
        EVP_MD_free(digests[i]);
        digests[i] = NULL;
    }
    EVP_MAC_free(hmac);
    hmac = NULL;
}

static const EVP_MD *digest_for(int alg)
{
    pthread_once(&digests_once, fetch_digests);
    return digests[hash_index(alg)];
}

/* An HMAC context keyed once per key and hash: keying (and looking up the
 * algorithm) on every call would cost more than the MAC. */
static EVP_MAC_CTX *mac_ctx(tp_key *key, int alg)
{
    int h = hash_index(alg);
    EVP_MAC_CTX *ctx = key->mac_ctx[h];
    OSSL_PARAM params[2];
    if (ctx) return EVP_MAC_init(ctx, NULL, 0, NULL) ? ctx : NULL;  /* same key again */
    pthread_once(&digests_once, fetch_digests);
    if (!hmac || !(ctx = EVP_MAC_CTX_new(hmac))) return NULL;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest_names[h], 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_init(ctx, key->secret, key->secret_len, params)) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    key->mac_ctx[h] = ctx;
    return ctx;
}

/* A verify context for key and alg, set up once and reused: preparing one
 * costs about as much as the RSA verification itself. */
static EVP_PKEY_CTX *verify_ctx(tp_key *key, int alg)
{
    EVP_PKEY_CTX *ctx = key->verify_ctx[alg];
    if (ctx) return ctx;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (!ctx || EVP_PKEY_verify_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_signature_md(ctx, digest_for(alg)) <= 0)
        goto fail;
    if (alg >= TP_ALG_RS256 && alg <= TP_ALG_RS512 &&
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0)
        goto fail;
    /* RFC 7518 3.5: the salt is as long as the hash. */
    if (alg >= TP_ALG_PS256 && alg <= TP_ALG_PS512 &&
        (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) <= 0))
        goto fail;
    key->verify_ctx[alg] = ctx;
    return ctx;
fail:
    EVP_PKEY_CTX_free(ctx);
    return NULL;
}

/* A JWS ECDSA signature (R || S, fixed width, RFC 7518 section 3.4) against
 * a digest.  EVP_PKEY_verify takes DER only, which costs an encode here and
 * a decode and re-encode in OpenSSL per call (about 2% of a P-256
 * verification, a gateway's whole margin); ECDSA_do_verify takes R and S
 * as numbers and runs the same verification OpenSSL's EVP path ends in.
 * The length was checked against the curve before this is called. */
static int ecdsa_verify(tp_key *key, EVP_PKEY_CTX *ctx, const unsigned char *sig, size_t siglen,
                        const unsigned char *digest, size_t digest_len)
{
    size_t half = siglen / 2;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    int ok = 0;
    if (es && r && s && ECDSA_SIG_set0(es, r, s)) {
        r = s = NULL;  /* owned by es now */
#ifndef OPENSSL_NO_DEPRECATED_3_0
        /* The EC_KEY is OpenSSL's own cached copy inside the EVP_PKEY. */
        EC_KEY *ec = (EC_KEY *)EVP_PKEY_get0_EC_KEY(key->pkey);
        (void)ctx;
        ok = ec && ECDSA_do_verify(digest, (int)digest_len, es, ec) == 1;
#else
        unsigned char der[200];  /* P-521: at most 2 * (66 + 3) + 3 bytes */
        unsigned char *p = der;
        int der_len = i2d_ECDSA_SIG(es, NULL);
        (void)key;
        if (der_len > 0 && der_len <= (int)sizeof der && i2d_ECDSA_SIG(es, &p) == der_len)
            ok = EVP_PKEY_verify(ctx, der, (size_t)der_len, digest, digest_len) == 1;
#endif
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return ok;
}

int tp_key_verify(tp_keyset *set, tp_key *key, int alg, const unsigned char *input, size_t inlen,
                  const unsigned char *sig, size_t siglen)
{
    const EVP_MD *md = digest_for(alg);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_PKEY_CTX *ctx;
    int ok = 0;
    if (key->kty == TP_KTY_OKP) {
        /* EdDSA hashes inside the signature scheme: one-shot, no digest.
         * The context binds the key at init, so it is set up per call. */
        if (!set->ed_ctx && !(set->ed_ctx = EVP_MD_CTX_new())) goto done;
        EVP_MD_CTX_reset(set->ed_ctx);
        ok = EVP_DigestVerifyInit_ex(set->ed_ctx, NULL, NULL, NULL, NULL, key->pkey, NULL) == 1 &&
             EVP_DigestVerify(set->ed_ctx, sig, siglen, input, inlen) == 1;
        goto done;
    }
    if (!md) goto done;
    if (key->kty == TP_KTY_OCT) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        EVP_MAC_CTX *mctx = mac_ctx(key, alg);
        ok = mctx && EVP_MAC_update(mctx, input, inlen) &&
             EVP_MAC_final(mctx, mac, &mac_len, sizeof mac) &&
             mac_len == siglen && CRYPTO_memcmp(mac, sig, siglen) == 0;
        goto done;
    }
    /* One digest context per key set, reused: allocating one per call is a
     * measurable share of an RSA verification. */
    if (!set->md_ctx && !(set->md_ctx = EVP_MD_CTX_new())) goto done;
    if (!EVP_DigestInit_ex2(set->md_ctx, md, NULL) || !EVP_DigestUpdate(set->md_ctx, input, inlen) ||
        !EVP_DigestFinal_ex(set->md_ctx, digest, &digest_len) || !(ctx = verify_ctx(key, alg)))
        goto done;
    if (key->kty == TP_KTY_EC) {
        ok = ecdsa_verify(key, ctx, sig, siglen, digest, digest_len);
    } else {
        ok = EVP_PKEY_verify(ctx, sig, siglen, digest, digest_len) == 1;
    }
done:
    if (!ok) ERR_clear_error();
    return ok;
}

/* Base64url of n bytes into out (4 * ceil(n / 3) + 1 bytes): OpenSSL's
 * base64, then the URL alphabet without padding (RFC 7515 section 2).
 * Returns the length written. */
static size_t b64url_encode(char *out, const unsigned char *in, size_t n)
{
    size_t len = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len && out[len - 1] == '=') len--;
    for (size_t i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return len;
}

int tp_key_sign_okp(lua_State *L, const tp_key *key, json_t *header, json_t *claims)
{
    const size_t flags = JSON_COMPACT | JSON_SORT_KEYS;
    size_t hlen = json_dumpb(header, NULL, 0, flags), plen = json_dumpb(claims, NULL, 0, flags);
    size_t hb, pb, sb, siglen = 114;  /* Ed448's; Ed25519's is 64 */
    unsigned char sig[114], *raw;
    char *token;
    EVP_MD_CTX *ctx;
    int ok;
    if (!hlen || !plen)
        return tp_fail(L, "malformed", "signing failed (the header or claims cannot be encoded)");
    /* Lua owns every buffer, so an out-of-memory raise leaks nothing. */
    raw = (unsigned char *)lua_newuserdata(L, hlen + plen);
    json_dumpb(header, (char *)raw, hlen, flags);
    json_dumpb(claims, (char *)raw + hlen, plen, flags);
    token = (char *)lua_newuserdata(L, 4 * ((hlen + 2) / 3) + 4 * ((plen + 2) / 3) + 4 * ((sizeof sig + 2) / 3) + 3);
    hb = b64url_encode(token, raw, hlen);
    token[hb] = '.';
    pb = b64url_encode(token + hb + 1, raw + hlen, plen);
    token[hb + 1 + pb] = '.';
    ctx = EVP_MD_CTX_new();
    ok = ctx && EVP_DigestSignInit_ex(ctx, NULL, NULL, NULL, NULL, key->pkey, NULL) == 1 &&
         EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)token, hb + 1 + pb) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) return tp_fail(L, "malformed", "signing failed (OpenSSL could not sign with this OKP key)");
    sb = b64url_encode(token + hb + 1 + pb + 1, sig, siglen);
    lua_pushlstring(L, token, hb + 1 + pb + 1 + sb);
    return 1;
}

/* A member's value as a BIGNUM (members were checked by check_members,
 * so cjose's decoder is safe here); NULL when absent. */
static BIGNUM *member_bn(json_t *jwk_json, const char *name)
{
    const char *text = json_string_value(json_object_get(jwk_json, name));
    uint8_t *raw = NULL;
    size_t len = 0;
    cjose_err err;
    BIGNUM *bn = NULL;
    if (text && cjose_base64url_decode(text, strlen(text), &raw, &len, &err)) {
        bn = BN_bin2bn(raw, (int)len, NULL);
        OPENSSL_cleanse(raw, len);
        cjose_get_dealloc()(raw);
    }
    return bn;
}

/* An EVP_PKEY from a JWK's members (checked by check_members and accepted
 * by cjose): the public key, or with with_private (EC only) the key
 * pair. */
static EVP_PKEY *pkey_from_jwk(json_t *jwk_json, int is_rsa, int with_private)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn[3] = { NULL, NULL, NULL };
    unsigned char point[1 + 2 * 66];
    int selection = with_private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY;

    if (!bld) goto done;
    if (is_rsa) {
        if (!(bn[0] = member_bn(jwk_json, "n")) || !(bn[1] = member_bn(jwk_json, "e")) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn[0]) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn[1]))
            goto done;
    } else {
        const char *crv = json_string_value(json_object_get(jwk_json, "crv"));
        int width = crv && strcmp(crv, "P-256") == 0 ? 32 : crv && strcmp(crv, "P-384") == 0 ? 48 :
                    crv && strcmp(crv, "P-521") == 0 ? 66 : 0;
        if (!width || !(bn[0] = member_bn(jwk_json, "x")) || !(bn[1] = member_bn(jwk_json, "y")) ||
            BN_num_bytes(bn[0]) > width || BN_num_bytes(bn[1]) > width)
            goto done;
        /* The uncompressed point 04 || X || Y, each coordinate left-padded. */
        point[0] = 0x04;
        if (BN_bn2binpad(bn[0], point + 1, width) < 0 || BN_bn2binpad(bn[1], point + 1 + width, width) < 0 ||
            !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, crv, 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * (size_t)width))
            goto done;
        if (with_private && (!(bn[2] = member_bn(jwk_json, "d")) ||
                             !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn[2])))
            goto done;
    }
    if (!(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(ctx = EVP_PKEY_CTX_new_from_name(NULL, is_rsa ? "RSA" : "EC", NULL)) ||
        EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, selection, params) <= 0)
        pkey = NULL;
done:
    for (int i = 0; i < 3; i++) BN_clear_free(bn[i]);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return pkey;
}

/* Whether the private part of a key pair matches its public part
 * (OpenSSL's pairwise check): a key with a changed private scalar would
 * otherwise load, sign, and fail its own verification. */
static int pair_matches(EVP_PKEY *pair)
{
    EVP_PKEY_CTX *ctx = pair ? EVP_PKEY_CTX_new_from_pkey(NULL, pair, NULL) : NULL;
    int ok = ctx && EVP_PKEY_pairwise_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

/* The same for RSA, without OpenSSL's pairwise check: for RSA that also
 * tests p and q for primality, about 50 ms a key.  The relations checked
 * here are what a changed or mixed-up member breaks: n = p q, e d = 1
 * modulo p - 1 and q - 1, dp and dq the reductions of d, qi q = 1 mod p;
 * with d alone, (m^d)^e = m mod n for a fixed m.  bn holds n, e, d, p, q,
 * dp, dq, qi (the CRT ones may be NULL). */
static int rsa_matches(BIGNUM *const bn[8])
{
    BN_CTX *ctx = BN_CTX_new();
    BIGNUM *t, *u, *pm1, *qm1;
    int ok = 0;
    if (!ctx) return 0;
    BN_CTX_start(ctx);
    t = BN_CTX_get(ctx);
    u = BN_CTX_get(ctx);
    pm1 = BN_CTX_get(ctx);
    qm1 = BN_CTX_get(ctx);
    if (!qm1 || !bn[0] || !bn[1] || !bn[2]) goto done;
    if (!bn[3] || !bn[4] || !bn[5] || !bn[6] || !bn[7]) {
        BIGNUM *m = u;
        ok = BN_set_word(m, 0x746f6b656eUL) && BN_cmp(m, bn[0]) < 0 &&
             BN_mod_exp(t, m, bn[2], bn[0], ctx) && BN_mod_exp(t, t, bn[1], bn[0], ctx) && BN_cmp(t, m) == 0;
        goto done;
    }
    ok = BN_mul(t, bn[3], bn[4], ctx) && BN_cmp(t, bn[0]) == 0 &&
         BN_sub(pm1, bn[3], BN_value_one()) && BN_sub(qm1, bn[4], BN_value_one()) &&
         BN_mod_mul(t, bn[1], bn[2], pm1, ctx) && BN_is_one(t) &&
         BN_mod_mul(t, bn[1], bn[2], qm1, ctx) && BN_is_one(t) &&
         BN_mod(t, bn[2], pm1, ctx) && BN_cmp(t, bn[5]) == 0 &&
         BN_mod(t, bn[2], qm1, ctx) && BN_cmp(t, bn[6]) == 0 &&
         BN_mod_mul(t, bn[7], bn[4], bn[3], ctx) && BN_is_one(t);
done:
    BN_CTX_end(ctx);
    BN_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

static const char *const rsa_members[8] = { "n", "e", "d", "p", "q", "dp", "dq", "qi" };
static const char *const rsa_params[8] = {
    OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
    OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
    OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1
};

/* Whether the private part of a JWK matches its public part. */
static int jwk_private_matches(json_t *jwk_json, int is_rsa)
{
    int ok;
    if (is_rsa) {
        BIGNUM *bn[8];
        for (int i = 0; i < 8; i++) bn[i] = member_bn(jwk_json, rsa_members[i]);
        ok = rsa_matches(bn);
        for (int i = 0; i < 8; i++) BN_clear_free(bn[i]);
    } else {
        EVP_PKEY *pair = pkey_from_jwk(jwk_json, 0, 1);
        ok = pair_matches(pair);
        EVP_PKEY_free(pair);
    }
    return ok;
}

/* Whether the private part of a PEM private key matches its public part. */
static int pem_private_matches(EVP_PKEY *pkey)
{
    BIGNUM *bn[8] = { NULL };
    int ok;
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) return pair_matches(pkey);
    for (int i = 0; i < 8; i++)
        if (!EVP_PKEY_get_bn_param(pkey, rsa_params[i], &bn[i])) bn[i] = NULL;
    ok = rsa_matches(bn);
    for (int i = 0; i < 8; i++) BN_clear_free(bn[i]);
    ERR_clear_error();
    return ok;
}

/* ---- JWK ---------------------------------------------------------------- */

static const char *json_str(json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* Every base64url member cjose decodes, for any key type. */
static const char *const b64_members[] = { "k", "n", "e", "d", "p", "q", "dp", "dq", "qi", "x", "y", NULL };
/* RSA's CRT members: all of them or none. */
static const char *const crt_members[] = { "p", "q", "dp", "dq", "qi", NULL };

/* Checks every base64url member with our own strict decoder before cjose
 * sees the key: cjose's decoder asserts on some malformed input, and an
 * abort would let one bad key in a fetched JWKS kill a gateway.  Returns
 * NULL, or the reason the key is malformed (written into why). */
static const char *check_members(lua_State *L, json_t *jwk_json, char *why, size_t whylen)
{
    const char *bad = NULL;
    size_t longest = 0;
    char *scratch;
    for (int i = 0; b64_members[i]; i++) {
        json_t *m = json_object_get(jwk_json, b64_members[i]);
        if (!m) continue;
        if (!json_is_string(m) || json_string_length(m) == 0) {
            snprintf(why, whylen, "member %s is %s", b64_members[i], json_is_string(m) ? "empty" : "not a string");
            return why;
        }
        if (json_string_length(m) > longest) longest = json_string_length(m);
    }
    if (longest == 0) return NULL;
    /* Lua owns the scratch memory, so an error raised here leaks nothing. */
    scratch = (char *)lua_newuserdata(L, longest + 3 + tp_b64url_decoded_len(longest) + 2);
    for (int i = 0; b64_members[i] && !bad; i++) {
        json_t *m = json_object_get(jwk_json, b64_members[i]);
        size_t len = m ? json_string_length(m) : 0;
        if (m && tp_b64url_decode(json_string_value(m), len, (unsigned char *)scratch + len + 3, scratch) < 0)
            bad = b64_members[i];
    }
    lua_pop(L, 1);
    if (!bad) return NULL;
    snprintf(why, whylen, "member %s is not canonical unpadded base64url", bad);
    return why;
}

/* Reads key_ops (RFC 7517 section 4.3) into TP_KEY_OP_* bits: every
 * operation when absent.  Returns NULL, or why the member is malformed. */
static const char *read_key_ops(json_t *jwk_json, unsigned *ops)
{
    json_t *list = json_object_get(jwk_json, "key_ops");
    *ops = TP_KEY_OP_VERIFY | TP_KEY_OP_SIGN;
    if (!list) return NULL;
    if (!json_is_array(list)) return "key_ops must be an array of strings";
    *ops = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *op = json_string_value(json_array_get(list, i));
        if (!op) return "key_ops must be an array of strings";
        for (size_t j = 0; j < i; j++)
            if (strcmp(op, json_string_value(json_array_get(list, j))) == 0)
                return "key_ops lists a value twice";
        if (strcmp(op, "verify") == 0) *ops |= TP_KEY_OP_VERIFY;
        if (strcmp(op, "sign") == 0) *ops |= TP_KEY_OP_SIGN;
    }
    return NULL;
}

/* RSA members that only make sense together: CRT members need d, and come
 * all five or not at all (cjose leaks a partial set on every import). */
static const char *check_rsa_private(json_t *jwk_json)
{
    int crt = 0;
    for (int i = 0; crt_members[i]; i++)
        crt += json_object_get(jwk_json, crt_members[i]) != NULL;
    if (json_object_get(jwk_json, "oth"))
        return "RSA keys with more than two primes (oth) are not supported";
    if (crt && !json_object_get(jwk_json, "d"))
        return "RSA CRT members (p, q, dp, dq, qi) without the private exponent d";
    if (crt != 0 && crt != 5)
        return "RSA CRT members must be all of p, q, dp, dq and qi, or none";
    return NULL;
}

/* The raw bytes of an OKP member into out (width + 2 bytes): our own
 * decoder, and exactly width bytes.  Returns 0 when the member is absent,
 * not canonical base64url, or of another length. */
static int okp_member(json_t *jwk_json, const char *name, unsigned char *out, size_t width)
{
    json_t *m = json_object_get(jwk_json, name);
    size_t len = m ? json_string_length(m) : 0;
    char scratch[80 + 3];
    if (!json_is_string(m) || len == 0 || len > 80 || tp_b64url_decoded_len(len) != width) return 0;
    return tp_b64url_decode(json_string_value(m), len, out, scratch) == (int)width;
}

/* An OKP JWK (RFC 8037): crv Ed25519 or Ed448, x the raw public key and d,
 * when there, the raw private key.  OpenSSL holds the key (cjose has no
 * OKP); a d whose public key is not x is refused, as for RSA and EC. */
static const char *import_okp_jwk(lua_State *L, int set_idx, tp_keyset *set, json_t *jwk_json, int index,
                                  const char *kid, int has_private, unsigned alg_limit, unsigned ops)
{
    const char *crv = json_str(jwk_json, "crv");
    unsigned char x[64], d[64], pub[64];
    size_t width, publen = sizeof pub;
    int id, ok;
    EVP_PKEY *pkey;
    char safe[40];
    if (!crv) {
        add_skipped(L, set_idx, index, kid, "crv is missing or not a string");
        return "malformed";
    }
    if (strcmp(crv, "Ed25519") == 0) {
        id = EVP_PKEY_ED25519;
        width = 32;
    } else if (strcmp(crv, "Ed448") == 0) {
        id = EVP_PKEY_ED448;
        width = 57;
    } else {
        add_skipped(L, set_idx, index, kid, "OKP curve %s is not a signature curve (Ed25519, Ed448)",
                    tp_printable(safe, crv, strlen(crv)));
        return "alg_not_allowed";
    }
    if (!okp_member(jwk_json, "x", x, width)) {
        add_skipped(L, set_idx, index, kid, "member x must be the %d-byte %s public key", (int)width, crv);
        return "malformed";
    }
    if (has_private && !okp_member(jwk_json, "d", d, width)) {
        OPENSSL_cleanse(d, sizeof d);
        add_skipped(L, set_idx, index, kid, "member d must be the %d-byte %s private key", (int)width, crv);
        return "malformed";
    }
    pkey = has_private ? EVP_PKEY_new_raw_private_key(id, NULL, d, width)
                       : EVP_PKEY_new_raw_public_key(id, NULL, x, width);
    OPENSSL_cleanse(d, sizeof d);
    ok = pkey != NULL;
    if (ok && has_private)
        ok = EVP_PKEY_get_raw_public_key(pkey, pub, &publen) == 1 && publen == width &&
             CRYPTO_memcmp(pub, x, width) == 0;
    ERR_clear_error();
    if (!ok) {
        EVP_PKEY_free(pkey);
        add_skipped(L, set_idx, index, kid, "the private part of this OKP key does not match its public part");
        return "malformed";
    }
    if (!add_key(set, NULL, pkey, kid, has_private, alg_limit, ops)) {
        add_skipped(L, set_idx, index, kid, "invalid OKP key");
        return "malformed";
    }
    if (set->key[set->count - 1].algs == 0) {  /* alg names another algorithm */
        key_clear(&set->key[--set->count]);
        add_skipped(L, set_idx, index, kid, "OKP %s key fits no allowed algorithm", crv);
        return "alg_not_allowed";
    }
    return NULL;
}

/* Imports one JWK object; on refusal records a reason and returns the code
 * a single-key import fails with. */
static const char *import_jwk(lua_State *L, int set_idx, tp_keyset *set, json_t *jwk_json, int index)
{
    cjose_err err;
    const char *kty, *kid, *use, *alg, *why;
    char why_buf[80];
    unsigned alg_limit = ~0u, ops;
    cjose_jwk_t *jwk;
    EVP_PKEY *pkey;
    int has_private, bits, is_rsa, is_oct;
    json_t *kid_json = json_object_get(jwk_json, "kid");

    if (!json_is_object(jwk_json)) {
        add_skipped(L, set_idx, index, NULL, "not a JSON object");
        return "malformed";
    }
    kid = json_str(jwk_json, "kid");
    if (kid_json && !kid) {
        add_skipped(L, set_idx, index, NULL, "kid is not a string");
        return "malformed";
    }
    kty = json_str(jwk_json, "kty");
    if (!kty) {
        add_skipped(L, set_idx, index, kid, "kty is missing or not a string");
        return "malformed";
    }
    if (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0 && strcmp(kty, "oct") != 0 && strcmp(kty, "OKP") != 0) {
        char safe[40];
        add_skipped(L, set_idx, index, kid, "key type %s is not supported",
                    tp_printable(safe, kty, strlen(kty)));
        return "alg_not_allowed";
    }
    is_rsa = strcmp(kty, "RSA") == 0;
    is_oct = strcmp(kty, "oct") == 0;
    if ((why = check_members(L, jwk_json, why_buf, sizeof why_buf)) || (is_rsa && (why = check_rsa_private(jwk_json))) ||
        (why = read_key_ops(jwk_json, &ops))) {
        add_skipped(L, set_idx, index, kid, "%s", why);
        return "malformed";
    }
    use = json_str(jwk_json, "use");
    if (use && strcmp(use, "sig") != 0) {
        add_skipped(L, set_idx, index, kid, "key is for use '%s', not signatures",
                    strcmp(use, "enc") == 0 ? "enc" : "other");
        return "alg_not_allowed";
    }
    alg = json_str(jwk_json, "alg");
    if (alg) {
        /* A JWK naming its algorithm may be used with that one only. */
        int a = tp_alg_lookup(alg, strlen(alg));
        if (a < 0) {
            char safe[40];
            add_skipped(L, set_idx, index, kid, "alg %s is not a supported signature algorithm",
                        tp_printable(safe, alg, strlen(alg)));
            return "alg_not_allowed";
        }
        alg_limit = 1u << a;
    }
    has_private = is_oct || json_object_get(jwk_json, "d") != NULL;
    if (!(ops & TP_KEY_OP_VERIFY) && !(has_private && (ops & TP_KEY_OP_SIGN))) {
        add_skipped(L, set_idx, index, kid, "key_ops allows neither verify nor sign%s",
                    (ops & TP_KEY_OP_SIGN) ? " (sign needs a private key)" : "");
        return "alg_not_allowed";
    }
    if (strcmp(kty, "OKP") == 0)
        return import_okp_jwk(L, set_idx, set, jwk_json, index, kid, has_private, alg_limit, ops);
    jwk = cjose_jwk_import_json((cjose_header_t *)jwk_json, &err);
    if (!jwk) {
        add_skipped(L, set_idx, index, kid, "invalid %s key: its members do not form a valid key", kty);
        return "malformed";
    }
    bits = (int)cjose_jwk_get_keysize(jwk, &err);
    if (is_rsa && bits < TP_RSA_MIN_BITS) {
        cjose_jwk_release(jwk);
        add_skipped(L, set_idx, index, kid, "RSA key of %d bits is below the %d-bit minimum",
                    bits, TP_RSA_MIN_BITS);
        return "alg_not_allowed";
    }
    pkey = is_oct ? NULL : pkey_from_jwk(jwk_json, is_rsa, 0);
    if (pkey && has_private) {
        if (!jwk_private_matches(jwk_json, is_rsa)) {
            cjose_jwk_release(jwk);
            EVP_PKEY_free(pkey);
            add_skipped(L, set_idx, index, kid, "the private part of this %s key does not match its public part",
                        kty);
            return "malformed";
        }
    }
    if (!add_key(set, jwk, pkey, kid, has_private, alg_limit, ops)) {
        add_skipped(L, set_idx, index, kid, "invalid %s key", kty);
        return "malformed";
    }
    if (set->key[set->count - 1].algs == 0) {
        /* e.g. an HMAC secret shorter than 256 bits, or alg naming another type */
        key_clear(&set->key[--set->count]);
        add_skipped(L, set_idx, index, kid, "%s key of %d bits fits no allowed algorithm", kty, bits);
        return "alg_not_allowed";
    }
    return NULL;
}

/* ---- PEM ---------------------------------------------------------------- */

/* BIGNUM parameter of pkey as big-endian bytes, left-padded to width when
 * width > 0.  Returns NULL when the parameter is absent. */
static uint8_t *bn_param(EVP_PKEY *pkey, const char *name, size_t width, size_t *len)
{
    BIGNUM *bn = NULL;
    uint8_t *out;
    size_t n;
    if (!EVP_PKEY_get_bn_param(pkey, name, &bn))
        return NULL;
    n = width ? width : (size_t)BN_num_bytes(bn);
    out = OPENSSL_malloc(n ? n : 1);
    if (out && BN_bn2binpad(bn, out, (int)n) < 0) {
        OPENSSL_free(out);
        out = NULL;
    }
    BN_clear_free(bn);
    *len = n;
    return out;
}

/* Builds a cjose key from an OpenSSL key (RSA or NIST EC).  Sets *why on
 * refusal. */
static cjose_jwk_t *jwk_from_pkey(EVP_PKEY *pkey, int *has_private, const char **why)
{
    cjose_err err;
    cjose_jwk_t *jwk = NULL;
    int id = EVP_PKEY_get_base_id(pkey);
    *has_private = 0;
    if (id == EVP_PKEY_RSA) {
        cjose_jwk_rsa_keyspec spec;
        memset(&spec, 0, sizeof spec);
        if (EVP_PKEY_get_bits(pkey) < TP_RSA_MIN_BITS) {
            *why = "small";
            return NULL;
        }
        spec.n = bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, 0, &spec.nlen);
        spec.e = bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, 0, &spec.elen);
        spec.d = bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, 0, &spec.dlen);
        if (spec.d) {
            spec.p = bn_param(pkey, OSSL_PKEY_PARAM_RSA_FACTOR1, 0, &spec.plen);
            spec.q = bn_param(pkey, OSSL_PKEY_PARAM_RSA_FACTOR2, 0, &spec.qlen);
            spec.dp = bn_param(pkey, OSSL_PKEY_PARAM_RSA_EXPONENT1, 0, &spec.dplen);
            spec.dq = bn_param(pkey, OSSL_PKEY_PARAM_RSA_EXPONENT2, 0, &spec.dqlen);
            spec.qi = bn_param(pkey, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 0, &spec.qilen);
            *has_private = 1;
        }
        if (spec.n && spec.e)
            jwk = cjose_jwk_create_RSA_spec(&spec, &err);
        OPENSSL_free(spec.n);
        OPENSSL_free(spec.e);
        OPENSSL_clear_free(spec.d, spec.dlen);
        OPENSSL_clear_free(spec.p, spec.plen);
        OPENSSL_clear_free(spec.q, spec.qlen);
        OPENSSL_clear_free(spec.dp, spec.dplen);
        OPENSSL_clear_free(spec.dq, spec.dqlen);
        OPENSSL_clear_free(spec.qi, spec.qilen);
    } else if (id == EVP_PKEY_EC) {
        cjose_jwk_ec_keyspec spec;
        char group[64];
        size_t width;
        memset(&spec, 0, sizeof spec);
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL)) {
            *why = "curve";
            return NULL;
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            spec.crv = CJOSE_JWK_EC_P_256; width = 32;
        } else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            spec.crv = CJOSE_JWK_EC_P_384; width = 48;
        } else if (strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0) {
            spec.crv = CJOSE_JWK_EC_P_521; width = 66;
        } else {
            *why = "curve";
            return NULL;
        }
        spec.x = bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, width, &spec.xlen);
        spec.y = bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, width, &spec.ylen);
        spec.d = bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, width, &spec.dlen);
        *has_private = spec.d != NULL;
        if (spec.x && spec.y)
            jwk = cjose_jwk_create_EC_spec(&spec, &err);
        OPENSSL_free(spec.x);
        OPENSSL_free(spec.y);
        OPENSSL_clear_free(spec.d, spec.dlen);
    } else {
        *why = "type";
        return NULL;
    }
    if (!jwk)
        *why = "invalid";
    return jwk;
}

/* One PEM block to an OpenSSL key; NULL for blocks that hold no key. */
static EVP_PKEY *pkey_from_block(const char *name, const unsigned char *data, long len)
{
    const unsigned char *p = data;
    if (strcmp(name, "PUBLIC KEY") == 0)
        return d2i_PUBKEY(NULL, &p, len);
    if (strcmp(name, "RSA PUBLIC KEY") == 0)
        return d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, len);
    if (strcmp(name, "PRIVATE KEY") == 0)
        return d2i_AutoPrivateKey(NULL, &p, len);
    if (strcmp(name, "RSA PRIVATE KEY") == 0)
        return d2i_PrivateKey(EVP_PKEY_RSA, NULL, &p, len);
    if (strcmp(name, "EC PRIVATE KEY") == 0)
        return d2i_PrivateKey(EVP_PKEY_EC, NULL, &p, len);
    if (strcmp(name, "CERTIFICATE") == 0) {
        X509 *cert = d2i_X509(NULL, &p, len);
        EVP_PKEY *pkey = cert ? X509_get_pubkey(cert) : NULL;
        X509_free(cert);
        return pkey;
    }
    return NULL;
}

static size_t count_substrings(const char *s, size_t len, const char *needle)
{
    size_t n = 0, nlen = strlen(needle);
    for (size_t i = 0; i + nlen <= len; i++)
        if (memcmp(s + i, needle, nlen) == 0) n++;
    return n;
}

/* Reads every PEM block; returns the code a single-key import fails with
 * when the last refusal should fail the call, NULL otherwise. */
static const char *import_pem(lua_State *L, int set_idx, tp_keyset *set, const char *pem, size_t len,
                              const char *kid)
{
    const char *last_code = "malformed";
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    int index = 0;
    if (!bio)
        return "malformed";
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        EVP_PKEY *pkey;
        if (!PEM_read_bio(bio, &name, &header, &data, &dlen)) {
            ERR_clear_error();
            break;
        }
        index++;
        if (strcmp(name, "EC PARAMETERS") == 0) {
            /* `openssl ecparam -genkey` writes these before the key. */
        } else if (strstr(name, "ENCRYPTED") || strstr(header, "ENCRYPTED")) {
            add_skipped(L, set_idx, index, NULL, "encrypted private keys are not supported");
            last_code = "malformed";
        } else if (!(pkey = pkey_from_block(name, data, dlen))) {
            add_skipped(L, set_idx, index, NULL, "PEM block %s holds no usable key", name);
            last_code = "malformed";
        } else if (strstr(name, "PRIVATE KEY") && (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA ||
                                                   EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC) &&
                   !pem_private_matches(pkey)) {
            EVP_PKEY_free(pkey);
            add_skipped(L, set_idx, index, NULL, "PEM block %s: the private part does not match the public part",
                        name);
            last_code = "malformed";
        } else if (okp_bits(pkey)) {
            /* Ed25519/Ed448: OpenSSL derives the public key from the
             * private one, so there is no pair to check. */
            size_t raw_len = 0;
            int has_private = strstr(name, "PRIVATE KEY") && EVP_PKEY_get_raw_private_key(pkey, NULL, &raw_len) == 1;
            ERR_clear_error();
            if (!add_key(set, NULL, pkey, kid, has_private, ~0u, TP_KEY_OP_VERIFY | TP_KEY_OP_SIGN))
                add_skipped(L, set_idx, index, NULL, "out of memory");
        } else {
            int has_private = 0;
            const char *why = NULL;
            cjose_jwk_t *jwk = jwk_from_pkey(pkey, &has_private, &why);
            int bits = EVP_PKEY_get_bits(pkey);
            if (!jwk) {
                EVP_PKEY_free(pkey);
                if (strcmp(why, "small") == 0) {
                    add_skipped(L, set_idx, index, NULL, "RSA key of %d bits is below the %d-bit minimum",
                                bits, TP_RSA_MIN_BITS);
                    last_code = "alg_not_allowed";
                } else {
                    add_skipped(L, set_idx, index, NULL, "%s: key type or curve not supported", name);
                    last_code = why[0] == 'i' ? "malformed" : "alg_not_allowed";
                }
            } else if (!add_key(set, jwk, pkey, kid, has_private, ~0u, TP_KEY_OP_VERIFY | TP_KEY_OP_SIGN)) {
                add_skipped(L, set_idx, index, NULL, "out of memory");
            }
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
    }
    BIO_free(bio);
    ERR_clear_error();
    if (index == 0)
        return "malformed";
    return set->count == 0 ? last_code : NULL;
}

/* ---- keys() ------------------------------------------------------------- */

/* Whether material that is neither JSON nor PEM looks like a file name,
 * for a hint: one line that starts with "/", "./", "../" or "~/", or ends
 * in a key file's extension (.pem .crt .key .json .jwk .jwks). */
static int looks_like_path(const char *s, size_t len)
{
    static const char *const starts[] = { "/", "./", "../", "~/", NULL };
    static const char *const ends[] = { ".pem", ".crt", ".key", ".json", ".jwk", ".jwks", NULL };
    if (len == 0 || len > 4096 || memchr(s, '\n', len)) return 0;
    for (int i = 0; starts[i]; i++)
        if (len >= strlen(starts[i]) && memcmp(s, starts[i], strlen(starts[i])) == 0) return 1;
    for (int i = 0; ends[i]; i++)
        if (len > strlen(ends[i]) && strcasecmp(s + len - strlen(ends[i]), ends[i]) == 0) return 1;
    return 0;
}

/* A new empty set with room for capacity keys, pushed on the stack with
 * its skip list as user value. */
static tp_keyset *keyset_new(lua_State *L, size_t capacity)
{
    size_t size = sizeof(tp_keyset) + (capacity ? capacity - 1 : 0) * sizeof(tp_key);
    tp_keyset *set = (tp_keyset *)tp_newuserdata(L, size);
    set->md_ctx = NULL;
    set->ed_ctx = NULL;
    set->kid_index = NULL;
    set->count = 0;
    set->capacity = capacity;
    luaL_setmetatable(L, TP_KEYSET_CLASS);
    lua_newtable(L);
    luaL_setmetatable(L, TP_KEYLIST_CLASS);
    tp_setuservalue(L, -2);
    return set;
}

/* The first refusal's reason, for a fail message about a single key. */
static int fail_skipped(lua_State *L, int set_idx, const char *code)
{
    const char *reason = "no usable key";
    tp_getuservalue(L, set_idx);
    lua_rawgeti(L, -1, 1);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "reason");
        if (lua_isstring(L, -1)) reason = lua_tostring(L, -1);
    }
    return tp_fail(L, code, "%s", reason);
}

/***
 * Imports keys: a JWK Set (`{"keys":[...]}`), a single JWK (JSON text or a
 * Lua table), or PEM text (public keys, certificates, unencrypted private
 * keys; several blocks allowed).  Keys a set cannot use (unsupported type or
 * curve, `use` other than `sig`, `key_ops` allowing neither verify nor sign,
 * RSA under 2048 bits, HMAC secrets shorter than their hash) and malformed
 * keys (a base64url member that is not canonical, a partial RSA CRT set, a
 * private part that does not match the public part) are skipped and listed
 * by `:skipped()`; a single JWK or a PEM with no usable key fails.
 * A set holds at most `max_keys` keys (default 20,000): a JWK Set with
 * more entries or a PEM with more blocks fails with `too_large`, and so
 * does material over 8 KiB per allowed key plus 64 KiB (before parsing)
 * or per key it holds plus 64 KiB (a single JWK: 72 KiB).
 * The set is indexed by kid, so finding a token's key does not depend
 * on the number of keys.
 * @function keys
 * @tparam string|table material
 * @tparam[opt] table opts `kid`: the key id to give keys that have none (PEM);
 *   `max_keys`: the most keys the set may hold (1 to 1,000,000, default 20,000)
 * @treturn KeySet or the fail triple (`malformed`, `alg_not_allowed`, `too_large`)
 */
static int tp_keys(lua_State *L)
{
    static const char *const options[] = { "kid", "max_keys", NULL };
    size_t len = 0, max_keys, max_bytes, blocks;
    const char *material = NULL, *kid = NULL;
    tp_box *box;
    json_t *root, *list;
    tp_keyset *set;
    int set_idx;

    if (lua_type(L, 1) == LUA_TSTRING)
        material = lua_tolstring(L, 1, &len);
    else if (lua_type(L, 1) != LUA_TTABLE)
        return luaL_typeerror(L, 1, "string or table");
    tp_opts(L, 2, options);
    kid = tp_opt_string(L, 2, "kid", NULL, NULL);
    max_keys = (size_t)tp_opt_integer(L, 2, "max_keys", TP_KEYS_DEFAULT_MAX, 1);
    if (max_keys > TP_KEYS_HARD_MAX)
        return luaL_argerror(L, 2, "max_keys must be at most 1000000");
    max_bytes = max_keys * TP_KEY_BYTES + TP_KEY_BYTES_EXTRA;
    if (material && len > max_bytes)
        return tp_fail(L, "too_large", "key material of %I bytes is over the %I-byte limit for %I keys",
                       (lua_Integer)len, (lua_Integer)max_bytes, (lua_Integer)max_keys);

    box = tp_box_new(L);
    if (material) {
        size_t start = 0;
        while (start < len && strchr(" \t\r\n", material[start]) && material[start]) start++;
        if (start < len && material[start] == '{') {
            /* jansson, because cjose takes its keys as jansson values; the
             * flags make it as strict as the token parser. */
            json_error_t jerr;
            box->json[0] = json_loadb(material, len, JSON_REJECT_DUPLICATES, &jerr);
            if (!box->json[0])
                return tp_fail(L, "malformed", "key material is not valid JSON (line %d, column %d)",
                               jerr.line, jerr.column);
        } else if ((blocks = count_substrings(material, len, "-----BEGIN ")) > 0) {
            const char *code;
            if (blocks > max_keys)
                return tp_fail(L, "too_large", "%I PEM blocks are over the limit of %I keys",
                               (lua_Integer)blocks, (lua_Integer)max_keys);
            set = keyset_new(L, blocks);
            set_idx = lua_gettop(L);
            code = import_pem(L, set_idx, set, material, len, kid);
            if (code)
                return fail_skipped(L, set_idx, code);
            kid_index_build(set);
            return 1;
        } else {
            return tp_fail(L, "malformed", "key material is neither JSON (JWK, JWK Set) nor PEM%s",
                           looks_like_path(material, len)
                               ? " (tp.keys takes key material, not a path: tp.keys(io.open(path):read(\"a\")))"
                               : "");
        }
    } else {
        char err[128];
        box->json[0] = tp_json_from_lua(L, 1, err, sizeof err);
        if (!box->json[0])
            return luaL_argerror(L, 1, err);
    }

    root = box->json[0];
    if (!json_is_object(root))
        return tp_fail(L, "malformed", "a JWK or JWK Set must be a JSON object");
    list = json_object_get(root, "keys");
    if (list) {
        if (!json_is_array(list))
            return tp_fail(L, "malformed", "the keys member of a JWK Set must be an array");
        if (json_array_size(list) > max_keys)
            return tp_fail(L, "too_large", "a JWK Set of %I keys is over the limit of %I keys",
                           (lua_Integer)json_array_size(list), (lua_Integer)max_keys);
        if (len > json_array_size(list) * TP_KEY_BYTES + TP_KEY_BYTES_EXTRA)
            return tp_fail(L, "too_large", "key material of %I bytes is over the %I-byte limit for a set of %I keys",
                           (lua_Integer)len, (lua_Integer)(json_array_size(list) * TP_KEY_BYTES + TP_KEY_BYTES_EXTRA),
                           (lua_Integer)json_array_size(list));
        set = keyset_new(L, json_array_size(list));
        set_idx = lua_gettop(L);
        for (size_t i = 0; i < json_array_size(list); i++)
            import_jwk(L, set_idx, set, json_array_get(list, i), (int)i + 1);
    } else {
        const char *code;
        if (len > TP_KEY_BYTES + TP_KEY_BYTES_EXTRA)
            return tp_fail(L, "too_large", "a single JWK of %I bytes is over the %I-byte limit",
                           (lua_Integer)len, (lua_Integer)(TP_KEY_BYTES + TP_KEY_BYTES_EXTRA));
        set = keyset_new(L, 1);
        set_idx = lua_gettop(L);
        code = import_jwk(L, set_idx, set, root, 1);
        if (code)
            return fail_skipped(L, set_idx, code);
        if (kid && !set->key[0].kid)
            set->key[0].kid = strdup(kid);
    }
    tp_box_clear(box);
    kid_index_build(set);
    return 1;
}

/***
 * The key ids in the set, in order (keys without a kid are left out).
 * @function KeySet:kids
 * @treturn {string,...}
 */
static int tp_keyset_kids(lua_State *L)
{
    tp_keyset *set = tp_check_keyset(L, 1);
    lua_Integer n = 0;
    lua_newtable(L);
    for (size_t i = 0; i < set->count; i++) {
        if (!set->key[i].kid) continue;
        lua_pushstring(L, set->key[i].kid);
        lua_rawseti(L, -2, ++n);
    }
    luaL_setmetatable(L, TP_KIDS_CLASS);
    return 1;
}

/* "tokenpolicy.KeyIds: k1, k2" (each kid as tp_printable shows it: a kid
 * comes from whoever published the key set). */
static int tp_kids__tostring(lua_State *L)
{
    char shown[40];
    lua_Integer n;
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 1);
    lua_pushfstring(L, "%s:%s", TP_KIDS_CLASS, n ? " " : " none");
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        const char *kid;
        lua_rawgeti(L, 1, i);
        kid = lua_tolstring(L, -1, &len);
        lua_pushfstring(L, "%s%s", i == 1 ? "" : ", ", kid ? tp_printable(shown, kid, len) : "?");
        lua_remove(L, -2);
        lua_concat(L, 2);
    }
    return 1;
}

/***
 * The keys that were skipped on import, each `{index=, kid=, reason=}`;
 * entries and the list print readably.
 * @function KeySet:skipped
 * @treturn {table,...}
 */
static int tp_keyset_skipped(lua_State *L)
{
    tp_check_keyset(L, 1);
    tp_getuservalue(L, 1);
    return 1;
}

/***
 * A description of every key: `{kid=, kty=, bits=, algs={...}, private=}`,
 * and `key_ops` when a JWK's key_ops leave out verify or sign.  Entries
 * and the list print readably.
 * @function KeySet:list
 * @treturn {table,...}
 */
static int tp_keyset_list(lua_State *L)
{
    tp_keyset *set = tp_check_keyset(L, 1);
    lua_createtable(L, (int)set->count, 0);
    for (size_t i = 0; i < set->count; i++) {
        tp_key *key = &set->key[i];
        lua_Integer n = 0;
        lua_createtable(L, 0, 5);
        if (key->kid) {
            lua_pushstring(L, key->kid);
            lua_setfield(L, -2, "kid");
        }
        lua_pushstring(L, kty_name(key->kty));
        lua_setfield(L, -2, "kty");
        if (key->kty == TP_KTY_OKP) {
            lua_pushstring(L, key->bits == 256 ? "Ed25519" : "Ed448");
            lua_setfield(L, -2, "crv");
        }
        lua_pushinteger(L, key->bits);
        lua_setfield(L, -2, "bits");
        lua_pushboolean(L, key->has_private);
        lua_setfield(L, -2, "private");
        lua_newtable(L);
        for (int a = 0; a < TP_ALG_COUNT; a++) {
            if (!(key->algs & (1u << a))) continue;
            lua_pushstring(L, tp_algs[a].name);
            lua_rawseti(L, -2, ++n);
        }
        lua_setfield(L, -2, "algs");
        if (key->ops != (TP_KEY_OP_VERIFY | TP_KEY_OP_SIGN)) {
            /* What a JWK's key_ops left of verify and sign. */
            n = 0;
            lua_newtable(L);
            if (key->ops & TP_KEY_OP_VERIFY) {
                lua_pushliteral(L, "verify");
                lua_rawseti(L, -2, ++n);
            }
            if (key->ops & TP_KEY_OP_SIGN) {
                lua_pushliteral(L, "sign");
                lua_rawseti(L, -2, ++n);
            }
            lua_setfield(L, -2, "key_ops");
        }
        luaL_setmetatable(L, TP_KEYINFO_CLASS);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    luaL_setmetatable(L, TP_KEYLIST_CLASS);
    return 1;
}

/* Appends at most len bytes of text to out (size bytes, NUL-terminated),
 * printable: list() and skipped() entries are plain tables a caller may
 * have changed. */
static void append(char *out, size_t size, const char *text)
{
    size_t used = strlen(out);
    char safe[40];
    snprintf(out + used, size - used, "%s", tp_printable(safe, text, strlen(text)));
}

/* The string field name of the table at 1, or NULL. */
static const char *string_field(lua_State *L, const char *name)
{
    const char *s = lua_getfield(L, 1, name) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);  /* a string stays referenced by the table */
    return s;
}

/* "RSA 2048 kid=a private: RS256 RS384 ..." for a list() entry. */
static int tp_keyinfo__tostring(lua_State *L)
{
    char out[200] = "";
    const char *kty, *kid, *crv;
    luaL_checktype(L, 1, LUA_TTABLE);
    kty = string_field(L, "kty");
    kid = string_field(L, "kid");
    crv = string_field(L, "crv");
    append(out, sizeof out, kty ? kty : "?");
    if (crv) {  /* OKP: the curve says more than its bits */
        append(out, sizeof out, " ");
        append(out, sizeof out, crv);
    } else {
        if (lua_getfield(L, 1, "bits") == LUA_TNUMBER && lua_isinteger(L, -1))
            snprintf(out + strlen(out), sizeof out - strlen(out), " %lld", (long long)lua_tointeger(L, -1));
        lua_pop(L, 1);
    }
    if (kid) {
        append(out, sizeof out, " kid=");
        append(out, sizeof out, kid);
    }
    if (lua_getfield(L, 1, "private") == LUA_TBOOLEAN && lua_toboolean(L, -1))
        append(out, sizeof out, " private");
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "algs") == LUA_TTABLE) {
        append(out, sizeof out, ":");
        for (lua_Integer i = 1; i <= 12; i++) {
            if (lua_rawgeti(L, -1, i) == LUA_TSTRING) {
                append(out, sizeof out, " ");
                append(out, sizeof out, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "key_ops") == LUA_TTABLE) {
        append(out, sizeof out, " (key_ops:");
        for (lua_Integer i = 1; i <= 2; i++) {
            if (lua_rawgeti(L, -1, i) == LUA_TSTRING) {
                append(out, sizeof out, " ");
                append(out, sizeof out, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        }
        append(out, sizeof out, ")");
    }
    lua_pop(L, 1);
    lua_pushstring(L, out);
    return 1;
}

/* "#2 kid=enc: key is for use 'enc', not signatures" for a skipped()
 * entry. */
static int tp_skippedkey__tostring(lua_State *L)
{
    char out[200] = "#";
    const char *kid, *reason;
    luaL_checktype(L, 1, LUA_TTABLE);
    kid = string_field(L, "kid");
    reason = string_field(L, "reason");
    if (lua_getfield(L, 1, "index") == LUA_TNUMBER && lua_isinteger(L, -1))
        snprintf(out + 1, sizeof out - 1, "%lld", (long long)lua_tointeger(L, -1));
    else
        append(out, sizeof out, "?");
    lua_pop(L, 1);
    if (kid) {
        append(out, sizeof out, " kid=");
        append(out, sizeof out, kid);
    }
    append(out, sizeof out, ": ");
    /* Reasons are ours, but may be long: the 32-byte cut would hide them.
     * The table may have been changed, so controls still become '?'. */
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s", reason ? reason : "?");
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    lua_pushstring(L, out);
    return 1;
}

/* One entry per line, each by its own __tostring; "(none)" when empty. */
static int tp_keylist__tostring(lua_State *L)
{
    lua_Integer n;
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 1);
    lua_settop(L, 1);
    if (n == 0) lua_pushliteral(L, "(none)");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        luaL_tolstring(L, -1, NULL);
        lua_remove(L, -2);
        if (i > 1) {
            lua_pushliteral(L, "\n");
            lua_insert(L, -2);
            lua_concat(L, 3);
        }
    }
    return 1;
}

static int tp_keyset__len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)tp_check_keyset(L, 1)->count);
    return 1;
}

static int tp_keyset__tostring(lua_State *L)
{
    tp_keyset *set = tp_check_keyset(L, 1);
    luaL_Buffer b;
    size_t skipped;
    tp_getuservalue(L, 1);
    skipped = (size_t)lua_rawlen(L, -1);
    lua_pop(L, 1);
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "tokenpolicy.KeySet: %d key%s", (int)set->count, set->count == 1 ? "" : "s");
    luaL_addvalue(&b);
    for (size_t i = 0; i < set->count; i++) {
        tp_key *key = &set->key[i];
        char safe[40];
        const char *what = key->kty == TP_KTY_EC ? "EC P-" : key->kty == TP_KTY_OCT ? "oct " :
                           key->kty == TP_KTY_OKP ? "OKP Ed" : "RSA ";
        int size = key->kty == TP_KTY_OKP ? (key->bits == 256 ? 25519 : 448) : key->bits;
        lua_pushfstring(L, "%s%s%d%s%s%s%s", i ? ", " : " (", what, size,
                        key->kty == TP_KTY_OCT ? " bits" : "",
                        key->kid ? " kid=" : "", key->kid ? tp_printable(safe, key->kid, strlen(key->kid)) : "",
                        key->has_private ? " private" : "");
        luaL_addvalue(&b);
    }
    if (set->count) luaL_addstring(&b, ")");
    if (skipped) {
        lua_pushfstring(L, ", %d skipped", (int)skipped);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

long tp_keyset_kid_next(const tp_keyset *set, const char *kid, size_t kidlen, long after)
{
    long i;
    if (set->kid_index && after >= -1 && (after < 0 || (size_t)after < set->count)) {
        if (after >= 0 && kid_equal(set->key[after].kid, kid, kidlen))
            return set->kid_index->next_same[after];  /* the usual next step */
        i = kid_index_first(set, kid, kidlen);
        if (i != -2) {  /* after, if any, had another kid: skip to past it */
            while (i >= 0 && i <= after) i = set->kid_index->next_same[i];
            return i;
        }
    }
    for (size_t j = (size_t)(after + 1); j < set->count; j++)
        if (kid_equal(set->key[j].kid, kid, kidlen)) return (long)j;
    return -1;
}

void tp_open_keys(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "kids", tp_keyset_kids },
        { "skipped", tp_keyset_skipped },
        { "list", tp_keyset_list },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", tp_keyset__gc },
        { "__len", tp_keyset__len },
        { "__tostring", tp_keyset__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg keyinfo_meta[] = { { "__tostring", tp_keyinfo__tostring }, { NULL, NULL } };
    static const luaL_Reg skipped_meta[] = { { "__tostring", tp_skippedkey__tostring }, { NULL, NULL } };
    static const luaL_Reg kids_meta[] = { { "__tostring", tp_kids__tostring }, { NULL, NULL } };
    static const luaL_Reg keylist_meta[] = { { "__tostring", tp_keylist__tostring }, { NULL, NULL } };
    tp_register_class(L, TP_KEYSET_CLASS, meta, methods, 0);
    tp_register_class(L, TP_KEYINFO_CLASS, keyinfo_meta, NULL, 0);
    tp_register_class(L, TP_SKIPPED_CLASS, skipped_meta, NULL, 0);
    tp_register_class(L, TP_KEYLIST_CLASS, keylist_meta, NULL, 0);
    tp_register_class(L, TP_KIDS_CLASS, kids_meta, NULL, 0);
    lua_pushcfunction(L, tp_keys);
    lua_setfield(L, -2, "keys");
}
