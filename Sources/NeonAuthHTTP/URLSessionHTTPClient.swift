// neon-auth-agent's HTTP client: URLSession (FoundationNetworking, libcurl underneath). The
// only code in the package that imports Foundation; only the agent links it, so the neon-auth
// front-end never loads Foundation, libcurl, its TLS stack or ICU.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import NeonAuth

/// `HTTPClient` over `URLSession`, configured for credentials: TLS verification as the system
/// does it (never disabled), no cookies, no cache, no redirects followed (a redirect could carry
/// credentials elsewhere), each attempt abandoned after `connectTimeout` without progress, and a
/// hard total deadline even if the transfer stalls.
public final class URLSessionHTTPClient: HTTPClient {
    private let session: URLSession

    /// - Parameter connectTimeout: seconds one attempt may go without progress (connecting included).
    public init(connectTimeout: Double) {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        configuration.urlCache = nil
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.timeoutIntervalForRequest = connectTimeout
        configuration.httpMaximumConnectionsPerHost = 64  // one NeonCRM host serves every org
        session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }

    /// POSTs `form`. See ``HTTPClient/postForm(url:form:timeout:)``.
    /// - Throws: `HTTPFailure`: `.timedOut`, `.unreachable`, or `.cancelled` when the task is
    ///   cancelled.
    public func postForm(url: String, form: [(String, String)], timeout: Double) async throws(HTTPFailure) -> HTTPResponse {
        guard let target = URL(string: url) else { throw .unreachable }
        var request = URLRequest(url: target, cachePolicy: .reloadIgnoringLocalCacheData,
                                 timeoutInterval: min(session.configuration.timeoutIntervalForRequest, timeout))
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded; charset=utf-8", forHTTPHeaderField: "Content-Type")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        request.setValue("neon-auth", forHTTPHeaderField: "User-Agent")
        request.httpBody = Self.wipedOnRelease(form)
        let exchange = Exchange()
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                    exchange.start(continuation, session: session, request: request, deadline: timeout)
                }
            } onCancel: {
                exchange.finish(.failure(.cancelled))
            }
        } catch let failure as HTTPFailure {
            throw failure
        } catch {
            throw .unreachable
        }
    }

    /// The encoded form (it holds the API key or a session ID) in memory of ours that is zeroed
    /// when Foundation lets go of it (the request and its task, at the end of the exchange),
    /// instead of a `String` and a `Data` freed as they are. Foundation still copies the body
    /// once (into `DispatchData`) and libcurl once more (its upload buffer); those are freed
    /// unzeroed, out of our reach.
    static func wipedOnRelease(_ form: [(String, String)]) -> Data {
        var encoded = FormEncoding.encodedBytes(form)
        defer { encoded.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } } }
        guard !encoded.isEmpty else { return Data() }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: encoded.count, alignment: 1)
        encoded.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return Data(bytesNoCopy: copy, count: encoded.count, deallocator: .custom { pointer, count in
            explicit_bzero(pointer, count)  // glibc: a zeroing the compiler may not drop
            pointer.deallocate()
        })
    }

    /// One POST: resumes its continuation exactly once, whichever comes first of the response,
    /// an error, the hard deadline or cancellation, and then stops the transfer.
    private final class Exchange: Sendable {
        private struct State: @unchecked Sendable {
            var continuation: CheckedContinuation<HTTPResponse, any Error>?
            var task: URLSessionDataTask?
            var finished: Result<HTTPResponse, HTTPFailure>?
        }
        private let state = Mutex(State())

        func start(_ continuation: CheckedContinuation<HTTPResponse, any Error>, session: URLSession, request: URLRequest,
                   deadline: Double) {
            let task = session.dataTask(with: request) { [self] data, response, error in
                if let error {
                    let code = (error as? URLError)?.code
                    finish(.failure(code == .timedOut ? .timedOut : code == .cancelled ? .cancelled : .unreachable))
                    return
                }
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                finish(.success(HTTPResponse(status: status, body: data.map { [UInt8]($0) } ?? [])))
            }
            let early = state.withLock { s -> Result<HTTPResponse, HTTPFailure>? in
                if let finished = s.finished { return finished }  // cancelled before the start
                s.continuation = continuation
                s.task = task
                return nil
            }
            if let early {
                continuation.resume(with: early.mapError { $0 as any Error })
                return
            }
            task.resume()
            // The hard deadline: URLSession's own timeouts reset on progress.
            DispatchQueue.global().asyncAfter(deadline: .now() + deadline) { [weak self] in
                self?.finish(.failure(.timedOut))
            }
        }

        func finish(_ result: Result<HTTPResponse, HTTPFailure>) {
            let taken = state.withLock { s -> (CheckedContinuation<HTTPResponse, any Error>?, URLSessionDataTask?) in
                guard s.finished == nil else { return (nil, nil) }
                s.finished = result
                defer {
                    s.continuation = nil
                    s.task = nil
                }
                return (s.continuation, s.task)
            }
            taken.0?.resume(with: result.mapError { $0 as any Error })
            if case .failure = result { taken.1?.cancel() }
        }
    }

    private final class NoRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            completionHandler(nil)
        }
    }
}
