#define _GNU_SOURCE
#include "CNeonSystem.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

int neon_auth_output_kind(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return NEON_AUTH_OUTPUT_OTHER;
    if (S_ISFIFO(st.st_mode)) return NEON_AUTH_OUTPUT_PIPE;
    if (S_ISSOCK(st.st_mode)) return NEON_AUTH_OUTPUT_SOCKET;
    if (S_ISREG(st.st_mode)) return NEON_AUTH_OUTPUT_NEVER_BLOCKS;
    /* /dev/null (character device 1:3) takes every write at once. */
    if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3) return NEON_AUTH_OUTPUT_NEVER_BLOCKS;
    return NEON_AUTH_OUTPUT_OTHER;
}

long neon_auth_grow_pipe(int fd, long size) {
#if defined(F_GETPIPE_SZ) && defined(F_SETPIPE_SZ)
    int capacity = fcntl(fd, F_GETPIPE_SZ);
    if (capacity < 0) return -1;
    if (capacity < size) {
        int grown = fcntl(fd, F_SETPIPE_SZ, (int)size);
        if (grown > 0) capacity = grown;  /* refused (EPERM over the user's pipe limit): keep it */
    }
    return capacity;
#else
    (void)fd;
    (void)size;
    return -1;
#endif
}

long neon_auth_pipe_unread(int fd) {
#ifdef FIONREAD
    int unread = 0;
    if (ioctl(fd, FIONREAD, &unread) != 0) return -1;
    return unread;
#else
    (void)fd;
    return -1;
#endif
}

int neon_auth_same_file(int a, int b) {
    struct stat sa, sb;
    if (fstat(a, &sa) != 0 || fstat(b, &sb) != 0) return -1;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
