/***
 * base64url encoding and decoding.
 * @module tokenpolicy.core
 */
/* Shared helpers: the fail triple, option checking, safe text for
 * messages, time formatting, base64url validation and the base64url
 * functions exposed to Lua (on cjose's codec). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/random.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include "tp.h"

int tp_fail(lua_State *L, const char *code, const char *fmt, ...)
{
    va_list ap;
    ERR_clear_error();
    lua_pushnil(L);
    lua_pushstring(L, code);
    lua_pushliteral(L, ": ");
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 3);
    lua_pushstring(L, code);
    return 3;
}

const char *tp_check_string(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_typeerror(L, idx, "string");
    return lua_tolstring(L, idx, len);
}

int tp_opts(lua_State *L, int arg, const char *const allowed[])
{
    if (lua_isnoneornil(L, arg)) return 0;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        int known = 0;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, arg, "option names must be strings");
        for (int i = 0; allowed[i] && !known; i++)
            known = strcmp(lua_tostring(L, -1), allowed[i]) == 0;
        if (!known)
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s'", lua_tostring(L, -1)));
    }
    return 1;
}

void tp_check_options(lua_State *L, int idx, const char *const allowed[])
{
    luaL_checktype(L, idx, LUA_TTABLE);
    tp_opts(L, lua_absindex(L, idx), allowed);
}

/* Pushes option name of the table at arg and returns its type; pushes nil
 * when there is no table. */
static int get_opt(lua_State *L, int arg, const char *name)
{
    if (lua_type(L, arg) != LUA_TTABLE) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, arg, name);
}

lua_Integer tp_opt_integer(lua_State *L, int arg, const char *name, lua_Integer dflt, lua_Integer min)
{
    lua_Integer v = dflt;
    if (get_opt(L, arg, name) != LUA_TNIL) {
        int ok = lua_type(L, -1) == LUA_TNUMBER;
        if (ok) v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min)
            luaL_argerror(L, arg, min == LUA_MININTEGER
                                      ? lua_pushfstring(L, "%s must be an integer", name)
                                      : lua_pushfstring(L, "%s must be an integer of at least %I", name, min));
    }
    lua_pop(L, 1);
    return v;
}

int tp_opt_boolean(lua_State *L, int arg, const char *name, int dflt)
{
    int v = dflt;
    if (get_opt(L, arg, name) != LUA_TNIL) {
        if (!lua_isboolean(L, -1))
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a boolean", name));
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

const char *tp_opt_string(lua_State *L, int arg, const char *name, const char *dflt, size_t *len)
{
    const char *s = dflt;
    size_t n = dflt ? strlen(dflt) : 0;
    int t = get_opt(L, arg, name);
    if (t == LUA_TSTRING) {
        s = lua_tolstring(L, -1, &n);
    } else if (t != LUA_TNIL) {
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a string", name));
    }
    lua_pop(L, 1);  /* a string stays referenced by the options table */
    if (len) *len = n;
    return s;
}

int tp_opt_choice(lua_State *L, int arg, const char *name, const char *const choices[], int dflt)
{
    const char *s = tp_opt_string(L, arg, name, NULL, NULL);
    luaL_Buffer b;
    if (!s) return dflt;
    for (int i = 0; choices[i]; i++)
        if (strcmp(s, choices[i]) == 0) return i;
    /* The message lists the choices; it is built before anything else is
     * pushed (the buffer rule). */
    luaL_buffinit(L, &b);
    luaL_addstring(&b, name);
    luaL_addstring(&b, " must be one of");
    for (int i = 0; choices[i]; i++) {
        luaL_addstring(&b, i ? ", \"" : " \"");
        luaL_addstring(&b, choices[i]);
        luaL_addchar(&b, '"');
    }
    luaL_pushresult(&b);
    return luaL_argerror(L, arg, lua_tostring(L, -1));
}

int tp_opt_strings(lua_State *L, int arg, const char *name)
{
    int t = get_opt(L, arg, name), ok = 0;
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (t == LUA_TSTRING) return 1;
    if (t == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        ok = n > 0;
        for (lua_Integer i = 1; ok && i <= n; i++) {
            ok = lua_rawgeti(L, -1, i) == LUA_TSTRING;
            lua_pop(L, 1);
        }
    }
    if (!ok)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a string or a non-empty list of strings", name));
    return 1;
}

void tp_register_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods, int nup)
{
    int first = lua_gettop(L) - nup + 1;
    luaL_checkstack(L, nup + 4, "tokenpolicy classes");
    luaL_newmetatable(L, name);
    for (int i = 0; i < nup; i++)
        lua_pushvalue(L, first + i);
    luaL_setfuncs(L, meta, nup);
    if (methods) {
        lua_newtable(L);
        for (int i = 0; i < nup; i++)
            lua_pushvalue(L, first + i);
        luaL_setfuncs(L, methods, nup);
        lua_setfield(L, -2, "__index");
    }
    lua_settop(L, first - 1);
}

const char *tp_printable(char *out, const char *s, size_t len)
{
    size_t n = len < 32 ? len : 32;
    /* cppcheck-suppress knownConditionTrueFalse ; cppcheck 2.10 applies one caller's zero length to every call */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (len > 32) {
        memcpy(out + n, "...", 4);
    } else {
        out[n] = '\0';
    }
    return out;
}

void tp_random_hex(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[8];
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        /* Only a name's unpredictability is at stake (see tp.h). */
        struct timespec ts;
        uint64_t x;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
        for (size_t i = 0; i < sizeof r; i++)
            r[i] = (unsigned char)(x >> (8 * i));
    }
    for (size_t i = 0; i < sizeof r; i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 15];
    }
    out[2 * sizeof r] = '\0';
}

int tp_write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        p += (size_t)n;
        len -= (size_t)n;
    }
    return 0;
}

const char *tp_format_utc(char *buf, lua_Integer t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if ((lua_Integer)tt != t || !gmtime_r(&tt, &tm) ||
        strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        strcpy(buf, "(out of range)");
    return buf;
}

/* Units largest first, zero units left out.  The short human form is
 * exact under a day ("1h30m", "1h5s") and days plus hours from a day on
 * ("3d4h"), where minutes no longer help a reader; the exact form keeps
 * every unit, so that `duration` reads it back to the same seconds. */
static const char *format_span(char *buf, lua_Integer seconds, int exact)
{
    static const struct { unsigned long long size; char unit; } units[] = {
        { 86400, 'd' }, { 3600, 'h' }, { 60, 'm' }, { 1, 's' }
    };
    unsigned long long left;
    size_t used = 0;
    if (seconds < 0) {
        buf[used++] = '-';
        left = (unsigned long long)(-(seconds + 1)) + 1;  /* no overflow on minint */
    } else {
        left = (unsigned long long)seconds;
    }
    if (left == 0) {
        strcpy(buf, "0s");
        return buf;
    }
    int long_span = !exact && left >= 86400;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        unsigned long long count = left / units[i].size;
        if (long_span && units[i].size < 3600) break;
        if (count == 0) continue;
        used += (size_t)snprintf(buf + used, 32 - used, "%llu%c", count, units[i].unit);
        left -= count * units[i].size;
    }
    buf[used] = '\0';
    return buf;
}

const char *tp_format_span(char *buf, lua_Integer seconds)
{
    return format_span(buf, seconds, 0);
}

const char *tp_format_span_exact(char *buf, lua_Integer seconds)
{
    return format_span(buf, seconds, 1);
}

size_t tp_b64url_decoded_len(size_t len)
{
    return len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
}

/* Canonical means: only the URL-safe alphabet, no '=' padding, a length
 * that is not 1 modulo 4 (which no byte string encodes to), and zero bits in
 * the unused low bits of the last character, so that every byte string has
 * exactly one accepted encoding (no signature malleability through
 * alternative spellings).
 *
 * Decoding is OpenSSL's (EVP_DecodeBlock), which takes the standard
 * alphabet with padding and refuses every other byte, except that it trims
 * whitespace around the text.  So: refuse the three bytes that only the
 * standard alphabet has ('+', '/', '='), rewrite '-' and '_', pad, decode,
 * and refuse a result shorter than the full length (trimmed whitespace). */
int tp_b64url_decode(const char *in, size_t len, unsigned char *out, char *scratch)
{
    size_t padded = (len + 3) / 4 * 4, n = tp_b64url_decoded_len(len);
    char *p;
    const char *end = scratch + len;
    if (len % 4 == 1 || memchr(in, '+', len) || memchr(in, '/', len) || memchr(in, '=', len))
        return -1;
    if (padded == 0) return 0;
    memcpy(scratch, in, len);
    for (p = memchr(scratch, '-', len); p; p = memchr(p + 1, '-', (size_t)(end - p - 1)))
        *p = '+';
    for (p = memchr(scratch, '_', len); p; p = memchr(p + 1, '_', (size_t)(end - p - 1)))
        *p = '/';
    for (size_t i = len; i < padded; i++)
        scratch[i] = '=';
    if (EVP_DecodeBlock(out, (const unsigned char *)scratch, (int)padded) != (int)(padded / 4 * 3))
        return -1;
    /* The padding makes EVP_DecodeBlock write the unused low bits out as
     * extra bytes: they must all be zero. */
    for (size_t i = n; i < padded / 4 * 3; i++)
        if (out[i] != 0) return -1;
    return (int)n;
}

/***
 * Encodes bytes as unpadded base64url (RFC 4648 section 5).
 * @function b64url_encode
 * @tparam string bytes
 * @treturn string
 */
static int tp_util_b64url_encode(lua_State *L)
{
    size_t len, outlen = 0;
    const char *in = tp_check_string(L, 1, &len);
    char *out = NULL;
    cjose_err err;
    if (len == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (!cjose_base64url_encode((const uint8_t *)in, len, &out, &outlen, &err))
        return luaL_error(L, "b64url_encode: %s", err.message);
    lua_pushlstring(L, out, outlen);  /* a memory error here would leak out: */
    cjose_get_dealloc()(out);         /* acceptable, it can only be OOM */
    return 1;
}

/***
 * Decodes canonical unpadded base64url.
 * @function b64url_decode
 * @tparam string text
 * @treturn string bytes, or the fail triple with code `malformed`
 */
static int tp_util_b64url_decode(lua_State *L)
{
    size_t len;
    const char *in = tp_check_string(L, 1, &len);
    size_t outlen = tp_b64url_decoded_len(len);
    char *scratch;
    int n;
    /* Lua owns the scratch memory: nothing to free on any path. */
    scratch = (char *)lua_newuserdata(L, len + 3 + outlen + 2);
    n = tp_b64url_decode(in, len, (unsigned char *)scratch + len + 3, scratch);
    if (n < 0)
        return tp_fail(L, "malformed", "not canonical unpadded base64url");
    lua_pushlstring(L, scratch + len + 3, (size_t)n);
    return 1;
}

/***
 * Formats a number of seconds in the short human form ("1h30m", "45s",
 * "3d4h"): at most two adjacent units, largest first.
 * @function format_duration
 * @tparam integer seconds
 * @treturn string
 */
static int tp_util_format_duration(lua_State *L)
{
    char buf[32];
    lua_pushstring(L, tp_format_span(buf, luaL_checkinteger(L, 1)));
    return 1;
}

/***
 * The value when it is a string that may stand in an HTTP header field:
 * no control character (bytes 0-31 and 127; a CR LF would end the field
 * and forge the next one), else nil.  Bytes of 128 and above (UTF-8) are
 * kept.  The HAProxy action passes claims to the backend through it.
 * @function header_text
 * @param value anything
 * @treturn ?string the value, or nil
 */
int tp_has_control(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 1;
    return 0;
}

static int tp_util_header_text(lua_State *L)
{
    size_t len = 0;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
    if (!s || tp_has_control(s, len)) {
        lua_pushnil(L);
        return 1;
    }
    lua_settop(L, 1);
    return 1;
}

void tp_open_util(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "b64url_encode", tp_util_b64url_encode },
        { "b64url_decode", tp_util_b64url_decode },
        { "format_duration", tp_util_format_duration },
        { "header_text", tp_util_header_text },
        { NULL, NULL }
    };
    luaL_setfuncs(L, functions, 0);
}

