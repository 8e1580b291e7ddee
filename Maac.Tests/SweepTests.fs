/// Sweeps through the command line: the local launcher, and a real single-node Slurm cluster (.ci/slurm-up) whose
/// results must equal the local launcher's bit for bit, with one task preempted (SIGTERM) and requeued.
module Maac.Tests.SweepTests

open System
open System.Diagnostics
open System.IO
open Expecto
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Tests.Support

/// The command line built beside the tests (Maac.Tests references Maac.Cli, so it is built first, same configuration).
let private maacCommand () =
    let configuration =
        Path.GetFileName(Path.GetDirectoryName(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)))

    let dll = Path.Combine(repoRoot (), "Maac.Cli", "bin", configuration, "net10.0", "maac.dll")

    if not (File.Exists dll) then
        failtestf "the command line is not built: %s is missing" dll

    dll

/// Runs a program to its end; its exit code and output (stdout and stderr together).
let private runProgram (program: string) (args: string list) =
    let psi =
        ProcessStartInfo(program, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)

    for a in args do
        psi.ArgumentList.Add a

    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out + err.Result

let private maac (args: string list) = runProgram "dotnet" (maacCommand () :: args)

let private waitFor (what: string) (seconds: int) (condition: unit -> bool) =
    let sw = Stopwatch.StartNew()

    while not (condition ()) do
        if sw.Elapsed.TotalSeconds > float seconds then
            failtestf "waited %d s for %s" seconds what

        Threading.Thread.Sleep 500

/// Settings small enough for a sweep of a few hundred steps in seconds.
let private tinySettings =
    """{ "Hidden": [32, 32], "BatchSize": 64, "UpdatesPerStep": 1, "RandomSteps": 100, "EvalEvery": 100, "EvalEpisodes": 2,
  "ModelMembers": 3, "ModelElites": 2, "ModelHidden": [32, 32], "ModelMaxEpochs": 5, "ModelTrainEvery": 100,
  "RolloutStarts": 64, "RolloutLength": 1, "RealCapacity": 10000, "ImaginedCapacity": 10000 }"""

/// Runs `body root config` in a new temporary folder `root` that holds the tiny settings file `config`; the folder is
/// deleted afterwards.
let private withTinySettings (prefix: string) (body: string -> string -> unit) =
    let root = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString "N")

    try
        Directory.CreateDirectory root |> ignore
        let config = Path.Combine(root, "tiny.json")
        File.WriteAllText(config, tinySettings)
        body root config
    finally
        if Directory.Exists root then
            Directory.Delete(root, true)

let private sweepArgs (config: string) (out: string) =
    [
        "experiment"
        "compare"
        "--env"
        "Pendulum"
        "--algos"
        "sac,mbpo"
        "--seeds"
        "2"
        "--steps"
        "600"
        "--config"
        config
        "--out"
        out
    ]

/// Two run folders hold the same run: every tensor's bits, the metadata (wall time, the checksum of a header that
/// holds it, and the metrics text aside) and metrics.csv without its wall-time column.
let private expectSameRun (a: string) (b: string) =
    let arraysA, metaA = Checkpoint.load (RunFolder.checkpointFile a)
    let arraysB, metaB = Checkpoint.load (RunFolder.checkpointFile b)
    Expect.sequenceEqual arraysA.Keys arraysB.Keys (sprintf "%s: the same tensors" b)

    for KeyValue(name, x) in arraysA do
        let bitsOf (v: float32[]) = v |> Array.map BitConverter.SingleToInt32Bits
        Expect.equal (bitsOf arraysB.[name].Values) (bitsOf x.Values) (sprintf "%s: tensor %s bit for bit" b name)

    let comparable (m: Map<string, string>) = m |> Map.filter (fun k _ -> k <> "wallSeconds" && k <> "metrics" && k <> "sha256:header")
    Expect.equal (comparable metaB) (comparable metaA) (sprintf "%s: the same counters and settings" b)
    let rows dir = RunFolder.readRows dir |> Array.map (fun r -> MetricsCsv.line { r with WallSeconds = 0.0 })
    Expect.equal (rows b) (rows a) (sprintf "%s: the same metrics rows" b)

let private slurmAvailable () =
    let onPath (name: string) =
        (Environment.GetEnvironmentVariable "PATH").Split(':')
        |> Array.exists (fun d -> File.Exists(Path.Combine(d, name)))

    onPath "sbatch"
    && (try
            fst (runProgram "sinfo" [ "-h" ]) = 0
        with _ ->
            false)

let tests =
    testList
        "sweeps"
        [
            testCase "a sweep through Slurm equals the local launcher's bit for bit, and a preempted task resumes to the same result"
            <| fun () ->
                if not (slurmAvailable ()) then
                    skipOrFail "Slurm is not running here (no sbatch on PATH or sinfo fails); .ci/slurm-up starts a single-node cluster"

                let root = Path.Combine(Path.GetTempPath(), "maac-sweep-" + Guid.NewGuid().ToString "N")
                Directory.CreateDirectory root |> ignore

                try
                    let config = Path.Combine(root, "tiny.json")
                    File.WriteAllText(config, tinySettings)
                    let local, slurm = Path.Combine(root, "local"), Path.Combine(root, "slurm")

                    let code, out =
                        maac (sweepArgs config local @ [ "--launcher"; "local"; "--parallel"; "2"; "--threads"; "1" ])

                    Expect.equal code 0 (sprintf "the local sweep finished:\n%s" out)
                    Expect.isTrue (File.Exists(Path.Combine(local, "curves.png"))) "the local launcher draws the figure"

                    let code, out =
                        maac (sweepArgs config slurm @ [ "--launcher"; "slurm"; "--cpus-per-task"; "1"; "--threads"; "1" ])

                    Expect.equal code 0 (sprintf "submitted:\n%s" out)
                    let job = (File.ReadAllText(Path.Combine(slurm, "slurm-job"))).Trim()
                    Expect.stringContains out (sprintf "array job %s" job) "the job id is printed"
                    // Preempt task 0 once it has a checkpoint: SIGTERM to its batch shell, which forwards it to train.
                    let firstRun = Path.Combine(slurm, "Pendulum-sac-seed0")
                    waitFor "task 0's first checkpoint" 180 (fun () -> File.Exists(RunFolder.checkpointFile firstRun))
                    // scancel may report "Job can not be altered now" while the signal is being handled; the status file
                    // (exit 143, below) is what shows the signal arrived.
                    runProgram "scancel" [ "--batch"; "--signal=TERM"; sprintf "%s_0" job ] |> ignore
                    let status0 () = let f = Path.Combine(slurm, "status", "0.txt") in if File.Exists f then File.ReadAllText f else ""
                    waitFor "task 0 to stop on SIGTERM" 120 (fun () -> (status0 ()).StartsWith "exit")
                    Expect.stringStarts (status0 ()) "exit 143" "train stopped on SIGTERM with a checkpoint (exit 143), not at its end"
                    // The task requeued itself; start it without Slurm's requeue delay.
                    waitFor "task 0 to restart" 120 (fun () ->
                        runProgram "scontrol" [ "update"; sprintf "JobId=%s_0" job; "StartTime=now" ] |> ignore
                        (status0 ()).StartsWith "running")

                    Expect.stringContains (status0 ()) "restart 1" "the requeued task is its first restart"
                    waitFor "every task to finish" 300 (fun () -> fst (maac [ "experiment"; "status"; slurm ]) = 0)
                    let _, out = maac [ "experiment"; "status"; slurm ]
                    Expect.stringContains out "4 finished, 0 running, 0 pending, 0 stopped, 0 failed" (sprintf "status:\n%s" out)

                    for run in [ "Pendulum-sac-seed0"; "Pendulum-sac-seed1"; "Pendulum-mbpo-seed0"; "Pendulum-mbpo-seed1" ] do
                        expectSameRun (Path.Combine(local, run)) (Path.Combine(slurm, run))

                    let log =
                        Directory.GetFiles(Path.Combine(slurm, "logs"), sprintf "%s_0.out" job)
                        |> Array.exactlyOne
                        |> File.ReadAllText

                    Expect.stringContains log "SIGTERM: stopping after this step" "the task saw the signal"
                    Expect.stringContains log "resuming" "and its restart resumed the run"
                    let code, out = maac [ "experiment"; "collect"; slurm ]
                    Expect.equal code 0 (sprintf "collect:\n%s" out)

                    Expect.isTrue
                        (File.Exists(Path.Combine(slurm, "curves.png")) && File.Exists(Path.Combine(slurm, "summary.txt")))
                        "collect writes the figure and the table"

                    Expect.equal
                        (File.ReadAllLines(Path.Combine(slurm, "summary.txt"))
                         |> Array.map (fun l -> l.Substring(0, min 73 l.Length)))
                        (File.ReadAllLines(Path.Combine(local, "summary.txt"))
                         |> Array.map (fun l -> l.Substring(0, min 73 l.Length)))
                        "the same table (returns; wall times aside)"
                finally
                    Directory.Delete(root, true)

            testCase "experiment status tells pending, failed and finished runs apart from the folders alone"
            <| fun () ->
                withTinySettings "maac-status-" (fun root config ->
                    let dir = Path.Combine(root, "sweep")

                    let code, out =
                        maac
                            [
                                "experiment"
                                "compare"
                                "--env"
                                "Pendulum"
                                "--algos"
                                "sac"
                                "--seeds"
                                "1"
                                "--steps"
                                "200"
                                "--config"
                                config
                                "--out"
                                dir
                                "--parallel"
                                "1"
                                "--threads"
                                "1"
                            ]

                    Expect.equal code 0 (sprintf "a one-run sweep:\n%s" out)
                    // A plan with two more runs: one never started (pending), one whose launcher recorded a failure.
                    let plan = File.ReadAllText(Path.Combine(dir, "sweep.tsv"))

                    File.WriteAllText(
                        Path.Combine(dir, "sweep.tsv"),
                        plan
                        + "1\tPendulum\tsac\t1\t200\tPendulum-sac-seed1\n2\tPendulum\tsac\t2\t200\tPendulum-sac-seed2\n"
                    )

                    File.WriteAllText(Path.Combine(dir, "status", "2.txt"), "exit 1 2026-12-02T00:00:00\n")
                    let code, out = maac [ "experiment"; "status"; dir ]
                    Expect.equal code 3 "a failed run gives exit code 3"
                    Expect.stringContains out "1 finished, 0 running, 1 pending, 0 stopped, 1 failed" out
                    Expect.stringContains out "failed (exit code 1)" "names the exit code"

                    let code, out =
                        maac
                            [
                                "experiment"
                                "compare"
                                "--env"
                                "Pendulum"
                                "--algos"
                                "mbpo"
                                "--seeds"
                                "1"
                                "--steps"
                                "200"
                                "--out"
                                dir
                            ]

                    Expect.equal code 1 "another sweep into the same folder is refused"
                    Expect.stringContains out "already holds another sweep" out)

            testCase "a second train process on a run folder is refused; the claim goes when the first is killed"
            <| fun () ->
                withTinySettings "maac-claim-" (fun root config ->
                    let dir = Path.Combine(root, "run")

                    let args =
                        [ "train"; "--env"; "Pendulum"; "--algo"; "sac"; "--seed"; "0"; "--config"; config; "--out"; dir ]

                    let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, UseShellExecute = false)

                    for a in maacCommand () :: args @ [ "--steps"; "1000000"; "--threads"; "1" ] do
                        psi.ArgumentList.Add a

                    use first = Process.Start psi
                    // The folder is claimed before config.json is written.
                    waitFor "the first process's config.json" 60 (fun () -> File.Exists(RunFolder.configFile dir))
                    let config = File.ReadAllText(RunFolder.configFile dir)
                    let code, out = maac [ "train"; "--resume"; dir; "--steps"; "500"; "--threads"; "1" ]
                    Expect.equal code 1 (sprintf "refused while the first trains:\n%s" out)
                    Expect.stringContains out "is in use" out
                    Expect.equal (File.ReadAllText(RunFolder.configFile dir)) config "its budget was not written"
                    first.Kill()
                    first.WaitForExit()
                    // SIGKILL: the system dropped the claim; the run goes on from its last checkpoint (or from 0).
                    let reached =
                        if File.Exists(RunFolder.checkpointFile dir) then
                            use t = RunFolder.loadTrainer dir
                            t.Step
                        else
                            0

                    let budget = reached + 50
                    let code, out = maac [ "train"; "--resume"; dir; "--steps"; string budget; "--threads"; "1" ]
                    Expect.equal code 0 (sprintf "resumed once the first is gone:\n%s" out)
                    let code, out = maac [ "train"; "--resume"; dir; "--steps"; string (budget - 10); "--threads"; "1" ]
                    Expect.equal code 1 "a budget below the checkpoint's step is refused"
                    Expect.stringContains out (sprintf "--steps %d is below the step %d" (budget - 10) budget) out
                    Expect.isFalse (out.Contains "(Parameter") (sprintf "in the command line's words only: %s" out))
        ]
