// neon-auth-agent: the session pool and all of neon-auth's HTTP (URLSession), serving
// JSON-RPC 2.0 to neon-auth front-ends. Started by a front-end, never by hand:
//   neon-auth-agent --shared DIR --name NAME [SETTINGS]   the per-user agent on DIR/NAME.sock
//   neon-auth-agent --stdio [SETTINGS]                    a private agent on its stdin/stdout
// SETTINGS are AgentSettings.arguments (base URLs, timeouts, log level, --agent-idle-exit, and
// the CAs to trust: --ca-file PATH, --ca-directory DIRS, as the front-end resolved them).
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import CNeonSystem
import JSONRPC
import NeonAuth
import NeonAuthHTTP

StandardDescriptors.openClosed()
// Before any thread exists: no proxy for loopback, no Foundation debug output, no TLS key log,
// no variable that Foundation reads for its CA bundle (see there).
ProxyEnvironment.prepare()
_ = neon_auth_limit_malloc_arenas(2)  // before any thread: RSS stays flat over login bursts

enum Mode { case shared(directory: String, name: String), stdio }
var mode: Mode? = nil
var idleExit = AgentSettings.defaultIdleExit
var caDirectory: String? = nil
var rest: [String] = []
var arguments = Array(CommandLine.arguments.dropFirst())[...]
func fail(_ message: String) -> Never {
    let text = Array("neon-auth-agent: \(message)\n".utf8)
    _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}
while let argument = arguments.popFirst() {
    switch argument {
    case "--shared":
        guard let directory = arguments.popFirst(), arguments.first == "--name", let name = arguments.dropFirst().first else {
            fail("--shared DIR --name NAME")
        }
        arguments = arguments.dropFirst(2)
        mode = .shared(directory: directory, name: name)
    case "--stdio": mode = .stdio
    case "--agent-idle-exit":
        guard let raw = arguments.popFirst(), let seconds = Double(raw), seconds >= 0 else { fail("--agent-idle-exit SECONDS") }
        idleExit = seconds
    case "--ca-directory":
        guard let raw = arguments.popFirst(), !raw.isEmpty else { fail("--ca-directory DIRS") }
        caDirectory = raw
    case "--version":
        print("neon-auth-agent \(Configuration.version)")
        exit(0)
    default: rest.append(argument)
    }
}
guard let mode else { fail("started by neon-auth, not by hand (--shared DIR --name NAME, or --stdio)") }
let configuration: Configuration
do {
    // No environment: every setting comes from the flags, which name the shared agent.
    guard case .serve(var parsed) = try Configuration.parse(arguments: rest, environment: [:]) else { fail("unexpected arguments") }
    parsed.trust = try TrustSettings.agent(parsed: parsed.trust, caDirectory: caDirectory)
    configuration = parsed
} catch {
    fail("\(error)")
}

_ = neon_auth_harden_process()
// SIGTERM and SIGINT stop a shared agent gracefully (sigwait below); a private one ends with
// its front-end's connection, so it ignores them (Ctrl-C reaches the whole process group).
// SIGHUP never stops an agent; SIGPIPE never kills it (a front-end that went away is EOF).
var stopping = sigset_t()
sigemptyset(&stopping)
sigaddset(&stopping, SIGTERM)
sigaddset(&stopping, SIGINT)
pthread_sigmask(SIG_BLOCK, &stopping, nil)
signal(SIGHUP, SIG_IGN)
signal(SIGPIPE, SIG_IGN)

let log = Logger(level: configuration.logLevel, program: "neon-auth-agent")
// The CA file reaches libcurl through this executable's own curl_multi_add_handle (CNeonCurlTrust);
// when it cannot, every login fails closed (-32007 ca-file-unusable) rather than trusting the system's store.
let trust = CurlTrust.install(configuration.trust)
if let unusable = trust?.unusable {
    log.error("\(unusable): every NeonCRM call fails with -32007 (ca-file-unusable)")
} else if let described = configuration.trust?.describedSource {
    log.debug("TLS: trusting \(described) only, applied to every transfer")
}
let http = URLSessionHTTPClient(connectTimeout: configuration.connectTimeout, trust: trust, log: log)
let pool = SessionPool(backend: HTTPSessionBackend(http: http, logoutTimeout: configuration.httpTimeout),
                       policy: configuration.poolPolicy)
let lifecycle = AgentLifecycle(pool: pool, log: log, shutdownTimeout: configuration.shutdownTimeout)
var isPrivate = false
if case .stdio = mode { isPrivate = true }
let service = AgentService(pool: pool, settings: ServiceSettings(configuration), showsProfiles: isPrivate) { await lifecycle.stopRequested() }
let server = AgentServer(service: service, log: log, maxMessageBytes: 1 << 20)

switch mode {
case .stdio:
    lifecycle.quietStop = true  // the front-end reports the accounting it gets from `stop`
    // One connection, on the socketpair the front-end gave as stdin and stdout.
    server.serve(0, closeWhenDone: false, output: 1)
    lifecycle.finish(reason: "its front-end closed the connection")
case .shared(let directory, let name):
    lifecycle.installSignalHandlers(stopping)
    let location = AgentLocation(directory: directory, name: name)
    let listener = lifecycle.claim(location)
    log.info("agent \(getpid()) serving \(location.socketPath)")
    DetachedThread.start { server.acceptLoop(listener) }
    lifecycle.watch(location, server: server, idleExit: idleExit)
}
