#if canImport(Glibc)
import Glibc
#endif
import JSONRPC
import Synchronization

/// Credentials resolved from a named profile.
public struct Profile: Sendable, Equatable {
    /// The profile's name (`default`, or a name from the credentials file).
    public var name: String
    public var credential: Credential
    /// The NeonCRM instance family, when the profile names one.
    public var environment: NeonEnvironment?
    /// The `NEON-API-VERSION` the profile pins, if any.
    public var apiVersion: String?
}

extension ErrorCode {
    /// -32020: no credentials could be found. `data`: `{"searched": [string]}` (places, no values).
    public static let noCredentials = ErrorCode(rawValue: -32020)
    /// -32021: the credentials file was refused (permissions, owner, or content). `data`: `{"path", "reason"}`.
    public static let credentialsFileRefused = ErrorCode(rawValue: -32021)
    /// -32022: the credentials file has no such profile. `data`: `{"profile"}`.
    public static let unknownProfile = ErrorCode(rawValue: -32022)
}

/// Profiles from the environment (`NEON_ORG_ID` + `NEON_API_KEY` define `default`) and from a
/// credentials file: `{"profiles": {"NAME": {"orgId", "apiKey", "environment"?, "apiVersion"?}}}`.
///
/// The file is found at `--credentials PATH`, else `$NEON_AUTH_CREDENTIALS`, else
/// `$XDG_CONFIG_HOME/neon-auth/credentials.json`, else `~/.config/neon-auth/credentials.json`.
/// Like ssh, it is refused when group or others may read or write it, or when another user
/// owns it. It is re-read when it changes (checked on every lookup with `stat(2)`); profiles
/// whose key changed or vanished are reported through `onKeysRetired` so their sessions can be
/// logged out. The environment's `default` profile wins over the file's.
public final class CredentialStore: Sendable {
    /// Where the file is looked for, and how it was chosen (for messages).
    public let path: String
    public let pathSource: String
    private let environmentDefault: Profile?
    private let environmentDefaultError: RPCError?
    /// Why the environment gave no `default` profile although one variable is set.
    private let environmentNote: String?
    private let state = Mutex<Loaded?>(nil)
    private let onKeysRetired: @Sendable ([Credential]) -> Void

    private struct Loaded {
        var identity: FileIdentity
        var result: Result<[String: Profile], RPCError>
    }

    private struct FileIdentity: Equatable {
        var device: UInt64, inode: UInt64, size: Int64, mtimeSeconds: Int, mtimeNanoseconds: Int, mode: UInt32, uid: UInt32
    }

    /// - Parameters:
    ///   - flagPath: `--credentials PATH`, if given.
    ///   - environment: the process environment.
    ///   - onKeysRetired: called (on the looking-up thread) with credentials that a reload removed.
    public init(flagPath: String?, environment: EnvironmentVariables, onKeysRetired: @escaping @Sendable ([Credential]) -> Void = { _ in }) {
        if let flagPath {
            (path, pathSource) = (UserHome.absolute(flagPath), "--credentials")
        } else if let env = environment["NEON_AUTH_CREDENTIALS"], !env.isEmpty {
            (path, pathSource) = (UserHome.absolute(env), "NEON_AUTH_CREDENTIALS")
        } else if let xdg = environment["XDG_CONFIG_HOME"], xdg.hasPrefix("/") {
            (path, pathSource) = (xdg + "/neon-auth/credentials.json", "$XDG_CONFIG_HOME")
        } else if let home = UserHome.directory(environment: environment) {
            (path, pathSource) = (home + "/.config/neon-auth/credentials.json", "~/.config")
        } else {
            // No home directory at all: there is no default file (a relative path is never used).
            (path, pathSource) = ("", "no home directory")
        }
        let org = environment["NEON_ORG_ID"] ?? "", key = environment["NEON_API_KEY"] ?? ""
        if org.isEmpty || key.isEmpty {
            // Neither, or only one of the two: no environment profile (the file may have one).
            environmentDefault = nil
            environmentDefaultError = nil
            environmentNote = org.isEmpty == key.isEmpty ? nil
                : (org.isEmpty ? "NEON_API_KEY is set but NEON_ORG_ID is not" : "NEON_ORG_ID is set but NEON_API_KEY is not")
        } else {
            environmentNote = nil
            do {
                let credential = try Credential.validated(orgId: org, apiKey: key)
                environmentDefault = Profile(name: "default", credential: credential, environment: nil, apiVersion: nil)
                environmentDefaultError = nil
            } catch {
                // Report it when `default` is used; never quote the values.
                let field = error.data?["field"]?.stringValue == "orgId" ? "NEON_ORG_ID" : "NEON_API_KEY"
                environmentDefault = nil
                environmentDefaultError = RPCError(
                    .noCredentials, "No usable credentials for profile 'default': \(field) is invalid (\(error.message.replacingInvalidParamsPrefix))",
                    data: ["searched": ["environment: NEON_ORG_ID, NEON_API_KEY"]])
            }
        }
        self.onKeysRetired = onKeysRetired
    }

    /// The profile named `name`.
    /// - Throws: `RPCError` -32020 (nothing found; says where it looked), -32021 (file refused),
    ///   -32022 (no such profile in the file). Messages never contain a key.
    public func profile(named name: String) throws(RPCError) -> Profile {
        if name == "default", let environmentDefault { return environmentDefault }
        if name == "default", let environmentDefaultError { throw environmentDefaultError }
        switch path.isEmpty ? .missing : loadIfChanged() {
        case .missing where path.isEmpty:
            let what = name == "default" ? "for profile 'default'" : "for that profile"
            let note = environmentNote.map { " (\($0))" } ?? ""
            throw RPCError(.noCredentials,
                           "No credentials \(what): looked in NEON_ORG_ID/NEON_API_KEY\(note); no credentials file: HOME is not an absolute path and the password database has no home directory for uid \(geteuid()) (set --credentials or NEON_AUTH_CREDENTIALS)",
                           data: ["searched": ["environment: NEON_ORG_ID, NEON_API_KEY"]])
        case .missing:
            let what = name == "default" ? "for profile 'default'" : "for that profile"
            let note = environmentNote.map { " (\($0))" } ?? ""
            throw RPCError(.noCredentials,
                           "No credentials \(what): looked in NEON_ORG_ID/NEON_API_KEY\(note) and \(path) (not found)",
                           data: ["searched": ["environment: NEON_ORG_ID, NEON_API_KEY", .string(path)]])
        case .loaded(.failure(let error)):
            throw error
        case .loaded(.success(let profiles)):
            if let profile = profiles[name] { return profile }
            if name == "default" {
                let note = environmentNote ?? "NEON_ORG_ID/NEON_API_KEY are not set"
                throw RPCError(.noCredentials,
                               "No credentials for profile 'default': \(note) and \(path) has no 'default' profile",
                               data: ["searched": ["environment: NEON_ORG_ID, NEON_API_KEY", .string(path)]])
            }
            // The name asked for is not echoed (a key could have been pasted there); the file's
            // own profile names are listed instead.
            let known = profiles.keys.sorted()
            throw RPCError(.unknownProfile, "Unknown profile: \(path) has no profile of that name (it has: \(known.joined(separator: ", ")))",
                           data: ["profiles": .array(known.map(JSONValue.string))])
        }
    }

    private enum LoadOutcome {
        case missing
        case loaded(Result<[String: Profile], RPCError>)
    }

    private func loadIfChanged() -> LoadOutcome {
        var info = stat()
        guard stat(path, &info) == 0 else {
            retire(state.withLock { s -> [Credential] in
                defer { s = nil }
                return s.map { Self.credentials(of: $0.result) } ?? []
            }, keeping: [])
            return .missing
        }
        let identity = FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                                    mtimeSeconds: info.st_mtim.tv_sec, mtimeNanoseconds: info.st_mtim.tv_nsec,
                                    mode: UInt32(info.st_mode), uid: UInt32(info.st_uid))
        if let cached = state.withLock({ $0 }), cached.identity == identity { return .loaded(cached.result) }
        let result = read(info: info)
        let previous = state.withLock { s -> Loaded? in
            defer { s = Loaded(identity: identity, result: result) }
            return s
        }
        if let previous { retire(Self.credentials(of: previous.result), keeping: Self.credentials(of: result)) }
        return .loaded(result)
    }

    private static func credentials(of result: Result<[String: Profile], RPCError>) -> [Credential] {
        (try? result.get().values.map(\.credential)) ?? []
    }

    private func retire(_ old: [Credential], keeping new: [Credential]) {
        let kept = Set(new)
        let retired = Array(Set(old).subtracting(kept))
        if !retired.isEmpty { onKeysRetired(retired) }
    }

    private func refuse(_ reason: String, fix: String) -> RPCError {
        RPCError(.credentialsFileRefused, "Credentials file \(path) refused: \(reason); \(fix)",
                 data: ["path": .string(path), "reason": .string(reason)])
    }

    /// The members a profile may have.
    static let profileMembers: Set<String> = ["orgId", "apiKey", "environment", "apiVersion"]

    private func read(info: stat) -> Result<[String: Profile], RPCError> {
        if info.st_uid != geteuid() {
            return .failure(refuse("it is owned by another user (uid \(info.st_uid))", fix: "chown it to the user running neon-auth"))
        }
        if info.st_mode & 0o066 != 0 {
            let mode = String(info.st_mode & 0o777, radix: 8)
            return .failure(refuse("it is readable or writable by group or others (mode \(mode))", fix: "run: chmod 600 \(path)"))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .failure(refuse("it is not a regular file", fix: "point to a JSON file")) }
        guard info.st_size <= 1 << 20 else { return .failure(refuse("it is larger than 1 MiB", fix: "keep only profiles in it")) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(refuse("it cannot be read (errno \(errno))", fix: "check its permissions")) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
        }
        // Never quote the file: it holds keys.
        guard let document = try? JSONReader.parse(bytes) else {
            return .failure(refuse("it is not valid JSON", fix: #"write {"profiles": {"NAME": {"orgId": ..., "apiKey": ...}}}"#))
        }
        guard case .object(let top) = document else {
            return .failure(refuse("it is not a JSON object", fix: #"write {"profiles": {"NAME": {"orgId": ..., "apiKey": ...}}}"#))
        }
        // Strict, as requests are: a misspelt member would otherwise be ignored silently (member
        // and profile names are not secret; values are never quoted).
        if let unknown = top.members.first(where: { $0.key != "profiles" }) {
            return .failure(refuse("unknown top-level member '\(Params.printable(unknown.key))' (only \"profiles\" is allowed)",
                                   fix: "remove or rename it"))
        }
        if top.members.count > 1 { return .failure(refuse("\"profiles\" appears twice", fix: "merge them into one")) }
        guard case .object(let profilesObject)? = document["profiles"] else {
            return .failure(refuse("it has no \"profiles\" object", fix: #"write {"profiles": {"NAME": {"orgId": ..., "apiKey": ...}}}"#))
        }
        var profiles: [String: Profile] = [:]
        for (name, entry) in profilesObject.members {
            let shown = Params.printable(name)
            if profiles[name] != nil {
                return .failure(refuse("profile '\(shown)' is defined twice", fix: "keep one of them"))
            }
            guard case .object(let members) = entry else {
                return .failure(refuse("profile '\(shown)' is not an object", fix: "fix that profile"))
            }
            var seen: Set<String> = []
            for member in members.members {
                guard Self.profileMembers.contains(member.key) else {
                    return .failure(refuse("profile '\(shown)' has an unknown member '\(Params.printable(member.key))' (allowed: orgId, apiKey, environment, apiVersion)",
                                           fix: "fix its spelling or remove it"))
                }
                guard seen.insert(member.key).inserted else {
                    return .failure(refuse("profile '\(shown)' has '\(member.key)' twice", fix: "keep one of them"))
                }
            }
            guard case .string(let org)? = entry["orgId"], case .string(let key)? = entry["apiKey"] else {
                return .failure(refuse("profile '\(shown)' needs string orgId and apiKey", fix: "fix that profile"))
            }
            let credential: Credential
            do {
                credential = try Credential.validated(orgId: org, apiKey: key)
            } catch {
                let field = error.data?["field"]?.stringValue ?? "orgId/apiKey"
                return .failure(refuse("profile '\(shown)': \(field) is invalid (\(error.message.replacingInvalidParamsPrefix))", fix: "fix that profile"))
            }
            var environment: NeonEnvironment? = nil
            if let raw = entry["environment"] {
                guard case .string(let s) = raw, let env = NeonEnvironment(rawValue: s) else {
                    return .failure(refuse("profile '\(shown)': environment must be \"production\" or \"trial\"", fix: "fix that profile"))
                }
                environment = env
            }
            var apiVersion: String? = nil
            if let raw = entry["apiVersion"] {
                guard case .string(let v) = raw, NeonAPIVersion.isWellFormed(v) else {
                    return .failure(refuse("profile '\(shown)': apiVersion must look like 2.N", fix: "fix that profile"))
                }
                apiVersion = v
            }
            profiles[name] = Profile(name: name, credential: credential, environment: environment, apiVersion: apiVersion)
        }
        return .success(profiles)
    }
}

/// The user's home directory, for default paths.
public enum UserHome {
    /// `HOME` when it is an absolute path; else the password database's home directory of the
    /// effective uid (`getpwuid_r`), when that is absolute; else `nil`. A relative or empty
    /// `HOME` (a service manager's, `env -i`'s) is never used.
    public static func directory(environment: EnvironmentVariables) -> String? {
        if let home = environment["HOME"], home.hasPrefix("/") { return home }
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let status = getpwuid_r(geteuid(), &entry, &buffer, buffer.count, &found)
        guard status == 0, found != nil, let dir = entry.pw_dir else { return nil }
        let home = String(cString: dir)
        return home.hasPrefix("/") ? home : nil
    }

    /// `path` made absolute against the working directory at start-up (so that a relative
    /// `--credentials` keeps naming the same file whatever the process's directory later is).
    public static func absolute(_ path: String) -> String {
        guard !path.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return path }
        defer { free(cwd) }
        let directory = String(cString: cwd)
        return directory.hasSuffix("/") ? directory + path : directory + "/" + path
    }
}

private extension String {
    var replacingInvalidParamsPrefix: String {
        hasPrefix("Invalid params: ") ? String(dropFirst("Invalid params: ".count)) : self
    }
}
