/// The settings a neon-auth agent is started with, as flags, and the digest that names it.
///
/// A front-end passes exactly these to the agent it starts, and both derive the socket's name
/// from them (``AgentLocation``): two front-ends share an agent only when every setting the
/// agent's behaviour depends on is the same.
public struct AgentSettings: Sendable, Equatable {
    /// The pool's and the HTTP client's settings (base URLs, timeouts, CA file).
    public var configuration: Configuration
    /// Seconds with no session and no connection after which a shared agent exits.
    public var idleExit: Double

    /// The default ``idleExit``: a minute.
    public static let defaultIdleExit: Double = 60

    public init(configuration: Configuration, idleExit: Double = AgentSettings.defaultIdleExit) {
        self.configuration = configuration
        self.idleExit = idleExit
    }

    /// The agent's command-line flags for these settings (no secret: none of them is one).
    public var arguments: [String] {
        let c = configuration
        var flags = [
            "--v1-base-url", c.v1BaseURL, "--v2-base-url", c.v2BaseURL,
            "--idle-timeout", formatSeconds(c.idleTimeout), "--idle-margin", formatSeconds(c.idleMargin),
            "--refresh-ahead", formatSeconds(c.refreshAhead), "--rejection-cache", formatSeconds(c.rejectionCache),
            "--http-timeout", formatSeconds(c.httpTimeout), "--connect-timeout", formatSeconds(c.connectTimeout),
            "--shutdown-timeout", formatSeconds(c.shutdownTimeout), "--log-level", c.logLevel.name,
            "--agent-idle-exit", formatSeconds(idleExit),
        ]
        // The CAs its TLS connections trust: part of the digest, so a front-end with another
        // CA file (or none) never shares an agent that trusts something else.
        if let trust = c.trust { flags += trust.agentArguments }
        return flags
    }

    /// The digest that names the agent for these settings (the log level aside: it changes
    /// nothing the front-end sees).
    public var digest: String {
        var settings = arguments
        if let index = settings.firstIndex(of: "--log-level") { settings.removeSubrange(index...(index + 1)) }
        return AgentLocation.settingsDigest(settings)
    }
}
