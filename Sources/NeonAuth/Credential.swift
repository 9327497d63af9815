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

    /// Validates the fields of a credential given in request params.
    ///
    /// Rules: `orgId` non-empty, no `:` (the HTTP Basic user name cannot hold one), no control
    /// characters; `apiKey` non-empty, no control characters; neither with leading or trailing
    /// whitespace (almost always a paste accident).
    /// - Throws: `RPCError` -32602 naming the field, never echoing its value.
    public static func validated(orgId: String, apiKey: String) throws(RPCError) -> Credential {
        try checkCommon(orgId, field: "orgId")
        if orgId.contains(":") {
            throw .invalidParams("Invalid params: orgId must not contain ':' (it is the HTTP Basic user name)", field: "orgId")
        }
        try checkCommon(apiKey, field: "apiKey")
        return Credential(orgId: orgId, apiKey: Secret(apiKey))
    }

    private static func checkCommon(_ value: String, field: String) throws(RPCError) {
        if value.isEmpty { throw .invalidParams("Invalid params: \(field) must not be empty", field: field) }
        if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw .invalidParams("Invalid params: \(field) must not contain control characters", field: field)
        }
        if let first = value.unicodeScalars.first, let last = value.unicodeScalars.last,
           first.properties.isWhitespace || last.properties.isWhitespace {
            throw .invalidParams(
                "Invalid params: \(field) has leading or trailing whitespace (probably pasted); remove it", field: field)
        }
    }
}
