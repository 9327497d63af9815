#if canImport(Glibc)
import Glibc
#endif

/// The process environment as libcurl (the agent's HTTP stack) must see it.
public enum ProxyEnvironment {
    /// Makes the process environment safe for libcurl. Call once at start-up, before any thread
    /// exists (`setenv` is not thread-safe):
    /// - loopback hosts are added to `no_proxy`/`NO_PROXY`, so plain http (allowed only to
    ///   loopback, for tests) never goes through a proxy named by `http_proxy`/`ALL_PROXY` in
    ///   clear text (https through a proxy stays end-to-end TLS and is left alone);
    /// - `URLSessionDebugLibcurl` and `URLSessionDebug` are removed: they make Foundation print
    ///   request and response bodies (the API key, session IDs) to stderr;
    /// - `SSLKEYLOGFILE` is removed: libcurl would write each connection's TLS secrets there,
    ///   which decrypt a capture of the login (the API key);
    /// - `URLSessionCertificateAuthorityInfoFile` is removed: swift-corelibs-foundation reads it
    ///   (on Android only, as of Swift 6.3) as the CA bundle, and its value
    ///   `INSECURE_SSL_NO_VERIFY` turns certificate verification off. The agent's CAs are those
    ///   of `--ca-file` (see `TrustSettings`), which the agent applies to every transfer along
    ///   with verification, whatever any variable says.
    public static func prepare() {
        // libcurl reads `no_proxy` first, then `NO_PROXY`; `*` (the whole value) bypasses every
        // proxy already. Both variables get the loopback hosts plus the value libcurl would use.
        let loopback = "localhost,127.0.0.0/8,::1"
        func variable(_ name: String) -> String { getenv(name).map { String(cString: $0) } ?? "" }
        let effective = variable("no_proxy").isEmpty ? variable("NO_PROXY") : variable("no_proxy")
        if effective.trimmingSpaces != "*" {
            let value = effective.isEmpty ? loopback : loopback + "," + effective
            setenv("no_proxy", value, 1)
            setenv("NO_PROXY", value, 1)
        }
        unsetenv("URLSessionDebugLibcurl")
        unsetenv("URLSessionDebug")
        unsetenv("SSLKEYLOGFILE")
        unsetenv("URLSessionCertificateAuthorityInfoFile")
    }

}

private extension String {
    /// Without leading and trailing spaces.
    var trimmingSpaces: Substring {
        var text = Substring(self)
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return text
    }
}
