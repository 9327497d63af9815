#ifndef NEON_HTTP_PLUGIN_H
#define NEON_HTTP_PLUGIN_H

/*
 * The C ABI between neon-auth (the executable) and its HTTP plugin, libNeonAuthHTTP.so.
 *
 * The plugin holds everything that needs Foundation and FoundationNetworking (URLSession,
 * libcurl, TLS), so the executable loads none of it until the first API v1 call (openSession
 * or a logout) needs HTTP. The executable dlopen()s the plugin (RTLD_NOW | RTLD_LOCAL), looks
 * up NEON_HTTP_PLUGIN_ENTRY_SYMBOL and calls it once. Nothing but the C types below crosses
 * this boundary: no Swift type, no Swift reference counting, no Swift error.
 *
 * Both sides run on one (dynamic) Swift runtime; the plugin must never be loaded into a
 * process whose Swift runtime is linked statically.
 *
 * A change that is not backwards compatible bumps NEON_HTTP_PLUGIN_ABI_VERSION and the number
 * in the entry point's name; the executable refuses a table of another version.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes; neon_http_plugin.abi_version must equal it. */
#define NEON_HTTP_PLUGIN_ABI_VERSION 1

/* The name of the entry point the executable looks up with dlsym(). */
#define NEON_HTTP_PLUGIN_ENTRY_SYMBOL "neon_auth_http_plugin_v1"

/* The file name of the plugin (next to the executable, or in ../lib/neon-auth/). */
#define NEON_HTTP_PLUGIN_FILE_NAME "libNeonAuthHTTP.so"

/* Why an exchange produced no HTTP response (the `failure` argument of the completion). */
#define NEON_HTTP_FAILURE_NONE 0        /* a whole response arrived: status and body are set */
#define NEON_HTTP_FAILURE_TIMED_OUT 1   /* the total deadline, or the connect timeout, passed */
#define NEON_HTTP_FAILURE_UNREACHABLE 2 /* no connection, or it broke (refused, reset, DNS, TLS, bad URL) */
#define NEON_HTTP_FAILURE_CANCELLED 3   /* cancel() was called first */

/* One exchange in flight, opaque to the executable. */
typedef struct neon_http_task neon_http_task;

/*
 * Called exactly once per started exchange, on a thread of the plugin's choosing (possibly
 * inside post_form() or cancel(), on the caller's thread), never while the plugin holds a lock
 * the caller could need.
 *   context:     the pointer given to post_form(), untouched.
 *   status:      the HTTP status code when failure is NEON_HTTP_FAILURE_NONE, else 0.
 *   body:        the response body; valid only until the callback returns (copy it). May be
 *                NULL when body_length is 0 or failure is not NEON_HTTP_FAILURE_NONE.
 *   body_length: bytes at body.
 *   failure:     one of NEON_HTTP_FAILURE_*.
 */
typedef void (*neon_http_completion)(void *context, int32_t status, const uint8_t *body, size_t body_length,
                                     int32_t failure);

/*
 * The plugin's function table. Returned by the entry point; static, valid for the life of the
 * process (the executable never dlclose()s the plugin). All functions are thread-safe.
 */
typedef struct neon_http_plugin {
    /* NEON_HTTP_PLUGIN_ABI_VERSION of the header the plugin was built with. */
    uint32_t abi_version;
    /* sizeof(neon_http_plugin) in the plugin, for additive growth within one version. */
    uint32_t size;

    /*
     * Starts an HTTP POST of an application/x-www-form-urlencoded body to url, with
     * `Content-Type: application/x-www-form-urlencoded; charset=utf-8`, `Accept:
     * application/json` and `User-Agent: neon-auth`. No cookies are sent or stored, nothing is
     * cached, redirects are not followed (a 3xx is returned as the response), TLS certificates
     * are verified as the system does (never disabled).
     *   url:             absolute http(s) URL, NUL-terminated UTF-8; read during the call only.
     *   body:            the encoded form; read (copied) during the call only. NULL when body_length is 0.
     *   connect_timeout: seconds one attempt may go without progress (connecting included), > 0.
     *   total_timeout:   seconds after which the exchange ends with NEON_HTTP_FAILURE_TIMED_OUT
     *                    whatever its progress, > 0.
     *   context:         passed back to completion as is (the caller owns what it points to).
     *   completion:      called exactly once, see neon_http_completion; must not be NULL.
     * Returns a handle the caller owns (never NULL). The caller must pass it to release() once,
     * after completion has been called and after its last cancel(); completion may already have
     * run when post_form() returns.
     */
    neon_http_task *(*post_form)(const char *url, const uint8_t *body, size_t body_length, double connect_timeout,
                                 double total_timeout, void *context, neon_http_completion completion);

    /*
     * Abandons the exchange: if completion has not been called yet, it is called with
     * NEON_HTTP_FAILURE_CANCELLED (possibly before cancel() returns, on the calling thread) and
     * the transfer is stopped. A no-op after completion. The handle stays valid until release().
     */
    void (*cancel)(neon_http_task *task);

    /*
     * Gives up the caller's handle. The handle must not be used afterwards. Does not cancel:
     * an exchange still in flight runs on and still calls completion exactly once.
     */
    void (*release)(neon_http_task *task);
} neon_http_plugin;

/*
 * The entry point (exported by the plugin under NEON_HTTP_PLUGIN_ENTRY_SYMBOL): the plugin's
 * function table, never NULL. Cheap; creates no network state (the URLSession is created on
 * the first post_form()).
 */
typedef const neon_http_plugin *(*neon_http_plugin_entry)(void);

#ifdef __cplusplus
}
#endif

#endif
