import Foundation
import Testing
import JSONRPC
@testable import NeonAuth

@Suite("OpenRPC document")
struct OpenRPCDocumentTests {
    @Test("the embedded document is exactly schemas/openrpc.json (run scripts/gen-openrpc after editing it)")
    func noDrift() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("schemas/openrpc.json")
        let file = try String(contentsOf: url, encoding: .utf8)
        var trimmed = file
        while trimmed.hasSuffix("\n") { trimmed.removeLast() }
        #expect(OpenRPCDocument.text == trimmed)
        #expect(try JSONReader.parse(file) == OpenRPCDocument.value)
    }

    @Test("every method the service answers is documented, and every documented method is served")
    func methodsMatch() throws {
        let service = makeTestService(v1: "https://v1", v2: "https://v2", apiVersion: "2.11")
        let served = Set(service.handlers.keys).union(LSPCompatibility.handlers(name: "x", version: "0") {}.keys)
        guard case .array(let methods)? = OpenRPCDocument.value["methods"] else {
            Issue.record("no methods array")
            return
        }
        let documented = Set(methods.compactMap { $0["name"]?.stringValue })
        #expect(documented == served)
    }
}
