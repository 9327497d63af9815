#define _GNU_SOURCE
#include "CNeonCurlTrust.h"
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From libcurl's ABI (curl/curl.h; these numbers never change): option ids and a result. */
enum {
    NEON_CURLOPT_SSL_VERIFYPEER = 64,  /* CURLOPTTYPE_LONG + 64 */
    NEON_CURLOPT_SSL_VERIFYHOST = 81,  /* CURLOPTTYPE_LONG + 81 */
    NEON_CURLOPT_CAINFO = 10065,       /* CURLOPTTYPE_STRINGPOINT + 65 */
    NEON_CURLOPT_CAPATH = 10097,       /* CURLOPTTYPE_STRINGPOINT + 97 */
    NEON_CURLOPT_CA_CACHE_TIMEOUT = 321, /* CURLOPTTYPE_LONG + 321, libcurl 7.87 and later */
};

typedef int (*multi_add_handle_fn)(void *multi, void *easy);
typedef int (*easy_setopt_fn)(void *easy, int option, ...);

/* The definition below, which FoundationNetworking's calls reach (exported: see the header). */
__attribute__((visibility("default"), used)) int curl_multi_add_handle(void *multi, void *easy);

static pthread_once_t resolved = PTHREAD_ONCE_INIT;
static multi_add_handle_fn real_multi_add_handle;
static easy_setopt_fn real_easy_setopt;

/* Written once by neon_curl_trust_configure() before the first transfer, then only read. */
static _Atomic(char *) trust_file;
static _Atomic(char *) trust_directory;
static atomic_int trust_configured;
static atomic_ulong transfers_applied;
static atomic_ulong transfers_failed;

struct loaded_objects {
    char **names;
    size_t count;
    size_t capacity;
};

static int collect_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct loaded_objects *objects = data;
    if (info->dlpi_name == NULL || info->dlpi_name[0] == '\0') return 0;
    if (objects->count == objects->capacity) {
        size_t capacity = objects->capacity ? objects->capacity * 2 : 64;
        char **names = realloc(objects->names, capacity * sizeof(char *));
        if (names == NULL) return 1;
        objects->names = names;
        objects->capacity = capacity;
    }
    char *name = strdup(info->dlpi_name);
    if (name != NULL) objects->names[objects->count++] = name;
    return 0;
}

/* Finds libcurl's own functions: the next definition of curl_multi_add_handle after this
 * executable in the lookup order (libcurl's, loaded for FoundationNetworking), else the first
 * loaded library through which it resolves to a definition that is not ours; then that
 * definition's library for curl_easy_setopt. dlopen() runs outside dl_iterate_phdr()'s callback. */
static void resolve_real_functions(void) {
    void *next = dlsym(RTLD_NEXT, "curl_multi_add_handle");
    Dl_info where;
    if (next != NULL && next != (void *)curl_multi_add_handle && dladdr(next, &where) != 0 && where.dli_fname != NULL) {
        void *library = dlopen(where.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
        void *setopt = library ? dlsym(library, "curl_easy_setopt") : NULL;
        if (setopt != NULL) {
            real_easy_setopt = (easy_setopt_fn)setopt;
            real_multi_add_handle = (multi_add_handle_fn)next;
            return; /* library stays open: libcurl is never unloaded. */
        }
    }
    struct loaded_objects objects = {0};
    dl_iterate_phdr(collect_object, &objects);
    for (size_t i = 0; i < objects.count && real_multi_add_handle == NULL; i++) {
        void *handle = dlopen(objects.names[i], RTLD_LAZY | RTLD_NOLOAD);
        if (handle == NULL) continue;
        void *candidate = dlsym(handle, "curl_multi_add_handle");
        if (candidate != NULL && candidate != (void *)curl_multi_add_handle && dladdr(candidate, &where) != 0
            && where.dli_fname != NULL) {
            void *library = dlopen(where.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
            void *setopt = library ? dlsym(library, "curl_easy_setopt") : NULL;
            if (setopt != NULL) {
                real_easy_setopt = (easy_setopt_fn)setopt;
                real_multi_add_handle = (multi_add_handle_fn)candidate;
            }
            /* library stays open: libcurl is never unloaded. */
        }
        dlclose(handle);
    }
    for (size_t i = 0; i < objects.count; i++) free(objects.names[i]);
    free(objects.names);
}

int neon_curl_trust_interposed(void) {
    return dlsym(RTLD_DEFAULT, "curl_multi_add_handle") == (void *)curl_multi_add_handle;
}

int neon_curl_trust_configure(const char *ca_file, const char *ca_directory, char *detail, size_t detail_size) {
    pthread_once(&resolved, resolve_real_functions);
    if (real_multi_add_handle == NULL || real_easy_setopt == NULL) {
        if (detail != NULL && detail_size > 0) {
            snprintf(detail, detail_size, "libcurl's curl_multi_add_handle and curl_easy_setopt were not found among "
                                          "the loaded libraries");
        }
        return -1;
    }
    if (!neon_curl_trust_interposed()) {
        if (detail != NULL && detail_size > 0) {
            snprintf(detail, detail_size, "this process resolves curl_multi_add_handle to libcurl's, not to "
                                          "neon-auth-agent's own (the executable does not export it), so its "
                                          "transfers would not get the CA file");
        }
        return -1;
    }
    if (ca_file == NULL && ca_directory == NULL) return 0;
    if (ca_file != NULL) atomic_store(&trust_file, strdup(ca_file));
    if (ca_directory != NULL) atomic_store(&trust_directory, strdup(ca_directory));
    atomic_store(&trust_configured, 1);
    return 0;
}

int neon_curl_trust_is_configured(void) { return atomic_load(&trust_configured); }
unsigned long neon_curl_trust_applied(void) { return atomic_load(&transfers_applied); }
unsigned long neon_curl_trust_failed(void) { return atomic_load(&transfers_failed); }

/* Verification on, and the configured CAs, on one transfer before it starts. */
static void apply_trust(void *easy) {
    int ok = real_easy_setopt(easy, NEON_CURLOPT_SSL_VERIFYPEER, 1L) == 0;
    ok = (real_easy_setopt(easy, NEON_CURLOPT_SSL_VERIFYHOST, 2L) == 0) && ok;
    if (atomic_load(&trust_configured)) {
        /* No cached CA store: a CA file that is fixed, or a CA taken out of it, holds for the
         * next connection, not only after the agent restarts (libcurl caches it 24 h by
         * default). Older libcurl has no such cache and refuses the option: not a failure. */
        (void)real_easy_setopt(easy, NEON_CURLOPT_CA_CACHE_TIMEOUT, 0L);
        char *file = atomic_load(&trust_file);
        char *directory = atomic_load(&trust_directory);
        if (file != NULL) {
            ok = (real_easy_setopt(easy, NEON_CURLOPT_CAINFO, file) == 0) && ok;
            /* NULL: no CA directory at all (libcurl's default, /etc/ssl/certs on Debian, would
             * trust the whole system store again). */
            ok = (real_easy_setopt(easy, NEON_CURLOPT_CAPATH, directory) == 0) && ok;
        } else if (directory != NULL) {
            ok = (real_easy_setopt(easy, NEON_CURLOPT_CAPATH, directory) == 0) && ok;
        }
    }
    atomic_fetch_add(ok ? &transfers_applied : &transfers_failed, 1);
}

__attribute__((visibility("default"), used)) int curl_multi_add_handle(void *multi, void *easy) {
    pthread_once(&resolved, resolve_real_functions);
    if (real_multi_add_handle == NULL || real_easy_setopt == NULL) {
        /* Cannot happen while FoundationNetworking links libcurl; FoundationNetworking treats
         * any error here as fatal anyway. */
        static const char message[] = "neon-auth-agent: libcurl's curl_multi_add_handle not found\n";
        fwrite(message, 1, sizeof message - 1, stderr);
        abort();
    }
    if (easy != NULL) apply_trust(easy);
    return real_multi_add_handle(multi, easy);
}
