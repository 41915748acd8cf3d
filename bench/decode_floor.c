/* decode_floor: what any verifier built on this project's libraries must
 * spend on a token besides the cryptography, measured alone, so that
 * `make bench` can say how close to raw OpenSSL v:check can possibly get.
 *
 * A verifier must turn the payload and the signature from base64url into
 * bytes (OpenSSL's EVP_DecodeBlock, after the URL alphabet is mapped to the
 * standard one, as util.c does) and must read the payload as JSON (yajl,
 * with callbacks that do nothing).  The header is left out: v:check keeps
 * the last header it read and compares bytes.
 *
 * Usage: decode_floor TOKEN_FILE SECONDS
 * Prints "base64url NANOSECONDS" and "json NANOSECONDS" per token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/evp.h>
#include <yajl/yajl_parse.h>

#define BATCH 64
#define MAX_TOKEN 65536

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "decode_floor: %s\n", what);
    exit(1);
}

/* A segment of the token, and room to decode it. */
typedef struct segment {
    const char *text;
    size_t len;
    char scratch[MAX_TOKEN];
    unsigned char out[MAX_TOKEN];
    int out_len;
} segment;

/* What util.c's tp_b64url_decode does: refuse the standard alphabet's
 * extra characters, map the URL alphabet, pad, decode. */
static int decode(segment *s)
{
    size_t padded = (s->len + 3) / 4 * 4;
    if (memchr(s->text, '+', s->len) || memchr(s->text, '/', s->len) || memchr(s->text, '=', s->len)) return -1;
    memcpy(s->scratch, s->text, s->len);
    for (size_t i = 0; i < s->len; i++) {
        if (s->scratch[i] == '-') s->scratch[i] = '+';
        else if (s->scratch[i] == '_') s->scratch[i] = '/';
    }
    for (size_t i = s->len; i < padded; i++) s->scratch[i] = '=';
    return EVP_DecodeBlock(s->out, (const unsigned char *)s->scratch, (int)padded);
}

static int on_null(void *ctx) { (void)ctx; return 1; }
static int on_boolean(void *ctx, int b) { (void)ctx; (void)b; return 1; }
static int on_number(void *ctx, const char *s, size_t len) { (void)ctx; (void)s; (void)len; return 1; }
static int on_string(void *ctx, const unsigned char *s, size_t len) { (void)ctx; (void)s; (void)len; return 1; }
static int on_bracket(void *ctx) { (void)ctx; return 1; }

static const yajl_callbacks callbacks = {
    on_null, on_boolean, NULL, NULL, on_number, on_string,
    on_bracket, on_string, on_bracket, on_bracket, on_bracket
};

static int parse(const unsigned char *json, size_t len)
{
    yajl_handle h = yajl_alloc(&callbacks, NULL, NULL);
    int ok;
    if (!h) return 0;
    yajl_config(h, yajl_dont_validate_strings, 1);
    ok = yajl_parse(h, json, len) == yajl_status_ok && yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    return ok;
}

static segment payload, signature;

static void op_decode(void)
{
    if (decode(&payload) < 0 || decode(&signature) < 0) die("the token is not base64url");
}

static void op_parse(void)
{
    if (!parse(payload.out, (size_t)payload.out_len)) die("the payload is not JSON");
}

/* Nanoseconds per call of op over about `seconds`, after a warm-up. */
static double time_op(void (*op)(void), double seconds)
{
    double start, elapsed;
    unsigned long calls = 0;
    for (int i = 0; i < 1000; i++) op();
    start = now_seconds();
    do {
        for (int i = 0; i < BATCH; i++) op();
        calls += BATCH;
        elapsed = now_seconds() - start;
    } while (elapsed < seconds);
    return elapsed / (double)calls * 1e9;
}

int main(int argc, char **argv)
{
    static char token[MAX_TOKEN];
    const char *dot1, *dot2;
    size_t len;
    double seconds;
    FILE *f;
    if (argc != 3) {
        fprintf(stderr, "usage: %s TOKEN_FILE SECONDS\n", argv[0]);
        return 2;
    }
    seconds = strtod(argv[2], NULL);
    if (!(seconds > 0 && seconds <= 60)) die("SECONDS must be a number in (0, 60]");
    if (!(f = fopen(argv[1], "rb"))) die("cannot open the token file");
    len = fread(token, 1, sizeof token - 1, f);
    fclose(f);
    while (len && (token[len - 1] == '\n' || token[len - 1] == ' ')) len--;
    token[len] = '\0';
    if (!(dot1 = memchr(token, '.', len)) || !(dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))))
        die("not a compact JWS");
    payload.text = dot1 + 1;
    payload.len = (size_t)(dot2 - payload.text);
    signature.text = dot2 + 1;
    signature.len = len - (size_t)(signature.text - token);
    /* The decoded length without the bytes padding adds. */
    if ((payload.out_len = decode(&payload)) < 0) die("the payload is not base64url");
    payload.out_len = (int)(payload.len * 3 / 4);
    if (!parse(payload.out, (size_t)payload.out_len)) die("the payload is not JSON");
    printf("base64url %.1f\n", time_op(op_decode, seconds));
    printf("json %.1f\n", time_op(op_parse, seconds));
    return 0;
}
