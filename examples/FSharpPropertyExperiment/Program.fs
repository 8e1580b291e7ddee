/// A property-based experiment a user might write with FsCheck: on the double integrator with its true
/// (linear) dynamics in place of a learned model, is the MAAC gradient a descent direction of the MAAC
/// objective for every policy, horizon and sample count? With the random draws held fixed (the same key),
/// the objective is a smooth function of the policy's parameters, so a short step against the gradient must
/// lower it by about step·|∇| (first-order Taylor), far above float32 rounding for the step used here.
/// Usage: dotnet run --project examples/FSharpPropertyExperiment -c Release [-- cases]
module FSharpPropertyExperiment

open System
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Nn
open Maac.Rl
open Maac.Envs

/// The double integrator's exact step as pathwise-objective parts: s' = A s + B u, reward −½(sᵀs + u²).
let trueStep (_: RandomKey) (s: Tensor) (u: Tensor) =
    let a =
        Tensor.ofArray [| 2; 2 |] (DoubleIntegrator.A |> Seq.cast<float> |> Seq.map float32 |> Seq.toArray)

    let b =
        Tensor.ofArray [| 1; 2 |] [| float32 DoubleIntegrator.B.[0, 0]; float32 DoubleIntegrator.B.[1, 0] |]

    let next = Tensor.matmulWith false true s a None + Tensor.matmul u b
    let reward = (DoubleIntegrator.Functions.Reward.Value) s u next
    next, reward, Tensor.zerosLike reward

/// One experiment case: seeds for the policy, start states and noise; the horizon and samples.
type Case = { Seed: int; Horizon: int; Samples: int }

let cases =
    gen {
        let! seed = Gen.choose (0, 1_000_000)
        let! horizon = Gen.choose (1, 6)
        let! samples = Gen.choose (1, 3)
        return { Seed = seed; Horizon = horizon; Samples = samples }
    }
    |> Arb.fromGen

/// Objective before and after a step of length 1e-2 against the gradient (in parameter space).
let descent (c: Case) =
    let key = RandomKey.ofSeed (int64 c.Seed)
    let ks = RandomKey.split 4 key
    let policy = TanhGaussianPolicy.init ks.[0] 2 1 [| 16; 16 |]
    let critics = Critics.init ks.[1] 2 1 [| 16; 16 |]
    let starts = Tensor.rand ks.[2] [| 32; 2 |] * 2.0f - 1.0f

    let objective (p: TanhGaussianPolicy) =
        let parts = { Objectives.maacParts None critics p with Step = trueStep }
        Objectives.pathwise 0.99f c.Horizon c.Samples parts 0.1f ks.[3] starts

    let value, grad = Diff.valueAndGradParams objective policy

    let norm =
        Parameters.tensors grad |> Array.sumBy (fun g -> Tensor.sum (g * g) |> Tensor.toScalar) |> sqrt

    let stepped = Parameters.map2 (fun p g -> p - (1e-2f / norm) * g) policy grad
    Tensor.toScalar value, Tensor.toScalar (objective stepped), norm

[<EntryPoint>]
let main argv =
    let count = if argv.Length > 0 then int argv.[0] else 100

    let property (c: Case) =
        let before, after, norm = descent c
        // First order: after ≈ before − 1e-2·|∇|; demand at least a quarter of that decrease.
        (after <= before - 0.25f * 1e-2f * norm)
        |> Prop.label (sprintf "H=%d K=%d: %.6f → %.6f (|∇| = %.4f)" c.Horizon c.Samples before after norm)

    let config = Config.QuickThrowOnFailure.WithMaxTest(count)

    try
        Check.One(config, Prop.forAll cases property)
        printfn "the MAAC gradient was a descent direction in all %d cases" count
        0
    with e ->
        eprintfn "%s" e.Message
        1
