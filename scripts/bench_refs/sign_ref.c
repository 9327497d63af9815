/* sign_ref: neon-auth's `sign` done in plain C, as a throughput reference.
 *
 * For every request line it finds "id":, "orgId":" and "apiKey":" by a plain
 * substring scan (no JSON parser; assumes the strings hold no escapes), base64
 * encodes orgId:apiKey and writes the same response neon-auth writes.  Input is
 * read in large chunks; output is a fully buffered stdio stream flushed
 * whenever no complete line is left in the read buffer, or after every line
 * with -l.  A line without the fields gets a JSON-RPC error reply, so that
 * the output always has one line per request line.
 *
 * Reference program for scripts/bench.  Build: gcc -O2 -o sign_ref sign_ref.c
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (1 << 16)
#define MAX_LINE (1 << 20)

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t base64(const unsigned char *in, size_t len, char *out) {
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < len ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    return (size_t)(o - out);
}

/* The bytes after `key` in [p, end), or NULL. */
static const char *after(const char *p, const char *end, const char *key) {
    size_t k = strlen(key);
    const char *hit = memmem(p, (size_t)(end - p), key, k);
    return hit ? hit + k : NULL;
}

/* A string value: from p up to the next quote. */
static const char *string_end(const char *p, const char *end) {
    const char *q = memchr(p, '"', (size_t)(end - p));
    return q;
}

static void answer(const char *line, const char *end) {
    static unsigned char pair[MAX_LINE];
    static char enc[MAX_LINE * 2];
    const char *id = after(line, end, "\"id\":");
    const char *org = after(line, end, "\"orgId\":\"");
    const char *key = after(line, end, "\"apiKey\":\"");
    const char *id_end = id;
    while (id_end && id_end < end && *id_end != ',' && *id_end != '}') id_end++;
    const char *org_end = org ? string_end(org, end) : NULL;
    const char *key_end = key ? string_end(key, end) : NULL;
    if (!id || !org_end || !key_end) {
        fputs("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32602,\"message\":\"Invalid params\"}}\n", stdout);
        return;
    }
    size_t org_len = (size_t)(org_end - org), key_len = (size_t)(key_end - key);
    memcpy(pair, org, org_len);
    pair[org_len] = ':';
    memcpy(pair + org_len + 1, key, key_len);
    size_t enc_len = base64(pair, org_len + 1 + key_len, enc);

    fputs("{\"jsonrpc\":\"2.0\",\"id\":", stdout);
    fwrite(id, 1, (size_t)(id_end - id), stdout);
    fputs(",\"result\":{\"authorization\":\"Basic ", stdout);
    fwrite(enc, 1, enc_len, stdout);
    fputs("\",\"headers\":{\"Authorization\":\"Basic ", stdout);
    fwrite(enc, 1, enc_len, stdout);
    fputs("\",\"NEON-API-VERSION\":\"2.11\"},\"baseUrl\":\"https://api.neoncrm.com/v2\"}}\n", stdout);
}

int main(int argc, char **argv) {
    int line_flush = argc > 1 && strcmp(argv[1], "-l") == 0;
    static char outbuf[CHUNK];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    /* buf holds an unfinished line carried over from the previous read, then new input. */
    char *buf = malloc(MAX_LINE + CHUNK);
    size_t have = 0;
    if (!buf) return 1;
    for (;;) {
        ssize_t n = read(0, buf + have, CHUNK);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        if (n == 0) break;
        have += (size_t)n;
        char *p = buf, *end = buf + have, *nl;
        while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            answer(p, nl);
            if (line_flush) fflush(stdout);
            p = nl + 1;
        }
        have = (size_t)(end - p);
        if (have > MAX_LINE) have = 0; /* an absurdly long line: drop it */
        memmove(buf, p, have);
        if (fflush(stdout) != 0) return 1;
    }
    if (have > 0) answer(buf, buf + have);
    return fflush(stdout) != 0;
}
