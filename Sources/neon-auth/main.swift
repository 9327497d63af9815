// neon-auth: wires the JSON-RPC transport and the NeonCRM service to stdin/stdout.
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import JSONRPC
import NeonAuth
import CNeonSystem

// Descriptors 0-2 must be open before anything else is opened: if a parent closed stderr, the
// protocol's duplicate of stdout (or any file) would land on fd 2 and logs would corrupt the
// stream. Closed ones are pointed at /dev/null.
StandardDescriptors.openClosed()
// Variables are read where they are needed (no dictionary of the whole environment at start-up).
let environment = EnvironmentVariables.process
// One-shot commands for shells (`neon-auth header`, `session`, `agent status|stop`).
if let command = CommandLine.arguments.dropFirst().first, OneShot.commands.contains(command) {
    signal(SIGPIPE, SIG_IGN)
    _ = neon_auth_harden_process()
    exit(OneShot.run(command, Array(CommandLine.arguments.dropFirst(2)), environment: environment))
}
let configuration: Configuration
do {
    switch try Configuration.parse(arguments: Array(CommandLine.arguments.dropFirst()), environment: environment) {
    case .serve(let c): configuration = c
    case .help:
        print(Configuration.helpText, terminator: "")
        exit(0)
    case .version:
        print("neon-auth \(Configuration.version)")
        exit(0)
    }
} catch {
    // write(2), not FileHandle: a full or broken stderr must not crash the error path.
    let message = Array("neon-auth: \(error)\n".utf8)
    _ = message.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

// No core dumps and no ptrace by other processes of this user: keys live in this memory.
_ = neon_auth_harden_process()
// SIGTERM, SIGINT and SIGHUP (unless the parent ignored it, as nohup does) are blocked in every thread (threads inherit the mask of the thread that
// creates them, and none exists yet) and taken by one thread with sigwait(); see
// Lifecycle.installSignalHandlers. A parent's ignored or blocked disposition does not matter.
let gracefulSignals = Lifecycle.gracefulSignals()
var graceful = sigset_t()
sigemptyset(&graceful)
for signo in gracefulSignals { sigaddset(&graceful, signo) }
pthread_sigmask(SIG_BLOCK, &graceful, nil)
// Should some library thread unblock them, a signal is then lost rather than killing the
// process without logging out (Linux still queues ignored signals that are blocked, so
// sigwait() sees them).
for signo in gracefulSignals { signal(signo, SIG_IGN) }
// A closed stdout must not kill the process: writes then fail with EPIPE instead.
signal(SIGPIPE, SIG_IGN)
// The protocol gets its own descriptor; fd 1 now points at stderr so a stray print from any
// library can never corrupt the stream.
let protocolFD = dup(1)
_ = fcntl(protocolFD, F_SETFD, FD_CLOEXEC)
_ = dup2(2, 1)

let log = Logger(level: configuration.logLevel)
if let warning = TrustSettings.ignoredVariablesWarning(environment: environment, trust: configuration.trust) { log.warn(warning) }
// The session pool and every NeonCRM call live in neon-auth-agent, reached on first need: this
// process signs locally and never loads Foundation or an HTTP stack.
let agent = AgentClient(settings: configuration.agentSettings, mode: configuration.agentMode, environment: environment, log: log)
let evictions = EvictionRelay()
let credentials = CredentialStore(flagPath: configuration.credentialsPath, environment: environment) { retired in
    // A profile's key changed or vanished from the credentials file: its sessions go.
    evictions.relay(retired)
    log.info("credentials file changed: logging out sessions of \(retired.count) retired key(s) (orgs: \(Set(retired.map(\.orgId)).sorted().joined(separator: ", ")))")
}
let counters = ServiceCounters()
let service = NeonAuthService(settings: ServiceSettings(configuration), agent: agent, credentials: credentials,
                              counters: counters, log: log)
evictions.service = service
let lifecycle = Lifecycle(agent: agent, log: log, shutdownTimeout: configuration.shutdownTimeout,
                          inFlightTimeout: configuration.httpTimeout + 1)
// The signal thread starts on the first need: before any other thread, when the reader first
// waits for input, or when shutdown has to wait (see Lifecycle.startSignalThread). Until then
// the graceful signals stay blocked and pending.
lifecycle.installSignalHandlers(gracefulSignals)
DetachedThread.onFirstStart { lifecycle.startSignalThread() }
let output = OutputSink(fd: protocolFD) { error in
    DetachedThread.start { lifecycle.shutdown(OutputSink.isReaderGone(error) ? .outputClosed : .outputFailed(error)) }
}
// stderr is the protocol's own pipe or socket (`2>&1`): log lines join the output between
// whole answers (written directly, a line could land inside a half-written answer).
if output.sharesFileWithStderr {
    log.route { output.sendOutOfBand($0) }
}
// `exit` (LSP) is answered like any request, then ends the process as end of input does.
let handlers = service.handlers.merging(
    LSPCompatibility.handlers(name: "neon-auth", version: Configuration.version) { lifecycle.server?.requestStop() }
) { ours, _ in ours }
let dispatcher = Dispatcher(handlers: handlers, fastPaths: service.fastPaths) { method, error in
    counters.record(method: method, error: error)
}
let server = StdioServer(inputFD: 0, output: output, dispatcher: dispatcher,
                         maxMessageBytes: configuration.maxMessageBytes, afterRead: { agent.flush() },
                         onFirstWait: { lifecycle.startSignalThread() })
lifecycle.server = server
lifecycle.output = output
if isatty(0) == 1 {
    // A person at a terminal: say what to type and how to end (stderr only; stdout stays protocol).
    let hint = #"neon-auth: reading JSON-RPC 2.0 requests, one per line, e.g. {"jsonrpc":"2.0","id":1,"method":"sign"}; Ctrl-D ends, --help explains"# + "\n"
    _ = hint.utf8CString.withUnsafeBytes { write(2, $0.baseAddress, $0.count - 1) }
}
log.info("ready: v1 \(configuration.v1BaseURL), v2 \(configuration.v2BaseURL), NEON-API-VERSION \(configuration.apiVersion), "
         + "trusting \(configuration.trust.map(\.describedSource) ?? "the system's CA store")")

server.run()
if let error = output.failure {
    lifecycle.shutdown(OutputSink.isReaderGone(error) ? .outputClosed : .outputFailed(error))
}
lifecycle.shutdown(server.stopWasRequested ? .exitRequested : .endOfInput)

/// Hands retired keys from the credentials store (created first) to the service (created later).
final class EvictionRelay: @unchecked Sendable {
    var service: NeonAuthService?
    func relay(_ retired: [Credential]) {
        guard let service else { return }
        Task.detached { await service.evict(retired) }
    }
}
