/* driver: the latency driver of scripts/bench.
 *
 *   driver rtt N WARMUP [-c] [-a PROGRAM_CPU,DRIVER_CPU] -- PROGRAM ARGS...
 *       Spawns PROGRAM with pipes, sends WARMUP + N `sign` requests one at a
 *       time (each written with one write(2), the next sent only once the whole
 *       answer line has been read) and prints the N measured round trips in
 *       nanoseconds, one per line.  With -c every answer must carry its own id.
 *       With -a the program (all its threads) runs on PROGRAM_CPU and the
 *       driver on DRIVER_CPU (the same CPU or two different ones).
 *   driver startup RUNS -- PROGRAM ARGS...
 *       RUNS times: spawn PROGRAM, write one `sign`, read the answer, close
 *       stdin, wait for exit.  Prints "TOTAL_NS FIRST_ANSWER_NS" per run.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define REQUEST "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"sign\",\"params\":" \
                "{\"orgId\":\"acme-org\",\"apiKey\":\"0123456789abcdef0123456789abcdef\"}}\n"

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

static struct child spawn(char **argv) {
    if (program_cpu >= 0) pin_self(program_cpu);
    int to[2], from[2];
    if (pipe2(to, O_CLOEXEC) || pipe2(from, O_CLOEXEC)) die("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to[0], 0);
    posix_spawn_file_actions_adddup2(&fa, from[1], 1);
    struct child c;
    int rc = posix_spawn(&c.pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) { errno = rc; die("spawn"); }
    if (driver_cpu >= 0) pin_self(driver_cpu);
    close(to[0]);
    close(from[1]);
    c.in = to[1];
    c.out = from[0];
    return c;
}

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
    close(c->in);
    char sink[4096];
    while (read(c->out, sink, sizeof sink) > 0) {}
    close(c->out);
    int status;
    while (waitpid(c->pid, &status, 0) < 0) if (errno != EINTR) die("waitpid");
    return status;
}

static int rtt(long n, long warmup, int check, char **argv) {
    static char req[512], ans[65536], want[64];
    long long *lat = malloc(sizeof *lat * (size_t)(n > 0 ? n : 1));
    struct child c = spawn(argv);
    for (long i = 0; i < warmup + n; i++) {
        long id = i + 1;
        int len = snprintf(req, sizeof req, REQUEST, id);
        long long t0 = now_ns();
        write_all(c.in, req, (size_t)len);
        read_line(c.out, ans, sizeof ans);
        long long t1 = now_ns();
        if (check) {
            snprintf(want, sizeof want, "\"id\":%ld,\"result\":", id);
            if (!strstr(ans, want)) { errno = 0; fprintf(stderr, "driver: bad answer: %.200s\n", ans); exit(1); }
        }
        if (i >= warmup) lat[i - warmup] = t1 - t0;
    }
    int status = finish(&c);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { errno = 0; die("program did not exit 0"); }
    for (long i = 0; i < n; i++) printf("%lld\n", lat[i]);
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

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    int dash = 0;
    for (int i = 1; i < argc; i++) if (strcmp(argv[i], "--") == 0) { dash = i; break; }
    if (argc < 3 || !dash || dash + 1 >= argc) {
        fprintf(stderr, "usage: driver rtt N WARMUP [-c] [-a P,D] -- PROGRAM ARGS... | driver startup RUNS -- PROGRAM ARGS...\n");
        return 2;
    }
    char **prog = argv + dash + 1;
    if (strcmp(argv[1], "rtt") == 0 && dash >= 4) {
        int check = 0;
        for (int i = 4; i < dash; i++) {
            if (strcmp(argv[i], "-c") == 0) check = 1;
            else if (strcmp(argv[i], "-a") == 0 && i + 1 < dash &&
                     sscanf(argv[i + 1], "%d,%d", &program_cpu, &driver_cpu) == 2) i++;
            else { fprintf(stderr, "driver: bad option %s\n", argv[i]); return 2; }
        }
        return rtt(atol(argv[2]), atol(argv[3]), check, prog);
    }
    if (strcmp(argv[1], "startup") == 0 && dash == 3)
        return startup(atol(argv[2]), prog);
    fprintf(stderr, "driver: bad arguments\n");
    return 2;
}
