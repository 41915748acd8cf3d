/* Files: the facts discovery needs about paths and users (lstat, the
 * password database), and the safe token file primitives. */
#include <errno.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
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

static const char *file_type(mode_t mode)
{
    if (S_ISREG(mode)) return "file";
    if (S_ISDIR(mode)) return "directory";
    if (S_ISLNK(mode)) return "symlink";
    if (S_ISFIFO(mode)) return "fifo";
    if (S_ISSOCK(mode)) return "socket";
    return "other";
}

/* Pushes {type=, mode=, uid=, gid=, size=, mtime=} for st. */
static void push_stat(lua_State *L, const struct stat *st)
{
    lua_createtable(L, 0, 6);
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
}

/***
 * What is at a path, without following a symbolic link there (lstat).
 * @function stat
 * @tparam string path
 * @treturn table `{type=, mode=, uid=, gid=, size=, mtime=}`, `type` one of
 *   "file", "directory", "symlink", "fifo", "socket", "other"; or the fail
 *   triple (`not_found`, `io`)
 */
static int tp_files_stat(lua_State *L)
{
    size_t len;
    const char *path = tp_check_string(L, 1, &len);
    struct stat st;
    if (strlen(path) != len)
        return luaL_argerror(L, 1, "path contains a NUL byte");
    if (lstat(path, &st) != 0)
        return fail_errno(L, errno, "stat", path);
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
    return 1;
}

/***
 * The effective uid of the process.
 * @function euid
 * @treturn integer
 */
static int tp_files_euid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)geteuid());
    return 1;
}

void tp_open_files(lua_State *L)
{
    static const luaL_Reg functions[] = {
        { "stat", tp_files_stat },
        { "user", tp_files_user },
        { "euid", tp_files_euid },
        { NULL, NULL }
    };
    luaL_setfuncs(L, functions, 0);
}
