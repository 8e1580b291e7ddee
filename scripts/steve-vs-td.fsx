// How far the clipped STEVE target is from the one-step TD target for a run's agent: both computed on the same
// draws, on three batches of the run's buffers (5% real, as in training). Usage, after building the CLI:
//   dotnet build Maac.Cli -c Release && dotnet fsi scripts/steve-vs-td.fsx RUN_DIR
#r "../Maac.Cli/bin/Release/net10.0/System.Numerics.Tensors.dll"
#r "../Maac.Cli/bin/Release/net10.0/Maac.Core.dll"

open Maac.Tensors
open Maac.Rl
open Maac.Training

let runDir =
    fsi.CommandLineArgs
    |> Array.tryItem 1
    |> Option.defaultWith (fun () -> failwith "usage: steve-vs-td.fsx RUN_DIR")

Maac.Tensors.Cpu.CpuSettings.Threads <- 1
let trainer = RunFolder.loadTrainer runDir
let settings, state, agent = trainer.Settings, trainer.State, trainer.State.Agent
let space = trainer.ActionSpace

let ctx: ModelContext =
    {
        Model = agent.Model
        Task = trainer.Task.Functions
        ActionLow = Tensor.ofArray [| space.Dim |] space.Low
        ActionHigh = Tensor.ofArray [| space.Dim |] space.High
        PathNoise = Maac.Algorithms.Settings.pathNoise settings
    }

let alpha = Tensor.toScalar (Tensor.exp agent.Temperature.LogAlpha)
let real = max 1 (int (round (float32 settings.BatchSize * settings.RealFraction)))

for seed in 1L .. 3L do
    let k = RandomKey.ofSeed seed

    let b =
        Batch.append (state.Real.Sample(RandomKey.fold 1L k, real)) (state.Imagined.Sample(RandomKey.fold 2L k, settings.BatchSize - real))

    let td =
        (Targets.td settings.Gamma agent.Policy agent.TargetCritics alpha (RandomKey.fold 3L k) b).ToArray()

    let steve =
        (Targets.steve settings.Gamma settings.CriticHorizon ctx agent.Policy agent.TargetCritics alpha (RandomKey.fold 3L k) b).ToArray()

    let diffs = Array.map2 (fun (x: float32) (y: float32) -> abs (float x - float y)) td steve
    let relative = Array.map2 (fun d (x: float32) -> d / max 1e-6 (abs (float x))) diffs td

    printfn
        "batch %d: max |STEVE - TD| %.3g, max relative %.3g, mean |TD| %.3g, rows that differ %d of %d"
        seed
        (Array.max diffs)
        (Array.max relative)
        (td |> Array.averageBy (fun x -> abs (float x)))
        (diffs |> Array.filter (fun d -> d > 0.0) |> Array.length)
        diffs.Length
