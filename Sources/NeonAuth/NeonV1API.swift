import JSONRPC

/// NeonCRM API v1 login and logout.
///
/// NeonCRM facts (../shared/neoncrm-auth.md, "API v1: sessions"): `common/login` takes
/// `login.apiKey`, `login.orgid` and `responseType=json` (POST form works); success is judged
/// by `loginResponse.operationResult`, never by the HTTP status; failures list
/// `errors.error` as an array or a single object (unconfirmed: both accepted); `common/logout`
/// takes `userSessionId`.
public struct NeonV1API: Sendable {
    /// The API v1 base URL, without a trailing slash.
    public var baseURL: String
    public var http: any HTTPClient
    /// The total deadline of one call, in seconds.
    public var timeout: Double

    public init(baseURL: String, http: any HTTPClient, timeout: Double) {
        self.baseURL = baseURL
        self.http = http
        self.timeout = timeout
    }

    /// Logs `credential` in.
    /// - Returns: the new user session ID.
    /// - Throws: `NeonError`.
    public func login(_ credential: Credential) async throws(NeonError) -> Secret {
        let response = try await post("common/login", form: [
            ("login.apiKey", credential.apiKey.exposedValue),
            ("login.orgid", credential.orgId),
            ("responseType", "json"),
        ])
        return try NeonV1Parser.parseLogin(response)
    }

    /// Logs the session out.
    /// - Throws: `NeonError` (a session NeonCRM no longer knows gives `.credentialsRejected`
    ///   with error code 4).
    public func logout(_ sessionId: Secret) async throws(NeonError) {
        let response = try await post("common/logout", form: [
            ("userSessionId", sessionId.exposedValue),
            ("responseType", "json"),
        ])
        try NeonV1Parser.parseLogout(response)
    }

    private func post(_ path: String, form: [(String, String)]) async throws(NeonError) -> HTTPResponse {
        do {
            return try await http.postForm(url: baseURL + "/" + path, form: form, timeout: timeout)
        } catch {
            switch error {
            case .timedOut: throw .timedOut
            case .unreachable: throw .unavailable(httpStatus: nil, errors: [])
            case .cancelled: throw .cancelled
            case .tls(let failure): throw .tlsFailure(failure)
            }
        }
    }
}

/// Parses API v1 login and logout answers (see ``NeonV1API`` for the facts used).
public enum NeonV1Parser {
    /// v1 error codes that mean "try again later": 1 unexpected system error, 2 service not available.
    static let transientCodes: Set<String> = ["1", "2"]

    /// The session ID from a login answer.
    /// - Throws: `NeonError` for FAIL, HTTP trouble or a malformed answer.
    public static func parseLogin(_ response: HTTPResponse) throws(NeonError) -> Secret {
        let body = try envelope(response, member: "loginResponse")
        guard case .string(let id)? = body["userSessionId"], !id.isEmpty else {
            throw .unexpectedResponse(reason: "login SUCCESS without a userSessionId", httpStatus: response.status)
        }
        return Secret(id)
    }

    /// Checks a logout answer.
    /// - Throws: `NeonError` unless `operationResult` is SUCCESS.
    public static func parseLogout(_ response: HTTPResponse) throws(NeonError) {
        _ = try envelope(response, member: "logoutResponse")
    }

    /// The `member` object of a SUCCESS answer.
    static func envelope(_ response: HTTPResponse, member: String) throws(NeonError) -> JSONValue {
        let status = response.status
        if status >= 500 || status == 429 { throw .unavailable(httpStatus: status, errors: []) }
        let value: JSONValue
        do {
            value = try JSONReader.parse(response.body)
        } catch {
            let reason = response.body.isEmpty ? "empty body" : "body is not JSON"
            throw .unexpectedResponse(reason: reason, httpStatus: status)
        }
        guard let body = value[member], case .object = body else {
            throw .unexpectedResponse(reason: "no \(member) object", httpStatus: status)
        }
        switch body["operationResult"]?.stringValue?.uppercased() {
        case "SUCCESS"?:
            guard (200..<300).contains(status) else {
                throw .unexpectedResponse(reason: "SUCCESS with HTTP status \(status)", httpStatus: status)
            }
            return body
        case "FAIL"?:
            let errors = parseErrors(body["errors"])
            if errors.contains(where: { transientCodes.contains($0.code) }) {
                throw .unavailable(httpStatus: nil, errors: errors)
            }
            throw .credentialsRejected(errors, cachedFor: nil)
        default:
            throw .unexpectedResponse(reason: "operationResult is neither SUCCESS nor FAIL", httpStatus: status)
        }
    }

    /// `errors.error` as a list, whether NeonCRM sent an array or a single object.
    static func parseErrors(_ errors: JSONValue?) -> [NeonV1Error] {
        let items: [JSONValue]
        switch errors?["error"] {
        case .array(let list)?: items = list
        case .object(let single)?: items = [.object(single)]
        default: items = []
        }
        return items.map { item in
            let code: String
            switch item["errorCode"] {
            case .string(let s)?: code = s
            case .number(let n)?: code = n
            default: code = ""
            }
            return NeonV1Error(code: code, message: item["errorMessage"]?.stringValue ?? "")
        }
    }
}
