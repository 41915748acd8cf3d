/* raw_openssl: the baseline `make bench` compares tp.verify against.  It
 * verifies one JWS signature with OpenSSL's EVP API directly, with no JOSE
 * library, no JSON and no Lua, so the ratio shows what tokenpolicy's own
 * layers cost on top of the cryptography.
 *
 * Usage: raw_openssl ALG KEYFILE SIGNING_INPUT_FILE SIGNATURE_FILE SECONDS
 *   ALG                 RS256, ES256, HS256 or EdDSA
 *   KEYFILE             RS256, ES256, EdDSA: a PEM public key (SPKI) or private key;
 *                       HS256: the raw secret bytes
 *   SIGNING_INPUT_FILE  the JWS signing input "b64url(header).b64url(payload)"
 *   SIGNATURE_FILE      the raw JWS signature (RS256: the PKCS#1 v1.5
 *                       signature; ES256: R||S, 32 + 32 bytes; HS256: the MAC)
 *   SECONDS             time to measure each baseline, e.g. 1 or 0.5
 *
 * Prints one line per baseline, "NAME OPS_PER_SECOND DESCRIPTION":
 *   RS256, ES256:
 *     evp_digestverify  a fresh EVP_MD_CTX per operation with
 *                       EVP_DigestVerifyInit + EVP_DigestVerify (what a
 *                       typical caller writes)
 *     evp_pkey_verify   an EVP_PKEY_CTX initialised once; per operation
 *                       SHA-256 of the signing input on a reused digest
 *                       context, then EVP_PKEY_verify (the fastest raw path)
 *   HS256:
 *     hmac_oneshot      HMAC() per operation, then CRYPTO_memcmp
 *     evp_mac_prepared  an EVP_MAC_CTX keyed once, re-initialised per
 *                       operation, then CRYPTO_memcmp
 *   EdDSA (Ed25519 or Ed448, as the key says):
 *     evp_digestverify  a fresh EVP_MD_CTX per operation with
 *                       EVP_DigestVerifyInit (no digest) + EVP_DigestVerify
 *     evp_ed_reused     one EVP_MD_CTX reset and re-initialised per
 *                       operation (EdDSA binds the key at init; one-shot)
 * Every operation checks its result; a signature that does not verify
 * aborts with exit status 1, so a rate is never that of a failing path.
 * Time is CLOCK_MONOTONIC wall time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#define ES256_COORD_BYTES 32
#define SHA256_BYTES 32
/* Operations between clock reads: small enough for a precise end time even
 * for HMAC (about a microsecond each), large enough that reading the clock
 * costs nothing measurable. */
#define BATCH 16
/* Untimed run before each measurement, so first-use costs (lazy provider
 * fetches, cold caches, page faults) stay out of the rate. */
#define WARMUP_SECONDS 0.05

typedef struct bytes {
    unsigned char *data;
    size_t len;
} bytes;

/* Everything one operation needs; built once, outside the timed loops. */
typedef struct bench_state {
    const char *alg;
    bytes signing_input;
    bytes signature;        /* as the verifier consumes it: DER for ES256 */
    bytes secret;           /* HS256 only */
    EVP_PKEY *pkey;         /* RS256, ES256 */
    EVP_PKEY_CTX *pkey_ctx; /* prepared verify context */
    EVP_MD *sha256;         /* fetched once */
    EVP_MD_CTX *digest_ctx; /* reused for the prepared path's digest */
    EVP_MAC_CTX *mac_ctx;   /* HS256 prepared path, keyed once */
} bench_state;

typedef void (*operation)(bench_state *state);

static void die(const char *what)
{
    fprintf(stderr, "raw_openssl: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static bytes read_file(const char *path)
{
    bytes b = { NULL, 0 };
    size_t cap = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "raw_openssl: cannot open %s\n", path);
        exit(1);
    }
    for (;;) {
        size_t got;
        if (b.len == cap) {
            cap = cap ? cap * 2 : 4096;
            if (!(b.data = realloc(b.data, cap))) die("out of memory");
        }
        got = fread(b.data + b.len, 1, cap - b.len, f);
        b.len += got;
        if (got == 0) break;
    }
    if (ferror(f)) die("read error");
    fclose(f);
    return b;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs op for about `seconds` and returns operations per second. */
static double run_for(operation op, bench_state *state, double seconds)
{
    double start = now_seconds(), elapsed;
    unsigned long ops = 0;
    do {
        for (int i = 0; i < BATCH; i++) op(state);
        ops += BATCH;
        elapsed = now_seconds() - start;
    } while (elapsed < seconds);
    return (double)ops / elapsed;
}

static void measure(const char *name, const char *description, operation op, bench_state *state,
                    double seconds)
{
    double rate;
    run_for(op, state, WARMUP_SECONDS);
    rate = run_for(op, state, seconds);
    printf("%s %.1f %s\n", name, rate, description);
    fflush(stdout);
}

/* ---- RS256 and ES256 ---------------------------------------------------- */

static void op_digest_verify(bench_state *s)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) die("EVP_MD_CTX_new failed");
    if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, s->pkey) != 1)
        die("EVP_DigestVerifyInit failed");
    if (EVP_DigestVerify(ctx, s->signature.data, s->signature.len,
                         s->signing_input.data, s->signing_input.len) != 1)
        die("EVP_DigestVerify: the signature does not verify");
    EVP_MD_CTX_free(ctx);
}

static void op_pkey_verify(bench_state *s)
{
    unsigned char digest[SHA256_BYTES];
    unsigned int digest_len = 0;
    if (EVP_DigestInit_ex2(s->digest_ctx, s->sha256, NULL) != 1 ||
        EVP_DigestUpdate(s->digest_ctx, s->signing_input.data, s->signing_input.len) != 1 ||
        EVP_DigestFinal_ex(s->digest_ctx, digest, &digest_len) != 1)
        die("SHA-256 failed");
    if (EVP_PKEY_verify(s->pkey_ctx, s->signature.data, s->signature.len, digest, digest_len) != 1)
        die("EVP_PKEY_verify: the signature does not verify");
}

static EVP_PKEY *load_pem_key(const char *path)
{
    EVP_PKEY *pkey;
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open the key file");
    pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!pkey) {
        /* Not a public key: try a private key, which holds the public one. */
        ERR_clear_error();
        rewind(f);
        pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    }
    fclose(f);
    if (!pkey) die("the key file holds no PEM public or private key");
    return pkey;
}

/* A JWS ES256 signature is R||S as fixed-width big-endian integers, while
 * OpenSSL verifies the DER encoding of ECDSA-Sig-Value. */
static bytes es256_signature_to_der(bytes raw)
{
    bytes der = { NULL, 0 };
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r, *s;
    int len;
    if (raw.len != 2 * ES256_COORD_BYTES) die("an ES256 signature has 64 bytes (R||S)");
    r = BN_bin2bn(raw.data, ES256_COORD_BYTES, NULL);
    s = BN_bin2bn(raw.data + ES256_COORD_BYTES, ES256_COORD_BYTES, NULL);
    if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) die("cannot build ECDSA_SIG");
    len = i2d_ECDSA_SIG(sig, &der.data);
    if (len <= 0) die("i2d_ECDSA_SIG failed");
    der.len = (size_t)len;
    ECDSA_SIG_free(sig);
    return der;
}

static void prepare_signature(bench_state *s, const char *key_path)
{
    s->pkey = load_pem_key(key_path);
    if (strcmp(s->alg, "RS256") == 0) {
        if (EVP_PKEY_get_base_id(s->pkey) != EVP_PKEY_RSA) die("RS256 needs an RSA key");
    } else {
        bytes der;
        if (EVP_PKEY_get_base_id(s->pkey) != EVP_PKEY_EC) die("ES256 needs an EC key");
        der = es256_signature_to_der(s->signature);
        free(s->signature.data);
        s->signature = der;  /* allocated by OpenSSL; lives until exit */
    }

    if (!(s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL))) die("cannot fetch SHA256");
    if (!(s->digest_ctx = EVP_MD_CTX_new())) die("EVP_MD_CTX_new failed");
    if (!(s->pkey_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, s->pkey, NULL))) die("EVP_PKEY_CTX_new failed");
    if (EVP_PKEY_verify_init(s->pkey_ctx) != 1) die("EVP_PKEY_verify_init failed");
    if (strcmp(s->alg, "RS256") == 0 && EVP_PKEY_CTX_set_rsa_padding(s->pkey_ctx, RSA_PKCS1_PADDING) != 1)
        die("cannot set PKCS#1 v1.5 padding");
    /* For RSA this makes the verify check the DigestInfo's hash OID. */
    if (EVP_PKEY_CTX_set_signature_md(s->pkey_ctx, s->sha256) != 1) die("cannot set the signature digest");
}

/* ---- HS256 -------------------------------------------------------------- */

static void check_mac(const bench_state *s, const unsigned char *mac, size_t len)
{
    if (len != s->signature.len || CRYPTO_memcmp(mac, s->signature.data, len) != 0)
        die("HMAC-SHA256: the signature does not verify");
}

static void op_hmac_oneshot(bench_state *s)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), s->secret.data, (int)s->secret.len, s->signing_input.data, s->signing_input.len,
              mac, &len))
        die("HMAC failed");
    check_mac(s, mac, len);
}

static void op_mac_prepared(bench_state *s)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t len = 0;
    /* A NULL key re-initialises with the key set at preparation. */
    if (EVP_MAC_init(s->mac_ctx, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(s->mac_ctx, s->signing_input.data, s->signing_input.len) != 1 ||
        EVP_MAC_final(s->mac_ctx, mac, &len, sizeof mac) != 1)
        die("EVP_MAC failed");
    check_mac(s, mac, len);
}

static void prepare_hmac(bench_state *s, const char *key_path)
{
    char digest_name[] = "SHA256";
    OSSL_PARAM params[2];
    EVP_MAC *mac;
    s->secret = read_file(key_path);
    if (s->secret.len == 0) die("the HMAC secret is empty");
    if (!(mac = EVP_MAC_fetch(NULL, "HMAC", NULL))) die("cannot fetch HMAC");
    if (!(s->mac_ctx = EVP_MAC_CTX_new(mac))) die("EVP_MAC_CTX_new failed");
    EVP_MAC_free(mac);  /* the context holds its own reference */
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(s->mac_ctx, s->secret.data, s->secret.len, params) != 1) die("EVP_MAC_init failed");
}

/* ---- EdDSA (Ed25519, Ed448) ---------------------------------------------- */

static void op_ed_digest_verify(bench_state *s)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) die("EVP_MD_CTX_new failed");
    if (EVP_DigestVerifyInit_ex(ctx, NULL, NULL, NULL, NULL, s->pkey, NULL) != 1)
        die("EVP_DigestVerifyInit_ex failed");
    if (EVP_DigestVerify(ctx, s->signature.data, s->signature.len, s->signing_input.data,
                         s->signing_input.len) != 1)
        die("EdDSA: the signature does not verify");
    EVP_MD_CTX_free(ctx);
}

static void op_ed_reused(bench_state *s)
{
    EVP_MD_CTX_reset(s->digest_ctx);
    if (EVP_DigestVerifyInit_ex(s->digest_ctx, NULL, NULL, NULL, NULL, s->pkey, NULL) != 1)
        die("EVP_DigestVerifyInit_ex failed");
    if (EVP_DigestVerify(s->digest_ctx, s->signature.data, s->signature.len, s->signing_input.data,
                         s->signing_input.len) != 1)
        die("EdDSA: the signature does not verify");
}

static void run_eddsa(bench_state *s, const char *key_path, double seconds)
{
    int id;
    s->pkey = load_pem_key(key_path);
    id = EVP_PKEY_get_base_id(s->pkey);
    if (id != EVP_PKEY_ED25519 && id != EVP_PKEY_ED448) die("EdDSA needs an Ed25519 or Ed448 key");
    if (!(s->digest_ctx = EVP_MD_CTX_new())) die("EVP_MD_CTX_new failed");
    op_ed_digest_verify(s);
    op_ed_reused(s);
    measure("evp_digestverify", "EVP_DigestVerify, fresh ctx per op", op_ed_digest_verify, s, seconds);
    measure("evp_ed_reused", "EVP_DigestVerify, reused ctx", op_ed_reused, s, seconds);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bench_state state;
    double seconds;
    char *end;

    if (argc != 6) {
        fprintf(stderr, "usage: %s RS256|ES256|HS256|EdDSA KEYFILE SIGNING_INPUT_FILE SIGNATURE_FILE SECONDS\n",
                argv[0]);
        return 2;
    }
    memset(&state, 0, sizeof state);
    state.alg = argv[1];
    if (strcmp(state.alg, "RS256") != 0 && strcmp(state.alg, "ES256") != 0 && strcmp(state.alg, "HS256") != 0 &&
        strcmp(state.alg, "EdDSA") != 0)
        die("ALG must be RS256, ES256, HS256 or EdDSA");
    seconds = strtod(argv[5], &end);
    if (*end != '\0' || !(seconds > 0 && seconds <= 60)) die("SECONDS must be a number in (0, 60]");
    state.signing_input = read_file(argv[3]);
    state.signature = read_file(argv[4]);

    if (strcmp(state.alg, "EdDSA") == 0) {
        run_eddsa(&state, argv[2], seconds);
    } else if (strcmp(state.alg, "RS256") == 0 || strcmp(state.alg, "ES256") == 0) {
        prepare_signature(&state, argv[2]);
        /* One checked call of each before any timing: a mismatch is reported
         * as a failure here, not as a slow or absent rate. */
        op_digest_verify(&state);
        op_pkey_verify(&state);
        measure("evp_digestverify", "EVP_DigestVerify, fresh ctx per op", op_digest_verify, &state,
                seconds);
        measure("evp_pkey_verify", "EVP_PKEY_verify, prepared ctx", op_pkey_verify, &state, seconds);
    } else {
        prepare_hmac(&state, argv[2]);
        op_hmac_oneshot(&state);
        op_mac_prepared(&state);
        measure("hmac_oneshot", "HMAC() one-shot", op_hmac_oneshot, &state, seconds);
        measure("evp_mac_prepared", "EVP_MAC, keyed ctx", op_mac_prepared, &state, seconds);
    }
    return 0;
}
