/// The few Language Server Protocol lifecycle methods that clients built for language servers
/// send whatever the server is: `initialize` gets a minimal result, `shutdown` gets `null`,
/// `exit` ends the process as end of input does. `$/` notifications (e.g. `$/cancelRequest`,
/// `$/setTrace`) need no handler: notifications for unknown methods are ignored silently.
public enum LSPCompatibility {
    /// Handlers for `initialize`, `initialized`, `shutdown` and `exit`.
    /// - Parameters:
    ///   - name: the server name reported by `initialize`.
    ///   - version: the server version reported by `initialize`.
    ///   - onExit: called on the reading thread for `exit` (a request gets `null` as its
    ///     result); expected to make the server stop reading after this message
    ///     (``StdioServer/requestStop()``), so that every answer is still written.
    public static func handlers(name: String, version: String, onExit: @escaping @Sendable () -> Void) -> [String: MethodHandler] {
        [
            "initialize": .immediate { _ in
                ["capabilities": .object(JSONObject()), "serverInfo": ["name": .string(name), "version": .string(version)]]
            },
            "initialized": .immediate { _ in .null },
            "shutdown": .immediate { _ in .null },
            "exit": .immediate { _ in
                onExit()
                return .null
            },
        ]
    }
}
