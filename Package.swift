// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "neon-auth",
    products: [
        .executable(name: "neon-auth", targets: ["neon-auth"]),
        // libNeonAuthHTTP.so, loaded by neon-auth with dlopen() on the first API v1 call.
        .library(name: "NeonAuthHTTP", type: .dynamic, targets: ["NeonAuthHTTP"]),
    ],
    targets: [
        // The JSON-RPC 2.0 transport: JSON reader/writer, framing, dispatch.
        .target(name: "JSONRPC", dependencies: ["CNeonSystem"]),
        // NeonCRM knowledge: signing, API v1 login/logout, the session pool, the methods.
        .target(name: "NeonAuth", dependencies: ["JSONRPC", "CNeonHTTP"]),
        // The system calls Swift cannot make directly (prctl and ioctl are variadic).
        .target(name: "CNeonSystem"),
        // The C ABI between neon-auth and its HTTP plugin (one header, shared by both sides).
        .target(name: "CNeonHTTP"),
        // The HTTP plugin: URLSession (Foundation, FoundationNetworking, libcurl) kept out of
        // the executable so that only API v1 calls pay for loading it.
        .target(name: "NeonAuthHTTP", dependencies: ["CNeonHTTP"]),
        // Thin executable wiring both to stdin/stdout.
        .executableTarget(name: "neon-auth", dependencies: ["JSONRPC", "NeonAuth", "CNeonSystem"]),
        .testTarget(name: "JSONRPCTests", dependencies: ["JSONRPC"]),
        .testTarget(name: "NeonAuthTests", dependencies: ["NeonAuth", "JSONRPC"]),
        .testTarget(name: "EndToEndTests", dependencies: ["JSONRPC"]),
    ]
)
