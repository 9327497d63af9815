#ifndef CNEONSYSTEM_H
#define CNEONSYSTEM_H

/// Marks the process non-dumpable (no core files, no ptrace attach by other processes of the
/// same user) and sets the core file size limit to zero. Returns 0 on success, -1 otherwise.
int neon_auth_harden_process(void);

#endif
