module Maac.Cli.Program

open System
open Argu

/// Options of `bench`.
type BenchArgs =
    | Threads of int
    | Reps of int
    | Env of string
    | Steps of int
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Threads _ -> "CPU threads to use (default: all cores)."
            | Reps _ -> "timed repetitions per workload (default 20)."
            | Env _ -> "instead of the learning workloads, time stepping this task (see `envs`)."
            | Steps _ -> "environment steps to time with --env (default 20000)."

/// Options of `train`.
type TrainArgs =
    | [<Mandatory>] Env of string
    | Algo of string
    | Steps of int
    | Seed of int64
    | Out of string
    | Config of string
    | Resume of string
    | Threads of int
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Env _ -> "the task (see `envs`)."
            | Algo _ -> "maac (default), sac, mbpo, steve or svg1."
            | Steps _ -> "environment steps (default: the task's budget in the settings)."
            | Seed _ -> "random seed (default 0)."
            | Out _ -> "run folder (default runs/ENV-ALGO-seedSEED); an existing run is never overwritten."
            | Config _ -> "a config.json whose settings replace the defaults (flags still win)."
            | Resume _ -> "continue the run in this folder from its checkpoint."
            | Threads _ -> "CPU threads (default: all cores)."

/// Options of `eval`.
type EvalArgs =
    | [<Mandatory>] Run of string
    | Episodes of int
    | Mpc
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "a run folder written by train."
            | Episodes _ -> "evaluation episodes (default 10)."
            | Mpc -> "also evaluate with CEM planning through the learned model (the paper's Table 1 settings)."

/// Options of `plot`.
type PlotArgs =
    | [<MainCommand; Mandatory>] Runs of string list
    | [<Mandatory>] Out of string
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Runs _ -> "run folders (runs of the same task and algorithm are averaged)."
            | Out _ -> "the PNG file to write."

/// The commands.
type Command =
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<BenchArgs>
    | [<CliPrefix(CliPrefix.None); SubCommand>] Envs
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<EvalArgs>
    | [<CliPrefix(CliPrefix.None)>] Plot of ParseResults<PlotArgs>
    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Bench _ -> "time one MAAC actor update and one ensemble training step (shapes of shared/bench/torch_maac_step.py)."
            | Envs -> "list the built-in tasks with their sizes and whether they can run on this machine."
            | Train _ -> "train an agent on a task into a run folder."
            | Eval _ -> "evaluate a run folder's checkpoint."
            | Plot _ -> "draw learning curves of run folders (mean ± std across seeds)."

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Command>(programName = "maac")
    try
        let args = parser.ParseCommandLine(argv, raiseOnUsage = true)
        match args.GetSubCommand() with
        | Envs ->
            EnvCommands.list ()
            0
        | Train t ->
            Maac.Tensors.Cpu.CpuSettings.Threads <- t.GetResult(TrainArgs.Threads, defaultValue = Environment.ProcessorCount)
            match t.TryGetResult Resume with
            | Some dir ->
                let s = Maac.Algorithms.RunFolder.readSettings dir
                let s = { s with Steps = t.GetResult(TrainArgs.Steps, defaultValue = s.Steps) }
                TrainCommands.train s dir true
            | None ->
                let env = (Maac.Envs.Tasks.find (t.GetResult TrainArgs.Env)).Name
                let algo = (Maac.Algorithms.Algorithms.find (t.GetResult(Algo, defaultValue = "maac"))).Name
                let baseSettings =
                    match t.TryGetResult Config with
                    | Some file -> Maac.Algorithms.RunFolder.readSettingsFile file
                    | None -> Maac.Algorithms.Settings.forTask env algo
                let s =
                    { baseSettings with
                        Env = env; Algorithm = algo
                        Steps = t.GetResult(TrainArgs.Steps, defaultValue = baseSettings.Steps)
                        Seed = t.GetResult(Seed, defaultValue = baseSettings.Seed) }
                let out = t.GetResult(TrainArgs.Out, defaultValue = IO.Path.Combine("runs", sprintf "%s-%s-seed%d" env algo s.Seed))
                TrainCommands.train s out false
        | Eval e -> TrainCommands.eval (e.GetResult Run) (e.GetResult(Episodes, defaultValue = 10)) (e.Contains Mpc)
        | Plot p -> TrainCommands.plot (p.GetResult Runs) (p.GetResult PlotArgs.Out)
        | Bench b when b.Contains BenchArgs.Env ->
            EnvCommands.bench (b.GetResult BenchArgs.Env) (b.GetResult(BenchArgs.Steps, defaultValue = 20_000))
            0
        | Bench b ->
            let threads = b.GetResult(BenchArgs.Threads, defaultValue = Environment.ProcessorCount)
            let reps = b.GetResult(Reps, defaultValue = 20)
            if threads < 1 then failwithf "--threads must be at least 1, got %d" threads
            if reps < 1 then failwithf "--reps must be at least 1, got %d" reps
            Bench.run threads reps Bench.reference
            0
    with
    | :? ArguParseException as e ->
        eprintfn "%s" e.Message
        if e.ErrorCode = ErrorCode.HelpText then 0 else 2
    | e ->
        eprintfn "error: %s" e.Message
        1
