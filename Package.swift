// swift-tools-version:6.0
import PackageDescription

/// neon-auth's start-up: code that needs a generic type's metadata (a Dictionary's storage, an
/// array of closures...) calls its accessor directly instead of asking the runtime to demangle a
/// type name; each of those look-ups also searched every protocol conformance in the program
/// (~4,000) for the type's requirements, a third of the start-up instructions. Every function
/// and global gets a section of its own, so that neon-auth's link can place those start-up
/// touches next to each other (scripts/link/neon-auth.startup-order).
let directMetadataAccess: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-disable-concrete-type-metadata-mangled-name-accessors",
                                                          "-Xfrontend", "-function-sections"])]

let package = Package(
    name: "neon-auth",
    products: [
        // The stdio JSON-RPC service and one-shot commands: signs locally, links no Foundation.
        .executable(name: "neon-auth", targets: ["neon-auth"]),
        // The session pool and all HTTP, shared per user over a Unix socket (or private).
        .executable(name: "neon-auth-agent", targets: ["neon-auth-agent"]),
    ],
    targets: [
        // The JSON-RPC 2.0 transport: JSON reader/writer, framing, dispatch.
        .target(name: "JSONRPC", dependencies: ["CNeonSystem"], swiftSettings: directMetadataAccess),
        // NeonCRM knowledge: signing, credentials, API v1 login/logout, the session pool, the
        // methods, the agent's protocol (client and service). No Foundation.
        .target(name: "NeonAuth", dependencies: ["JSONRPC", "CNeonSystem"], swiftSettings: directMetadataAccess),
        // The system calls Swift cannot make directly (prctl and ioctl are variadic; SO_PEERCRED,
        // sockaddr_un, and fork/exec between which only async-signal-safe calls may run).
        .target(name: "CNeonSystem"),
        // The HTTP client over URLSession (Foundation, FoundationNetworking, libcurl): the agent's only.
        .target(name: "NeonAuthHTTP", dependencies: ["NeonAuth", "JSONRPC"]),
        // Linked into neon-auth-agent only (never a library or the tests): its
        // curl_multi_add_handle() takes precedence over libcurl's and puts the configured CA
        // file and certificate verification on every libcurl transfer URLSession starts
        // (URLSession on Linux has no setting for either).
        .target(name: "CNeonCurlTrust"),
        .executableTarget(name: "neon-auth", dependencies: ["JSONRPC", "NeonAuth", "CNeonSystem"], swiftSettings: directMetadataAccess,
                          // Start-up time: the Swift runtime (stdlib, Concurrency, Dispatch,
                          // Synchronization...), libstdc++ and libgcc are linked in, so the dynamic
                          // loader maps only libc and libm; not a position-independent executable,
                          // so it has no relative relocations to apply (25k otherwise); no symbol
                          // exported (-static-stdlib exports the program's own, which nothing looks
                          // up, and dladdr() at start-up then scans them); the output written with
                          // write(2), not through a mapping, so that the page cache holds it in
                          // large folios as it does a copied or installed file (a mapped write
                          // leaves 4 KiB pages: start-up +20%). The sections that start-up touches are
                          // placed together (scripts/link/gen-startup-order writes the list of them):
                          // 162 -> 134 page faults, start-up -8%. glibc stays shared: a static glibc
                          // crashes in getpwuid_r() for users that only NSS modules know (see
                          // README, "Build by hand / Install").
                          linkerSettings: [.unsafeFlags(["-static-stdlib",
                                                         "-L", Context.packageDirectory + "/scripts/link/static-libstdc++",
                                                         "-Xclang-linker", "-static-libgcc",
                                                         "-Xclang-linker", "-no-pie",
                                                         "-Xlinker", "-Ttext-segment=0x401000",
                                                         "-Xlinker", "--no-export-dynamic",
                                                         "-Xlinker", "--no-mmap-output-file",
                                                         "-Xlinker", "--section-ordering-file=" + Context.packageDirectory + "/scripts/link/neon-auth.startup-order"],
                                                        .when(platforms: [.linux]))]),
        .executableTarget(name: "neon-auth-agent",
                          dependencies: ["JSONRPC", "NeonAuth", "NeonAuthHTTP", "CNeonSystem", "CNeonCurlTrust"],
                          // An executable exports no symbol by default (gold does not export one for
                          // libFoundationNetworking's versioned reference either). These must reach the
                          // dynamic symbol table to stand in for libcurl's:
                          // - curl_multi_add_handle (CNeonCurlTrust): the CA file and verification on
                          //   every transfer (the agent checks it at start-up and fails closed);
                          // - curl_url, curl_url_cleanup, curl_free (NeonAuthHTTP/CurlURLHandleFix.swift):
                          //   a work-around for a Foundation leak, Swift <= 6.3.x.
                          linkerSettings: [.unsafeFlags(["-Xlinker", "--export-dynamic-symbol=curl_multi_add_handle",
                                                         "-Xlinker", "--export-dynamic-symbol=curl_url",
                                                         "-Xlinker", "--export-dynamic-symbol=curl_url_cleanup",
                                                         "-Xlinker", "--export-dynamic-symbol=curl_free"], .when(platforms: [.linux]))]),
        .testTarget(name: "JSONRPCTests", dependencies: ["JSONRPC"]),
        .testTarget(name: "NeonAuthTests", dependencies: ["NeonAuth", "NeonAuthHTTP", "JSONRPC"]),
        .testTarget(name: "EndToEndTests", dependencies: ["JSONRPC"]),
    ]
)
