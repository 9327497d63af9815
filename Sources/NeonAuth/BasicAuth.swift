import Foundation

/// Builds NeonCRM API v2 authorization.
///
/// NeonCRM fact (../shared/neoncrm-auth.md, "API v2: HTTP Basic"): the header is
/// `Authorization: Basic base64(UTF8(orgId + ":" + apiKey))` — the org ID is the user name,
/// the API key the password.
public enum BasicAuth {
    /// The `Authorization` header value for `credential`.
    /// - Returns: `"Basic "` followed by standard base64 (with padding) of the UTF-8 bytes of
    ///   `orgId:apiKey`, the key's bytes exactly as given.
    public static func authorization(for credential: Credential) -> String {
        var bytes = Array(credential.orgId.utf8)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(contentsOf: credential.apiKey.exposedValue.utf8)
        return "Basic " + Data(bytes).base64EncodedString()
    }
}
