/// A sweep's folder: its plan (one run per algorithm, seed and task, in sweep.tsv), each run's status (status/N.txt,
/// written by whichever launcher ran it) and the run folders themselves. Launchers write it; `experiment status` and
/// `experiment collect` read it the same way whichever launcher ran the sweep.
module Maac.Cli.Sweep

open System
open System.IO
open Maac.Algorithms
open Maac.Persistence
open Maac.Training

/// One training run of a sweep and its run folder (absolute).
type RunSpec = { Index: int; Env: string; Algorithm: string; Seed: int; Steps: int; Folder: string }

/// What a sweep's runs share: the settings file each run is started with (a copy inside the sweep folder) and the
/// CPU threads of each run.
type SweepOptions = { Config: string option; Threads: int }

let planFile (dir: string) = Path.Combine(dir, "sweep.tsv")
let settingsCopy (dir: string) = Path.Combine(dir, "settings.json")
let statusFile (dir: string) (index: int) = Path.Combine(dir, "status", sprintf "%d.txt" index)
let slurmJobFile (dir: string) = Path.Combine(dir, "slurm-job")

[<Literal>]
let private PlanHeader = "index\tenv\talgorithm\tseed\tsteps\tfolder"

/// The runs of a sweep: every task × algorithm × seed, each in DIR/TASK-ALGORITHM-seedN.
let plan (dir: string) (envs: string list) (algorithms: string list) (seeds: int) (steps: int) =
    let dir = Path.GetFullPath dir

    [
        for env in envs do
            let task = Maac.Envs.Tasks.find env

            for a in algorithms do
                let name = (Algorithms.find a).Name
                for seed in 0 .. seeds - 1 -> task.Name, name, seed
    ]
    |> List.mapi (fun i (env, algo, seed) ->
        {
            Index = i
            Env = env
            Algorithm = algo
            Seed = seed
            Steps = steps
            Folder = Path.Combine(dir, sprintf "%s-%s-seed%d" env algo seed)
        })

/// Writes sweep.tsv (folders relative to the sweep folder) and the copy of the settings file. A sweep folder holding
/// another plan is refused, so that a second sweep never mixes its runs with the first's.
let writePlan (dir: string) (runs: RunSpec list) (config: string option) =
    Directory.CreateDirectory(Path.Combine(dir, "status")) |> ignore

    let text =
        String.Join(
            "\n",
            PlanHeader
            :: (runs
                |> List.map (fun r -> sprintf "%d\t%s\t%s\t%d\t%d\t%s" r.Index r.Env r.Algorithm r.Seed r.Steps (Path.GetFileName r.Folder)))
        )
        + "\n"

    // The same runs with another budget continue the sweep (each run resumes to the new --steps); other runs refuse.
    let withoutSteps (plan: string) =
        plan.Split('\n')
        |> Array.map (fun line ->
            match line.Split('\t') with
            | [| index; env; algo; seed; _; folder |] -> String.Join("\t", [| index; env; algo; seed; folder |])
            | _ -> line)

    if File.Exists(planFile dir) && withoutSteps (File.ReadAllText(planFile dir)) <> withoutSteps text then
        failwithf "%s already holds another sweep (%s differs: other tasks, algorithms or seeds); choose another --out" dir (planFile dir)

    File.WriteAllText(planFile dir, text)

    match config with
    | Some file ->
        let copy = settingsCopy dir
        let content = File.ReadAllText file

        if File.Exists copy && File.ReadAllText copy <> content then
            failwithf "%s was started with other settings (%s differs from %s); choose another --out" dir copy file

        File.WriteAllText(copy, content)
    | None -> ()

/// The runs of a sweep folder, read from its sweep.tsv.
let readPlan (dir: string) =
    let dir = Path.GetFullPath dir
    let file = planFile dir

    if not (File.Exists file) then
        failwithf "%s is not a sweep folder: %s is missing (start one with experiment compare or ablation)" dir file

    let lines = File.ReadAllLines file |> Array.filter (fun l -> l.Trim() <> "")

    if lines.Length = 0 || lines.[0] <> PlanHeader then
        failwithf "%s does not start with the line '%s'" file (PlanHeader.Replace("\t", "<tab>"))

    lines.[1..]
    |> Array.mapi (fun i l ->
        match l.Split('\t') with
        | [| index; env; algo; seed; steps; folder |] ->
            let number (what: string) (t: string) =
                match Int32.TryParse t with
                | true, v -> v
                | _ -> failwithf "%s, line %d: %s is '%s', not a number" file (i + 2) what t

            {
                Index = number "the index" index
                Env = env
                Algorithm = algo
                Seed = number "the seed" seed
                Steps = number "the steps" steps
                Folder = Path.Combine(dir, folder)
            }
        | parts -> failwithf "%s, line %d has %d columns, expected 6" file (i + 2) parts.Length)
    |> Array.toList

/// The arguments of `maac` that start one sweep run.
let startArguments (options: SweepOptions) (r: RunSpec) =
    [
        "train"
        "--env"
        r.Env
        "--algo"
        r.Algorithm
        "--seed"
        string r.Seed
        "--steps"
        string r.Steps
        "--out"
        r.Folder
        "--threads"
        string options.Threads
    ]
    @ (match options.Config with
       | Some c -> [ "--config"; c ]
       | None -> [])

/// The arguments of `maac` that continue one sweep run from its folder.
let resumeArguments (options: SweepOptions) (r: RunSpec) =
    [
        "train"
        "--env"
        r.Env
        "--resume"
        r.Folder
        "--steps"
        string r.Steps
        "--threads"
        string options.Threads
    ]

/// Whether a run's folder holds a run to continue (a checkpoint, or the config.json of a run killed before its first).
let hasRun (r: RunSpec) = File.Exists(RunFolder.checkpointFile r.Folder) || File.Exists(RunFolder.configFile r.Folder)

/// The arguments of `maac` for one sweep run now: start it, or resume it when its folder holds a run.
let trainArguments (options: SweepOptions) (r: RunSpec) =
    if hasRun r then
        resumeArguments options r
    else
        startArguments options r

/// The step a run folder's checkpoint has reached (metrics.csv agrees with it), 0 without one.
let stepReached (r: RunSpec) =
    if File.Exists(RunFolder.metricsFile r.Folder) then
        RunFolder.readRows r.Folder
        |> Array.tryLast
        |> Option.map (fun row -> row.Step)
        |> Option.defaultValue 0
    else
        0

/// Whether a run folder holds a finished run of its steps.
let finished (r: RunSpec) = File.Exists(RunFolder.checkpointFile r.Folder) && stepReached r >= r.Steps

/// Writes a run's status line (the launchers' record: "running ...", then "exit CODE ...").
let writeStatus (dir: string) (index: int) (line: string) =
    let file = statusFile dir index
    Directory.CreateDirectory(Path.GetDirectoryName file) |> ignore
    File.WriteAllText(file + ".tmp", line + "\n")
    File.Move(file + ".tmp", file, true)

/// A run's last status line, if a launcher has written one.
let readStatus (dir: string) (index: int) =
    let file = statusFile dir index

    if File.Exists file then
        Some((File.ReadAllText file).Trim())
    else
        None

/// The exit code a status line records ("exit CODE ..."), if it records one.
let exitCode (status: string) =
    match status.Split(' ', StringSplitOptions.RemoveEmptyEntries) with
    | [||] -> None
    | parts when parts.[0] = "exit" && parts.Length > 1 ->
        match Int32.TryParse parts.[1] with
        | true, c -> Some c
        | _ -> None
    | _ -> None

/// Exit codes of `train` stopped by a signal (SIGINT 130, SIGTERM 143) after writing its checkpoint.
let stoppedBySignal (code: int) = code = 130 || code = 143
