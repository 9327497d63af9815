// The agent's side of CNeonCurlTrust: hands the CA file (and directory) to the
// curl_multi_add_handle this executable defines, and checks that it reaches libcurl.
import CNeonCurlTrust
import NeonAuth
import NeonAuthHTTP

enum CurlTrust {
    /// Configures every later transfer with `trust` (verification is forced on either way).
    /// - Returns: `nil` without a CA file or directory; else the checks the HTTP client makes:
    ///   `unusable` set when the settings cannot reach libcurl in this process (every exchange
    ///   then fails with `ca-file-unusable` before sending anything), and after each exchange
    ///   CNeonCurlTrust's counters.
    static func install(_ trust: TrustSettings?) -> TransferTrust? {
        guard let trust, trust.caFile != nil || trust.caDirectory != nil else { return nil }
        var detail = [CChar](repeating: 0, count: 512)
        let result = withOptionalCString(trust.caFile) { file in
            withOptionalCString(trust.caDirectory) { directory in
                neon_curl_trust_configure(file, directory, &detail, detail.count)
            }
        }
        guard result == 0 else {
            let message = String(decoding: detail.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return TransferTrust(unusable: "cannot apply the CA file (\(trust.describedSource)): \(message)")
        }
        return TransferTrust(unusable: nil) {
            TransferTrust.unappliedReason(configured: neon_curl_trust_is_configured() != 0,
                                          applied: neon_curl_trust_applied(), failed: neon_curl_trust_failed())
        }
    }
}

/// `body` with a C string for `text`, or NULL.
private func withOptionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}
