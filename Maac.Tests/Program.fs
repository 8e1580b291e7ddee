module Maac.Tests.Program

open Expecto
open Expecto.Impl

/// All tests of the suite.
let allTests =
    testList
        "Maac"
        [
            OpGradientTests.tests
            EngineTests.tests
            FusedOpTests.tests
            DiffTests.tests
            NnTests.tests
            ErrorTests.tests
            EnvTests.tests
            MuJoCoTaskTests.tests
            EnvStateTests.tests
            RlTests.tests
            PathwiseChoicesTests.tests
            ProgressTests.tests
            TensorBoardTests.tests
            RunFolderTests.tests
            TrainingStateTests.tests
            SweepTests.tests
            FacadeTests.tests
            OnnxTests.tests
            AnalysisTests.tests
            GpuBackendTests.tests
        ]

[<EntryPoint>]
let main argv =
    let mutable closing = "0 passed, 0 failed, 0 skipped"
    let mutable skipped = None

    let printer =
        let d = TestPrinters.defaultPrinter

        { d with
            summary =
                fun cfg s ->
                    async {
                        do! d.summary cfg s

                        let reasons =
                            s.ignored
                            |> List.map (fun (_, r) ->
                                match r.result with
                                | Ignored reason -> reason
                                | _ -> "")

                        skipped <- Support.skipSummary reasons

                        closing <-
                            sprintf "%d passed, %d failed, %d skipped" s.passed.Length (s.failed.Length + s.errored.Length) s.ignored.Length
                    }
        }

    let code = runTestsWithCLIArgs [ CLIArguments.Printer printer; CLIArguments.No_Spinner ] argv allTests
    // The closing line CI reads, alone on its line: "N passed, N failed, N skipped".
    // Written to the raw stream: Expecto's console writer pads lines with spaces.
    System.Console.Out.Flush()
    use raw = new System.IO.StreamWriter(System.Console.OpenStandardOutput())
    // What was skipped and how to run it, just before the closing line.
    skipped |> Option.iter (fun line -> raw.Write("\n" + line))
    raw.Write("\n" + closing + "\n")
    code
