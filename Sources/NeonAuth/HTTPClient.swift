/// An HTTP response: status code and body bytes.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }
}

/// Why an HTTP exchange produced no response.
public enum HTTPFailure: Error, Sendable, Equatable {
    /// The deadline passed before a whole response arrived.
    case timedOut
    /// No connection could be made or it broke (refused, reset, DNS; a TLS connection closed
    /// or reset by the peer in the middle of its handshake).
    case unreachable
    /// The exchange was cancelled (shutdown).
    case cancelled
    /// The TLS handshake or the server's certificate failed: no request was sent (or, when
    /// the server refused the client late in a TLS 1.3 handshake, none was answered).
    case tls(TLSFailure)
}

/// Why a TLS connection failed, as a stable token (`data.reason` of error -32007).
public enum TLSFailureReason: String, Sendable, Equatable, CaseIterable {
    /// The certificate chain does not end at a trusted CA (e.g. a private or corporate CA that
    /// was not given with `--ca-file`).
    case untrustedIssuer = "untrusted-issuer"
    /// The server's certificate is self-signed and not trusted.
    case selfSigned = "self-signed"
    /// The certificate is not valid for the host name (or address) of the base URL.
    case hostNameMismatch = "host-name-mismatch"
    /// The certificate (or one in its chain) has expired.
    case expired
    /// The certificate (or one in its chain) is not valid yet.
    case notYetValid = "not-yet-valid"
    /// Any other reason the certificate was refused (bad signature, wrong purpose, revoked...).
    case certificateInvalid = "certificate-invalid"
    /// The handshake itself failed (an alert, no protocol version or cipher in common...).
    case handshakeFailed = "handshake-failed"
    /// The server does not speak TLS on that port (e.g. plain http on an https URL).
    case notTLS = "not-tls"
    /// The configured CA file (or directory) could not be used.
    case caFileUnusable = "ca-file-unusable"

    /// What it means, for people (completes "NeonCRM's TLS certificate ..." or stands alone).
    var explanation: String {
        switch self {
        case .untrustedIssuer:
            return "its TLS certificate is not issued by a CA this machine trusts (a private or corporate CA must be "
                + "given with --ca-file or NEON_AUTH_CA_FILE)"
        case .selfSigned: return "its TLS certificate is self-signed"
        case .hostNameMismatch: return "its TLS certificate is not valid for that host name (check the base URL)"
        case .expired: return "its TLS certificate has expired (or this machine's clock is wrong)"
        case .notYetValid: return "its TLS certificate is not valid yet (or this machine's clock is wrong)"
        case .certificateInvalid: return "its TLS certificate was refused"
        case .handshakeFailed: return "the TLS handshake failed"
        case .notTLS: return "it does not speak TLS there (is it plain http? check the base URL's scheme and port)"
        case .caFileUnusable: return "the configured CA file could not be used"
        }
    }
}

/// A failed TLS connection: why, and to which host. Holds no credential and no URL beyond
/// `host:port`.
public struct TLSFailure: Error, Sendable, Equatable {
    public var reason: TLSFailureReason
    /// `host` or `host:port` of the URL.
    public var host: String
    /// What the TLS stack said (libcurl's message, for logs), or empty.
    public var detail: String

    public init(reason: TLSFailureReason, host: String, detail: String = "") {
        self.reason = reason
        self.host = host
        self.detail = detail
    }

    /// `host[:port]` of an absolute URL: between `://` and the next `/`, `?` or `#`, after any
    /// user info (never part of it).
    public static func host(of url: String) -> String {
        var rest = Substring(url)
        if let scheme = rest.firstRange(of: "://") { rest = rest[scheme.upperBound...] }
        if let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) { rest = rest[..<end] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        return String(rest)
    }
}

/// Sends form-encoded POST requests. The seam that tests replace.
public protocol HTTPClient: Sendable {
    /// POSTs `form` as `application/x-www-form-urlencoded` to `url`.
    /// - Parameters:
    ///   - url: an absolute http(s) URL (no secrets in it).
    ///   - form: name/value pairs, percent-encoded by the client.
    ///   - timeout: the total deadline in seconds, connection included.
    /// - Throws: `HTTPFailure`.
    func postForm(url: String, form: [(String, String)], timeout: Double) async throws(HTTPFailure) -> HTTPResponse
}

/// Form encoding (`application/x-www-form-urlencoded`) with strict percent-encoding: every
/// byte outside RFC 3986's unreserved set is escaped, so keys holding `+`, `&`, `=`, `%`,
/// `:` or non-ASCII arrive intact.
public enum FormEncoding {
    /// `name=value&...`, each part percent-encoded as UTF-8.
    public static func encode(_ form: [(String, String)]) -> String {
        form.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }

    /// `encode(form)` as bytes, written straight into one buffer allocated at its final size: no
    /// intermediate string or growth copy holds the values (API key, session ID), so zeroing
    /// the result once it has been handed over leaves none of them behind in the heap.
    public static func encodedBytes(_ form: [(String, String)]) -> [UInt8] {
        func encodedCount(_ text: String) -> Int { text.utf8.reduce(0) { $0 + (isUnreserved($1) ? 1 : 3) } }
        let count = form.reduce(max(form.count - 1, 0)) { $0 + encodedCount($1.0) + 1 + encodedCount($1.1) }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        func append(_ text: String) { appendEscaped(text, keeping: isUnreserved, into: &out) }
        for (index, (name, value)) in form.enumerated() {
            if index > 0 { out.append(UInt8(ascii: "&")) }
            append(name)
            out.append(UInt8(ascii: "="))
            append(value)
        }
        return out
    }

    /// One percent-encoded component: the UTF-8 bytes of `text`, each byte outside
    /// `A-Z a-z 0-9 - . _ ~` written as `%XX` (upper-case hex).
    public static func escape(_ text: String) -> String {
        escape(text, keeping: isUnreserved)
    }

    /// `text` percent-encoded as UTF-8, keeping the bytes for which `keep` is true.
    static func escape(_ text: String, keeping keep: (UInt8) -> Bool) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        appendEscaped(text, keeping: keep, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `text` percent-encoded as UTF-8 to `out`: each byte for which `keep` is false
    /// as `%XX` (upper-case hex).
    static func appendEscaped(_ text: String, keeping keep: (UInt8) -> Bool, into out: inout [UInt8]) {
        for byte in text.utf8 {
            if keep(byte) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789ABCDEF".utf8)

    /// RFC 3986 unreserved: `A-Z a-z 0-9 - . _ ~`.
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// The bytes a URL query keeps unescaped (Foundation's `CharacterSet.urlQueryAllowed`):
    /// unreserved, sub-delimiters `!$&'()*+,;=`, and `:@/?`.
    static func isQueryAllowed(_ byte: UInt8) -> Bool {
        if isUnreserved(byte) { return true }
        switch byte {
        case UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="),
             UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "/"), UInt8(ascii: "?"):
            return true
        default:
            return false
        }
    }
}
