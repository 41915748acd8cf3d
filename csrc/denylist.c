/***
 * Denylists: the jti values of revoked tokens, kept in a journal file
 * that processes share (docs/denylist.md).
 * @module tokenpolicy.core
 */
/* A persistent jti denylist: a journal of "jti exp" lines shared by
 * processes.
 *
 * The entries live in a C hash table owned by the object (see dtable
 * below): the file as read kept as one buffer of jti bytes, a dense array
 * of entries pointing into it and an open-addressing index over them, so a
 * load allocates three blocks whatever the size of the list, and
 * contains() is one hash lookup.  A full load builds its table in the work
 * userdata and swaps it in only once complete.
 *
 * The file is a journal: add appends one line (O_APPEND, fsync), so an add
 * costs the same with ten entries or a million.  Only whole lines count: a
 * last line without its newline is a write cut short (a crash, a full
 * disk) and is ignored, and the next writer cuts it off before appending.
 * When the journal holds twice as many lines as entries (a jti added again
 * with a later expiry adds a line), and on purge, a writer compacts it:
 * the whole list to a synced temporary file renamed over the path.
 * Readers never lock.  A reader that loaded the file before remembers its
 * identity and how far it read: while the inode is the same and the file
 * only grew, reload reads the new lines alone; a new inode (a compaction)
 * or a shorter file is read whole.
 * Writers serialise on an flock of a separate lock file and, under it,
 * bring their entries up to date before writing, so no writer's entry is
 * lost.
 *
 * Every descriptor and buffer a call holds sits in a work userdata whose
 * __gc releases it (and removes a temporary file not yet renamed), so a Lua
 * error in the middle of a call leaks nothing. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "tp.h"

#define TP_DENYLIST_CLASS "tokenpolicy.Denylist"
#define TP_DENYLIST_WORK_CLASS "tokenpolicy.DenylistWork"
#define TP_DENYLIST_MAX_JTI 256
#define TP_DENYLIST_MAX_SIZE ((lua_Integer)64 * 1024 * 1024)

/* Bytes before the end of what was read that a reload compares. */
#define DL_TAIL 32
/* A journal of fewer lines is never compacted (add keeps it whatever the
 * duplicates). */
#define DL_COMPACT_MIN_LINES 1024

/* Slots of the user value table. */
enum { UV_PATH = 1, UV_DIR, UV_BASE, UV_LINK };
/* A Redis denylist's UV_PATH is its printable name (never a password)
 * and UV_LINK its link to Redis (redis.c); it has no UV_DIR or UV_BASE. */

/* ---- the entry table ---------------------------------------------------- */

/* Blocks of memory: small ones from malloc, large ones straight from mmap
 * with their pages mapped in by the same call.  That keeps a large load
 * independent of the state of the malloc heap (which, after a program
 * freed many small objects, may first walk them all), and it replaces a
 * page fault per page, which is costly above all in a virtual machine,
 * with one system call.  Only growth is needed: a block never shrinks. */
#define DL_BIG ((size_t)256 * 1024)

static void *blk_grow(void *p, size_t old, size_t size, int zero)
{
    void *q;
    if (size < DL_BIG) {
        if (zero) return p ? NULL : calloc(1, size);  /* zeroed blocks never grow */
        return realloc(p, size);
    }
    /* cppcheck-suppress invalidFunctionArg ; MAP_ANONYMOUS takes fd -1 (cppcheck's posix.cfg wants fd >= 0) */
    q = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (q == MAP_FAILED) return NULL;
    if (p) {
        memcpy(q, p, old);
        if (old >= DL_BIG)
            munmap(p, old);
        else
            free(p);
    }
    return q;
}

static void blk_free(void *p, size_t size)
{
    if (!p) return;
    if (size >= DL_BIG)
        munmap(p, size);
    else
        free(p);
}

/* An entry: its jti is bytes[off, off + len) of its table.  After a load,
 * bytes is the file as read (its expiries and newlines unused); adds append
 * to it and a purge packs it. */
typedef struct dentry {
    lua_Integer exp;
    uint32_t off, len;
} dentry;

/* A slot of the index: 1 + the index of an entry (0: empty) and the low 32
 * bits of the hash of its jti, which pick the home slot and spare most
 * byte comparisons. */
typedef struct dslot {
    uint32_t idx, hash;
} dslot;

/* Entries are appended in order, so their offsets increase with their
 * index.  The index probes linearly and keeps a load factor of at most
 * 1/2.  A table of zeroes is a valid empty table; slots is NULL until the
 * first reserve, which also draws the seed. */
typedef struct dtable {
    dentry *ents;
    dslot *slots;
    char *bytes;
    uint32_t n, ents_cap, mask;
    size_t bytes_used, bytes_cap;
    uint64_t seed[3];
} dtable;

static void dtable_free(dtable *t)
{
    blk_free(t->ents, (size_t)t->ents_cap * sizeof *t->ents);
    if (t->slots) blk_free(t->slots, ((size_t)t->mask + 1) * sizeof *t->slots);
    blk_free(t->bytes, t->bytes_cap);
    memset(t, 0, sizeof *t);
}

/* The 128-bit product of a and b, its halves xored together. */
#if defined(__SIZEOF_INT128__)
__extension__ typedef unsigned __int128 dl_u128;
static uint64_t fold_mul(uint64_t a, uint64_t b)
{
    dl_u128 r = (dl_u128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}
#else
static uint64_t fold_mul(uint64_t a, uint64_t b)
{
    uint64_t al = a & 0xffffffffu, ah = a >> 32, bl = b & 0xffffffffu, bh = b >> 32;
    uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    uint64_t mid = (ll >> 32) + (lh & 0xffffffffu) + (hl & 0xffffffffu);
    uint64_t lo = (ll & 0xffffffffu) | (mid << 32);
    uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
    return lo ^ hi;
}
#endif

static uint64_t load64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#define DL_GOLDEN UINT64_C(0x9e3779b97f4a7c15)

/* A fast keyed hash, not a cryptographic one: every 16-byte block goes
 * through a 64x64->128 multiply with secret words of the seed, so without
 * the seed nobody can choose jtis that collide. */
static uint64_t jti_hash(const dtable *t, const char *s, size_t len)
{
    uint64_t h = t->seed[0] ^ ((uint64_t)len * DL_GOLDEN);
    char tail[16];
    for (; len >= 16; s += 16, len -= 16)
        h = fold_mul(load64(s) ^ t->seed[1], load64(s + 8) ^ t->seed[2] ^ h);
    memset(tail, 0, sizeof tail);
    memcpy(tail, s, len);
    h = fold_mul(load64(tail) ^ t->seed[1], load64(tail + 8) ^ t->seed[2] ^ h);
    return fold_mul(h ^ t->seed[0], DL_GOLDEN ^ t->seed[1]);
}

/* Each table draws its own seed; without the kernel's randomness, the
 * clock, the pid and an address are mixed (splitmix64 steps). */
static void draw_seed(dtable *t)
{
    if (getrandom(t->seed, sizeof t->seed, GRND_NONBLOCK) != (ssize_t)sizeof t->seed) {
        struct timespec ts;
        uint64_t x;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
            (uint64_t)(uintptr_t)t;
        for (int i = 0; i < 3; i++) {
            uint64_t z = (x += DL_GOLDEN);
            z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
            t->seed[i] = z ^ (z >> 31);
        }
    }
}

/* Looks jti up: returns 1 + its entry's index, or 0.  With an index,
 * *hash gets the jti's hash and *slot its slot or the empty slot where it
 * would go. */
static uint32_t dtable_find(const dtable *t, const char *s, size_t len, uint64_t *hash, uint32_t *slot)
{
    uint32_t i, h32;
    if (!t->slots) return 0;
    *hash = jti_hash(t, s, len);
    h32 = (uint32_t)*hash;
    for (i = h32 & t->mask;; i = (i + 1) & t->mask) {
        const dslot *sl = &t->slots[i];
        if (sl->idx == 0) break;
        if (sl->hash == h32) {
            const dentry *e = &t->ents[sl->idx - 1];
            if (e->len == len && memcmp(t->bytes + e->off, s, len) == 0) {
                *slot = i;
                return sl->idx;
            }
        }
    }
    *slot = i;
    return 0;
}

/* Places entry idx (1-based) with hash h in the index, which has room. */
static void place(dtable *t, uint32_t idx, uint32_t h)
{
    uint32_t i = h & t->mask;
    while (t->slots[i].idx != 0) i = (i + 1) & t->mask;
    t->slots[i].idx = idx;
    t->slots[i].hash = h;
}

/* The next capacity of a block of cap elements of size bytes each:
 * double while small, a quarter more once the block is large (a list
 * loaded whole from a big file grows by a few adds at a time, and doubling
 * its blocks would double its memory for them). */
static size_t grown(size_t cap, size_t size)
{
    return cap * size >= DL_BIG ? cap + cap / 4 : cap * 2;
}

/* Makes room for more entries holding bytes more jti bytes, so that as
 * many inserts then allocate nothing.  Returns 0 when out of memory; the
 * table stays valid (and unchanged in content) either way. */
static int dtable_reserve(dtable *t, size_t more, size_t bytes)
{
    size_t need, cap;
    if (more > UINT32_MAX / 4 - t->n || bytes > UINT32_MAX - t->bytes_used) return 0;
    need = t->n + more;
    if (need > t->ents_cap) {
        dentry *p;
        cap = t->ents_cap > need / 2 ? grown(t->ents_cap, sizeof *p) : need;
        if (cap < need) cap = need;
        if (cap > UINT32_MAX / 4) cap = need;
        p = (dentry *)blk_grow(t->ents, (size_t)t->ents_cap * sizeof *p, cap * sizeof *p, 0);
        if (!p) return 0;
        t->ents = p;
        t->ents_cap = (uint32_t)cap;
    }
    if (t->bytes_cap - t->bytes_used < bytes) {
        char *p;
        cap = t->bytes_cap > 1024 ? grown(t->bytes_cap, 1) : 2048;
        if (cap - t->bytes_used < bytes) cap = t->bytes_used + bytes;
        if (!(p = (char *)blk_grow(t->bytes, t->bytes_cap, cap, 0))) return 0;
        t->bytes = p;
        t->bytes_cap = cap;
    }
    if (!t->slots || need > ((size_t)t->mask + 1) / 2) {
        dslot *old = t->slots;
        uint32_t old_cap = old ? t->mask + 1 : 0;
        cap = 16;
        while (cap / 2 < need) cap *= 2;
        if (!(t->slots = (dslot *)blk_grow(NULL, 0, cap * sizeof *t->slots, 1))) {
            t->slots = old;
            return 0;
        }
        if (!old) draw_seed(t);  /* no entry yet: nothing was hashed */
        t->mask = (uint32_t)(cap - 1);
        for (uint32_t i = 0; i < old_cap; i++)
            if (old[i].idx != 0) place(t, old[i].idx, old[i].hash);
        blk_free(old, (size_t)old_cap * sizeof *old);
    }
    return 1;
}

/* Appends an entry for the jti at bytes[off, off + len), at the empty slot
 * dtable_find gave; there is room (reserved).  Offsets must increase. */
static void dtable_link(dtable *t, uint32_t slot, uint64_t hash, size_t off, size_t len, lua_Integer exp)
{
    dentry *e = &t->ents[t->n];
    e->exp = exp;
    e->off = (uint32_t)off;
    e->len = (uint32_t)len;
    t->slots[slot].idx = ++t->n;
    t->slots[slot].hash = (uint32_t)hash;
}

/* Appends a copy of the jti s and its entry; there is room (reserved). */
static void dtable_insert(dtable *t, uint32_t slot, uint64_t hash, const char *s, size_t len, lua_Integer exp)
{
    memcpy(t->bytes + t->bytes_used, s, len);
    dtable_link(t, slot, hash, t->bytes_used, len, exp);
    t->bytes_used += len;
}

/* Drops the entries with exp <= now, compacting in place (no allocation),
 * and returns how many. */
static uint32_t dtable_purge(dtable *t, lua_Integer now)
{
    uint32_t kept = 0, removed;
    size_t used = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        dentry e = t->ents[i];
        if (e.exp <= now) continue;
        memmove(t->bytes + used, t->bytes + e.off, e.len);  /* used <= e.off */
        e.off = (uint32_t)used;
        used += e.len;
        t->ents[kept++] = e;
    }
    removed = t->n - kept;
    if (removed == 0) return 0;
    t->n = kept;
    t->bytes_used = used;
    memset(t->slots, 0, ((size_t)t->mask + 1) * sizeof *t->slots);
    for (uint32_t i = 0; i < kept; i++)
        place(t, i + 1, (uint32_t)jti_hash(t, t->bytes + t->ents[i].off, t->ents[i].len));
    return removed;
}

/* ---- the object --------------------------------------------------------- */

typedef struct denylist {
    int open;
    int redis;          /* the entries come from Redis (redis.c), not a file */
    int known;          /* the identity below describes what entries hold */
    int exists;         /* the file existed at the last load */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    off_t loaded;       /* the end of the last whole line read (or written) */
    uint64_t lines;     /* whole lines in the file up to loaded */
    /* The bytes just before loaded: a grown file with the same inode
     * number is read from loaded on only if they are still there (an inode
     * number freed by a compaction may come back with other content). */
    unsigned char tail[DL_TAIL];
    size_t tail_len;
    lua_Integer max_size;
    dtable tab;         /* freed by close */
} denylist;

/* ---- the work userdata -------------------------------------------------- */

typedef struct dwork {
    int fd, dirfd, lockfd, tmpfd, appendfd;
    int tmp_made;       /* tmp exists in dirfd and is not renamed yet */
    int created;        /* appendfd's file was created by this call */
    char tmp[48];
    char *buf;
    size_t cap, used;
    dtable tab;         /* a table being built, or one replaced */
} dwork;

static void dwork_clear(dwork *w)
{
    if (w->fd >= 0) close(w->fd);
    if (w->tmpfd >= 0) close(w->tmpfd);
    if (w->tmp_made && w->dirfd >= 0) unlinkat(w->dirfd, w->tmp, 0);
    if (w->dirfd >= 0) close(w->dirfd);
    if (w->appendfd >= 0) close(w->appendfd);
    if (w->lockfd >= 0) close(w->lockfd);  /* releases the flock */
    w->fd = w->dirfd = w->lockfd = w->tmpfd = w->appendfd = -1;
    w->tmp_made = w->created = 0;
    blk_free(w->buf, w->cap);
    w->buf = NULL;
    w->cap = w->used = 0;
    dtable_free(&w->tab);
}

static int tp_denylist_work__gc(lua_State *L)
{
    dwork_clear((dwork *)luaL_checkudata(L, 1, TP_DENYLIST_WORK_CLASS));
    return 0;
}

/* Pushes a new, empty work.  Call it before acquiring anything.  It is a
 * to-be-closed slot (Lua 5.4), so an error anywhere in the call releases
 * the lock and the descriptors at once instead of at the next collection,
 * when another writer may be waiting on the lock; the normal paths clear it
 * themselves (dwork_clear is idempotent). */
static dwork *dwork_new(lua_State *L)
{
    dwork *w = (dwork *)tp_newuserdata(L, sizeof *w);
    memset(w, 0, sizeof *w);
    w->fd = w->dirfd = w->lockfd = w->tmpfd = w->appendfd = -1;
    luaL_setmetatable(L, TP_DENYLIST_WORK_CLASS);
    tp_toclose(L, -1);
    return w;
}

/* Makes room for extra more bytes in w's buffer. */
static int dwork_reserve(dwork *w, size_t extra)
{
    size_t cap;
    char *p;
    if (w->cap - w->used >= extra) return 1;
    cap = w->cap ? w->cap * 2 : 4096;
    if (cap - w->used < extra) cap = w->used + extra;  /* exact: a file read whole */
    if (!(p = (char *)blk_grow(w->buf, w->cap, cap, 0))) return 0;
    w->buf = p;
    w->cap = cap;
    return 1;
}

/* ---- helpers ------------------------------------------------------------ */

static denylist *check_denylist(lua_State *L, int idx)
{
    denylist *d = (denylist *)luaL_checkudata(L, idx, TP_DENYLIST_CLASS);
    if (!d->open)
        luaL_error(L, "attempt to use a closed denylist");
    return d;
}

/* Pushes slot of the user value of the denylist at idx. */
static int push_slot(lua_State *L, int idx, int slot)
{
    tp_getuservalue(L, idx);
    lua_rawgeti(L, -1, slot);
    lua_remove(L, -2);
    return lua_gettop(L);
}

/* Pushes the link of the Redis denylist at idx and returns its index. */
static int push_link(lua_State *L, int idx)
{
    return push_slot(L, idx, UV_LINK);
}

/* A jti may be written to the file: 1 to 256 printable ASCII bytes, no
 * space (the field separator). */
static int valid_jti(const char *s, size_t len)
{
    if (len == 0 || len > TP_DENYLIST_MAX_JTI) return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f) return 0;
    return 1;
}

static const char *check_jti(lua_State *L, int idx, size_t *len)
{
    const char *jti = tp_check_string(L, idx, len);
    if (!valid_jti(jti, *len))
        luaL_argerror(L, idx, "jti must be 1 to 256 printable ASCII characters without spaces");
    return jti;
}

static lua_Integer check_integer(lua_State *L, int idx, const char *name)
{
    if (!lua_isinteger(L, idx))
        luaL_argerror(L, idx, lua_pushfstring(L, "%s must be an integer (epoch seconds), got %s", name,
                                              lua_type(L, idx) == LUA_TNUMBER ? "a float" : luaL_typename(L, idx)));
    return lua_tointeger(L, idx);
}

/* The optional time argument at idx (the clock when absent). */
static lua_Integer arg_now(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx)) return (lua_Integer)time(NULL);
    return check_integer(L, idx, "now");
}

/* Parses an optionally signed decimal integer that must fill [p, end). */
static int parse_integer(const char *p, const char *end, lua_Integer *out)
{
    int neg = 0;
    uint64_t v = 0, limit;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p == end) return 0;
    limit = neg ? (uint64_t)LUA_MAXINTEGER + 1 : (uint64_t)LUA_MAXINTEGER;
    for (; p < end; p++) {
        unsigned digit = (unsigned)(unsigned char)*p - '0';
        if (digit > 9 || v > (limit - digit) / 10) return 0;
        v = v * 10 + digit;
    }
    *out = neg ? (lua_Integer)(0 - v) : (lua_Integer)v;
    return 1;
}

static int same_file(const denylist *d, const struct stat *st)
{
    return d->known && d->exists && d->dev == st->st_dev && d->ino == st->st_ino && d->size == st->st_size &&
           d->mtime.tv_sec == st->st_mtim.tv_sec && d->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static void remember(denylist *d, const struct stat *st)
{
    d->known = 1;
    d->exists = 1;
    d->dev = st->st_dev;
    d->ino = st->st_ino;
    d->size = st->st_size;
    d->mtime = st->st_mtim;
}

/* Keeps the last DL_TAIL bytes of what was read, after the chunk of len
 * bytes just read (ending at the new loaded offset) was added to it. */
static void remember_tail(denylist *d, const char *chunk, size_t len)
{
    if (len == 0) return;  /* chunk may be NULL then */
    if (len >= DL_TAIL) {
        memcpy(d->tail, chunk + len - DL_TAIL, DL_TAIL);
        d->tail_len = DL_TAIL;
        return;
    }
    if (d->tail_len + len > DL_TAIL) {
        size_t keep = DL_TAIL - len;
        memmove(d->tail, d->tail + d->tail_len - keep, keep);
        d->tail_len = keep;
    }
    memcpy(d->tail + d->tail_len, chunk, len);
    d->tail_len += len;
}

/* Whether the bytes before d->loaded in the file at fd are the ones read
 * last. */
static int tail_unchanged(const denylist *d, int fd)
{
    unsigned char now[DL_TAIL];
    ssize_t got;
    if (d->tail_len == 0) return d->loaded == 0;
    do got = pread(fd, now, d->tail_len, d->loaded - (off_t)d->tail_len);
    while (got < 0 && errno == EINTR);
    return got == (ssize_t)d->tail_len && memcmp(now, d->tail, d->tail_len) == 0;
}

/* The end of the last whole line of [p, p + len): 0 when there is none. */
static size_t whole_lines_end(const char *p, size_t len)
{
    while (len && p[len - 1] != '\n') len--;
    return len;
}

/* Whether the bytes after the last newline, [p, p + len), can be a line
 * "jti exp" cut short by a crash or a full disk: a jti's characters, then
 * perhaps a space, a sign and digits.  Only such a tail is ignored (and cut
 * off by the next add); anything else means the file is no denylist, and
 * cutting it would destroy it.  A file that is one unterminated line with
 * no space (an opaque token, say) is no torn denylist either: a denylist's
 * first line is cut short only if its write was, which leaves its space
 * unless the crash came within the jti, a case left to an operator. */
static int torn_tail_ok(const char *p, size_t len, int after_whole_lines)
{
    size_t i = 0, digits = 0;
    while (i < len && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f) i++;
    if (i > TP_DENYLIST_MAX_JTI) return 0;
    if (i == len) return after_whole_lines || len == 0;
    if (p[i++] != ' ') return 0;
    if (i < len && p[i] == '-') i++;
    for (; i < len; i++, digits++)
        if (p[i] < '0' || p[i] > '9' || digits >= 19) return 0;
    return 1;
}

/* Reads the line [p, eol) into *jti, *jti_len and *exp; returns NULL, or
 * the message (naming the line number first, never the text: it may hold a
 * token id) pushed for `malformed`. */
static const char *parse_line(lua_State *L, const char *p, const char *eol, const char *path, uint64_t line,
                              size_t *jti_len, lua_Integer *exp)
{
    const char *sp = memchr(p, ' ', (size_t)(eol - p));
    if (!sp || !valid_jti(p, (size_t)(sp - p)))
        return lua_pushfstring(L, "denylist %s line %I: expected a jti (1 to 256 printable characters), a space "
                               "and an expiry", path, (lua_Integer)line);
    if (!parse_integer(sp + 1, eol, exp))
        return lua_pushfstring(L, "denylist %s line %I: the expiry is not an integer", path, (lua_Integer)line);
    *jti_len = (size_t)(sp - p);
    return NULL;
}

/* Parses the whole lines of w's buffer into w->tab, a new table, and sets
 * *lines to their number; a last line without a newline is a write cut
 * short and is left out.  Returns 0, or 3 with the fail triple pushed.
 * Every block is allocated before the first line is read, so the loop
 * allocates nothing. */
static int parse(lua_State *L, dwork *w, const char *path, uint64_t *lines)
{
    dtable *t = &w->tab;
    const char *p, *end, *msg;
    uint64_t line = 0;
    size_t count = 0;
    /* The buffer becomes the table's bytes: the jtis stay where they are. */
    dtable_free(t);
    t->bytes = w->buf;
    t->bytes_cap = w->cap;
    t->bytes_used = w->used;
    w->buf = NULL;
    w->cap = w->used = 0;
    p = t->bytes;
    end = t->bytes + whole_lines_end(t->bytes, t->bytes_used);
    for (const char *q = p; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
        count++;
    if (!torn_tail_ok(end, (size_t)(t->bytes + t->bytes_used - end), count > 0))
        return tp_fail(L, "malformed", "denylist %s line %I: not a line of a denylist, nor one cut short", path,
                       (lua_Integer)count + 1);
    if (!dtable_reserve(t, count, 0))
        return tp_fail(L, "io", "denylist %s: out of memory", path);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        uint64_t hash = 0;
        uint32_t idx, slot = 0;
        size_t len;
        lua_Integer exp;
        if ((msg = parse_line(L, p, eol, path, ++line, &len, &exp)))
            return tp_fail(L, "malformed", "%s", msg);
        if ((idx = dtable_find(t, p, len, &hash, &slot)) == 0)
            dtable_link(t, slot, hash, (size_t)(p - t->bytes), len, exp);
        else if (t->ents[idx - 1].exp < exp)
            t->ents[idx - 1].exp = exp;  /* a duplicate: the later expiry wins */
        p = eol + 1;
    }
    *lines = line;
    return 0;
}

/* Merges the whole lines of w's buffer (what was appended after
 * d->loaded) into the entries in memory.  The lines are checked first and
 * room is made before the first entry changes, so on a failure (3, the
 * fail triple pushed) memory is as it was.  Sets *used to the bytes of the
 * whole lines and *count to their number. */
static int merge_appended(lua_State *L, denylist *d, dwork *w, const char *path, size_t *used, uint64_t *count)
{
    const char *p = w->buf, *end = w->buf + whole_lines_end(w->buf, w->used), *msg;
    uint64_t line = d->lines;
    size_t jti_bytes = 0, n = 0, len;
    lua_Integer exp;
    for (const char *q = p; q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
        n++;
    if (!torn_tail_ok(end, (size_t)(w->buf + w->used - end), d->lines + n > 0))
        return tp_fail(L, "malformed", "denylist %s line %I: not a line of a denylist, nor one cut short", path,
                       (lua_Integer)(line + n + 1));
    n = 0;
    for (const char *q = p; q < end; n++) {
        const char *eol = memchr(q, '\n', (size_t)(end - q));
        if ((msg = parse_line(L, q, eol, path, ++line, &len, &exp)))
            return tp_fail(L, "malformed", "%s", msg);
        jti_bytes += len;
        q = eol + 1;
    }
    if (n && !dtable_reserve(&d->tab, n, jti_bytes))
        return tp_fail(L, "io", "denylist %s: out of memory", path);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        uint64_t hash = 0;
        uint32_t idx, slot = 0;
        parse_line(L, p, eol, path, 0, &len, &exp);  /* checked above */
        if ((idx = dtable_find(&d->tab, p, len, &hash, &slot)) == 0)
            dtable_insert(&d->tab, slot, hash, p, len, exp);
        else if (d->tab.ents[idx - 1].exp < exp)
            d->tab.ents[idx - 1].exp = exp;
        p = eol + 1;
    }
    *used = (size_t)(end - w->buf);
    *count = n;
    return 0;
}

/* Reads from w->fd at offset into w's buffer, to the end of the file. */
static int read_rest(lua_State *L, const denylist *d, dwork *w, const char *path, off_t offset, off_t size)
{
    w->used = 0;
    if (!dwork_reserve(w, (size_t)(size - offset) + 1))  /* + 1: the end shows without growing */
        return tp_fail(L, "io", "denylist %s: out of memory", path);
    for (;;) {
        ssize_t got;
        if (w->used == w->cap && !dwork_reserve(w, 4096))  /* it grew meanwhile */
            return tp_fail(L, "io", "denylist %s: out of memory", path);
        got = pread(w->fd, w->buf + w->used, w->cap - w->used, offset + (off_t)w->used);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return tp_fail(L, "io", "denylist %s: %s", path, strerror(errno));
        if (got == 0) break;
        w->used += (size_t)got;
        if ((lua_Integer)w->used + (lua_Integer)offset > d->max_size)
            return tp_fail(L, "too_large", "denylist %s grew over the limit of %I bytes", path, d->max_size);
    }
    return 0;
}

/* Brings the entries of the denylist at idx up to date with the file.
 * Returns 0 (with *changed set) or 3 with the fail triple pushed; on a
 * failure the entries in memory stay as they were. */
static int load(lua_State *L, int idx, denylist *d, dwork *w, int *changed)
{
    const char *path;
    struct stat st;
    memset(&st, 0, sizeof st);
    int top = lua_gettop(L), r, missing = 0;
    off_t loaded = 0;
    uint64_t lines = 0;
    *changed = 0;
    path = lua_tostring(L, push_slot(L, idx, UV_PATH));
    w->fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (w->fd < 0) {
        if (errno == ELOOP)
            return tp_fail(L, "symlink", "denylist %s is a symbolic link, which is never followed", path);
        if (errno != ENOENT)
            return tp_fail(L, "io", "denylist %s: %s", path, strerror(errno));
        if (d->known && !d->exists) {
            lua_settop(L, top);
            return 0;
        }
        /* A list that was read and is now gone keeps its entries: a
         * gateway that cannot see its file any more (HAProxy's chroot,
         * a volume unmounted, an operator's mistake) would otherwise let
         * every revoked token through again.  Only a list that never
         * existed is an empty one. */
        if (d->known && d->exists)
            return tp_fail(L, "not_found", "denylist %s has disappeared; its %I entries are kept (open it anew "
                           "to start an empty list)", path, (lua_Integer)d->tab.n);
        dtable_free(&w->tab);  /* a missing file is an empty list */
        missing = 1;
    } else {
        if (fstat(w->fd, &st) != 0)
            return tp_fail(L, "io", "denylist %s: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
            return tp_fail(L, "io", "denylist %s is not a regular file", path);
        if (st.st_size > d->max_size)
            return tp_fail(L, "too_large", "denylist %s has %I bytes, over the limit of %I", path,
                           (lua_Integer)st.st_size, d->max_size);
        if (same_file(d, &st)) {
            close(w->fd);
            w->fd = -1;
            lua_settop(L, top);
            return 0;
        }
        if (d->known && d->exists && d->dev == st.st_dev && d->ino == st.st_ino && st.st_size >= d->loaded &&
            tail_unchanged(d, w->fd)) {
            /* The same journal, grown: only what was appended is read. */
            size_t used = 0;
            uint64_t count = 0;
            if ((r = read_rest(L, d, w, path, d->loaded, st.st_size)) != 0 ||
                (r = merge_appended(L, d, w, path, &used, &count)) != 0)
                return r;
            close(w->fd);
            w->fd = -1;
            remember(d, &st);
            d->loaded += (off_t)used;
            d->lines += count;
            remember_tail(d, w->buf, used);
            lua_settop(L, top);
            *changed = count > 0;
            return 0;
        }
        if ((r = read_rest(L, d, w, path, 0, st.st_size)) != 0)
            return r;
        close(w->fd);
        w->fd = -1;
        loaded = (off_t)whole_lines_end(w->buf, w->used);
        if ((r = parse(L, w, path, &lines)) != 0)
            return r;
    }
    d->tail_len = 0;  /* the table's bytes are the file as read */
    if (loaded) remember_tail(d, w->tab.bytes, (size_t)loaded);
    {
        /* The old table goes to w, whose clear or __gc frees it. */
        dtable old = d->tab;
        d->tab = w->tab;
        w->tab = old;
    }
    if (missing) {
        d->known = 1;
        d->exists = 0;
    } else {
        remember(d, &st);
    }
    d->loaded = loaded;
    d->lines = lines;
    lua_settop(L, top);
    *changed = 1;
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

/* Opens the directory of the list and takes the exclusive lock on
 * path .. ".lock" (created 0600; never through a symbolic link).  Returns
 * 0, or 3 with the fail triple pushed. */
static int lock(lua_State *L, int idx, dwork *w)
{
    const char *path = lua_tostring(L, push_slot(L, idx, UV_PATH));
    const char *dir = lua_tostring(L, push_slot(L, idx, UV_DIR));
    const char *base = lua_tostring(L, push_slot(L, idx, UV_BASE));
    const char *name = lua_pushfstring(L, "%s.lock", base);
    w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0)
        return tp_fail(L, "io", "denylist %s: opening its directory: %s", path, strerror(errno));
    w->lockfd = openat(w->dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
    if (w->lockfd < 0) {
        if (errno == ELOOP)
            return tp_fail(L, "symlink", "denylist %s: the lock file %s is a symbolic link", path, name);
        return tp_fail(L, "io", "denylist %s: opening the lock file: %s", path, strerror(errno));
    }
    while (flock(w->lockfd, LOCK_EX) != 0) {
        if (errno != EINTR)
            return tp_fail(L, "io", "denylist %s: locking: %s", path, strerror(errno));
    }
    lua_pop(L, 4);
    return 0;
}

/* "." + up to 20 bytes of the list's name + "." + 16 random hex digits +
 * ".tmp": never the list's own name. */
static void temp_name(char *out, const char *base)
{
    size_t n = strlen(base), used = 0;
    if (n > 20) n = 20;
    out[used++] = '.';
    memcpy(out + used, base, n);
    used += n;
    out[used++] = '.';
    tp_random_hex(out + used);
    memcpy(out + used + 16, ".tmp", 5);
}


/* Appends "jti exp\n" to w's buffer; 0 when out of memory. */
static int append_line(dwork *w, const char *jti, size_t len, lua_Integer exp)
{
    uint64_t v = exp < 0 ? (uint64_t)0 - (uint64_t)exp : (uint64_t)exp;
    char digits[24];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (!dwork_reserve(w, len + nd + 3)) return 0;
    memcpy(w->buf + w->used, jti, len);
    w->used += len;
    w->buf[w->used++] = ' ';
    if (exp < 0) w->buf[w->used++] = '-';
    while (nd) w->buf[w->used++] = digits[--nd];
    w->buf[w->used++] = '\n';
    return 1;
}

/* Fills w's buffer with the file the entries of t make, in their order,
 * with two changes that are not in memory yet: entry at (1-based; 0 for
 * none) gets the expiry exp, and when extra is not NULL the line
 * "extra exp" ends the file.  Returns 0 when out of memory. */
static int serialize(const dtable *t, dwork *w, uint32_t at, const char *extra, size_t extra_len,
                     lua_Integer exp)
{
    w->used = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        const dentry *e = &t->ents[i];
        if (!append_line(w, t->bytes + e->off, e->len, i + 1 == at ? exp : e->exp)) return 0;
    }
    return !extra || append_line(w, extra, extra_len, exp);
}

/* Replaces the file with w's buffer, filled by serialize (the lock held):
 * a temporary file in the same directory, synced, renamed over the path,
 * then the directory synced.  Returns 0, or 3 with the fail triple pushed;
 * touches no entry in memory. */
static int rewrite(lua_State *L, int idx, denylist *d, dwork *w)
{
    const char *path = lua_tostring(L, push_slot(L, idx, UV_PATH));
    const char *base = lua_tostring(L, push_slot(L, idx, UV_BASE));
    int tries = 0, err;
    const char *step;
    struct stat st;
    if ((lua_Integer)w->used > d->max_size)
        return tp_fail(L, "too_large", "denylist %s would have %I bytes, over the limit of %I", path,
                       (lua_Integer)w->used, d->max_size);
    do {
        temp_name(w->tmp, base);
        w->tmpfd = openat(w->dirfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
    } while (w->tmpfd < 0 && errno == EEXIST && ++tries < 16);
    if (w->tmpfd < 0) {
        err = errno;
        step = "creating a temporary file beside it";
        goto failed;
    }
    w->tmp_made = 1;
    step = "writing";
    if (fchmod(w->tmpfd, 0600) != 0 || tp_write_all(w->tmpfd, w->buf, w->used) != 0 || fsync(w->tmpfd) != 0 ||
        fstat(w->tmpfd, &st) != 0) {
        err = errno;
        goto failed;
    }
    if (close(w->tmpfd) != 0) {
        w->tmpfd = -1;
        err = errno;
        goto failed;
    }
    w->tmpfd = -1;
    if (renameat(w->dirfd, w->tmp, w->dirfd, base) != 0) {
        err = errno;
        step = "renaming the temporary file over it";
        goto failed;
    }
    w->tmp_made = 0;
    /* The rename is durable once the directory is; some file systems
     * cannot sync a directory (EINVAL), which is no failure of ours. */
    if (fsync(w->dirfd) != 0 && errno != EINVAL && errno != EROFS) {
        err = errno;
        step = "syncing its directory";
        d->known = 0;
        goto failed;
    }
    remember(d, &st);
    d->loaded = (off_t)w->used;
    d->lines = d->tab.n;  /* serialize writes one line an entry */
    d->tail_len = 0;
    remember_tail(d, w->buf, w->used);
    lua_pop(L, 2);
    return 0;
failed:
    d->known = 0;  /* the next load reads the file again */
    return tp_fail(L, "io", "denylist %s: %s: %s", path, step, strerror(err));
}

/* ---- methods ------------------------------------------------------------ */

/* Opens the journal for appending (creating it, 0600, when missing; never
 * through a symbolic link), the lock held.  Returns 0, or 3 with the fail
 * triple pushed. */
static int open_journal(lua_State *L, int idx, dwork *w)
{
    const char *path = lua_tostring(L, push_slot(L, idx, UV_PATH));
    const char *base = lua_tostring(L, push_slot(L, idx, UV_BASE));
    struct stat st;
    const int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    w->appendfd = openat(w->dirfd, base, flags);
    if (w->appendfd < 0 && errno == ENOENT) {
        /* The first add makes the file; its name is durable once the
         * directory is synced (append_journal). */
        w->appendfd = openat(w->dirfd, base, flags | O_CREAT | O_EXCL, 0600);
        w->created = w->appendfd >= 0;
    }
    if (w->appendfd < 0) {
        if (errno == ELOOP)
            return tp_fail(L, "symlink", "denylist %s is a symbolic link, which is never followed", path);
        return tp_fail(L, "io", "denylist %s: opening it to append: %s", path, strerror(errno));
    }
    if (fstat(w->appendfd, &st) != 0)
        return tp_fail(L, "io", "denylist %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return tp_fail(L, "io", "denylist %s is not a regular file", path);
    lua_pop(L, 2);
    return 0;
}

/* Appends w's buffer (whole lines) to the journal, which load has just
 * brought memory up to, and syncs it.  A torn last line left by an
 * earlier writer is cut off first; on a failure the file is cut back to
 * what it was, so a full disk leaves the old file byte for byte.  Returns
 * 0, or 3 with the fail triple pushed; touches no entry in memory. */
static int append_journal(lua_State *L, int idx, denylist *d, dwork *w)
{
    const char *path = lua_tostring(L, push_slot(L, idx, UV_PATH));
    struct stat st;
    int err;
    const char *step = "writing";
    if (fstat(w->appendfd, &st) != 0 || st.st_dev != d->dev || st.st_ino != d->ino) {
        /* Not the file load read: someone replaced it without the lock. */
        d->known = 0;
        return tp_fail(L, "io", "denylist %s: replaced while locked; try again", path);
    }
    if ((lua_Integer)d->loaded + (lua_Integer)w->used > d->max_size)
        return tp_fail(L, "too_large", "denylist %s would have %I bytes, over the limit of %I", path,
                       (lua_Integer)d->loaded + (lua_Integer)w->used, d->max_size);
    if (st.st_size > d->loaded && ftruncate(w->appendfd, d->loaded) != 0) {
        err = errno;
        step = "cutting off a torn last line";
        goto failed;
    }
    if (tp_write_all(w->appendfd, w->buf, w->used) != 0 || fsync(w->appendfd) != 0) {
        err = errno;
        /* Back to the old content; should even that fail, the torn line
         * is ignored by readers and cut off by the next writer. */
        if (ftruncate(w->appendfd, d->loaded) != 0) d->known = 0;
        goto failed;
    }
    if (w->created && fsync(w->dirfd) != 0 && errno != EINVAL && errno != EROFS) {
        err = errno;
        step = "syncing its directory";
        goto failed;
    }
    if (fstat(w->appendfd, &st) != 0) {
        err = errno;
        goto failed;
    }
    remember(d, &st);
    d->loaded += (off_t)w->used;
    d->lines++;
    remember_tail(d, w->buf, w->used);
    lua_pop(L, 1);
    return 0;
failed:
    return tp_fail(L, "io", "denylist %s: %s: %s", path, step, strerror(err));
}

/***
 * Adds a jti, durably: when it returns, the entry is on disk.  Under the
 * lock it first reads what other writers appended, so concurrent writers
 * lose nothing; an entry already there keeps the later of the two
 * expiries.  One line is appended to the file, whatever the list's size;
 * when the file holds twice as many lines as entries it is compacted.
 * @function Denylist:add
 * @tparam string jti 1 to 256 printable ASCII characters, no spaces
 * @tparam integer exp the expiry (epoch seconds)
 * @treturn boolean true, or the fail triple (`io`, `malformed`, `symlink`, `too_large`)
 */
static int tp_denylist_add(lua_State *L)
{
    denylist *d = check_denylist(L, 1);
    size_t len;
    const char *jti = check_jti(L, 2, &len);
    int changed, r;
    dwork *w;
    dtable *t = &d->tab;
    uint64_t hash = 0;
    uint32_t idx, slot = 0;
    lua_Integer exp = check_integer(L, 3, "exp");
    lua_settop(L, 3);
    if (d->redis) return tp_redis_add(L, 1, push_link(L, 1), jti, len, exp);
    w = dwork_new(L);
    if ((r = lock(L, 1, w)) != 0 || (r = open_journal(L, 1, w)) != 0 || (r = load(L, 1, d, w, &changed)) != 0) {
        dwork_clear(w);
        return r;
    }
    /* Memory changes only once the file has: room for the entry is made
     * first, so nothing can fail after the append. */
    idx = dtable_find(t, jti, len, &hash, &slot);
    if (idx == 0 || t->ents[idx - 1].exp < exp) {
        if (idx == 0) {
            if (!dtable_reserve(t, 1, len)) {
                dwork_clear(w);
                return tp_fail(L, "io", "denylist %s: out of memory", lua_tostring(L, push_slot(L, 1, UV_PATH)));
            }
            dtable_find(t, jti, len, &hash, &slot);  /* the index may have grown */
        }
        w->used = 0;
        if (!append_line(w, jti, len, exp)) {
            dwork_clear(w);
            return tp_fail(L, "io", "denylist %s: out of memory", lua_tostring(L, push_slot(L, 1, UV_PATH)));
        }
        if ((r = append_journal(L, 1, d, w)) != 0) {
            dwork_clear(w);
            return r;
        }
        if (idx == 0)
            dtable_insert(t, slot, hash, jti, len, exp);
        else
            t->ents[idx - 1].exp = exp;
        /* Compacting is housekeeping: the entry is on disk already, so a
         * failure here (rewrite leaves the journal as it was) is not the
         * add's. */
        if (d->lines >= DL_COMPACT_MIN_LINES && d->lines >= 2 * (uint64_t)t->n && serialize(t, w, 0, NULL, 0, 0) &&
            rewrite(L, 1, d, w) != 0)
            lua_pop(L, 3);
    }
    dwork_clear(w);
    lua_pushboolean(L, 1);
    return 1;
}

/***
 * Whether a jti is denied at a time: true while now < exp.  Only memory is
 * consulted (see reload).  A string that cannot be a jti (spaces, control
 * characters, too long) is simply not in the list, so a gateway can pass
 * the jti of any token it receives.
 * @function Denylist:contains
 * @tparam string jti
 * @tparam[opt] integer now default: the clock
 * @treturn boolean
 */
static int tp_denylist_contains(lua_State *L)
{
    denylist *d = check_denylist(L, 1);
    size_t len;
    const char *jti = tp_check_string(L, 2, &len);
    lua_Integer now = arg_now(L, 3);
    uint64_t hash;
    uint32_t idx = 0, slot;
    if (len <= TP_DENYLIST_MAX_JTI)  /* longer: never stored */
        idx = dtable_find(&d->tab, jti, len, &hash, &slot);
    lua_pushboolean(L, idx != 0 && now < d->tab.ents[idx - 1].exp);
    return 1;
}

/***
 * Removes the entries that have expired at now (exp <= now), in the file
 * and in memory.
 * @function Denylist:purge
 * @tparam integer now
 * @treturn integer how many entries were removed, or the fail triple
 */
static int tp_denylist_purge(lua_State *L)
{
    denylist *d = check_denylist(L, 1);
    lua_Integer now, removed;
    int changed, r;
    dwork *w;
    if (d->redis) {
        now = arg_now(L, 2);
        lua_settop(L, 2);
        return tp_redis_purge(L, 1, push_link(L, 1), now);
    }
    now = check_integer(L, 2, "now");
    lua_settop(L, 2);
    w = dwork_new(L);
    if ((r = lock(L, 1, w)) != 0 || (r = load(L, 1, d, w, &changed)) != 0) {
        dwork_clear(w);
        return r;
    }
    removed = (lua_Integer)dtable_purge(&d->tab, now);
    if (removed > 0) {
        if (!serialize(&d->tab, w, 0, NULL, 0, 0)) {
            d->known = 0;  /* memory is ahead of the file: the next load rereads it */
            dwork_clear(w);
            return tp_fail(L, "io", "denylist %s: out of memory", lua_tostring(L, push_slot(L, 1, UV_PATH)));
        }
        if ((r = rewrite(L, 1, d, w)) != 0) {
            dwork_clear(w);  /* memory is ahead of the file: known = 0 rereads it */
            return r;
        }
    }
    dwork_clear(w);
    lua_pushinteger(L, removed);
    return 1;
}

/***
 * The number of entries in memory (expired ones included until a purge).
 * @function Denylist:count
 * @treturn integer
 */
static int tp_denylist_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_denylist(L, 1)->tab.n);
    return 1;
}

/***
 * Reads the file again if it changed since the last load (device, inode,
 * size and modification time to the nanosecond); otherwise only a stat.
 * @function Denylist:reload
 * @treturn boolean true when the file was read again, false when it had
 *   not changed; or the fail triple (the entries in memory then stay)
 */
static int tp_denylist_reload(lua_State *L)
{
    denylist *d = check_denylist(L, 1);
    const char *path;
    struct stat st;
    int changed, r;
    dwork *w;
    lua_settop(L, 1);
    if (d->redis) return tp_redis_reload(L, 1, push_link(L, 1));
    /* The cheap path: one lstat, no descriptor, no allocation. */
    path = lua_tostring(L, push_slot(L, 1, UV_PATH));
    if (lstat(path, &st) == 0 ? S_ISREG(st.st_mode) && same_file(d, &st)
                              : errno == ENOENT && d->known && !d->exists) {
        lua_pushboolean(L, 0);
        return 1;
    }
    w = dwork_new(L);
    r = load(L, 1, d, w, &changed);
    dwork_clear(w);
    if (r != 0) return r;
    lua_pushboolean(L, changed);
    return 1;
}

/***
 * Releases the entries; later calls other than close raise.  Idempotent;
 * also run by __gc and, in Lua 5.4, __close.
 * @function Denylist:close
 */
static int tp_denylist_close(lua_State *L)
{
    denylist *d = (denylist *)luaL_checkudata(L, 1, TP_DENYLIST_CLASS);
    if (d->open) {
        d->open = 0;
        if (d->redis) {
            tp_redis_forget(L, push_link(L, 1));  /* the password goes now, not at collection */
            lua_pop(L, 1);
        }
        dtable_free(&d->tab);
        lua_pushnil(L);
        tp_setuservalue(L, 1);
    }
    return 0;
}

static int tp_denylist__tostring(lua_State *L)
{
    denylist *d = (denylist *)luaL_checkudata(L, 1, TP_DENYLIST_CLASS);
    if (!d->open) {
        lua_pushliteral(L, "tokenpolicy.Denylist (closed)");
        return 1;
    }
    push_slot(L, 1, UV_PATH);
    lua_pushfstring(L, "tokenpolicy.Denylist %s (%I %s)", lua_tostring(L, -1), (lua_Integer)d->tab.n,
                    d->tab.n == 1 ? "entry" : "entries");
    return 1;
}

/* tp.denylist(url [, opts]) for a redis:// or rediss:// URL: the same
 * object, its entries kept in step with Redis (redis.c). */
static int new_redis(lua_State *L)
{
    denylist *d;
    int sync = 1, r;
    lua_settop(L, 2);
    if ((r = tp_redis_open(L, 1, 2, &sync)) != 0) return r;  /* the link at 3 */
    d = (denylist *)tp_newuserdata(L, sizeof *d);
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, TP_DENYLIST_CLASS);
    lua_createtable(L, 4, 0);
    tp_redis_push_name(L, 3);
    lua_rawseti(L, -2, UV_PATH);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, UV_LINK);
    tp_setuservalue(L, 4);
    d->open = 1;
    d->redis = 1;
    if (sync && tp_redis_reload(L, 4, 3) == 3) return 3;
    lua_settop(L, 4);
    return 1;
}

/* The Redis denylist at 1 (a file denylist raises: the method is Redis's). */
static denylist *check_redis(lua_State *L, const char *method)
{
    denylist *d = check_denylist(L, 1);
    if (!d->redis) luaL_error(L, "%s: this denylist is a file, not a redis:// one", method);
    return d;
}

/***
 * The next sync's request, for a caller that does its own I/O (HAProxy's
 * cosockets): the whole RESP text, from AUTH/SELECT to a final QUIT, so
 * the server closes the connection after its answer and the caller reads
 * to the end.  It holds the password when one is configured: send it,
 * never log it.
 * @function Denylist:sync_request
 * @tparam[opt] table opts `{ full = true }`: read the whole set (merged into
 *   the view) rather than what was added since the last sync; for the first
 *   sync after an outage.  A full sync stays due until one has been applied.
 * @treturn string
 */
static int tp_denylist_sync_request(lua_State *L)
{
    static const char *const options[] = { "full", NULL };
    int full;
    check_redis(L, "sync_request");
    lua_settop(L, 2);
    tp_opts(L, 2, options);
    full = tp_opt_boolean(L, 2, "full", 0);
    lua_settop(L, 1);
    return tp_redis_sync_request(L, push_link(L, 1), full);
}

/***
 * Applies the whole answer to a sync_request (every byte up to the
 * server's close).  The view changes only when the whole answer is good.
 * @function Denylist:sync_apply
 * @tparam string answer
 * @treturn integer entries new to the view (or with a later expiry)
 * @treturn integer entries the answer carried
 * @treturn boolean whether another sync should follow at once (a full
 *   batch, or the log lost or trimmed past the view: a full sync is due)
 * @return or the fail triple (`redis_auth`, `redis_error`, `redis_protocol`); the view stays
 */
static int tp_denylist_sync_apply(lua_State *L)
{
    size_t len;
    const char *bytes;
    check_redis(L, "sync_apply");
    bytes = tp_check_string(L, 2, &len);
    lua_settop(L, 2);
    return tp_redis_sync_apply(L, 1, push_link(L, 1), bytes, len);
}

/***
 * Where a caller doing its own I/O connects: host, port and whether to
 * speak TLS (then the server's certificate must name host).
 * @function Denylist:endpoint
 * @treturn string host
 * @treturn integer port
 * @treturn boolean tls
 */
static int tp_denylist_endpoint(lua_State *L)
{
    check_redis(L, "endpoint");
    lua_settop(L, 1);
    return tp_redis_endpoint(L, push_link(L, 1));
}

/***
 * Opens the denylist at path and loads it (a missing file is an empty
 * list; the file is created by the first add).
 * @function denylist
 * @tparam string path
 * @tparam[opt] table opts `max_size` (bytes; default and at most 64 MiB)
 * @treturn Denylist or the fail triple (`io`, `malformed`, `symlink`, `too_large`)
 */
static int tp_denylist_new(lua_State *L)
{
    static const char *const options[] = { "max_size", NULL };
    size_t len;
    const char *path = tp_check_string(L, 1, &len), *slash, *base;
    lua_Integer max_size;
    denylist *d;
    dwork *w;
    int changed, r;
    if (tp_redis_url(path, len)) return new_redis(L);
    if (strlen(path) != len) luaL_argerror(L, 1, "path contains a NUL byte");
    slash = strrchr(path, '/');
    base = slash ? slash + 1 : path;
    if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        luaL_argerror(L, 1, "path must end in a name (not '/', '.' or '..')");
    tp_opts(L, 2, options);
    max_size = tp_opt_integer(L, 2, "max_size", TP_DENYLIST_MAX_SIZE, 1);
    if (max_size > TP_DENYLIST_MAX_SIZE)
        luaL_argerror(L, 2, "max_size must be a positive integer of at most 64 MiB");
    lua_settop(L, 1);
    d = (denylist *)tp_newuserdata(L, sizeof *d);
    memset(d, 0, sizeof *d);
    d->max_size = max_size;
    luaL_setmetatable(L, TP_DENYLIST_CLASS);
    lua_createtable(L, 3, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, UV_PATH);
    if (!slash)
        lua_pushliteral(L, ".");
    else if (slash == path)
        lua_pushliteral(L, "/");
    else
        lua_pushlstring(L, path, (size_t)(slash - path));
    lua_rawseti(L, -2, UV_DIR);
    lua_pushstring(L, base);
    lua_rawseti(L, -2, UV_BASE);
    tp_setuservalue(L, 2);
    d->open = 1;
    w = dwork_new(L);
    r = load(L, 2, d, w, &changed);
    dwork_clear(w);
    if (r != 0) return r;
    lua_settop(L, 2);
    return 1;
}

void tp_open_denylist(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "add", tp_denylist_add },
        { "contains", tp_denylist_contains },
        { "purge", tp_denylist_purge },
        { "count", tp_denylist_count },
        { "reload", tp_denylist_reload },
        { "close", tp_denylist_close },
        { "sync_request", tp_denylist_sync_request },
        { "sync_apply", tp_denylist_sync_apply },
        { "endpoint", tp_denylist_endpoint },
        { NULL, NULL }
    };
    static const luaL_Reg meta[] = {
        { "__gc", tp_denylist_close },
        { "__close", tp_denylist_close },
        { "__tostring", tp_denylist__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg work_meta[] = {
        { "__gc", tp_denylist_work__gc },
        { "__close", tp_denylist_work__gc },
        { NULL, NULL }
    };
    tp_register_class(L, TP_DENYLIST_CLASS, meta, methods, 0);
    tp_register_class(L, TP_DENYLIST_WORK_CLASS, work_meta, NULL, 0);
    tp_open_redis(L);
    lua_pushcfunction(L, tp_denylist_new);
    lua_setfield(L, -2, "denylist");
}

/* For the verifier: Denylist:contains on a C string (the denylist at idx;
 * a closed one raises, as its methods do). */
int tp_denylist_denied(lua_State *L, int idx, const char *jti, size_t len, lua_Integer now)
{
    denylist *d = check_denylist(L, idx);
    uint64_t hash;
    uint32_t found, slot;
    if (len > TP_DENYLIST_MAX_JTI) return 0;  /* never stored */
    found = dtable_find(&d->tab, jti, len, &hash, &slot);
    return found != 0 && now < d->tab.ents[found - 1].exp;
}

/* ---- for redis.c -------------------------------------------------------- */

int tp_denylist_valid_jti(const char *s, size_t len)
{
    return valid_jti(s, len);
}

lua_Integer tp_denylist_merge(lua_State *L, int idx, const tp_dl_entry *e, size_t n)
{
    denylist *d = check_denylist(L, idx);
    dtable *t = &d->tab;
    size_t more = 0, bytes = 0;
    lua_Integer changed = 0;
    uint64_t hash = 0;
    uint32_t found, slot = 0;
    /* Room first, so that nothing fails once the view starts changing. */
    for (size_t i = 0; i < n; i++)
        if (dtable_find(t, e[i].jti, e[i].len, &hash, &slot) == 0) {
            more++;
            bytes += e[i].len;
        }
    if (more && !dtable_reserve(t, more, bytes)) return -1;
    for (size_t i = 0; i < n; i++) {
        if ((found = dtable_find(t, e[i].jti, e[i].len, &hash, &slot)) == 0) {
            dtable_insert(t, slot, hash, e[i].jti, e[i].len, e[i].exp);
            changed++;
        } else if (t->ents[found - 1].exp < e[i].exp) {
            t->ents[found - 1].exp = e[i].exp;
            changed++;
        }
    }
    return changed;
}

lua_Integer tp_denylist_forget(lua_State *L, int idx, lua_Integer now)
{
    return (lua_Integer)dtable_purge(&check_denylist(L, idx)->tab, now);
}
