namespace Maac.Algorithms

open Maac

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

    let private options = JsonSerializerOptions(WriteIndented = true)

    /// Writes config.json (atomically).
    let writeSettings (dir: string) (s: Settings) =
        Directory.CreateDirectory dir |> ignore
        let temp = configFile dir + ".tmp"
        File.WriteAllText(temp, JsonSerializer.Serialize(s, options))
        File.Move(temp, configFile dir, true)

    /// Reads settings from a JSON file; a clear error when it is missing or malformed.
    let readSettingsFile (path: string) =
        if not (File.Exists path) then raise (CheckpointException(sprintf "settings file not found: %s" path))
        let s =
            try JsonSerializer.Deserialize<Settings>(File.ReadAllText path, options)
            with :? JsonException as e -> raise (CheckpointException(sprintf "%s is not a valid run configuration: %s" path e.Message))
        if isNull (box s) || isNull s.Env || isNull s.Hidden || isNull s.ModelHidden then
            raise (CheckpointException(sprintf "%s is not a complete run configuration (write one with `train` and edit it)" path))
        s

    /// Reads a run folder's config.json.
    let readSettings (dir: string) =
        if not (File.Exists(configFile dir)) then raise (CheckpointException(sprintf "%s is not a run folder: %s is missing" dir (configFile dir)))
        readSettingsFile (configFile dir)

    /// The header of metrics.csv.
    let metricsHeader = "step,eval_return_mean,eval_return_std,critic_loss,actor_loss,alpha,model_holdout_mse,wall_seconds"

    /// Appends one row to metrics.csv (writing the header first when the file is new).
    let appendMetrics (dir: string) (r: MetricsRow) =
        let path = metricsFile dir
        let inv (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)
        let line =
            String.Join(",", [ string r.Step; inv r.EvalReturnMean; inv r.EvalReturnStd; inv (float r.CriticLoss); inv (float r.ActorLoss)
                               inv (float r.Alpha); inv (float r.ModelHoldoutMse); inv r.WallSeconds ])
        if not (File.Exists path) then File.WriteAllText(path, metricsHeader + "\n")
        File.AppendAllText(path, line + "\n")

    /// Reads every row of metrics.csv.
    let readRows (dir: string) =
        let path = metricsFile dir
        if not (File.Exists path) then raise (CheckpointException(sprintf "%s has no %s" dir path))
        File.ReadAllLines path
        |> Array.skip 1
        |> Array.filter (fun l -> l.Trim() <> "")
        |> Array.map (fun l ->
            let c = l.Split(',')
            let f (i: int) = Double.Parse(c.[i], Globalization.CultureInfo.InvariantCulture)
            { Step = int c.[0]; EvalReturnMean = f 1; EvalReturnStd = f 2; CriticLoss = float32 (f 3); ActorLoss = float32 (f 4)
              Alpha = float32 (f 5); ModelHoldoutMse = float32 (f 6); WallSeconds = f 7 })

    /// Reads metrics.csv as (step, mean, std) rows.
    let readMetrics (dir: string) = readRows dir |> Array.map (fun r -> r.Step, r.EvalReturnMean, r.EvalReturnStd)

    /// Drops metrics rows after a step (used when resuming from a checkpoint taken at that step).
    let truncateMetrics (dir: string) (step: int) =
        let path = metricsFile dir
        if File.Exists path then
            let lines = File.ReadAllLines path
            let kept = lines |> Array.mapi (fun i l -> i, l) |> Array.filter (fun (i, l) -> i = 0 || (l.Trim() <> "" && int (l.Split(',').[0]) <= step)) |> Array.map snd
            File.WriteAllLines(path, kept)

    /// Starts a new run folder: writes config.json, refusing a folder that already holds a run (nothing
    /// a user saved is overwritten).
    let create (dir: string) (s: Settings) =
        if File.Exists(configFile dir) || File.Exists(checkpointFile dir) then
            raise (IOException(sprintf "the run folder %s already holds a run; nothing was overwritten (resume it, or choose another folder)" dir))
        writeSettings dir s

    /// Records an evaluation in a run folder: the checkpoint (atomically) and its metrics row.
    let record (dir: string) (trainer: Trainer) (row: MetricsRow) =
        trainer.SaveCheckpoint(checkpointFile dir)
        appendMetrics dir row

    /// A trainer for a run folder's settings and the given task, with its checkpoint loaded.
    let openTrainerFor (dir: string) (task: TaskInfo) =
        let s = readSettings dir
        if not (File.Exists(checkpointFile dir)) then raise (CheckpointException(sprintf "%s holds no checkpoint (%s is missing)" dir (checkpointFile dir)))
        let t = new Trainer(s, Algorithms.find s.Algorithm, task)
        try
            t.LoadCheckpoint(checkpointFile dir)
            t
        with _ ->
            (t :> IDisposable).Dispose()
            reraise ()

    /// A trainer for a run folder of a built-in task, with its checkpoint loaded.
    let openTrainer (dir: string) = openTrainerFor dir (Tasks.find (readSettings dir).Env)
