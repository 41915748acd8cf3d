/* What a hostile neighbour does, fast, for spec/35-neighbours_spec.lua
 * (compiled by spec/helpers/neighbour.lua with cc).
 *
 *   neighbour_tool swap PARENT NAME LINK VICTIM LINK_UID DIR_UID TOKEN STAGE FILE...
 *     Plants PARENT/LINK -> VICTIM (owned by LINK_UID), then swaps PARENT/NAME
 *     (a directory) and PARENT/LINK in a tight loop with one atomic
 *     renameat2(RENAME_EXCHANGE), so NAME is the real directory or the link
 *     to VICTIM at any instant.  Whenever the real directory or one of the
 *     FILEs in it is gone (logout removed them), it is made again (mode 0700
 *     and 0600, owned by DIR_UID, FILEs holding TOKEN), so every logout finds
 *     something to remove (each made in STAGE, a private directory on the
 *     same file system, and renamed into place whole).  Prints "ready"
 *     once set up; on SIGTERM it prints the number of swaps and exits.
 *   neighbour_tool socket PATH
 *     Leaves a Unix socket at PATH (bound, then closed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

/* Makes the real directory at name when nothing is there, and each file
 * in it that is missing: each made in the private directory stage (on the
 * same file system), given to uid, and only then renamed into place:
 * logout never sees a half-made entry (still root's, or empty). */
static int stage = -1;

static void refill(int parent, const char *name, uid_t uid, const char *token, char **files, int nfiles)
{
    struct stat st;
    int dir;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        unlinkat(stage, "dir", AT_REMOVEDIR);
        if (mkdirat(stage, "dir", 0700) != 0) die("mkdir");
        if (fchownat(stage, "dir", uid, (gid_t)-1, AT_SYMLINK_NOFOLLOW) != 0) die("chown dir");
        if (fchmodat(stage, "dir", 0700, 0) != 0) die("chmod dir");
        if (renameat2(stage, "dir", parent, name, RENAME_NOREPLACE) != 0) {
            unlinkat(stage, "dir", AT_REMOVEDIR);
            return;
        }
    } else if (!S_ISDIR(st.st_mode)) {
        return;
    }
    dir = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0) return;
    for (int i = 0; i < nfiles; i++) {
        int fd;
        if (fstatat(dir, files[i], &st, AT_SYMLINK_NOFOLLOW) == 0) continue;
        fd = openat(stage, "file", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) continue;
        if (write(fd, token, strlen(token)) != (ssize_t)strlen(token)) die("write");
        if (fchown(fd, uid, (gid_t)-1) != 0) die("chown file");
        close(fd);
        if (renameat2(stage, "file", dir, files[i], RENAME_NOREPLACE) != 0)
            unlinkat(stage, "file", 0);
    }
    close(dir);
}

static int swap(int argc, char **argv)
{
    const char *name, *link, *victim, *token;
    uid_t link_uid, dir_uid;
    unsigned long swaps = 0;
    struct sigaction sa;
    int parent;
    if (argc < 11) {
        fputs("usage: neighbour_tool swap PARENT NAME LINK VICTIM LINK_UID DIR_UID TOKEN STAGE FILE...\n", stderr);
        return 2;
    }
    name = argv[3];
    link = argv[4];
    victim = argv[5];
    link_uid = (uid_t)strtoul(argv[6], NULL, 10);
    dir_uid = (uid_t)strtoul(argv[7], NULL, 10);
    token = argv[8];
    parent = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0) die("open parent");
    stage = open(argv[9], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (stage < 0) die("open stage");
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    if (symlinkat(victim, parent, link) != 0) die("symlink");
    if (fchownat(parent, link, link_uid, (gid_t)-1, AT_SYMLINK_NOFOLLOW) != 0) die("chown link");
    refill(parent, name, dir_uid, token, argv + 10, argc - 10);
    puts("ready");
    fflush(stdout);
    while (!stop) {
        if (renameat2(parent, name, parent, link, RENAME_EXCHANGE) == 0) {
            swaps++;
        } else if (errno == ENOENT) {
            /* logout removed the real directory: make another */
            struct stat st;
            refill(parent, fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? link : name,
                   dir_uid, token, argv + 10, argc - 10);
        } else {
            die("renameat2");
        }
        if (swaps % 2 == 0)
            refill(parent, name, dir_uid, token, argv + 10, argc - 10);
        else
            refill(parent, link, dir_uid, token, argv + 10, argc - 10);
    }
    printf("%lu\n", swaps);
    return 0;
}

static int make_socket(const char *path)
{
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) {
        fputs("socket path too long\n", stderr);
        return 2;
    }
    strcpy(a.sun_path, path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "swap") == 0)
        return swap(argc, argv);
    if (argc == 3 && strcmp(argv[1], "socket") == 0)
        return make_socket(argv[2]);
    fputs("usage: neighbour_tool swap ... | socket PATH\n", stderr);
    return 2;
}
