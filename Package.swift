// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "neon-auth",
    products: [
        .executable(name: "neon-auth", targets: ["neon-auth"]),
    ],
    targets: [
        // The JSON-RPC 2.0 transport: JSON reader/writer, framing, dispatch.
        .target(name: "JSONRPC"),
        // NeonCRM knowledge: signing, API v1 login/logout, the session pool, the methods.
        .target(name: "NeonAuth", dependencies: ["JSONRPC"]),
        // The one system call Swift cannot make directly (prctl is variadic).
        .target(name: "CNeonSystem"),
        // Thin executable wiring both to stdin/stdout.
        .executableTarget(name: "neon-auth", dependencies: ["JSONRPC", "NeonAuth", "CNeonSystem"]),
        .testTarget(name: "JSONRPCTests", dependencies: ["JSONRPC"]),
        .testTarget(name: "NeonAuthTests", dependencies: ["NeonAuth", "JSONRPC"]),
        .testTarget(name: "EndToEndTests", dependencies: ["JSONRPC"]),
    ]
)
