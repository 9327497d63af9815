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

#include <fcntl.h>
#include <sys/ioctl.h>

long neon_auth_pipe_room(int fd) {
#if defined(F_GETPIPE_SZ) && defined(FIONREAD)
    int capacity = fcntl(fd, F_GETPIPE_SZ);
    if (capacity <= 0) return -1;
    int unread = 0;
    if (ioctl(fd, FIONREAD, &unread) != 0) return -1;
    return capacity > unread ? (long)(capacity - unread) : 0;
#else
    (void)fd;
    return -1;
#endif
}
