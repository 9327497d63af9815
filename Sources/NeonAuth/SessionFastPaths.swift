import JSONRPC

/// The fast paths of `openSession` and `closeSession`: the pool's common case, answered on the
/// reading thread without a task, an actor hop or a JSON tree.
///
/// - `openSession` with exactly `orgId` and `apiKey` (plain ASCII, as ``SignFastPath`` accepts)
///   when the pool hands out a fresh session at once (``SessionPool/openPooled(_:)``).
/// - `closeSession` with exactly `userSessionId` when releasing the hold logs nothing out
///   (``SessionPool/releasePooled(_:)``).
///
/// Everything else (profiles, `replace`, `logout`, a login or refresh due, unknown sessions,
/// any invalid input) is declined and answered by the general path, which is the reference:
/// a test checks that both give identical bytes and leave the pool in the same state.
struct SessionFastPaths: Sendable {
    let pool: SessionPool
    /// The API v1 base URL of the default environment (inline credentials use it).
    let v1BaseURL: String

    private static let orgIdName = Array("orgId".utf8), apiKeyName = Array("apiKey".utf8)
    private static let userSessionIdName = Array("userSessionId".utf8)
    private static let head = Array(#"{"jsonrpc":"2.0","id":"#.utf8)
    private static let opened = Array(#","result":{"userSessionId":"#.utf8)
    private static let reused = Array(#","reused":true}}"#.utf8)
    private static let released = Array(#","result":{"closed":true,"loggedOut":false}}"#.utf8)

    /// `openSession`'s fast path (see the type's documentation).
    func open(_ request: FlatRequest, _ out: inout [UInt8]) -> Bool {
        guard request.paramCount == 2 else { return false }
        let bytes = request.bytes
        var org: Range<Int>? = nil, key: Range<Int>? = nil
        for index in 0..<2 {
            let member = request.param(at: index)
            let name = bytes[member.name]
            if bytesEqual(name, Self.orgIdName) { org = member.value }
            else if bytesEqual(name, Self.apiKeyName) { key = member.value }
            else { return false }
        }
        guard let org, let key, SignFastPath.plainASCII(bytes[org], allowColon: false),
              SignFastPath.plainASCII(bytes[key], allowColon: true) else { return false }
        let credential = Credential(orgId: String(decoding: bytes[org], as: UTF8.self),
                                    apiKey: Secret(String(decoding: bytes[key], as: UTF8.self)))
        guard let id = pool.openPooled(SessionPool.Key(v1BaseURL: v1BaseURL, credential: credential)) else { return false }
        out.append(contentsOf: Self.head)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[request.id]))
        out.append(contentsOf: Self.opened)
        JSONWriter.writeString(id.exposedValue, into: &out)
        out.append(contentsOf: Self.reused)
        return true
    }

    /// `closeSession`'s fast path (see the type's documentation).
    func close(_ request: FlatRequest, _ out: inout [UInt8]) -> Bool {
        guard request.paramCount == 1 else { return false }
        let bytes = request.bytes
        let member = request.param(at: 0)
        guard bytesEqual(bytes[member.name], Self.userSessionIdName), !member.value.isEmpty,
              pool.releasePooled(Secret(String(decoding: bytes[member.value], as: UTF8.self))) else { return false }
        out.append(contentsOf: Self.head)
        out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[request.id]))
        out.append(contentsOf: Self.released)
        return true
    }
}
