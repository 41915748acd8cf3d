/***
 * Lifetime policies: durations and the Arvados token lifetime rules
 * (docs/policy.md).
 * @module tokenpolicy.core
 */
/* Lifetime policy: Go-style durations, the Arvados token lifetime rules
 * (API.MaxTokenLifetime, Login.TokenLifetime, Login.IssueTrustedTokens,
 * Workbench.IdleTimeout), and the evaluation of JWTs and token records
 * against them.
 *
 * Two readings of the Arvados rules exist, because Arvados' code and its
 * documentation disagree in places; a policy follows one of them (compat
 * "docs", the default, or "arvados").  docs/policy.md sets them side by
 * side.  Everything here is pure arithmetic on integers: no C memory is
 * allocated, so a Lua error (out of memory) can never leak anything. */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include "tp.h"

#define TP_POLICY_CLASS "tokenpolicy.Policy"
#define TP_VERDICT_CLASS "tokenpolicy.Verdict"
#define TP_SETTINGS_CLASS "tokenpolicy.PolicySettings"

/* Rucio's auth_oidc_refresh_before_exp default: 20 minutes. */
#define TP_DEFAULT_REFRESH 1200
/* Workbench warns this many seconds (at most) before an idle logout. */
#define TP_IDLE_WARNING 60

enum compat { COMPAT_DOCS, COMPAT_ARVADOS };

enum kind { KIND_API, KIND_LOGIN, KIND_CONTAINER, KIND_SYSTEM_ROOT, KIND_ANONYMOUS };
static const char *const kind_names[] = { "api", "login", "container", "system_root", "anonymous", NULL };

typedef struct tp_policy {
    lua_Integer idle;     /* Workbench.IdleTimeout, seconds; 0 = off */
    lua_Integer login;    /* Login.TokenLifetime */
    lua_Integer max;      /* API.MaxTokenLifetime */
    lua_Integer refresh;  /* refresh window before expiry */
    int trusted;          /* Login.IssueTrustedTokens */
    int compat;
    size_t root_len;      /* the SystemRootToken's length; 0 = none given */
    char root[];          /* the SystemRootToken: compared, never shown */
} tp_policy;

static tp_policy *check_policy(lua_State *L, int idx)
{
    return (tp_policy *)luaL_checkudata(L, idx, TP_POLICY_CLASS);
}

enum state { ST_VALID, ST_EXPIRED, ST_NOT_YET_VALID, ST_IDLE, ST_EXCEEDS, ST_NO_EXPIRY, ST_COUNT };
static const char *const state_names[] = {
    "valid", "expired", "not_yet_valid", "idle", "exceeds_max_lifetime", "no_expiry", NULL
};

enum {
    K_OK, K_STATE, K_EXPIRES, K_REMAINING, K_REFRESH, K_IDLE_WARNING, K_CAN_MANAGE, K_FIX, K_REASONS, K_COUNT
};
static const char *const verdict_keys[] = {
    "ok", "state", "expires_at", "remaining", "refresh_due", "idle_warning_at", "can_manage_tokens",
    "fix_expires_at", "reasons", NULL
};

/* The fields read from a token: a record's, then a JWT's claims. */
enum {
    R_CLAIMS, R_CREATED, R_EXPIRES, R_LAST_USED, R_REFRESHES, R_KIND, R_OWNER, R_ADMIN, R_SCOPES, R_API_TOKEN,
    R_EXP, R_IAT, R_NBF, R_AUTH_TIME, R_COUNT
};
static const char *const record_fields[] = {
    "claims", "created_at", "expires_at", "last_used_at", "refreshes_at", "kind", "owner_uuid", "owner_is_admin",
    "scopes", "api_token", "exp", "iat", "nbf", "auth_time", NULL
};

/* The methods' upvalues: the verdict's field names, the state names and
 * the token's field names, interned once, so that reading a token and
 * filling a verdict hashes no C string (lua_getfield and lua_setfield look
 * each literal up in Lua's string cache); then the verdict and policy
 * metatables, and the core's `decode` (evaluate decodes token strings
 * through the Lua-visible function, so policy.c needs nothing of jwt.c). */
#define UV_KEY(k) lua_upvalueindex(1 + (k))
#define UV_STATE(st) lua_upvalueindex(1 + K_COUNT + (st))
#define UV_FIELD(f) lua_upvalueindex(1 + K_COUNT + ST_COUNT + (f))
#define UV_VERDICT_MT lua_upvalueindex(1 + K_COUNT + ST_COUNT + R_COUNT)
#define UV_POLICY_MT lua_upvalueindex(2 + K_COUNT + ST_COUNT + R_COUNT)
#define UV_DECODE lua_upvalueindex(3 + K_COUNT + ST_COUNT + R_COUNT)
#define UV_COUNT (3 + K_COUNT + ST_COUNT + R_COUNT)

/* check_policy for the methods on the hot path: the metatable compared
 * with an upvalue instead of looked up by name in the registry. */
static tp_policy *self_policy(lua_State *L)
{
    void *p = lua_touserdata(L, 1);
    if (p && lua_getmetatable(L, 1)) {
        int same = lua_rawequal(L, -1, UV_POLICY_MT);
        lua_pop(L, 1);
        if (same) return (tp_policy *)p;
    }
    return check_policy(L, 1);  /* raises */
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- durations ---------------------------------------------------------- */

#define NS_PER_S 1000000000ull
#define NS_LIMIT (1ull << 63)  /* Go durations are int64 nanoseconds */

static const struct { const char *name; size_t len; unsigned long long ns; } units[] = {
    { "ns", 2, 1 }, { "us", 2, 1000 }, { "\xc2\xb5s", 3, 1000 } /* U+00B5 */,
    { "\xce\xbcs", 3, 1000 } /* U+03BC */, { "ms", 2, 1000000 }, { "s", 1, NS_PER_S },
    { "m", 1, 60 * NS_PER_S }, { "h", 1, 3600 * NS_PER_S },
    { "d", 1, 86400 * NS_PER_S },  /* beyond Go: format_duration prints it */
};

/* The longest text a duration or time message quotes: no duration
 * ("2562047h47m16.854775807s") or time ("2026-01-01T00:00:00.123456789+01:00")
 * is longer, every token is.  A longer text is described by its size only,
 * since it may be a token given in the wrong place. */
#define QUOTE_MAX 40

/* The text as a message shows it: quoted and printable (at most 32
 * characters), or its size when over QUOTE_MAX; out holds >= 48 bytes. */
static const char *quoted(char *out, const char *s, size_t len)
{
    char safe[40];
    if (len > QUOTE_MAX)
        snprintf(out, 48, "(%lu bytes, not shown)", (unsigned long)len);
    else
        snprintf(out, 48, "\"%s\"", tp_printable(safe, s, len));
    return out;
}

/* Parses a duration as Go's time.ParseDuration does (which is what Arvados
 * configs go through): a sign, then one or more decimal numbers, each with
 * an optional fraction and a unit (ns, us, µs, ms, s, m, h), within Go's
 * range of int64 nanoseconds.  Beyond Go, a bare integer is a number of
 * seconds and "d" is a unit of 24h (format_duration prints days); the
 * Arvados config reader refuses both, as Arvados would.  The result is whole seconds, a fraction of a second rounded up
 * (away from zero): "300ms" is 1, never 0, since 0 would switch a setting
 * off.  Returns 1, or 0 with the reason for `malformed` in why (>= 160). */
static int parse_duration(const char *s, size_t len, lua_Integer *seconds, char *why)
{
    const char *p = s, *end = s + len, *reason = NULL;
    char safe[48], unit_safe[40];
    unsigned long long total = 0, whole_seconds;
    int neg = 0;

    if (p < end && (*p == '+' || *p == '-')) neg = *p++ == '-';
    if (p < end) {
        const char *q = p;
        unsigned long long v = 0;
        while (q < end && is_digit(*q)) q++;
        if (q == end) {
            for (; p < end; p++) {
                if (v > ((unsigned long long)LUA_MAXINTEGER - (unsigned)(*p - '0')) / 10) {
                    reason = "out of range";
                    goto bad;
                }
                v = v * 10 + (unsigned)(*p - '0');
            }
            *seconds = neg ? -(lua_Integer)v : (lua_Integer)v;
            return 1;
        }
    } else {
        reason = "empty";
        goto bad;
    }
    while (p < end) {
        unsigned long long whole = 0, frac = 0, v;
        double scale = 1;
        int pre = 0, post = 0, frac_full = 0;
        const char *unit;
        size_t u, ulen;
        if (!is_digit(*p) && *p != '.') {
            reason = "expected a number";
            goto bad;
        }
        for (; p < end && is_digit(*p); p++) {
            pre = 1;
            if (whole > (NS_LIMIT - 1) / 10 || (whole = whole * 10 + (unsigned)(*p - '0')) > NS_LIMIT) {
                reason = "out of range";
                goto bad;
            }
        }
        if (p < end && *p == '.') {
            /* Like Go, digits beyond what 63 bits hold are ignored. */
            for (p++; p < end && is_digit(*p); p++) {
                post = 1;
                if (frac_full || frac > (NS_LIMIT - 1) / 10 || frac * 10 + (unsigned)(*p - '0') > NS_LIMIT) {
                    frac_full = 1;
                    continue;
                }
                frac = frac * 10 + (unsigned)(*p - '0');
                scale *= 10;
            }
        }
        if (!pre && !post) {
            reason = "expected a number";
            goto bad;
        }
        for (unit = p; p < end && *p != '.' && !is_digit(*p); p++) {}
        ulen = (size_t)(p - unit);
        if (ulen == 0) {
            reason = "missing unit";
            goto bad;
        }
        for (u = 0; u < sizeof units / sizeof units[0]; u++)
            if (units[u].len == ulen && memcmp(units[u].name, unit, ulen) == 0) break;
        if (u == sizeof units / sizeof units[0]) {
            if (len > QUOTE_MAX) {  /* the unit would be a piece of it */
                reason = "unknown unit";
                goto bad;
            }
            snprintf(why, 160, "invalid duration %s: unknown unit \"%s\"",
                     quoted(safe, s, len), tp_printable(unit_safe, unit, ulen));
            return 0;
        }
        if (whole > NS_LIMIT / units[u].ns) {
            reason = "out of range";
            goto bad;
        }
        v = whole * units[u].ns;
        /* The fraction goes through a double as in Go: exact enough for
         * nanoseconds of an hour, and the result is rounded to seconds. */
        if (frac > 0 && (v += (unsigned long long)((double)frac * ((double)units[u].ns / scale))) > NS_LIMIT) {
            reason = "out of range";
            goto bad;
        }
        if ((total += v) > NS_LIMIT) {
            reason = "out of range";
            goto bad;
        }
    }
    if (!neg && total > NS_LIMIT - 1) {
        reason = "out of range";
        goto bad;
    }
    whole_seconds = total / NS_PER_S + (total % NS_PER_S != 0);
    *seconds = neg ? -(lua_Integer)whole_seconds : (lua_Integer)whole_seconds;
    return 1;
bad:
    snprintf(why, 160, "invalid duration %s: %s", quoted(safe, s, len), reason);
    return 0;
}

/* Reads the duration at idx (text or whole seconds).  Returns 1 with
 * *seconds, 0 with why set for malformed text; raises (naming argument
 * arg) for other types and for numbers that are not whole. */
static int read_duration(lua_State *L, int idx, int arg, const char *name, lua_Integer *seconds, char *why)
{
    int is_int;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return parse_duration(s, len, seconds, why);
    }
    if (lua_type(L, idx) == LUA_TNUMBER) {
        *seconds = lua_tointegerx(L, idx, &is_int);
        if (is_int) return 1;
        luaL_argerror(L, arg, lua_pushfstring(L, "%s%sa number of seconds must be whole", name, *name ? ": " : ""));
    }
    return luaL_argerror(L, arg, lua_pushfstring(L, "%s%sa duration is text or whole seconds, not %s",
                                                 name, *name ? ": " : "", luaL_typename(L, idx)));
}

/***
 * Parses a duration as Arvados configs write them: Go's syntax ("12h",
 * "1h30m", "90s", "1.5h", "300ms", "0"; units h, m, s, ms, us, µs, ns),
 * plus the day ("1d", "3d4h": every unit `format_duration` prints), or a
 * bare integer number of seconds ("3600", or a Lua integer).  Fractions
 * of a second round up, away from zero ("300ms" is 1, "1.2s" is 2), so a
 * nonzero duration never becomes 0, which means "off" in a policy.  The
 * range is Go's (about 292 years).
 * @function duration
 * @tparam string|integer text
 * @treturn integer seconds, or the fail triple (`malformed`)
 */
static int tp_policy_duration(lua_State *L)
{
    lua_Integer seconds;
    char why[160];
    if (!read_duration(L, 1, 1, "", &seconds, why))
        return tp_fail(L, "malformed", "%s", why);
    lua_pushinteger(L, seconds);
    return 1;
}

/* ---- times -------------------------------------------------------------- */

static int two_digits(const char *p, int *out)
{
    if (!is_digit(p[0]) || !is_digit(p[1])) return 0;
    *out = (p[0] - '0') * 10 + (p[1] - '0');
    return 1;
}

/* Days from 1970-01-01 to the given proleptic Gregorian date: count whole
 * 400-year cycles of a calendar whose years start on 1 March, so that the
 * leap day comes last. */
static lua_Integer days_from_civil(int y, int m, int d)
{
    int era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (lua_Integer)era * 146097 + doe - 719468;
}

/* Parses an ISO-8601 / RFC 3339 date and time with a zone: "2020-08-25T03:30:50Z",
 * Arvados' (Ruby's) "2020-08-25 03:30:50 +0000", PostgreSQL's
 * "2020-08-25 03:30:50.5+00", "... UTC", offsets "+05:30" / "-0700" / "+02".
 * A fraction of a second is dropped (rounded down).  A time without a zone
 * is refused: it would be read in whichever zone the host is in.  Returns
 * NULL, or the reason it is not a time. */
static const char *parse_iso(const char *s, size_t len, lua_Integer *out)
{
    static const unsigned char month_days[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    const char *p = s + 19, *end = s + len;
    int y1, y2, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0, y;
    if (len < 19 || !two_digits(s, &y1) || !two_digits(s + 2, &y2) || s[4] != '-' || !two_digits(s + 5, &mo) ||
        s[7] != '-' || !two_digits(s + 8, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !two_digits(s + 11, &h) || s[13] != ':' || !two_digits(s + 14, &mi) || s[16] != ':' ||
        !two_digits(s + 17, &sec))
        return "not an ISO-8601 date and time";
    if (p < end && (*p == '.' || *p == ',')) {
        if (++p == end || !is_digit(*p)) return "not an ISO-8601 date and time";
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && *p == ' ') p++;
    if (p == end) return "no time zone (add Z for UTC)";
    if ((*p == 'Z' || *p == 'z') && end - p == 1) {
        /* UTC */
    } else if (end - p == 3 && memcmp(p, "UTC", 3) == 0) {
        /* UTC */
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (!((end - p == 2 && two_digits(p, &oh)) ||
              (end - p == 4 && two_digits(p, &oh) && two_digits(p + 2, &om)) ||
              (end - p == 5 && two_digits(p, &oh) && p[2] == ':' && two_digits(p + 3, &om))) ||
            oh > 23 || om > 59)
            return "not a time zone offset";
    } else {
        return "not an ISO-8601 date and time";
    }
    y = y1 * 100 + y2;
    if (mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] ||
        (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) ||
        h > 23 || mi > 59 || sec > 60)  /* 60: a leap second */
        return "out of range";
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
    return NULL;
}

enum { TIME_ABSENT = 0, TIME_OK = 1, TIME_BAD = -1 };

/* Reads the time at idx: an integer, a float (rounded down), or ISO-8601
 * text.  nil and tokenpolicy.null are absent.  On TIME_BAD, *why says why. */
static int read_time(lua_State *L, int idx, lua_Integer *out, const char **why)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: {
        double d;
        if (lua_isinteger(L, idx)) {
            *out = lua_tointeger(L, idx);
            return TIME_OK;
        }
        d = (double)lua_tonumber(L, idx);
        if (!(d > -9.0e18 && d < 9.0e18)) {  /* also NaN */
            *why = "a number out of range";  /* also NaN */
            return TIME_BAD;
        }
        *out = (lua_Integer)floor(d);
        return TIME_OK;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return (*why = parse_iso(s, len, out)) ? TIME_BAD : TIME_OK;
    }
    case LUA_TNIL:
    case LUA_TNONE:
        return TIME_ABSENT;
    default:
        if (tp_is_null(L, idx)) return TIME_ABSENT;
        *why = NULL;
        return TIME_BAD;
    }
}

/* Pushes the fail triple for the bad time at idx named name. */
static int fail_time(lua_State *L, int idx, const char *name, const char *why)
{
    char safe[48];
    size_t len;
    const char *s;
    if (lua_type(L, idx) == LUA_TNUMBER)
        return tp_fail(L, "malformed", "%s: %s", name, why);
    if (lua_type(L, idx) != LUA_TSTRING)
        return tp_fail(L, "malformed", "%s: a time is an integer or ISO-8601 text, not %s", name,
                       luaL_typename(L, idx));
    s = lua_tolstring(L, idx, &len);
    return tp_fail(L, "malformed", "%s: invalid time %s: %s", name, quoted(safe, s, len), why);
}

/* The `now` argument at idx: absent means the clock.  Returns 0 with *now,
 * or 3 with the fail triple pushed; raises for types that are no time. */
static int arg_now(lua_State *L, int idx, int arg, lua_Integer *now)
{
    const char *why = NULL;
    switch (read_time(L, idx, now, &why)) {
    case TIME_OK: return 0;
    case TIME_ABSENT:
        *now = (lua_Integer)time(NULL);
        return 0;
    default:
        if (lua_type(L, idx) != LUA_TSTRING)
            luaL_argerror(L, arg, lua_pushfstring(L, "now: a time is an integer or ISO-8601 text, not %s",
                                                  luaL_typename(L, idx)));
        return fail_time(L, idx, "now", why);
    }
}

/* ---- the policy object -------------------------------------------------- */

/***
 * Creates a lifetime policy.  Durations are text ("24h", see `duration`)
 * or whole seconds; 0 switches a rule off.
 * @function policy
 * @tparam[opt] table settings `max_token_lifetime` (API.MaxTokenLifetime),
 *   `login_token_lifetime` (Login.TokenLifetime), `idle_timeout`
 *   (Workbench.IdleTimeout), `issue_trusted_tokens` (boolean, default true;
 *   Login.IssueTrustedTokens), `refresh_before_exp` (default "20m"),
 *   `compat` ("docs", the default, or "arvados"), `system_root_token`
 *   (SystemRootToken: the one token exempt from the lifetime rules; kept,
 *   compared, never shown)
 * @treturn Policy or the fail triple (`malformed`) for duration text that
 *   does not parse; raises on unknown names, wrong types and negative
 *   durations
 */
static int tp_policy_new(lua_State *L)
{
    static const char *const options[] = {
        "max_token_lifetime", "login_token_lifetime", "idle_timeout", "refresh_before_exp",
        "issue_trusted_tokens", "compat", "system_root_token", NULL
    };
    static const char *const compat_names[] = { "docs", "arvados", NULL };
    tp_policy pol = { 0, 0, 0, TP_DEFAULT_REFRESH, 1, COMPAT_DOCS, 0 };
    lua_Integer *slots[4];
    const char *root;
    size_t root_len = 0;
    int bad = -1;
    char why[160], first_why[160];
    tp_policy *out;

    slots[0] = &pol.max;
    slots[1] = &pol.login;
    slots[2] = &pol.idle;
    slots[3] = &pol.refresh;
    if (tp_opts(L, 1, options)) {
        for (int i = 0; i < 4; i++) {
            /* Text that does not parse is reported after every option is
             * read, so that misuse elsewhere in the table always raises. */
            if (lua_getfield(L, 1, options[i]) != LUA_TNIL) {
                if (!read_duration(L, -1, 1, options[i], slots[i], why)) {
                    if (bad < 0) {
                        bad = i;
                        memcpy(first_why, why, sizeof why);
                    }
                } else if (*slots[i] < 0) {
                    luaL_argerror(L, 1, lua_pushfstring(L, "%s must not be negative", options[i]));
                }
            }
            lua_pop(L, 1);
        }
    }
    pol.trusted = tp_opt_boolean(L, 1, "issue_trusted_tokens", 1);
    pol.compat = tp_opt_choice(L, 1, "compat", compat_names, COMPAT_DOCS);
    root = tp_opt_string(L, 1, "system_root_token", NULL, &root_len);
    if (root && root_len == 0) luaL_argerror(L, 1, "system_root_token must not be empty");
    if (bad >= 0)
        return tp_fail(L, "malformed", "%s: %s", options[bad], first_why);
    out = (tp_policy *)tp_newuserdata(L, sizeof *out + root_len);
    *out = pol;
    out->root_len = root_len;
    if (root_len) memcpy(out->root, root, root_len);  /* root is alive in the settings table */
    luaL_setmetatable(L, TP_POLICY_CLASS);
    return 1;
}

/***
 * The policy's settings, as `policy` takes them (durations in seconds),
 * except `system_root_token`: a secret is not handed out again.
 * @function Policy:settings
 * @treturn table
 */
static int tp_policy_settings(lua_State *L)
{
    tp_policy *p = check_policy(L, 1);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, p->max);
    lua_setfield(L, -2, "max_token_lifetime");
    lua_pushinteger(L, p->login);
    lua_setfield(L, -2, "login_token_lifetime");
    lua_pushinteger(L, p->idle);
    lua_setfield(L, -2, "idle_timeout");
    lua_pushinteger(L, p->refresh);
    lua_setfield(L, -2, "refresh_before_exp");
    lua_pushboolean(L, p->trusted);
    lua_setfield(L, -2, "issue_trusted_tokens");
    lua_pushstring(L, p->compat == COMPAT_DOCS ? "docs" : "arvados");
    lua_setfield(L, -2, "compat");
    luaL_setmetatable(L, TP_SETTINGS_CLASS);
    return 1;
}

static const char *span_or_off(char *buf, lua_Integer seconds)
{
    return seconds ? tp_format_span_exact(buf, seconds) : "off";
}

/* A duration field of the settings table at index 1, as the policy prints it. */
static const char *settings_span(lua_State *L, char *buf, const char *name)
{
    lua_Integer v;
    lua_getfield(L, 1, name);
    v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return span_or_off(buf, v);
}

/* "tokenpolicy.PolicySettings (compat docs): max_token_lifetime 1d, ...":
 * the policy's own line, read from the table (which a caller may edit
 * before passing it to `policy`). */
static int tp_settings__tostring(lua_State *L)
{
    char max[32], login[32], idle[32], refresh[32];
    int trusted;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "issue_trusted_tokens");
    trusted = lua_toboolean(L, -1);
    lua_getfield(L, 1, "compat");
    lua_pushfstring(L, "%s (compat %s): max_token_lifetime %s, login_token_lifetime %s, idle_timeout %s, "
                    "issue_trusted_tokens %s, refresh_before_exp %s", TP_SETTINGS_CLASS, luaL_optstring(L, -1, "?"),
                    settings_span(L, max, "max_token_lifetime"), settings_span(L, login, "login_token_lifetime"),
                    settings_span(L, idle, "idle_timeout"), trusted ? "true" : "false",
                    settings_span(L, refresh, "refresh_before_exp"));
    return 1;
}

static int tp_policy__tostring(lua_State *L)
{
    tp_policy *p = check_policy(L, 1);
    char max[32], login[32], idle[32], refresh[32];
    lua_pushfstring(L, "tokenpolicy.Policy (compat %s): max_token_lifetime %s, login_token_lifetime %s, "
                    "idle_timeout %s, issue_trusted_tokens %s, refresh_before_exp %s%s",
                    p->compat == COMPAT_DOCS ? "docs" : "arvados", span_or_off(max, p->max),
                    span_or_off(login, p->login), span_or_off(idle, p->idle), p->trusted ? "true" : "false",
                    span_or_off(refresh, p->refresh), p->root_len ? ", system_root_token set" : "");
    return 1;
}

/* ---- the MaxTokenLifetime rule ------------------------------------------ */

/* Whether MaxTokenLifetime governs a token of this kind.  docs: containers
 * are exempt, and admins may go beyond the max (with an explicit expiry or
 * none), except for login tokens ("MaxTokenLifetime takes precedence" over
 * TokenLifetime for every login).  arvados (clamp_token_expiration): a
 * missing expiry is always clamped; an explicit one unless the user is an
 * admin.  The system root and anonymous tokens are configuration, not
 * records, and are never clamped; a saved token of those users is an
 * ordinary token (the kind says which; the owner does not). */
static int max_applies(const tp_policy *p, int kind, int admin, int has_expiry)
{
    if (p->max <= 0 || kind == KIND_SYSTEM_ROOT || kind == KIND_ANONYMOUS) return 0;
    if (p->compat == COMPAT_DOCS)
        return kind != KIND_CONTAINER && (!admin || kind == KIND_LOGIN);
    return !has_expiry || !admin;
}

/* Applies the rule to a token created or updated at now with the expiry
 * (*expires, present when *has). */
static void clamp_expiry(const tp_policy *p, int kind, int admin, lua_Integer now, int *has, lua_Integer *expires)
{
    lua_Integer limit;
    if (!max_applies(p, kind, admin, *has)) return;
    limit = tp_add_sat(now, p->max);
    if (!*has || *expires > limit) {
        *has = 1;
        *expires = limit;
    }
}

/* Reads the time option name of the table at arg (pushing it, then popping).
 * Returns 0 with *has and *t set, or 3 with the fail triple pushed.  Not a
 * member of the shared tp_opt family: a time may also be ISO-8601 text,
 * and text that does not parse is an expected failure (`malformed`, as for
 * a record's times), not misuse. */
static int time_option(lua_State *L, int arg, const char *name, int *has, lua_Integer *t)
{
    const char *why = NULL;
    int r;
    lua_getfield(L, arg, name);
    r = read_time(L, -1, t, &why);
    if (r == TIME_BAD) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s: a time is an integer or ISO-8601 text, not %s", name,
                                                  luaL_typename(L, -1)));
        return fail_time(L, -1, name, why);
    }
    lua_pop(L, 1);
    *has = r == TIME_OK;
    return 0;
}

static void push_optional_time(lua_State *L, int has, lua_Integer t)
{
    if (has) lua_pushinteger(L, t);
    else lua_pushnil(L);
}

/***
 * The MaxTokenLifetime rule as Arvados applies it when a token is created
 * or its expiry updated: an expiry beyond now + MaxTokenLifetime, or none,
 * becomes now + MaxTokenLifetime, with the exemptions of the policy's
 * compat (docs: admins and containers; arvados: admins' explicit expiries).
 * @function Policy:clamp
 * @tparam table request `now` (default the clock), `expires_at` (a time or
 *   nil for none), `is_admin` (the user creating or updating the token),
 *   `kind` ("api" default, "login", "container", "system_root", "anonymous")
 * @treturn ?integer the resulting expiry, nil for none; or the fail triple
 *   (`malformed`) for a time that does not parse
 */
static int tp_policy_clamp(lua_State *L)
{
    static const char *const options[] = { "now", "expires_at", "is_admin", "kind", NULL };
    tp_policy *p = check_policy(L, 1);
    lua_Integer now, expires = 0;
    int has_now, has = 0, admin, kind;
    luaL_checktype(L, 2, LUA_TTABLE);
    tp_opts(L, 2, options);
    if (time_option(L, 2, "now", &has_now, &now) || time_option(L, 2, "expires_at", &has, &expires)) return 3;
    if (!has_now) now = (lua_Integer)time(NULL);
    admin = tp_opt_boolean(L, 2, "is_admin", 0);
    kind = tp_opt_choice(L, 2, "kind", kind_names, KIND_API);
    clamp_expiry(p, kind, admin, now, &has, &expires);
    push_optional_time(L, has, expires);
    return 1;
}

/***
 * The expiry a token made at login gets: now + TokenLifetime, or the
 * requested expiry when that is earlier (or when TokenLifetime is off), then
 * the MaxTokenLifetime rule for a login token (docs: for everyone; arvados:
 * an admin keeps an expiry beyond the max).
 * @function Policy:login_expiry
 * @tparam table request `now` (default the clock), `requested` (the expiry
 *   the identity provider or client asked for, or nil), `is_admin`
 * @treturn ?integer the expiry, nil for none; or the fail triple
 *   (`malformed`) for a time that does not parse
 */
static int tp_policy_login_expiry(lua_State *L)
{
    static const char *const options[] = { "now", "requested", "is_admin", NULL };
    tp_policy *p = check_policy(L, 1);
    lua_Integer now, requested = 0, expires = 0;
    int has_now, has_requested = 0, has = 0, admin;
    luaL_checktype(L, 2, LUA_TTABLE);
    tp_opts(L, 2, options);
    if (time_option(L, 2, "now", &has_now, &now) || time_option(L, 2, "requested", &has_requested, &requested))
        return 3;
    if (!has_now) now = (lua_Integer)time(NULL);
    admin = tp_opt_boolean(L, 2, "is_admin", 0);
    if (p->login > 0) {
        has = 1;
        expires = tp_add_sat(now, p->login);
    }
    if (has_requested && (!has || requested < expires)) {
        has = 1;
        expires = requested;
    }
    clamp_expiry(p, KIND_LOGIN, admin, now, &has, &expires);
    push_optional_time(L, has, expires);
    return 1;
}

/* ---- records ------------------------------------------------------------ */

enum {
    HAS_CREATED = 1, HAS_EXPIRES = 2, HAS_LAST_USED = 4, HAS_IAT = 8, HAS_NBF = 16, HAS_AUTH_TIME = 32,
    HAS_REFRESHES = 64
};

/* What evaluate and long_lived know about a token: a record's fields, or a
 * JWT's claims (exp is kept as expires).  The owner is long_lived's alone
 * (the rake tasks skip users; the lifetime rules do not). */
typedef struct rec {
    lua_Integer created, expires, last_used, refreshes, iat, nbf, auth_time;
    unsigned has;
    int jwt;           /* claims, not a record */
    int kind;
    int admin;
    int can_create;    /* its scopes allow creating tokens */
} rec;

/* Arvados' scope check (scopes_allow?): "all", the exact request, or a
 * prefix ending in '/'.  Creating a token is this request. */
static int scope_allows_creating(const char *scope, size_t len)
{
    static const char request[] = "POST /arvados/v1/api_client_authorizations";
    if (len == 3 && memcmp(scope, "all", 3) == 0) return 1;
    if (len == sizeof request - 1) return memcmp(scope, request, len) == 0;
    return len > 0 && len < sizeof request - 1 && scope[len - 1] == '/' && memcmp(scope, request, len) == 0;
}

static int contains(const char *s, size_t len, const char *what)
{
    size_t n = strlen(what);
    for (size_t i = 0; i + n <= len; i++)
        if (s[i] == what[0] && memcmp(s + i, what, n) == 0) return 1;
    return 0;
}

/* The rake tasks' test for the system root user's and the anonymous user's
 * tokens (a match anywhere in the uuid, as their unanchored regexps do). */
static int owner_is_system_root(const char *owner, size_t len)
{
    return contains(owner, len, "-tpzed-000000000000000");
}

static int owner_is_anonymous(const char *owner, size_t len)
{
    return contains(owner, len, "-tpzed-anonymouspublic");
}

/* Pushes field f of the table at t (raw: records and claims are data);
 * returns its type. */
static int get_field(lua_State *L, int t, int f)
{
    lua_pushvalue(L, UV_FIELD(f));
    return lua_rawget(L, t);
}

static int absent(lua_State *L, int type, int idx)
{
    return type == LUA_TNIL || tp_is_null(L, idx);
}

/* Reads NumericDate claim f of the claims table at t; exp, iat and
 * auth_time round down and nbf up, each the stricter way.  Sets *present
 * when the claim is there.  Returns 0, or 3 with the fail triple pushed. */
static int read_claim(lua_State *L, int t, int f, unsigned bit, rec *r, lua_Integer *out, int *present)
{
    int type = get_field(L, t, f);
    double d;
    if (absent(L, type, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    *present = 1;
    if (type != LUA_TNUMBER)
        return tp_fail(L, "malformed", "claim %s is not a number", record_fields[f]);
    if (lua_isinteger(L, -1)) {
        *out = lua_tointeger(L, -1);
    } else {
        d = (double)lua_tonumber(L, -1);
        if (!(d > -9.0e18 && d < 9.0e18))  /* also NaN */
            return tp_fail(L, "malformed", "claim %s is out of range", record_fields[f]);
        *out = (lua_Integer)(f == R_NBF ? ceil(d) : floor(d));
    }
    lua_pop(L, 1);
    r->has |= bit;
    return 0;
}

/* Reads the claims table at t.  Returns 0, or 3 with the fail triple. */
static int read_claims(lua_State *L, int t, rec *r, int *present)
{
    t = lua_absindex(L, t);
    return read_claim(L, t, R_EXP, HAS_EXPIRES, r, &r->expires, present) ||
           read_claim(L, t, R_IAT, HAS_IAT, r, &r->iat, present) ||
           read_claim(L, t, R_NBF, HAS_NBF, r, &r->nbf, present) ||
           read_claim(L, t, R_AUTH_TIME, HAS_AUTH_TIME, r, &r->auth_time, present) ? 3 : 0;
}

/* Reads record time f of the table at t into *out (bit in r->has); sets
 * *present when the field is there (even as null).  0 or 3. */
static int record_time(lua_State *L, int t, int f, unsigned bit, rec *r, lua_Integer *out, int *present)
{
    const char *why = NULL;
    int type = get_field(L, t, f);
    if (type != LUA_TNIL) *present = 1;
    switch (read_time(L, -1, out, &why)) {
    case TIME_OK:
        r->has |= bit;
        break;
    case TIME_ABSENT:
        break;
    default:
        return fail_time(L, -1, record_fields[f], why);
    }
    lua_pop(L, 1);
    return 0;
}

/* Whether the api_token at the top of the stack is the policy's
 * SystemRootToken.  The comparison takes the same time wherever the texts
 * differ, as for any secret. */
static int is_root_token(lua_State *L, const tp_policy *p)
{
    size_t len;
    const char *token;
    if (lua_type(L, -1) != LUA_TSTRING) return 0;
    token = lua_tolstring(L, -1, &len);
    return len == p->root_len && CRYPTO_memcmp(token, p->root, len) == 0;
}

/* Reads the token at idx, each field once by its interned name (fields it
 * does not know cost nothing, and records come whole from stores, with
 * uuid, api_token and more).  The token is a decoded JWT (it has `claims`),
 * a record (it has created_at, expires_at or last_used_at), or else a
 * claims table (exp, iat, nbf, auth_time, as verify returns it).  Returns
 * 0, or 3 with the fail triple pushed for data that is no token. */
static int read_record(lua_State *L, int idx, const tp_policy *p, rec *r)
{
    int type, present = 0;
    memset(r, 0, sizeof *r);
    r->kind = KIND_API;
    r->can_create = 1;  /* Arvados' default scopes are ["all"] */
    if (get_field(L, idx, R_CLAIMS) == LUA_TTABLE) {
        r->jwt = 1;
        if (read_claims(L, -1, r, &present)) return 3;
        lua_pop(L, 1);
        return 0;
    }
    lua_pop(L, 1);
    if (record_time(L, idx, R_CREATED, HAS_CREATED, r, &r->created, &present) ||
        record_time(L, idx, R_EXPIRES, HAS_EXPIRES, r, &r->expires, &present) ||
        record_time(L, idx, R_LAST_USED, HAS_LAST_USED, r, &r->last_used, &present) ||
        record_time(L, idx, R_REFRESHES, HAS_REFRESHES, r, &r->refreshes, &present))
        return 3;
    if (!present) {
        if (read_claims(L, idx, r, &present)) return 3;
        if (present) {
            r->jwt = 1;
            return 0;
        }
    }

    type = get_field(L, idx, R_KIND);
    if (!absent(L, type, -1)) {
        size_t len;
        const char *name = type == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        char safe[40];
        int i;
        if (!name) return tp_fail(L, "malformed", "kind: not a string");
        for (i = 0; kind_names[i]; i++)
            if (strlen(kind_names[i]) == len && memcmp(kind_names[i], name, len) == 0) break;
        if (!kind_names[i])
            return tp_fail(L, "malformed", "kind: unknown kind \"%s\"", tp_printable(safe, name, len));
        r->kind = i;
    }
    lua_pop(L, 1);

    /* Only the configured SystemRootToken is exempt, whoever owns it. */
    if (p->root_len) {
        get_field(L, idx, R_API_TOKEN);
        if (is_root_token(L, p)) r->kind = KIND_SYSTEM_ROOT;
        lua_pop(L, 1);
    }

    type = get_field(L, idx, R_ADMIN);
    if (!absent(L, type, -1)) {
        if (type != LUA_TBOOLEAN) return tp_fail(L, "malformed", "owner_is_admin: not a boolean");
        r->admin = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);

    type = get_field(L, idx, R_SCOPES);
    if (!absent(L, type, -1)) {
        lua_Integer n;
        if (type != LUA_TTABLE) return tp_fail(L, "malformed", "scopes: not a list of strings");
        n = (lua_Integer)lua_rawlen(L, -1);
        r->can_create = 0;
        for (lua_Integer i = 1; i <= n; i++) {
            size_t slen;
            const char *scope;
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                return tp_fail(L, "malformed", "scopes: not a list of strings");
            scope = lua_tolstring(L, -1, &slen);
            r->can_create |= scope_allows_creating(scope, slen);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return 0;
}

/* ---- evaluation --------------------------------------------------------- */

/* Findings, in the order their reasons are listed. */
enum {
    F_NOT_YET_VALID = 1, F_EXPIRED = 2, F_REFRESHES = 4, F_SESSION_OVER = 8, F_IDLE = 16, F_EXCEEDS = 32,
    F_NO_EXPIRY = 64, F_REFRESH = 128
};
/* The findings that end a token: nothing else matters then. */
#define F_OVER (F_NOT_YET_VALID | F_EXPIRED | F_REFRESHES | F_SESSION_OVER)

enum { SRC_MAX, SRC_LOGIN };

typedef struct verdict {
    int state;
    unsigned findings;
    int has_expires, has_idle_warning, has_fix, has_policy_end;
    lua_Integer expires, remaining, idle_warning, idle_at, fix;
    lua_Integer end;  /* a record's own end: expires_at or refreshes_at, the earlier */
    lua_Integer limit, policy_end;  /* the lifetime rule and where it ends */
    int limit_src;
    int refresh_due, can_manage;
} verdict;

static void earliest(verdict *v, lua_Integer t)
{
    if (!v->has_expires || t < v->expires) v->expires = t;
    v->has_expires = 1;
}

static void judge_jwt(const tp_policy *p, const rec *r, lua_Integer now, verdict *v)
{
    int has_exp = (r->has & HAS_EXPIRES) != 0;
    if (has_exp) earliest(v, r->expires);
    if (p->max > 0) {
        v->limit = p->max;
        v->limit_src = SRC_MAX;
        if (r->has & HAS_IAT) {
            v->policy_end = tp_add_sat(r->iat, p->max);
            v->has_policy_end = 1;
            earliest(v, v->policy_end);
        }
        /* Kong's maximum_expiration idea: the lifetime the issuer gave,
         * or failing iat, what is left of it. */
        if (has_exp && (((r->has & HAS_IAT) && tp_sub_sat(r->expires, r->iat) > p->max) ||
                        tp_sub_sat(r->expires, now) > p->max))
            v->findings |= F_EXCEEDS;
        if (!has_exp) v->findings |= F_NO_EXPIRY;
    }
    /* TokenLifetime bounds the login session, whose start is auth_time:
     * refreshed access tokens do not extend it. */
    if (p->login > 0 && (r->has & HAS_AUTH_TIME)) {
        lua_Integer session_end = tp_add_sat(r->auth_time, p->login);
        earliest(v, session_end);
        if (session_end <= now) v->findings |= F_SESSION_OVER;
    }
    if ((r->has & HAS_NBF) && r->nbf > now) v->findings |= F_NOT_YET_VALID;
    if (has_exp && r->expires <= now) v->findings |= F_EXPIRED;
    v->state = (v->findings & F_NOT_YET_VALID) ? ST_NOT_YET_VALID
             : (v->findings & (F_EXPIRED | F_SESSION_OVER)) ? ST_EXPIRED
             : (v->findings & F_EXCEEDS) ? ST_EXCEEDS
             : (v->findings & F_NO_EXPIRY) ? ST_NO_EXPIRY : ST_VALID;
    v->can_manage = p->trusted;  /* an access token stands for a login */
}

static void judge_record(const tp_policy *p, const rec *r, lua_Integer now, verdict *v)
{
    int has_exp = (r->has & HAS_EXPIRES) != 0;
    int login = r->kind == KIND_LOGIN;
    int has_end = (r->has & (HAS_EXPIRES | HAS_REFRESHES)) != 0;
    if (has_exp) earliest(v, r->expires);
    /* Arvados 3.1+: a row is valid while refreshes_at is null or later
     * than now, so refreshes_at ends it as an expiry does. */
    if (r->has & HAS_REFRESHES) earliest(v, r->refreshes);
    v->end = v->expires;
    if (max_applies(p, r->kind, r->admin, has_exp)) {
        v->limit = p->max;
        v->limit_src = SRC_MAX;
    }
    /* TokenLifetime applies to admins' logins too; the shorter rule wins. */
    if (login && p->login > 0 && (!v->limit || p->login <= v->limit)) {
        v->limit = p->login;
        v->limit_src = SRC_LOGIN;
    }
    if (v->limit && (r->has & HAS_CREATED)) {
        v->policy_end = tp_add_sat(r->created, v->limit);
        v->has_policy_end = 1;
        earliest(v, v->policy_end);
    }
    if (has_exp && r->expires <= now) v->findings |= F_EXPIRED;
    if ((r->has & HAS_REFRESHES) && r->refreshes <= now) v->findings |= F_REFRESHES;
    if (login && p->idle > 0 && (r->has & (HAS_LAST_USED | HAS_CREATED))) {
        v->idle_at = tp_add_sat((r->has & HAS_LAST_USED) ? r->last_used : r->created, p->idle);
        v->idle_warning = tp_sub_sat(v->idle_at, p->idle < TP_IDLE_WARNING ? p->idle : TP_IDLE_WARNING);
        v->has_idle_warning = 1;
        if (v->idle_at <= now) v->findings |= F_IDLE;
    }
    if (v->limit) {
        /* Without created_at, the rake tasks' view: more than the limit left. */
        if (has_end && ((r->has & HAS_CREATED) ? v->end > v->policy_end : tp_sub_sat(v->end, now) > v->limit))
            v->findings |= F_EXCEEDS;
        if (!has_end) v->findings |= F_NO_EXPIRY;
    }
    v->state = (v->findings & (F_EXPIRED | F_REFRESHES)) ? ST_EXPIRED
             : (v->findings & F_IDLE) ? ST_IDLE
             : (v->findings & F_EXCEEDS) ? ST_EXCEEDS
             : (v->findings & F_NO_EXPIRY) ? ST_NO_EXPIRY : ST_VALID;
    if ((v->findings & (F_EXCEEDS | F_NO_EXPIRY)) && !(v->findings & (F_EXPIRED | F_REFRESHES))) {
        /* The expiry that makes the record comply, never in the past. */
        v->fix = v->has_policy_end ? (v->policy_end > now ? v->policy_end : now) : tp_add_sat(now, v->limit);
        v->has_fix = 1;
    }
    if (r->kind == KIND_SYSTEM_ROOT) {
        v->can_manage = 1;
    } else if (r->kind == KIND_ANONYMOUS || !r->can_create) {
        v->can_manage = 0;
    } else {
        /* docs: untrusted login tokens; arvados: with IssueTrustedTokens
         * off, every token but the system root's is refused. */
        v->can_manage = p->trusted || (p->compat == COMPAT_DOCS && !login);
    }
}

static void judge(const tp_policy *p, const rec *r, lua_Integer now, verdict *v)
{
    memset(v, 0, sizeof *v);
    if (r->jwt) judge_jwt(p, r, now, v);
    else judge_record(p, r, now, v);
    if (v->has_expires) {
        v->remaining = v->expires > now ? tp_sub_sat(v->expires, now) : 0;
        /* Rucio refreshes while exp - window < now < exp. */
        if (v->state == ST_VALID && p->refresh > 0 && v->remaining < p->refresh) {
            v->refresh_due = 1;
            v->findings |= F_REFRESH;
        }
    }
    if (v->findings & F_OVER)  /* nothing else matters then */
        v->findings &= F_OVER;
}

static const char *limit_name(int src)
{
    return src == SRC_LOGIN ? "login token lifetime (Login.TokenLifetime)"
                            : "maximum token lifetime (API.MaxTokenLifetime)";
}

/* The end of add_reason's pieces: a null pointer of the type va_arg reads
 * (a bare NULL may be an int 0, which is undefined as a variadic pointer). */
#define END_PIECES ((const char *)NULL)

/* Appends the pieces (an END_PIECES-terminated list) to the sentence being built
 * in buf and adds it to the reasons table at -1 as entry ++*n.  One string
 * is pushed per sentence: lua_pushfstring would push and concatenate each
 * piece, a third of an evaluation's time for a token with findings. */
static void add_reason(lua_State *L, int *n, ...)
{
    char buf[400];
    size_t len = 0;
    const char *piece;
    va_list ap;
    va_start(ap, n);
    while ((piece = va_arg(ap, const char *))) {
        size_t k = strlen(piece);
        if (k > sizeof buf - len) k = sizeof buf - len;
        memcpy(buf + len, piece, k);
        len += k;
    }
    va_end(ap);
    lua_pushlstring(L, buf, len);
    lua_rawseti(L, -2, ++*n);
}

/* Pushes the reasons of v, one sentence each, into the table at -1. */
static void push_reasons(lua_State *L, const tp_policy *p, const rec *r, lua_Integer now, const verdict *v)
{
    char t1[32], t2[32], s1[32], s2[32], s3[32];
    int n = 0;
    const char *again = r->jwt || r->kind == KIND_LOGIN ? "log in again" : "create a new token";
    if (v->findings & F_NOT_YET_VALID)
        add_reason(L, &n, "not valid before ", tp_format_utc(t1, r->nbf), " (in ",
                   tp_format_span_exact(s1, tp_sub_sat(r->nbf, now)),
                   "): wait, or check the clocks of the issuer and this host", END_PIECES);
    if (v->findings & F_EXPIRED)
        add_reason(L, &n, "expired at ", tp_format_utc(t1, r->expires), " (",
                   tp_format_span_exact(s1, tp_sub_sat(now, r->expires)), " ago): ", again, END_PIECES);
    if (v->findings & F_REFRESHES)
        add_reason(L, &n, "valid only until ", tp_format_utc(t1, r->refreshes), " (refreshes_at, ",
                   tp_format_span_exact(s1, tp_sub_sat(now, r->refreshes)),
                   " ago): Arvados checks it with the identity provider again before it accepts it", END_PIECES);
    if (v->findings & F_SESSION_OVER)
        add_reason(L, &n, "the login session began at ", tp_format_utc(t1, r->auth_time), ", ",
                   tp_format_span_exact(s1, tp_sub_sat(now, r->auth_time)), " ago, and the ", limit_name(SRC_LOGIN),
                   " is ", tp_format_span_exact(s2, p->login), ": log in again", END_PIECES);
    if (v->findings & F_IDLE) {
        lua_Integer since = tp_sub_sat(v->idle_at, p->idle);
        add_reason(L, &n, "unused since ", tp_format_utc(t1, since), " (",
                   tp_format_span_exact(s1, tp_sub_sat(now, since)), " ago), longer than the ",
                   tp_format_span_exact(s2, p->idle),
                   " idle timeout (Workbench.IdleTimeout): Workbench logs such a session out; revoke the token",
                   END_PIECES);
    }
    if (v->findings & F_EXCEEDS) {
        const char *limit = tp_format_span_exact(s2, v->limit);
        if (r->jwt && (r->has & HAS_IAT) && tp_sub_sat(r->expires, r->iat) > v->limit)
            add_reason(L, &n, "issued for ", tp_format_span_exact(s1, tp_sub_sat(r->expires, r->iat)),
                       " (iat to exp), longer than the ", limit_name(v->limit_src), " of ", limit,
                       ": have the issuer limit its tokens to ", limit, END_PIECES);
        else if (r->jwt)
            add_reason(L, &n, "expires in ", tp_format_span_exact(s1, tp_sub_sat(r->expires, now)),
                       ", longer than the ", limit_name(v->limit_src), " of ", limit,
                       ": have the issuer limit its tokens to ", limit, END_PIECES);
        else if (r->has & HAS_CREATED)
            add_reason(L, &n, "lasts ", tp_format_span_exact(s1, tp_sub_sat(v->end, r->created)),
                       " from its creation at ", tp_format_utc(t1, r->created), ", longer than the ",
                       limit_name(v->limit_src), " of ", limit, ": set expires_at to ", tp_format_utc(t2, v->fix),
                       END_PIECES);
        else
            add_reason(L, &n, "expires in ", tp_format_span_exact(s1, tp_sub_sat(v->end, now)), ", more than the ",
                       limit_name(v->limit_src), " of ", limit, " from now: set expires_at to ",
                       tp_format_utc(t2, v->fix), END_PIECES);
    }
    if (v->findings & F_NO_EXPIRY) {
        if (r->jwt)
            add_reason(L, &n, "has no exp claim, but the ", limit_name(v->limit_src), " is ",
                       tp_format_span_exact(s1, v->limit), ": have the issuer set exp", END_PIECES);
        else
            add_reason(L, &n, "never expires, but the ", limit_name(v->limit_src), " is ",
                       tp_format_span_exact(s1, v->limit), ": set expires_at to ", tp_format_utc(t1, v->fix),
                       END_PIECES);
    }
    if (v->findings & F_REFRESH)
        add_reason(L, &n, "expires in ", tp_format_span_exact(s1, v->remaining), ", within the ",
                   tp_format_span_exact(s3, p->refresh), " refresh window: refresh it now", END_PIECES);
}

/* Sets field k of the verdict at t to the integer (or nil).  A fresh
 * verdict has no fields to clear.  A reused one is cleared only where it
 * holds a value: Lua 5.3 inserts a key even for nil, and the collector's
 * removal of such dead keys would have every later store rehash. */
static void set_time(lua_State *L, int t, int k, int has, lua_Integer value, int reused)
{
    if (!has) {
        int present;
        if (!reused) return;
        lua_pushvalue(L, UV_KEY(k));
        present = lua_rawget(L, t) != LUA_TNIL;
        lua_pop(L, 1);
        if (!present) return;
    }
    lua_pushvalue(L, UV_KEY(k));
    if (has) lua_pushinteger(L, value);
    else lua_pushnil(L);
    lua_rawset(L, t);
}

static void set_boolean(lua_State *L, int t, int k, int value)
{
    lua_pushvalue(L, UV_KEY(k));
    lua_pushboolean(L, value);
    lua_rawset(L, t);
}

/***
 * Judges a token against the policy.
 *
 * `token` is a compact JWT (decoded with `decode`), a decoded JWT
 * (`decode`'s result, read through its `claims`: exp, iat, nbf,
 * auth_time), a claims table (as `verify` returns), or a token record:
 * `created_at`, `expires_at`, `last_used_at`, `refreshes_at` (times:
 * integers or ISO-8601 text; nil or `tp.null` when absent), `kind` ("api"
 * by default, "login", "container", "system_root", "anonymous"),
 * `owner_is_admin`, `scopes`, and `api_token` (compared with the policy's
 * `system_root_token`: that one token is "system_root" whatever its kind).
 *
 * The verdict: `ok` (state is "valid"), `state` ("valid", "expired",
 * "not_yet_valid", "idle", "exceeds_max_lifetime", "no_expiry"),
 * `expires_at` (the earlier of the token's own expiry and the policy's),
 * `remaining` (seconds until then, 0 when past), `refresh_due`,
 * `idle_warning_at`, `can_manage_tokens`, `fix_expires_at` (the expiry
 * that makes a record comply) and `reasons` (sentences).  Absent times are
 * nil.
 * @function Policy:evaluate
 * @tparam table|string token
 * @tparam[opt] integer|string now default the clock
 * @tparam[opt] table verdict a verdict to fill in and return instead of a
 *   new one (bulk runs then allocate nothing per token)
 * @treturn table verdict, or the fail triple (`malformed`) for a token
 *   whose times or fields are not what they should be; for a string that
 *   does not decode, `decode`'s fail triple
 */
static int tp_policy_evaluate(lua_State *L)
{
    tp_policy *p = self_policy(L);
    lua_Integer now;
    int reused, t;
    rec r;
    verdict v;

    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, UV_DECODE);
        lua_pushvalue(L, 2);
        lua_call(L, 1, 3);
        if (lua_isnil(L, -3)) return 3;  /* decode's fail triple, as it is */
        lua_pop(L, 2);
        lua_replace(L, 2);
    }
    if (!lua_istable(L, 2)) luaL_typeerror(L, 2, "table or string");
    if (arg_now(L, 3, 3, &now)) return 3;
    reused = !lua_isnoneornil(L, 4);
    if (reused) luaL_checktype(L, 4, LUA_TTABLE);
    if (read_record(L, 2, p, &r)) return 3;
    judge(p, &r, now, &v);

    if (reused) {
        lua_settop(L, 4);
    } else {
        lua_settop(L, 3);
        lua_createtable(L, 0, 9);
    }
    t = lua_gettop(L);
    set_boolean(L, t, K_OK, v.state == ST_VALID);
    lua_pushvalue(L, UV_KEY(K_STATE));
    lua_pushvalue(L, UV_STATE(v.state));
    lua_rawset(L, t);
    set_time(L, t, K_EXPIRES, v.has_expires, v.expires, reused);
    set_time(L, t, K_REMAINING, v.has_expires, v.remaining, reused);
    set_boolean(L, t, K_REFRESH, v.refresh_due);
    set_time(L, t, K_IDLE_WARNING, v.has_idle_warning, v.idle_warning, reused);
    set_boolean(L, t, K_CAN_MANAGE, v.can_manage);
    set_time(L, t, K_FIX, v.has_fix, v.fix, reused);
    lua_pushvalue(L, UV_KEY(K_REASONS));
    if (reused && lua_rawget(L, t) == LUA_TTABLE) {
        for (lua_Integer i = (lua_Integer)lua_rawlen(L, -1); i > 0; i--) {
            lua_pushnil(L);
            lua_rawseti(L, -2, i);
        }
    } else if (reused && lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        v.findings = 0;  /* reasons = false: the caller wants no sentences */
    } else {
        if (reused) {
            lua_pop(L, 1);
            lua_pushvalue(L, UV_KEY(K_REASONS));
        }
        lua_createtable(L, v.findings ? 2 : 0, 0);
        lua_pushvalue(L, -1);
        lua_insert(L, -3);   /* reasons, key, reasons */
        lua_rawset(L, t);
    }
    if (v.findings) push_reasons(L, p, &r, now, &v);
    lua_pop(L, 1);
    lua_pushvalue(L, UV_VERDICT_MT);
    lua_setmetatable(L, t);
    return 1;
}

/***
 * The rake tasks' selection (db:check_long_lived_tokens and
 * db:fix_long_lived_tokens): with lifetime MaxTokenLifetime, or else
 * TokenLifetime, a token is long-lived when it has no expiry or expires
 * after now + lifetime.  Of those, the tasks skip (and so does this) a
 * token whose user is missing (`owner_uuid` is `tp.null`: the tasks print
 * a warning for it), and the tokens of the system root user
 * (`-tpzed-000000000000000` in `owner_uuid`) and of the anonymous user
 * (`-tpzed-anonymouspublic`).  The compat mode does not matter here: the
 * tasks are code.
 * @function Policy:long_lived
 * @tparam table token a record (or a JWT, read through exp)
 * @tparam[opt] integer|string now default the clock
 * @treturn boolean selected
 * @treturn integer now + lifetime, the expiry the fix task sets
 * @treturn ?string why a token the tasks' query finds is skipped:
 *   "invalid_user", "system_root" or "anonymous"; nil otherwise
 * @return or the fail triple: `no_policy` when neither lifetime is set,
 *   `malformed` for a token whose fields are not what they should be
 */
static int tp_policy_long_lived(lua_State *L)
{
    tp_policy *p = self_policy(L);
    lua_Integer now, lifetime, until;
    const char *skip = NULL;
    int type;
    rec r;
    luaL_checktype(L, 2, LUA_TTABLE);
    if (arg_now(L, 3, 3, &now)) return 3;
    lifetime = p->max > 0 ? p->max : p->login;
    if (lifetime <= 0)
        return tp_fail(L, "no_policy", "No expiration policy set (API.MaxTokenLifetime nor "
                       "Login.TokenLifetime is set), nothing to do.");
    if (read_record(L, 2, p, &r)) return 3;
    until = tp_add_sat(now, lifetime);
    if ((r.has & HAS_EXPIRES) && r.expires <= until) {
        lua_pushboolean(L, 0);
        lua_pushinteger(L, until);
        return 2;
    }
    type = get_field(L, 2, R_OWNER);
    if (type == LUA_TSTRING) {
        size_t len;
        const char *owner = lua_tolstring(L, -1, &len);
        skip = owner_is_system_root(owner, len) ? "system_root"
             : owner_is_anonymous(owner, len) ? "anonymous" : NULL;
    } else if (tp_is_null(L, -1)) {
        skip = "invalid_user";  /* the user row is missing */
    }
    lua_pop(L, 1);
    lua_pushboolean(L, skip == NULL);
    lua_pushinteger(L, until);
    if (!skip) return 2;
    lua_pushstring(L, skip);
    return 3;
}

/* ---- the verdict's __tostring ------------------------------------------- */

/* Reads integer field k of the table at t into *out; 1 when present. */
static int get_integer(lua_State *L, int t, const char *k, lua_Integer *out)
{
    int ok;
    lua_getfield(L, t, k);
    *out = lua_tointegerx(L, -1, &ok);
    lua_pop(L, 1);
    return ok;
}

static int tp_verdict__tostring(lua_State *L)
{
    char state[40], when[32], span[32], fix[32];
    lua_Integer expires, remaining, t;
    int has_expires, has_remaining, refresh, manage;
    luaL_Buffer b;
    size_t len = 0;
    const char *s;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getfield(L, 1, "state") == LUA_TSTRING) {
        s = lua_tolstring(L, -1, &len);
        tp_printable(state, s, len);
    } else {
        strcpy(state, "?");
    }
    lua_pop(L, 1);
    has_expires = get_integer(L, 1, "expires_at", &expires);
    has_remaining = get_integer(L, 1, "remaining", &remaining);
    lua_getfield(L, 1, "refresh_due");
    refresh = lua_toboolean(L, -1);
    lua_getfield(L, 1, "can_manage_tokens");
    manage = lua_toboolean(L, -1);
    lua_getfield(L, 1, "reasons");  /* 4 */
    if (!lua_istable(L, 4)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "tokenpolicy.Verdict: ");
    luaL_addstring(&b, state);
    if (has_expires) {
        luaL_addstring(&b, ", expires ");
        luaL_addstring(&b, tp_format_utc(when, expires));
        if (has_remaining) {
            luaL_addstring(&b, " (");
            luaL_addstring(&b, remaining > 0 ? tp_format_span(span, remaining) : "none");
            luaL_addstring(&b, " left)");
        }
    } else {
        luaL_addstring(&b, ", never expires");
    }
    if (refresh) luaL_addstring(&b, ", refresh due");
    if (get_integer(L, 1, "idle_warning_at", &t)) {
        luaL_addstring(&b, ", idle warning at ");
        luaL_addstring(&b, tp_format_utc(when, t));
    }
    if (!manage) luaL_addstring(&b, ", cannot manage tokens");
    if (get_integer(L, 1, "fix_expires_at", &t)) {
        luaL_addstring(&b, ", fix: expires_at ");
        luaL_addstring(&b, tp_format_utc(fix, t));
    }
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, 4); i++) {
        int is_string = lua_rawgeti(L, 4, i) == LUA_TSTRING;
        s = lua_tolstring(L, -1, &len);
        lua_pop(L, 1);  /* the buffer may use the stack top; the string */
        if (!is_string) continue;  /* stays referenced by the reasons */
        luaL_addstring(&b, "\n  - ");
        luaL_addlstring(&b, s, len);
    }
    luaL_pushresult(&b);
    return 1;
}

void tp_open_policy(lua_State *L)
{
    static const luaL_Reg policy_meta[] = {
        { "__tostring", tp_policy__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg verdict_meta[] = {
        { "__tostring", tp_verdict__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg methods[] = {
        { "evaluate", tp_policy_evaluate },
        { "clamp", tp_policy_clamp },
        { "login_expiry", tp_policy_login_expiry },
        { "long_lived", tp_policy_long_lived },
        { "settings", tp_policy_settings },
        { NULL, NULL }
    };
    static const luaL_Reg functions[] = {
        { "duration", tp_policy_duration },
        { "policy", tp_policy_new },
        { NULL, NULL }
    };
    static const luaL_Reg settings_meta[] = { { "__tostring", tp_settings__tostring }, { NULL, NULL } };
    int i;
    tp_register_class(L, TP_SETTINGS_CLASS, settings_meta, NULL, 0);
    tp_register_class(L, TP_VERDICT_CLASS, verdict_meta, NULL, 0);
    luaL_checkstack(L, UV_COUNT, "tokenpolicy upvalues");
    for (i = 0; verdict_keys[i]; i++)
        lua_pushstring(L, verdict_keys[i]);
    for (i = 0; state_names[i]; i++)
        lua_pushstring(L, state_names[i]);
    for (i = 0; record_fields[i]; i++)
        lua_pushstring(L, record_fields[i]);
    luaL_getmetatable(L, TP_VERDICT_CLASS);
    /* The class is registered twice: first bare, so that its metatable
     * exists and the methods can hold it as an upvalue for self_policy,
     * then with everything (the helper fills the existing metatable). */
    tp_register_class(L, TP_POLICY_CLASS, policy_meta, NULL, 0);
    luaL_getmetatable(L, TP_POLICY_CLASS);
    /* decode is in the module table already (jwt.c registers first). */
    lua_getfield(L, -1 - UV_COUNT + 1, "decode");
    if (!lua_iscfunction(L, -1)) luaL_error(L, "tokenpolicy: decode must be registered before the policy");
    tp_register_class(L, TP_POLICY_CLASS, policy_meta, methods, UV_COUNT);
    luaL_setfuncs(L, functions, 0);
}

/* For the verifier: the state the policy at idx gives a claims set whose
 * times are given as integers, judged as Policy:evaluate judges a claims
 * table (with none of the four times it is an empty record). */
const char *tp_policy_judge_times(lua_State *L, int idx, unsigned has, lua_Integer exp, lua_Integer iat,
                                  lua_Integer nbf, lua_Integer auth_time, lua_Integer now)
{
    const tp_policy *p = check_policy(L, idx);
    rec r;
    verdict v;
    memset(&r, 0, sizeof r);
    r.kind = KIND_API;
    r.can_create = 1;
    r.jwt = has != 0;
    if (has & TP_TIME_EXP) { r.has |= HAS_EXPIRES; r.expires = exp; }
    if (has & TP_TIME_IAT) { r.has |= HAS_IAT; r.iat = iat; }
    if (has & TP_TIME_NBF) { r.has |= HAS_NBF; r.nbf = nbf; }
    if (has & TP_TIME_AUTH) { r.has |= HAS_AUTH_TIME; r.auth_time = auth_time; }
    judge(p, &r, now, &v);
    return v.state == ST_VALID ? NULL : state_names[v.state];
}
