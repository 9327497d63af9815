// A work-around for a leak in swift-corelibs-foundation up to Swift 6.3.x: for every request,
// `_EasyHandle.set(url:)` calls `CFURLSessionCurlHostIsEqual`, which parses the URL into a
// libcurl `CURLU` handle and then frees that handle with `curl_free()` instead of
// `curl_url_cleanup()`, losing the parsed parts (scheme, host, port, path: 4 allocations,
// about 77 bytes, 160 bytes of heap, per request with libcurl 7.88). Fixed upstream by
// swiftlang/swift-corelibs-foundation#5498 (commit c8c3420, on main only: not in 6.3.1-6.3.3).
//
// How: neon-auth-agent exports these three (Package.swift: --export-dynamic-symbol), and the
// executable comes first in the global lookup scope, so they take precedence over libcurl's
// for every library, libFoundationNetworking.so included (libcurl's own calls to them also land here: libcurl 7.88 frees each of its CURLU
// handles with curl_url_cleanup, so the set below stays exact). `curl_url()` handles are
// remembered; `curl_free()` of one of them becomes `curl_url_cleanup()`; any other pointer
// goes to libcurl's curl_free untouched. With a Foundation that calls `curl_url_cleanup()`
// itself, nothing changes but a set lookup. Remove once the toolchain has the fix.
#if canImport(Glibc)
import Glibc
import Synchronization

private struct Libcurl: @unchecked Sendable {
    let url: @convention(c) () -> OpaquePointer?
    let urlCleanup: @convention(c) (OpaquePointer?) -> Void
    let free: @convention(c) (UnsafeMutableRawPointer?) -> Void
}

/// libcurl's own functions (looked up in libcurl itself, never these definitions).
private let libcurl: Libcurl = {
    guard let library = dlopen("libcurl.so.4", RTLD_NOW | RTLD_NOLOAD) ?? dlopen("libcurl.so.4", RTLD_NOW),
          let url = dlsym(library, "curl_url"), let urlCleanup = dlsym(library, "curl_url_cleanup"),
          let free = dlsym(library, "curl_free") else {
        fatalError("neon-auth-agent: libcurl.so.4 has no curl_url, curl_url_cleanup or curl_free")
    }
    return Libcurl(url: unsafeBitCast(url, to: (@convention(c) () -> OpaquePointer?).self),
                   urlCleanup: unsafeBitCast(urlCleanup, to: (@convention(c) (OpaquePointer?) -> Void).self),
                   free: unsafeBitCast(free, to: (@convention(c) (UnsafeMutableRawPointer?) -> Void).self))
}()

/// The `CURLU` handles handed out and not yet cleaned up, by address.
private let liveURLHandles = Mutex<Set<Int>>([])

@_cdecl("curl_url")
public func neonCurlURL() -> OpaquePointer? {
    let handle = libcurl.url()
    if let handle { liveURLHandles.withLock { _ = $0.insert(Int(bitPattern: UnsafeRawPointer(handle))) } }
    return handle
}

@_cdecl("curl_url_cleanup")
public func neonCurlURLCleanup(_ handle: OpaquePointer?) {
    if let handle { liveURLHandles.withLock { _ = $0.remove(Int(bitPattern: UnsafeRawPointer(handle))) } }
    libcurl.urlCleanup(handle)
}

@_cdecl("curl_free")
public func neonCurlFree(_ pointer: UnsafeMutableRawPointer?) {
    if let pointer, liveURLHandles.withLock({ $0.remove(Int(bitPattern: pointer)) != nil }) {
        libcurl.urlCleanup(OpaquePointer(pointer))  // a CURLU freed as if it were a string
    } else {
        libcurl.free(pointer)
    }
}
#endif
