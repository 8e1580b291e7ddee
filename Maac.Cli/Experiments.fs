/// `experiment`: the paper's analyses as commands (gradient error vs H, ablations, MPC at test time, comparison).
module Maac.Cli.Experiments

open System
open System.Diagnostics
open System.IO
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Analysis
open Maac.Cli.Sweep

let private inv (x: float) = x.ToString("G6", Globalization.CultureInfo.InvariantCulture)

let private meanStd (xs: float seq) =
    let a = Seq.toArray xs
    let m = Array.average a
    m, sqrt (a |> Array.averageBy (fun v -> (v - m) ** 2.0))

/// Gradient error vs H (paper Figure 3): CSV, figure and table.
let gradientError (settings: GradientErrorSettings) (outDir: string) =
    Directory.CreateDirectory outDir |> ignore
    let sw = Stopwatch.StartNew()

    let rows =
        [| 0 .. settings.Seeds - 1 |]
        |> Array.map (fun seed ->
            let r = GradientErrorExperiment.runSeed settings seed
            printfn "seed %d done (%.0f s)" seed sw.Elapsed.TotalSeconds
            r)
        |> List.concat

    let csv = Path.Combine(outDir, "gradient-error.csv")

    File.WriteAllLines(
        csv,
        Array.append
            [| "seed,horizon,l1_exact_q,l1_true_dynamics,l1_learned_dynamics,l1_norm_of_gradient" |]
            (rows
             |> List.map (fun r ->
                 String.Join(
                     ",",
                     [
                         string r.Seed
                         string r.Horizon
                         inv r.ExactQ
                         inv r.TrueDynamics
                         inv r.LearnedDynamics
                         inv r.GradientNorm
                     ]
                 ))
             |> List.toArray)
    )

    let series (label: string) (f: GradientErrorRow -> float) =
        label,
        [|
            for h in 0 .. settings.Horizons ->
                let m, s = rows |> List.filter (fun r -> r.Horizon = h) |> List.map f |> meanStd
                float h, m, s
        |]

    let groups =
        [
            series "true dynamics, exact Q (Monte-Carlo floor)" (fun r -> r.ExactQ)
            series "true dynamics, learned Q" (fun r -> r.TrueDynamics)
            series "learned dynamics, learned Q" (fun r -> r.LearnedDynamics)
        ]

    let png = Path.Combine(outDir, "gradient-error.png")

    Plotting.drawWith
        "MAAC gradient error on the double integrator (mean ± std across seeds)"
        "model horizon H"
        "L1 error of the policy gradient"
        groups
        png

    let norm = rows |> List.averageBy (fun r -> r.GradientNorm)

    printfn
        "\nL1 error of the MAAC gradient (‖exact‖₁ = %.4f), mean ± std over %d seeds, %d start states per estimate:"
        norm
        settings.Seeds
        settings.Samples

    printfn "%3s  %-22s %-22s %-22s" "H" "true dyn., exact Q" "true dyn., learned Q" "learned dyn., learned Q"

    for h in 0 .. settings.Horizons do
        let cell (_, stats: (float * float * float)[]) = let _, m, s = stats.[h] in sprintf "%.4f ± %.4f" m s
        printfn "%3d  %-22s %-22s %-22s" h (cell groups.[0]) (cell groups.[1]) (cell groups.[2])

    printfn "wrote %s and %s (%.0f s)" csv png sw.Elapsed.TotalSeconds
    0

/// How to start this program again (the apphost, or `dotnet maac.dll`).
let private self () =
    let path = Environment.ProcessPath

    if Path.GetFileNameWithoutExtension path = "dotnet" then
        path, [ Reflection.Assembly.GetEntryAssembly().Location ]
    else
        path, []

/// Trains every unfinished run of a sweep on this machine in child processes, `concurrent` at a time (the local
/// launcher): finished runs are kept, interrupted ones continue from their checkpoints; each run's output goes to
/// logs/N.log and its status to status/N.txt in the sweep folder. Returns the runs that failed, with their exit codes.
let trainLocally (dir: string) (runs: RunSpec list) (options: SweepOptions) (concurrent: int) =
    let exe, prefix = self ()
    Directory.CreateDirectory(Path.Combine(dir, "logs")) |> ignore
    let logOf (r: RunSpec) = Path.Combine(dir, "logs", sprintf "%d.log" r.Index)

    let start (r: RunSpec) =
        let psi =
            ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)

        for a in prefix @ trainArguments options r do
            psi.ArgumentList.Add a

        let proc = Process.Start psi
        writeStatus dir r.Index (sprintf "running pid %d on %s %s" proc.Id Environment.MachineName (DateTime.UtcNow.ToString "s"))
        let log = new StreamWriter(logOf r, true)
        let sync = obj ()

        let write (line: string) =
            if not (isNull line) then
                lock sync (fun () -> log.WriteLine line)

        proc.OutputDataReceived.Add(fun e -> write e.Data)
        proc.ErrorDataReceived.Add(fun e -> write e.Data)
        proc.BeginOutputReadLine()
        proc.BeginErrorReadLine()
        proc, log

    let todo = runs |> List.filter (finished >> not)

    printfn
        "%d runs (%d already finished), %d at a time with %d threads each"
        runs.Length
        (runs.Length - todo.Length)
        concurrent
        options.Threads

    let sw = Stopwatch.StartNew()

    todo
    |> List.chunkBySize concurrent
    |> List.collect (fun batch ->
        let started = batch |> List.map (fun r -> r, start r)

        started
        |> List.map (fun (r, (proc, log)) ->
            proc.WaitForExit()
            log.Dispose()
            let code = proc.ExitCode
            writeStatus dir r.Index (sprintf "exit %d %s" code (DateTime.UtcNow.ToString "s"))

            printfn
                "  %s %s seed %d: %s (%.0f s elapsed)"
                r.Env
                r.Algorithm
                r.Seed
                (if code = 0 then
                     "done"
                 else
                     sprintf "FAILED with exit code %d, see %s" code (logOf r))
                sw.Elapsed.TotalSeconds

            r, code))
    |> List.filter (fun (_, code) -> code <> 0)

/// Final evaluation, wall time and steps/s of each (task, algorithm) group across seeds, as lines of a table.
let summaryLines (runs: RunSpec list) =
    [
        yield sprintf "%-20s %-24s %-6s %-20s %-12s %s" "task" "algorithm" "seeds" "final return" "wall (s)" "steps/s"
        for (env, algo), group in runs |> List.filter finished |> List.groupBy (fun r -> r.Env, r.Algorithm) do
            let lasts = group |> List.map (fun r -> Array.last (RunFolder.readRows r.Folder))
            let finals = lasts |> List.map (fun row -> row.EvalReturnMean)
            let m, s = meanStd finals
            let wall = lasts |> List.averageBy (fun row -> row.WallSeconds)

            yield
                sprintf
                    "%-20s %-24s %-6d %-20s %-12.0f %.1f"
                    env
                    algo
                    group.Length
                    (sprintf "%.1f ± %.1f" m s)
                    wall
                    (float group.Head.Steps / wall)

            yield sprintf "%-20s %-24s %-6s per seed: %s" "" "" "" (String.Join(" / ", finals |> List.map (sprintf "%.1f")))
    ]

/// The summary table (printed and written to summary.txt) and one figure per task (curves.png for a sweep of one
/// task, curves-TASK.png otherwise) of a sweep's finished runs; the same for every launcher.
let collect (dir: string) =
    let dir = Path.GetFullPath dir
    let runs = readPlan dir
    let done' = runs |> List.filter finished

    if done'.IsEmpty then
        printfn "%s: none of the %d runs has finished yet (see experiment status %s)" dir runs.Length dir
        1
    else
        let envs = done' |> List.map (fun r -> r.Env) |> List.distinct

        for env in envs do
            let png =
                Path.Combine(
                    dir,
                    if envs.Length = 1 && (runs |> List.forall (fun r -> r.Env = env)) then
                        "curves.png"
                    else
                        sprintf "curves-%s.png" env
                )

            let folders = done' |> List.filter (fun r -> r.Env = env) |> List.map (fun r -> r.Folder)
            Plotting.draw (sprintf "%s on %s (mean ± std over seeds)" (Path.GetFileName dir) env) (Plotting.curves folders) png
            printfn "wrote %s" png

        let lines = summaryLines runs
        File.WriteAllLines(Path.Combine(dir, "summary.txt"), lines)
        printfn ""

        for l in lines do
            printfn "%s" l

        if done'.Length < runs.Length then
            printfn "(%d of %d runs finished; the others are not in the table)" done'.Length runs.Length

        0

/// What each run of a sweep is doing, from its status file, its folder and (for the Slurm launcher) the queue.
let runStates (dir: string) (runs: RunSpec list) =
    let queue =
        if File.Exists(slurmJobFile dir) then
            Slurm.queueStates ((File.ReadAllText(slurmJobFile dir)).Trim())
        else
            Map.empty

    let alive (pid: int) =
        try
            not (Process.GetProcessById(pid).HasExited)
        with _ ->
            false

    runs
    |> List.map (fun r ->
        let status = readStatus dir r.Index

        let state =
            match queue.TryFind r.Index, status with
            | Some "PD", None -> "pending"
            | Some "PD", Some _ -> "pending (requeued)"
            | Some q, _ -> sprintf "running (Slurm state %s)" q
            | None, None -> "pending"
            | None, Some line ->
                match exitCode line, line.Split(' ') with
                | Some 0, _ when finished r -> "finished"
                | Some 0, _ -> "failed (exit code 0 before its budget)"
                | Some c, _ when stoppedBySignal c -> "stopped by a signal, checkpoint kept (resumes when requeued or relaunched)"
                | Some c, _ -> sprintf "failed (exit code %d)" c
                | None, parts when parts.Length > 2 && parts.[1] = "pid" ->
                    match Int32.TryParse parts.[2] with
                    | true, pid when alive pid -> "running"
                    | _ -> "failed (its process ended without recording an exit code)"
                | None, _ -> "failed (the task ended without recording an exit code)"

        r, state, stepReached r)

/// Prints each run's state and the step its checkpoint has reached; exit code 0 when every run finished, 3 when
/// one failed, 1 otherwise.
let status (dir: string) =
    let dir = Path.GetFullPath dir
    let states = runStates dir (readPlan dir)
    printfn "%-5s %-36s %-13s %s" "index" "run" "step" "state"

    for r, state, step in states do
        printfn "%-5d %-36s %-13s %s" r.Index (Path.GetFileName r.Folder) (sprintf "%d/%d" step r.Steps) state

    let count (prefix: string) = states |> List.filter (fun (_, s, _) -> s.StartsWith prefix) |> List.length

    printfn
        "%d finished, %d running, %d pending, %d stopped, %d failed"
        (count "finished")
        (count "running")
        (count "pending")
        (count "stopped")
        (count "failed")

    if count "failed" > 0 then 3
    elif count "finished" = states.Length then 0
    else 1

/// How a sweep's runs are launched.
type Launcher =
    /// Child processes on this machine.
    | Local of concurrent: int
    /// One Slurm array job.
    | SlurmArray of Slurm.SlurmOptions

/// Plans a sweep of tasks × algorithms × seeds into `dir` and launches it: locally (then the summary and figures), or
/// as a Slurm array job (then its id; `experiment status` and `experiment collect` follow it).
let sweep
    (dir: string)
    (envs: string list)
    (algorithms: string list)
    (seeds: int)
    (steps: int)
    (config: string option)
    (threads: int)
    (launcher: Launcher)
    =
    let dir = Path.GetFullPath dir
    Directory.CreateDirectory dir |> ignore
    let runs = plan dir envs algorithms seeds steps
    writePlan dir runs config
    let options = { Config = config |> Option.map (fun _ -> settingsCopy dir); Threads = threads }

    match launcher with
    | Local concurrent ->
        let failures = trainLocally dir runs options concurrent

        if runs |> List.exists finished then
            collect dir |> ignore

        if failures.IsEmpty then 0 else 1
    | SlurmArray slurm ->
        let exe, prefix = self ()
        let id = Slurm.submit dir runs options slurm (exe :: prefix)

        printfn
            "submitted %d runs as Slurm array job %s (script %s, logs in %s)"
            runs.Length
            id
            (Slurm.scriptFile dir)
            (Path.Combine(dir, "logs"))

        printfn "follow it with: maac experiment status %s; when done: maac experiment collect %s" dir dir
        0

/// The default split of this machine's cores among parallel runs: 2 threads each.
let defaultParallel () = max 1 (Environment.ProcessorCount / 2)

/// MPC at test time (paper Table 1): a run's checkpoint evaluated with its policy and with CEM planning.
let mpc (runDir: string) (episodes: int) =
    use trainer = RunFolder.loadTrainer runDir

    let time f =
        let sw = Stopwatch.StartNew()
        let m, s = f ()
        m, s, sw.Elapsed.TotalSeconds

    let pm, ps, pt = time (fun () -> trainer.Evaluate episodes)
    let cm, cs, ct = time (fun () -> trainer.EvaluateWithPlanner(Maac.Rl.CemSettings.Paper, episodes))
    printfn "%s on %s, checkpoint at step %d, %d episodes:" trainer.Settings.Algorithm trainer.Settings.Env trainer.Step episodes
    printfn "%-44s %-20s %s" "actions from" "return" "time (s)"
    printfn "%-44s %-20s %.1f" "policy (deterministic)" (sprintf "%.1f ± %.1f" pm ps) pt
    printfn "%-44s %-20s %.1f" "CEM MPC (256 candidates, H 5, 5 iterations)" (sprintf "%.1f ± %.1f" cm cs) ct
    0

/// Loads corrupted copies of a run's checkpoint and prints, per family, how many were refused naming the file, how
/// many gave another error and how many loaded; exit code 1 unless every case was refused cleanly.
let checkpointFuzz (runDir: string) (cases: int) (seed: int) =
    let task = Maac.Envs.Tasks.find (RunFolder.readSettings runDir).Env

    let results =
        CheckpointFuzz.run runDir cases seed (fun dir -> (RunFolder.openTrainerFor dir task :> IDisposable).Dispose())

    printfn "%-30s %6s %8s %8s %7s" "family" "cases" "refused" "unclear" "loaded"

    for family, rows in results |> List.groupBy (fun c -> c.Family) do
        let count f = rows |> List.filter f |> List.length

        printfn
            "%-30s %6d %8d %8d %7d"
            family
            rows.Length
            (count (fun c -> c.Outcome.IsRefused))
            (count (fun c -> c.Outcome.IsUnclear))
            (count (fun c -> c.Outcome.IsLoaded))

    let bad = results |> List.filter (fun c -> not c.Outcome.IsRefused)

    for c in bad do
        let what =
            match c.Outcome with
            | Unclear e -> "another error: " + e
            | Loaded -> "loaded"
            | Refused m -> m

        printfn "NOT REFUSED CLEANLY: %s (%s): %s" c.Family c.Description what

    printfn "%d cases: %d refused naming the file, %d not" results.Length (results.Length - bad.Length) bad.Length
    if bad.IsEmpty then 0 else 1
