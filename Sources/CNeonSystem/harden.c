#define _GNU_SOURCE
#include "CNeonSystem.h"
#include <sys/prctl.h>
#include <sys/resource.h>
#include <malloc.h>
#include <stdlib.h>

int neon_auth_harden_process(void) {
    struct rlimit none = {0, 0};
    int result = 0;
    if (setrlimit(RLIMIT_CORE, &none) != 0) result = -1;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) result = -1;
    return result;
}

int neon_auth_limit_malloc_arenas(int count) {
    if (getenv("MALLOC_ARENA_MAX") != NULL) return 0;  // the operator's choice wins
    return mallopt(M_ARENA_MAX, count) == 1 ? 0 : -1;
}

