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
        var pair = Array(credential.orgId.utf8)
        pair.append(UInt8(ascii: ":"))
        pair.append(contentsOf: credential.apiKey.exposedValue.utf8)
        return "Basic " + base64(pair)
    }

    /// Standard base64 (RFC 4648, with padding) of `bytes`.
    static func base64(_ bytes: [UInt8]) -> String {
        let length = (bytes.count + 2) / 3 * 4
        return String(unsafeUninitializedCapacity: length) { out in
            bytes.withUnsafeBufferPointer { input in
                alphabet.withUnsafeBufferPointer { table in
                    encodeBase64(input.baseAddress ?? UnsafePointer(table.baseAddress!), count: input.count,
                                 to: out.baseAddress!, alphabet: table.baseAddress!)
                }
            }
        }
    }

    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
}

/// The `sign` fast path: the same answer as ``NeonAuthService/sign(_:)`` for the common request
/// (inline ASCII `orgId`/`apiKey`, optional `apiVersion`), written straight from the request's
/// bytes into the read's output. Anything else (profiles, non-ASCII, any invalid input, a pair
/// longer than ``maxPair`` bytes) is declined and answered by the general path; a test checks
/// that both give identical bytes.
///
/// The response's constant parts live in one buffer made at start-up (no `static let`, so no
/// lazy-initialisation check per request).
final class SignFastPath: @unchecked Sendable {  // immutable after init
    /// Longest `orgId:apiKey` the fast path encodes (on the stack); longer pairs take the general path.
    static let maxPair = 480

    /// The constant parts, one after another: head, authorization, headers, version label,
    /// default version, tail (their lengths below).
    private let parts: UnsafeMutablePointer<UInt8>
    private let headLength: Int, authorizationLength: Int, headersLength: Int, labelLength: Int
    private let defaultVersionLength: Int, tailLength: Int
    private let b64: UnsafeMutablePointer<UInt8>

    init(settings: ServiceSettings) {
        var tail = Array(#""},"baseUrl":"#.utf8)
        JSONWriter.writeString(settings.defaultEndpoints.v2BaseURL, into: &tail)
        tail.append(contentsOf: "}}".utf8)
        let pieces: [[UInt8]] = [
            Array(#"{"jsonrpc":"2.0","id":"#.utf8),
            Array(#","result":{"authorization":"Basic "#.utf8),
            Array(#"","headers":{"Authorization":"Basic "#.utf8),
            Array(#"","NEON-API-VERSION":""#.utf8),
            Array(settings.apiVersion.utf8),
            tail,
        ]
        (headLength, authorizationLength, headersLength, labelLength, defaultVersionLength, tailLength) =
            (pieces[0].count, pieces[1].count, pieces[2].count, pieces[3].count, pieces[4].count, pieces[5].count)
        let all = pieces.flatMap { $0 }
        parts = .allocate(capacity: all.count)
        parts.initialize(from: all, count: all.count)
        b64 = .allocate(capacity: 64)
        b64.initialize(from: Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8), count: 64)
    }

    deinit {
        parts.deallocate()
        b64.deallocate()
    }

    func answer(_ request: borrowing FlatRequest, _ out: inout OutputBuffer) -> Bool {
        var org = -1, key = -1, version = -1
        for index in 0..<request.paramCount {
            if request.paramName(index, is: "orgId") { org = index }
            else if request.paramName(index, is: "apiKey") { key = index }
            else if request.paramName(index, is: "apiVersion") { version = index }
            else { return false }
        }
        guard org >= 0, key >= 0, request.valueIsPlainASCII(org), request.valueIsPlainASCII(key) else { return false }
        let base = request.base
        let orgRange = request.param(at: org).value, keyRange = request.param(at: key).value
        let orgStart = base + orgRange.lowerBound, orgCount = orgRange.count
        let keyStart = base + keyRange.lowerBound, keyCount = keyRange.count
        // What Credential.validated(orgId:apiKey:) accepts, for printable ASCII: non-empty, no
        // edge space, no ':' in the org ID.
        guard orgCount > 0, keyCount > 0, orgStart[0] != 0x20, orgStart[orgCount - 1] != 0x20,
              keyStart[0] != 0x20, keyStart[keyCount - 1] != 0x20,
              memchr(orgStart, Int32(UInt8(ascii: ":")), orgCount) == nil else { return false }
        let pairCount = orgCount + 1 + keyCount
        guard pairCount <= Self.maxPair else { return false }
        let defaultVersion = UnsafePointer(parts + headLength + authorizationLength + headersLength + labelLength)
        var versionStart = defaultVersion, versionCount = defaultVersionLength
        if version >= 0 {
            let range = request.param(at: version).value
            versionStart = base + range.lowerBound
            versionCount = range.count
            // NeonAPIVersion.isWellFormed: 2.N, N decimal digits without a leading zero, at most 8 bytes.
            guard versionCount > 2, versionCount <= 8, versionStart[0] == UInt8(ascii: "2"), versionStart[1] == UInt8(ascii: "."),
                  versionCount == 3 || versionStart[2] != UInt8(ascii: "0") else { return false }
            for i in 2..<versionCount where versionStart[i] &- UInt8(ascii: "0") >= 10 { return false }
        }
        let idStart = base + request.id.lowerBound, idCount = request.id.count
        let encodedCount = (pairCount + 2) / 3 * 4
        let total = headLength + idCount + authorizationLength + encodedCount + headersLength + encodedCount
            + labelLength + versionCount + tailLength
        var to = out.reserve(total)
        var from = UnsafePointer(parts)
        /// Copies `n` bytes from `source` to the answer.
        @inline(__always) func put(_ source: UnsafePointer<UInt8>, _ n: Int) {
            to.update(from: source, count: n)
            to += n
        }
        /// Copies the next `n` bytes of the constant parts.
        @inline(__always) func putPart(_ n: Int) {
            put(from, n)
            from += n
        }
        // head, id, authorization, base64, headers, base64, version label, version, tail
        putPart(headLength)
        put(idStart, idCount)
        putPart(authorizationLength)
        let encoded = to
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Self.maxPair) { scratch in
            let pair = scratch.baseAddress!
            pair.update(from: orgStart, count: orgCount)
            pair[orgCount] = UInt8(ascii: ":")
            (pair + orgCount + 1).update(from: keyStart, count: keyCount)
            _ = BasicAuth.encodeBase64(pair, count: pairCount, to: encoded, alphabet: b64)
            // The key's bytes do not outlive the request on the stack (explicit_bzero: a
            // memset of memory about to go out of scope is optimised away).
            explicit_bzero(pair, pairCount)
        }
        to += encodedCount
        putPart(headersLength)
        put(encoded, encodedCount)
        putPart(labelLength)
        from += defaultVersionLength
        put(versionStart, versionCount)
        putPart(tailLength)
        out.commit(total)
        return true
    }
}

extension BasicAuth {
    /// Writes standard base64 (RFC 4648, padded) of `count` bytes at `bytes` to `out`, which
    /// must have room for `(count + 2) / 3 * 4` bytes. - Returns: the bytes written.
    @inline(__always)
    static func encodeBase64(_ bytes: UnsafePointer<UInt8>, count: Int, to out: UnsafeMutablePointer<UInt8>,
                             alphabet table: UnsafePointer<UInt8>) -> Int {
        var i = 0, o = 0
        while i + 3 <= count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out[o] = table[Int(n >> 18)]
            out[o + 1] = table[Int(n >> 12 & 63)]
            out[o + 2] = table[Int(n >> 6 & 63)]
            out[o + 3] = table[Int(n & 63)]
            i += 3
            o += 4
        }
        let rest = count - i
        if rest > 0 {
            let n = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            out[o] = table[Int(n >> 18)]
            out[o + 1] = table[Int(n >> 12 & 63)]
            out[o + 2] = rest == 2 ? table[Int(n >> 6 & 63)] : UInt8(ascii: "=")
            out[o + 3] = UInt8(ascii: "=")
            o += 4
        }
        return o
    }
}
