/* realprog: real programs as workloads.
 *
 * Runs one real program (it inherits LD_PRELOAD, so it runs on the allocator under test),
 * waits for it and reports its wall time. One op = one unit of the program's work (N below).
 *
 *   realprog -p py      python3: dicts of strings, lists of tuples, json round trips, sorts
 *                       (N = 200000 objects); pymalloc serves the small objects, so malloc
 *                       sees containers, big strings and arenas
 *   realprog -p sqlite  python3's sqlite3, in memory: N = 200000 rows inserted, indexed,
 *                       grouped, updated, deleted
 *   realprog -p cc      cc -O2 -c of a generated C file of N = 300 functions (cc1 and as
 *                       run on the allocator too)
 *   realprog -p redis   redis-server on the allocator, loaded by redis-benchmark (not on it)
 *                       over a unix socket: N = 100000 requests of each of SET, GET, INCR (on
 *                       100000 random keys), LPUSH, RPUSH, LPOP, RPOP, SADD, HSET, SPOP, ZADD,
 *                       ZPOPMIN (redis-benchmark's one key per type), 256 B values, 16
 *                       requests pipelined, 50 connections; one op = one request; the time is
 *                       redis-benchmark's run (the server's start is not in it).  Debian links
 *                       redis-server with jemalloc: without LD_PRELOAD (the glibc runs) the
 *                       server gets LD_PRELOAD=<libc>, so that glibc's malloc serves it
 *   realprog ... [-s SCALE]   N scaled
 */
#include "bench.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static const char PY[] =
    "import json, sys\n"
    "n = int(sys.argv[1])\n"
    "d = {('k%d' % i) * (1 + i % 7): [str(i)] * (i % 13) for i in range(n)}\n"
    "rows = sorted(((len(k), k[:20], sum(map(len, v))) for k, v in d.items()), reverse=True)\n"
    "blob = json.dumps({'rows': rows[: n // 4], 'keys': list(d)[: n // 4]})\n"
    "back = json.loads(blob)\n"
    "parts = ''.join(k for k in back['keys']).split('k')\n"
    "del d\n"
    "print(len(rows) + len(back['rows']) + len(parts))\n";

static const char SQLITE[] =
    "import sqlite3, sys, random\n"
    "n = int(sys.argv[1])\n"
    "rnd = random.Random(7)\n"
    "db = sqlite3.connect(':memory:')\n"
    "db.execute('create table t (a integer, b text, c real)')\n"
    "db.executemany('insert into t values (?, ?, ?)',\n"
    "               ((i, 'x' * rnd.randint(20, 200), rnd.random()) for i in range(n)))\n"
    "db.execute('create index tb on t (b)')\n"
    "s = db.execute('select length(b), count(*), avg(c) from t group by length(b)').fetchall()\n"
    "db.execute('update t set b = b || b where a % 3 = 0')\n"
    "db.execute('delete from t where a % 5 = 0')\n"
    "print(len(s), db.execute('select count(*) from t').fetchone()[0])\n";

/* a C file of `n` functions with some structure for the optimizer to chew on */
static void write_c_source(FILE *f, long n) {
    fprintf(f, "struct node { struct node *next; long v[8]; };\n");
    for (long i = 0; i < n; i++) {
        fprintf(f,
                "long f%ld(struct node *p, long k) {\n"
                "  long s = %ld;\n"
                "  for (; p; p = p->next)\n"
                "    for (int j = 0; j < 8; j++) s += (p->v[j] ^ k) * %ld + (s >> %ld);\n"
                "  switch (k & 7) { case 0: s += f%ld(0, s); break; case 1: s *= 3; break;\n"
                "    case 2: s ^= k; break; default: s -= %ld; }\n"
                "  return s;\n"
                "}\n",
                i, i, i % 17 + 1, i % 5 + 1, i ? i - 1 : 0, i);
    }
}

/* start argv[0] with its stdout on /dev/null (the program's output is not ours); with
 * off_allocator, without LD_PRELOAD (a load generator that is not under test) */
static pid_t start(char *const argv[], int off_allocator) {
    pid_t pid = fork();
    if (pid < 0) bench_die("realprog: fork: %s", strerror(errno));
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        if (off_allocator) unsetenv("LD_PRELOAD");
        execvp(argv[0], argv);
        fprintf(stderr, "realprog: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static int wait_status(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) bench_die("realprog: waitpid: %s", strerror(errno));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run(char *const argv[]) { return wait_status(start(argv, 0)); }

#define REDIS_TESTS 12 /* the -t list below */

/* the library our malloc comes from: libc itself when nothing is preloaded */
static const char *malloc_library(void) {
    Dl_info info;
    return dladdr((void *)&malloc, &info) && info.dli_fname ? info.dli_fname : NULL;
}

/* copy a file to stderr (a failed server's log) */
static void show_file(const char *path) {
    int fd = open(path, O_RDONLY);
    char buf[4096];
    ssize_t k;
    while (fd >= 0 && (k = read(fd, buf, sizeof buf)) > 0) (void)!write(2, buf, (size_t)k);
    if (fd >= 0) close(fd);
}

/* redis-server on a unix socket in a private directory, loaded by redis-benchmark; returns
 * the server's status if it failed (its log then goes to stderr), else the benchmark's; the
 * benchmark's time in *secs */
static int run_redis(long n, double *secs) {
    char dir[] = "/tmp/hzgen-realprog-redis-XXXXXX", sock[128], log[128], nbuf[32];
    if (!mkdtemp(dir)) bench_die("realprog: mkdtemp: %s", strerror(errno));
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    snprintf(log, sizeof log, "%s/redis.log", dir);
    snprintf(nbuf, sizeof nbuf, "%ld", n);
    const char *preload = getenv("LD_PRELOAD");
    if (!preload || !*preload) {               /* glibc's malloc, not the jemalloc it links */
        const char *libc = malloc_library();
        if (libc) setenv("LD_PRELOAD", libc, 1);
    }
    char *server[] = {"redis-server", "--port", "0", "--unixsocket", sock, "--dir", dir,
                      "--save", "", "--appendonly", "no", "--daemonize", "no",
                      "--loglevel", "warning", "--logfile", log, NULL};
    pid_t srv = start(server, 0);
    if (preload) setenv("LD_PRELOAD", preload, 1);
    else unsetenv("LD_PRELOAD");
    /* ready when the socket accepts */
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock);
    int ready = 0, exited = -1;
    for (int i = 0; i < 1000 && !ready && exited < 0; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        ready = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
        if (fd >= 0) close(fd);
        if (!ready) {
            int st;
            if (waitpid(srv, &st, WNOHANG) == srv)
                exited = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            struct timespec nap = {0, 10000000L};
            nanosleep(&nap, NULL);
        }
    }
    int rc = 0;
    if (ready) {
        char *client[] = {"redis-benchmark", "-s", sock, "-q", "-n", nbuf, "-r", "100000",
                          "-d", "256", "-P", "16",
                          "-t", "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin", NULL};
        double t0 = bench_now();
        rc = wait_status(start(client, 1));
        *secs = bench_now() - t0;
    }
    if (exited < 0) {
        kill(srv, SIGTERM);                      /* a clean shutdown exits 0 */
        exited = wait_status(srv);
    }
    if (exited || !ready) show_file(log);
    unlink(sock);
    unlink(log);
    rmdir(dir);
    if (!ready) bench_die("realprog: redis-server did not accept connections on %s (status %d)", sock, exited);
    if (exited) fprintf(stderr, "realprog: redis-server exited with status %d\n", exited);
    return exited ? exited : rc;
}

int main(int argc, char **argv) {
    const char *prog = NULL;
    double scale = 1.0;
    int c;
    while ((c = getopt(argc, argv, "p:s:h")) != -1) {
        if (c == 'p') prog = optarg;
        else if (c == 's') scale = strtod(optarg, NULL);
        else {
            fprintf(stderr, "usage: %s -p py|sqlite|cc|redis [-s SCALE]\n", argv[0]);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!prog || !(scale > 0)) bench_die("realprog: -p py|sqlite|cc|redis and a positive -s are required");
    char nbuf[32], path[] = "/tmp/hzgen-realprog-XXXXXX.c";
    long n;
    int rc;
    double t0;
    if (!strcmp(prog, "py") || !strcmp(prog, "sqlite")) {
        n = (long)bench_scaled(200000, scale, 1000);
        snprintf(nbuf, sizeof nbuf, "%ld", n);
        char *cmd[] = {"python3", "-c", (char *)(prog[0] == 'p' ? PY : SQLITE), nbuf, NULL};
        t0 = bench_now();
        rc = run(cmd);
    } else if (!strcmp(prog, "cc")) {
        n = (long)bench_scaled(300, scale, 10);
        int fd = mkstemps(path, 2);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!f) bench_die("realprog: cannot write %s: %s", path, strerror(errno));
        write_c_source(f, n);
        fclose(f);
        char *cmd[] = {"cc", "-O2", "-c", path, "-o", "/dev/null", NULL};
        t0 = bench_now();
        rc = run(cmd);
        unlink(path);
    } else if (!strcmp(prog, "redis")) {
        n = ((long)bench_scaled(100000, scale, 1000) + 15) / 16 * 16;  /* whole pipelines */
        double secs;
        rc = run_redis(n, &secs);
        if (rc) bench_die("realprog: redis exited with status %d", rc);
        bench_result(prog, n * REDIS_TESTS, secs, "");
        return 0;
    } else {
        bench_die("realprog: unknown program '%s' (py, sqlite, cc, redis)", prog);
    }
    double secs = bench_now() - t0;
    if (rc) bench_die("realprog: %s exited with status %d", prog, rc);
    bench_result(prog, n, secs, "");
    return 0;
}
