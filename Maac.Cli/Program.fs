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

/// The commands.
type Command =
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<BenchArgs>
    | [<CliPrefix(CliPrefix.None); SubCommand>] Envs
    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Bench _ -> "time one MAAC actor update and one ensemble training step (shapes of shared/bench/torch_maac_step.py)."
            | Envs -> "list the built-in tasks with their sizes and whether they can run on this machine."

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Command>(programName = "maac")
    try
        let args = parser.ParseCommandLine(argv, raiseOnUsage = true)
        match args.GetSubCommand() with
        | Envs ->
            EnvCommands.list ()
            0
        | Bench b when b.Contains Env ->
            EnvCommands.bench (b.GetResult Env) (b.GetResult(Steps, defaultValue = 20_000))
            0
        | Bench b ->
            let threads = b.GetResult(Threads, defaultValue = Environment.ProcessorCount)
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
