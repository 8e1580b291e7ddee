// Source rules that Fantomas does not check, run by scripts/check-source (and so by .ci/run):
//  * no function or member longer than 80 lines in the libraries and the CLI (F# and C#);
//  * documents state what is true now: no "session" and no "issue N" in README.md and docs/.
// Prints one line per violation (file:line, what, how long) and exits 1 when there is any.

open System
open System.IO
open System.Text.RegularExpressions

let maxFunctionLines = 80
let root = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, ".."))
let sourceFolders = [ "Maac.Core"; "Maac.Cuda"; "Maac.CSharp"; "Maac.Cli" ]

let isBuildOutput (path: string) =
    let parts = path.Split(Path.DirectorySeparatorChar)
    parts |> Array.exists (fun p -> p = "bin" || p = "obj")

let sourceFiles extension =
    sourceFolders
    |> Seq.map (fun folder -> Path.Combine(root, folder))
    |> Seq.filter Directory.Exists
    |> Seq.collect (fun folder -> Directory.EnumerateFiles(folder, "*" + extension, SearchOption.AllDirectories))
    |> Seq.filter (not << isBuildOutput)
    |> Seq.sort
    |> List.ofSeq

let relative (path: string) = Path.GetRelativePath(root, path)
let indentOf (line: string) = line.Length - line.TrimStart().Length

let isBlankOrComment (line: string) =
    let t = line.TrimStart()
    t = "" || t.StartsWith "//"

/// A binding is a `let`, `member`, `override` or `and` line; its body is every following line indented
/// deeper (blank and comment lines inside it included, trailing ones not). Nested bindings count towards the
/// binding that holds them, so the check measures each top-most function as a reader meets it.
let fsharpBinding =
    Regex(@"^\s*(let|let rec|let inline|and|member|override|static member|abstract member|default)\b(?!!)")

/// `and` also joins recursive type definitions, whose bodies hold members that are measured on their own.
let typeDefinition = Regex(@"^\s*and\s+(\[<|[A-Z])")

let fsharpFunctions (path: string) =
    let lines = File.ReadAllLines path

    let rec scan i found =
        if i >= lines.Length then
            List.rev found
        elif fsharpBinding.IsMatch lines[i] && not (typeDefinition.IsMatch lines[i]) then
            let indent = indentOf lines[i]
            let mutable last = i
            let mutable j = i + 1

            while j < lines.Length && (isBlankOrComment lines[j] || indentOf lines[j] > indent) do
                if not (isBlankOrComment lines[j]) then
                    last <- j

                j <- j + 1

            let name = lines[i].Trim()
            scan (last + 1) ((i + 1, last - i + 1, name) :: found)
        else
            scan (i + 1) found

    scan 0 []

/// A C# method, constructor, accessor or local function: a line that opens a parameter list at member
/// indentation and is followed by a block; its length runs to the brace that closes that block.
let csharpMember =
    Regex(@"^\s*(public|private|protected|internal|static|override|async|virtual|sealed|extern|unsafe|partial|[\w<>\[\],?]+\s+\w+\s*\()")

let csharpFunctions (path: string) =
    let lines = File.ReadAllLines path

    let braceDelta (line: string) =
        let code = Regex.Replace(line, "\"([^\"\\\\]|\\\\.)*\"|'([^'\\\\]|\\\\.)*'|//.*$", "")
        (code |> Seq.filter ((=) '{') |> Seq.length) - (code |> Seq.filter ((=) '}') |> Seq.length)

    let isMethodStart (line: string) =
        let t = line.Trim()

        csharpMember.IsMatch line
        && t.Contains "("
        && not (t.EndsWith ";")
        && not (
            Regex.IsMatch(
                t,
                @"\b(class|record|struct|interface|enum|namespace|new|return|if|for|foreach|while|switch|using|catch|lock)\b\s*[\w(]"
            )
        )

    let rec scan i found =
        if i >= lines.Length then
            List.rev found
        elif isMethodStart lines[i] then
            // find the block's opening brace (the signature may span lines), then its closing one
            let mutable j = i
            let mutable depth = 0
            let mutable opened = false
            let mutable stop = false

            while j < lines.Length && not stop do
                let d = braceDelta lines[j]

                if not opened && lines[j].Contains "{" then
                    opened <- true

                if not opened && (lines[j].TrimEnd().EndsWith ";" || lines[j].Contains "=>") && j > i + 5 then
                    stop <- true

                depth <- depth + d
                if opened && depth <= 0 then stop <- true else j <- j + 1

            if opened then
                scan (j + 1) ((i + 1, j - i + 1, lines[i].Trim()) :: found)
            else
                scan (i + 1) found
        else
            scan (i + 1) found

    scan 0 []

let longFunctions =
    [
        for path in sourceFiles ".fs" do
            for line, length, name in fsharpFunctions path do
                if length > maxFunctionLines then
                    yield sprintf "%s:%d: %d lines (over %d): %s" (relative path) line length maxFunctionLines name
        for path in sourceFiles ".cs" do
            for line, length, name in csharpFunctions path do
                if length > maxFunctionLines then
                    yield sprintf "%s:%d: %d lines (over %d): %s" (relative path) line length maxFunctionLines name
    ]

let diaryWords = Regex(@"\bsessions?\b|\bissues?\s*#?\d+", RegexOptions.IgnoreCase)

let documents =
    let docs = Path.Combine(root, "docs")

    [
        yield Path.Combine(root, "README.md")
        if Directory.Exists docs then
            yield! Directory.EnumerateFiles(docs, "*.md", SearchOption.AllDirectories) |> Seq.sort
    ]

let diaryLines =
    [
        for path in documents do
            for i, line in Array.indexed (File.ReadAllLines path) do
                let m = diaryWords.Match line

                if m.Success then
                    yield sprintf "%s:%d: \"%s\" (documents state what is true now; history lives in git)" (relative path) (i + 1) m.Value
    ]

let problems = longFunctions @ diaryLines
problems |> List.iter (printfn "%s")

if problems.IsEmpty then
    printfn "check-source: no function over %d lines; no diary words in README.md or docs/" maxFunctionLines
    exit 0
else
    printfn "check-source: %d problem(s)" problems.Length
    exit 1
