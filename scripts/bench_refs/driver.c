/* driver: the latency driver of scripts/bench.
 *
 *   driver rtt N WARMUP [-c] [-a PROGRAM_CPU,DRIVER_CPU] -- PROGRAM ARGS...
 *       Spawns PROGRAM with pipes, sends WARMUP + N `sign` requests one at a
 *       time (each written with one write(2), the next sent only once the whole
 *       answer line has been read) and prints the N measured round trips in
 *       nanoseconds, one per line.  With -c every answer must carry its own id.
 *       With -a the program (all its threads) runs on PROGRAM_CPU and the
 *       driver on DRIVER_CPU (the same CPU or two different ones).
 *       With -m METHOD,... the requests cycle through those methods (sign,
 *       openSession, closeSession; a closeSession releases the session id of
 *       the last openSession answer) and each measured round trip is printed as
 *       "METHOD NS".
 *   driver startup RUNS -- PROGRAM ARGS...
 *       RUNS times: spawn PROGRAM, write one `sign`, read the answer, close
 *       stdin, wait for exit.  Prints "TOTAL_NS FIRST_ANSWER_NS" per run.
 *   driver oneshot RUNS [-o TEXT] -- PROGRAM ARGS...
 *       RUNS times: spawn PROGRAM with stdin from /dev/null, read its output to
 *       end of file, wait for exit (the output must contain TEXT when given).
 *       Prints "TOTAL_NS FIRST_OUTPUT_NS" per run.
 *   driver pipe FILE -- PROGRAM ARGS...
 *       Spawns PROGRAM with stdin from FILE and stdout into a pipe that the
 *       driver drains with read(2) into a 1 MiB buffer, counting newlines, then
 *       waits for it with wait4(2).  Prints "WALL_NS USER_NS SYS_NS LINES":
 *       spawn to exit, and the CPU time of the program (its reaped children
 *       included) from its rusage.
 *
 * Timing uses CLOCK_MONOTONIC; the pipes are raw file descriptors (no stdio).
 * Exits 1 with a message on stderr when the program misbehaves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define CRED "{\"orgId\":\"acme-org\",\"apiKey\":\"0123456789abcdef0123456789abcdef\"}"
#define REQUEST "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"sign\",\"params\":" CRED "}\n"
#define OPEN "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"openSession\",\"params\":" CRED "}\n"
#define CLOSE "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"closeSession\",\"params\":" \
              "{\"userSessionId\":\"%s\"}}\n"

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "driver: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(1);
}

struct child { pid_t pid; int in; int out; };

/* CPUs for -a, or -1: the program inherits the affinity the driver has when spawning it. */
static int program_cpu = -1, driver_cpu = -1;

static void pin_self(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) die("sched_setaffinity");
}

/* Spawns argv with stdout into a pipe; stdin is a pipe too when in_fd < 0, else in_fd. */
static struct child spawn_from(char **argv, int in_fd) {
    if (program_cpu >= 0) pin_self(program_cpu);
    int to[2] = {-1, -1}, from[2];
    if ((in_fd < 0 && pipe2(to, O_CLOEXEC)) || pipe2(from, O_CLOEXEC)) die("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_fd < 0 ? to[0] : in_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, from[1], 1);
    struct child c;
    int rc = posix_spawn(&c.pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) { errno = rc; die("spawn"); }
    if (driver_cpu >= 0) pin_self(driver_cpu);
    if (in_fd < 0) close(to[0]);
    close(from[1]);
    c.in = to[1];
    c.out = from[0];
    return c;
}

static struct child spawn(char **argv) { return spawn_from(argv, -1); }

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("write to program");
        p += w;
        n -= (size_t)w;
    }
}

/* Reads one whole answer line into buf (NUL-terminated); returns its length. */
static size_t read_line(int fd, char *buf, size_t cap) {
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, cap - 1 - have);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read from program");
        if (r == 0) { errno = 0; die("program closed its output early"); }
        have += (size_t)r;
        if (buf[have - 1] == '\n') break;
        if (have >= cap - 1) { errno = 0; die("answer too long"); }
    }
    buf[have] = 0;
    if (memchr(buf, '\n', have) != buf + have - 1) { errno = 0; die("more than one line in one answer"); }
    return have;
}

static int finish(struct child *c) {
    if (c->in >= 0) close(c->in);
    char sink[4096];
    while (read(c->out, sink, sizeof sink) > 0) {}
    close(c->out);
    int status;
    while (waitpid(c->pid, &status, 0) < 0) if (errno != EINTR) die("waitpid");
    return status;
}

enum method { SIGN, OPEN_SESSION, CLOSE_SESSION };
static const char *const method_names[] = {"sign", "openSession", "closeSession"};
#define MAX_CYCLE 16

/* Parses "-m sign,openSession,..." into cycle[]; returns its length (0 on a bad name). */
static int parse_methods(const char *list, enum method *cycle) {
    int k = 0;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", list);
    for (char *save = NULL, *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int m = -1;
        for (int j = 0; j < 3; j++) if (strcmp(name, method_names[j]) == 0) m = j;
        if (m < 0 || k == MAX_CYCLE) return 0;
        cycle[k++] = (enum method)m;
    }
    return k;
}

static void bad_answer(const char *ans) {
    fprintf(stderr, "driver: bad answer: %.300s\n", ans);
    exit(1);
}

/* cycle == NULL: every request is a `sign` and the output is one number per line. */
static int rtt(long n, long warmup, int check, const enum method *cycle, int k, char **argv) {
    static char req[512], ans[65536], want[64], sid[256];
    long long *lat = malloc(sizeof *lat * (size_t)(n > 0 ? n : 1));
    enum method *used = malloc(sizeof *used * (size_t)(n > 0 ? n : 1));
    int have_sid = 0;
    struct child c = spawn(argv);
    for (long i = 0; i < warmup + n; i++) {
        long id = i + 1;
        enum method m = cycle ? cycle[i % k] : SIGN;
        int len;
        if (m == SIGN) len = snprintf(req, sizeof req, REQUEST, id);
        else if (m == OPEN_SESSION) len = snprintf(req, sizeof req, OPEN, id);
        else {
            if (!have_sid) { errno = 0; die("closeSession before any openSession answer"); }
            len = snprintf(req, sizeof req, CLOSE, id, sid);
        }
        long long t0 = now_ns();
        write_all(c.in, req, (size_t)len);
        read_line(c.out, ans, sizeof ans);
        long long t1 = now_ns();
        if (check) {
            snprintf(want, sizeof want, "\"id\":%ld,\"result\":", id);
            if (!strstr(ans, want)) bad_answer(ans);
        }
        if (m == OPEN_SESSION) {
            const char *key = "\"userSessionId\":\"";
            const char *p = strstr(ans, key), *q = p ? strchr(p + strlen(key), '"') : NULL;
            if (!q || (size_t)(q - p - strlen(key)) >= sizeof sid) bad_answer(ans);
            p += strlen(key);
            memcpy(sid, p, (size_t)(q - p));
            sid[q - p] = 0;
            have_sid = 1;
        }
        if (i >= warmup) {
            lat[i - warmup] = t1 - t0;
            used[i - warmup] = m;
        }
    }
    int status = finish(&c);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { errno = 0; die("program did not exit 0"); }
    for (long i = 0; i < n; i++) {
        if (cycle) printf("%s %lld\n", method_names[used[i]], lat[i]);
        else printf("%lld\n", lat[i]);
    }
    return 0;
}

static int startup(long runs, char **argv) {
    static char req[512], ans[65536];
    int len = snprintf(req, sizeof req, REQUEST, 1L);
    for (long i = 0; i < runs; i++) {
        long long t0 = now_ns();
        struct child c = spawn(argv);
        write_all(c.in, req, (size_t)len);
        read_line(c.out, ans, sizeof ans);
        long long t1 = now_ns();
        int status = finish(&c);
        long long t2 = now_ns();
        if (!strstr(ans, "\"id\":1,\"result\":")) { fprintf(stderr, "driver: bad answer: %.200s\n", ans); exit(1); }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { errno = 0; die("program did not exit 0"); }
        printf("%lld %lld\n", t2 - t0, t1 - t0);
    }
    return 0;
}

static int oneshot(long runs, const char *text, char **argv) {
    static char out[65536];
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0) die("open /dev/null");
    for (long i = 0; i < runs; i++) {
        long long t0 = now_ns(), t1 = 0;
        struct child c = spawn_from(argv, null);
        size_t have = 0;
        for (;;) {
            ssize_t r = read(c.out, out + have, sizeof out - 1 - have);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) die("read from program");
            if (r == 0) break;
            if (!t1) t1 = now_ns();
            have += (size_t)r;
            if (have == sizeof out - 1) { errno = 0; die("output too long"); }
        }
        out[have] = 0;
        int status = finish(&c);
        long long t2 = now_ns();
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { errno = 0; die("program did not exit 0"); }
        if (!t1 || (text && !strstr(out, text))) bad_answer(out);
        printf("%lld %lld\n", t2 - t0, t1 - t0);
    }
    return 0;
}

static int drain(const char *path, char **argv) {
    static char buf[1 << 20];
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) die("open the request file");
    long long t0 = now_ns();
    struct child c = spawn_from(argv, in);
    long long lines = 0;
    for (;;) {
        ssize_t r = read(c.out, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("read from program");
        if (r == 0) break;
        for (const char *p = buf, *end = buf + r; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) lines++;
    }
    close(c.out);
    int status;
    struct rusage ru;
    while (wait4(c.pid, &status, 0, &ru) < 0) if (errno != EINTR) die("wait4");
    long long t1 = now_ns();
    close(in);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { errno = 0; die("program did not exit 0"); }
    printf("%lld %lld %lld %lld\n", t1 - t0,
           (long long)ru.ru_utime.tv_sec * 1000000000LL + ru.ru_utime.tv_usec * 1000LL,
           (long long)ru.ru_stime.tv_sec * 1000000000LL + ru.ru_stime.tv_usec * 1000LL, lines);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    int dash = 0;
    for (int i = 1; i < argc; i++) if (strcmp(argv[i], "--") == 0) { dash = i; break; }
    if (argc < 3 || !dash || dash + 1 >= argc) {
        fprintf(stderr, "usage: driver rtt N WARMUP [-c] [-a P,D] [-m METHOD,...] -- PROGRAM ARGS...\n"
                        "       driver startup RUNS -- PROGRAM ARGS...\n"
                        "       driver oneshot RUNS [-o TEXT] -- PROGRAM ARGS...\n"
                        "       driver pipe FILE -- PROGRAM ARGS...\n");
        return 2;
    }
    char **prog = argv + dash + 1;
    if (strcmp(argv[1], "rtt") == 0 && dash >= 4) {
        int check = 0, k = 0;
        enum method cycle[MAX_CYCLE];
        for (int i = 4; i < dash; i++) {
            if (strcmp(argv[i], "-c") == 0) check = 1;
            else if (strcmp(argv[i], "-a") == 0 && i + 1 < dash &&
                     sscanf(argv[i + 1], "%d,%d", &program_cpu, &driver_cpu) == 2) i++;
            else if (strcmp(argv[i], "-m") == 0 && i + 1 < dash && (k = parse_methods(argv[i + 1], cycle)) > 0) i++;
            else { fprintf(stderr, "driver: bad option %s\n", argv[i]); return 2; }
        }
        return rtt(atol(argv[2]), atol(argv[3]), check, k ? cycle : NULL, k, prog);
    }
    if (strcmp(argv[1], "startup") == 0 && dash == 3)
        return startup(atol(argv[2]), prog);
    if (strcmp(argv[1], "oneshot") == 0 && (dash == 3 || (dash == 5 && strcmp(argv[3], "-o") == 0)))
        return oneshot(atol(argv[2]), dash == 5 ? argv[4] : NULL, prog);
    if (strcmp(argv[1], "pipe") == 0 && dash == 3)
        return drain(argv[2], prog);
    fprintf(stderr, "driver: bad arguments\n");
    return 2;
}
