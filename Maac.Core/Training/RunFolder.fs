namespace Maac.Training

open Maac
open Maac.Algorithms
open Maac.Persistence

open System
open System.IO
open System.Text.Json
open Maac.Envs

/// The folder a training run writes: config.json (every setting used), metrics.csv (one row per
/// evaluation), checkpoint.safetensors (the latest state) and curve.png (drawn by the command line).
module RunFolder =
    let configFile (dir: string) = Path.Combine(dir, "config.json")
    let metricsFile (dir: string) = Path.Combine(dir, "metrics.csv")
    let checkpointFile (dir: string) = Path.Combine(dir, "checkpoint.safetensors")
    let curveFile (dir: string) = Path.Combine(dir, "curve.png")

    /// Writes config.json (atomically): every setting used.
    let writeSettings (dir: string) (s: Settings) =
        Directory.CreateDirectory dir |> ignore
        let temp = configFile dir + ".tmp"
        File.WriteAllText(temp, SettingsFile.toJson s)
        File.Move(temp, configFile dir, true)

    /// Reads settings from a JSON file (SettingsFile.parse: keys left out take the task's defaults, unknown keys are
    /// refused); `env` and `algorithm` (flags) win over the file's.
    let readSettingsFileFor (path: string) (env: string option) (algorithm: string option) =
        if not (File.Exists path) then
            raise (CheckpointException(sprintf "settings file not found: %s" path))

        SettingsFile.parse path (File.ReadAllText path) env algorithm

    /// Reads settings from a JSON file; a clear error when it is missing or malformed.
    let readSettingsFile (path: string) = readSettingsFileFor path None None

    /// Reads a run folder's config.json.
    let readSettings (dir: string) =
        if not (File.Exists(configFile dir)) then
            raise (CheckpointException(sprintf "%s is not a run folder: %s is missing" dir (configFile dir)))

        readSettingsFile (configFile dir)

    /// Writes metrics.csv whole (temporary file, then renamed): the rows given and nothing else.
    let writeMetrics (dir: string) (rows: MetricsRow seq) =
        let path = metricsFile dir
        let temp = path + ".tmp"
        File.WriteAllText(temp, MetricsCsv.text rows)
        File.Move(temp, path, true)

    /// Reads every row of metrics.csv.
    let readRows (dir: string) =
        let path = metricsFile dir

        if not (File.Exists path) then
            raise (CheckpointException(sprintf "%s has no %s" dir path))

        MetricsCsv.parse path (File.ReadAllText path)

    /// Reads metrics.csv as (step, mean, std) rows.
    let readMetrics (dir: string) = readRows dir |> Array.map (fun r -> r.Step, r.EvalReturnMean, r.EvalReturnStd)

    /// The files a run folder may hold (their temporary versions included).
    let private ownFiles =
        set
            [
                "config.json"
                "metrics.csv"
                "checkpoint.safetensors"
                "curve.png"
                "config.json.tmp"
                "metrics.csv.tmp"
                RunLock.FileName
            ]

    let private isOwn (file: string) =
        let name = Path.GetFileName file
        ownFiles.Contains name || (name.StartsWith ".checkpoint.safetensors." && name.EndsWith ".tmp")

    /// Starts a new run folder: writes config.json. A folder that already holds a run is refused (nothing a user
    /// saved is overwritten), except one that has this run's settings and no checkpoint yet (a run killed before its
    /// first checkpoint, which starts again); a folder holding files that are not a run's is refused naming them.
    let create (dir: string) (s: Settings) =
        if Directory.Exists dir then
            let foreign = Directory.GetFiles dir |> Array.filter (isOwn >> not) |> Array.map Path.GetFileName

            if foreign.Length > 0 || Directory.GetDirectories(dir).Length > 0 then
                raise (
                    IOException(
                        sprintf
                            "%s is not empty and holds files that are not a run's (%s); choose another folder"
                            dir
                            (String.Join(", ", Array.append foreign (Directory.GetDirectories dir |> Array.map Path.GetFileName)))
                    )
                )

        if File.Exists(checkpointFile dir) then
            raise (
                IOException(
                    sprintf "the run folder %s already holds a run; nothing was overwritten (resume it, or choose another folder)" dir
                )
            )

        if File.Exists(configFile dir) then
            let existing =
                try
                    Some(readSettingsFile (configFile dir))
                with _ ->
                    None

            match existing with
            | Some e when SettingsFile.differences e s = [] && e.Steps = s.Steps -> () // the same run, killed before its first checkpoint
            | _ ->
                raise (
                    IOException(
                        sprintf
                            "the run folder %s already holds another run's config.json and no checkpoint; nothing was overwritten (choose another folder)"
                            dir
                    )
                )

        writeSettings dir s
        writeMetrics dir []

    /// Records an evaluation in a run folder: the checkpoint (atomically, with the metrics rows so far), then
    /// metrics.csv rewritten from the same rows. After a kill between the two, opening the folder rewrites metrics.csv
    /// from the checkpoint: the folder always agrees with itself.
    let record (dir: string) (trainer: Trainer) =
        trainer.SaveCheckpoint(checkpointFile dir)
        writeMetrics dir trainer.Metrics

    /// A trainer for a run folder's settings and the given task, with its checkpoint loaded and its metrics rows those
    /// of the checkpoint (of a checkpoint without its rows, format 1, the file's rows up to its step). Nothing in the
    /// folder is written: eval, export and the experiments look at a run this way, even while another process trains it.
    let loadTrainerFor (dir: string) (task: TaskInfo) =
        let s = readSettings dir

        if not (File.Exists(checkpointFile dir)) then
            raise (CheckpointException(sprintf "%s holds no checkpoint (%s is missing)" dir (checkpointFile dir)))

        let t = new Trainer(s, Algorithms.find s.Algorithm, task)

        try
            if not (t.LoadCheckpoint(checkpointFile dir)) && File.Exists(metricsFile dir) then
                t.RestoreMetrics(readRows dir)

            t
        with _ ->
            (t :> IDisposable).Dispose()
            reraise ()

    /// loadTrainerFor for the one process that trains into the folder (it holds the folder's RunLock): metrics.csv is
    /// also rewritten to hold exactly the rows up to the checkpoint (a kill may have left it behind or ahead).
    let openTrainerFor (dir: string) (task: TaskInfo) =
        let t = loadTrainerFor dir task

        try
            writeMetrics dir t.Metrics
            t
        with _ ->
            (t :> IDisposable).Dispose()
            reraise ()

    /// A trainer for a run folder of a built-in task, with its checkpoint loaded (loadTrainerFor: nothing is written).
    let loadTrainer (dir: string) = loadTrainerFor dir (Tasks.find (readSettings dir).Env)

    /// A trainer that continues the run in a folder (the command line's `train --resume`, an agent's continued
    /// training): its checkpoint loaded, the budget set to `steps` when given (refused below the checkpoint's step),
    /// config.json rewritten with the budget. A folder with this run's config.json and no checkpoint (killed before its
    /// first) starts again from step 0.
    let resume (dir: string) (task: TaskInfo) (steps: int option) =
        let withSteps (s: Settings) =
            match steps with
            | Some n -> { s with Steps = n }
            | None -> s

        if not (File.Exists(checkpointFile dir)) then
            let s = withSteps (readSettings dir)
            let t = new Trainer(s, Algorithms.find s.Algorithm, task)
            writeSettings dir s
            writeMetrics dir []
            t
        else
            let t = openTrainerFor dir task

            try
                match steps with
                | Some n when n < t.Step ->
                    raise (
                        ArgumentException(
                            sprintf
                                "--steps %d is below the step %d the checkpoint in %s has reached; give a budget of at least %d"
                                n
                                t.Step
                                dir
                                t.Step,
                            "steps"
                        )
                    )
                | Some n when n <> t.Settings.Steps ->
                    t.SetBudget n
                    writeSettings dir t.Settings
                | _ -> ()

                t
            with _ ->
                (t :> IDisposable).Dispose()
                reraise ()
