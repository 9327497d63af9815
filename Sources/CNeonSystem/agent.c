#define _GNU_SOURCE
#include "CNeonSystem.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

int neon_auth_peer_uid(int fd, unsigned int *uid, int *pid) {
    struct ucred cred;
    socklen_t length = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return -1;
    if (uid) *uid = cred.uid;
    if (pid) *pid = cred.pid;
    return 0;
}

static int fill_address(struct sockaddr_un *address, const char *path) {
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof address->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    memcpy(address->sun_path, path, length + 1);
    return 0;
}

int neon_auth_unix_connect(const char *path) {
    struct sockaddr_un address;
    if (fill_address(&address, path) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    while (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        if (errno == EINTR) continue;
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int neon_auth_unix_listen(const char *path, int backlog) {
    struct sockaddr_un address;
    if (fill_address(&address, path) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    mode_t previous = umask(077);
    int bound = bind(fd, (struct sockaddr *)&address, sizeof address);
    umask(previous);
    if (bound != 0 || chmod(path, 0600) != 0 || listen(fd, backlog) != 0) {
        int saved = errno;
        close(fd);
        if (bound == 0) unlink(path);
        errno = saved;
        return -1;
    }
    return fd;
}

size_t neon_auth_unix_path_max(void) {
    struct sockaddr_un address;
    return sizeof address.sun_path - 1;
}

/* In a forked child, before execve (async-signal-safe calls only): every signal at its
 * default and unblocked, `in`/`out`/`err` as descriptors 0-2, and no other descriptor. */
static void prepare_child(int in, int out, int err) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction defaults;
    memset(&defaults, 0, sizeof defaults);
    defaults.sa_handler = SIG_DFL;
    for (int signo = 1; signo < NSIG; signo++) sigaction(signo, &defaults, NULL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || (err != 2 && dup2(err, 2) < 0)) _exit(126);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3, ~0U, 0) != 0)
#endif
    {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = 3; fd < (max > 0 ? max : 65536); fd++) close((int)fd);
    }
}

int neon_auth_spawn_detached(const char *path, char *const argv[], char *const envp[], int stderr_fd) {
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) return -1;
    pid_t child = fork();
    if (child < 0) {
        int saved = errno;
        close(null);
        errno = saved;
        return -1;
    }
    if (child == 0) {
        // Only async-signal-safe calls from here to execve: the parent may have many threads.
        if (setsid() < 0) _exit(126);
        pid_t grandchild = fork();
        if (grandchild < 0) _exit(126);
        if (grandchild > 0) _exit(0);  // the agent is reparented to init: no zombie is left anywhere
        // No other descriptor of the caller's reaches the agent (a pipe it held would keep a
        // pipeline's reader waiting for EOF).
        prepare_child(null, null, stderr_fd >= 0 ? stderr_fd : null);
        if (chdir("/") != 0) _exit(126);
        execve(path, argv, envp);
        _exit(127);
    }
    close(null);
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = ECHILD;
        return -1;
    }
    return 0;
}

int neon_auth_spawn_child(const char *path, char *const argv[], char *const envp[], int fd, int stderr_fd) {
    pid_t child = fork();
    if (child < 0) return -1;
    if (child == 0) {
        prepare_child(fd, fd, stderr_fd >= 0 ? stderr_fd : 2);
        execve(path, argv, envp);
        _exit(127);
    }
    return child;
}

int neon_auth_unix_accept(int listener) {
    return accept4(listener, NULL, NULL, SOCK_CLOEXEC);
}
