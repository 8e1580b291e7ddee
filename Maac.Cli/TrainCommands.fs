/// `train`, `eval` and `plot`.
module Maac.Cli.TrainCommands

open Maac

open System
open System.IO
open System.Threading
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Envs

/// Trains into a new run folder, or resumes one (`resume` with the budget given by --steps, if any), logging to
/// TensorBoard under `tensorboard`/<run folder name> when asked; returns the process exit code: 0 done, 130 stopped by
/// Ctrl+C (a checkpoint written), 3 diverged (any part).
let train (settings: Settings) (outDir: string) (resume: int option option) (tensorboard: string option) =
    let task = Tasks.find settings.Env

    use session =
        match resume with
        | Some steps ->
            let s = RunSession.Resume(outDir, task, steps)
            printfn "resuming %s at step %d of %d" outDir s.Trainer.Step s.Trainer.Settings.Steps
            s
        | None -> RunSession.Start(settings, Algorithms.find settings.Algorithm, task, Some outDir)

    let trainer = session.Trainer
    let settings = trainer.Settings

    for w in Settings.warnings settings do
        eprintfn "warning: %s" w

    use cancel = new CancellationTokenSource()
    // Ctrl+C (SIGINT) and SIGTERM (Slurm's preemption and time-limit signal, `kill`) both stop after the current step
    // with a checkpoint written; the exit code says which (130, 143).
    let mutable signalExit = 130

    let stop (code: int) (ctx: Runtime.InteropServices.PosixSignalContext) =
        ctx.Cancel <- true
        signalExit <- code
        cancel.Cancel()
        eprintfn "\n%s: stopping after this step; writing a checkpoint..." (if code = 143 then "SIGTERM" else "interrupted")

    use _int =
        Runtime.InteropServices.PosixSignalRegistration.Create(Runtime.InteropServices.PosixSignal.SIGINT, stop 130)

    use _term =
        Runtime.InteropServices.PosixSignalRegistration.Create(Runtime.InteropServices.PosixSignal.SIGTERM, stop 143)

    let title = sprintf "%s on %s, seed %d" settings.Algorithm settings.Env settings.Seed

    let runName = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath outDir))
    let log = tensorboard |> Option.map (fun dir -> new TensorBoardLog(Path.Combine(dir, runName)))

    use _closeLog =
        { new IDisposable with
            member _.Dispose() = log |> Option.iter (fun l -> (l :> IDisposable).Dispose())
        }

    log
    |> Option.iter (fun l -> printfn "TensorBoard events: %s (view with: tensorboard --logdir %s)" l.Path tensorboard.Value)

    try
        LiveProgress.show title settings trainer.Step (fun display ->
            let onEvent e =
                log |> Option.iter (fun l -> l.Publish e)

                match e with
                | Stepped p -> display.Step p
                | Evaluated row ->
                    Plotting.draw title (Plotting.curves [ outDir ]) (RunFolder.curveFile outDir)
                    display.Evaluation row
                | _ -> ()

            session.Train(settings.Steps, onEvent, ignore, cancel.Token))

        if cancel.IsCancellationRequested then
            printfn "stopped at step %d; continue with: train --resume %s" trainer.Step outDir

            let lastEvaluation = trainer.Metrics |> List.tryLast |> Option.map (fun r -> r.Step)

            if lastEvaluation <> Some trainer.Step && not trainer.ResumesExactly then
                printfn
                    "note: step %d is between evaluations and %s cannot save its state, so the running training episode was cut there: the resumed run is a valid continuation but not bit-identical to an uninterrupted one (a stop during an evaluation, every %d steps, keeps that)"
                    trainer.Step
                    trainer.Task.Name
                    settings.EvalEvery

            signalExit
        else
            printfn "done: %s (config.json, metrics.csv, checkpoint.safetensors, curve.png)" outDir
            0
    with :? DivergenceException as e ->
        eprintfn "\n%s" e.Message
        3

/// Evaluates the checkpoint of a run folder, with the policy alone and, with mpc, also with CEM planning.
let eval (runDir: string) (episodes: int) (mpc: bool) =
    use trainer = RunFolder.loadTrainer runDir
    let mean, std = trainer.Evaluate episodes

    printfn
        "%s on %s, step %d: evaluation return %.1f ± %.1f over %d episodes (policy)"
        trainer.Settings.Algorithm
        trainer.Settings.Env
        trainer.Step
        mean
        std
        episodes

    if mpc then
        let sw = Diagnostics.Stopwatch.StartNew()
        let m, s = trainer.EvaluateWithPlanner(Maac.Rl.CemSettings.Paper, episodes)

        printfn
            "%s on %s, step %d: evaluation return %.1f ± %.1f over %d episodes (CEM MPC: 256 candidates, horizon 5, 5 iterations; %.0f s)"
            trainer.Settings.Algorithm
            trainer.Settings.Env
            trainer.Step
            m
            s
            episodes
            sw.Elapsed.TotalSeconds

    0

/// Draws the curves of several runs into one PNG.
let plot (runs: string list) (out: string) =
    let groups = Plotting.curves runs
    Plotting.draw "evaluation return (mean ± std across seeds)" groups out

    for label, stats in groups do
        match Array.tryLast stats with
        | Some(step, m, s) -> printfn "%s: last step %.0f, return %.1f ± %.1f" label step m s
        | None -> printfn "%s: no common evaluation steps" label

    printfn "wrote %s" out
    0
