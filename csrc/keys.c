/* Key sets: import JWK Sets, single JWKs and PEM (SPKI public keys, X.509
 * certificates, PKCS#1/PKCS#8 private keys) into cjose keys, with the
 * metadata verify needs to bind algorithms to keys. */
#include <stdarg.h>
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <openssl/x509.h>
#include "tp.h"

#define TP_RSA_MIN_BITS 2048

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

static void key_clear(tp_key *key)
{
    for (int a = 0; a < TP_ALG_COUNT; a++)
        EVP_PKEY_CTX_free(key->verify_ctx[a]);
    for (int h = 0; h < 3; h++)
        EVP_MAC_CTX_free(key->mac_ctx[h]);
    EVP_PKEY_free(key->pkey);
    cjose_jwk_release(key->jwk);
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
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
    ERR_clear_error();
}

/* Takes ownership of jwk and pkey: stores them in the set, or frees them.
 * pkey may be NULL for oct keys. */
static int add_key(tp_keyset *set, cjose_jwk_t *jwk, EVP_PKEY *pkey, const char *kid, int has_private,
                   unsigned alg_limit)
{
    cjose_err err;
    tp_key *key;
    enum tp_kty kty;
    switch (cjose_jwk_get_kty(jwk, &err)) {
    case CJOSE_JWK_KTY_RSA: kty = TP_KTY_RSA; break;
    case CJOSE_JWK_KTY_EC: kty = TP_KTY_EC; break;
    case CJOSE_JWK_KTY_OCT: kty = TP_KTY_OCT; break;
    default: kty = TP_KTY_NONE; break;
    }
    if (set->count >= set->capacity || kty == TP_KTY_NONE || (kty != TP_KTY_OCT && !pkey)) {
        cjose_jwk_release(jwk);
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
    key->bits = (int)cjose_jwk_get_keysize(jwk, &err);
    if (kty == TP_KTY_OCT) {
        key->secret = (const unsigned char *)cjose_jwk_get_keydata(jwk, &err);
        key->secret_len = (size_t)key->bits / 8;
    }
    key->has_private = has_private;
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

/* JWS ECDSA signatures are R || S; OpenSSL wants DER. */
static int ecdsa_to_der(const unsigned char *sig, size_t siglen, unsigned char *der, size_t dersize)
{
    size_t half = siglen / 2;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    int len = -1;
    if (es && r && s && ECDSA_SIG_set0(es, r, s)) {
        r = s = NULL;  /* owned by es now */
        if (i2d_ECDSA_SIG(es, NULL) <= (int)dersize) {
            unsigned char *p = der;
            len = i2d_ECDSA_SIG(es, &p);
        }
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return len;
}

int tp_key_verify(tp_keyset *set, tp_key *key, int alg, const unsigned char *input, size_t inlen,
                  const unsigned char *sig, size_t siglen)
{
    const EVP_MD *md = digest_for(alg);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_PKEY_CTX *ctx;
    int ok = 0;
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
        unsigned char der[200];
        int der_len = ecdsa_to_der(sig, siglen, der, sizeof der);
        ok = der_len > 0 && EVP_PKEY_verify(ctx, der, (size_t)der_len, digest, digest_len) == 1;
    } else {
        ok = EVP_PKEY_verify(ctx, sig, siglen, digest, digest_len) == 1;
    }
done:
    if (!ok) ERR_clear_error();
    return ok;
}

/* A public EVP_PKEY from a JWK's members (cjose has already checked them). */
static EVP_PKEY *pkey_from_jwk(json_t *jwk_json, const char *kty)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *n = NULL, *e = NULL;
    uint8_t *raw[3] = { NULL, NULL, NULL };
    size_t raw_len[3] = { 0, 0, 0 };
    unsigned char point[1 + 2 * 66];
    cjose_err err;
    int is_rsa = strcmp(kty, "RSA") == 0;
    const char *names[2] = { is_rsa ? "n" : "x", is_rsa ? "e" : "y" };

    for (int i = 0; i < 2; i++) {
        const char *text = json_string_value(json_object_get(jwk_json, names[i]));
        if (!text || !cjose_base64url_decode(text, strlen(text), &raw[i], &raw_len[i], &err))
            goto done;
    }
    if (!bld) goto done;
    if (is_rsa) {
        n = BN_bin2bn(raw[0], (int)raw_len[0], NULL);
        e = BN_bin2bn(raw[1], (int)raw_len[1], NULL);
        if (!n || !e || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            goto done;
    } else {
        const char *crv = json_string_value(json_object_get(jwk_json, "crv"));
        size_t width = crv && strcmp(crv, "P-256") == 0 ? 32 : crv && strcmp(crv, "P-384") == 0 ? 48 :
                       crv && strcmp(crv, "P-521") == 0 ? 66 : 0;
        if (!width || raw_len[0] > width || raw_len[1] > width) goto done;
        /* The uncompressed point 04 || X || Y, each coordinate left-padded. */
        memset(point, 0, sizeof point);
        point[0] = 0x04;
        memcpy(point + 1 + width - raw_len[0], raw[0], raw_len[0]);
        memcpy(point + 1 + 2 * width - raw_len[1], raw[1], raw_len[1]);
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, crv, 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * width))
            goto done;
    }
    if (!(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(ctx = EVP_PKEY_CTX_new_from_name(NULL, is_rsa ? "RSA" : "EC", NULL)) ||
        EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
done:
    for (int i = 0; i < 2; i++) cjose_get_dealloc()(raw[i]);
    BN_free(n);
    BN_free(e);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return pkey;
}

/* ---- JWK ---------------------------------------------------------------- */

static const char *json_str(json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* Imports one JWK object; on refusal records a reason and returns the code
 * a single-key import fails with. */
static const char *import_jwk(lua_State *L, int set_idx, tp_keyset *set, json_t *jwk_json, int index)
{
    cjose_err err;
    const char *kty, *kid, *use, *alg;
    unsigned alg_limit = ~0u;
    cjose_jwk_t *jwk;
    EVP_PKEY *pkey;
    int has_private, bits;
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
    if (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0 && strcmp(kty, "oct") != 0) {
        char safe[40];
        add_skipped(L, set_idx, index, kid, "key type %s is not supported",
                    tp_printable(safe, kty, strlen(kty)));
        return "alg_not_allowed";
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
    has_private = strcmp(kty, "oct") == 0 || json_object_get(jwk_json, "d") != NULL;
    jwk = cjose_jwk_import_json((cjose_header_t *)jwk_json, &err);
    if (!jwk) {
        add_skipped(L, set_idx, index, kid, "invalid %s key: its members do not form a valid key", kty);
        return "malformed";
    }
    bits = (int)cjose_jwk_get_keysize(jwk, &err);
    if (strcmp(kty, "RSA") == 0 && bits < TP_RSA_MIN_BITS) {
        cjose_jwk_release(jwk);
        add_skipped(L, set_idx, index, kid, "RSA key of %d bits is below the %d-bit minimum",
                    bits, TP_RSA_MIN_BITS);
        return "alg_not_allowed";
    }
    pkey = strcmp(kty, "oct") == 0 ? NULL : pkey_from_jwk(jwk_json, kty);
    if (!add_key(set, jwk, pkey, kid, has_private, alg_limit)) {
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
            } else if (!add_key(set, jwk, pkey, kid, has_private, ~0u)) {
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

/* A new empty set with room for capacity keys, pushed on the stack with
 * its skip list as user value. */
static tp_keyset *keyset_new(lua_State *L, size_t capacity)
{
    size_t size = sizeof(tp_keyset) + (capacity ? capacity - 1 : 0) * sizeof(tp_key);
    tp_keyset *set = (tp_keyset *)tp_newuserdata(L, size);
    set->md_ctx = NULL;
    set->count = 0;
    set->capacity = capacity;
    luaL_setmetatable(L, TP_KEYSET_CLASS);
    lua_newtable(L);
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
 * curve, `use` other than `sig`, RSA under 2048 bits, HMAC secrets shorter
 * than their hash) are skipped and listed by `:skipped()`; a single JWK or a
 * PEM with no usable key fails.
 * @function keys
 * @tparam string|table material
 * @tparam[opt] table opts `kid`: the key id to give keys that have none (PEM)
 * @treturn KeySet or the fail triple (`malformed`, `alg_not_allowed`)
 */
static int tp_keys(lua_State *L)
{
    static const char *const options[] = { "kid", NULL };
    size_t len = 0;
    const char *material = NULL, *kid = NULL;
    tp_box *box;
    json_t *root, *list;
    tp_keyset *set;
    int set_idx;

    if (lua_type(L, 1) == LUA_TSTRING)
        material = lua_tolstring(L, 1, &len);
    else if (lua_type(L, 1) != LUA_TTABLE)
        return luaL_typeerror(L, 1, "string or table");
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        tp_check_options(L, 2, options);
        if (lua_getfield(L, 2, "kid") == LUA_TSTRING)
            kid = lua_tostring(L, -1);
        else if (!lua_isnil(L, -1))
            return luaL_argerror(L, 2, "kid must be a string");
        lua_pop(L, 1);  /* still referenced by opts */
    }
    if (material && len > 1024 * 1024)
        return tp_fail(L, "too_large", "key material of %I bytes is over the 1 MiB limit", (lua_Integer)len);

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
        } else if (count_substrings(material, len, "-----BEGIN ") > 0) {
            const char *code;
            set = keyset_new(L, count_substrings(material, len, "-----BEGIN "));
            set_idx = lua_gettop(L);
            code = import_pem(L, set_idx, set, material, len, kid);
            if (code)
                return fail_skipped(L, set_idx, code);
            return 1;
        } else {
            return tp_fail(L, "malformed", "key material is neither JSON (JWK, JWK Set) nor PEM");
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
        set = keyset_new(L, json_array_size(list));
        set_idx = lua_gettop(L);
        for (size_t i = 0; i < json_array_size(list); i++)
            import_jwk(L, set_idx, set, json_array_get(list, i), (int)i + 1);
    } else {
        const char *code;
        set = keyset_new(L, 1);
        set_idx = lua_gettop(L);
        code = import_jwk(L, set_idx, set, root, 1);
        if (code)
            return fail_skipped(L, set_idx, code);
        if (kid && !set->key[0].kid)
            set->key[0].kid = strdup(kid);
    }
    tp_box_clear(box);
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
    return 1;
}

/***
 * The keys that were skipped on import, each `{index=, kid=, reason=}`.
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
 * A description of every key: `{kid=, kty=, bits=, algs={...}, private=}`.
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
        lua_rawseti(L, -2, (lua_Integer)i + 1);
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
        const char *what = key->kty == TP_KTY_EC ? "EC P-" : key->kty == TP_KTY_OCT ? "oct " : "RSA ";
        lua_pushfstring(L, "%s%s%d%s%s%s%s", i ? ", " : " (", what, key->bits,
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
    luaL_newmetatable(L, TP_KEYSET_CLASS);
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, tp_keys);
    lua_setfield(L, -2, "keys");
}
