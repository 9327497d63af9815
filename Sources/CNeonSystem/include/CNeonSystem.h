#ifndef CNEONSYSTEM_H
#define CNEONSYSTEM_H

/// Marks the process non-dumpable (no core files, no ptrace attach by other processes of the
/// same user) and sets the core file size limit to zero. Returns 0 on success, -1 otherwise.
int neon_auth_harden_process(void);

/// Caps glibc's malloc arenas at `count` (mallopt M_ARENA_MAX) unless MALLOC_ARENA_MAX is set:
/// with one arena per busy thread (the default allows 8 per core), memory freed by one burst of
/// requests is spread over many arenas and RSS climbs in steps. Call before threads start.
/// Returns 0, or -1 when glibc refused.
int neon_auth_limit_malloc_arenas(int count);

/// What an output descriptor is, as far as writing without blocking goes (``neon_auth_output_kind``).
enum {
    /// A pipe: room = capacity (``neon_auth_grow_pipe``) less the unread bytes (``neon_auth_pipe_unread``).
    NEON_AUTH_OUTPUT_PIPE = 0,
    /// A socket: send(2) with MSG_DONTWAIT takes what fits.
    NEON_AUTH_OUTPUT_SOCKET = 1,
    /// A regular file or /dev/null: a write never waits for a reader.
    NEON_AUTH_OUTPUT_NEVER_BLOCKS = 2,
    /// Anything else (a terminal...): only poll(2) can tell.
    NEON_AUTH_OUTPUT_OTHER = 3,
};

/// The kind of `fd` (fstat), one of the NEON_AUTH_OUTPUT_ values.
int neon_auth_output_kind(int fd);

/// Grows the pipe behind `fd` to at least `size` bytes (F_SETPIPE_SZ; 0: leave it) when it is smaller and
/// the system allows it (an unprivileged user is capped by /proc/sys/fs/pipe-max-size and the
/// per-user pipe limits; a refusal keeps the pipe as it is). Returns the capacity now
/// (F_GETPIPE_SZ), or -1 when `fd` is not a pipe.
long neon_auth_grow_pipe(int fd, long size);

/// The unread bytes in the pipe behind `fd` (FIONREAD), or -1.
long neon_auth_pipe_unread(int fd);

/// 1 when descriptors `a` and `b` refer to the same file (device and inode), 0 when not, -1 on error.
int neon_auth_same_file(int a, int b);

#include <stddef.h>

/// The uid (and pid) of the process at the other end of the Unix socket `fd` (SO_PEERCRED).
/// Returns 0, or -1 with errno set.
int neon_auth_peer_uid(int fd, unsigned int *uid, int *pid);

/// Connects a new close-on-exec stream socket to the Unix socket at `path`. Returns the
/// descriptor, or -1 with errno set (ENAMETOOLONG when `path` does not fit sun_path).
int neon_auth_unix_connect(const char *path);

/// Binds a new close-on-exec Unix stream socket at `path` under umask 077, makes it mode 0600
/// and listens. Returns the descriptor, or -1 with errno set (the file is removed again).
int neon_auth_unix_listen(const char *path, int backlog);

/// Accepts a connection on `listener`, close-on-exec. Returns the descriptor, or -1 with errno set.
int neon_auth_unix_accept(int listener);

/// The longest socket path sun_path holds (bytes, without the terminating NUL).
size_t neon_auth_unix_path_max(void);

/// Starts `path` with `argv` and `envp` detached from the caller: in a session and process
/// group of its own (a terminal's SIGINT or SIGHUP never reaches it), reparented to init (a
/// double fork: no zombie is left), working directory `/`, every signal at its default and
/// unblocked, stdin and stdout on /dev/null, stderr on `stderr_fd` (or /dev/null when -1), and
/// no other descriptor of the caller's. Returns 0 once the intermediate process has exited
/// (the agent may still be starting), or -1 with errno set.
int neon_auth_spawn_detached(const char *path, char *const argv[], char *const envp[], int stderr_fd);

/// Starts `path` with `argv` and `envp` as a child in the caller's process group, with `fd` as
/// its stdin and stdout, `stderr_fd` as its stderr (the caller's when -1), every signal at its
/// default and unblocked, and no other descriptor. Returns the child's pid, or -1 with errno set.
int neon_auth_spawn_child(const char *path, char *const argv[], char *const envp[], int fd, int stderr_fd);

#endif
