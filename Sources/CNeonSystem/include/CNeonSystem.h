#ifndef CNEONSYSTEM_H
#define CNEONSYSTEM_H

/// Marks the process non-dumpable (no core files, no ptrace attach by other processes of the
/// same user) and sets the core file size limit to zero. Returns 0 on success, -1 otherwise.
int neon_auth_harden_process(void);

/// Free bytes in the pipe behind `fd` (its capacity, F_GETPIPE_SZ, less the unread bytes,
/// FIONREAD), or -1 when `fd` is not a pipe or the system cannot tell. (ioctl is variadic,
/// so Swift cannot call it.)
long neon_auth_pipe_room(int fd);

#endif
