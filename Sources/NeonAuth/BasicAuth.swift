import JSONRPC
#if canImport(Glibc)
import Glibc
#endif

/// Builds NeonCRM API v2 authorization.
///
/// NeonCRM fact (../shared/neoncrm-auth.md, "API v2: HTTP Basic"): the header is
/// `Authorization: Basic base64(UTF8(orgId + ":" + apiKey))` — the org ID is the user name,
/// the API key the password.
public enum BasicAuth {
    /// The `Authorization` header value for `credential`.
    /// - Returns: `"Basic "` followed by standard base64 (RFC 4648, with padding) of the UTF-8
    ///   bytes of `orgId:apiKey`, the key's bytes exactly as given.
    public static func authorization(for credential: Credential) -> String {
        var out = Array("Basic ".utf8)
        var pair = Array(credential.orgId.utf8)
        pair.append(UInt8(ascii: ":"))
        pair.append(contentsOf: credential.apiKey.exposedValue.utf8)
        pair.withUnsafeBufferPointer { appendBase64(of: $0, UnsafeBufferPointer(start: nil, count: 0), to: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Standard base64 (RFC 4648, with padding) of `bytes`.
    static func base64(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        bytes.withUnsafeBufferPointer { appendBase64(of: $0, UnsafeBufferPointer(start: nil, count: 0), to: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Appends standard base64 (RFC 4648, padded) of `first`, then `separator` if given, then
    /// `second` to `out`, without joining the inputs first (the hot path encodes `orgId`, `:`
    /// and `apiKey` where they lie). With `repeatAfter`, appends those bytes and the same
    /// encoding once more (the response carries the header value twice).
    static func appendBase64(of first: UnsafeBufferPointer<UInt8>, separator: UInt8? = nil, _ second: UnsafeBufferPointer<UInt8>,
                             to out: inout [UInt8], repeatAfter: [UInt8]? = nil) {
        let split = first.count + (separator == nil ? 0 : 1)
        let total = split + second.count
        let length = (total + 2) / 3 * 4
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(length, 1)) { encoded in
            alphabet.withUnsafeBufferPointer { table in
                @inline(__always) func byte(_ i: Int) -> UInt32 {
                    if i < first.count { return UInt32(first[i]) }
                    if i < split { return UInt32(separator!) }
                    return UInt32(second[i - split])
                }
                var i = 0, o = 0
                while i + 3 <= total {
                    let n = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2)
                    encoded[o] = table[Int(n >> 18)]
                    encoded[o + 1] = table[Int(n >> 12 & 63)]
                    encoded[o + 2] = table[Int(n >> 6 & 63)]
                    encoded[o + 3] = table[Int(n & 63)]
                    i += 3
                    o += 4
                }
                let rest = total - i
                if rest > 0 {
                    let n = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0)
                    encoded[o] = table[Int(n >> 18)]
                    encoded[o + 1] = table[Int(n >> 12 & 63)]
                    encoded[o + 2] = rest == 2 ? table[Int(n >> 6 & 63)] : UInt8(ascii: "=")
                    encoded[o + 3] = UInt8(ascii: "=")
                }
            }
            let result = UnsafeBufferPointer(rebasing: encoded[0..<length])
            out.append(contentsOf: result)
            if let repeatAfter {
                out.append(contentsOf: repeatAfter)
                out.append(contentsOf: result)
            }
        }
    }
}

/// Whether a byte slice equals `bytes` (memcmp, no generic iteration).
@inline(__always)
func bytesEqual(_ slice: Slice<UnsafeBufferPointer<UInt8>>, _ bytes: [UInt8]) -> Bool {
    slice.count == bytes.count && bytes.withUnsafeBytes { b in
        memcmp(slice.base.baseAddress! + slice.startIndex, b.baseAddress!, bytes.count) == 0
    }
}

/// The `sign` fast path: the same answer as ``NeonAuthService/sign(_:)`` for the common request
/// (inline ASCII `orgId`/`apiKey`, optional `apiVersion`), written straight from the request's
/// bytes. Anything else (profiles, non-ASCII, any invalid input) is declined and answered by
/// the general path; a test checks that both give identical bytes.
struct SignFastPath: Sendable {
    /// `,"baseUrl":"…"}}` for the default endpoints, encoded once.
    private let tail: [UInt8]
    private let defaultVersion: [UInt8]

    init(settings: ServiceSettings) {
        var tail = Array(#""},"baseUrl":"#.utf8)
        JSONWriter.writeString(settings.defaultEndpoints.v2BaseURL, into: &tail)
        tail.append(contentsOf: "}}".utf8)
        self.tail = tail
        defaultVersion = Array(settings.apiVersion.utf8)
    }

    private static let orgIdName = Array("orgId".utf8), apiKeyName = Array("apiKey".utf8), versionName = Array("apiVersion".utf8)
    private static let head = Array(#"{"jsonrpc":"2.0","id":"#.utf8)
    private static let authorization = Array(#","result":{"authorization":"Basic "#.utf8)
    private static let headers = Array(#"","headers":{"Authorization":"Basic "#.utf8)
    private static let version = Array(#"","NEON-API-VERSION":""#.utf8)

    func answer(_ request: FlatRequest, _ out: inout [UInt8]) -> Bool {
        var org: Range<Int>? = nil, key: Range<Int>? = nil, version: Range<Int>? = nil
        let bytes = request.bytes
        for index in 0..<request.paramCount {
            let member = request.param(at: index)
            let name = bytes[member.name]
            if bytesEqual(name, Self.orgIdName) { org = member.value }
            else if bytesEqual(name, Self.apiKeyName) { key = member.value }
            else if bytesEqual(name, Self.versionName) { version = member.value }
            else { return false }
        }
        guard let org, let key, Self.plainASCII(bytes[org], allowColon: false), Self.plainASCII(bytes[key], allowColon: true) else {
            return false
        }
        if let version {
            let v = bytes[version]
            guard v.count > 2, v.count <= 8, v[v.startIndex] == UInt8(ascii: "2"), v[v.startIndex + 1] == UInt8(ascii: "."),
                  v.dropFirst(2).allSatisfy({ $0 &- UInt8(ascii: "0") < 10 }) else { return false }
        }
        out.append(contentsOf: Self.head)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[request.id]))
        out.append(contentsOf: Self.authorization)
        BasicAuth.appendBase64(of: UnsafeBufferPointer(rebasing: bytes[org]), separator: UInt8(ascii: ":"),
                               UnsafeBufferPointer(rebasing: bytes[key]), to: &out, repeatAfter: Self.headers)
        out.append(contentsOf: Self.version)
        if let version { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[version])) } else { out.append(contentsOf: defaultVersion) }
        out.append(contentsOf: tail)
        return true
    }

    /// Non-empty printable ASCII without edge spaces (and without `:` unless allowed): the
    /// values ``Credential/validated(orgId:apiKey:)`` accepts, restricted to ASCII.
    static func plainASCII(_ value: Slice<UnsafeBufferPointer<UInt8>>, allowColon: Bool) -> Bool {
        guard let first = value.first, let last = value.last, first != 0x20, last != 0x20 else { return false }
        for byte in value where byte < 0x20 || byte >= 0x7F || (!allowColon && byte == UInt8(ascii: ":")) { return false }
        return true
    }
}
