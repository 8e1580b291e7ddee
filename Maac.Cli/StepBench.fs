/// `bench --env TASK --algo A [--config FILE] [--steps N]`: how fast training runs at these settings, and where a
/// training step's time goes. From a prepared state (the buffer filled by the random phase), N environment steps of
/// real training (default 100: the first model fit, then learning steps) run with every stage timed (StageName); each stage's cost per call times its calls per
/// environment step (the model fit and rollouts every ModelTrainEvery steps, the evaluation every EvalEvery, the
/// update's stages UpdatesPerStep times) gives its share of a step. With --count-ops the matrix products' FLOPs of
/// each stage are counted too (the timings then include the counter's bookkeeping).
module Maac.Cli.StepBench

open System
open System.Collections.Generic
open System.Diagnostics
open Maac.Tensors
open Maac.Envs
open Maac.Algorithms
open Maac.Persistence
open Maac.Training

/// One stage's totals: exclusive wall ticks (time inside a nested stage counts there), product FLOPs and calls.
type private StageTotal = { Ticks: int64; Flops: int64; Calls: int }

/// A stage that is running, with what its nested stages have taken so far.
type private OpenStage =
    {
        Name: string
        StartTicks: int64
        StartFlops: int64
        mutable ChildTicks: int64
        mutable ChildFlops: int64
    }

/// An IStageClock that adds up each stage's exclusive time and product FLOPs (training runs on one thread).
type private StageTimer(flops: unit -> int64) =
    let totals = Dictionary<string, StageTotal>()
    let running = Stack<OpenStage>()

    member _.Totals = totals |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq

    interface IStageClock with
        member _.Stage(name, work) =
            let frame =
                {
                    Name = name
                    StartTicks = Stopwatch.GetTimestamp()
                    StartFlops = flops ()
                    ChildTicks = 0L
                    ChildFlops = 0L
                }

            running.Push frame

            try
                work ()
            finally
                running.Pop() |> ignore
                let ticks, used = Stopwatch.GetTimestamp() - frame.StartTicks, flops () - frame.StartFlops

                if running.Count > 0 then
                    let parent = running.Peek()
                    parent.ChildTicks <- parent.ChildTicks + ticks
                    parent.ChildFlops <- parent.ChildFlops + used

                let before =
                    match totals.TryGetValue name with
                    | true, t -> t
                    | _ -> { Ticks = 0L; Flops = 0L; Calls = 0 }

                totals.[name] <-
                    {
                        Ticks = before.Ticks + ticks - frame.ChildTicks
                        Flops = before.Flops + used - frame.ChildFlops
                        Calls = before.Calls + 1
                    }

/// How many times a stage runs per environment step at these settings.
let private callsPerStep (s: Settings) (algorithm: Algorithm) (stage: string) =
    let updates = float s.UpdatesPerStep

    match stage with
    | StageName.Acting
    | StageName.Environment -> 1.0
    | StageName.ModelFit ->
        if algorithm.UsesModel then
            1.0 / float s.ModelTrainEvery
        else
            0.0
    | StageName.ImaginedRollouts ->
        if algorithm.UsesImaginedData then
            1.0 / float s.ModelTrainEvery
        else
            0.0
    | StageName.Evaluation -> 1.0 / float s.EvalEvery
    | StageName.BatchSampling
    | StageName.CriticTargets
    | StageName.CriticUpdate
    | StageName.ActorUpdate
    | StageName.Temperature
    | StageName.ReadBackAndPolyak -> updates
    | other -> invalidArg "stage" (sprintf "the benchmark does not know how often the stage '%s' runs" other)

/// Steps a run from a state for n environment steps; the state after them.
let private advance (run: TrainingRun) (n: int) (state: TrainingState) =
    let clock = Stopwatch.StartNew()

    (state, [ 1..n ])
    ||> List.fold (fun s _ ->
        match TrainingStep.step run (fun () -> clock.Elapsed.TotalSeconds) s with
        | _, events when events |> List.exists (fun e -> e.IsDiverged) -> failwithf "the run diverged at step %d" (s.Step + 1)
        | next, _ -> next)

/// The settings of a bench: the file's, or the task's defaults for the algorithm; the budget long enough.
let private settingsFor (taskName: string) (algo: string) (config: string option) (steps: int) =
    let task = Tasks.find taskName
    let algorithm = Algorithms.find algo

    let s =
        match config with
        | Some file -> RunFolder.readSettingsFileFor file (Some task.Name) (Some algorithm.Name)
        | None -> Settings.forTask task.Name algorithm.Name

    task,
    algorithm,
    { s with
        Env = task.Name
        Algorithm = algorithm.Name
        Steps = max s.Steps (s.RandomSteps + steps + 10)
    }

/// Prints the measured rate, the rate the stages predict at their intervals, and each stage's cost per step.
let private printTable
    (settings: Settings)
    (algorithm: Algorithm)
    (taskName: string)
    (countOps: bool)
    (totals: Map<string, StageTotal>)
    (window: int)
    (from: int)
    (windowSeconds: float)
    =
    let ms (ticks: int64) = float ticks * 1000.0 / float Stopwatch.Frequency

    let rows =
        StageName.all
        |> Array.choose (fun stage ->
            totals.TryFind stage
            |> Option.map (fun t ->
                let perStep = callsPerStep settings algorithm stage
                stage, ms t.Ticks / float t.Calls * perStep, float t.Flops / 1e9 / float t.Calls * perStep))

    let total = rows |> Array.sumBy (fun (_, m, _) -> m)

    printfn
        "%s %s, %d updates per step, %d threads: %d timed steps from step %d in %.1f s (%.2f steps/s in this window, which holds the first model fit where the algorithm has one)"
        taskName
        algorithm.Name
        settings.UpdatesPerStep
        Maac.Tensors.Cpu.CpuSettings.Threads
        window
        from
        windowSeconds
        (float window / windowSeconds)

    printfn "predicted from the stages at their intervals (evaluation every %d steps): %.2f steps/s" settings.EvalEvery (1000.0 / total)
    printfn "| stage | ms per environment step | share |%s" (if countOps then " product GFLOP per step |" else "")
    printfn "| --- | --- | --- |%s" (if countOps then " --- |" else "")

    for stage, m, g in rows do
        printfn "| %s | %.2f | %.1f%% |%s" stage m (100.0 * m / total) (if countOps then sprintf " %.3f |" g else "")

/// Runs the whole-step benchmark and prints its table.
let run (taskName: string) (algo: string) (config: string option) (steps: int option) (countOps: bool) =
    let window = defaultArg steps 100
    let task, algorithm, settings = settingsFor taskName algo config window

    let counter, counting = Bench.countingWhen countOps
    use _counting = counting
    let flops () = counter |> Option.map (fun c -> c.ProductFlops) |> Option.defaultValue 0L
    let run = TrainingStep.createRun settings algorithm task

    try
        let obsDim, actDim = run.Env.ObservationSpace.Dim, run.Env.ActionSpace.Dim

        let fresh =
            TrainingState.init settings (TrainingStep.key run KeyPurpose.AgentInit 0) obsDim actDim task.Functions.Reward.IsNone

        printfn "%s %s: preparing (the %d random steps)..." task.Name algorithm.Name settings.RandomSteps
        // The window starts with the last random step, at which model-based algorithms fit their model for the
        // first time: the fit and the rollouts are timed once, and their cost shared by ModelTrainEvery steps.
        let prepared = advance run (settings.RandomSteps - 1) fresh
        let timer = StageTimer flops
        let timed = { run with Stages = timer }
        let wall = Stopwatch.StartNew()
        let after = advance timed window prepared
        let windowSeconds = wall.Elapsed.TotalSeconds
        // An evaluation, timed once when the window held none (its cost is shared by EvalEvery steps).
        if not ((timer.Totals).ContainsKey StageName.Evaluation) then
            (timer :> IStageClock)
                .Stage(
                    StageName.Evaluation,
                    fun () -> TrainingStep.evaluatePolicy timed (TrainingStep.deterministicPolicy timed after.Agent) settings.EvalEpisodes
                )
            |> ignore

        printTable settings algorithm task.Name countOps timer.Totals window prepared.Step windowSeconds
    finally
        run.Env.Dispose()
