/***
 * Token files and the facts discovery needs: safe reads, writes and
 * removals, stat, users and groups (docs/files.md).
 * @module tokenpolicy.core
 */
/* Files: the facts discovery needs about paths and users (lstat, the
 * password database), and the safe token file primitives.
 *
 * Token files live where other users can reach them (/tmp, shared
 * directories), so the primitives that write or remove work relative to
 * directory descriptors they opened themselves, one path component at a
 * time, and never follow a symbolic link that someone other than root could
 * have planted.  Every descriptor and buffer a call holds sits in a work
 * userdata marked to-be-closed, so a Lua error (out of memory while a
 * result is built) releases them as it unwinds the call on Lua 5.4 (on 5.3
 * its __gc does, later); on the normal paths the call releases them itself
 * before returning.  Configuration files are read by read_config, which
 * follows links but, like read_token, never blocks on a FIFO. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include "tp.h"

/* Pushes the fail triple for a failed system call on path. */
static int fail_errno(lua_State *L, int err, const char *what, const char *path)
{
    if (err == ENOENT || err == ENOTDIR)
        return tp_fail(L, "not_found", "%s: %s does not exist", what, path);
    if (err == ELOOP)
        return tp_fail(L, "symlink", "%s: %s is a symbolic link", what, path);
    return tp_fail(L, "io", "%s: %s: %s", what, path, strerror(err));
}

/* The word stat() reports as `type` (a stable value scripts compare). */
static const char *a_file_type(mode_t mode);

/* Pushes the fail triple for an open of path that failed with err: a
 * socket cannot be opened at all (ENXIO), so say what is there. */
static int fail_open(lua_State *L, int err, const char *what, const char *path)
{
    struct stat st;
    if ((err == ENXIO || err == EOPNOTSUPP) && lstat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return tp_fail(L, "io", "%s: %s is %s, not a regular file", what, path, a_file_type(st.st_mode));
    return fail_errno(L, err, what, path);
}

static const char *file_type(mode_t mode)
{
    if (S_ISREG(mode)) return "file";
    if (S_ISDIR(mode)) return "directory";
    if (S_ISLNK(mode)) return "symlink";
    if (S_ISFIFO(mode)) return "fifo";
    if (S_ISSOCK(mode)) return "socket";
    return "other";
}

/* The same, as a phrase for messages: "%s is <a_file_type>". */
static const char *a_file_type(mode_t mode)
{
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISLNK(mode)) return "a symbolic link";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "neither a file nor a directory";
}

/* Pushes {type=, mode=, uid=, gid=, size=, mtime=} for st. */
/* Results that print themselves in the REPL (see their __tostring). */
#define TP_FILES_STATUS_CLASS "tokenpolicy.FileStatus"
#define TP_FILES_USER_CLASS "tokenpolicy.User"
#define TP_FILES_REMOVAL_CLASS "tokenpolicy.Removal"
#define TP_FILES_GROUPS_CLASS "tokenpolicy.GroupIds"
#define TP_FILES_NAMES_CLASS "tokenpolicy.DirNames"

static void push_stat(lua_State *L, const struct stat *st)
{
    lua_createtable(L, 0, 9);
    lua_pushstring(L, file_type(st->st_mode));
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)(st->st_mode & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)st->st_uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, (lua_Integer)st->st_gid);
    lua_setfield(L, -2, "gid");
    lua_pushinteger(L, (lua_Integer)st->st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st->st_mtime);
    lua_setfield(L, -2, "mtime");
    /* Enough to tell that a file changed since it was last read (a cached
     * config, say): device, inode and the modification time to the
     * nanosecond. */
    lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_nsec);
    lua_setfield(L, -2, "mtime_ns");
    lua_pushinteger(L, (lua_Integer)st->st_ino);
    lua_setfield(L, -2, "ino");
    lua_pushinteger(L, (lua_Integer)st->st_dev);
    lua_setfield(L, -2, "dev");
    luaL_setmetatable(L, TP_FILES_STATUS_CLASS);
}

/***
 * What is at a path, without following a symbolic link there (lstat), or,
 * with `follow`, at the end of the links (stat: a dangling link is then
 * `not_found`, as Python's os.path.exists sees it).
 * @function stat
 * @tparam string path
 * @tparam[opt] table opts `follow` (default false)
 * @treturn table `{type=, mode=, uid=, gid=, size=, mtime=, mtime_ns=, ino=, dev=}`, `type` one of
 *   "file", "directory", "symlink", "fifo", "socket", "other" (devices); or the fail
 *   triple (`not_found`, `io`)
 */
static int tp_files_stat(lua_State *L)
{
    static const char *const options[] = { "follow", NULL };
    size_t len;
    const char *path = tp_check_string(L, 1, &len);
    struct stat st;
    int follow;
    if (strlen(path) != len)
        return luaL_argerror(L, 1, "path contains a NUL byte");
    tp_opts(L, 2, options);
    follow = tp_opt_boolean(L, 2, "follow", 0);
    if ((follow ? stat(path, &st) : lstat(path, &st)) != 0) {
        if (follow && errno == ELOOP)
            return tp_fail(L, "io", "stat: %s: too many levels of symbolic links", path);
        return fail_errno(L, errno, "stat", path);
    }
    push_stat(L, &st);
    return 1;
}

/***
 * A user from the password database.
 * @function user
 * @tparam[opt] integer uid default: the effective uid
 * @treturn table `{uid=, name=, home=}`, or the fail triple (`not_found`)
 */
static int tp_files_user(lua_State *L)
{
    uid_t uid = lua_isnoneornil(L, 1) ? geteuid() : (uid_t)luaL_checkinteger(L, 1);
    struct passwd pw, *found = NULL;
    char buf[4096];
    int err = getpwuid_r(uid, &pw, buf, sizeof buf, &found);
    if (err != 0 || !found)
        return tp_fail(L, "not_found", "no user with uid %I in the password database", (lua_Integer)uid);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)pw.pw_uid);
    lua_setfield(L, -2, "uid");
    lua_pushstring(L, pw.pw_name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, pw.pw_dir);
    lua_setfield(L, -2, "home");
    luaL_setmetatable(L, TP_FILES_USER_CLASS);
    return 1;
}

/***
 * The effective uid of the process (whose files /tmp/bt_u<uid> names).
 * @function euid
 * @treturn integer
 */
static int tp_files_euid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)geteuid());
    return 1;
}

/***
 * The real uid of the process (the one Python's getpass falls back to).
 * @function uid
 * @treturn integer
 */
static int tp_files_uid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getuid());
    return 1;
}

/***
 * The groups a user is in, to tell what they may write: for the effective
 * uid (the default) the process's own groups (getegid and getgroups), for
 * another uid the password database's primary group and the group
 * database's memberships (getgrouplist).
 * @function groups
 * @tparam[opt] integer uid default: the effective uid
 * @treturn {integer,...} group ids, the primary one first; or the fail
 *   triple (`not_found` for a uid the password database does not know)
 */
static int tp_files_groups(lua_State *L)
{
    uid_t uid = lua_isnoneornil(L, 1) ? geteuid() : (uid_t)luaL_checkinteger(L, 1);
    struct passwd pw, *found = NULL;
    char buf[4096];
    gid_t *gids;
    int n;
    if (uid == geteuid()) {
        n = getgroups(0, NULL);
        if (n < 0) n = 0;
        gids = (gid_t *)lua_newuserdata(L, ((size_t)n + 1) * sizeof *gids);
        gids[0] = getegid();
        n = getgroups(n, gids + 1);
        n = n < 0 ? 1 : n + 1;
    } else {
        int err = getpwuid_r(uid, &pw, buf, sizeof buf, &found);
        if (err != 0 || !found)
            return tp_fail(L, "not_found", "no user with uid %I in the password database", (lua_Integer)uid);
        n = 64;
        for (;;) {
            int want = n;
            gids = (gid_t *)lua_newuserdata(L, (size_t)n * sizeof *gids);
            if (getgrouplist(pw.pw_name, pw.pw_gid, gids, &want) >= 0) {
                n = want;
                break;
            }
            lua_pop(L, 1);
            if (want <= n || want > 65536) {  /* no progress: the primary group alone */
                gids = (gid_t *)lua_newuserdata(L, sizeof *gids);
                gids[0] = pw.pw_gid;
                n = 1;
                break;
            }
            n = want;
        }
    }
    /* The list, without repeats (getgroups may repeat the primary group). */
    lua_createtable(L, n, 0);
    for (int i = 0, count = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = gids[j] == gids[i];
        if (seen) continue;
        lua_pushinteger(L, (lua_Integer)gids[i]);
        lua_rawseti(L, -2, ++count);
    }
    luaL_setmetatable(L, TP_FILES_GROUPS_CLASS);
    return 1;
}

/***
 * The current working directory (what a relative path is relative to).
 * @function cwd
 * @treturn string an absolute path, or the fail triple (`io`, `not_found`
 *   when it was removed)
 */
static int tp_files_cwd(lua_State *L)
{
    char buf[PATH_MAX + 1];
    if (!getcwd(buf, sizeof buf))
        return fail_errno(L, errno, "cwd", ".");
    lua_pushstring(L, buf);
    return 1;
}

/* ---- the work userdata -------------------------------------------------- */

#define TP_FILES_WORK_CLASS "tokenpolicy.FileWork"
#define TP_FILES_MAX_FDS 40        /* remove_tree keeps at most 34: parent, top, 32 levels */
#define TP_FILES_MAX_LINKS 40      /* as the kernel's own limit */
#define TP_FILES_MAX_DEPTH 32
#define TP_FILES_DEFAULT_MAX_SIZE 65536
#define TP_FILES_DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

typedef struct work {
    int fd[TP_FILES_MAX_FDS];   /* -1 when free */
    DIR *dir;                   /* remove_tree's listing */
    char *buf;                  /* read_token's bytes: zeroed before free */
    size_t cap;
} work;

static void work_clear(work *w)
{
    for (int i = 0; i < TP_FILES_MAX_FDS; i++) {
        if (w->fd[i] >= 0) close(w->fd[i]);
        w->fd[i] = -1;
    }
    if (w->dir) closedir(w->dir);
    w->dir = NULL;
    if (w->buf) {
        explicit_bzero(w->buf, w->cap);
        free(w->buf);
    }
    w->buf = NULL;
    w->cap = 0;
}

/* __gc and __close alike: releasing twice is harmless. */
static int tp_files_work__gc(lua_State *L)
{
    work_clear((work *)luaL_checkudata(L, 1, TP_FILES_WORK_CLASS));
    return 0;
}

/* Pushes a new, empty work, marked to-be-closed: on Lua 5.4 an error
 * raised while it holds descriptors or the token's bytes (out of memory
 * while a result is built) releases them as the error unwinds the call;
 * on 5.3 __gc is the net.  Call it before acquiring anything, and do not
 * move or remove it from the stack afterwards. */
static work *work_new(lua_State *L)
{
    work *w = (work *)tp_newuserdata(L, sizeof *w);
    for (int i = 0; i < TP_FILES_MAX_FDS; i++)
        w->fd[i] = -1;
    w->dir = NULL;
    w->buf = NULL;
    w->cap = 0;
    luaL_setmetatable(L, TP_FILES_WORK_CLASS);
    tp_toclose(L, -1);
    return w;
}

/* Hands fd (the result of an open) to w, to be called right after the open
 * with no Lua call in between; returns fd, or -1 with errno as the open
 * left it. */
static int work_keep(work *w, int fd)
{
    if (fd < 0) return -1;
    for (int i = 0; i < TP_FILES_MAX_FDS; i++) {
        if (w->fd[i] < 0) {
            w->fd[i] = fd;
            return fd;
        }
    }
    close(fd);
    errno = EMFILE;
    return -1;
}

/* Closes fd and forgets it; returns what close returned. */
static int work_close(work *w, int fd)
{
    if (fd < 0) return 0;
    for (int i = 0; i < TP_FILES_MAX_FDS; i++) {
        if (w->fd[i] == fd) w->fd[i] = -1;
    }
    return close(fd);
}

/* Replaces w's buffer by one of cap bytes holding the first used bytes of
 * the old one, which is zeroed: realloc would leave a copy of the token in
 * freed memory. */
static int work_grow(work *w, size_t cap, size_t used)
{
    char *p = (char *)malloc(cap);
    if (!p) return 0;
    if (w->buf) {
        memcpy(p, w->buf, used);
        explicit_bzero(w->buf, w->cap);
        free(w->buf);
    }
    w->buf = p;
    w->cap = cap;
    return 1;
}

/* ---- arguments ---------------------------------------------------------- */

typedef struct file_opts {
    uid_t uid;
    lua_Integer max_size;
    int allow_insecure, newline, make_dirs;
} file_opts;

/* Reads the options table at arg (absent means every default) through the
 * shared option readers; allowed names the keys this function takes. */
static void check_file_opts(lua_State *L, int arg, const char *const allowed[], file_opts *o,
                            lua_Integer max_size)
{
    lua_Integer uid;
    tp_opts(L, arg, allowed);
    uid = tp_opt_integer(L, arg, "uid", (lua_Integer)geteuid(), 0);
    /* (uid_t)-1 means "no change" to chown, so it cannot name an owner. */
    if (uid >= (lua_Integer)(uid_t)-1)
        luaL_argerror(L, arg, "uid must be an integer below 4294967295");
    o->uid = (uid_t)uid;
    o->max_size = tp_opt_integer(L, arg, "max_size", max_size, 1);
    if ((uint64_t)o->max_size >= (uint64_t)(SIZE_MAX / 2))
        luaL_argerror(L, arg, "max_size is too large");
    o->allow_insecure = tp_opt_boolean(L, arg, "allow_insecure", 0);
    o->newline = tp_opt_boolean(L, arg, "newline", 0);
    o->make_dirs = tp_opt_boolean(L, arg, "make_dirs", 1);
}

static const char *check_path(lua_State *L, int idx, size_t *len)
{
    const char *path = tp_check_string(L, idx, len);
    if (strlen(path) != *len)
        luaL_argerror(L, idx, "path contains a NUL byte");
    if (*len == 0)
        luaL_argerror(L, idx, "path is empty");
    return path;
}

/* The last component of path, which must name an entry: not "/", not
 * ending in "/", not "." or "..". */
static const char *check_last_name(lua_State *L, int idx, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        luaL_argerror(L, idx, "path must end in a name (not '/', '.' or '..')");
    return name;
}

/* "0644": modes appear in messages the way chmod takes them. */
static const char *octal(char *buf, mode_t mode)
{
    snprintf(buf, 8, "%04o", (unsigned)(mode & 07777));
    return buf;
}

/* C isspace() in the C locale, whatever locale the host program set:
 * the WLCG bearer token discovery rule for stripping a token. */
static int is_c_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Group or others may write, and it is not root's sticky directory (like
 * /tmp, where the sticky bit stops others from replacing what is not
 * theirs). */
static int others_can_replace(const struct stat *st)
{
    return (st->st_mode & 022) && !(st->st_uid == 0 && (st->st_mode & S_ISVTX));
}

/* ---- walking a path from "/" ------------------------------------------- */

enum {
    WALK_CHECK = 1,   /* refuse directories someone else controls */
    WALK_CREATE = 2,  /* create missing directories, mode 0700 */
    WALK_FIX = 4      /* remove group/other write from the caller's directories passed */
};

typedef struct walk {
    lua_State *L;
    work *w;
    const char *what;  /* the public function, for messages */
    const char *path;  /* the path walked, for messages */
    int absolute;
    uid_t uid, euid;
    int flags;
    int changes;       /* WALK_FIX: stack index of the list of changes */
    int links;         /* symbolic links followed so far */
    int fd;            /* the directory reached */
    struct stat st;    /* and its status */
    size_t shown;      /* length of the prefix of path being entered */
    size_t here;       /* length of the prefix of path naming fd */
} walk;

static void walk_init(walk *k, lua_State *L, work *w, const char *what, const char *path,
                      uid_t uid, int flags)
{
    memset(k, 0, sizeof *k);
    k->L = L;
    k->w = w;
    k->what = what;
    k->path = path;
    k->absolute = path[0] == '/';
    k->uid = uid;
    k->euid = geteuid();
    k->flags = flags;
    k->fd = -1;
}

/* Pushes the first n bytes of the walked path ("/" or "." when n is 0). */
static const char *push_prefix(const walk *k, size_t n)
{
    if (n == 0)
        return lua_pushstring(k->L, k->absolute ? "/" : ".");
    return lua_pushlstring(k->L, k->path, n);
}

/* Appends {path=, from=, to=} to the list at index list. */
static void add_change(lua_State *L, int list, mode_t from, mode_t to)
{
    lua_createtable(L, 0, 3);
    lua_insert(L, -2);
    lua_setfield(L, -2, "path");  /* the path was at the top */
    lua_pushinteger(L, (lua_Integer)(from & 07777));
    lua_setfield(L, -2, "from");
    lua_pushinteger(L, (lua_Integer)(to & 07777));
    lua_setfield(L, -2, "to");
    lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

/* The write_token rule for every directory on the path. */
static int check_dir(walk *k, const struct stat *st)
{
    char mode[8];
    if (st->st_uid != k->uid && st->st_uid != 0)
        return tp_fail(k->L, "not_owner",
                       "%s: the directory %s belongs to uid %I (neither uid %I nor root), who could swap the token",
                       k->what, push_prefix(k, k->shown), (lua_Integer)st->st_uid, (lua_Integer)k->uid);
    if (others_can_replace(st))
        return tp_fail(k->L, "insecure_permissions",
                       "%s: group or others can write the directory %s (mode %s) and it is not a root-owned "
                       "sticky directory like /tmp, so they could swap the token: run chmod go-w on it",
                       k->what, push_prefix(k, k->shown), octal(mode, st->st_mode));
    return 0;
}

/* WALK_FIX, on leaving the directory reached: removes group and other
 * write from it when it is the caller's (never from root's sticky /tmp). */
static int fix_left_dir(walk *k)
{
    mode_t to = k->st.st_mode & 07755;
    if (k->st.st_uid != k->uid || !others_can_replace(&k->st))
        return 0;
    if (fchmod(k->fd, to) != 0)
        return tp_fail(k->L, "io", "%s: chmod %s: %s", k->what, push_prefix(k, k->here), strerror(errno));
    push_prefix(k, k->here);
    add_change(k->L, k->changes, k->st.st_mode, to);
    return 0;
}

/* Makes fd (kept in the work) the directory reached, after the checks the
 * flags ask for.  Returns 0, or 3 with the fail triple pushed. */
static int walk_arrive(walk *k, int fd, int created)
{
    struct stat st;
    int r;
    if (fstat(fd, &st) != 0)
        return tp_fail(k->L, "io", "%s: %s: %s", k->what, push_prefix(k, k->shown), strerror(errno));
    if (created) {
        /* Exactly 0700 whatever the umask, and the owner's when a
         * privileged caller writes for another user. */
        if (fchmod(fd, 0700) != 0 ||
            (k->uid != k->euid && fchown(fd, k->uid, (gid_t)-1) != 0))
            return tp_fail(k->L, "io", "%s: setting up the new directory %s: %s", k->what,
                           push_prefix(k, k->shown), strerror(errno));
        st.st_mode = (st.st_mode & ~(mode_t)07777) | 0700;
        st.st_uid = k->uid;
    }
    if ((k->flags & WALK_CHECK) && (r = check_dir(k, &st)) != 0)
        return r;
    if (k->fd >= 0) {
        if ((k->flags & WALK_FIX) && (r = fix_left_dir(k)) != 0)
            return r;
        work_close(k->w, k->fd);
    }
    k->fd = fd;
    k->st = st;
    k->here = k->shown;
    return 0;
}

static int walk_components(walk *k, const char *text, size_t len, int depth, int top);

/* The component name of the directory reached is a symbolic link: follow
 * it only when root made it where only root can change it (system links
 * like /var/run -> /run); anyone else's could redirect the token. */
static int walk_link(walk *k, const char *name, const struct stat *lst, int depth)
{
    lua_State *L = k->L;
    char *target;
    ssize_t n;
    int r;
    if (++k->links > TP_FILES_MAX_LINKS)
        return tp_fail(L, "symlink", "%s: too many symbolic links on the way to %s", k->what, k->path);
    if (lst->st_uid != 0 || k->st.st_uid != 0 || (k->st.st_mode & 022))
        return tp_fail(L, "symlink",
                       "%s: %s is a symbolic link (owned by uid %I in a directory of uid %I); only root's links "
                       "in directories only root can change are followed",
                       k->what, push_prefix(k, k->shown), (lua_Integer)lst->st_uid, (lua_Integer)k->st.st_uid);
    if (lst->st_size <= 0 || lst->st_size > PATH_MAX)
        return tp_fail(L, "io", "%s: the symbolic link %s has an unusable target", k->what, push_prefix(k, k->shown));
    luaL_checkstack(L, 8, "path too deep");
    target = (char *)lua_newuserdata(L, (size_t)lst->st_size + 1);
    n = readlinkat(k->fd, name, target, (size_t)lst->st_size + 1);
    if (n <= 0 || n > lst->st_size)
        return tp_fail(L, "io", "%s: the symbolic link %s changed while it was read", k->what, push_prefix(k, k->shown));
    if (target[0] == '/') {
        int fd = work_keep(k->w, open("/", TP_FILES_DIR_FLAGS));
        if (fd < 0)
            return tp_fail(L, "io", "%s: /: %s", k->what, strerror(errno));
        if ((r = walk_arrive(k, fd, 0)) != 0)
            return r;
    }
    if ((r = walk_components(k, target, (size_t)n, depth + 1, 0)) != 0)
        return r;
    lua_pop(L, 1);
    return 0;
}

/* Enters the directory name from the directory reached. */
static int walk_enter(walk *k, const char *name, int depth)
{
    lua_State *L = k->L;
    struct stat lst;
    int fd, err, created = 0;
    if (strcmp(name, ".") == 0)
        return 0;
    fd = work_keep(k->w, openat(k->fd, name, TP_FILES_DIR_FLAGS));
    /* Never inside a link's target: that would build what the link
     * points at, which only root decides. */
    if (fd < 0 && errno == ENOENT && (k->flags & WALK_CREATE) && depth == 0) {
        if (mkdirat(k->fd, name, 0700) == 0)
            created = 1;
        else if (errno != EEXIST)
            return tp_fail(L, "io", "%s: cannot create the directory %s: %s", k->what,
                           push_prefix(k, k->shown), strerror(errno));
        fd = work_keep(k->w, openat(k->fd, name, TP_FILES_DIR_FLAGS));
    }
    if (fd >= 0)
        return walk_arrive(k, fd, created);
    err = errno;
    if ((err == ELOOP || err == ENOTDIR) && fstatat(k->fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(lst.st_mode))
        return walk_link(k, name, &lst, depth);
    if (err == ENOENT)
        return tp_fail(L, "not_found", "%s: the directory %s does not exist", k->what, push_prefix(k, k->shown));
    if (err == ENOTDIR)
        return tp_fail(L, "not_found", "%s: %s is not a directory", k->what, push_prefix(k, k->shown));
    return tp_fail(L, "io", "%s: %s: %s", k->what, push_prefix(k, k->shown), strerror(err));
}

/* Enters every component of text in turn; top says text is the walked path
 * itself (not a link's target), whose prefixes name what is entered. */
static int walk_components(walk *k, const char *text, size_t len, int depth, int top)
{
    char name[NAME_MAX + 1];
    size_t i = 0;
    while (i < len) {
        size_t start;
        int r;
        while (i < len && text[i] == '/') i++;
        start = i;
        while (i < len && text[i] != '/') i++;
        if (i == start) break;
        if (top) k->shown = i;
        if (i - start > NAME_MAX)
            return tp_fail(k->L, "io", "%s: %s: %s", k->what, push_prefix(k, k->shown), strerror(ENAMETOOLONG));
        memcpy(name, text + start, i - start);
        name[i - start] = '\0';
        if ((r = walk_enter(k, name, depth)) != 0)
            return r;
    }
    return 0;
}

/* Opens the directory that holds the last component of the walked path
 * (k->fd, its status in k->st), from "/" (or from the working directory
 * for a relative path, whose ancestors are then not looked at). */
static int walk_to_parent(walk *k)
{
    const char *slash = strrchr(k->path, '/');
    int fd = work_keep(k->w, open(k->absolute ? "/" : ".", TP_FILES_DIR_FLAGS));
    int r;
    if (fd < 0)
        return tp_fail(k->L, "io", "%s: %s: %s", k->what, push_prefix(k, 0), strerror(errno));
    if ((r = walk_arrive(k, fd, 0)) != 0)
        return r;
    return slash ? walk_components(k, k->path, (size_t)(slash - k->path), 0, 1) : 0;
}

/* ---- read_token --------------------------------------------------------- */

/* Reads the regular file fd (its status in st) into w->buf: at most max
 * bytes, sized from fstat and grown if the file grows, never past max + 1
 * bytes (enough to know it is too large).  Returns 0 with *used set, or 3
 * with the fail triple pushed; raises when memory runs out (w, marked
 * to-be-closed, then releases fd at once). */
static int read_whole(lua_State *L, work *w, int fd, const char *what, const char *path,
                      const struct stat *st, size_t max, size_t *used)
{
    *used = 0;
    if (st->st_size < 0 || (uint64_t)st->st_size > (uint64_t)max)
        return tp_fail(L, "too_large", "%s: %s is %I bytes, over the limit of %I", what, path,
                       (lua_Integer)st->st_size, (lua_Integer)max);
    if (!work_grow(w, (size_t)st->st_size + 1, 0))
        return luaL_error(L, "%s: not enough memory", what);
    for (;;) {
        ssize_t n;
        size_t want;
        if (*used == w->cap) {
            if (w->cap > max) break;
            if (!work_grow(w, w->cap > max / 2 ? max + 1 : w->cap * 2, *used))
                return luaL_error(L, "%s: not enough memory", what);
        }
        want = w->cap - *used;
        n = read(fd, w->buf + *used, want);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return tp_fail(L, "io", "%s: reading %s: %s", what, path, strerror(errno));
        if (n == 0) break;
        *used += (size_t)n;
        if ((size_t)n < want) break;  /* a regular file reads short only at its end */
    }
    if (*used > max)
        return tp_fail(L, "too_large", "%s: %s grew past the limit of %I bytes", what, path, (lua_Integer)max);
    return 0;
}

#define TP_FILES_INFO_CLASS "tokenpolicy.TokenFileInfo"

static int read_token(lua_State *L, work *w, const char *path, const file_opts *o)
{
    size_t max = (size_t)o->max_size, used = 0, start, end;
    struct stat st;
    char mode[8];
    int insecure, r, fd;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    /* O_NONBLOCK: a FIFO planted at the path must not hang the caller. */
    const int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        /* A directory by its very name: refused below as one. */
        fd = work_keep(w, open(path, flags));
    } else {
        /* The directories walked as write_token walks them: a link among
         * them is followed only when root made it where only root can
         * change it, so a neighbour's link (or one swapped in between a
         * check and this read) never leads the read elsewhere. */
        walk k;
        walk_init(&k, L, w, "read_token", path, o->uid, 0);
        if ((r = walk_to_parent(&k)) != 0)
            return r;
        fd = work_keep(w, openat(k.fd, name, flags));
    }
    if (fd < 0)
        return fail_open(L, errno, "read_token", path);
    if (fstat(fd, &st) != 0)
        return fail_errno(L, errno, "read_token", path);
    if (!S_ISREG(st.st_mode))
        return tp_fail(L, "io", "read_token: %s is %s, not a regular file", path, a_file_type(st.st_mode));
    if (st.st_uid != o->uid)
        return tp_fail(L, "not_owner", "read_token: %s belongs to uid %I, not uid %I", path,
                       (lua_Integer)st.st_uid, (lua_Integer)o->uid);
    insecure = (st.st_mode & 077) != 0;
    if (insecure && !o->allow_insecure)
        return tp_fail(L, "insecure_permissions",
                       "read_token: group or others can access %s (mode %s): run chmod 600 on it",
                       path, octal(mode, st.st_mode));
    if ((r = read_whole(L, w, fd, "read_token", path, &st, max, &used)) != 0)
        return r;
    for (start = 0; start < used && is_c_space((unsigned char)w->buf[start]); start++) {}
    for (end = used; end > start && is_c_space((unsigned char)w->buf[end - 1]); end--) {}
    if (end == start)
        return tp_fail(L, "malformed", "read_token: the token file %s is empty", path);
    lua_pushlstring(L, w->buf + start, end - start);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_mtime);
    lua_setfield(L, -2, "mtime");
    if (insecure) {
        lua_pushfstring(L, "the token file %s is readable by others (mode %s); fix it with: chmod 600 %s",
                        path, octal(mode, st.st_mode), path);
        lua_setfield(L, -2, "warning");
    }
    luaL_setmetatable(L, TP_FILES_INFO_CLASS);
    return 2;
}

/* "tokenpolicy.TokenFileInfo: mode 0600, uid 1000, 42 bytes, modified
 * 2026-11-23 14:52:54 UTC" and the warning on a second line: the info
 * never holds the token, so nothing secret can show. */
static int tp_files_info__tostring(lua_State *L)
{
    char mode[8], when[32];
    lua_Integer m, uid, size, mtime;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "mode");
    lua_getfield(L, 1, "uid");
    lua_getfield(L, 1, "size");
    lua_getfield(L, 1, "mtime");
    m = lua_tointeger(L, -4);
    uid = lua_tointeger(L, -3);
    size = lua_tointeger(L, -2);
    mtime = lua_tointeger(L, -1);
    lua_pushfstring(L, "%s: mode %s, uid %I, %I byte%s, modified %s", TP_FILES_INFO_CLASS,
                    octal(mode, (mode_t)m), uid, size, size == 1 ? "" : "s", tp_format_utc(when, mtime));
    if (lua_getfield(L, 1, "warning") == LUA_TSTRING) {
        lua_pushliteral(L, "\nwarning: ");
        lua_insert(L, -2);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
    }
    return 1;
}

/***
 * Reads a token file safely: never through a symbolic link (at the file,
 * or among its directories unless root made it where only root can change
 * it, as write_token walks them), never from a FIFO or device, only from a
 * file of the expected owner that nobody else can access, and at most
 * `max_size` bytes.  Leading and trailing whitespace (C isspace) is
 * stripped.
 * @function read_token
 * @tparam string path
 * @tparam[opt] table opts `uid` (the expected owner, default the effective
 *   uid), `max_size` (bytes, default 65536), `allow_insecure` (default false:
 *   when true a file others can access is read, with `info.warning` set)
 * @treturn string the token
 * @treturn table info `{mode=, uid=, size=, mtime=}` (and `warning`), or the
 *   fail triple (`not_found`, `symlink`, `io`, `not_owner`,
 *   `insecure_permissions`, `too_large`, `malformed`)
 */
static int tp_files_read_token(lua_State *L)
{
    static const char *const options[] = { "uid", "max_size", "allow_insecure", NULL };
    size_t len;
    const char *path = check_path(L, 1, &len);
    file_opts o;
    work *w;
    int n;
    check_file_opts(L, 2, options, &o, TP_FILES_DEFAULT_MAX_SIZE);
    w = work_new(L);
    n = read_token(L, w, path, &o);
    work_clear(w);
    return n;
}

/* ---- read_config -------------------------------------------------------- */

#define TP_FILES_CONFIG_MAX_SIZE (1024 * 1024)

static int read_config(lua_State *L, work *w, const char *path, size_t max)
{
    struct stat st;
    size_t used;
    int r, fd;
    /* A symbolic link is followed, as Python's open() follows it: configs
     * are not secret and are often links (a container's /opt/rucio/etc).
     * O_NONBLOCK: opening a FIFO planted at the path returns at once
     * instead of waiting for a writer; O_NOCTTY: a terminal is not
     * adopted.  Every check is on what was opened (fstat), so a swap
     * between a check and the open cannot slip through. */
    fd = work_keep(w, open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
    if (fd < 0 && errno == ELOOP)
        return tp_fail(L, "io", "read_config: %s: too many levels of symbolic links", path);
    if (fd < 0)
        return fail_open(L, errno, "read_config", path);
    if (fstat(fd, &st) != 0)
        return fail_errno(L, errno, "read_config", path);
    if (!S_ISREG(st.st_mode))
        return tp_fail(L, "io", "read_config: %s is %s, not a regular file", path, a_file_type(st.st_mode));
    if ((r = read_whole(L, w, fd, "read_config", path, &st, max, &used)) != 0)
        return r;
    lua_pushlstring(L, w->buf, used);
    push_stat(L, &st);
    return 2;
}

/***
 * Reads a configuration file (rucio.cfg, settings.conf, an Arvados
 * config.yml) whole, safely enough to point at any path: a FIFO, device or
 * socket there is refused without blocking, a directory is refused, and
 * the size is capped.  A symbolic link is followed, as the tools' own
 * readers follow it (configs are not secret); the checks apply to the file
 * it leads to.  The text is returned as it is (not stripped).
 * @function read_config
 * @tparam string path
 * @tparam[opt] table opts `max_size` (bytes, default 1 MiB)
 * @treturn string the text
 * @treturn table the status of the file read, as `stat` gives it
 *   (`{type="file", mode=, uid=, gid=, size=, mtime=, mtime_ns=, ino=, dev=}`),
 *   or the fail triple (`not_found`, `io`, `too_large`)
 */
static int tp_files_read_config(lua_State *L)
{
    static const char *const options[] = { "max_size", NULL };
    size_t len;
    const char *path = check_path(L, 1, &len);
    file_opts o;
    work *w;
    int n;
    check_file_opts(L, 2, options, &o, TP_FILES_CONFIG_MAX_SIZE);
    w = work_new(L);
    n = read_config(L, w, path, (size_t)o.max_size);
    work_clear(w);
    return n;
}

/* ---- write_token -------------------------------------------------------- */

/* ".tokenpolicy-" and 16 random hex digits (30 bytes with the NUL). */
static void temp_name(char *out)
{
    memcpy(out, ".tokenpolicy-", 13);
    tp_random_hex(out + 13);
}


/* Replaces name in the directory k has open with text (and a newline when
 * asked), atomically: a new file created beside it with O_EXCL, given mode
 * and, when uid or gid is not -1, that owner (a failure to chown fails the
 * call only when must_chown), written, synced, renamed over name, and the
 * directory synced.  fn names the public function in messages.  From the
 * creation to the rename no Lua function is called, so nothing can unwind
 * past the temporary file: every failure removes it. */
static int replace_file(lua_State *L, work *w, walk *k, const char *fn, const char *path, const char *name,
                        const char *text, size_t len, int newline, mode_t mode, uid_t uid, gid_t gid,
                        int must_chown)
{
    char tmp[32];
    const char *step;
    int fd = -1, r, err, tries = 0;
    do {
        temp_name(tmp);
        fd = work_keep(w, openat(k->fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    } while (fd < 0 && errno == EEXIST && ++tries < 16);
    if (fd < 0) {
        step = "creating a temporary file beside";
        err = errno;
        goto failed;
    }
    step = "writing";
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0 && must_chown) {
        err = errno;
        goto cleanup;
    }
    if (fchmod(fd, mode) != 0 || tp_write_all(fd, text, len) != 0 ||
        (newline && tp_write_all(fd, "\n", 1) != 0) || fsync(fd) != 0) {
        err = errno;
        goto cleanup;
    }
    r = work_close(w, fd);
    err = errno;
    fd = -1;
    if (r != 0) goto cleanup;
    if (renameat(k->fd, tmp, k->fd, name) != 0) {
        err = errno;
        unlinkat(k->fd, tmp, 0);
        if (err == EPERM || err == EACCES)
            return tp_fail(L, "not_owner", "%s: cannot replace %s, which belongs to another user (%s)",
                           fn, path, strerror(err));
        step = "renaming the temporary file onto";
        goto failed;
    }
    /* The rename is durable only once the directory is; some file systems
     * cannot sync a directory (EINVAL), which is no failure of ours. */
    if (fsync(k->fd) != 0 && errno != EINVAL && errno != EROFS) {
        err = errno;
        step = "syncing the directory of";
        goto failed;
    }
    lua_pushboolean(L, 1);
    return 1;

cleanup:
    if (fd >= 0) work_close(w, fd);
    unlinkat(k->fd, tmp, 0);
failed:
    return tp_fail(L, "io", "%s: %s %s: %s", fn, step, path, strerror(err));
}

static int write_token(lua_State *L, work *w, const char *path, const char *name,
                       const char *token, size_t len, const file_opts *o)
{
    walk k;
    struct stat old;
    int r;
    walk_init(&k, L, w, "write_token", path, o->uid, WALK_CHECK | (o->make_dirs ? WALK_CREATE : 0));
    if ((r = walk_to_parent(&k)) != 0)
        return r;
    if (k.st.st_uid != o->uid && !(k.st.st_uid == 0 && (k.st.st_mode & S_ISVTX)))
        return tp_fail(L, "not_owner",
                       "write_token: the directory %s belongs to uid %I; tokens of uid %I go into a directory "
                       "of theirs or a root-owned sticky directory like /tmp",
                       push_prefix(&k, k.here), (lua_Integer)k.st.st_uid, (lua_Integer)o->uid);
    if (fstatat(k.fd, name, &old, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(old.st_mode))
            return tp_fail(L, "io", "write_token: %s is a directory", path);
        /* In a shared (sticky) directory what others made there is theirs:
         * replacing it is what the kernel refuses anyone but root. */
        if ((k.st.st_mode & S_ISVTX) && old.st_uid != o->uid)
            return tp_fail(L, "not_owner", "write_token: %s already exists and belongs to uid %I", path,
                           (lua_Integer)old.st_uid);
    } else if (errno != ENOENT) {
        return tp_fail(L, "io", "write_token: %s: %s", path, strerror(errno));
    }

    return replace_file(L, w, &k, "write_token", path, name, token, len, o->newline, 0600,
                        o->uid != k.euid ? o->uid : (uid_t)-1, (gid_t)-1, 1);
}

/***
 * Writes a token file atomically: a new file of mode 0600 in the target's
 * directory, synced and renamed over the target, so a reader sees the old
 * token or the new one and a link or file planted at the target is
 * replaced, never written through.  Every directory on the path is opened
 * from "/" without following links (root's own links in root's
 * directories, like /var/run, excepted), missing ones are created with
 * mode 0700, and a directory someone else controls is refused.
 * @function write_token
 * @tparam string path
 * @tparam string token
 * @tparam[opt] table opts `uid` (the owner, default the effective uid; a
 *   privileged caller writing for another user gives the file and the new
 *   directories to them), `newline` (default false: no trailing newline,
 *   as Rucio writes), `make_dirs` (default true)
 * @treturn boolean true, or the fail triple (`not_found`, `symlink`,
 *   `not_owner`, `insecure_permissions`, `malformed`, `io`)
 */
static int tp_files_write_token(lua_State *L)
{
    static const char *const options[] = { "uid", "newline", "make_dirs", NULL };
    size_t len, tlen;
    const char *path = check_path(L, 1, &len);
    const char *name = check_last_name(L, 1, path);
    const char *token = tp_check_string(L, 2, &tlen);
    file_opts o;
    work *w;
    int n;
    check_file_opts(L, 3, options, &o, TP_FILES_DEFAULT_MAX_SIZE);
    if (tlen == 0)
        return tp_fail(L, "malformed", "write_token: the token is empty");
    w = work_new(L);
    n = write_token(L, w, path, name, token, tlen, &o);
    work_clear(w);
    return n;
}

/* ---- remove_token ------------------------------------------------------- */

static int remove_token(lua_State *L, work *w, const char *path, const char *name, uid_t uid)
{
    walk k;
    struct stat st;
    int r;
    walk_init(&k, L, w, "remove_token", path, uid, 0);
    if ((r = walk_to_parent(&k)) != 0)
        return r;
    if (fstatat(k.fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return fail_errno(L, errno, "remove_token", path);
    if (st.st_uid != uid)
        return tp_fail(L, "not_owner", "remove_token: %s belongs to uid %I, not uid %I", path,
                       (lua_Integer)st.st_uid, (lua_Integer)uid);
    if (S_ISDIR(st.st_mode))
        return tp_fail(L, "io", "remove_token: %s is a directory (remove_tree removes directories)", path);
    /* unlinkat never follows: a link is removed, never its target. */
    if (unlinkat(k.fd, name, 0) != 0)
        return fail_errno(L, errno, "remove_token", path);
    lua_createtable(L, 0, 1);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_setfield(L, -2, "removed");
    luaL_setmetatable(L, TP_FILES_REMOVAL_CLASS);
    return 1;
}

/* The functions that act on one path for one uid share their entry: check
 * the arguments, run op with a work area, release it. */
typedef int (*path_op)(lua_State *L, work *w, const char *path, const char *name, uid_t uid);

static int run_path_op(lua_State *L, const char *path, path_op op)
{
    static const char *const options[] = { "uid", NULL };
    const char *name = check_last_name(L, 1, path);
    file_opts o;
    work *w;
    int n;
    check_file_opts(L, 2, options, &o, TP_FILES_DEFAULT_MAX_SIZE);
    w = work_new(L);
    n = op(L, w, path, name, o.uid);
    work_clear(w);
    return n;
}

/***
 * Removes a token file (or a symbolic link at its path, never the link's
 * target) that belongs to the uid.  The directories on the path are walked
 * as write_token walks them, without creating any.
 * @function remove_token
 * @tparam string path
 * @tparam[opt] table opts `uid` (default the effective uid)
 * @treturn table `{removed={path}}`, or the fail triple (`not_found`,
 *   `symlink`, `not_owner`, `io`)
 */
static int tp_files_remove_token(lua_State *L)
{
    size_t len;
    return run_path_op(L, check_path(L, 1, &len), remove_token);
}

/* ---- remove_tree -------------------------------------------------------- */

typedef struct tree {
    lua_State *L;
    work *w;
    uid_t uid;
    dev_t dev;     /* the top's file system: mount points are not crossed */
    int removed;   /* stack indexes of the two result lists */
    int skipped;
} tree;

static void tree_removed(tree *t, int path)
{
    lua_pushvalue(t->L, path);
    lua_rawseti(t->L, t->removed, (lua_Integer)lua_rawlen(t->L, t->removed) + 1);
}

/* Lists path as skipped, with reason at the top of the stack (popped). */
static void tree_skip(tree *t, int path)
{
    lua_State *L = t->L;
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "reason");
    lua_pushvalue(L, path);
    lua_setfield(L, -2, "path");
    lua_rawseti(L, t->skipped, (lua_Integer)lua_rawlen(L, t->skipped) + 1);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pushes the names in the directory fd (a table, which keeps the strings
 * alive) and an array of pointers to them, sorted so that reports are the
 * same on every run.  Returns the count, or -1 with errno. */
static lua_Integer list_names(tree *t, int fd, const char ***names)
{
    lua_State *L = t->L;
    lua_Integer count = 0;
    struct dirent *e;
    int copy, err;
    lua_newtable(L);
    *names = NULL;
    copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);  /* closedir closes the copy, fd stays */
    if (copy < 0) return -1;
    if (!(t->w->dir = fdopendir(copy))) {
        err = errno;
        close(copy);
        errno = err;
        return -1;
    }
    for (;;) {
        errno = 0;
        /* cppcheck-suppress readdirCalled ; readdir on a stream this walk owns is thread-safe, readdir_r is deprecated */
        if (!(e = readdir(t->w->dir))) break;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++count);
    }
    err = errno;
    closedir(t->w->dir);
    t->w->dir = NULL;
    if (err != 0) {
        errno = err;
        return -1;
    }
    *names = (const char **)lua_newuserdata(L, (size_t)count * sizeof **names + 1);
    for (lua_Integer i = 0; i < count; i++) {
        lua_rawgeti(L, -2, i + 1);
        (*names)[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    qsort((void *)*names, (size_t)count, sizeof **names, compare_names);
    return count;
}

/* Removes what belongs to the uid inside the directory fd, whose path is
 * at index path, depth levels below the top.  Returns 1 when the directory
 * is empty at the end. */
static int tree_clear(tree *t, int fd, int path, int depth)
{
    lua_State *L = t->L;
    const char **names;
    lua_Integer count;
    int top = lua_gettop(L), empty = 1;
    luaL_checkstack(L, 12, "remove_tree");
    count = list_names(t, fd, &names);
    if (count < 0) {
        lua_pushfstring(L, "cannot list it: %s", strerror(errno));
        tree_skip(t, path);
        lua_settop(L, top);
        return 0;
    }
    for (lua_Integer i = 0; i < count; i++) {
        const char *name = names[i];
        struct stat st, again;
        int child, sub;
        lua_pushfstring(L, "%s/%s", lua_tostring(L, path), name);
        child = lua_gettop(L);
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) {
                lua_pushstring(L, strerror(errno));
                tree_skip(t, child);
                empty = 0;
            }
        } else if (st.st_uid != t->uid) {
            lua_pushfstring(L, "it belongs to uid %I", (lua_Integer)st.st_uid);
            tree_skip(t, child);
            empty = 0;
        } else if (!S_ISDIR(st.st_mode)) {
            /* A symbolic link is an entry like any other: unlinkat removes
             * the link itself. */
            if (unlinkat(fd, name, 0) == 0) {
                tree_removed(t, child);
            } else if (errno != ENOENT) {
                lua_pushstring(L, strerror(errno));
                tree_skip(t, child);
                empty = 0;
            }
        } else if (st.st_dev != t->dev) {
            lua_pushliteral(L, "it is on another file system (a mount point)");
            tree_skip(t, child);
            empty = 0;
        } else if (depth >= TP_FILES_MAX_DEPTH) {
            lua_pushfstring(L, "it is more than %d levels below the top", TP_FILES_MAX_DEPTH);
            tree_skip(t, child);
            empty = 0;
        } else if ((sub = work_keep(t->w, openat(fd, name, TP_FILES_DIR_FLAGS))) < 0 ||
                   fstat(sub, &again) != 0 || again.st_dev != st.st_dev || again.st_ino != st.st_ino) {
            /* Swapped for a link or another directory since fstatat. */
            work_close(t->w, sub);
            lua_pushliteral(L, "it changed while the tree was removed");
            tree_skip(t, child);
            empty = 0;
        } else {
            int cleared = tree_clear(t, sub, child, depth + 1);
            work_close(t->w, sub);
            if (!cleared) {
                empty = 0;
            } else if (unlinkat(fd, name, AT_REMOVEDIR) == 0) {
                tree_removed(t, child);
            } else {
                lua_pushstring(L, strerror(errno));
                tree_skip(t, child);
                empty = 0;
            }
        }
        lua_settop(L, child - 1);
    }
    lua_settop(L, top);
    return empty;
}

static int remove_tree(lua_State *L, work *w, const char *path, const char *name, uid_t uid)
{
    walk k;
    tree t;
    struct stat st, lst;
    int fd, r, err, result;
    walk_init(&k, L, w, "remove_tree", path, uid, 0);
    if ((r = walk_to_parent(&k)) != 0)
        return r;
    fd = work_keep(w, openat(k.fd, name, TP_FILES_DIR_FLAGS));
    if (fd < 0) {
        err = errno;
        if (fstatat(k.fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISLNK(lst.st_mode))
                return tp_fail(L, "symlink", "remove_tree: %s is a symbolic link; nothing was followed or removed",
                               path);
            if (!S_ISDIR(lst.st_mode))
                return tp_fail(L, "io", "remove_tree: %s is %s, not a directory", path, a_file_type(lst.st_mode));
        }
        if (err == ENOTDIR)
            return tp_fail(L, "io", "remove_tree: %s is not a directory", path);
        return fail_errno(L, err, "remove_tree", path);
    }
    if (fstat(fd, &st) != 0)
        return fail_errno(L, errno, "remove_tree", path);
    if (st.st_uid != uid)
        return tp_fail(L, "not_owner", "remove_tree: %s belongs to uid %I, not uid %I", path,
                       (lua_Integer)st.st_uid, (lua_Integer)uid);
    t.L = L;
    t.w = w;
    t.uid = uid;
    t.dev = st.st_dev;
    lua_createtable(L, 0, 2);
    result = lua_gettop(L);
    lua_newtable(L);
    t.removed = lua_gettop(L);
    lua_newtable(L);
    t.skipped = lua_gettop(L);
    lua_pushstring(L, path);
    if (tree_clear(&t, fd, result + 3, 0)) {
        work_close(w, fd);
        if (unlinkat(k.fd, name, AT_REMOVEDIR) == 0) {
            tree_removed(&t, result + 3);
        } else {
            lua_pushstring(L, strerror(errno));
            tree_skip(&t, result + 3);
        }
    }
    lua_settop(L, t.skipped);
    lua_setfield(L, result, "skipped");
    lua_setfield(L, result, "removed");
    luaL_setmetatable(L, TP_FILES_REMOVAL_CLASS);
    return 1;
}

/***
 * Removes a directory tree, but only what belongs to the uid: entries of
 * others are listed as skipped (and the directories holding them kept).
 * Symbolic links are never followed at any depth (a link is removed as an
 * entry), every step is relative to a directory descriptor, mount points
 * are not crossed, and directories more than 32 levels down are skipped.
 * The directory itself goes when it is empty at the end.
 * @function remove_tree
 * @tparam string dir
 * @tparam[opt] table opts `uid` (default the effective uid)
 * @treturn table `{removed={path, ...}, skipped={{path=, reason=}, ...}}`,
 *   or the fail triple (`not_found`, `symlink`, `not_owner`, `io`)
 */
static int tp_files_remove_tree(lua_State *L)
{
    size_t len;
    const char *path = check_path(L, 1, &len);
    if (len > 1 && path[len - 1] == '/') {
        /* A directory is often written with a trailing slash. */
        while (len > 1 && path[len - 1] == '/') len--;
        lua_pushlstring(L, path, len);
        lua_replace(L, 1);
        path = lua_tostring(L, 1);
    }
    return run_path_op(L, path, remove_tree);
}

/* ---- audit -------------------------------------------------------------- */

/* Appends {path=, code=, problem=} to the list at index list; the problem
 * is at the top of the stack (popped). */
#define TP_FILES_FINDING_CLASS "tokenpolicy.AuditFinding"
#define TP_FILES_FINDINGS_CLASS "tokenpolicy.AuditFindings"

static void add_finding(lua_State *L, int list, const char *path, const char *code)
{
    lua_createtable(L, 0, 3);
    luaL_setmetatable(L, TP_FILES_FINDING_CLASS);
    lua_insert(L, -2);
    lua_setfield(L, -2, "problem");
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

/* The findings for a directory on the path; parent is the directory
 * holding it (NULL for "/" and "."). */
static void audit_dir(lua_State *L, int list, uid_t uid, const char *dir, const char *parent)
{
    struct stat st, up;
    char mode[8];
    if (lstat(dir, &st) != 0) return;  /* the file was reached, so only a race */
    if (S_ISLNK(st.st_mode)) {
        /* The rule write_token follows. */
        if (st.st_uid != 0 || !parent || stat(parent, &up) != 0 || up.st_uid != 0 || (up.st_mode & 022)) {
            lua_pushfstring(L, "%s is a symbolic link owned by uid %I where others could have planted it; "
                            "tokenpolicy does not write through it: use a path without the link",
                            dir, (lua_Integer)st.st_uid);
            add_finding(L, list, dir, "symlink");
            return;
        }
        if (stat(dir, &st) != 0) return;
    }
    if (st.st_uid != uid && st.st_uid != 0) {
        lua_pushfstring(L, "the directory %s belongs to uid %I, who can replace or remove the token: "
                        "keep the token in a directory of your own", dir, (lua_Integer)st.st_uid);
        add_finding(L, list, dir, "not_owner");
    }
    if (others_can_replace(&st)) {
        if (st.st_mode & S_ISVTX)
            lua_pushfstring(L, "group or others can write the directory %s (mode %s); the sticky bit protects "
                            "only directories root owns: run chmod go-w %s", dir, octal(mode, st.st_mode), dir);
        else
            lua_pushfstring(L, "group or others can write the directory %s (mode %s), so they can replace the "
                            "token: run chmod go-w %s", dir, octal(mode, st.st_mode), dir);
        add_finding(L, list, dir, "insecure_permissions");
    }
}

/* The findings for the entry at path itself. */
static void audit_entry(lua_State *L, int list, uid_t uid, const char *path, const struct stat *st)
{
    char mode[8];
    if (S_ISLNK(st->st_mode)) {
        lua_pushfstring(L, "%s is a symbolic link; token files are read and written only as regular files: "
                        "replace the link with the file", path);
        add_finding(L, list, path, "symlink");
        return;
    }
    if (S_ISDIR(st->st_mode)) {
        audit_dir(L, list, uid, path, NULL);
        return;
    }
    if (st->st_uid != uid && st->st_uid != 0) {
        lua_pushfstring(L, "%s belongs to uid %I, who can read or change the token: remove it and write "
                        "the token again", path, (lua_Integer)st->st_uid);
        add_finding(L, list, path, "not_owner");
    }
    if (!S_ISREG(st->st_mode)) {
        lua_pushfstring(L, "%s is %s, not a regular file: remove it and write the token again",
                        path, a_file_type(st->st_mode));
        add_finding(L, list, path, "io");
    } else if (st->st_mode & 077) {
        lua_pushfstring(L, "group or others can access the token file %s (mode %s): run chmod 600 %s",
                        path, octal(mode, st->st_mode), path);
        add_finding(L, list, path, "insecure_permissions");
    }
}

/***
 * Looks at a token file and every directory above it, up to "/", and says
 * what lets someone else read, replace or redirect the token.  Nothing is
 * changed (see fix_permissions).
 * @function audit
 * @tparam string path
 * @tparam[opt] table opts `uid` (whose token it is; default the effective uid)
 * @treturn table a list of findings `{path=, code=, problem=}`, empty when
 *   all is well; `code` is `not_owner`, `insecure_permissions`, `symlink`
 *   (or `io` for a FIFO or other non-file at the path); or the fail
 *   triple (`not_found`, `io`)
 */
static int tp_files_audit(lua_State *L)
{
    static const char *const options[] = { "uid", NULL };
    size_t len, end;
    const char *path = check_path(L, 1, &len);
    struct stat st;
    file_opts o;
    int list, dirs;
    lua_Integer count = 0;
    check_file_opts(L, 2, options, &o, TP_FILES_DEFAULT_MAX_SIZE);
    if (lstat(path, &st) != 0)
        return fail_errno(L, errno, "audit", path);
    lua_newtable(L);
    list = lua_gettop(L);
    audit_entry(L, list, o.uid, path, &st);

    /* The directories above, nearest first: each prefix of path that ends
     * before a '/' (runs of '/' count as one). */
    lua_newtable(L);
    dirs = lua_gettop(L);
    end = len;
    while (end > 1 && path[end - 1] == '/') end--;
    while (!(end == 1 && path[0] == '/')) {
        while (end > 0 && path[end - 1] != '/') end--;
        while (end > 1 && path[end - 1] == '/') end--;
        if (end == 0 && strcmp(path, ".") == 0)
            break;  /* the working directory was the entry itself */
        if (end == 0)
            lua_pushliteral(L, ".");
        else
            lua_pushlstring(L, path, end);
        lua_rawseti(L, dirs, ++count);
        if (end == 0) break;
    }
    for (lua_Integer i = 1; i <= count; i++) {
        lua_rawgeti(L, dirs, i);
        lua_rawgeti(L, dirs, i + 1);
        audit_dir(L, list, o.uid, lua_tostring(L, -2), lua_tostring(L, -1));
        lua_pop(L, 2);
    }
    lua_settop(L, list);
    luaL_setmetatable(L, TP_FILES_FINDINGS_CLASS);
    return 1;
}

/* Pushes "code: problem" for the finding at idx (the problem names the
 * path already). */
static void push_finding_line(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, idx, "code");
    lua_getfield(L, idx, "problem");
    lua_pushfstring(L, "%s: %s", luaL_optstring(L, -2, "?"), luaL_optstring(L, -1, "?"));
    lua_replace(L, -3);
    lua_pop(L, 1);
}

static int tp_files_finding__tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    push_finding_line(L, 1);
    return 1;
}

/* One finding per line, or "no findings". */
static int tp_files_findings__tostring(lua_State *L)
{
    lua_Integer n;
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 1);
    if (n == 0) {
        lua_pushliteral(L, "no findings");
        return 1;
    }
    /* Joined two strings at a time: findings are a handful (one per
     * directory up to "/" at most), and no buffer is open meanwhile. */
    lua_pushliteral(L, "");
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) {
            lua_pushliteral(L, "\n");
            lua_concat(L, 2);
        }
        lua_rawgeti(L, 1, i);
        push_finding_line(L, -1);
        lua_remove(L, -2);
        lua_concat(L, 2);
    }
    return 1;
}

/* ---- fix_permissions ---------------------------------------------------- */

static int fix_permissions(lua_State *L, work *w, const char *path, const char *name, uid_t uid)
{
    walk k;
    struct stat st;
    int r, fd, list;
    mode_t to;
    /* A first walk that changes nothing: a missing or linked file fails
     * before any directory is touched. */
    walk_init(&k, L, w, "fix_permissions", path, uid, 0);
    if ((r = walk_to_parent(&k)) != 0)
        return r;
    if (fstatat(k.fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return fail_errno(L, errno, "fix_permissions", path);
    if (S_ISLNK(st.st_mode))
        return tp_fail(L, "symlink", "fix_permissions: %s is a symbolic link, which is never followed: "
                       "replace it with the token file", path);
    if (!S_ISREG(st.st_mode))
        return tp_fail(L, "io", "fix_permissions: %s is %s, not a regular file", path, a_file_type(st.st_mode));
    work_clear(w);

    lua_newtable(L);
    list = lua_gettop(L);
    walk_init(&k, L, w, "fix_permissions", path, uid, WALK_FIX);
    k.changes = list;
    if ((r = walk_to_parent(&k)) != 0)
        return r;
    /* The token's own directory: 0700 when it is the caller's.  Root's
     * directories may be system ones that others must pass through, so
     * for root only group and other write go (and root's sticky /tmp
     * stays as it is). */
    if (k.st.st_uid == uid) {
        to = uid != 0 ? 0700 : (others_can_replace(&k.st) ? k.st.st_mode & 07755 : k.st.st_mode);
        if ((to & 07777) != (k.st.st_mode & 07777)) {
            if (fchmod(k.fd, to) != 0)
                return tp_fail(L, "io", "fix_permissions: chmod %s: %s", push_prefix(&k, k.here), strerror(errno));
            push_prefix(&k, k.here);
            add_change(L, list, k.st.st_mode, to);
        }
    }
    fd = work_keep(w, openat(k.fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (fd < 0 || fstat(fd, &st) != 0)
        return fail_errno(L, errno, "fix_permissions", path);
    if (!S_ISREG(st.st_mode))
        return tp_fail(L, "io", "fix_permissions: %s is %s, not a regular file", path, a_file_type(st.st_mode));
    if (st.st_uid == uid && (st.st_mode & 077)) {
        if (fchmod(fd, 0600) != 0)
            return tp_fail(L, "io", "fix_permissions: chmod %s: %s", path, strerror(errno));
        lua_pushstring(L, path);
        add_change(L, list, st.st_mode, 0600);
    }
    lua_settop(L, list);
    return 1;
}

/***
 * Repairs the permissions audit complains about, on what the uid owns:
 * the token file becomes 0600 when group or others can access it, its
 * directory 0700 (for root only group and other write are removed, and
 * root's sticky /tmp is left alone), and group and other write are removed
 * from the uid's other directories on the path.  Ownership and symbolic
 * links are not changed.
 * @function fix_permissions
 * @tparam string path
 * @tparam[opt] table opts `uid` (default the effective uid)
 * @treturn table the changes made, `{{path=, from=, to=}, ...}` (modes as
 *   integers), or the fail triple (`not_found`, `symlink`, `io`)
 */
static int tp_files_fix_permissions(lua_State *L)
{
    size_t len;
    return run_path_op(L, check_path(L, 1, &len), fix_permissions);
}

/* ---- list_dir ----------------------------------------------------------- */

static int list_dir(lua_State *L, work *w, const char *path, const char *name, uid_t uid)
{
    walk k;
    tree t;
    struct stat lst;
    const char **names;
    lua_Integer count;
    int fd, r, err;
    walk_init(&k, L, w, "list_dir", path, uid, 0);
    if ((r = walk_to_parent(&k)) != 0)
        return r;
    /* O_DIRECTORY is checked before anything is opened: a FIFO there fails
     * with ENOTDIR at once, and O_NOFOLLOW refuses a link to elsewhere. */
    fd = work_keep(w, openat(k.fd, name, TP_FILES_DIR_FLAGS | O_NONBLOCK));
    if (fd < 0) {
        err = errno;
        if (fstatat(k.fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISLNK(lst.st_mode))
                return tp_fail(L, "symlink", "list_dir: %s is a symbolic link; it was not followed", path);
            if (!S_ISDIR(lst.st_mode))
                return tp_fail(L, "io", "list_dir: %s is %s, not a directory", path, a_file_type(lst.st_mode));
        }
        return fail_errno(L, err, "list_dir", path);
    }
    t.L = L;
    t.w = w;
    t.uid = uid;
    count = list_names(&t, fd, &names);
    if (count < 0)
        return fail_errno(L, errno, "list_dir", path);
    lua_createtable(L, (int)count, 0);
    for (lua_Integer i = 0; i < count; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    luaL_setmetatable(L, TP_FILES_NAMES_CLASS);
    return 1;
}

/***
 * The names in a directory, sorted, without "." and "..": the directory
 * is opened without following a symbolic link at its path (the walk to it
 * is write_token's), so a link planted where a token directory should be
 * is reported, never listed.  Nothing below is looked at.
 * @function list_dir
 * @tparam string dir
 * @treturn {string,...} the names, or the fail triple (`not_found`,
 *   `symlink`, `io`)
 */
static int tp_files_list_dir(lua_State *L)
{
    static const char *const options[] = { NULL };
    size_t len;
    const char *path = check_path(L, 1, &len);
    const char *name;
    work *w;
    int n;
    if (len > 1 && path[len - 1] == '/') {
        while (len > 1 && path[len - 1] == '/') len--;
        lua_pushlstring(L, path, len);
        lua_replace(L, 1);
        path = lua_tostring(L, 1);
    }
    name = check_last_name(L, 1, path);
    tp_opts(L, 2, options);
    w = work_new(L);
    n = list_dir(L, w, path, name, geteuid());
    work_clear(w);
    return n;
}

/* ---- rewrite_config ----------------------------------------------------- */

static int rewrite_config(lua_State *L, work *w, const char *path, const char *name, const char *text,
                          size_t len, uid_t uid)
{
    walk k;
    struct stat old;
    int r;
    walk_init(&k, L, w, "rewrite_config", path, uid, 0);
    if ((r = walk_to_parent(&k)) != 0)
        return r;
    if (fstatat(k.fd, name, &old, AT_SYMLINK_NOFOLLOW) != 0)
        return fail_errno(L, errno, "rewrite_config", path);
    if (S_ISLNK(old.st_mode))
        return tp_fail(L, "symlink", "rewrite_config: %s is a symbolic link; nothing was changed (edit the file it "
                       "points to)", path);
    if (!S_ISREG(old.st_mode))
        return tp_fail(L, "io", "rewrite_config: %s is %s, not a regular file", path, a_file_type(old.st_mode));
    if (old.st_uid != uid)
        return tp_fail(L, "not_owner", "rewrite_config: %s belongs to uid %I, not uid %I", path,
                       (lua_Integer)old.st_uid, (lua_Integer)uid);

    /* The new file gets the old one's mode (and owner and group when the
     * system lets us: not a member of the old group keeps the default one),
     * so a 0644 rucio.cfg stays 0644 and a 0600 settings.conf stays 0600. */
    return replace_file(L, w, &k, "rewrite_config", path, name, text, len, 0, old.st_mode & 07777, old.st_uid,
                        old.st_gid, 0);
}

/***
 * Replaces the contents of an existing configuration file atomically (a
 * new file beside it, synced and renamed over it), keeping its mode,
 * owner and group: for settings.conf and rucio.cfg edits.  Unlike
 * read_config it does not follow a symbolic link at the path (a link
 * fails with `symlink` and nothing changes), and the file must belong to
 * the uid.
 * @function rewrite_config
 * @tparam string path
 * @tparam string text the new contents (may be empty)
 * @tparam[opt] table opts `uid` (default the effective uid)
 * @treturn boolean true, or the fail triple (`not_found`, `symlink`,
 *   `not_owner`, `io`)
 */
static int tp_files_rewrite_config(lua_State *L)
{
    static const char *const options[] = { "uid", NULL };
    size_t len, tlen;
    const char *path = check_path(L, 1, &len);
    const char *name = check_last_name(L, 1, path);
    const char *text = tp_check_string(L, 2, &tlen);
    file_opts o;
    work *w;
    int n;
    check_file_opts(L, 3, options, &o, TP_FILES_DEFAULT_MAX_SIZE);
    w = work_new(L);
    n = rewrite_config(L, w, path, name, text, tlen, o.uid);
    work_clear(w);
    return n;
}

/* ---- how results print ---------------------------------------------------- */

/* An integer field of the table at index 1 (0 when absent). */
static lua_Integer int_field(lua_State *L, const char *name)
{
    lua_Integer v;
    lua_getfield(L, 1, name);
    v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Pushes the value at idx as text, every control byte shown as '?': a name
 * someone else chose (in /tmp) must not reach a terminal as an escape
 * sequence. */
static void push_shown(lua_State *L, int idx)
{
    size_t len;
    const char *s;
    luaL_Buffer b;
    s = luaL_tolstring(L, idx, &len);
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        luaL_addchar(&b, (c < 0x20 || c == 0x7f) ? '?' : (char)c);
    }
    luaL_pushresult(&b);
    lua_remove(L, -2);
}

/* Appends to the string at the top the items of the list at list (an
 * absolute index), shown as push_shown shows them, sep between two. */
static void add_items(lua_State *L, int list, const char *sep)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, list);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushstring(L, i == 1 ? "" : sep);
        lua_rawgeti(L, list, i);
        push_shown(L, -1);
        lua_remove(L, -2);
        lua_concat(L, 3);
    }
}

/* "tokenpolicy.FileStatus: file, mode 0600, uid 1000, gid 1000, 42 bytes,
 * modified 2026-11-23 14:52:54 UTC": what `ls -l` would say. */
static int tp_files_status__tostring(lua_State *L)
{
    char mode[8], when[32];
    lua_Integer size;
    luaL_checktype(L, 1, LUA_TTABLE);
    size = int_field(L, "size");
    lua_getfield(L, 1, "type");
    lua_pushfstring(L, "%s: %s, mode %s, uid %I, gid %I, %I byte%s, modified %s", TP_FILES_STATUS_CLASS,
                    luaL_optstring(L, -1, "?"), octal(mode, (mode_t)int_field(L, "mode")), int_field(L, "uid"),
                    int_field(L, "gid"), size, size == 1 ? "" : "s", tp_format_utc(when, int_field(L, "mtime")));
    return 1;
}

/* "tokenpolicy.User: alice (uid 1000), home /home/alice" */
static int tp_files_user__tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushfstring(L, "%s: ", TP_FILES_USER_CLASS);
    lua_getfield(L, 1, "name");
    push_shown(L, -1);
    lua_remove(L, -2);
    lua_pushfstring(L, " (uid %I), home ", int_field(L, "uid"));
    lua_getfield(L, 1, "home");
    push_shown(L, -1);
    lua_remove(L, -2);
    lua_concat(L, 4);
    return 1;
}

/* "tokenpolicy.Removal: 2 removed, 1 skipped", then one line per path:
 * "  removed /tmp/x/a", "  skipped /tmp/x/b: <reason>". */
static int tp_files_removal__tostring(lua_State *L)
{
    lua_Integer removed, skipped;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "removed");
    lua_getfield(L, 1, "skipped");
    removed = lua_istable(L, 2) ? (lua_Integer)lua_rawlen(L, 2) : 0;
    skipped = lua_istable(L, 3) ? (lua_Integer)lua_rawlen(L, 3) : 0;
    lua_pushfstring(L, "%s: %I removed, %I skipped", TP_FILES_REMOVAL_CLASS, removed, skipped);
    for (lua_Integer i = 1; i <= removed; i++) {
        lua_pushliteral(L, "\n  removed ");
        lua_rawgeti(L, 2, i);
        push_shown(L, -1);
        lua_remove(L, -2);
        lua_concat(L, 3);
    }
    for (lua_Integer i = 1; i <= skipped; i++) {
        lua_pushliteral(L, "\n  skipped ");
        lua_rawgeti(L, 3, i);
        lua_getfield(L, -1, "path");
        push_shown(L, -1);
        lua_remove(L, -2);
        lua_pushliteral(L, ": ");
        lua_getfield(L, -3, "reason");
        push_shown(L, -1);
        lua_remove(L, -2);
        lua_remove(L, -4);
        lua_concat(L, 5);
    }
    return 1;
}

/* "tokenpolicy.GroupIds: 1000, 27" and "tokenpolicy.DirNames: 2 names: a, b". */
static int tp_files_groups__tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushfstring(L, "%s: ", TP_FILES_GROUPS_CLASS);
    add_items(L, 1, ", ");
    return 1;
}

static int tp_files_names__tostring(lua_State *L)
{
    lua_Integer n;
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 1);
    lua_pushfstring(L, "%s: %I name%s%s", TP_FILES_NAMES_CLASS, n, n == 1 ? "" : "s", n ? ": " : "");
    add_items(L, 1, ", ");
    return 1;
}

void tp_open_files(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "stat", tp_files_stat },
        { "user", tp_files_user },
        { "euid", tp_files_euid },
        { "uid", tp_files_uid },
        { "groups", tp_files_groups },
        { "cwd", tp_files_cwd },
        { "read_token", tp_files_read_token },
        { "read_config", tp_files_read_config },
        { "write_token", tp_files_write_token },
        { "remove_token", tp_files_remove_token },
        { "remove_tree", tp_files_remove_tree },
        { "audit", tp_files_audit },
        { "fix_permissions", tp_files_fix_permissions },
        { "list_dir", tp_files_list_dir },
        { "rewrite_config", tp_files_rewrite_config },
        { NULL, NULL }
    };
    static const luaL_Reg work_meta[] = {
        { "__gc", tp_files_work__gc },
        { "__close", tp_files_work__gc },
        { NULL, NULL }
    };
    static const luaL_Reg info_meta[] = {
        { "__tostring", tp_files_info__tostring },
        { NULL, NULL }
    };
    tp_register_class(L, TP_FILES_WORK_CLASS, work_meta, NULL, 0);
    static const luaL_Reg finding_meta[] = {
        { "__tostring", tp_files_finding__tostring },
        { NULL, NULL }
    };
    static const luaL_Reg findings_meta[] = {
        { "__tostring", tp_files_findings__tostring },
        { NULL, NULL }
    };
    tp_register_class(L, TP_FILES_INFO_CLASS, info_meta, NULL, 0);
    tp_register_class(L, TP_FILES_FINDING_CLASS, finding_meta, NULL, 0);
    tp_register_class(L, TP_FILES_FINDINGS_CLASS, findings_meta, NULL, 0);
    {
        static const luaL_Reg status_meta[] = { { "__tostring", tp_files_status__tostring }, { NULL, NULL } };
        static const luaL_Reg user_meta[] = { { "__tostring", tp_files_user__tostring }, { NULL, NULL } };
        static const luaL_Reg removal_meta[] = { { "__tostring", tp_files_removal__tostring }, { NULL, NULL } };
        static const luaL_Reg groups_meta[] = { { "__tostring", tp_files_groups__tostring }, { NULL, NULL } };
        static const luaL_Reg names_meta[] = { { "__tostring", tp_files_names__tostring }, { NULL, NULL } };
        tp_register_class(L, TP_FILES_STATUS_CLASS, status_meta, NULL, 0);
        tp_register_class(L, TP_FILES_USER_CLASS, user_meta, NULL, 0);
        tp_register_class(L, TP_FILES_REMOVAL_CLASS, removal_meta, NULL, 0);
        tp_register_class(L, TP_FILES_GROUPS_CLASS, groups_meta, NULL, 0);
        tp_register_class(L, TP_FILES_NAMES_CLASS, names_meta, NULL, 0);
    }
    luaL_setfuncs(L, functions, 0);
}
