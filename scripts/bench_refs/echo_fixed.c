/* echo_fixed: the floor for a line-oriented stdio service.
 *
 * Reads stdin in large chunks and writes one fixed reply line (the size of a
 * typical neon-auth `sign` response) per request line.  Output goes through a
 * fully buffered stdio stream that is flushed whenever no complete input line
 * is left in the read buffer (so an interactive client always gets its
 * answer); with -l it is also flushed after every line.
 *
 * Reference program for scripts/bench.  Build: gcc -O2 -o echo_fixed echo_fixed.c
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1 << 16)

static const char reply[] =
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"authorization\":\"Basic "
    "YWNtZS1vcmc6MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\",\"headers\":"
    "{\"Authorization\":\"Basic YWNtZS1vcmc6MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\","
    "\"NEON-API-VERSION\":\"2.11\"},\"baseUrl\":\"https://api.neoncrm.com/v2\"}}\n";

int main(int argc, char **argv) {
    int line_flush = argc > 1 && strcmp(argv[1], "-l") == 0;
    static char outbuf[CHUNK];
    static char buf[CHUNK];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        if (n == 0) break;
        /* Only newlines matter: a line split across reads is answered once,
         * when its newline arrives. */
        for (char *p = buf, *end = buf + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) {
            fwrite(reply, 1, sizeof reply - 1, stdout);
            if (line_flush) fflush(stdout);
        }
        if (fflush(stdout) != 0) return 1;
    }
    return fflush(stdout) != 0;
}
