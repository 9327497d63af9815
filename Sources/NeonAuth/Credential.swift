import JSONRPC

/// An org ID and API key pair: one NeonCRM user.
///
/// NeonCRM fact (../shared/neoncrm-auth.md, "Credentials"): an API key belongs to one user, so
/// two keys of one org are two users and must never share a session or a header.
public struct Credential: Sendable, Hashable {
    /// The organization's ID, e.g. `acme` (case-sensitive; not secret).
    public var orgId: String
    /// The user's API key (opaque UTF-8).
    public var apiKey: Secret

    public init(orgId: String, apiKey: Secret) {
        self.orgId = orgId
        self.apiKey = apiKey
    }

    /// Byte equality (see ``Secret``'s `==`): org IDs are compared by their UTF-8 bytes too.
    public static func == (lhs: Credential, rhs: Credential) -> Bool {
        lhs.apiKey == rhs.apiKey && lhs.orgId.utf8.elementsEqual(rhs.orgId.utf8)
    }

    /// Hashes the bytes, consistently with `==`.
    public func hash(into hasher: inout Hasher) {
        var org = orgId
        org.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        hasher.combine(apiKey)
    }

    /// Validates the fields of a credential given in request params.
    ///
    /// Rules: `orgId` non-empty, no `:` (the HTTP Basic user name cannot hold one), no control
    /// characters; `apiKey` non-empty, no control characters; neither with leading or trailing
    /// whitespace (almost always a paste accident).
    /// - Throws: `RPCError` -32602 naming the field, never echoing its value.
    public static func validated(orgId: String, apiKey: String) throws(RPCError) -> Credential {
        try checkCommon(orgId, field: "orgId")
        if orgId.utf8.contains(UInt8(ascii: ":")) {
            throw .invalidParams("Invalid params: orgId must not contain ':' (it is the HTTP Basic user name)", field: "orgId")
        }
        try checkCommon(apiKey, field: "apiKey")
        return Credential(orgId: orgId, apiKey: Secret(apiKey))
    }

    private static func checkCommon(_ value: String, field: String) throws(RPCError) {
        if value.isEmpty { throw .invalidParams("Invalid params: \(field) must not be empty", field: field) }
        switch scan(value) {
        case .ok: return
        case .control:
            throw .invalidParams("Invalid params: \(field) must not contain control characters", field: field)
        case .edgeWhitespace:
            throw .invalidParams(
                "Invalid params: \(field) has leading or trailing whitespace (probably pasted); remove it", field: field)
        }
    }

    private enum ScanResult { case ok, control, edgeWhitespace }

    /// Checks for control characters and edge whitespace. ASCII (the usual case) is checked
    /// byte by byte; anything else falls back to Unicode properties.
    private static func scan(_ value: String) -> ScanResult {
        var utf8 = value
        let ascii: Bool? = utf8.withUTF8 { bytes in
            for byte in bytes {
                if byte >= 0x80 { return nil }
                if byte < 0x20 || byte == 0x7F { return false }
            }
            return true
        }
        switch ascii {
        case false?:
            return .control
        case true?:
            let first = value.utf8.first!, last = value.utf8.last!
            return first == 0x20 || last == 0x20 ? .edgeWhitespace : .ok
        case nil:
            if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) { return .control }
            let first = value.unicodeScalars.first!, last = value.unicodeScalars.last!
            return first.properties.isWhitespace || last.properties.isWhitespace ? .edgeWhitespace : .ok
        }
    }
}
