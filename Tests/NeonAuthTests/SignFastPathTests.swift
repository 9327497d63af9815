import Foundation
import Testing
import JSONRPC
@testable import NeonAuth

/// The `sign` fast path must answer exactly what the general path answers, or decline.
@Suite("sign fast path agrees with the general path")
struct SignFastPathTests {
    let service = makeTestService(v1: "https://v1.example/api", v2: "https://v2.example/v2", apiVersion: "2.11")

    var dispatcher: Dispatcher { Dispatcher(handlers: service.handlers, fastPaths: service.fastPaths) }

    /// (fast answer or nil, general answer or nil) for one message.
    func answers(_ line: String) -> (fast: String?, general: String?) {
        let dispatcher = self.dispatcher
        return Array(line.utf8).withUnsafeBufferPointer { bytes in
            var out = OutputBuffer()
            let fast = dispatcher.answerFast(bytes, into: &out) ? String(decoding: out.array, as: UTF8.self) : nil
            var general: String? = nil
            if case .single(let call) = MessageReader.read(bytes), case .done(let response?) = dispatcher.answerImmediately(call) {
                general = JSONWriter.string(response)
            }
            return (fast, general)
        }
    }

    @Test("the common request takes the fast path and matches byte for byte")
    func common() {
        let line = #"{"jsonrpc":"2.0","id":123,"method":"sign","params":{"orgId":"acme-org","apiKey":"0123456789abcdef0123456789abcdef"}}"#
        let (fast, general) = answers(line)
        #expect(fast != nil)
        #expect(fast == general)
    }

    @Test("generated requests: whenever the fast path answers, it equals the general path")
    func generated() {
        var rng = SystemRandomNumberGenerator()
        let keyChars = Array("abcXYZ0189:+/=%&@ -_.~!*'()\u{7F}\t".unicodeScalars)
        let ids = ["0", "-1", "18446744073709551617", "1.5e+3", "\"a\"", "\"é\"", "\"\"", "null", "\"a\\\"b\"", "true", "[1]"]
        let versions: [String?] = [nil, "\"2.1\"", "\"2.11\"", "\"3.0\"", "\"2.\"", "\"2.1x\"", "2", "null", "\"2.0\"", "\"2.011\"",
                                   "\"2.00\"", "\"2.123456\"", "\"2.1234567\""]
        var fastCount = 0
        for _ in 0..<3000 {
            func randomText(_ chars: [Unicode.Scalar], max: Int) -> String {
                String(String.UnicodeScalarView((0..<Int.random(in: 0...max, using: &rng)).map { _ in chars.randomElement(using: &rng)! }))
            }
            let org = randomText(Array("acme-ORG_9: é".unicodeScalars), max: 8)
            let key = randomText(keyChars, max: 12)
            var members = [#""orgId":\#(JSONWriter.string(.string(org)))"#, #""apiKey":\#(JSONWriter.string(.string(key)))"#]
            if let version = versions.randomElement(using: &rng)! { members.append(#""apiVersion":\#(version)"#) }
            if Int.random(in: 0..<10, using: &rng) == 0 { members.append(#""profile":"p""#) }
            if Int.random(in: 0..<10, using: &rng) == 0 { members.removeFirst() }
            members.shuffle(using: &rng)
            var envelope = [#""jsonrpc":"2.0""#, #""id":\#(ids.randomElement(using: &rng)!)"#, #""method":"sign""#,
                            #""params":{\#(members.joined(separator: Bool.random(using: &rng) ? "," : " , "))}"#]
            if Int.random(in: 0..<20, using: &rng) == 0 { envelope.append(#""extra":1"#) }
            envelope.shuffle(using: &rng)
            let line = "{" + envelope.joined(separator: Bool.random(using: &rng) ? "," : ",\t") + "}"
            let (fast, general) = answers(line)
            if let fast {
                fastCount += 1
                #expect(fast == general, "\(line)")
            }
        }
        #expect(fastCount > 50, "the fast path should answer a share of the generated requests")
    }

    @Test("mutated bytes: the scanner never accepts what the strict reader rejects")
    func mutations() {
        var rng = SystemRandomNumberGenerator()
        let base = Array(#"{"jsonrpc":"2.0","id":"x1","method":"sign","params":{"orgId":"acme","apiKey":"k:é+/="}}"#.utf8)
        let alphabet: [UInt8] = Array(#"{}[]:,"\ 0123456789.eE+-tfnul"#.utf8) + [0x00, 0x1F, 0x7F, 0x80, 0xC3, 0xA9, 0xFF, 0xED, 0xA0]
        for _ in 0..<20_000 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[i] = alphabet.randomElement(using: &rng)!
                case 1: bytes.remove(at: i)
                default: bytes.insert(alphabet.randomElement(using: &rng)!, at: i)
                }
                if bytes.isEmpty { bytes = base }
            }
            bytes.withUnsafeBufferPointer { buffer in
                if FlatRequest.scan(buffer) != nil {
                    #expect((try? JSONReader.parse(buffer)) != nil, "scanner accepted invalid JSON: \(String(decoding: bytes, as: UTF8.self))")
                }
            }
            let line = String(decoding: bytes, as: UTF8.self)
            guard line.utf8.elementsEqual(bytes) else { continue }
            let (fast, general) = answers(line)
            if let fast { #expect(fast == general, "\(line)") }
        }
    }

    @Test("base64 matches Foundation's for every length and byte")
    func base64() {
        for length in 0..<64 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255) }
            #expect(BasicAuth.base64(bytes) == Data(bytes).base64EncodedString())
        }
    }
}
