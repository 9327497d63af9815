/// Which NeonCRM instance family to talk to.
///
/// NeonCRM fact (../shared/neoncrm-auth.md, "API v2" and "API v1"): production and sandbox
/// share `api.neoncrm.com`; trial instances use `trial.neoncrm.com` (API v2) and
/// `trial.z2systems.com` (API v1, unconfirmed, as public clients use).
public enum NeonEnvironment: String, Sendable, CaseIterable {
    case production
    case trial

    /// The API v1 base URL (`.../neonws/services/api`, no trailing slash).
    public var v1BaseURL: String {
        switch self {
        case .production: return "https://api.neoncrm.com/neonws/services/api"
        case .trial: return "https://trial.z2systems.com/neonws/services/api"
        }
    }

    /// The API v2 base URL (`.../v2`, no trailing slash).
    public var v2BaseURL: String {
        switch self {
        case .production: return "https://api.neoncrm.com/v2"
        case .trial: return "https://trial.neoncrm.com/v2"
        }
    }
}

/// API v2 versions and the version neon-auth pins by default.
///
/// NeonCRM fact (../shared/neoncrm-auth.md, "API v2"): `NEON-API-VERSION: 2.N`; 2.1 to at
/// least 2.11 exist, and a request without the header gets the latest version, so neon-auth
/// always sends an explicit one.
public enum NeonAPIVersion {
    /// The version sent when neither the request nor the configuration names one.
    public static let pinned = "2.11"

    /// Whether `version` has the form `2.N` (N a decimal number without a sign).
    public static func isWellFormed(_ version: String) -> Bool {
        let bytes = version.utf8
        guard bytes.count > 2, bytes.count <= 8, bytes.starts(with: [UInt8(ascii: "2"), UInt8(ascii: ".")]) else { return false }
        let minor = bytes.dropFirst(2)
        // NeonCRM's versions have no leading zeros: 2.011 is not 2.11.
        if minor.count > 1 && minor.first == UInt8(ascii: "0") { return false }
        return minor.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }
}

/// Checks that a base URL may carry credentials: https, or plain http on a loopback host.
///
/// Base URLs are checked against a deliberately narrow grammar rather than a general URL
/// parser: `http[s]://host[:port][/path]`, where host is a DNS name or IPv4 address
/// (`A-Z a-z 0-9 - .`), port is 1 to 65535, and path holds only
/// RFC 3986 path characters (unreserved, sub-delimiters, `:`, `@`, `/`, `%XX`). Anything a
/// general parser might read differently from the HTTP client (user info, a query, a fragment,
/// backslashes, spaces, non-ASCII, percent-encoding in the host) is refused, so the host
/// checked here is the host the credentials go to. A test checks that Foundation's
/// `URLComponents` reads every accepted URL the same way. It also keeps Foundation out of
/// start-up.
public enum BaseURLPolicy {
    /// The parts of an accepted base URL.
    struct Parts: Equatable {
        /// `http` or `https`, lower-cased.
        var scheme: String
        /// The host as written (IPv6 literals without brackets).
        var host: String
        var port: Int?
        /// The path as written (may be empty).
        var path: String
    }

    /// Validates `text` as a base URL for credentials.
    /// - Returns: the URL without a trailing slash.
    /// - Throws: `ConfigurationError` (naming `name`, no secrets) saying what is wrong.
    public static func validate(_ text: String, name: String) throws -> String {
        let parts = try parse(text, name: name)
        switch parts.scheme {
        case "https":
            break
        case "http" where isLoopback(parts.host):
            break
        default:
            throw ConfigurationError(
                "\(name): plain http is refused for this host: credentials go only over https (http is allowed only on loopback hosts, for tests)")
        }
        // The scheme in lower case: the HTTP client does not recognise `HTTPS://`.
        var trimmed = parts.scheme + text.drop { $0 != ":" }
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    /// Splits `text` by the narrow grammar above.
    /// - Throws: `ConfigurationError` naming `name` and what is wrong.
    static func parse(_ text: String, name: String) throws -> Parts {
        let bytes = Array(text.utf8)
        // The URL itself is never echoed: a key pasted into it must not reach stderr.
        func fail(_ what: String) -> ConfigurationError { ConfigurationError("\(name): the URL \(what)") }
        guard let separator = firstIndex(of: Array("://".utf8), in: bytes) else { throw fail("is not an absolute URL") }
        let scheme = String(decoding: bytes[..<separator], as: UTF8.self).lowercased()
        guard scheme == "http" || scheme == "https" else {
            if scheme.isEmpty || !scheme.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }) {
                throw fail("is not an absolute URL")
            }
            throw ConfigurationError("\(name): unsupported scheme (use https)")
        }
        let rest = bytes[(separator + 3)...]
        if rest.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
            throw ConfigurationError("\(name): the URL must not contain user info, a query or a fragment")
        }
        let authorityEnd = rest.firstIndex(of: UInt8(ascii: "/")) ?? rest.endIndex
        let authority = rest[..<authorityEnd], path = rest[authorityEnd...]
        if authority.contains(UInt8(ascii: "@")) {
            throw ConfigurationError("\(name): the URL must not contain user info, a query or a fragment")
        }
        var host: ArraySlice<UInt8>, portText: ArraySlice<UInt8>? = nil
        if authority.first == UInt8(ascii: "[") {
            // Checked for a clear message, then refused: the HTTP client (URLSession on
            // Linux) cannot send to IPv6 address literals.
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")) else { throw fail("has an unterminated IPv6 address") }
            host = authority[(authority.startIndex + 1)..<close]
            guard !host.isEmpty, host.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }),
                  host.contains(UInt8(ascii: ":")) else { throw fail("has an invalid IPv6 address") }
            let after = authority[(close + 1)...]
            if !after.isEmpty {
                guard after.first == UInt8(ascii: ":") else { throw fail("is not an absolute URL") }
                portText = after.dropFirst()
            }
            throw fail("has an IPv6 address, which the HTTP client cannot use: use a host name (e.g. localhost)")
        } else {
            if let colon = authority.firstIndex(of: UInt8(ascii: ":")) {
                host = authority[..<colon]
                portText = authority[(colon + 1)...]
            } else {
                host = authority
            }
            guard !host.isEmpty else { throw fail("is not an absolute URL (no host)") }
            guard host.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }) else {
                throw fail("has a host neon-auth does not accept (a DNS name or IPv4 address: letters, digits, '-' and '.' only; IPv6 address literals are not supported)")
            }
        }
        var port: Int? = nil
        if let portText {
            guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy(isDigit),
                  let value = Int(String(decoding: portText, as: UTF8.self)), (1...65535).contains(value) else {
                throw fail("has an invalid port (1 to 65535)")
            }
            port = value
        }
        var index = path.startIndex
        while index < path.endIndex {
            let byte = path[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < path.endIndex, isHexDigit(path[index + 1]), isHexDigit(path[index + 2]) else {
                    throw fail("has an invalid percent-encoding in its path")
                }
                index += 3
                continue
            }
            guard FormEncoding.isUnreserved(byte) || isPathPunctuation(byte) else {
                throw fail("has a character in its path that must be percent-encoded")
            }
            index += 1
        }
        return Parts(scheme: scheme, host: String(decoding: host, as: UTF8.self), port: port,
                     path: String(decoding: path, as: UTF8.self))
    }

    private static func firstIndex(of needle: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        return (0...(bytes.count - needle.count)).first { bytes[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z")
    }
    private static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "f")
    }
    /// RFC 3986 `pchar` and `/` beyond the unreserved set: sub-delimiters, `:`, `@`, `/`.
    private static func isPathPunctuation(_ byte: UInt8) -> Bool {
        "!$&'()*+,;=:@/".utf8.contains(byte)
    }

    /// Whether `host` is `localhost`, in 127.0.0.0/8, or `::1`.
    public static func isLoopback(_ host: String) -> Bool {
        var h = Substring(host.lowercased())
        while let first = h.first, first == "[" || first == "]" { h.removeFirst() }
        while let last = h.last, last == "[" || last == "]" { h.removeLast() }
        if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        // Canonical decimal only: `127.000.000.001` is refused rather than guessed at.
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil && ($0 == "0" || !$0.hasPrefix("0")) }
    }
}

/// A configuration problem found at start-up (reported on stderr, exit status 2).
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
