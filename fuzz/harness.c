/* The libFuzzer harness every fuzz target is built from (docs/fuzzing.md).
 *
 * Each target is this file compiled with -DFUZZ_TARGET="<name>" and linked
 * with the C core's sources: one Lua 5.4 state per process, with the core
 * as `tokenpolicy.core` (linked in, not loaded from a .so), the project's
 * lua/ and fuzz/ on package.path, and fuzz/<name>.lua, which returns the
 * function each input is given to.  The public contract is what is fuzzed:
 * the target calls the library through Lua as a user would, and checks
 * what comes back (fuzz/fuzzlib.lua holds the shared oracles).  Any Lua
 * error out of that function is a finding: it is printed and the process
 * aborts, which libFuzzer records as a crash with its input.
 *
 * The harness also offers the targets one C function, fuzz_answers(list),
 * for the HTTP target: the raw answers (status line, headers, body) that
 * the next connections to its loopback server get, one per connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <lualib.h>
#include "../csrc/compat.h"

#ifndef FUZZ_TARGET
#error "build with -DFUZZ_TARGET=\"<name>\""
#endif
#ifndef FUZZ_ROOT
#error "build with -DFUZZ_ROOT=\"<the checkout>\""
#endif

int luaopen_tokenpolicy_core(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *state;
static int target_ref = LUA_NOREF;

/* ---- raw HTTP answers ----------------------------------------------------- */

/* A loopback TCP server on its own thread: each connection it accepts gets
 * the next raw answer of the current input, written whole, then the
 * sending side is shut so the reader sees its end (a connection with no
 * answer left gets none: an empty reply).  The server side of each
 * connection stays open until the input is done, so no reset can cut an
 * answer short.  libcurl connects to it like to any peer, so answers go
 * through exactly the code a real peer's do; no seam in the core. */
#define FUZZ_MAX_ANSWERS 8
#define FUZZ_MAX_CONNS 32

static pthread_mutex_t answers_lock = PTHREAD_MUTEX_INITIALIZER;
static char *answers[FUZZ_MAX_ANSWERS];
static size_t answer_len[FUZZ_MAX_ANSWERS];
static int nanswers, next_answer;
static int conns[FUZZ_MAX_CONNS];
static int nconns;
static int listener = -1, listen_port;

static void answers_clear(void)
{
    pthread_mutex_lock(&answers_lock);
    for (int i = 0; i < nanswers; i++) free(answers[i]);
    for (int i = 0; i < nconns; i++) close(conns[i]);
    nanswers = next_answer = nconns = 0;
    pthread_mutex_unlock(&answers_lock);
}

static void *serve(void *unused)
{
    (void)unused;
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return NULL;
        }
        pthread_mutex_lock(&answers_lock);
        if (next_answer < nanswers) {
            size_t off = 0, len = answer_len[next_answer];
            const char *a = answers[next_answer++];
            while (off < len) {
                ssize_t n = write(fd, a + off, len - off);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                off += (size_t)n;
            }
        }
        shutdown(fd, SHUT_WR);
        if (nconns < FUZZ_MAX_CONNS)
            conns[nconns++] = fd;
        else
            close(fd);
        pthread_mutex_unlock(&answers_lock);
    }
}

static void start_server(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    pthread_t t;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(listener, 64) != 0 ||
        getsockname(listener, (struct sockaddr *)&a, &alen) != 0 || pthread_create(&t, NULL, serve, NULL) != 0) {
        perror("fuzz: the loopback answer server");
        abort();
    }
    pthread_detach(t);
    listen_port = ntohs(a.sin_port);
}

/* fuzz_answers(list) -> port: the raw answers the next connections to
 * 127.0.0.1:port get, in order.  Replaces those of the previous input. */
static int fuzz_answers(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    answers_clear();
    if (listener < 0) start_server();
    pthread_mutex_lock(&answers_lock);
    for (int i = 1; i <= FUZZ_MAX_ANSWERS && lua_rawgeti(L, 1, i) == LUA_TSTRING; i++) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (!(answers[nanswers] = malloc(len ? len : 1))) abort();
        memcpy(answers[nanswers], s, len);
        answer_len[nanswers++] = len;
        lua_pop(L, 1);
    }
    pthread_mutex_unlock(&answers_lock);
    lua_pop(L, 1);
    lua_pushinteger(L, listen_port);
    return 1;
}

/* ---- Lua line coverage ------------------------------------------------------ */

/* libFuzzer sees the C core's edges; the Lua modules' lines (the CLI, the
 * rucio.cfg reader, classify, the Arvados config reader) it sees through
 * these extra counters, one per (chunk, line) hashed, bumped by a line
 * hook. */
#define FUZZ_LUA_COUNTERS 8192
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_lines[FUZZ_LUA_COUNTERS];

static void line_hook(lua_State *L, lua_Debug *ar)
{
    uintptr_t h;
    if (!lua_getinfo(L, "S", ar)) return;
    h = (uintptr_t)ar->source * 0x9E3779B97F4A7C15u ^ (uintptr_t)ar->currentline * 0xC2B2AE3D27D4EB4Fu;
    h ^= h >> 29;
    lua_lines[h % FUZZ_LUA_COUNTERS]++;
}

/* ---- the Lua state --------------------------------------------------------- */

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : luaL_tolstring(L, 1, NULL), 1);
    return 1;
}

static void die(lua_State *L, const char *when)
{
    fprintf(stderr, "\nfuzz %s: %s: %s\n", FUZZ_TARGET, when, lua_tostring(L, -1));
    fflush(stderr);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    lua_State *L;
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    state = L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    luaL_requiref(L, "tokenpolicy.core", luaopen_tokenpolicy_core, 0);
    lua_pop(L, 1);
    lua_pushcfunction(L, fuzz_answers);
    lua_setglobal(L, "fuzz_answers");
    lua_pushliteral(L, FUZZ_ROOT);
    lua_setglobal(L, "FUZZ_ROOT");
    lua_pushcfunction(L, traceback);
    if (luaL_dostring(L, "package.path = FUZZ_ROOT .. '/lua/?.lua;' .. FUZZ_ROOT .. '/lua/?/init.lua;' .. "
                         "FUZZ_ROOT .. '/fuzz/?.lua;' .. package.path") != 0)
        die(L, "setting package.path");
    if (luaL_loadfile(L, FUZZ_ROOT "/fuzz/" FUZZ_TARGET ".lua") != 0) die(L, "loading the target");
    if (lua_pcall(L, 0, 1, 1) != 0) die(L, "starting the target");
    if (!lua_isfunction(L, -1)) {
        lua_pushliteral(L, "the target script must return a function");
        die(L, "starting the target");
    }
    target_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned long runs;
    lua_State *L = state;
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, target_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 1) != 0) die(L, "finding");
    lua_settop(L, 0);
    answers_clear();
    /* A full collection now and then runs every __gc path, without
     * making each input pay for one. */
    if (++runs % 256 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
