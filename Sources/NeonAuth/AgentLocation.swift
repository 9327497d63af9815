#if canImport(Glibc)
import Glibc
#endif
import CNeonSystem

/// Where the per-user neon-auth agent lives: a private directory and, in it, the files of one
/// agent generation (protocol version and settings digest).
///
/// The directory is `$XDG_RUNTIME_DIR/neon-auth` when `XDG_RUNTIME_DIR` is an absolute path to
/// a directory (not a link) the user owns with mode 0700, else `${TMPDIR:-/tmp}/neon-auth-<uid>`
/// (TMPDIR only when absolute). It is created with `mkdir(…, 0700)` and never chmod-ed
/// afterwards; it is refused unless it is a directory (not a link) owned by the effective uid
/// with no group or other permission bits. Never under `$HOME` (NFS homes, WSL's /mnt/c).
///
/// The files: `agent-v<protocol>-<digest>.sock` (the socket, 0600), `.lock` (held with
/// `flock` by the one agent serving that name, for its whole life), `.spawn` (held by the
/// front-end that is starting it) and `.log` (the agent's stderr, 0600). The digest covers
/// every setting the agent's behaviour depends on, so a front-end never silently gets an agent
/// with other settings (tests with short timers get their own).
public struct AgentLocation: Sendable, Equatable {
    /// The agent wire protocol version, part of every file name; bumped by hand.
    public static let protocolVersion = 2

    /// The private directory.
    public var directory: String
    /// `agent-v<protocol>-<digest>`.
    public var name: String

    public var socketPath: String { directory + "/" + name + ".sock" }
    public var lockPath: String { directory + "/" + name + ".lock" }
    public var spawnLockPath: String { directory + "/" + name + ".spawn" }
    public var logPath: String { directory + "/" + name + ".log" }

    /// - Parameters:
    ///   - directory: the private directory (already checked).
    ///   - digest: ``settingsDigest(_:)`` of the agent's settings.
    public init(directory: String, digest: String) {
        self.directory = directory
        self.name = "agent-v\(Self.protocolVersion)-\(digest)"
    }

    /// - Parameters:
    ///   - directory: the private directory (already checked).
    ///   - name: the files' common name, `agent-v<protocol>-<digest>`.
    public init(directory: String, name: String) {
        self.directory = directory
        self.name = name
    }

    /// Why the shared agent cannot be used (the front-end then starts a private one).
    public struct Unusable: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The directory for this user, created if needed, and checked.
    /// - Parameter environment: the process environment (`XDG_RUNTIME_DIR`, `TMPDIR`).
    /// - Throws: ``Unusable`` naming the directory and what is wrong with it.
    public static func privateDirectory(environment: EnvironmentVariables) throws(Unusable) -> String {
        let uid = geteuid()
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/"), isPrivate(runtime, uid: uid) == nil {
            let directory = trimmed(runtime) + "/neon-auth"
            try create(directory, uid: uid)
            return directory
        }
        var base = environment["TMPDIR"] ?? ""
        if !base.hasPrefix("/") { base = "/tmp" }
        let directory = trimmed(base) + "/neon-auth-\(uid)"
        try create(directory, uid: uid)
        return directory
    }

    /// The location for these settings, or why there is none.
    /// - Throws: ``Unusable`` when the directory is unsafe or the socket path would not fit
    ///   `sun_path`.
    public static func resolve(environment: EnvironmentVariables, digest: String) throws(Unusable) -> AgentLocation {
        let location = AgentLocation(directory: try privateDirectory(environment: environment), digest: digest)
        let limit = neon_auth_unix_path_max()
        guard location.socketPath.utf8.count <= limit else {
            throw Unusable("the agent's socket path \(location.socketPath) is longer than a Unix socket path may be (\(limit) bytes)")
        }
        return location
    }

    /// A short, stable digest of the settings an agent is started with (FNV-1a, 64 bits, hex):
    /// a name, not a secret (no setting is secret).
    public static func settingsDigest(_ settings: [String]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for setting in settings {
            for byte in setting.utf8 {
                hash ^= UInt64(byte)
                hash = hash &* 0x100_0000_01b3
            }
            hash ^= 0xff  // separator: ["ab", "c"] and ["a", "bc"] differ
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    private static func trimmed(_ path: String) -> String {
        var path = Substring(path)
        while path.count > 1 && path.last == "/" { path.removeLast() }
        return String(path)
    }

    /// `nil` when `path` is a directory (not a link) owned by `uid` with no group or other
    /// bits; otherwise what is wrong.
    public static func isPrivate(_ path: String, uid: uid_t) -> String? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return "cannot be examined (\(String(cString: strerror(errno))))" }
        if info.st_mode & S_IFMT == S_IFLNK { return "is a symbolic link" }
        guard info.st_mode & S_IFMT == S_IFDIR else { return "is not a directory" }
        guard info.st_uid == uid else { return "is owned by uid \(info.st_uid), not \(uid)" }
        guard info.st_mode & 0o077 == 0 else { return "has mode \(String(info.st_mode & 0o777, radix: 8)) (group or others may use it)" }
        return nil
    }

    private static func create(_ directory: String, uid: uid_t) throws(Unusable) {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw Unusable("cannot create the agent directory \(directory): \(String(cString: strerror(errno)))")
        }
        if let problem = isPrivate(directory, uid: uid) {
            throw Unusable("the agent directory \(directory) \(problem)")
        }
    }
}
