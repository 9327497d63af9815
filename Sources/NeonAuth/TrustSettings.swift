#if canImport(Glibc)
import Glibc
#endif

/// The certificate authorities NeonCRM's TLS connections trust, when not the system's store.
///
/// Sources, first found wins for the file:
/// 1. `--ca-file PATH`, else `NEON_AUTH_CA_FILE`: exactly that file (a PEM bundle of CA
///    certificates) replaces the system's CA bundle and CA directory;
/// 2. `SSL_CERT_FILE`, as OpenSSL-based tools read it: that file replaces the default bundle,
///    and `SSL_CERT_DIR`, when set, the default directory (else there is none);
/// 3. `SSL_CERT_DIR` alone: replaces the default CA directory (an OpenSSL hashed directory,
///    or several separated by `:`); the default bundle stays.
/// Verification itself is never optional: no setting turns it off.
public struct TrustSettings: Sendable, Equatable {
    /// Absolute path of the CA file, if one is used.
    public var caFile: String?
    /// Where `caFile` came from: `--ca-file`, `NEON_AUTH_CA_FILE` or `SSL_CERT_FILE`.
    public var caFileSource: String?
    /// The CA directory (absolute paths, `:`-separated), if one is used (from `SSL_CERT_DIR`).
    public var caDirectory: String?

    public init(caFile: String? = nil, caFileSource: String? = nil, caDirectory: String? = nil) {
        self.caFile = caFile
        self.caFileSource = caFileSource
        self.caDirectory = caDirectory
    }

    /// For messages: e.g. `--ca-file /etc/corp/ca.pem`, `SSL_CERT_DIR /etc/corp/certs`.
    public var describedSource: String {
        var parts: [String] = []
        if let caFile { parts.append("\(caFileSource ?? "CA file") \(caFile)") }
        if let caDirectory { parts.append("SSL_CERT_DIR \(caDirectory)") }
        return parts.joined(separator: ", ")
    }

    /// The trust settings the command line and environment ask for.
    /// - Parameters:
    ///   - explicit: the value of `--ca-file` or `NEON_AUTH_CA_FILE` and which it was, if given.
    ///   - environment: the process environment (`SSL_CERT_FILE`, `SSL_CERT_DIR`).
    /// - Returns: `nil` for the system's store.
    /// - Throws: `ConfigurationError` naming the setting and the path when a file is missing,
    ///   unreadable or holds no PEM certificate, or a directory cannot be opened.
    public static func resolve(explicit: (value: String, source: String)?, environment: EnvironmentVariables) throws -> TrustSettings? {
        func nonEmpty(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        if let (value, source) = explicit {
            return TrustSettings(caFile: try checkedFile(value, source: source), caFileSource: source)
        }
        let directory = try nonEmpty("SSL_CERT_DIR").map { try checkedDirectories($0, source: "SSL_CERT_DIR") }
        if let file = nonEmpty("SSL_CERT_FILE") {
            return TrustSettings(caFile: try checkedFile(file, source: "SSL_CERT_FILE"), caFileSource: "SSL_CERT_FILE",
                                 caDirectory: directory)
        }
        return directory.map { TrustSettings(caDirectory: $0) }
    }

    /// The flags that hand these settings to the agent: `--ca-file PATH` and
    /// `--ca-directory DIRS` (absolute paths, already checked by the front-end).
    public var agentArguments: [String] {
        (caFile.map { ["--ca-file", $0] } ?? []) + (caDirectory.map { ["--ca-directory", $0] } ?? [])
    }

    /// The settings an agent was started with: `--ca-file`, as `Configuration` parsed it
    /// (`parsed`), and `--ca-directory` (`caDirectory`), checked again (a file removed since
    /// the front-end looked is a start-up error, not a fallback to the system's store).
    /// - Throws: `ConfigurationError` when the directory cannot be opened.
    public static func agent(parsed: TrustSettings?, caDirectory: String?) throws -> TrustSettings? {
        guard let caDirectory else { return parsed }
        var trust = parsed ?? TrustSettings()
        trust.caDirectory = try checkedDirectories(caDirectory, source: "--ca-directory")
        return trust
    }

    /// A start-up warning for `CURL_CA_BUNDLE` (the curl tool's variable, which neon-auth does
    /// not read) when it is set and no CA file is in use, so it looks as if it were meant for us.
    /// - Returns: the warning, or `nil`.
    public static func ignoredVariablesWarning(environment: EnvironmentVariables, trust: TrustSettings?) -> String? {
        guard let bundle = environment["CURL_CA_BUNDLE"], !bundle.isEmpty, trust?.caFile == nil else { return nil }
        return "CURL_CA_BUNDLE is set but not read by neon-auth (it is the curl tool's variable): NeonCRM's connections "
            + "trust \(trust.map(\.describedSource) ?? "the system's CA store"); to trust another CA file, pass --ca-file "
            + "PATH or set NEON_AUTH_CA_FILE (or SSL_CERT_FILE)"
    }

    /// The file's absolute path, after checking that it can be read and holds a PEM certificate.
    static func checkedFile(_ path: String, source: String) throws -> String {
        let full = absolute(path)
        var info = stat()
        guard stat(full, &info) == 0 else {
            throw ConfigurationError("\(source): cannot use CA file \(full): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw ConfigurationError("\(source): CA file \(full) is not a regular file")
        }
        let fd = open(full, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ConfigurationError("\(source): cannot read CA file \(full): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        // Read until the first certificate's header (at the very start of any real bundle, so
        // a front-end's start-up reads one 4 KiB slice of the system's ~200 KiB), at most 1 MiB.
        // (Two arrays, not an array of them: its metadata would be built at every start-up.)
        let certificate = Array("-----BEGIN CERTIFICATE-----".utf8), trusted = Array("-----BEGIN TRUSTED CERTIFICATE-----".utf8)
        var bytes: [UInt8] = []
        var slice = [UInt8](repeating: 0, count: 4 << 10)
        var found = false
        while !found && bytes.count < 1 << 20 {
            let n = slice.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw ConfigurationError("\(source): cannot read CA file \(full): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            // Search only the new bytes and the tail of the old that a marker could span.
            let from = max(0, bytes.count - trusted.count)
            bytes.append(contentsOf: slice[..<n])
            found = Self.contains(bytes[from...], certificate) || Self.contains(bytes[from...], trusted)
        }
        guard found else {
            throw ConfigurationError("\(source): CA file \(full) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        return full
    }

    /// Whether `marker` occurs in `bytes`.
    private static func contains(_ bytes: ArraySlice<UInt8>, _ marker: [UInt8]) -> Bool {
        guard bytes.count >= marker.count else { return false }
        var index = bytes.startIndex
        while index <= bytes.endIndex - marker.count {
            if bytes[index] == marker[0] && bytes[index..<(index + marker.count)].elementsEqual(marker) { return true }
            index += 1
        }
        return false
    }

    /// The directories' absolute paths (`:`-separated), after checking that each can be opened.
    static func checkedDirectories(_ list: String, source: String) throws -> String {
        // Concatenated by hand: `[String].joined(separator:)` is generic code whose first call
        // costs ~100k instructions of run-time conformance look-up at every start-up.
        var result = ""
        for part in list.split(separator: ":", omittingEmptySubsequences: true) {
            let full = absolute(String(part))
            guard let directory = opendir(full) else {
                throw ConfigurationError("\(source): cannot open CA directory \(full): \(String(cString: strerror(errno)))")
            }
            closedir(directory)
            result += result.isEmpty ? full : ":" + full
        }
        guard !result.isEmpty else { throw ConfigurationError("\(source): no directory named") }
        return result
    }

    /// `path` made absolute against the working directory (symbolic links kept).
    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        guard let cwd = getcwd(nil, 0) else { return path }
        defer { free(cwd) }
        let directory = String(cString: cwd)
        return (directory.hasSuffix("/") ? directory : directory + "/") + path
    }
}
