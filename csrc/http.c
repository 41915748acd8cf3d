/***
 * HTTP peers on libcurl: OpenID discovery, JWKS, RFC 7009 revocation,
 * RFC 7662 introspection and Arvados' token calls.
 *
 * Hygiene every call follows (docs/http.md): TLS verification always on;
 * plain http only to loopback hosts unless `insecure=true`; redirects are
 * followed here (never by libcurl), at most 3, and never to another origin
 * when a token or secret is sent; bodies are capped at 1 MiB; messages show
 * only scheme://host:port/path, never a query string, a body or a secret.
 * @module tokenpolicy.core
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>
#include "tp.h"

#define TP_HTTP_CLASS "tokenpolicy.HttpCall"
#define HTTP_MAX_BODY (1024 * 1024)
#define HTTP_MAX_REDIRECTS 3
#define HTTP_CONNECT_TIMEOUT_MS 5000L
#define HTTP_TIMEOUT_MS 15000L
#define HTTP_DISCOVERY_TTL 300
#define HTTP_DETAIL_MAX 200
#define HTTP_CACHE_KEY "tokenpolicy.discovery_cache"

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
 * before the first allocation: a Lua error at any point (a bad option, out
 * of memory while pushing results) leaves it to __gc, so nothing leaks. */
typedef struct http_call {
    CURL *easy;
    CURLU *url;
    struct curl_slist *headers;
    char *scratch;      /* a curl_easy_escape result until Lua holds a copy */
    char *body;         /* the response body, at most HTTP_MAX_BODY bytes */
    size_t len, cap;
    int too_large;
} http_call;

/* What to send, and how to describe it in messages. */
typedef struct http_req {
    const char *what;       /* the Lua function, first word of messages */
    const char *method;     /* GET, POST or DELETE */
    const char *url;
    const char *form;       /* POST body (already encoded), or NULL */
    size_t form_len;
    const char *user, *password;    /* Basic auth, or NULL */
    const char *secrets[2]; /* texts scrubbed from provider messages */
    int credentials;        /* refuse redirects to another origin */
    int follow;             /* follow redirects (else a 3xx is the answer) */
    int insecure;           /* allow plain http to any host */
    long timeout_ms;
    const char *ca_file;
    char shown[400];        /* scheme://host:port/path of the last request */
} http_req;

static void http_call_close(http_call *c)
{
    if (c->easy) curl_easy_cleanup(c->easy);
    if (c->url) curl_url_cleanup(c->url);
    if (c->headers) curl_slist_free_all(c->headers);
    if (c->scratch) curl_free(c->scratch);
    free(c->body);
    memset(c, 0, sizeof *c);
}

static int tp_http__gc(lua_State *L)
{
    http_call_close((http_call *)luaL_checkudata(L, 1, TP_HTTP_CLASS));
    return 0;
}

static void add_header(lua_State *L, http_call *c, const char *line)
{
    struct curl_slist *more = curl_slist_append(c->headers, line);
    if (!more) luaL_error(L, "out of memory");
    c->headers = more;
}

static http_call *http_call_new(lua_State *L)
{
    http_call *c = (http_call *)tp_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, TP_HTTP_CLASS);
    pthread_once(&curl_once, curl_start);
    if (!curl_ready || !(c->easy = curl_easy_init()) || !(c->url = curl_url()))
        luaL_error(L, "libcurl could not be initialised");
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
    if (bytes > HTTP_MAX_BODY - c->len) {
        c->too_large = 1;
        return 0;  /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (c->len + bytes > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16384;
        char *grown;
        while (cap < c->len + bytes) cap *= 2;
        if (cap > HTTP_MAX_BODY) cap = HTTP_MAX_BODY;
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
 * origin ("scheme://host:port") and req->shown.  NULL or why not. */
static const char *url_load(http_call *c, http_req *req, const char *url, char *origin, size_t size)
{
    char scheme[16], host[256], port[8], path[256], user[8];
    if (curl_url_set(c->url, CURLUPART_URL, url, 0) != CURLUE_OK) return "not a valid absolute URL";
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
    if (!url_part(c, CURLUPART_PATH, 0, path, sizeof path)) strcpy(path, "/...");
    snprintf(origin, size, "%s://%s:%s", scheme, host, port);
    snprintf(req->shown, sizeof req->shown, "%s%s", origin, path);
    for (char *p = req->shown; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) *p = '?';
    return NULL;
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
        return tp_fail(L, "too_large", "%s: %s %s: the response is over the 1 MiB limit", req->what,
                       req->method, req->shown);
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY)
        code = "unreachable";
    else if (rc == CURLE_OPERATION_TIMEDOUT)
        code = "timeout";
    /* curl_easy_strerror, not the error buffer: it never names the URL. */
    return tp_fail(L, code, "%s: %s %s: %s", req->what, req->method, req->shown, curl_easy_strerror(rc));
}

/* Sends req, following redirects by the rules above.  Returns 0 with the
 * final status in *status and the body in c, or pushes the fail triple and
 * returns 3. */
static int http_run(lua_State *L, http_call *c, http_req *req, long *status)
{
    char first[300], origin[300];
    const char *why, *method = req->method;
    long deadline = now_ms() + req->timeout_ms;
    int hops = 0, post = req->form != NULL;
    CURL *e = c->easy;

    if ((why = url_load(c, req, req->url, first, sizeof first)))
        return tp_fail(L, "malformed", "%s: %s", req->what, why);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "tokenpolicy/" TP_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)HTTP_MAX_BODY);
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
        if (left <= 0)
            return tp_fail(L, "timeout", "%s: %s %s: out of time after %d redirects", req->what, method,
                           req->shown, hops);
        if (curl_url_get(c->url, CURLUPART_URL, &full, 0) != CURLUE_OK)
            return tp_fail(L, "malformed", "%s: not a valid URL", req->what);
        rc = curl_easy_setopt(e, CURLOPT_URL, full);  /* libcurl copies it */
        curl_free(full);
        if (rc != CURLE_OK) return luaL_error(L, "out of memory");
        if (post) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->form);
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->form_len);
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        } else {
            curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(method, "DELETE") == 0 ? "DELETE" : NULL);
        }
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left < HTTP_CONNECT_TIMEOUT_MS ? left
                                                                                    : HTTP_CONNECT_TIMEOUT_MS);
        c->len = 0;
        c->too_large = 0;
        rc = curl_easy_perform(e);
        if (rc != CURLE_OK) return fail_curl(L, c, req, rc);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
        if (!req->follow || !(*status == 301 || *status == 302 || *status == 303 || *status == 307 ||
                              *status == 308))
            return 0;
        curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &location);
        if (!location) return 0;  /* a 3xx without Location is the answer */
        if (++hops > HTTP_MAX_REDIRECTS)
            return tp_fail(L, "http", "%s: %s %s: more than %d redirects", req->what, method, req->shown,
                           HTTP_MAX_REDIRECTS);
        if ((why = url_load(c, req, location, origin, sizeof origin)))
            return tp_fail(L, "http", "%s: refused a redirect: %s", req->what, why);
        if (req->credentials && strcmp(origin, first) != 0)
            return tp_fail(L, "http", "%s: refused a redirect to another origin (%s): credentials would follow",
                           req->what, origin);
        /* As browsers do: 303 always, and 301/302 after a POST, turn into GET. */
        if (*status == 303 || ((*status == 301 || *status == 302) && post)) {
            post = 0;
            method = "GET";
        }
    }
}

/* ---- answers ------------------------------------------------------------- */

/* Copies at most HTTP_DETAIL_MAX printable bytes of s into out (size >=
 * HTTP_DETAIL_MAX + 4), with every occurrence of a secret of req replaced
 * by "[redacted]": providers sometimes echo what they were sent. */
static void clean_text(char *out, const char *s, size_t len, const http_req *req)
{
    size_t used = 0, i = 0;
    while (i < len && used < HTTP_DETAIL_MAX) {
        int hit = 0;
        for (int k = 0; k < 2 && !hit; k++) {
            size_t n = req->secrets[k] ? strlen(req->secrets[k]) : 0;
            if (n > 0 && n <= len - i && memcmp(s + i, req->secrets[k], n) == 0) {
                size_t room = HTTP_DETAIL_MAX - used;
                memcpy(out + used, "[redacted]", room < 10 ? room : 10);
                used += room < 10 ? room : 10;
                i += n;
                hit = 1;
            }
        }
        if (hit) continue;
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
    if (curl_easy_header(c->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) != CURLHE_OK) return -1;
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
 * invalid_client are unauthorized, 503 unavailable (plus retry_after as a
 * fourth value, nil when absent or unreadable), the rest http.  The
 * provider's error and error_description (Arvados: errors[1]) follow. */
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
    else if (status == 503)
        code = "unavailable";
    tp_fail(L, code, "%s: %s %s answered %d%s%s%s%s", req->what, req->method, req->shown, (int)status,
            err[0] || desc[0] ? ": " : "", err, err[0] && desc[0] ? ": " : "", desc);
    if (status != 503) return 3;
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
        return tp_fail(L, "malformed", "%s: %s %s: the answer is not JSON: %s", req->what, req->method,
                       req->shown, why);
    if (!is_object) {
        lua_pop(L, 1);
        return tp_fail(L, "malformed", "%s: %s %s: the answer is not a JSON object", req->what, req->method,
                       req->shown);
    }
    return 1;
}

/* ---- options ------------------------------------------------------------- */

/* A string option without NUL or control characters (header injection). */
static const char *opt_string(lua_State *L, int idx, const char *name, int required)
{
    const char *s = NULL;
    size_t len;
    int t = lua_getfield(L, idx, name);
    if (t == LUA_TSTRING) {
        s = lua_tolstring(L, -1, &len);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                luaL_argerror(L, idx, lua_pushfstring(L, "%s contains a control character", name));
        if (required && len == 0)
            luaL_argerror(L, idx, lua_pushfstring(L, "%s must not be empty", name));
    } else if (t != LUA_TNIL || required) {
        luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a string", name));
    }
    lua_pop(L, 1);  /* still referenced by the options table */
    return s;
}

/* timeout, ca_file and insecure, shared by every function. */
static void read_transport(lua_State *L, int idx, http_req *req)
{
    req->timeout_ms = HTTP_TIMEOUT_MS;
    if (lua_isnoneornil(L, idx)) return;
    if (lua_getfield(L, idx, "timeout") != LUA_TNIL) {
        lua_Number t = lua_tonumber(L, -1);
        if (!lua_isnumber(L, -1) || lua_type(L, -1) != LUA_TNUMBER || !(t > 0 && t <= 86400))
            luaL_argerror(L, idx, "timeout must be a number of seconds in (0, 86400]");
        req->timeout_ms = (long)(t * 1000);
        if (req->timeout_ms < 1) req->timeout_ms = 1;
    }
    lua_pop(L, 1);
    req->ca_file = opt_string(L, idx, "ca_file", 0);
    if (lua_getfield(L, idx, "insecure") != LUA_TNIL) {
        if (!lua_isboolean(L, -1)) luaL_argerror(L, idx, "insecure must be a boolean");
        req->insecure = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
}

static lua_Integer opt_integer(lua_State *L, int idx, const char *name, lua_Integer dflt)
{
    lua_Integer v = dflt;
    if (lua_isnoneornil(L, idx)) return v;
    if (lua_getfield(L, idx, name) != LUA_TNIL) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || lua_type(L, -1) != LUA_TNUMBER)
            luaL_argerror(L, idx, lua_pushfstring(L, "%s must be an integer", name));
    }
    lua_pop(L, 1);
    return v;
}

/* ---- RFC 7009 and RFC 7662 ----------------------------------------------- */

static int oauth_call(lua_State *L, http_call *c, http_req *req, int introspect)
{
    const char *token, *hint, *id, *secret, *auth;
    int pieces = 0;
    long status;
    token = opt_string(L, 1, "token", 1);
    hint = opt_string(L, 1, "token_type_hint", 0);
    id = opt_string(L, 1, "client_id", 0);
    secret = opt_string(L, 1, "client_secret", 0);
    auth = opt_string(L, 1, "auth", 0);
    if (auth && strcmp(auth, "basic") != 0 && strcmp(auth, "post") != 0)
        return luaL_argerror(L, 1, "auth must be \"basic\" or \"post\"");
    if (secret && !id) return luaL_argerror(L, 1, "client_secret needs client_id");
    req->secrets[0] = token;
    req->secrets[1] = secret;

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
    if (id && (!secret || (auth && strcmp(auth, "post") == 0))) {
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
    req->form = lua_tolstring(L, -1, &req->form_len);
    if (id && secret && !(auth && strcmp(auth, "post") == 0)) {
        /* RFC 6749 2.3.1 encodes both before Basic's base64. */
        req->user = push_escaped(L, c, id);
        req->password = push_escaped(L, c, secret);
    }
    if (http_run(L, c, req, &status)) return 3;
    if (status < 200 || status > 299) return fail_status(L, c, req, status, 0);
    if (!introspect) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (push_object(L, c, req) != 1) return 3;
    if (lua_getfield(L, -1, "active") != LUA_TBOOLEAN) {
        lua_pop(L, 2);
        return tp_fail(L, "malformed", "%s: %s %s: the answer has no boolean active member", req->what,
                       req->method, req->shown);
    }
    lua_pop(L, 1);
    return 1;
}

static int oauth_entry(lua_State *L, const char *what, int introspect)
{
    static const char *const options[] = { "endpoint", "token", "token_type_hint", "client_id", "client_secret",
                                           "auth", "timeout", "ca_file", "insecure", NULL };
    http_req req;
    http_call *c;
    int n;
    memset(&req, 0, sizeof req);
    luaL_checktype(L, 1, LUA_TTABLE);
    tp_check_options(L, 1, options);
    req.what = what;
    req.method = "POST";
    req.follow = 1;
    req.credentials = 1;
    req.url = opt_string(L, 1, "endpoint", 1);
    read_transport(L, 1, &req);
    c = http_call_new(L);
    n = oauth_call(L, c, &req, introspect);
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
 * @function introspect
 * @tparam table opts
 * @treturn table the answer (`active`, `exp`, `scope`, ...), or the fail
 *   triple as for `revoke`
 */
static int tp_http_introspect(lua_State *L)
{
    return oauth_entry(L, "introspect", 1);
}

/* ---- discovery and JWKS -------------------------------------------------- */

static int discovery_fetch(lua_State *L, http_call *c, http_req *req, const char *issuer, const char *fallback)
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
        return tp_fail(L, "malformed", "discovery: %s: the metadata's issuer '%s' is not '%s'", req->shown,
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
 * Fetches an issuer's metadata: `<issuer>/.well-known/openid-configuration`,
 * and on 404 RFC 8414's `/.well-known/oauth-authorization-server<path>`;
 * or exactly the URL given when it contains `/.well-known/`.  The
 * metadata's `issuer` must equal the issuer asked for.  Answers are cached
 * per Lua state for `ttl` seconds.
 * @function discovery
 * @tparam string issuer_or_url
 * @tparam[opt] table opts `ttl` (default 300; 0 disables the cache),
 *   `now`, `timeout`, `ca_file`, `insecure`
 * @treturn table the metadata (a fresh shallow copy), or the fail triple
 */
static int tp_http_discovery(lua_State *L)
{
    static const char *const options[] = { "ttl", "now", "timeout", "ca_file", "insecure", NULL };
    size_t len;
    const char *arg = tp_check_string(L, 1, &len), *issuer, *well, *fallback = NULL, *scheme_end, *path;
    lua_Integer ttl, now;
    http_req req;
    http_call *c;
    int n;
    memset(&req, 0, sizeof req);
    req.what = "discovery";
    req.method = "GET";
    req.follow = 1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        tp_check_options(L, 2, options);
    }
    lua_settop(L, 2);
    ttl = opt_integer(L, 2, "ttl", HTTP_DISCOVERY_TTL);
    now = opt_integer(L, 2, "now", (lua_Integer)time(NULL));
    read_transport(L, 2, &req);
    if (strlen(arg) != len || !(scheme_end = strstr(arg, "://")) || strpbrk(arg, "?# "))
        return tp_fail(L, "malformed", "discovery: an issuer is an absolute URL without query or fragment");
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
        return tp_fail(L, "malformed", "discovery: unknown well-known document");
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
                return 1;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);  /* the cache table stays, below the call */
    }

    c = http_call_new(L);
    n = discovery_fetch(L, c, &req, issuer, fallback);
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
    return 1;
}

/***
 * Fetches a JWK Set and imports it with `keys`.
 * @function fetch_keys
 * @tparam string jwks_uri
 * @tparam[opt] table opts `timeout`, `ca_file`, `insecure`
 * @treturn KeySet, or the fail triple (network codes, or those of `keys`)
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
    req.follow = 1;
    req.url = tp_check_string(L, 1, NULL);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        tp_check_options(L, 2, options);
    }
    lua_settop(L, 2);
    read_transport(L, 2, &req);
    c = http_call_new(L);
    if ((n = http_run(L, c, &req, &status)) != 0 || status != 200) {
        if (n == 0) n = fail_status(L, c, &req, status, 0);
        http_call_close(c);
        return n;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushlstring(L, c->body ? c->body : "", c->len);
    http_call_close(c);
    lua_call(L, 1, LUA_MULTRET);
    return lua_gettop(L) - 3;
}

/* ---- JWKS sources -------------------------------------------------------- */

#define JWKS_TTL 300
#define JWKS_MIN_REFETCH 60

/* A JWKS URI with its cached key set.  The uservalue table holds the rest:
 * url, fetch (fetch_keys), http (its options), now (the clock option),
 * set (the current KeySet), err and code (the last failure). */
typedef struct tp_jwks {
    lua_Integer ttl, min_refetch;
    lua_Integer fetched_at;     /* when the current set was fetched */
    lua_Integer attempt_at;     /* the last fetch, successful or not */
    lua_Integer refetch_at;     /* the last refetch (unknown kid or refresh) */
    lua_Integer fixed_now;      /* opts.now as an integer */
    lua_Integer fetches;        /* fetch attempts so far */
    int has_set, failed, attempted, refetched, refetch, now_kind;
} tp_jwks;

enum { JWKS_CLOCK, JWKS_FIXED, JWKS_FUNCTION };

static tp_jwks *check_jwks(lua_State *L, int idx)
{
    return (tp_jwks *)luaL_checkudata(L, idx, TP_JWKS_CLASS);
}

/* The source's time: the method's now argument at arg (when given), else
 * opts.now, else the clock. */
static lua_Integer jwks_now(lua_State *L, int idx, tp_jwks *s, int arg)
{
    lua_Integer now;
    int ok;
    if (arg > 0 && !lua_isnoneornil(L, arg)) {
        now = lua_tointegerx(L, arg, &ok);
        if (!ok || lua_type(L, arg) != LUA_TNUMBER) luaL_argerror(L, arg, "now must be an integer");
        return now;
    }
    if (s->now_kind == JWKS_FIXED) return s->fixed_now;
    if (s->now_kind == JWKS_CLOCK) return (lua_Integer)time(NULL);
    tp_getuservalue(L, idx);
    lua_getfield(L, -1, "now");
    lua_call(L, 0, 1);
    now = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "jwks: the now function must return an integer");
    lua_pop(L, 2);
    return now;
}

/* Fetches the set.  On success stores it, pushes it and returns 1; on a
 * failure records it and returns 0 with the stack unchanged. */
static int jwks_fetch(lua_State *L, int idx, tp_jwks *s, lua_Integer now)
{
    int top, uv;
    idx = lua_absindex(L, idx);
    top = lua_gettop(L);
    tp_getuservalue(L, idx);
    uv = lua_gettop(L);
    lua_getfield(L, uv, "fetch");
    lua_getfield(L, uv, "url");
    lua_getfield(L, uv, "http");
    lua_call(L, 2, LUA_MULTRET);
    s->fetches++;
    s->attempt_at = now;
    s->attempted = 1;
    if (luaL_testudata(L, uv + 1, TP_KEYSET_CLASS)) {
        lua_settop(L, uv + 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, uv, "set");
        lua_remove(L, uv);
        s->has_set = 1;
        s->failed = 0;
        s->fetched_at = now;
        return 1;
    }
    lua_settop(L, uv + 3);
    lua_setfield(L, uv, "code");
    lua_setfield(L, uv, "err");
    s->failed = 1;
    lua_settop(L, top);
    return 0;
}

/* Pushes the current set and returns 1, or pushes the fail triple of the
 * last failure and returns 3. */
static int jwks_push_current(lua_State *L, int idx, tp_jwks *s)
{
    tp_getuservalue(L, idx);
    if (s->has_set) {
        lua_getfield(L, -1, "set");
        lua_remove(L, -2);
        return 1;
    }
    if (!s->attempted) {
        lua_pop(L, 1);
        return tp_fail(L, "unavailable", "jwks: no key set has been fetched yet");
    }
    lua_pushnil(L);
    lua_getfield(L, -2, "err");
    lua_getfield(L, -3, "code");
    lua_remove(L, -4);
    return 3;
}

/* The set for use at now: fetched when missing or older than the TTL (and
 * fetching is allowed; after a failure, no sooner than min_refetch). */
static int jwks_current(lua_State *L, int idx, tp_jwks *s, lua_Integer now, int may_fetch, int *fetched)
{
    int stale = !s->has_set || tp_sub_sat(now, s->fetched_at) >= s->ttl;
    *fetched = 0;
    if (stale && may_fetch && (!s->failed || tp_sub_sat(now, s->attempt_at) >= s->min_refetch)) {
        if (jwks_fetch(L, idx, s, now)) {
            *fetched = 1;
            return 1;
        }
    }
    return jwks_push_current(L, idx, s);
}

static int refetch_allowed(const tp_jwks *s, lua_Integer now)
{
    return !s->refetched || tp_sub_sat(now, s->refetch_at) >= s->min_refetch;
}

void tp_check_jwks(lua_State *L, int idx)
{
    if (!luaL_testudata(L, idx, TP_JWKS_CLASS))
        luaL_argerror(L, idx, lua_pushfstring(L, "%s or %s expected, got %s", TP_KEYSET_CLASS, TP_JWKS_CLASS,
                                              luaL_typename(L, idx)));
}

int tp_jwks_keys(lua_State *L, int idx, int *fetched)
{
    tp_jwks *s = check_jwks(L, idx);
    return jwks_current(L, idx, s, jwks_now(L, idx, s, 0), s->refetch, fetched);
}

int tp_jwks_refetch(lua_State *L, int idx)
{
    tp_jwks *s = check_jwks(L, idx);
    lua_Integer now;
    if (!s->refetch) return 0;
    now = jwks_now(L, idx, s, 0);
    if (!refetch_allowed(s, now)) return 0;
    s->refetch_at = now;
    s->refetched = 1;
    return jwks_fetch(L, idx, s, now);
}

/***
 * A JWKS source: a JWKS URI whose key set is fetched (with `fetch_keys`)
 * when first needed, cached for `ttl` seconds, and refetched at most once
 * per `min_refetch` seconds when `verify` meets an unknown kid.  Creating
 * one does no I/O.  See docs/jwks.md.
 * @function jwks
 * @tparam string jwks_uri
 * @tparam[opt] table opts `ttl` (default 300), `min_refetch` (default 60),
 *   `refetch` (default true; false: verify never fetches), `now` (an
 *   integer or a function returning one), `timeout`, `ca_file`, `insecure`
 * @treturn JwksSource
 */
static int tp_http_jwks(lua_State *L)
{
    static const char *const options[] = { "ttl", "min_refetch", "refetch", "now", "timeout", "ca_file",
                                           "insecure", NULL };
    http_req req;
    tp_jwks *s;
    int t;
    tp_check_string(L, 1, NULL);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        tp_check_options(L, 2, options);
    }
    lua_settop(L, 2);
    memset(&req, 0, sizeof req);
    read_transport(L, 2, &req);  /* checks the HTTP options now */
    s = (tp_jwks *)tp_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->refetch = 1;
    s->ttl = opt_integer(L, 2, "ttl", JWKS_TTL);
    s->min_refetch = opt_integer(L, 2, "min_refetch", JWKS_MIN_REFETCH);
    if (s->ttl < 0) return luaL_argerror(L, 2, "ttl must not be negative");
    if (s->min_refetch < 0) return luaL_argerror(L, 2, "min_refetch must not be negative");
    lua_createtable(L, 0, 8);
    if (!lua_isnil(L, 2)) {
        if (lua_getfield(L, 2, "refetch") != LUA_TNIL) {
            if (!lua_isboolean(L, -1)) return luaL_argerror(L, 2, "refetch must be a boolean");
            s->refetch = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
        t = lua_getfield(L, 2, "now");
        if (t == LUA_TFUNCTION) {
            s->now_kind = JWKS_FUNCTION;
            lua_setfield(L, -2, "now");
        } else {
            if (t != LUA_TNIL) {
                int ok;
                s->fixed_now = lua_tointegerx(L, -1, &ok);
                if (!ok || t != LUA_TNUMBER) return luaL_argerror(L, 2, "now must be an integer or a function");
                s->now_kind = JWKS_FIXED;
            }
            lua_pop(L, 1);
        }
    }
    lua_createtable(L, 0, 3);
    if (!lua_isnil(L, 2)) {
        static const char *const http_options[] = { "timeout", "ca_file", "insecure", NULL };
        for (int i = 0; http_options[i]; i++) {
            lua_getfield(L, 2, http_options[i]);
            lua_setfield(L, -2, http_options[i]);
        }
    }
    lua_setfield(L, -2, "http");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "url");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setfield(L, -2, "fetch");
    tp_setuservalue(L, -2);
    luaL_setmetatable(L, TP_JWKS_CLASS);
    return 1;
}

/***
 * The current key set: fetched when there is none yet or it is older than
 * the TTL.  When that fetch fails the old set is served; the fail triple
 * comes back only when there is no set at all.
 * @function JwksSource:keys
 * @tparam[opt] integer now
 * @treturn KeySet, or the fail triple
 */
static int tp_jwks_keys_method(lua_State *L)
{
    tp_jwks *s = check_jwks(L, 1);
    int fetched;
    lua_settop(L, 2);
    return jwks_current(L, 1, s, jwks_now(L, 1, s, 2), 1, &fetched);
}

/***
 * Fetches the key set now, unless a refetch happened less than
 * `min_refetch` seconds ago (then the current set comes back, with false);
 * `opts.force` skips that limit.
 * @function JwksSource:refresh
 * @tparam[opt] integer now
 * @tparam[opt] table opts `force`
 * @treturn KeySet
 * @treturn boolean whether it was fetched
 * @return or the fail triple
 */
static int tp_jwks_refresh_method(lua_State *L)
{
    static const char *const options[] = { "force", NULL };
    tp_jwks *s = check_jwks(L, 1);
    lua_Integer now;
    int force = 0;
    if (lua_type(L, 2) == LUA_TTABLE && lua_isnoneornil(L, 3)) {  /* refresh(opts) */
        lua_settop(L, 2);
        lua_pushnil(L);
        lua_insert(L, 2);
    }
    lua_settop(L, 3);
    if (!lua_isnil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        tp_check_options(L, 3, options);
        lua_getfield(L, 3, "force");
        if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) return luaL_argerror(L, 3, "force must be a boolean");
        force = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    now = jwks_now(L, 1, s, 2);
    if (!force && !refetch_allowed(s, now)) {
        if (jwks_push_current(L, 1, s) != 1) return 3;
        lua_pushboolean(L, 0);
        return 2;
    }
    s->refetch_at = now;
    s->refetched = 1;
    if (!jwks_fetch(L, 1, s, now)) {
        tp_getuservalue(L, 1);
        lua_pushnil(L);
        lua_getfield(L, -2, "err");
        lua_getfield(L, -3, "code");
        return 3;
    }
    lua_pushboolean(L, 1);
    return 2;
}

/* "tokenpolicy.JwksSource: http://host:port/path, 2 keys, fetched 30s ago" */
static int tp_jwks__tostring(lua_State *L)
{
    tp_jwks *s = check_jwks(L, 1);
    luaL_Buffer b;
    char shown[204], span[32];
    size_t len, n, count;
    const char *url;
    lua_Integer now = jwks_now(L, 1, s, 0);
    tp_getuservalue(L, 1);
    lua_getfield(L, -1, "url");
    url = lua_tolstring(L, -1, &len);
    n = strcspn(url, "?#");
    if (n > 200) n = 200;
    for (size_t i = 0; i < n; i++)
        shown[i] = ((unsigned char)url[i] < 0x20 || (unsigned char)url[i] >= 0x7f) ? '?' : url[i];
    shown[n] = '\0';
    lua_getfield(L, -2, "set");
    count = s->has_set ? ((tp_keyset *)lua_touserdata(L, -1))->count : 0;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "tokenpolicy.JwksSource: %s%s", shown, n < strcspn(url, "?#") ? "..." : "");
    luaL_addvalue(&b);
    if (s->has_set) {
        lua_Integer age = tp_sub_sat(now, s->fetched_at);
        lua_pushfstring(L, ", %d key%s, fetched %s ago", (int)count, count == 1 ? "" : "s",
                        tp_format_span(span, age < 0 ? 0 : age));
        luaL_addvalue(&b);
        if (age >= s->ttl) luaL_addstring(&b, " (stale)");
    } else {
        luaL_addstring(&b, ", no keys yet");
    }
    if (s->failed) luaL_addstring(&b, ", last fetch failed");
    if (!s->refetch) luaL_addstring(&b, ", refetch off");
    luaL_pushresult(&b);
    return 1;
}

/***
 * Counters for monitoring: `fetches` (attempts), `fetched_at` (of the
 * current set, if any), `failed` (the last attempt failed).
 * @function JwksSource:stats
 * @treturn table
 */
static int tp_jwks_stats_method(lua_State *L)
{
    tp_jwks *s = check_jwks(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, s->fetches);
    lua_setfield(L, -2, "fetches");
    if (s->has_set) {
        lua_pushinteger(L, s->fetched_at);
        lua_setfield(L, -2, "fetched_at");
    }
    lua_pushboolean(L, s->failed);
    lua_setfield(L, -2, "failed");
    return 1;
}

/* ---- Arvados ------------------------------------------------------------- */

enum { ARV_CURRENT, ARV_DELETE, ARV_LOGOUT };

static int arvados_call(lua_State *L, int kind, const char *what)
{
    static const char *const options[] = { "host", "token", "uuid", "scheme", "timeout", "ca_file", "insecure",
                                           NULL };
    const char *host, *token, *uuid = NULL, *scheme;
    http_req req;
    http_call *c;
    long status;
    int n;
    memset(&req, 0, sizeof req);
    luaL_checktype(L, 1, LUA_TTABLE);
    tp_check_options(L, 1, options);
    lua_settop(L, 1);
    req.what = what;
    req.credentials = 1;
    host = opt_string(L, 1, "host", 1);
    token = opt_string(L, 1, "token", 1);
    if (kind == ARV_DELETE) uuid = opt_string(L, 1, "uuid", 1);
    else if (opt_string(L, 1, "uuid", 0)) return luaL_argerror(L, 1, "uuid is only for arvados_delete_token");
    scheme = opt_string(L, 1, "scheme", 0);
    if (!scheme) scheme = "https";
    if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0)
        return luaL_argerror(L, 1, "scheme must be \"https\" or \"http\"");
    if (strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(host))
        return luaL_argerror(L, 1, "host must be a host name or address, with an optional :port");
    if (uuid && strspn(uuid, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(uuid))
        return tp_fail(L, "malformed", "%s: not an Arvados uuid", what);
    read_transport(L, 1, &req);
    req.secrets[0] = token;
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
    }
    http_call_close(c);  /* early: the connection need not wait for the GC */
    return n;
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
        { "discovery", tp_http_discovery },
        { "arvados_current", tp_http_arvados_current },
        { "arvados_delete_token", tp_http_arvados_delete_token },
        { "arvados_logout", tp_http_arvados_logout },
        { NULL, NULL }
    };
    if (luaL_newmetatable(L, TP_HTTP_CLASS)) {
        lua_pushcfunction(L, tp_http__gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
    /* fetch_keys imports through the Lua-visible keys (keys.c registers it
     * first), so keys.c needs no C entry point for JSON text. */
    lua_getfield(L, -1, "keys");
    lua_pushcclosure(L, tp_http_fetch_keys, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "fetch_keys");
    /* A JwksSource fetches through fetch_keys (kept in each source). */
    lua_pushcclosure(L, tp_http_jwks, 1);
    lua_setfield(L, -2, "jwks");
    if (luaL_newmetatable(L, TP_JWKS_CLASS)) {
        static const luaL_Reg methods[] = {
            { "keys", tp_jwks_keys_method },
            { "refresh", tp_jwks_refresh_method },
            { "stats", tp_jwks_stats_method },
            { NULL, NULL }
        };
        lua_pushcfunction(L, tp_jwks__tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}
