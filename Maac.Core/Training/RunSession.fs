namespace Maac.Training

open Maac
open Maac.Algorithms
open Maac.Persistence

open System
open System.IO
open Maac.Envs

/// A training run and the folder it records into (or none: a run in memory). The one implementation of starting,
/// resuming and opening runs, training with a checkpoint at every evaluation and when training stops, setting the
/// budget, saving elsewhere, and saying what a diverged run kept on disk; the command line and the C# agents both use
/// it. A session with a folder holds the folder's RunLock from before it reads or writes anything there until it is
/// disposed, so two sessions (in one process or two) never write one folder. Dispose it to release the trainer's
/// environment and the folder.
[<Sealed>]
type RunSession private (trainer: Trainer, folder: string option, lock: RunLock option) =
    let record () = folder |> Option.iter (fun dir -> RunFolder.record dir trainer)

    /// What a diverged run left: the last checkpoint (the folder agrees with it), nothing yet, or no folder at all.
    let kept () =
        match folder with
        | Some dir when File.Exists(RunFolder.checkpointFile dir) ->
            let last = trainer.Metrics |> List.tryLast |> Option.map (fun r -> r.Step) |> Option.defaultValue 0
            sprintf "The last good checkpoint (step %d) stays in %s; metrics.csv agrees with it." last dir
        | Some dir -> sprintf "No checkpoint had been written yet; %s holds only config.json." dir
        | None -> "Nothing was written to disk (the run has no folder)."

    /// The trainer (its state, acting, evaluating).
    member _.Trainer = trainer
    /// The run folder, if the run records into one.
    member _.Folder = folder

    /// A new run of `algorithm` on `task`, recording into `folder` when one is given (RunFolder.create: a folder
    /// holding another run or foreign files is refused, nothing is overwritten).
    static member Start(settings: Settings, algorithm: Algorithm, task: TaskInfo, folder: string option) =
        let t = new Trainer(settings, algorithm, task)

        try
            // After the trainer exists, so a failed construction leaves no half-started run folder behind.
            match folder with
            | Some dir ->
                Directory.CreateDirectory dir |> ignore

                RunSession.Claiming(
                    dir,
                    fun () ->
                        RunFolder.create dir settings
                        t
                )
            | None -> new RunSession(t, None, None)
        with _ ->
            (t :> IDisposable).Dispose()
            reraise ()

    /// A session on a folder's trainer, made by `openTrainer` while the folder's lock is held.
    static member private Claiming(folder: string, openTrainer: unit -> Trainer) =
        if not (Directory.Exists folder) then
            raise (CheckpointException(sprintf "%s is not a run folder: the folder does not exist" folder))

        let lock = RunLock.Acquire folder

        try
            new RunSession(openTrainer (), Some folder, Some lock)
        with _ ->
            (lock :> IDisposable).Dispose()
            reraise ()

    /// The run in a folder, continued (RunFolder.resume: the budget set to `steps` when given).
    static member Resume(folder: string, task: TaskInfo, steps: int option) =
        RunSession.Claiming(folder, fun () -> RunFolder.resume folder task steps)

    /// The run in a folder, opened with its checkpoint loaded; training continues into the same folder.
    static member Open(folder: string, task: TaskInfo) = RunSession.Claiming(folder, fun () -> RunFolder.openTrainerFor folder task)

    /// Sets the budget (at least the steps taken); config.json records it.
    member _.SetBudget(steps: int) =
        trainer.SetBudget steps
        folder |> Option.iter (fun dir -> RunFolder.writeSettings dir trainer.Settings)

    /// Writes the run as a run folder in `dir` (its own folder: a checkpoint now). Another folder is started as a new
    /// run would be (refused when it holds a run) unless `overwrite`.
    member _.SaveTo(dir: string, overwrite: bool) =
        let own = folder |> Option.exists (fun f -> Path.GetFullPath f = Path.GetFullPath dir)

        if own then
            RunFolder.record dir trainer
        else
            Directory.CreateDirectory dir |> ignore
            use _ = RunLock.Acquire dir

            if overwrite then
                RunFolder.writeSettings dir trainer.Settings
            else
                RunFolder.create dir trainer.Settings

            RunFolder.record dir trainer

    /// Trains to step `until` (at most the budget), publishing every event to onEvent. At each evaluation the
    /// checkpoint and metrics.csv are written (RunFolder.record) before the Evaluated event is published, then
    /// onCheckpoint is told the checkpoint's path; when training stops (done or cancelled) they are written again. A
    /// divergence raises a DivergenceException whose message adds what is kept on disk.
    member _.Train(until: int, onEvent: TrainingEvent -> unit, onCheckpoint: string -> unit, cancel: Threading.CancellationToken) =
        let publish (e: TrainingEvent) =
            match e, folder with
            | Evaluated _, Some dir ->
                record ()
                onEvent e
                onCheckpoint (RunFolder.checkpointFile dir)
            | _ -> onEvent e

        try
            trainer.Run(until, publish, cancel)
        with :? DivergenceException as e ->
            raise (DivergenceException(e.Part, sprintf "%s\nTraining stopped. %s" e.Message (kept ())))

        record ()

    interface IDisposable with
        member _.Dispose() =
            (trainer :> IDisposable).Dispose()
            lock |> Option.iter (fun l -> (l :> IDisposable).Dispose())
