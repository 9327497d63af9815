#ifndef CNEONCURLTRUST_H
#define CNEONCURLTRUST_H

/*
 * The trust settings of libcurl's transfers inside neon-auth-agent.
 *
 * URLSession on Linux (swift-corelibs-foundation) offers no way to choose the certificate
 * authorities a connection trusts: it leaves libcurl's built-in CA bundle and directory alone
 * (and reads no environment variable for them outside Android). So neon-auth-agent defines
 * curl_multi_add_handle() itself; this target is linked into that executable only. The
 * executable comes first in the dynamic linker's lookup order, and the symbol is exported
 * (libFoundationNetworking, on the link line, references it), so FoundationNetworking's call
 * binds to this definition rather than to libcurl's. The definition sets, on every transfer
 * before it starts: CURLOPT_SSL_VERIFYPEER 1 and CURLOPT_SSL_VERIFYHOST 2 (verification on,
 * whatever any other code set), and, once configured, CURLOPT_CAINFO and CURLOPT_CAPATH; then
 * it calls libcurl's own curl_multi_add_handle().
 *
 * neon_curl_trust_configure() checks that the definition is the one the process resolves
 * (fail closed when, say, a linker did not export it), and the counters below let the agent
 * check after each exchange that the settings really reached its transfer.
 */

#include <stddef.h>

/*
 * Sets the CA file and directory that every later transfer uses; call at most once, before
 * the first transfer.
 *   ca_file:      replaces the default CA bundle, and the default CA directory too (the
 *                 directory is then ca_directory, or none); NULL keeps both defaults.
 *   ca_directory: an OpenSSL hashed directory (several separated by ':') replacing the default
 *                 CA directory, or NULL.
 * Returns 0, or -1 (then `detail`, of `detail_size` bytes, says why and nothing is configured)
 * when libcurl's own curl_multi_add_handle() cannot be found among the loaded libraries, or
 * when the process does not resolve curl_multi_add_handle to this definition (its transfers
 * would not pass through it).
 */
int neon_curl_trust_configure(const char *ca_file, const char *ca_directory, char *detail, size_t detail_size);

/* 1 when the process resolves curl_multi_add_handle to this definition, else 0. */
int neon_curl_trust_interposed(void);

/* 1 when a CA file or directory was configured, else 0. */
int neon_curl_trust_is_configured(void);

/* Transfers whose settings were applied, and transfers where setting one failed, so far. */
unsigned long neon_curl_trust_applied(void);
unsigned long neon_curl_trust_failed(void);

#endif
