/// A new MAAC variant composed in F# without touching the library: the model horizon grows with training
/// (1 step at first, the full H once the model has seen enough data) and the horizon is closed by the mean of
/// the twin critics minus half their disagreement, a milder pessimism than their minimum. Trained on Pendulum beside plain MAAC.
/// Usage: dotnet run --project examples/FSharpObjectiveVariant -c Release [-- steps]
module FSharpObjectiveVariant

open System
open Maac.Tensors
open Maac.Rl
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Envs

/// H grows by one every `every` steps after learning starts, up to the settings' ActorHorizon.
let growingHorizon (every: int) (s: Settings) (step: int) = min s.ActorHorizon (1 + max 0 (step - s.RandomSteps) / every)

/// Terminal value of states [N, o] given K actions at each [K, N, a]: the mean of the two critics (each averaged over
/// the K actions) minus κ times half their absolute difference. κ = 1 is min(Q1, Q2) (MAAC's choice), κ = 0 their mean.
let pessimistic (kappa: float32) (critics: Critics) (states: Tensor) (actions: Tensor) =
    let q1, q2 = Critics.bothOverActions critics states actions
    0.5f * (q1 + q2) - (0.5f * kappa) * Tensor.abs (q1 - q2)

/// The variant as data: MAAC with two parts replaced.
let variant =
    { Algorithms.maac with
        Name = "maac-growing-k0.5"
        ActorHorizon = growingHorizon 500
        ActorObjective =
            fun inputs policy ->
                let parts =
                    { Objectives.maacParts inputs.Context inputs.Critics policy with
                        Terminal = pessimistic 0.5f inputs.Critics
                    }

                Objectives.pathwiseWith inputs.Choices inputs.Gamma inputs.Horizon parts inputs.Alpha inputs.Key inputs.Observations
    }

let train (algorithm: Algorithm) (steps: int) =
    let settings =
        { Settings.forTask "Pendulum" "maac" with Steps = steps; Seed = 1L; EvalEvery = max 1 (steps / 4) }

    use trainer = new Trainer(settings, algorithm, Tasks.find "Pendulum")

    trainer.Run(
        steps,
        ignore,
        (fun row -> printfn "%-18s step %5d: evaluation return %8.1f ± %.1f" algorithm.Name row.Step row.EvalReturnMean row.EvalReturnStd),
        Threading.CancellationToken.None
    )

    (trainer.Metrics |> List.last).EvalReturnMean

[<EntryPoint>]
let main argv =
    let steps = if argv.Length > 0 then int argv.[0] else 3000
    // κ = 1 must reproduce MAAC's min(Q1, Q2): a check that the formula is right before training with κ = 0.5.
    let critics = Critics.init (RandomKey.ofSeed 3L) 3 1 [| 8 |]
    let s, a = Tensor.randn (RandomKey.ofSeed 4L) [| 5; 3 |], Tensor.randn (RandomKey.ofSeed 5L) [| 5; 1 |]

    // The terminal value takes K actions per state ([K, N, a]); here K = 1.
    let gap =
        Tensor.abs (pessimistic 1.0f critics s (Tensor.unsqueeze 0 a) - Critics.minQ critics s a)
        |> Tensor.sum
        |> Tensor.toScalar

    printfn "κ = 1 value vs min(Q1, Q2) on 5 random pairs: total |difference| %.2g" gap
    let plain = train Algorithms.maac steps
    let composed = train variant steps
    printfn "after %d steps: MAAC %.1f, %s %.1f" steps plain variant.Name composed

    if Double.IsFinite plain && Double.IsFinite composed && gap < 1e-4f then
        0
    else
        1
