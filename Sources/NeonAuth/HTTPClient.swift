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
    /// No connection could be made or it broke (refused, reset, DNS, TLS).
    case unreachable
    /// The exchange was cancelled (shutdown).
    case cancelled
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
        func append(_ text: String) {
            for byte in text.utf8 {
                if isUnreserved(byte) {
                    out.append(byte)
                } else {
                    out.append(UInt8(ascii: "%"))
                    out.append(hexDigits[Int(byte >> 4)])
                    out.append(hexDigits[Int(byte & 0x0F)])
                }
            }
        }
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
        for byte in text.utf8 {
            if keep(byte) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
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
