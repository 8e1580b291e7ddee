module Maac.Cli.Program

open System
open Argu

/// Options of `bench`.
type BenchArgs =
    | Device of string
    | Threads of int
    | Reps of int
    | Env of string
    | Steps of int
    | Count_Ops
    | Shape of string
    | Algo of string
    | Config of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Count_Ops ->
                "also list the raw backend operations each workload runs per step (counted, by kind); with --env and --algo, each stage's matrix-product GFLOP."
            | Algo _ ->
                "with --env: time whole training steps of this algorithm (maac, sac, mbpo, steve, svg1) from a prepared state, stage by stage."
            | Config _ -> "with --env and --algo: the settings file to time (default: the task's settings for the algorithm)."
            | Shape _ ->
                "reference (default: the shapes of shared/bench/torch_maac_step.py) or tiny (the same operations on 4-unit networks: the host's cost per operation)."
            | Device _ ->
                "cpu (default), cuda or cuda:N: where the workloads run; ilgpu-cpu runs the GPU backend's kernels on ILGPU's CPU accelerator (slow, but counts kernel launches without a GPU)."
            | Threads _ -> "CPU threads to use (default: all cores)."
            | Reps _ -> "timed repetitions per workload (default 20)."
            | Env _ -> "instead of the learning workloads, time stepping this task (see `envs`), or with --algo training on it."
            | Steps _ -> "environment steps to time with --env (default 20000; with --algo 100, the first of them fitting the model)."

/// Options of `envs`.
type EnvsArgs =
    | Dump_Model of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Dump_Model _ ->
                "print the compiled physics of an MJCF file (or of a task's model, by task name) as JSON: masses, inertias, joint, geom and actuator parameters, time step."

/// Options of `train`.
type TrainArgs =
    | Env of string
    | Algo of string
    | Steps of int
    | Seed of int64
    | Out of string
    | Config of string
    | Resume of string
    | Threads of int
    | Device of string
    | Tensorboard of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Tensorboard _ -> "also log to TensorBoard: an event file in DIR/<run folder name> (view with: tensorboard --logdir DIR)."
            | Env _ -> "the task (see `envs`); needed unless --resume is given."
            | Algo _ -> "maac (default), sac, mbpo, steve or svg1."
            | Steps _ -> "environment steps (default: the task's budget in the settings)."
            | Seed _ -> "random seed (default 0)."
            | Out _ -> "run folder (default runs/ENV-ALGO-seedSEED); an existing run is never overwritten."
            | Config _ -> "a config.json whose settings replace the defaults (flags still win)."
            | Resume _ -> "continue the run in this folder from its checkpoint."
            | Threads _ -> "CPU threads (default: all cores)."
            | Device _ -> "cpu (default), cuda or cuda:N: where tensors live and are computed."

/// Options of `eval`.
type EvalArgs =
    | [<Mandatory>] Run of string
    | Episodes of int
    | Mpc
    | Device of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "a run folder written by train."
            | Episodes _ -> "evaluation episodes (default 10)."
            | Mpc -> "also evaluate with CEM planning through the learned model (the paper's Table 1 settings)."
            | Device _ -> "cpu (default), cuda or cuda:N."

/// Options of `export`.
type ExportArgs =
    | [<Mandatory>] Run of string
    | [<Mandatory>] Out of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "a run folder written by train."
            | Out _ -> "the .onnx file to write."

/// Options of `plot`.
type PlotArgs =
    | [<MainCommand; Mandatory>] Runs of string list
    | [<Mandatory>] Out of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Runs _ -> "run folders (runs of the same task and algorithm are averaged)."
            | Out _ -> "the PNG file to write."

/// Options of `experiment gradient-error`.
type GradientErrorArgs =
    | Seeds of int
    | Horizons of int
    | Samples of int
    | Model_Data of int
    | Out of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Seeds _ -> "seeds (default 5; each learns its own Q and model)."
            | Horizons _ -> "largest model horizon H (default 15)."
            | Samples _ -> "start states per estimate (default 4096)."
            | Model_Data _ -> "transitions the model is fitted on (default 1000; Q learns from 20000)."
            | Out _ -> "output folder (default experiments/gradient-error)."

/// Options of `experiment ablation` and `experiment compare`.
type RunsArgs =
    | [<Mandatory>] Env of string
    | Algos of string
    | Seeds of int
    | Steps of int
    | Config of string
    | Out of string
    | Launcher of string
    | Parallel of int
    | Threads of int
    | Partition of string
    | Time of string
    | Cpus_Per_Task of int
    | Gpus_Per_Task of int
    | Signal_Seconds of int
    | Sbatch_Arg of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Env _ -> "the task, or comma-separated tasks (see `envs`): one run per task, algorithm and seed."
            | Algos _ -> "comma-separated algorithms (ablation: maac,maac-h0,maac-td,maac-k1; compare: maac,sac,mbpo,steve,svg1)."
            | Seeds _ -> "seeds per algorithm (default 3)."
            | Steps _ -> "environment steps per run (default 3000; the task's full budget is in its settings, e.g. 5000 for Pendulum)."
            | Config _ -> "a settings file every run starts with (copied into the sweep folder; flags still win)."
            | Out _ -> "the sweep folder (default experiments/KIND-ENV); finished runs in it are reused, interrupted ones resumed."
            | Launcher _ -> "local (default: child processes here) or slurm (one sbatch array job; see docs/experiments.md)."
            | Parallel _ -> "local: runs at a time, each its own process (default: cores / 2)."
            | Threads _ -> "CPU threads per run (local default: cores / runs at a time; slurm default: --cpus-per-task)."
            | Partition _ -> "slurm: the partition (sbatch --partition)."
            | Time _ -> "slurm: each task's time limit (sbatch --time, e.g. 04:00:00); a task near it checkpoints and requeues itself."
            | Cpus_Per_Task _ -> "slurm: CPUs per task (default 2)."
            | Gpus_Per_Task _ -> "slurm: GPUs per task (sbatch --gpus-per-task)."
            | Signal_Seconds _ -> "slurm: seconds before the time limit at which a task is sent SIGTERM (default 120)."
            | Sbatch_Arg _ -> "slurm: a further sbatch argument, e.g. --sbatch-arg=--account=rl (repeatable)."

/// Options of `experiment status` and `experiment collect`.
type SweepFolderArgs =
    | [<MainCommand; Mandatory>] Folder of string

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Folder _ -> "a sweep folder (the --out of experiment compare or ablation)."

/// Options of `experiment mpc`.
type MpcArgs =
    | [<Mandatory>] Run of string
    | Episodes of int

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "a run folder of a model-based algorithm."
            | Episodes _ -> "evaluation episodes (default 10)."

/// Options of `experiment checkpoint-fuzz`.
type FuzzArgs =
    | [<Mandatory>] Run of string
    | Cases of int
    | Fuzz_Seed of int

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Run _ -> "a run folder whose checkpoint is corrupted (the folder itself is not changed)."
            | Cases _ -> "about how many corrupted copies to try (default 300)."
            | Fuzz_Seed _ -> "seed of the corruptions (default 0)."

/// Options of `experiment pendulum-optimum`.
type OptimumArgs =
    | Seeds of int
    | Episodes of int

    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Seeds _ -> "training seeds whose evaluation start states are used (default 3: seeds 0, 1, 2)."
            | Episodes _ -> "evaluation episodes per seed (default 10, as in training)."

/// The experiments.
type ExperimentCommand =
    | [<CliPrefix(CliPrefix.None)>] Gradient_Error of ParseResults<GradientErrorArgs>
    | [<CliPrefix(CliPrefix.None)>] Ablation of ParseResults<RunsArgs>
    | [<CliPrefix(CliPrefix.None)>] Mpc of ParseResults<MpcArgs>
    | [<CliPrefix(CliPrefix.None)>] Compare of ParseResults<RunsArgs>
    | [<CliPrefix(CliPrefix.None)>] Checkpoint_Fuzz of ParseResults<FuzzArgs>
    | [<CliPrefix(CliPrefix.None)>] Pendulum_Optimum of ParseResults<OptimumArgs>
    | [<CliPrefix(CliPrefix.None)>] Status of ParseResults<SweepFolderArgs>
    | [<CliPrefix(CliPrefix.None)>] Collect of ParseResults<SweepFolderArgs>

    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Gradient_Error _ -> "L1 error of the MAAC gradient vs H on the double integrator, true and learned dynamics (paper Figure 3)."
            | Ablation _ -> "MAAC, H = 0, without STEVE targets, single sample; several seeds; curves (paper Figure 4)."
            | Mpc _ -> "a run's checkpoint with and without CEM MPC at test time (paper Table 1)."
            | Compare _ -> "several algorithms over seeds on one figure (paper Figure 2)."
            | Checkpoint_Fuzz _ ->
                "corrupted copies of a run's checkpoint (truncations, bit flips, offsets, shapes, dtypes, NaN, swaps, re-signed edits) loaded as eval does: every one must be refused naming the file."
            | Status _ -> "each run of a sweep: pending, running, stopped, finished or failed, with the step reached (both launchers)."
            | Collect _ -> "a sweep's summary table and figures from its finished runs (both launchers)."
            | Pendulum_Optimum _ ->
                "near-optimal returns (dynamic programming) on the Pendulum evaluation episodes of each seed: the best a policy can score there."

/// The commands.
type Command =
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<BenchArgs>
    | [<CliPrefix(CliPrefix.None)>] Envs of ParseResults<EnvsArgs>
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<EvalArgs>
    | [<CliPrefix(CliPrefix.None)>] Plot of ParseResults<PlotArgs>
    | [<CliPrefix(CliPrefix.None)>] Export of ParseResults<ExportArgs>
    | [<CliPrefix(CliPrefix.None)>] Experiment of ParseResults<ExperimentCommand>

    interface IArgParserTemplate with
        member c.Usage =
            match c with
            | Bench _ -> "time one MAAC actor update and one ensemble training step (shapes of shared/bench/torch_maac_step.py)."
            | Envs _ -> "list the built-in tasks with their sizes, the definition each follows and whether it can run on this machine."
            | Train _ -> "train an agent on a task into a run folder."
            | Eval _ -> "evaluate a run folder's checkpoint."
            | Plot _ -> "draw learning curves of run folders (mean ± std across seeds)."
            | Export _ -> "write a run's deterministic policy as an ONNX model (observation → action), to run without Maac."
            | Experiment _ -> "the paper's analyses: gradient-error, ablation, mpc, compare."

/// `train --resume DIR`: continues a run as it was configured; flags that would change its meaning are refused.
let private resumeRun (t: ParseResults<TrainArgs>) (dir: string) =
    let s = Maac.Training.RunFolder.readSettings dir
    // A resumed run continues as configured: flags that would change its meaning are refused, not ignored.
    let conflicts =
        [
            match t.TryGetResult TrainArgs.Env with
            | Some e when (Maac.Envs.Tasks.find e).Name <> s.Env -> yield sprintf "--env %s (the run is on %s)" e s.Env
            | _ -> ()
            match t.TryGetResult Algo with
            | Some a when (Maac.Algorithms.Algorithms.find a).Name <> s.Algorithm -> yield sprintf "--algo %s (the run is %s)" a s.Algorithm
            | _ -> ()
            match t.TryGetResult Seed with
            | Some seed when seed <> s.Seed -> yield sprintf "--seed %d (the run's is %d)" seed s.Seed
            | _ -> ()
            if t.Contains TrainArgs.Config then
                yield "--config (the run's settings are its config.json)"
            if t.Contains TrainArgs.Out then
                yield "--out (the run's folder is the one resumed)"
        ]

    if not conflicts.IsEmpty then
        failwithf
            "--resume continues %s as it was configured; these flags would change it: %s. Start a new run with --out instead"
            dir
            (String.Join("; ", conflicts))

    TrainCommands.train s dir (Some(t.TryGetResult TrainArgs.Steps)) (t.TryGetResult TrainArgs.Tensorboard)

/// `train --env TASK`: a new run from the task's settings (or a settings file) into a new run folder.
let private newRun (t: ParseResults<TrainArgs>) =
    let requested =
        match t.TryGetResult TrainArgs.Env with
        | Some e -> e
        | None -> failwith "train needs --env (or --resume DIR)"

    let env = (Maac.Envs.Tasks.find requested).Name
    let algo = (Maac.Algorithms.Algorithms.find (t.GetResult(Algo, defaultValue = "maac"))).Name

    let baseSettings =
        match t.TryGetResult TrainArgs.Config with
        | Some file -> Maac.Training.RunFolder.readSettingsFileFor file (Some env) (Some algo)
        | None -> Maac.Algorithms.Settings.forTask env algo

    let s =
        { baseSettings with
            Env = env
            Algorithm = algo
            Steps = t.GetResult(TrainArgs.Steps, defaultValue = baseSettings.Steps)
            Seed = t.GetResult(Seed, defaultValue = baseSettings.Seed)
        }

    let out =
        t.GetResult(TrainArgs.Out, defaultValue = IO.Path.Combine("runs", sprintf "%s-%s-seed%d" env algo s.Seed))

    TrainCommands.train s out None (t.TryGetResult TrainArgs.Tensorboard)

/// `train`: a new run, or a resumed one with --resume.
let private train (t: ParseResults<TrainArgs>) =
    Maac.Tensors.Cpu.CpuSettings.Threads <- t.GetResult(TrainArgs.Threads, defaultValue = Environment.ProcessorCount)
    Maac.Tensors.Devices.select (t.GetResult(TrainArgs.Device, defaultValue = "cpu")) |> ignore

    match t.TryGetResult Resume with
    | Some dir -> resumeRun t dir
    | None -> newRun t

/// `experiment ablation|compare`: a sweep of tasks × algorithms × seeds, run here or as a Slurm array.
let private sweep (kind: string) (defaultAlgos: string) (r: ParseResults<RunsArgs>) =
    let list (text: string) =
        text.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
        |> List.ofArray

    let envs = list (r.GetResult RunsArgs.Env) |> List.map (fun e -> (Maac.Envs.Tasks.find e).Name)

    if envs.IsEmpty then
        failwith "--env names no task"

    let algos = list (r.GetResult(Algos, defaultValue = defaultAlgos))

    let out =
        r.GetResult(RunsArgs.Out, defaultValue = IO.Path.Combine("experiments", sprintf "%s-%s" kind (String.Join("+", envs))))

    let config = r.TryGetResult RunsArgs.Config
    // A bad file fails here, not in every run.
    config
    |> Option.iter (fun c ->
        for e in envs do
            for a in algos do
                Maac.Training.RunFolder.readSettingsFileFor c (Some e) (Some a) |> ignore)

    let seeds, steps =
        r.GetResult(RunsArgs.Seeds, defaultValue = 3), r.GetResult(RunsArgs.Steps, defaultValue = 3000)

    match r.GetResult(Launcher, defaultValue = "local") with
    | "local" ->
        let concurrent = r.GetResult(Parallel, defaultValue = Experiments.defaultParallel ())

        let threads =
            r.GetResult(RunsArgs.Threads, defaultValue = max 1 (Environment.ProcessorCount / max 1 concurrent))

        if concurrent < 1 || threads < 1 then
            failwith "--parallel and --threads must be at least 1"

        Experiments.sweep out envs algos seeds steps config threads (Experiments.Local concurrent)
    | "slurm" ->
        let cpus = r.GetResult(Cpus_Per_Task, defaultValue = 2)
        let signal = r.GetResult(Signal_Seconds, defaultValue = 120)

        if cpus < 1 then
            failwithf "--cpus-per-task must be at least 1, got %d" cpus

        if signal < 1 then
            failwithf "--signal-seconds must be at least 1, got %d" signal

        let slurm: Slurm.SlurmOptions =
            {
                Partition = r.TryGetResult Partition
                Time = r.TryGetResult Time
                CpusPerTask = cpus
                GpusPerTask = r.TryGetResult Gpus_Per_Task
                SignalSeconds = signal
                Extra = r.GetResults Sbatch_Arg
            }

        Experiments.sweep
            out
            envs
            algos
            seeds
            steps
            config
            (r.GetResult(RunsArgs.Threads, defaultValue = cpus))
            (Experiments.SlurmArray slurm)
    | other -> failwithf "--launcher must be local or slurm, got '%s'" other

/// `experiment gradient-error`: the paper's Figure 3.
let private gradientError (g: ParseResults<GradientErrorArgs>) =
    let d = Maac.Analysis.GradientErrorSettings.Default

    let s =
        { d with
            Seeds = g.GetResult(GradientErrorArgs.Seeds, defaultValue = d.Seeds)
            Horizons = g.GetResult(Horizons, defaultValue = d.Horizons)
            Samples = g.GetResult(Samples, defaultValue = d.Samples)
            ModelData = g.GetResult(Model_Data, defaultValue = d.ModelData)
        }

    Experiments.gradientError s (g.GetResult(GradientErrorArgs.Out, defaultValue = IO.Path.Combine("experiments", "gradient-error")))

/// `experiment pendulum-optimum`: the near-optimal Pendulum controller's evaluation returns.
let private pendulumOptimum (o: ParseResults<OptimumArgs>) =
    let grid = Maac.Analysis.PendulumGrid.Fine

    for seed in 0 .. o.GetResult(OptimumArgs.Seeds, defaultValue = 3) - 1 do
        let rs =
            Maac.Analysis.PendulumOptimum.evaluationReturns grid (int64 seed) (o.GetResult(OptimumArgs.Episodes, defaultValue = 10))

        printfn
            "seed %d: near-optimal evaluation return %.1f (episodes: %s)"
            seed
            (Array.average rs)
            (String.Join(" ", rs |> Array.map (sprintf "%.0f")))

    0

/// `export`: a run's deterministic policy as an ONNX model.
let private export (x: ParseResults<ExportArgs>) =
    use trainer = Maac.Training.RunFolder.loadTrainer (x.GetResult ExportArgs.Run)
    trainer.ExportOnnx(x.GetResult ExportArgs.Out)

    printfn
        "wrote %s: input '%s' [batch, %d], output '%s' [batch, %d] in the task's action space"
        (x.GetResult ExportArgs.Out)
        Maac.Persistence.OnnxExport.InputName
        trainer.ObservationDim
        Maac.Persistence.OnnxExport.OutputName
        trainer.ActionSpace.Dim

    0

/// `bench`: times the learning workloads at the reference (or tiny) shapes.
let private bench (b: ParseResults<BenchArgs>) =
    let threads = b.GetResult(BenchArgs.Threads, defaultValue = Environment.ProcessorCount)
    let reps = b.GetResult(Reps, defaultValue = 20)

    if threads < 1 then
        failwithf "--threads must be at least 1, got %d" threads

    if reps < 1 then
        failwithf "--reps must be at least 1, got %d" reps

    let device =
        match b.GetResult(BenchArgs.Device, defaultValue = "cpu") with
        | "ilgpu-cpu" ->
            Maac.Tensors.Backends.Default <- Maac.Cuda.Gpu.cpuSimulator ()
            Maac.Tensors.Device.Cuda 0
        | spec -> Maac.Tensors.Devices.select spec

    let shape =
        match b.GetResult(Shape, defaultValue = "reference") with
        | "reference" -> Bench.reference
        | "tiny" -> Bench.tiny
        | other -> failwithf "--shape must be reference or tiny, got '%s'" other

    Bench.run device threads reps (b.Contains Count_Ops) shape
    0

/// An error's message for the terminal: an ArgumentException's without the " (Parameter 'name')" that .NET appends to
/// it (the message already says which setting or option was wrong, in the command line's words).
let private readableMessage (e: exn) =
    match e with
    | :? ArgumentException as a when not (isNull a.ParamName) ->
        let suffix = sprintf " (Parameter '%s')" a.ParamName

        if a.Message.EndsWith suffix then
            a.Message.Substring(0, a.Message.Length - suffix.Length)
        else
            a.Message
    | _ -> e.Message

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Command>(programName = "maac")

    try
        let args = parser.ParseCommandLine(argv, raiseOnUsage = true)

        match args.GetSubCommand() with
        | Envs e ->
            match e.TryGetResult Dump_Model with
            | Some model -> EnvCommands.dumpModel model
            | None -> EnvCommands.list ()

            0
        | Train t -> train t
        | Eval e ->
            Maac.Tensors.Devices.select (e.GetResult(EvalArgs.Device, defaultValue = "cpu")) |> ignore
            TrainCommands.eval (e.GetResult EvalArgs.Run) (e.GetResult(EvalArgs.Episodes, defaultValue = 10)) (e.Contains EvalArgs.Mpc)
        | Plot p -> TrainCommands.plot (p.GetResult Runs) (p.GetResult PlotArgs.Out)
        | Export x -> export x
        | Experiment x ->
            match x.GetSubCommand() with
            | Gradient_Error g -> gradientError g
            | Ablation r -> sweep "ablation" "maac,maac-h0,maac-td,maac-k1" r
            | Compare r -> sweep "compare" "maac,sac,mbpo,steve,svg1" r
            | Pendulum_Optimum o -> pendulumOptimum o
            | ExperimentCommand.Mpc m -> Experiments.mpc (m.GetResult MpcArgs.Run) (m.GetResult(MpcArgs.Episodes, defaultValue = 10))
            | Status f -> Experiments.status (f.GetResult Folder)
            | Collect f -> Experiments.collect (f.GetResult Folder)
            | Checkpoint_Fuzz f ->
                Experiments.checkpointFuzz
                    (f.GetResult FuzzArgs.Run)
                    (f.GetResult(Cases, defaultValue = 300))
                    (f.GetResult(Fuzz_Seed, defaultValue = 0))
        | Bench b when b.Contains BenchArgs.Env && b.Contains BenchArgs.Algo ->
            Maac.Tensors.Cpu.CpuSettings.Threads <- b.GetResult(BenchArgs.Threads, defaultValue = Environment.ProcessorCount)

            StepBench.run
                (b.GetResult BenchArgs.Env)
                (b.GetResult BenchArgs.Algo)
                (b.TryGetResult BenchArgs.Config)
                (b.TryGetResult BenchArgs.Steps)
                (b.Contains Count_Ops)

            0
        | Bench b when b.Contains BenchArgs.Env ->
            EnvCommands.bench (b.GetResult BenchArgs.Env) (b.GetResult(BenchArgs.Steps, defaultValue = 20_000))
            0
        | Bench b -> bench b
    with
    | :? ArguParseException as e ->
        eprintfn "%s" e.Message
        if e.ErrorCode = ErrorCode.HelpText then 0 else 2
    | e ->
        eprintfn "error: %s" (readableMessage e)
        1
