import Foundation

enum FileHandleOutput {
    static func standardError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// Reads a whole file, or standard input for "-".
    static func read(_ path: String) throws -> [UInt8] {
        if path == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationErrorMessage("cannot read '\(path)'")
        }
        return Array(data)
    }
}

struct ValidationErrorMessage: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}
