/***
 * HTTP peers on libcurl: OpenID provider metadata, JWKS fetches, RFC 7009
 * revocation, RFC 7662 introspection and Arvados' token calls.  (JWKS
 * sources live in jwks.c, which reaches this file only through fetch_keys.)
 *
 * Hygiene every call follows (docs/http.md): TLS verification always on;
 * plain http only to loopback hosts unless `insecure=true`; redirects are
 * followed here (never by libcurl), at most 3, and never to another origin
 * when a token or secret is sent; bodies are capped at 1 MiB (a JWK Set
 * at 32 MiB); messages show
 * only the original request as scheme://host:port/path (never a redirect
 * target, which the peer chooses, never a query string, a body or a
 * secret), and provider texts with every form of a secret redacted.
 * @module tokenpolicy.core
 */
#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>
#include "tp.h"

#define TP_HTTP_CLASS "tokenpolicy.HttpCall"
#define HTTP_MAX_BODY (1024 * 1024)
/* A JWK Set may hold up to 20,000 keys (keys.c's default max_keys): 32 MiB
 * takes that many RSA-4096 public keys. */
#define HTTP_MAX_JWKS (32 * 1024 * 1024)
#define HTTP_MAX_REDIRECTS 3
#define HTTP_CONNECT_TIMEOUT_MS 5000L
#define HTTP_TIMEOUT_MS 15000L
#define HTTP_METADATA_TTL 300
#define HTTP_DETAIL_MAX 200
#define HTTP_CACHE_KEY "tokenpolicy.oidc_metadata_cache"
#define HTTP_MAX_SECRETS 8
#define HTTP_MAX_TIMEOUT 86400
#define TP_METADATA_CLASS "tokenpolicy.OidcMetadata"
#define TP_INTROSPECTION_CLASS "tokenpolicy.Introspection"
#define TP_ARVADOS_TOKEN_CLASS "tokenpolicy.ArvadosToken"

/* ---- libcurl's global state --------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ready;

static void curl_start(void)
{
    curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

/* Runs when the module is unloaded, so leak checkers see a clean exit. */
__attribute__((destructor)) static void curl_stop(void)
{
    if (curl_ready) curl_global_cleanup();
    curl_ready = 0;
}

/* ---- one call: a userdata owning every C resource ----------------------- */

/* Everything libcurl allocates for a call hangs off this userdata, created
 * before the first allocation and marked to-be-closed (Lua 5.4): a Lua
 * error at any point (out of memory while pushing results, an error out of
 * a function the call runs) releases the handle, its connection and the
 * body at once; on Lua 5.3 its __gc does, at the next collection. */
typedef struct http_call {
    CURL *easy;         /* the configured handle, never performed itself */
    CURL *xfer;         /* a fresh copy of easy for the transfer under way */
    CURLU *url;
    struct curl_slist *headers;
    char *scratch;      /* a curl_easy_escape result until Lua holds a copy */
    char *body;         /* the response body, at most max_body bytes */
    size_t len, cap, max_body;
    int too_large;
} http_call;

/* One form of a secret (the token, the client secret, their base64 and
 * Basic forms), as redacted from provider texts. */
typedef struct http_secret {
    const char *text;   /* anchored on the Lua stack for the whole call */
    size_t len;
    int base64;         /* an echo's '=' padding goes with it */
} http_secret;

/* What to send, and how to describe it in messages. */
typedef struct http_req {
    const char *what;       /* the Lua function, first word of messages */
    const char *method;     /* GET, POST or DELETE: what was asked */
    const char *sent;       /* the method of the last request (GET after a 303) */
    const char *url;
    const char *form;       /* POST body (already encoded), or NULL */
    size_t form_len;
    const char *user, *password;    /* Basic auth, or NULL */
    http_secret secret[HTTP_MAX_SECRETS];   /* redacted from provider texts */
    int nsecrets;
    int credentials;        /* refuse redirects to another origin */
    int follow;             /* follow redirects (else a 3xx is the answer) */
    int insecure;           /* allow plain http to any host */
    int hops;               /* redirects followed so far */
    long timeout_ms;
    size_t max_body;        /* the answer's size cap; 0: HTTP_MAX_BODY */
    const char *ca_file;
    char shown[400];        /* scheme://host:port/path of the original request */
    char where[480];        /* the request as messages show it (see set_where) */
} http_req;

/* Calls whose C resources are not yet released, over every Lua state: a
 * testing aid (see _http_calls_open), so only ever approximate under
 * threads, but never torn. */
static int calls_open;

static void http_call_close(http_call *c)
{
    if (c->xfer) curl_easy_cleanup(c->xfer);
    if (c->easy) {
        __atomic_sub_fetch(&calls_open, 1, __ATOMIC_RELAXED);
        curl_easy_cleanup(c->easy);
    }
    if (c->url) curl_url_cleanup(c->url);
    if (c->headers) curl_slist_free_all(c->headers);
    if (c->scratch) curl_free(c->scratch);
    free(c->body);
    memset(c, 0, sizeof *c);
}

/* __gc and __close: idempotent, so the normal path may close early too. */
static int tp_http__close(lua_State *L)
{
    http_call_close((http_call *)luaL_checkudata(L, 1, TP_HTTP_CLASS));
    return 0;
}

/***
 * How many HTTP calls still hold their libcurl resources.  A testing aid:
 * after any call returns or raises it is 0 on Lua 5.4 (the call is
 * to-be-closed); on Lua 5.3 an error leaves the call to the next
 * collection.
 * @function _http_calls_open
 * @treturn integer
 */
static int tp_http_calls_open(lua_State *L)
{
    lua_pushinteger(L, __atomic_load_n(&calls_open, __ATOMIC_RELAXED));
    return 1;
}

static void add_header(lua_State *L, http_call *c, const char *line)
{
    struct curl_slist *more = curl_slist_append(c->headers, line);
    if (!more) luaL_error(L, "out of memory");
    c->headers = more;
}

/* Pushes a new call, marked to-be-closed: it must stay in its stack slot
 * (nothing below it is removed) until the C function returns. */
static http_call *http_call_new(lua_State *L)
{
    http_call *c = (http_call *)tp_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, TP_HTTP_CLASS);
    tp_toclose(L, -1);
    pthread_once(&curl_once, curl_start);
    if (curl_ready && (c->easy = curl_easy_init())) __atomic_add_fetch(&calls_open, 1, __ATOMIC_RELAXED);
    if (!c->easy || !(c->url = curl_url())) luaL_error(L, "libcurl could not be initialised");
    add_header(L, c, "Accept: application/json");
    add_header(L, c, "Expect:");  /* no 100-continue round trip */
    return c;
}

/* Pushes the URL-encoded form of s (curl_easy_escape: all but unreserved
 * characters as %XX). */
static const char *push_escaped(lua_State *L, http_call *c, const char *s)
{
    c->scratch = curl_easy_escape(c->easy, s, (int)strlen(s));
    if (!c->scratch) luaL_error(L, "out of memory");
    lua_pushstring(L, c->scratch);  /* on a raise, __gc frees scratch */
    curl_free(c->scratch);
    c->scratch = NULL;
    return lua_tostring(L, -1);
}

static size_t on_data(char *data, size_t size, size_t n, void *ud)
{
    http_call *c = (http_call *)ud;
    size_t bytes = size * n;
    if (bytes > c->max_body - c->len) {
        c->too_large = 1;
        return 0;  /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (c->len + bytes > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16384;
        char *grown;
        while (cap < c->len + bytes) cap *= 2;
        if (cap > c->max_body) cap = c->max_body;
        if (!(grown = (char *)realloc(c->body, cap))) return 0;
        c->body = grown;
        c->cap = cap;
    }
    memcpy(c->body + c->len, data, bytes);
    c->len += bytes;
    return bytes;
}

/* ---- URLs ---------------------------------------------------------------- */

static int is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    char inner[64];
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0) return 1;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (n > 2 && n < sizeof inner + 2 && host[0] == '[' && host[n - 1] == ']') {
        memcpy(inner, host + 1, n - 2);
        inner[n - 2] = '\0';
        return inet_pton(AF_INET6, inner, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    }
    return 0;
}

/* Copies one part of c->url into out (empty when absent). */
static int url_part(http_call *c, CURLUPart part, unsigned flags, char *out, size_t size)
{
    char *s = NULL;
    CURLUcode rc = curl_url_get(c->url, part, &s, flags);
    out[0] = '\0';
    if (rc != CURLUE_OK) return rc == CURLUE_NO_USER || rc == CURLUE_NO_PASSWORD || rc == CURLUE_NO_QUERY;
    if (strlen(s) >= size) {
        curl_free(s);
        return 0;
    }
    strcpy(out, s);
    curl_free(s);
    return 1;
}

/* Loads url into c->url and checks it against the hygiene rules; fills
 * origin ("scheme://host:port") and, for the original request only (first
 * is set), req->shown: a redirect target is the peer's choice and may hold
 * what it was sent, so it never reaches a message.  NULL or why not. */
static const char *url_load(http_call *c, http_req *req, const char *url, char *origin, size_t size, int first)
{
    char scheme[16], host[256], port[8], path[256], user[8];
    if (curl_url_set(c->url, CURLUPART_URL, url, 0) != CURLUE_OK) return "not a valid absolute URL";
    if (!first) {
        /* libcurl writes the Basic credentials it was given into the
         * redirect URL it resolves; they are ours, set as options, never
         * taken from a URL: drop them (and any a peer put there). */
        curl_url_set(c->url, CURLUPART_USER, NULL, 0);
        curl_url_set(c->url, CURLUPART_PASSWORD, NULL, 0);
    }
    if (!url_part(c, CURLUPART_SCHEME, 0, scheme, sizeof scheme) ||
        !url_part(c, CURLUPART_HOST, 0, host, sizeof host) ||
        !url_part(c, CURLUPART_PORT, CURLU_DEFAULT_PORT, port, sizeof port) ||
        !url_part(c, CURLUPART_USER, 0, user, sizeof user))
        return "not a valid URL (or a host name over 255 bytes)";
    if (user[0]) return "credentials in a URL are refused";
    if (strcmp(scheme, "https") != 0) {
        if (strcmp(scheme, "http") != 0) return "only http and https URLs are allowed";
        if (!req->insecure && !is_loopback(host))
            return "plain http is allowed only to loopback hosts (or with insecure=true)";
    }
    snprintf(origin, size, "%s://%s:%s", scheme, host, port);
    if (!first) return NULL;
    if (!url_part(c, CURLUPART_PATH, 0, path, sizeof path)) strcpy(path, "/...");
    snprintf(req->shown, sizeof req->shown, "%s%s", origin, path);
    for (char *p = req->shown; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) *p = '?';
    return NULL;
}

/* req->where: "POST https://op:443/revoke", and after redirects
 * "GET (after 1 redirect from POST https://op:443/revoke)": the method
 * actually used last, and only the original URL. */
static void set_where(http_req *req)
{
    if (req->hops == 0)
        snprintf(req->where, sizeof req->where, "%s %s", req->method, req->shown);
    else
        snprintf(req->where, sizeof req->where, "%s (after %d redirect%s from %s %s)", req->sent, req->hops,
                 req->hops == 1 ? "" : "s", req->method, req->shown);
}

/* ---- the request helper -------------------------------------------------- */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int fail_curl(lua_State *L, http_call *c, const http_req *req, CURLcode rc)
{
    const char *code = "http";
    if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        return tp_fail(L, "too_large", "%s: %s: the response is over the %d MiB limit", req->what, req->where,
                       (int)(c->max_body >> 20));
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY)
        code = "unreachable";
    else if (rc == CURLE_OPERATION_TIMEDOUT)
        code = "timeout";
    /* curl_easy_strerror, not the error buffer: it never names the URL. */
    return tp_fail(L, code, "%s: %s: %s", req->what, req->where, curl_easy_strerror(rc));
}

/* Sends req, following redirects by the rules above.  Returns 0 with the
 * final status in *status and the body in c, or pushes the fail triple and
 * returns 3. */
static int http_run(lua_State *L, http_call *c, http_req *req, long *status)
{
    char first[300], origin[300];
    const char *why;
    long deadline = now_ms() + req->timeout_ms;
    int post = req->form != NULL;
    CURL *e = c->easy;

    req->hops = 0;
    req->sent = req->method;
    if ((why = url_load(c, req, req->url, first, sizeof first, 1)))
        return tp_fail(L, "malformed", "%s: %s", req->what, why);
    set_where(req);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "tokenpolicy/" TP_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    c->max_body = req->max_body ? req->max_body : HTTP_MAX_BODY;
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
    if (req->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
    if (req->user) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, req->user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, req->password);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);

    for (;;) {
        long left = deadline - now_ms();
        char *full = NULL, *location = NULL;
        CURLcode rc;
        if (left <= 0) return tp_fail(L, "timeout", "%s: %s: out of time", req->what, req->where);
        if (curl_url_get(c->url, CURLUPART_URL, &full, 0) != CURLUE_OK)
            return tp_fail(L, "malformed", "%s: %s: not a valid URL", req->what, req->where);
        rc = curl_easy_setopt(e, CURLOPT_URL, full);  /* libcurl copies it */
        curl_free(full);
        if (rc != CURLE_OK) return luaL_error(L, "out of memory");
        if (post) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->form);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->form_len);
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        } else {
            curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(req->sent, "DELETE") == 0 ? "DELETE" : NULL);
        }
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left < HTTP_CONNECT_TIMEOUT_MS ? left
                                                                                    : HTTP_CONNECT_TIMEOUT_MS);
        c->len = 0;
        c->too_large = 0;
        /* Every transfer (a redirect, metadata's second URL) runs on a
         * fresh copy of the configured handle: libcurl 7.88 keeps the last
         * header of a transfer for a folded line of the next one on the
         * same handle, after freeing it, so an answer starting with a
         * folded line read freed memory (found by the http fuzz target). */
        if (c->xfer) curl_easy_cleanup(c->xfer);
        if (!(c->xfer = curl_easy_duphandle(e))) return luaL_error(L, "out of memory");
        rc = curl_easy_perform(c->xfer);
        if (rc != CURLE_OK) return fail_curl(L, c, req, rc);
        curl_easy_getinfo(c->xfer, CURLINFO_RESPONSE_CODE, status);
        if (!req->follow || !(*status == 301 || *status == 302 || *status == 303 || *status == 307 ||
                              *status == 308))
            return 0;
        curl_easy_getinfo(c->xfer, CURLINFO_REDIRECT_URL, &location);
        if (!location) return 0;  /* a 3xx without Location is the answer */
        if (req->hops >= HTTP_MAX_REDIRECTS)
            return tp_fail(L, "http", "%s: %s: more than %d redirects", req->what, req->where, HTTP_MAX_REDIRECTS);
        /* Neither message names the target: the peer chose it. */
        if ((why = url_load(c, req, location, origin, sizeof origin, 0)))
            return tp_fail(L, "http", "%s: %s: refused a redirect: %s", req->what, req->where, why);
        if (req->credentials && strcmp(origin, first) != 0)
            return tp_fail(L, "http", "%s: %s: refused a redirect to another origin: credentials would follow",
                           req->what, req->where);
        /* As browsers do: 303 always, and 301/302 after a POST, turn into GET. */
        if (*status == 303 || ((*status == 301 || *status == 302) && post)) {
            post = 0;
            req->sent = "GET";
        }
        req->hops++;
        set_where(req);
    }
}

/* ---- answers ------------------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* How many bytes of s (len) at its start spell secret, or 0.  A peer may
 * echo what it was sent in any encoding, so each byte of the secret may
 * appear as itself, percent-encoded (either case of hex), as '+' for a
 * space (forms), or as '-' / '_' for base64's '+' / '/' (base64url).
 * A '%' of the secret is ambiguous: "%25" is it encoded, or itself
 * followed by "25"; encoded says which reading is tried first, and the
 * caller tries both (a percent-encoded echo has every '%' encoded).
 * Matching too much only redacts more. */
static size_t secret_at(const char *s, size_t len, const http_secret *secret, int encoded)
{
    size_t i = 0;
    for (size_t k = 0; k < secret->len; k++) {
        char want = secret->text[k];
        int pct;
        if (i >= len) return 0;
        pct = s[i] == '%' && len - i >= 3 && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0 &&
              (char)(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])) == want;
        if (pct && (encoded || s[i] != want)) {
            i += 3;
        } else if (s[i] == want || (want == ' ' && s[i] == '+') || (want == '+' && s[i] == '-') ||
                   (want == '/' && s[i] == '_')) {
            i++;
        } else {
            return 0;
        }
    }
    return i;
}

/* Copies at most HTTP_DETAIL_MAX printable bytes of s into out (size >=
 * HTTP_DETAIL_MAX + 4), with every occurrence of any form of a secret of
 * req replaced by "[redacted]": providers sometimes echo what they were
 * sent.  A secret is matched against the whole of s, so one that straddles
 * the cut is redacted too. */
static void clean_text(char *out, const char *s, size_t len, const http_req *req)
{
    size_t used = 0, i = 0;
    while (i < len && used < HTTP_DETAIL_MAX) {
        size_t hit = 0;
        int k;
        for (k = 0; k < req->nsecrets && !hit; k++)
            if (!(hit = secret_at(s + i, len - i, &req->secret[k], 1)))
                hit = secret_at(s + i, len - i, &req->secret[k], 0);
        if (hit) {
            size_t room = HTTP_DETAIL_MAX - used;
            if (req->secret[k - 1].base64)
                while (i + hit < len && s[i + hit] == '=') hit++;
            memcpy(out + used, "[redacted]", room < 10 ? room : 10);
            used += room < 10 ? room : 10;
            i += hit;
            continue;
        }
        out[used++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        i++;
    }
    memcpy(out + used, i < len ? "..." : "", i < len ? 4 : 1);
}

/* Copies the string field name of the table at -1 (or, for Arvados'
 * {"errors":[...]}, its first element) into out, cleaned. */
static void detail_field(lua_State *L, const char *name, char *out, const http_req *req)
{
    size_t len;
    out[0] = '\0';
    lua_getfield(L, -1, name);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, -1, &len);
        clean_text(out, s, len, req);
    }
    lua_pop(L, 1);
}

static lua_Integer retry_after(http_call *c)
{
    struct curl_header *h;
    const char *v;
    if (!c->xfer || curl_easy_header(c->xfer, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK) return -1;
    v = h->value;
    if (*v >= '0' && *v <= '9') {
        lua_Integer n = 0;
        for (; *v >= '0' && *v <= '9'; v++)
            n = n > 100000000 ? n : n * 10 + (*v - '0');
        return *v ? -1 : n;
    } else {
        time_t at = curl_getdate(v, NULL), now = time(NULL);
        if (at < 0) return -1;
        return at > now ? (lua_Integer)(at - now) : 0;
    }
}

/* The fail triple for an unsuccessful status: 401 (403 for Arvados) and
 * invalid_client are unauthorized, 503 and 429 unavailable (plus
 * retry_after as a fourth value, nil when absent or unreadable): both ask
 * the client to come back later (RFC 9110 15.6.4, RFC 6585 4), and both
 * may say when; the rest http.  The provider's error and
 * error_description (Arvados: errors[1]) follow. */
static int fail_status(lua_State *L, http_call *c, const http_req *req, long status, int arvados)
{
    char err[HTTP_DETAIL_MAX + 4] = "", desc[HTTP_DETAIL_MAX + 4] = "";
    const char *code = "http", *why;
    int top = lua_gettop(L), is_object = 0;
    if (c->len && tp_json_parse_lua(L, c->body, c->len, &is_object, &why) && is_object) {
        detail_field(L, "error", err, req);
        detail_field(L, arvados ? "errors" : "error_description", desc, req);
    }
    lua_settop(L, top);
    if (status == 401 || (arvados && status == 403) || strcmp(err, "invalid_client") == 0)
        code = "unauthorized";
    else if (status == 503 || status == 429)
        code = "unavailable";
    tp_fail(L, code, "%s: %s answered %d%s%s%s%s", req->what, req->where, (int)status,
            err[0] || desc[0] ? ": " : "", err, err[0] && desc[0] ? ": " : "", desc);
    if (status != 503 && status != 429) return 3;
    if (retry_after(c) >= 0)
        lua_pushinteger(L, retry_after(c));
    else
        lua_pushnil(L);
    return 4;
}

/* Pushes the body parsed as a JSON object, or the malformed fail triple. */
static int push_object(lua_State *L, http_call *c, http_req *req)
{
    const char *why;
    int is_object = 0;
    if (!tp_json_parse_lua(L, c->body ? c->body : "", c->len, &is_object, &why))
        return tp_fail(L, "malformed", "%s: %s: the answer is not JSON: %s", req->what, req->where, why);
    if (!is_object) {
        lua_pop(L, 1);
        return tp_fail(L, "malformed", "%s: %s: the answer is not a JSON object", req->what, req->where);
    }
    return 1;
}

/* ---- options ------------------------------------------------------------- */

/* A string option (tp_opt_string) checked for what must not go into a
 * request: NUL and control characters (header injection).  A required one
 * must be present and not empty. */
static const char *req_string(lua_State *L, int arg, const char *name, int required)
{
    size_t len;
    const char *s = tp_opt_string(L, arg, name, NULL, &len);
    if (!s) {
        if (required) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a string", name));
        return NULL;
    }
    if (tp_has_control(s, len))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s contains a control character", name));
    if (required && len == 0) luaL_argerror(L, arg, lua_pushfstring(L, "%s must not be empty", name));
    return s;
}

/* timeout, ca_file and insecure, shared by every function.  timeout is in
 * seconds with fractions allowed, the one option no shared reader fits. */
static void read_transport(lua_State *L, int arg, http_req *req)
{
    req->timeout_ms = HTTP_TIMEOUT_MS;
    if (lua_type(L, arg) == LUA_TTABLE) {
        int t = lua_getfield(L, arg, "timeout");
        if (t != LUA_TNIL) {
            lua_Number v = lua_tonumber(L, -1);
            if (t != LUA_TNUMBER || !(v > 0 && v <= HTTP_MAX_TIMEOUT))
                luaL_argerror(L, arg, "timeout must be a number of seconds in (0, 86400]");
            req->timeout_ms = (long)(v * 1000);
            if (req->timeout_ms < 1) req->timeout_ms = 1;
        }
        lua_pop(L, 1);
    }
    req->ca_file = req_string(L, arg, "ca_file", 0);
    req->insecure = tp_opt_boolean(L, arg, "insecure", 0);
}

/* ---- secrets --------------------------------------------------------------- */

/* Makes the string at -1 (left there: the stack keeps it alive for the
 * call) one more form of a secret to redact. */
static void add_secret(lua_State *L, http_req *req, int base64)
{
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (len > 0 && req->nsecrets < HTTP_MAX_SECRETS) {
        req->secret[req->nsecrets].text = s;
        req->secret[req->nsecrets].len = len;
        req->secret[req->nsecrets].base64 = base64;
        req->nsecrets++;
    }
}

/* Pushes the standard base64 (OpenSSL's encoder) of the string at -1,
 * without '=' padding, so that padded and unpadded echoes both match (and
 * secret_at lets base64url match too). */
static void push_base64(lua_State *L)
{
    size_t n;
    const unsigned char *in = (const unsigned char *)lua_tolstring(L, -1, &n);
    luaL_Buffer b;
    char *out;
    int len = 0;
    if (n > HTTP_MAX_BODY) n = 0;  /* no answer we read could hold its encoding */
    out = luaL_buffinitsize(L, &b, 4 * ((n + 2) / 3) + 1);
    if (n) len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=') len--;
    luaL_pushresultsize(&b, (size_t)len);
}

/* A secret as it was given and as base64; percent-encoded, form-encoded and
 * base64url forms are matched by secret_at. */
static void add_secret_forms(lua_State *L, http_req *req, const char *secret)
{
    luaL_checkstack(L, 4, "secrets");
    lua_pushstring(L, secret);
    add_secret(L, req, 0);
    push_base64(L);
    add_secret(L, req, 1);
}

/* The value of an Authorization: Basic header for user:password, as sent
 * (both URL-encoded) and as a client might also have been configured. */
static void add_basic_forms(lua_State *L, http_req *req, const char *id, const char *secret)
{
    luaL_checkstack(L, 4, "secrets");
    lua_pushfstring(L, "%s:%s", req->user, req->password);
    push_base64(L);
    add_secret(L, req, 1);
    lua_pushfstring(L, "%s:%s", id, secret);
    push_base64(L);
    add_secret(L, req, 1);
}

/* ---- RFC 7009 and RFC 7662 ----------------------------------------------- */

static int oauth_send(lua_State *L, http_call *c, http_req *req, int introspect)
{
    long status;
    if (http_run(L, c, req, &status)) return 3;
    if (status < 200 || status > 299) return fail_status(L, c, req, status, 0);
    if (!introspect) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (push_object(L, c, req) != 1) return 3;
    if (lua_getfield(L, -1, "active") != LUA_TBOOLEAN) {
        lua_pop(L, 2);
        return tp_fail(L, "malformed", "%s: %s: the answer has no boolean active member", req->what, req->where);
    }
    lua_pop(L, 1);
    luaL_setmetatable(L, TP_INTROSPECTION_CLASS);
    return 1;
}

static int oauth_entry(lua_State *L, const char *what, int introspect)
{
    static const char *const options[] = { "endpoint", "token", "token_type_hint", "client_id", "client_secret",
                                           "auth", "timeout", "ca_file", "insecure", NULL };
    static const char *const auths[] = { "basic", "post", NULL };
    const char *token, *hint, *id, *secret;
    int post_auth, pieces, n;
    http_req req;
    http_call *c;
    memset(&req, 0, sizeof req);
    luaL_checktype(L, 1, LUA_TTABLE);
    tp_opts(L, 1, options);
    lua_settop(L, 1);
    req.what = what;
    req.method = "POST";
    req.follow = 1;
    req.credentials = 1;
    req.url = req_string(L, 1, "endpoint", 1);
    token = req_string(L, 1, "token", 1);
    hint = req_string(L, 1, "token_type_hint", 0);
    id = req_string(L, 1, "client_id", 0);
    secret = req_string(L, 1, "client_secret", 0);
    post_auth = tp_opt_choice(L, 1, "auth", auths, 0) == 1;
    if (secret && !id) return luaL_argerror(L, 1, "client_secret needs client_id");
    read_transport(L, 1, &req);
    add_secret_forms(L, &req, token);
    if (secret) add_secret_forms(L, &req, secret);

    c = http_call_new(L);
    luaL_checkstack(L, 12, "form");
    lua_pushliteral(L, "token=");
    push_escaped(L, c, token);
    pieces = 2;
    if (hint) {
        lua_pushliteral(L, "&token_type_hint=");
        push_escaped(L, c, hint);
        pieces += 2;
    }
    /* RFC 6749 2.3.1: Basic by default when there is a secret; a public
     * client (no secret) names itself in the body. */
    if (id && (!secret || post_auth)) {
        lua_pushliteral(L, "&client_id=");
        push_escaped(L, c, id);
        pieces += 2;
        if (secret) {
            lua_pushliteral(L, "&client_secret=");
            push_escaped(L, c, secret);
            pieces += 2;
        }
    }
    lua_concat(L, pieces);
    req.form = lua_tolstring(L, -1, &req.form_len);
    if (id && secret && !post_auth) {
        /* RFC 6749 2.3.1 encodes both before Basic's base64. */
        req.user = push_escaped(L, c, id);
        req.password = push_escaped(L, c, secret);
        add_basic_forms(L, &req, id, secret);
    }
    n = oauth_send(L, c, &req, introspect);
    http_call_close(c);  /* early: the connection need not wait for the GC */
    return n;
}

/***
 * Revokes a token at its issuer (RFC 7009).  The client authenticates with
 * HTTP Basic (`auth="basic"`, the default when there is a secret) or in the
 * form body (`auth="post"`); with `client_id` alone it is a public client.
 * @function revoke
 * @tparam table opts `endpoint`, `token` (required), `token_type_hint`,
 *   `client_id`, `client_secret`, `auth`, `timeout` (seconds, default 15),
 *   `ca_file`, `insecure` (allow plain http to a non-loopback host)
 * @treturn boolean true, or the fail triple (`malformed`, `unreachable`,
 *   `timeout`, `too_large`, `unauthorized`, `unavailable`, `http`); for
 *   `unavailable` a fourth value, the Retry-After seconds (or nil)
 */
static int tp_http_revoke(lua_State *L)
{
    return oauth_entry(L, "revoke", 0);
}

/***
 * Asks the issuer about a token (RFC 7662).  Same options as `revoke`.
 * The answer prints as "introspection: active, sub alice, ...".
 * @function introspect
 * @tparam table opts
 * @treturn table the answer (`active`, `exp`, `scope`, ...), or the fail
 *   triple as for `revoke`
 */
static int tp_http_introspect(lua_State *L)
{
    return oauth_entry(L, "introspect", 1);
}

/* ---- readable answers ---------------------------------------------------- */

/* Pushes url without its query or fragment, printable, cut at 96 bytes. */
static void push_shown_url(lua_State *L, const char *url, size_t len)
{
    char shown[100];
    size_t full = strcspn(url, "?#"), n;
    if (full > len) full = len;
    n = full > 96 ? 96 : full;
    /* cppcheck-suppress knownConditionTrueFalse ; cppcheck 2.10 applies one caller's zero length to every call */
    for (size_t i = 0; i < n; i++)
        shown[i] = ((unsigned char)url[i] < 0x20 || (unsigned char)url[i] >= 0x7f) ? '?' : url[i];
    /* cppcheck-suppress knownConditionTrueFalse ; the same false positive: n < full when the URL is long */
    memcpy(shown + n, n < full ? "..." : "", n < full ? 4 : 1);
    lua_pushstring(L, shown);
}

/* Pushes "<sep><label> <value>" for the member name of the table at 1 when it
 * is a string (shown as a URL when url is set, else cut to 32 printable
 * characters) or an integer time (shown in UTC); returns how many strings
 * it pushed (0 or 1). */
static int push_member(lua_State *L, const char *sep, const char *name, const char *label, int url)
{
    char buf[40];
    size_t len;
    int t = lua_getfield(L, 1, name);
    if (t == LUA_TSTRING) {
        const char *v = lua_tolstring(L, -1, &len);
        if (url) {
            push_shown_url(L, v, len);
            lua_pushfstring(L, "%s%s %s", sep, label, lua_tostring(L, -1));
            lua_remove(L, -2);
        } else {
            lua_pushfstring(L, "%s%s %s", sep, label, tp_printable(buf, v, len));
        }
    } else if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
        lua_pushfstring(L, "%s%s %s", sep, label, tp_format_utc(buf, lua_tointeger(L, -1)));
    } else {
        lua_pop(L, 1);
        return 0;
    }
    lua_remove(L, -2);
    return 1;
}

/* "OIDC metadata for https://op.example: jwks_uri https://op.example/jwks,
 * token endpoint ..."; the metadata holds no secret, and URLs are shown
 * without their query. */
static int tp_metadata__tostring(lua_State *L)
{
    int pieces = 2;
    size_t len;
    const char *issuer;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_checkstack(L, 12, "tostring");
    lua_pushliteral(L, "OIDC metadata for ");
    if (lua_getfield(L, 1, "issuer") == LUA_TSTRING) {
        issuer = lua_tolstring(L, -1, &len);
        push_shown_url(L, issuer, len);
        lua_remove(L, -2);
    } else {
        lua_pop(L, 1);
        lua_pushliteral(L, "(no issuer)");
    }
    {
        static const char *const members[][2] = {
            { "jwks_uri", "jwks_uri" }, { "token_endpoint", "token endpoint" },
            { "revocation_endpoint", "revocation endpoint" },
            { "introspection_endpoint", "introspection endpoint" },
        };
        for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
            pieces += push_member(L, pieces == 2 ? ": " : ", ", members[i][0], members[i][1], 1);
    }
    lua_concat(L, pieces);
    return 1;
}

/* "introspection: active, sub alice, client_id cli, scope read write,
 * expires 2030-03-17 17:46:40 UTC", or "introspection: inactive".  Only
 * these members are shown: none of them is the token or a secret. */
static int tp_introspection__tostring(lua_State *L)
{
    int pieces = 2;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_checkstack(L, 12, "tostring");
    lua_pushliteral(L, "introspection: ");
    lua_getfield(L, 1, "active");
    lua_pushstring(L, lua_toboolean(L, -1) ? "active" : "inactive");
    lua_remove(L, -2);
    pieces += push_member(L, ", ", "sub", "sub", 0);
    pieces += push_member(L, ", ", "username", "username", 0);
    pieces += push_member(L, ", ", "client_id", "client_id", 0);
    pieces += push_member(L, ", ", "scope", "scope", 0);
    pieces += push_member(L, ", ", "token_type", "token_type", 0);
    pieces += push_member(L, ", ", "iss", "iss", 1);
    pieces += push_member(L, ", ", "exp", "expires", 0);
    lua_concat(L, pieces);
    return 1;
}

/* ---- OpenID provider metadata and JWKS ----------------------------------- */

static int metadata_fetch(lua_State *L, http_call *c, http_req *req, const char *issuer, const char *fallback)
{
    long status;
    size_t len;
    const char *got;
    int n;
    if (http_run(L, c, req, &status)) return 3;
    if (status == 404 && fallback) {
        req->url = fallback;
        if (http_run(L, c, req, &status)) return 3;
    }
    if (status != 200) return fail_status(L, c, req, status, 0);
    if ((n = push_object(L, c, req)) != 1) return n;
    if (lua_getfield(L, -1, "issuer") == LUA_TSTRING) {
        got = lua_tolstring(L, -1, &len);
    } else {
        got = "(none)";
        len = 6;
    }
    if (strcmp(got, issuer) != 0 || strlen(got) != len) {
        char a[HTTP_DETAIL_MAX + 4], b[HTTP_DETAIL_MAX + 4];
        clean_text(a, got, len, req);
        clean_text(b, issuer, strlen(issuer), req);
        return tp_fail(L, "malformed", "oidc_metadata: %s: the metadata's issuer '%s' is not '%s'", req->shown,
                       a, b);
    }
    lua_pop(L, 1);
    return 1;
}

/* A shallow copy of the table at -1, replacing it. */
static void replace_with_copy(lua_State *L)
{
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_remove(L, -2);
}

/***
 * Fetches an OpenID provider's (or OAuth authorization server's) metadata:
 * `<issuer>/.well-known/openid-configuration`, and on 404 RFC 8414's
 * `/.well-known/oauth-authorization-server<path>`; or exactly the URL given
 * when it contains `/.well-known/`.  The metadata's `issuer` must equal the
 * issuer asked for.  Answers are cached per Lua state for `ttl` seconds.
 * The result prints as "OIDC metadata for <issuer>: jwks_uri ...".
 * @function oidc_metadata
 * @tparam string issuer_or_url
 * @tparam[opt] table opts `ttl` (default 300; 0 disables the cache),
 *   `now`, `timeout`, `ca_file`, `insecure`
 * @treturn table the metadata (a fresh shallow copy), or the fail triple
 */
static int tp_http_oidc_metadata(lua_State *L)
{
    static const char *const options[] = { "ttl", "now", "timeout", "ca_file", "insecure", NULL };
    size_t len;
    const char *arg = tp_check_string(L, 1, &len), *issuer, *well, *fallback = NULL, *scheme_end, *path;
    lua_Integer ttl, now;
    http_req req;
    http_call *c;
    int n;
    memset(&req, 0, sizeof req);
    req.what = "oidc_metadata";
    req.method = "GET";
    req.follow = 1;
    tp_opts(L, 2, options);
    lua_settop(L, 2);
    ttl = tp_opt_integer(L, 2, "ttl", HTTP_METADATA_TTL, 0);
    now = tp_opt_integer(L, 2, "now", (lua_Integer)time(NULL), LUA_MININTEGER);
    read_transport(L, 2, &req);
    if (strlen(arg) != len || !(scheme_end = strstr(arg, "://")) || strpbrk(arg, "?# "))
        return tp_fail(L, "malformed", "oidc_metadata: an issuer is an absolute URL without query or fragment");
    path = strchr(scheme_end + 3, '/');
    if ((well = strstr(arg, "/.well-known/openid-configuration")) && well[33] == '\0') {
        issuer = lua_pushlstring(L, arg, (size_t)(well - arg));
        req.url = arg;
    } else if (path && strncmp(path, "/.well-known/oauth-authorization-server", 39) == 0 &&
               (path[39] == '\0' || path[39] == '/')) {
        lua_pushlstring(L, arg, (size_t)(path - arg));
        lua_pushstring(L, path + 39);
        lua_concat(L, 2);
        issuer = lua_tostring(L, -1);
        req.url = arg;
    } else if (strstr(arg, "/.well-known/")) {
        return tp_fail(L, "malformed", "oidc_metadata: unknown well-known document");
    } else {
        size_t base = len > 0 && arg[len - 1] == '/' ? len - 1 : len;
        issuer = arg;
        lua_pushlstring(L, arg, base);
        lua_pushliteral(L, "/.well-known/openid-configuration");
        lua_concat(L, 2);
        req.url = lua_tostring(L, -1);
        if (path) {
            lua_pushlstring(L, arg, (size_t)(path - arg));
            lua_pushliteral(L, "/.well-known/oauth-authorization-server");
            lua_pushlstring(L, path, (size_t)(arg + base - path));
            lua_concat(L, 3);
        } else {
            lua_pushfstring(L, "%s/.well-known/oauth-authorization-server", arg);
        }
        fallback = lua_tostring(L, -1);
    }

    /* The cache: registry[HTTP_CACHE_KEY][url] = { expires, metadata }. */
    if (lua_getfield(L, LUA_REGISTRYINDEX, HTTP_CACHE_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, HTTP_CACHE_KEY);
    }
    if (ttl > 0) {
        if (lua_getfield(L, -1, req.url) == LUA_TTABLE) {
            lua_rawgeti(L, -1, 1);
            if (now < lua_tointeger(L, -1)) {
                lua_rawgeti(L, -2, 2);
                replace_with_copy(L);
                luaL_setmetatable(L, TP_METADATA_CLASS);
                return 1;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);  /* the cache table stays, below the call */
    }

    c = http_call_new(L);
    n = metadata_fetch(L, c, &req, issuer, fallback);
    http_call_close(c);
    if (n != 1) return n;
    if (ttl > 0) {
        int meta = lua_gettop(L);
        lua_createtable(L, 2, 0);
        lua_pushinteger(L, tp_add_sat(now, ttl));
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, meta);
        lua_rawseti(L, -2, 2);
        lua_setfield(L, meta - 2, req.url);  /* meta - 2: the cache table */
        replace_with_copy(L);
    }
    luaL_setmetatable(L, TP_METADATA_CLASS);
    return 1;
}

/***
 * Fetches a JWK Set and imports it with `keys`.  (A JwksSource fetches
 * through this function.)
 * @function fetch_keys
 * @tparam string jwks_uri
 * @tparam[opt] table opts `timeout`, `ca_file`, `insecure`
 * @treturn KeySet, or the fail triple (network codes, or those of `keys`);
 *   the answer may be up to 32 MiB (other answers: 1 MiB), enough for a set
 *   of 20,000 keys
 */
static int tp_http_fetch_keys(lua_State *L)
{
    static const char *const options[] = { "timeout", "ca_file", "insecure", NULL };
    http_req req;
    http_call *c;
    long status;
    int n;
    memset(&req, 0, sizeof req);
    req.what = "fetch_keys";
    req.method = "GET";
    req.max_body = HTTP_MAX_JWKS;
    req.follow = 1;
    req.url = tp_check_string(L, 1, NULL);
    tp_opts(L, 2, options);
    lua_settop(L, 2);
    read_transport(L, 2, &req);
    c = http_call_new(L);
    if ((n = http_run(L, c, &req, &status)) != 0 || status != 200) {
        if (n == 0) n = fail_status(L, c, &req, status, 0);
        http_call_close(c);
        return n;
    }
    /* The call owns the body until keys has imported it; should anything
     * raise meanwhile, the to-be-closed call is released at once. */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushlstring(L, c->body ? c->body : "", c->len);
    lua_call(L, 1, LUA_MULTRET);
    http_call_close(c);
    n = lua_gettop(L) - 3;
    /* keys' message ("malformed: key material is ...") says what is wrong,
     * not where it came from: name the request, as every other failure
     * of this call does. */
    if (n == 3 && lua_isnil(L, 4) && lua_type(L, 5) == LUA_TSTRING && lua_type(L, 6) == LUA_TSTRING) {
        const char *code = lua_tostring(L, 6), *msg = lua_tostring(L, 5);
        size_t len = strlen(code);
        if (strncmp(msg, code, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ') msg += len + 2;
        lua_pushfstring(L, "%s: %s: %s: %s", code, req.what, req.where, msg);
        lua_replace(L, 5);
    }
    return n;
}

/* ---- Arvados ------------------------------------------------------------- */

enum { ARV_CURRENT, ARV_DELETE, ARV_LOGOUT };

static int arvados_call(lua_State *L, int kind, const char *what)
{
    static const char *const options[] = { "host", "token", "scheme", "timeout", "ca_file", "insecure", NULL };
    static const char *const delete_options[] = { "host", "token", "uuid", "scheme", "timeout", "ca_file",
                                                  "insecure", NULL };
    static const char *const schemes[] = { "https", "http", NULL };
    const char *host, *token, *uuid = NULL, *scheme, *last;
    http_req req;
    http_call *c;
    long status;
    int n;
    memset(&req, 0, sizeof req);
    luaL_checktype(L, 1, LUA_TTABLE);
    tp_opts(L, 1, kind == ARV_DELETE ? delete_options : options);
    lua_settop(L, 1);
    req.what = what;
    req.credentials = 1;
    host = req_string(L, 1, "host", 1);
    token = req_string(L, 1, "token", 1);
    if (kind == ARV_DELETE) uuid = req_string(L, 1, "uuid", 1);
    scheme = schemes[tp_opt_choice(L, 1, "scheme", schemes, 0)];
    if (strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(host))
        return luaL_argerror(L, 1, "host must be a host name or address, with an optional :port");
    read_transport(L, 1, &req);
    if (uuid && strspn(uuid, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(uuid))
        return tp_fail(L, "malformed", "%s: not an Arvados uuid", what);
    add_secret_forms(L, &req, token);
    /* A v2 token's secret part may come back alone ("v2/<uuid>/<secret>"). */
    if (strncmp(token, "v2/", 3) == 0 && (last = strrchr(token, '/')) > token + 2 && last[1])
        add_secret_forms(L, &req, last + 1);
    c = http_call_new(L);
    if (kind == ARV_LOGOUT) {
        /* The token goes in the query (never shown); the answer, a 2xx or a
         * redirect to the login page, is not followed. */
        req.method = "GET";
        lua_pushfstring(L, "%s://%s/logout?api_token=", scheme, host);
        push_escaped(L, c, token);
        lua_concat(L, 2);
    } else {
        req.method = kind == ARV_DELETE ? "DELETE" : "GET";
        req.follow = 1;
        lua_pushfstring(L, "Authorization: Bearer %s", token);
        add_header(L, c, lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_pushfstring(L, "%s://%s/arvados/v1/api_client_authorizations/%s", scheme, host,
                        uuid ? uuid : "current");
    }
    req.url = lua_tostring(L, -1);
    if (http_run(L, c, &req, &status)) {
        n = 3;
    } else if (kind == ARV_LOGOUT && status >= 200 && status <= 399) {
        lua_pushboolean(L, 1);
        n = 1;
    } else if (status < 200 || status > 299) {
        n = fail_status(L, c, &req, status, 1);
    } else {
        n = push_object(L, c, &req);
        if (n == 1 && lua_istable(L, -1))
            luaL_setmetatable(L, TP_ARVADOS_TOKEN_CLASS);
    }
    http_call_close(c);  /* early: the connection need not wait for the GC */
    return n;
}

/* "tokenpolicy.ArvadosToken: uuid zzzzz-gj3su-..., owner zzzzz-tpzed-...,
 * expires 2026-11-23T16:00:00.000000000Z" ("expires never" for a null
 * expires_at): the record, never its api_token. */
static int tp_arvados_token__tostring(lua_State *L)
{
    int pieces = 1;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_checkstack(L, 8, "tostring");
    lua_pushliteral(L, TP_ARVADOS_TOKEN_CLASS ":");
    pieces += push_member(L, " ", "uuid", "uuid", 0);
    pieces += push_member(L, pieces > 1 ? ", " : " ", "owner_uuid", "owner", 0);
    if (!push_member(L, pieces > 1 ? ", " : " ", "expires_at", "expires", 0)) {
        lua_pushstring(L, pieces > 1 ? ", expires never" : " expires never");
    }
    lua_concat(L, pieces + 1);
    return 1;
}

/***
 * The Arvados token record of `token`
 * (`GET /arvados/v1/api_client_authorizations/current`, Bearer auth).
 * @function arvados_current
 * @tparam table opts `host` ("host" or "host:port"), `token`, `scheme`
 *   ("https", or "http" for loopback hosts or with `insecure`), `timeout`,
 *   `ca_file`, `insecure`
 * @treturn table the record, or the fail triple
 */
static int tp_http_arvados_current(lua_State *L)
{
    return arvados_call(L, ARV_CURRENT, "arvados_current");
}

/***
 * Deletes the Arvados token `uuid`, authenticating with `token`
 * (`DELETE /arvados/v1/api_client_authorizations/<uuid>`).
 * @function arvados_delete_token
 * @tparam table opts as `arvados_current`, plus `uuid`
 * @treturn table the deleted record, or the fail triple
 */
static int tp_http_arvados_delete_token(lua_State *L)
{
    return arvados_call(L, ARV_DELETE, "arvados_delete_token");
}

/***
 * Logs `token` out (`GET /logout?api_token=<token>`), which expires it on
 * the server.  A 2xx or 3xx answer is success; redirects are not followed.
 * @function arvados_logout
 * @tparam table opts as `arvados_current`
 * @treturn boolean true, or the fail triple
 */
static int tp_http_arvados_logout(lua_State *L)
{
    return arvados_call(L, ARV_LOGOUT, "arvados_logout");
}

void tp_open_http(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "revoke", tp_http_revoke },
        { "introspect", tp_http_introspect },
        { "oidc_metadata", tp_http_oidc_metadata },
        { "arvados_current", tp_http_arvados_current },
        { "arvados_delete_token", tp_http_arvados_delete_token },
        { "arvados_logout", tp_http_arvados_logout },
        { "_http_calls_open", tp_http_calls_open },
        { NULL, NULL }
    };
    static const luaL_Reg call_meta[] = {
        { "__gc", tp_http__close },
        { "__close", tp_http__close },
        { NULL, NULL }
    };
    static const luaL_Reg metadata_meta[] = {
        { "__tostring", tp_metadata__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg introspection_meta[] = {
        { "__tostring", tp_introspection__tostring },
        { NULL, NULL }
    };
    tp_register_class(L, TP_HTTP_CLASS, call_meta, NULL, 0);
    tp_register_class(L, TP_METADATA_CLASS, metadata_meta, NULL, 0);
    tp_register_class(L, TP_INTROSPECTION_CLASS, introspection_meta, NULL, 0);
    {
        static const luaL_Reg arvados_meta[] = { { "__tostring", tp_arvados_token__tostring }, { NULL, NULL } };
        tp_register_class(L, TP_ARVADOS_TOKEN_CLASS, arvados_meta, NULL, 0);
    }
    luaL_setfuncs(L, functions, 0);
    /* fetch_keys imports through the Lua-visible keys (keys.c registers it
     * first), so keys.c needs no C entry point for JSON text. */
    lua_getfield(L, -1, "keys");
    lua_pushcclosure(L, tp_http_fetch_keys, 1);
    lua_setfield(L, -2, "fetch_keys");
}
