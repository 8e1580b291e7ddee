/// `experiment`: the paper's analyses as commands (gradient error vs H, ablations, MPC at test time, comparison).
module Maac.Cli.Experiments

open System
open System.Diagnostics
open System.IO
open Maac.Algorithms
open Maac.Analysis

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
    File.WriteAllLines(csv,
        Array.append [| "seed,horizon,l1_exact_q,l1_true_dynamics,l1_learned_dynamics,l1_norm_of_gradient" |]
            (rows |> List.map (fun r -> String.Join(",", [ string r.Seed; string r.Horizon; inv r.ExactQ; inv r.TrueDynamics; inv r.LearnedDynamics; inv r.GradientNorm ])) |> List.toArray))
    let series (label: string) (f: GradientErrorRow -> float) =
        label,
        [| for h in 0 .. settings.Horizons ->
            let m, s = rows |> List.filter (fun r -> r.Horizon = h) |> List.map f |> meanStd
            float h, m, s |]
    let groups =
        [ series "true dynamics, exact Q (Monte-Carlo floor)" (fun r -> r.ExactQ)
          series "true dynamics, learned Q" (fun r -> r.TrueDynamics)
          series "learned dynamics, learned Q" (fun r -> r.LearnedDynamics) ]
    let png = Path.Combine(outDir, "gradient-error.png")
    Plotting.drawWith "MAAC gradient error on the double integrator (mean ± std across seeds)" "model horizon H" "L1 error of the policy gradient" groups png
    let norm = rows |> List.averageBy (fun r -> r.GradientNorm)
    printfn "\nL1 error of the MAAC gradient (‖exact‖₁ = %.4f), mean ± std over %d seeds, %d start states per estimate:" norm settings.Seeds settings.Samples
    printfn "%3s  %-22s %-22s %-22s" "H" "true dyn., exact Q" "true dyn., learned Q" "learned dyn., learned Q"
    for h in 0 .. settings.Horizons do
        let cell (_, stats: (float * float * float)[]) = let _, m, s = stats.[h] in sprintf "%.4f ± %.4f" m s
        printfn "%3d  %-22s %-22s %-22s" h (cell groups.[0]) (cell groups.[1]) (cell groups.[2])
    printfn "wrote %s and %s (%.0f s)" csv png sw.Elapsed.TotalSeconds
    0

/// How to start this program again (the apphost, or `dotnet maac.dll`).
let private self () =
    let path = Environment.ProcessPath
    if Path.GetFileNameWithoutExtension path = "dotnet" then path, [ Reflection.Assembly.GetEntryAssembly().Location ]
    else path, []

/// One training run of an experiment and its run folder.
type RunSpec =
    { Env: string
      Algorithm: string
      Seed: int
      Steps: int
      Folder: string }

/// Whether a run folder holds a finished run of `steps` steps.
let private finished (r: RunSpec) =
    File.Exists(RunFolder.metricsFile r.Folder)
    && (RunFolder.readMetrics r.Folder |> Array.tryLast |> Option.exists (fun (step, _, _) -> step >= r.Steps))

/// Trains every run in child processes, `concurrent` at a time with `threads` CPU threads each. Finished runs
/// are kept; interrupted or shorter ones continue from their checkpoints up to `Steps`; each child's output goes
/// to train.log in its folder.
let trainAll (runs: RunSpec list) (concurrent: int) (threads: int) =
    let exe, prefix = self ()
    let start (r: RunSpec) =
        Directory.CreateDirectory r.Folder |> ignore
        let args =
            if File.Exists(RunFolder.checkpointFile r.Folder) then [ "train"; "--env"; r.Env; "--resume"; r.Folder; "--steps"; string r.Steps; "--threads"; string threads ]
            else
                [ "train"; "--env"; r.Env; "--algo"; r.Algorithm; "--seed"; string r.Seed; "--steps"; string r.Steps
                  "--out"; r.Folder; "--threads"; string threads ]
        let psi = ProcessStartInfo(exe, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        for a in prefix @ args do psi.ArgumentList.Add a
        let proc = Process.Start psi
        let log = new StreamWriter(Path.Combine(r.Folder, "train.log"), true)
        let sync = obj ()
        let write (line: string) = if not (isNull line) then lock sync (fun () -> log.WriteLine line)
        proc.OutputDataReceived.Add(fun e -> write e.Data)
        proc.ErrorDataReceived.Add(fun e -> write e.Data)
        proc.BeginOutputReadLine()
        proc.BeginErrorReadLine()
        proc, log
    let todo = runs |> List.filter (finished >> not)
    printfn "%d runs (%d already finished), %d at a time with %d threads each" runs.Length (runs.Length - todo.Length) concurrent threads
    let sw = Stopwatch.StartNew()
    let failures =
        todo
        |> List.chunkBySize concurrent
        |> List.collect (fun batch ->
            let started = batch |> List.map (fun r -> r, start r)
            started |> List.map (fun (r, (proc, log)) ->
                proc.WaitForExit()
                log.Dispose()
                let code = proc.ExitCode
                printfn "  %s %s seed %d: %s (%.0f s elapsed)" r.Env r.Algorithm r.Seed (if code = 0 then "done" else sprintf "FAILED with exit code %d, see %s" code (Path.Combine(r.Folder, "train.log"))) sw.Elapsed.TotalSeconds
                r, code))
        |> List.filter (fun (_, code) -> code <> 0)
    failures

/// Final evaluation, wall time and steps/s of each (env, algorithm) group, across seeds.
let summarise (runs: RunSpec list) =
    printfn "\n%-24s %-10s %-20s %-12s %s" "algorithm" "seeds" "final return" "wall (s)" "steps/s"
    for (algo, group) in runs |> List.filter finished |> List.groupBy (fun r -> r.Algorithm) do
        let lasts = group |> List.map (fun r -> Array.last (RunFolder.readRows r.Folder))
        let finals = lasts |> List.map (fun row -> row.EvalReturnMean)
        let walls = lasts |> List.map (fun row -> row.WallSeconds)
        let m, s = meanStd finals
        let wall = List.average walls
        printfn "%-24s %-10d %-20s %-12.0f %.1f" algo group.Length (sprintf "%.1f ± %.1f" m s) wall (float group.Head.Steps / wall)
        printfn "%-24s %-10s per seed: %s" "" "" (String.Join(" / ", finals |> List.map (sprintf "%.1f")))

/// Trains a set of algorithms over seeds and draws their mean ± std curves on one figure.
let runAndPlot (title: string) (env: string) (algorithms: string list) (seeds: int) (steps: int) (outDir: string) (concurrent: int) (threads: int) =
    let task = Maac.Envs.Tasks.find env
    let runs =
        [ for a in algorithms do
            let a = (Algorithms.find a).Name
            for seed in 0 .. seeds - 1 ->
                { Env = task.Name; Algorithm = a; Seed = seed; Steps = steps; Folder = Path.Combine(outDir, sprintf "%s-%s-seed%d" task.Name a seed) } ]
    let failures = trainAll runs concurrent threads
    let png = Path.Combine(outDir, "curves.png")
    let done' = runs |> List.filter finished
    if not done'.IsEmpty then
        Plotting.draw (sprintf "%s on %s (mean ± std over seeds)" title task.Name) (Plotting.curves (done' |> List.map (fun r -> r.Folder))) png
        summarise runs
        printfn "wrote %s" png
    if failures.IsEmpty then 0 else 1

/// The default split of this machine's cores among parallel runs: 2 threads each.
let defaultParallel () = max 1 (Environment.ProcessorCount / 2)

/// MPC at test time (paper Table 1): a run's checkpoint evaluated with its policy and with CEM planning.
let mpc (runDir: string) (episodes: int) =
    use trainer = RunFolder.openTrainer runDir
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
    let results = CheckpointFuzz.run runDir cases seed (fun dir -> (RunFolder.openTrainerFor dir task :> IDisposable).Dispose())
    printfn "%-30s %6s %8s %8s %7s" "family" "cases" "refused" "unclear" "loaded"
    for family, rows in results |> List.groupBy (fun c -> c.Family) do
        let count f = rows |> List.filter f |> List.length
        printfn "%-30s %6d %8d %8d %7d" family rows.Length (count (fun c -> c.Outcome.IsRefused)) (count (fun c -> c.Outcome.IsUnclear)) (count (fun c -> c.Outcome.IsLoaded))
    let bad = results |> List.filter (fun c -> not c.Outcome.IsRefused)
    for c in bad do
        let what = match c.Outcome with Unclear e -> "another error: " + e | Loaded -> "loaded" | Refused m -> m
        printfn "NOT REFUSED CLEANLY: %s (%s): %s" c.Family c.Description what
    printfn "%d cases: %d refused naming the file, %d not" results.Length (results.Length - bad.Length) bad.Length
    if bad.IsEmpty then 0 else 1
