import FoundationEssentials

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
        return bytes.dropFirst(2).allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }
}

/// Checks that a base URL may carry credentials: https, or plain http on a loopback host.
public enum BaseURLPolicy {
    /// Validates `text` as a base URL for credentials.
    /// - Returns: the URL without a trailing slash.
    /// - Throws: a message (no secrets in it) saying what is wrong.
    public static func validate(_ text: String, name: String) throws -> String {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else {
            throw ConfigurationError("\(name): '\(text)' is not an absolute URL")
        }
        if components.user != nil || components.password != nil || components.query != nil || components.fragment != nil {
            throw ConfigurationError("\(name): the URL must not contain user info, a query or a fragment")
        }
        switch scheme {
        case "https":
            break
        case "http" where isLoopback(host):
            break
        case "http":
            throw ConfigurationError(
                "\(name): plain http is refused for '\(host)': credentials go only over https (http is allowed only on loopback hosts, for tests)")
        default:
            throw ConfigurationError("\(name): unsupported scheme '\(scheme)' (use https)")
        }
        var trimmed = text
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    /// Whether `host` is `localhost`, in 127.0.0.0/8, or `::1`.
    public static func isLoopback(_ host: String) -> Bool {
        var h = Substring(host.lowercased())
        while let first = h.first, first == "[" || first == "]" { h.removeFirst() }
        while let last = h.last, last == "[" || last == "]" { h.removeLast() }
        if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

/// A configuration problem found at start-up (reported on stderr, exit status 2).
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
