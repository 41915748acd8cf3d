/* The Redis backend of the denylist: a tokenpolicy.Denylist made from a
 * redis:// or rediss:// URL keeps its entries in the same C hash table as
 * a file denylist (denylist.c), and this file keeps that view in step with
 * a Redis server shared by a fleet.
 *
 * Data model (docs/denylist.md, "Redis"): a sorted set <prefix>deny of
 * jti scored by exp, the whole list; a stream <prefix>log of additions
 * (fields j and e), capped with MAXLEN ~, for syncs that cost O(changes).
 * Every exchange is one MULTI/EXEC, so what a sync reads is consistent
 * (the set and the stream id it is current to), and every exchange also
 * removes the expired members (ZREMRANGEBYSCORE -inf now), so entries
 * leave Redis at their exp with no admin action.
 *
 * The exchange is sans-IO: a request is the complete RESP text, formatted
 * by hiredis, from AUTH/SELECT to a final QUIT (the server closes after
 * its last reply, so a caller reads to the end of the stream), and an
 * answer is parsed whole by hiredis' reader before the view changes, so a
 * failed or cut answer changes nothing (fail-static).  HAProxy drives it
 * over its own cosockets (sync_request / sync_apply); scripts and the
 * command line use the blocking transport below (poll-bounded connect and
 * I/O, OpenSSL for rediss).  No RESP is written or parsed here by hand.
 *
 * The request itself says what it is: its MULTI starts with an ECHO of a
 * tag ("tokenpolicy sync full", "tokenpolicy sync since <id>", ...), so an
 * answer is applied by what it carries, not by what the object expects.
 *
 * Every buffer, descriptor, TLS object and reply a call holds sits in a
 * work userdata (to-be-closed, __gc) so a Lua error leaks nothing.  The
 * password lives in C memory owned by the link userdata, wiped when it is
 * collected, and is never formatted into a message. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "tp.h"

#define TP_REDIS_LINK_CLASS "tokenpolicy.RedisLink"
#define TP_REDIS_WORK_CLASS "tokenpolicy.RedisWork"

#define RD_DEFAULT_PORT 6379
#define RD_DEFAULT_PREFIX "tp:"
#define RD_MAX_PREFIX 64
#define RD_MAX_HOST 255
#define RD_MAX_USER 128
#define RD_MAX_PASSWORD 1024
/* Stream entries one incremental sync asks for. */
#define RD_BATCH 10000
/* The stream is capped near this many additions by default. */
#define RD_LOG_MAX 100000
/* The most an answer may hold: a full sync of a few million entries. */
#define RD_MAX_ANSWER ((size_t)512 * 1024 * 1024)
#define RD_MAX_REPLIES 16
#define RD_TAG "tokenpolicy "

/* ---- the link: where the list lives, and how far the view is synced ---- */

typedef struct rlink {
    int tls, port;
    lua_Integer db;
    char host[RD_MAX_HOST + 1];
    char user[RD_MAX_USER + 1];
    char prefix[RD_MAX_PREFIX + 1];
    char *password;         /* malloc'd, wiped and freed by __gc; NULL: none */
    size_t password_len;
    char *ca_file;          /* malloc'd; NULL: the system store */
    long connect_ms, io_ms;
    lua_Integer log_max;
    int full_due;           /* the next sync reads the whole set */
    char last_id[48];       /* the stream id the view is current to */
} rlink;

/* Wipes the password and frees what the link holds (idempotent). */
static void rlink_clear(rlink *r)
{
    if (r->password) {
        OPENSSL_cleanse(r->password, r->password_len);
        free(r->password);
        r->password = NULL;
    }
    free(r->ca_file);
    r->ca_file = NULL;
}

static int rlink__gc(lua_State *L)
{
    rlink_clear((rlink *)luaL_checkudata(L, 1, TP_REDIS_LINK_CLASS));
    return 0;
}

static rlink *to_link(lua_State *L, int idx)
{
    return (rlink *)luaL_checkudata(L, idx, TP_REDIS_LINK_CLASS);
}

/* ---- the work userdata -------------------------------------------------- */

typedef struct rwork {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char *out;              /* the request (holds the password: wiped) */
    size_t out_len, out_cap;
    char *in;               /* the answer */
    size_t in_len, in_cap;
    redisReader *reader;
    redisReply *reply[RD_MAX_REPLIES];
    int nreply;
    tp_dl_entry *ents;
    size_t nents, ents_cap;
} rwork;

static void rwork_clear(rwork *w)
{
    if (w->ssl) SSL_free(w->ssl);
    if (w->ctx) SSL_CTX_free(w->ctx);
    w->ssl = NULL;
    w->ctx = NULL;
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->out) {
        OPENSSL_cleanse(w->out, w->out_cap);
        free(w->out);
    }
    w->out = NULL;
    w->out_len = w->out_cap = 0;
    free(w->in);
    w->in = NULL;
    w->in_len = w->in_cap = 0;
    for (int i = 0; i < w->nreply; i++) freeReplyObject(w->reply[i]);
    w->nreply = 0;
    if (w->reader) redisReaderFree(w->reader);
    w->reader = NULL;
    free(w->ents);
    w->ents = NULL;
    w->nents = w->ents_cap = 0;
}

static int rwork__gc(lua_State *L)
{
    rwork_clear((rwork *)luaL_checkudata(L, 1, TP_REDIS_WORK_CLASS));
    return 0;
}

/* Pushes a new, empty work (to-be-closed); call it before acquiring. */
static rwork *rwork_new(lua_State *L)
{
    rwork *w = (rwork *)tp_newuserdata(L, sizeof *w);
    memset(w, 0, sizeof *w);
    w->fd = -1;
    luaL_setmetatable(L, TP_REDIS_WORK_CLASS);
    tp_toclose(L, -1);
    return w;
}

static int grow(char **p, size_t *cap, size_t need)
{
    size_t n;
    char *q;
    if (*cap >= need) return 1;
    n = *cap ? *cap : 1024;
    while (n < need) n *= 2;
    if (!(q = (char *)malloc(n))) return 0;
    if (*p) {
        memcpy(q, *p, *cap);
        OPENSSL_cleanse(*p, *cap);  /* the request buffer holds the password */
        free(*p);
    }
    *p = q;
    *cap = n;
    return 1;
}

/* ---- requests ------------------------------------------------------------ */

/* Appends one command, formatted by hiredis; 0 when out of memory. */
static int command(rwork *w, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    int ok = n > 0 && grow(&w->out, &w->out_cap, w->out_len + (size_t)n);
    if (ok) {
        memcpy(w->out + w->out_len, cmd, (size_t)n);
        w->out_len += (size_t)n;
    }
    if (cmd) {
        if (n > 0) OPENSSL_cleanse(cmd, (size_t)n);
        redisFreeCommand(cmd);
    }
    return ok;
}

/* The same with NUL-terminated arguments (lens computed). */
static int command_s(rwork *w, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    return command(w, argc, argv, lens);
}

enum { RQ_FULL, RQ_SINCE, RQ_ADD, RQ_PURGE };

/* Fills w->out with a whole exchange of kind: AUTH and SELECT as
 * configured, MULTI, the tag, the expiry sweep, the kind's commands, EXEC
 * and QUIT.  jti/exp only for RQ_ADD.  0 when out of memory. */
static int build_request(const rlink *r, rwork *w, int kind, lua_Integer now, const char *jti, size_t jti_len,
                         lua_Integer exp)
{
    char deny[RD_MAX_PREFIX + 8], log[RD_MAX_PREFIX + 8], nowtxt[32], exptxt[32], maxtxt[32], tag[80],
        since[56], batch[16], dbtxt[32];
    int ok = 1;
    snprintf(deny, sizeof deny, "%sdeny", r->prefix);
    snprintf(log, sizeof log, "%slog", r->prefix);
    snprintf(nowtxt, sizeof nowtxt, "%lld", (long long)now);
    snprintf(exptxt, sizeof exptxt, "%lld", (long long)exp);
    snprintf(maxtxt, sizeof maxtxt, "%lld", (long long)r->log_max);
    snprintf(batch, sizeof batch, "%d", RD_BATCH);
    w->out_len = 0;
    if (r->password) {
        const char *argv[3];
        size_t lens[3];
        int argc = 0;
        argv[argc] = "AUTH";
        lens[argc++] = 4;
        if (r->user[0]) {
            argv[argc] = r->user;
            lens[argc++] = strlen(r->user);
        }
        argv[argc] = r->password;
        lens[argc++] = r->password_len;
        ok = ok && command(w, argc, argv, lens);
    }
    if (r->db != 0) {
        snprintf(dbtxt, sizeof dbtxt, "%lld", (long long)r->db);
        ok = ok && command_s(w, 2, (const char *[]){ "SELECT", dbtxt });
    }
    ok = ok && command_s(w, 1, (const char *[]){ "MULTI" });
    switch (kind) {
    case RQ_FULL: snprintf(tag, sizeof tag, RD_TAG "sync full"); break;
    case RQ_SINCE: snprintf(tag, sizeof tag, RD_TAG "sync since %s", r->last_id); break;
    case RQ_ADD: snprintf(tag, sizeof tag, RD_TAG "add"); break;
    default: snprintf(tag, sizeof tag, RD_TAG "purge"); break;
    }
    ok = ok && command_s(w, 2, (const char *[]){ "ECHO", tag });
    ok = ok && command_s(w, 4, (const char *[]){ "ZREMRANGEBYSCORE", deny, "-inf", nowtxt });
    switch (kind) {
    case RQ_FULL:
        ok = ok && command_s(w, 5, (const char *[]){ "ZRANGE", deny, "0", "-1", "WITHSCORES" });
        ok = ok && command_s(w, 6, (const char *[]){ "XREVRANGE", log, "+", "-", "COUNT", "1" });
        break;
    case RQ_SINCE:
        snprintf(since, sizeof since, "(%s", r->last_id);
        ok = ok && command_s(w, 6, (const char *[]){ "XRANGE", log, "-", "+", "COUNT", "1" });
        ok = ok && command_s(w, 6, (const char *[]){ "XRANGE", log, since, "+", "COUNT", batch });
        break;
    case RQ_ADD: {
        const char *zadd[] = { "ZADD", deny, "GT", exptxt, jti };
        size_t zlens[] = { 4, strlen(deny), 2, strlen(exptxt), jti_len };
        const char *xadd[] = { "XADD", log, "MAXLEN", "~", maxtxt, "*", "j", jti, "e", exptxt };
        size_t xlens[] = { 4, strlen(log), 6, 1, strlen(maxtxt), 1, 1, jti_len, 1, strlen(exptxt) };
        ok = ok && command(w, 5, zadd, zlens) && command(w, 10, xadd, xlens);
        break;
    }
    default: break;
    }
    ok = ok && command_s(w, 1, (const char *[]){ "EXEC" });
    ok = ok && command_s(w, 1, (const char *[]){ "QUIT" });
    return ok;
}

/* ---- answers ------------------------------------------------------------- */

/* Whether needle occurs in hay (memmem is a GNU extension). */
static int has_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 0 || m > n) return 0;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0) return 1;
    return 0;
}

/* Copies at most 100 printable bytes of a server's error text into out
 * (size >= 112), and nothing of it when it could hold the password (an
 * old server echoes the arguments of a command it does not know). */
static const char *server_text(const rlink *r, const redisReply *e, char *out)
{
    size_t n = e->len < 100 ? e->len : 100, used = 0;
    if (r->password && has_bytes(e->str, e->len, r->password, r->password_len))
        n = strcspn(e->str, " ");  /* the error's code word alone */
    if (has_bytes(e->str, e->len, "args beginning with", 19)) n = strcspn(e->str, "'");
    if (n > e->len) n = e->len;
    for (size_t i = 0; i < n; i++)
        out[used++] = (e->str[i] >= 0x20 && e->str[i] < 0x7f) ? e->str[i] : '?';
    if (n < e->len) {
        memcpy(out + used, "...", 3);
        used += 3;
    }
    out[used] = '\0';
    return out;
}

static int is_auth_error(const redisReply *e)
{
    return (e->len >= 6 && memcmp(e->str, "NOAUTH", 6) == 0) ||
           (e->len >= 9 && memcmp(e->str, "WRONGPASS", 9) == 0);
}

/* The fail triple for an error reply e; on_auth: e answers AUTH. */
static int fail_reply(lua_State *L, const rlink *r, const redisReply *e, int on_auth)
{
    char text[112];
    server_text(r, e, text);
    if (on_auth || is_auth_error(e))
        return tp_fail(L, "redis_auth", "redis %s:%d: authentication failed: %s", r->host, r->port, text);
    return tp_fail(L, "redis_error", "redis %s:%d: %s", r->host, r->port, text);
}

static int fail_protocol(lua_State *L, const rlink *r, const char *what)
{
    return tp_fail(L, "redis_protocol", "redis %s:%d: %s", r->host, r->port, what);
}

static int is_status(const redisReply *x, const char *s)
{
    return x->type == REDIS_REPLY_STATUS && x->len == strlen(s) && memcmp(x->str, s, x->len) == 0;
}

/* Parses the answer in [bytes, bytes + len) with hiredis' reader and
 * checks the exchange around the transaction.  Sets *exec to the EXEC
 * array.  Returns 0, or 3 with the fail triple pushed. */
static int parse_answer(lua_State *L, const rlink *r, rwork *w, const char *bytes, size_t len, redisReply **exec)
{
    int i = 0, nq = 0;
    void *x = NULL;
    if (!(w->reader = redisReaderCreate()))
        return tp_fail(L, "redis_protocol", "redis %s:%d: out of memory", r->host, r->port);
    if (len > 0 && redisReaderFeed(w->reader, bytes, len) != REDIS_OK)
        return fail_protocol(L, r, "unreadable answer");
    for (;;) {
        if (redisReaderGetReply(w->reader, &x) != REDIS_OK)
            return fail_protocol(L, r, "not a RESP answer");
        if (!x) break;
        if (w->nreply == RD_MAX_REPLIES) {
            freeReplyObject(x);
            return fail_protocol(L, r, "more replies than commands");
        }
        w->reply[w->nreply++] = (redisReply *)x;
    }
    /* Errors first: an answer cut after an error is explained by it. */
    for (int k = 0; k < w->nreply; k++)
        if (w->reply[k]->type == REDIS_REPLY_ERROR) return fail_reply(L, r, w->reply[k], r->password && k == 0);
    if (r->password) {
        if (i >= w->nreply) goto truncated;
        if (!is_status(w->reply[i++], "OK")) return fail_protocol(L, r, "unexpected answer to AUTH");
    }
    if (r->db != 0) {
        if (i >= w->nreply) goto truncated;
        if (!is_status(w->reply[i++], "OK")) return fail_protocol(L, r, "unexpected answer to SELECT");
    }
    if (i >= w->nreply) goto truncated;
    if (!is_status(w->reply[i++], "OK")) return fail_protocol(L, r, "unexpected answer to MULTI");
    while (i < w->nreply && is_status(w->reply[i], "QUEUED")) {
        i++;
        nq++;
    }
    if (i >= w->nreply) goto truncated;
    *exec = w->reply[i];
    if ((*exec)->type == REDIS_REPLY_NIL) return fail_protocol(L, r, "the transaction was aborted");
    if ((*exec)->type != REDIS_REPLY_ARRAY || (*exec)->elements != (size_t)nq || nq < 2)
        return fail_protocol(L, r, "unexpected answer to EXEC");
    for (size_t k = 0; k < (*exec)->elements; k++)
        if ((*exec)->element[k]->type == REDIS_REPLY_ERROR) return fail_reply(L, r, (*exec)->element[k], 0);
    if ((*exec)->element[0]->type != REDIS_REPLY_STRING)
        return fail_protocol(L, r, "unexpected answer to ECHO");
    return 0;
truncated:
    return fail_protocol(L, r, len == 0 ? "empty answer (the server closed the connection)" : "truncated answer");
}

/* Whether the ECHO tag of exec is tag (tag + "since " prefix match with
 * prefix set). */
static int tag_is(const redisReply *exec, const char *tag, int prefix)
{
    const redisReply *t = exec->element[0];
    size_t n = strlen(tag);
    return prefix ? t->len >= n && memcmp(t->str, tag, n) == 0 : t->len == n && memcmp(t->str, tag, n) == 0;
}

/* A stream id "ms-seq" as two numbers; 0 when it is not one. */
static int parse_id(const char *s, size_t len, uint64_t *ms, uint64_t *seq)
{
    char buf[48], *end;
    const char *dash;
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (buf[0] < '0' || buf[0] > '9' || !(dash = strchr(buf, '-')) || dash[1] < '0' || dash[1] > '9') return 0;
    errno = 0;
    *ms = strtoull(buf, &end, 10);
    if (end != dash || errno) return 0;
    *seq = strtoull(dash + 1, &end, 10);
    return *end == '\0' && errno == 0;
}

/* -1, 0 or 1 as stream id a is before, equal to or after b. */
static int id_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    uint64_t am = 0, as = 0, bm = 0, bs = 0;
    parse_id(a, alen, &am, &as);
    parse_id(b, blen, &bm, &bs);
    if (am != bm) return am < bm ? -1 : 1;
    if (as != bs) return as < bs ? -1 : 1;
    return 0;
}

/* An expiry as Redis wrote it: an integer, or a score in floating point
 * notation; 0 when it is neither. */
static int parse_exp(const char *s, size_t len, lua_Integer *out)
{
    char buf[64], *end;
    double d;
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    {
        long long v = strtoll(buf, &end, 10);
        if (*end == '\0' && errno == 0) {
            *out = (lua_Integer)v;
            return 1;
        }
    }
    d = strtod(buf, &end);
    if (*end != '\0' || !(d > -9.2e18 && d < 9.2e18)) return 0;
    *out = (lua_Integer)d;
    return 1;
}

/* Queues one entry for the merge; entries that cannot be a jti, or have
 * expired, are left out (they deny nothing).  0 when out of memory. */
static int queue_entry(rwork *w, const char *jti, size_t len, const char *exp, size_t exp_len, lua_Integer now)
{
    lua_Integer e;
    if (!tp_denylist_valid_jti(jti, len) || !parse_exp(exp, exp_len, &e) || e <= now) return 1;
    if (w->nents == w->ents_cap) {
        size_t cap = w->ents_cap ? w->ents_cap * 2 : 64;
        tp_dl_entry *p = (tp_dl_entry *)realloc(w->ents, cap * sizeof *p);
        if (!p) return 0;
        w->ents = p;
        w->ents_cap = cap;
    }
    w->ents[w->nents].jti = jti;
    w->ents[w->nents].len = len;
    w->ents[w->nents].exp = e;
    w->nents++;
    return 1;
}

/* Queues the j and e fields of a stream entry [id, [field, value...]]. */
static int queue_stream_entry(rwork *w, const redisReply *ent, lua_Integer now)
{
    const redisReply *fields, *j = NULL, *e = NULL;
    if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 || ent->element[0]->type != REDIS_REPLY_STRING)
        return -1;
    fields = ent->element[1];
    if (fields->type != REDIS_REPLY_ARRAY || fields->elements % 2 != 0) return -1;
    for (size_t k = 0; k + 1 < fields->elements; k += 2) {
        const redisReply *name = fields->element[k], *value = fields->element[k + 1];
        if (name->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING) return -1;
        if (name->len == 1 && name->str[0] == 'j') j = value;
        if (name->len == 1 && name->str[0] == 'e') e = value;
    }
    if (!j || !e) return 1;  /* not one of ours: ignored */
    return queue_entry(w, j->str, j->len, e->str, e->len, now);
}

/* What a sync answer did. */
typedef struct sync_result {
    lua_Integer added, received;
    int more;           /* another sync should follow at once */
} sync_result;

static int oom(lua_State *L, const rlink *r)
{
    return tp_fail(L, "redis_protocol", "redis %s:%d: out of memory", r->host, r->port);
}

/* Applies a sync answer's EXEC array to the view of the denylist at dl,
 * all or nothing.  Returns 0 (res filled), or 3 with the fail triple. */
static int apply_sync(lua_State *L, int dl, rlink *r, rwork *w, const redisReply *exec, sync_result *res)
{
    lua_Integer now = (lua_Integer)time(NULL), added;
    const redisReply *a, *b;
    char new_id[48] = "0-0";
    int full;
    memset(res, 0, sizeof *res);
    if (tag_is(exec, RD_TAG "sync full", 0))
        full = 1;
    else if (tag_is(exec, RD_TAG "sync since ", 1))
        full = 0;
    else
        return fail_protocol(L, r, "not the answer to a sync request");
    if (exec->elements != 4 || exec->element[1]->type != REDIS_REPLY_INTEGER)
        return fail_protocol(L, r, "unexpected answer to a sync");
    a = exec->element[2];
    b = exec->element[3];
    if (a->type != REDIS_REPLY_ARRAY || b->type != REDIS_REPLY_ARRAY)
        return fail_protocol(L, r, "unexpected answer to a sync");
    if (full) {
        /* a: member, score, member, score...; b: the stream's last entry */
        if (a->elements % 2 != 0) return fail_protocol(L, r, "odd ZRANGE answer");
        for (size_t k = 0; k < a->elements; k += 2) {
            const redisReply *m = a->element[k], *s = a->element[k + 1];
            if (m->type != REDIS_REPLY_STRING || s->type != REDIS_REPLY_STRING)
                return fail_protocol(L, r, "unexpected ZRANGE answer");
            if (!queue_entry(w, m->str, m->len, s->str, s->len, now)) return oom(L, r);
        }
        res->received = (lua_Integer)(a->elements / 2);
        if (b->elements > 0) {
            const redisReply *last = b->element[0];
            if (last->type != REDIS_REPLY_ARRAY || last->elements < 1 || last->element[0]->type != REDIS_REPLY_STRING ||
                last->element[0]->len >= sizeof new_id)
                return fail_protocol(L, r, "unexpected XREVRANGE answer");
            memcpy(new_id, last->element[0]->str, last->element[0]->len);
            new_id[last->element[0]->len] = '\0';
        }
    } else {
        /* The id the request was made from, as its tag says. */
        const redisReply *t = exec->element[0];
        size_t skip = strlen(RD_TAG "sync since ");
        size_t idlen = t->len - skip;
        uint64_t ms, seq;
        if (idlen >= sizeof new_id || !parse_id(t->str + skip, idlen, &ms, &seq))
            return fail_protocol(L, r, "bad sync tag");
        memcpy(new_id, t->str + skip, idlen);
        new_id[idlen] = '\0';
        if (b->elements == 0 && a->elements == 0) {
            /* No stream: Redis lost it (a restart without persistence),
             * unless it never had one. */
            if (strcmp(new_id, "0-0") != 0) {
                r->full_due = 1;
                res->more = 1;
                return 0;
            }
        } else {
            const redisReply *first = a->elements ? a->element[0] : NULL;
            if (!first || first->type != REDIS_REPLY_ARRAY || first->elements < 1 ||
                first->element[0]->type != REDIS_REPLY_STRING)
                return fail_protocol(L, r, "unexpected XRANGE answer");
            if (id_cmp(first->element[0]->str, first->element[0]->len, new_id, idlen) > 0) {
                /* Trimmed past us, or a new stream: what lies between is
                 * unknown, so the whole set is read. */
                r->full_due = 1;
                res->more = 1;
                return 0;
            }
            for (size_t k = 0; k < b->elements; k++) {
                const redisReply *ent = b->element[k];
                int q = queue_stream_entry(w, ent, now);
                if (q < 0) return fail_protocol(L, r, "unexpected stream entry");
                if (q == 0) return oom(L, r);
                if (ent->element[0]->len >= sizeof new_id) return fail_protocol(L, r, "unexpected stream id");
                memcpy(new_id, ent->element[0]->str, ent->element[0]->len);
                new_id[ent->element[0]->len] = '\0';
            }
            res->received = (lua_Integer)b->elements;
            res->more = b->elements >= RD_BATCH;
        }
    }
    added = tp_denylist_merge(L, dl, w->ents, w->nents);
    if (added < 0) return oom(L, r);
    res->added = added;
    memcpy(r->last_id, new_id, sizeof new_id);
    r->full_due = 0;
    return 0;
}

/* ---- the blocking transport ---------------------------------------------- */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline: 1 ready, 0 out of time, -1 error. */
static int wait_fd(int fd, short events, long deadline)
{
    for (;;) {
        struct pollfd p;
        long left = deadline - now_ms();
        int n;
        if (left <= 0) return 0;
        p.fd = fd;
        p.events = events;
        p.revents = 0;
        n = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
        if (n > 0) return 1;
        if (n < 0 && errno != EINTR) return -1;
    }
}

static int unavailable(lua_State *L, const rlink *r, const char *step, const char *why)
{
    return tp_fail(L, "redis_unavailable", "redis %s:%d: %s: %s", r->host, r->port, step, why);
}

static int timed_out(lua_State *L, const rlink *r, const char *step, long ms)
{
    char why[64];
    snprintf(why, sizeof why, "no answer within %ld ms", ms);
    return unavailable(L, r, step, why);
}

/* A non-blocking TCP connection to the link's host within connect_ms. */
static int net_connect(lua_State *L, const rlink *r, rwork *w, long deadline)
{
    struct addrinfo hints, *res = NULL, *ai;
    char port[16];
    int err = 0, rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof port, "%d", r->port);
    if ((rc = getaddrinfo(r->host, port, &hints, &res)) != 0)
        return unavailable(L, r, "resolving", gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
            close(fd);
            continue;
        }
        rc = wait_fd(fd, POLLOUT, deadline);
        if (rc == 1) {
            socklen_t len = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            if (err == 0) {
                w->fd = fd;
                break;
            }
        } else {
            err = rc == 0 ? ETIMEDOUT : errno;
        }
        close(fd);
        if (rc == 0) break;  /* out of time for every address */
    }
    freeaddrinfo(res);
    if (w->fd >= 0) return 0;
    if (err == ETIMEDOUT) return timed_out(L, r, "connecting", r->connect_ms);
    return unavailable(L, r, "connecting", strerror(err ? err : ECONNREFUSED));
}

/* The TLS handshake for rediss: the server's certificate must chain to
 * ca_file (or the system store) and name the host. */
static int tls_start(lua_State *L, const rlink *r, rwork *w, long deadline)
{
    struct in6_addr a6;
    struct in_addr a4;
    int is_ip = inet_pton(AF_INET, r->host, &a4) == 1 || inet_pton(AF_INET6, r->host, &a6) == 1;
    if (!(w->ctx = SSL_CTX_new(TLS_client_method())))
        return tp_fail(L, "redis_tls", "redis %s:%d: cannot create a TLS context", r->host, r->port);
    SSL_CTX_set_min_proto_version(w->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(w->ctx, SSL_VERIFY_PEER, NULL);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* The answer is checked whole by the reader, so a close without
     * close_notify after QUIT cannot hide a cut. */
    SSL_CTX_set_options(w->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    if (r->ca_file ? SSL_CTX_load_verify_locations(w->ctx, r->ca_file, NULL) != 1
                   : SSL_CTX_set_default_verify_paths(w->ctx) != 1)
        return tp_fail(L, "redis_tls", "redis %s:%d: cannot load the CA certificates%s%s", r->host, r->port,
                       r->ca_file ? " of " : "", r->ca_file ? r->ca_file : "");
    if (!(w->ssl = SSL_new(w->ctx)) || SSL_set_fd(w->ssl, w->fd) != 1)
        return tp_fail(L, "redis_tls", "redis %s:%d: cannot create a TLS connection", r->host, r->port);
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(w->ssl), r->host) != 1
              : SSL_set_tlsext_host_name(w->ssl, r->host) != 1 || SSL_set1_host(w->ssl, r->host) != 1)
        return tp_fail(L, "redis_tls", "redis %s:%d: cannot set the expected host name", r->host, r->port);
    for (;;) {
        int n = SSL_connect(w->ssl), e, rc;
        if (n == 1) return 0;
        e = SSL_get_error(w->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            rc = wait_fd(w->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
            if (rc == 0) return timed_out(L, r, "TLS handshake", r->connect_ms);
            if (rc < 0) return unavailable(L, r, "TLS handshake", strerror(errno));
            continue;
        }
        {
            long v = SSL_get_verify_result(w->ssl);
            if (v != X509_V_OK)
                return tp_fail(L, "redis_tls", "redis %s:%d: the server's certificate is not trusted: %s", r->host,
                               r->port, X509_verify_cert_error_string(v));
            return tp_fail(L, "redis_tls", "redis %s:%d: TLS handshake failed: %s", r->host, r->port,
                           ERR_peek_last_error() ? ERR_reason_error_string(ERR_peek_last_error())
                                                 : "the connection was closed");
        }
    }
}

/* Sends w->out whole within deadline. */
static int net_send(lua_State *L, const rlink *r, rwork *w, long deadline)
{
    size_t off = 0;
    while (off < w->out_len) {
        int rc;
        short want = POLLOUT;
        if (w->ssl) {
            int n = SSL_write(w->ssl, w->out + off, (int)(w->out_len - off)), e;
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            e = SSL_get_error(w->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                want = POLLIN;
            else if (e != SSL_ERROR_WANT_WRITE)
                return unavailable(L, r, "sending", "the TLS connection failed");
        } else {
            ssize_t n = send(w->fd, w->out + off, w->out_len - off, MSG_NOSIGNAL);
            if (n >= 0) {
                off += (size_t)n;
                continue;
            }
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return unavailable(L, r, "sending", strerror(errno));
        }
        rc = wait_fd(w->fd, want, deadline);
        if (rc == 0) return timed_out(L, r, "sending", r->io_ms);
        if (rc < 0) return unavailable(L, r, "sending", strerror(errno));
    }
    return 0;
}

/* Reads into w->in until the server closes the connection (after QUIT). */
static int net_receive(lua_State *L, const rlink *r, rwork *w, long deadline)
{
    for (;;) {
        int rc;
        short want = POLLIN;
        if (w->in_cap - w->in_len < 16384) {
            if (w->in_len + 16384 > RD_MAX_ANSWER)
                return fail_protocol(L, r, "the answer is over 512 MiB");
            if (!grow(&w->in, &w->in_cap, w->in_len + 16384)) return oom(L, r);
        }
        if (w->ssl) {
            int n = SSL_read(w->ssl, w->in + w->in_len, (int)(w->in_cap - w->in_len)), e;
            if (n > 0) {
                w->in_len += (size_t)n;
                continue;
            }
            e = SSL_get_error(w->ssl, n);
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) return 0;
            if (e == SSL_ERROR_WANT_WRITE)
                want = POLLOUT;
            else if (e != SSL_ERROR_WANT_READ)
                return unavailable(L, r, "receiving", "the TLS connection failed");
        } else {
            ssize_t n = recv(w->fd, w->in + w->in_len, w->in_cap - w->in_len, 0);
            if (n > 0) {
                w->in_len += (size_t)n;
                continue;
            }
            if (n == 0) return 0;
            if (errno == EINTR) continue;
            if (errno == ECONNRESET && w->in_len > 0) return 0;  /* closed after QUIT's answer */
            if (errno != EAGAIN && errno != EWOULDBLOCK) return unavailable(L, r, "receiving", strerror(errno));
        }
        rc = wait_fd(w->fd, want, deadline);
        if (rc == 0) return timed_out(L, r, "waiting for the answer", r->io_ms);
        if (rc < 0) return unavailable(L, r, "receiving", strerror(errno));
    }
}

static int exchange_io(lua_State *L, const rlink *r, rwork *w)
{
    long deadline = now_ms() + r->connect_ms;
    int rc;
    if ((rc = net_connect(L, r, w, deadline)) != 0) return rc;
    if (r->tls && (rc = tls_start(L, r, w, deadline)) != 0) return rc;
    deadline = now_ms() + r->io_ms;
    if ((rc = net_send(L, r, w, deadline)) != 0) return rc;
    return net_receive(L, r, w, deadline);
}

/* One whole blocking exchange of w->out; the answer ends up in w->in.
 * OpenSSL writes to the socket with write(2), so a server gone mid-way
 * would raise SIGPIPE and end a process that has not ignored it (a
 * script, the command line): it is blocked for the exchange, and one it
 * raised is taken back before the mask is restored.  The exchange raises
 * no Lua error between the two, so the mask is always restored. */
static int exchange(lua_State *L, const rlink *r, rwork *w)
{
    sigset_t pipe, old, pending;
    int rc, was_pending = 0;
    if (!r->tls) return exchange_io(L, r, w);  /* send() has MSG_NOSIGNAL */
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old);
    if (sigpending(&pending) == 0) was_pending = sigismember(&pending, SIGPIPE) == 1;
    rc = exchange_io(L, r, w);
    if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        const struct timespec zero = { 0, 0 };
        int got;
        do got = sigtimedwait(&pipe, NULL, &zero);
        while (got < 0 && errno == EINTR);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ---- the URL and the options --------------------------------------------- */

int tp_redis_url(const char *s, size_t len)
{
    return (len >= 8 && memcmp(s, "redis://", 8) == 0) || (len >= 9 && memcmp(s, "rediss://", 9) == 0);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s + len) into out (cap bytes, NUL added); the
 * decoded length, or -1 when it is not valid or too long. */
static long pct_decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int h, l;
            if (i + 2 >= len) return -1;
            h = hexval((unsigned char)s[i + 1]);
            l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0) return -1;
            c = h * 16 + l;
            i += 2;
        }
        if (n + 1 >= cap) return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return (long)n;
}

static int bad_url(lua_State *L, const char *why)
{
    /* The URL itself is never shown: it may hold a password. */
    return tp_fail(L, "malformed", "denylist URL: %s", why);
}

static int set_password(lua_State *L, rlink *r, const char *p, size_t len)
{
    if (len == 0) return bad_url(L, "the password is empty");
    if (len > RD_MAX_PASSWORD) return bad_url(L, "the password is over 1024 bytes");
    if (!(r->password = (char *)malloc(len))) return luaL_error(L, "out of memory");
    memcpy(r->password, p, len);
    r->password_len = len;
    return 0;
}

/* Parses the URL into r.  Returns 0, or 3 with the fail triple pushed. */
static int parse_url(lua_State *L, rlink *r, const char *url, size_t len)
{
    const char *p = url, *end = url + len, *auth_end, *at = NULL, *host, *host_end, *q;
    char scratch[RD_MAX_PASSWORD + 1];
    if (memchr(url, '\0', len)) return bad_url(L, "it contains a NUL byte");
    if (memchr(url, '#', len)) return bad_url(L, "a fragment (#) is not allowed");
    r->tls = url[5] == 's';
    p += r->tls ? 9 : 8;
    auth_end = p + strcspn(p, "/?");
    for (q = p; q < auth_end; q++)
        if (*q == '@') at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *user_end = colon ? colon : at;
        long n;
        if (user_end > p) {
            n = pct_decode(p, (size_t)(user_end - p), scratch, RD_MAX_USER + 1);
            if (n < 0 || memchr(scratch, '\0', (size_t)n)) return bad_url(L, "the user name is not valid");
            memcpy(r->user, scratch, (size_t)n + 1);
        }
        if (colon) {
            n = pct_decode(colon + 1, (size_t)(at - colon - 1), scratch, sizeof scratch);
            if (n < 0) {
                OPENSSL_cleanse(scratch, sizeof scratch);
                return bad_url(L, "the password is not valid percent-encoding or is over 1024 bytes");
            }
            if (set_password(L, r, scratch, (size_t)n) != 0) {
                OPENSSL_cleanse(scratch, sizeof scratch);
                return 3;
            }
        }
        OPENSSL_cleanse(scratch, sizeof scratch);
        p = at + 1;
    }
    host = p;
    if (*host == '[') {
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (!host_end) return bad_url(L, "an IPv6 address lacks its ']'");
        host++;
        p = host_end + 1;
    } else {
        host_end = memchr(host, ':', (size_t)(auth_end - host));
        if (!host_end) host_end = auth_end;
        p = host_end;
    }
    if (host_end == host) return bad_url(L, "the host is missing");
    if ((size_t)(host_end - host) > RD_MAX_HOST) return bad_url(L, "the host name is too long");
    for (q = host; q < host_end; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '.' ||
              *q == '-' || *q == '_' || *q == ':'))
            return bad_url(L, "the host has a character not allowed in a host name or address");
    memcpy(r->host, host, (size_t)(host_end - host));
    r->host[host_end - host] = '\0';
    r->port = RD_DEFAULT_PORT;
    if (p < auth_end) {
        long v = 0;
        if (*p != ':' || p + 1 == auth_end) return bad_url(L, "the port must be 1 to 65535");
        for (q = p + 1; q < auth_end; q++) {
            if (*q < '0' || *q > '9' || v > 65535) return bad_url(L, "the port must be 1 to 65535");
            v = v * 10 + (*q - '0');
        }
        if (v < 1 || v > 65535) return bad_url(L, "the port must be 1 to 65535");
        r->port = (int)v;
    }
    p = auth_end;
    r->db = 0;
    if (p < end && *p == '/') {
        const char *db_end = p + 1 + strcspn(p + 1, "?");
        lua_Integer v = 0;
        for (q = p + 1; q < db_end; q++) {
            if (*q < '0' || *q > '9' || v > 100000) return bad_url(L, "the database must be a number");
            v = v * 10 + (*q - '0');
        }
        r->db = v;
        p = db_end;
    }
    memcpy(r->prefix, RD_DEFAULT_PREFIX, sizeof RD_DEFAULT_PREFIX);
    if (p < end) {
        /* ?prefix=... is the one parameter */
        const char *value;
        long n;
        p++;
        if ((size_t)(end - p) < 7 || memcmp(p, "prefix=", 7) != 0 || memchr(p, '&', (size_t)(end - p)))
            return bad_url(L, "the one parameter allowed is prefix=");
        value = p + 7;
        n = pct_decode(value, (size_t)(end - value), scratch, RD_MAX_PREFIX + 1);
        if (n < 0) return bad_url(L, "the prefix must be at most 64 bytes");
        for (long k = 0; k < n; k++)
            if ((unsigned char)scratch[k] <= 0x20 || (unsigned char)scratch[k] >= 0x7f)
                return bad_url(L, "the prefix must be printable ASCII without spaces");
        memcpy(r->prefix, scratch, (size_t)n + 1);
    }
    return 0;
}

/* Reads the password from the file at path: its owner alone (and its
 * group) may read it; a last newline is dropped. */
static int read_password_file(lua_State *L, rlink *r, const char *path)
{
    char buf[RD_MAX_PASSWORD + 2];
    struct stat st;
    ssize_t n;
    size_t used = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), err;
    if (fd < 0) {
        err = errno;
        if (err == ENOENT) return tp_fail(L, "not_found", "redis password file %s does not exist", path);
        if (err == ELOOP) return tp_fail(L, "symlink", "redis password file %s is a symbolic link", path);
        return tp_fail(L, "io", "redis password file %s: %s", path, strerror(err));
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tp_fail(L, "io", "redis password file %s is not a regular file", path);
    }
    if (st.st_mode & 0007) {
        char mode[8];
        close(fd);
        snprintf(mode, sizeof mode, "%03o", (unsigned)(st.st_mode & 0777));
        return tp_fail(L, "insecure_permissions",
                       "redis password file %s can be read or written by others (mode %s): chmod o-rwx it", path,
                       mode);
    }
    while (used < sizeof buf && (n = read(fd, buf + used, sizeof buf - used)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            err = errno;
            close(fd);
            OPENSSL_cleanse(buf, sizeof buf);
            return tp_fail(L, "io", "redis password file %s: %s", path, strerror(err));
        }
        used += (size_t)n;
    }
    close(fd);
    if (used > 0 && buf[used - 1] == '\n') used--;
    if (used > 0 && buf[used - 1] == '\r') used--;
    if (used == 0 || used > RD_MAX_PASSWORD) {
        OPENSSL_cleanse(buf, sizeof buf);
        return tp_fail(L, "malformed", "redis password file %s must hold 1 to 1024 bytes", path);
    }
    n = set_password(L, r, buf, used);
    OPENSSL_cleanse(buf, sizeof buf);
    return (int)n;
}

/* A timeout option in seconds (fractions allowed), as milliseconds: the
 * one kind of option the shared readers do not cover (as in http.c). */
static long timeout_ms_of(lua_State *L, int arg, const char *name, long dflt_ms)
{
    long ms = dflt_ms;
    if (lua_type(L, arg) == LUA_TTABLE) {
        int t = lua_getfield(L, arg, name);
        if (t != LUA_TNIL) {
            lua_Number v = lua_tonumber(L, -1);
            if (t != LUA_TNUMBER || !(v > 0 && v <= 3600))
                luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a number of seconds in (0, 3600]", name));
            ms = (long)(v * 1000);
            if (ms < 1) ms = 1;
        }
        lua_pop(L, 1);
    }
    return ms;
}

int tp_redis_open(lua_State *L, int url_idx, int opts, int *sync)
{
    static const char *const options[] = { "password_file", "password_env", "connect_timeout", "timeout",
                                           "ca_file", "env", "sync", "log_max", NULL };
    size_t len;
    const char *url = lua_tolstring(L, url_idx, &len);
    const char *pw_file, *pw_env, *ca_file;
    rlink *r;
    int rc, has_env;
    tp_opts(L, opts, options);
    pw_file = tp_opt_string(L, opts, "password_file", NULL, NULL);
    pw_env = tp_opt_string(L, opts, "password_env", NULL, NULL);
    ca_file = tp_opt_string(L, opts, "ca_file", NULL, NULL);
    *sync = tp_opt_boolean(L, opts, "sync", 1);
    has_env = lua_type(L, opts) == LUA_TTABLE && lua_getfield(L, opts, "env") != LUA_TNIL;
    if (lua_type(L, opts) == LUA_TTABLE) {
        if (has_env && !lua_istable(L, -1)) luaL_argerror(L, opts, "env must be a table");
        lua_pop(L, 1);
    }
    if (pw_file && pw_env) luaL_argerror(L, opts, "password_file and password_env exclude each other");
    r = (rlink *)tp_newuserdata(L, sizeof *r);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, TP_REDIS_LINK_CLASS);
    r->connect_ms = timeout_ms_of(L, opts, "connect_timeout", 1000);
    r->io_ms = timeout_ms_of(L, opts, "timeout", 1000);
    r->log_max = tp_opt_integer(L, opts, "log_max", RD_LOG_MAX, 100);
    r->full_due = 1;
    memcpy(r->last_id, "0-0", 4);
    if ((rc = parse_url(L, r, url, len)) != 0) return rc;
    if ((pw_file || pw_env) && r->password)
        luaL_argerror(L, opts, "the URL has a password already: password_file and password_env exclude it");
    if (ca_file) {
        if (!r->tls) luaL_argerror(L, opts, "ca_file is for rediss:// URLs");
        if (!(r->ca_file = strdup(ca_file))) return luaL_error(L, "out of memory");
    }
    if (pw_file && (rc = read_password_file(L, r, pw_file)) != 0) return rc;
    if (pw_env) {
        const char *v;
        size_t vlen = 0;
        if (has_env) {
            lua_getfield(L, opts, "env");
            lua_getfield(L, -1, pw_env);
            v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vlen) : NULL;
            lua_pop(L, 2);  /* the env table keeps the string alive */
        } else {
            v = getenv(pw_env);
            vlen = v ? strlen(v) : 0;
        }
        if (!v || vlen == 0)
            return tp_fail(L, "not_found", "redis password: the environment variable %s is not set", pw_env);
        if ((rc = set_password(L, r, v, vlen)) != 0) return rc;
    }
    return 0;
}

void tp_redis_forget(lua_State *L, int link)
{
    rlink_clear(to_link(L, link));
}

void tp_redis_push_name(lua_State *L, int link)
{
    rlink *r = to_link(L, link);
    int v6 = strchr(r->host, ':') != NULL;
    lua_pushfstring(L, "%s://%s%s%s:%d/%I prefix %s", r->tls ? "rediss" : "redis", v6 ? "[" : "", r->host,
                    v6 ? "]" : "", r->port, r->db, r->prefix);
}

/* ---- the operations ------------------------------------------------------ */

/* A blocking exchange of kind, parsed: *exec is the EXEC array.  The work
 * is pushed (and stays on the stack).  Returns 0, or 3 (fail triple). */
static int run(lua_State *L, rlink *r, rwork *w, int kind, lua_Integer now, const char *jti, size_t len,
               lua_Integer exp, redisReply **exec)
{
    int rc;
    if (!build_request(r, w, kind, now, jti, len, exp)) return oom(L, r);
    if ((rc = exchange(L, r, w)) != 0) return rc;
    return parse_answer(L, r, w, w->in, w->in_len, exec);
}

int tp_redis_add(lua_State *L, int dl, int link, const char *jti, size_t len, lua_Integer exp)
{
    rlink *r = to_link(L, link);
    rwork *w = rwork_new(L);
    redisReply *exec = NULL;
    tp_dl_entry e;
    int rc = run(L, r, w, RQ_ADD, (lua_Integer)time(NULL), jti, len, exp, &exec);
    if (rc != 0) return rc;
    if (!tag_is(exec, RD_TAG "add", 0) || exec->elements != 4) return fail_protocol(L, r, "unexpected answer to add");
    e.jti = jti;
    e.len = len;
    e.exp = exp;
    if (tp_denylist_merge(L, dl, &e, 1) < 0) return oom(L, r);
    rwork_clear(w);
    lua_pushboolean(L, 1);
    return 1;
}

int tp_redis_purge(lua_State *L, int dl, int link, lua_Integer now)
{
    rlink *r = to_link(L, link);
    rwork *w = rwork_new(L);
    redisReply *exec = NULL;
    lua_Integer removed;
    int rc;
    tp_denylist_forget(L, dl, now);  /* the view first: that needs no server */
    if ((rc = run(L, r, w, RQ_PURGE, now, NULL, 0, 0, &exec)) != 0) return rc;
    if (!tag_is(exec, RD_TAG "purge", 0) || exec->elements != 2 || exec->element[1]->type != REDIS_REPLY_INTEGER)
        return fail_protocol(L, r, "unexpected answer to purge");
    removed = (lua_Integer)exec->element[1]->integer;
    rwork_clear(w);
    lua_pushinteger(L, removed);
    return 1;
}

int tp_redis_reload(lua_State *L, int dl, int link)
{
    rlink *r = to_link(L, link);
    lua_Integer added = 0;
    int top = lua_gettop(L);
    /* More rounds only when a batch was full or a full sync is due. */
    for (int round = 0; round < 64; round++) {
        rwork *w = rwork_new(L);
        redisReply *exec = NULL;
        sync_result res;
        int rc = run(L, r, w, r->full_due ? RQ_FULL : RQ_SINCE, (lua_Integer)time(NULL), NULL, 0, 0, &exec);
        if (rc == 0) rc = apply_sync(L, dl, r, w, exec, &res);
        if (rc != 0) {
            /* after an outage, the whole set again (merged): whatever the
             * server went through meanwhile, the view catches up on it */
            r->full_due = 1;
            return rc;
        }
        rwork_clear(w);
        lua_settop(L, top);
        added += res.added;
        if (!res.more) break;
    }
    lua_pushboolean(L, added > 0);
    lua_pushinteger(L, added);
    return 2;
}

int tp_redis_sync_request(lua_State *L, int link, int full)
{
    rlink *r = to_link(L, link);
    rwork *w;
    if (full) r->full_due = 1;  /* until a full answer has been applied */
    w = rwork_new(L);
    if (!build_request(r, w, r->full_due ? RQ_FULL : RQ_SINCE, (lua_Integer)time(NULL), NULL, 0, 0))
        return luaL_error(L, "out of memory");
    lua_pushlstring(L, w->out, w->out_len);
    rwork_clear(w);
    return 1;
}

int tp_redis_sync_apply(lua_State *L, int dl, int link, const char *bytes, size_t len)
{
    rlink *r = to_link(L, link);
    rwork *w = rwork_new(L);
    redisReply *exec = NULL;
    sync_result res;
    int rc = parse_answer(L, r, w, bytes, len, &exec);
    if (rc == 0) rc = apply_sync(L, dl, r, w, exec, &res);
    if (rc != 0) return rc;
    rwork_clear(w);
    lua_pushinteger(L, res.added);
    lua_pushinteger(L, res.received);
    lua_pushboolean(L, res.more);
    return 3;
}

int tp_redis_endpoint(lua_State *L, int link)
{
    rlink *r = to_link(L, link);
    lua_pushstring(L, r->host);
    lua_pushinteger(L, r->port);
    lua_pushboolean(L, r->tls);
    return 3;
}

void tp_open_redis(lua_State *L)
{
    static const luaL_Reg link_meta[] = { { "__gc", rlink__gc }, { NULL, NULL } };
    static const luaL_Reg work_meta[] = { { "__gc", rwork__gc }, { "__close", rwork__gc }, { NULL, NULL } };
    tp_register_class(L, TP_REDIS_LINK_CLASS, link_meta, NULL, 0);
    tp_register_class(L, TP_REDIS_WORK_CLASS, work_meta, NULL, 0);
}
