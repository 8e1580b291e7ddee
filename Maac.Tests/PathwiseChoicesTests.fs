/// The pathwise actor objective's choices (where the K samples are drawn, which actions pay entropy, model noise in
/// the paths): hand-computed values on a deterministic toy path, the shapes each choice hands its parts, and the
/// gradient of every combination through a learned model against finite differences.
module Maac.Tests.PathwiseChoicesTests

open Expecto
open Maac.Tensors
open Maac.Nn
open Maac.Rl
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Tests.Support

/// A deterministic one-dimensional path: the action is always 1 with log π = the state, s' = s + a, r = s, and the
/// terminal value 10·s whatever the action (so K actions at the horizon average to the same). Every call's
/// (part, copies and states' shape for the policy, states' shape for the model, terminal action shape) is recorded.
let private toyParts (calls: ResizeArray<string * int[]>) =
    {
        Act =
            fun _ copies s ->
                calls.Add(("act", Array.append [| copies |] s.Shape))
                let repeated = Tensor.repeatRows copies s
                Tensor.fullLike repeated 1.0f, Tensor.squeeze -1 repeated
        Step =
            fun _ s a ->
                calls.Add(("step", s.Shape))
                s + a, Tensor.squeeze -1 s, Tensor.zeros [| s.Shape.[0] |]
        Terminal =
            fun s a ->
                calls.Add(("terminal", a.Shape))
                10.0f * Tensor.squeeze -1 s
    }

let private lossOf (choices: PathwiseChoices) (calls: ResizeArray<string * int[]>) =
    let start = Tensor.ofArray [| 2; 1 |] [| 1.0f; 1.0f |]

    Objectives.pathwiseWith choices 0.5f 2 (toyParts calls) 0.1f (key 1) start
    |> Tensor.toScalar
    |> float

let tests =
    testList
        "pathwise choices"
        [
            test "entropy at every step or only for the first action, on a hand-computed path" {
                // γ = 0.5, α = 0.1, H = 2 from s₀ = 1: states 1, 2, 3; rewards 1, 2; log π = the state; terminal 30.
                // Every step: (1 − 0.1) + 0.5·(2 − 0.2) + 0.25·(30 − 0.3) = 9.225.
                // First action: (1 − 0.1) + 0.5·2 + 0.25·30 = 9.4 (no entropy on the terminal value).
                let every = lossOf (Objectives.wholePaths 1) (ResizeArray())
                let first = lossOf { Objectives.wholePaths 1 with Entropy = FirstAction } (ResizeArray())
                Expect.floatClose Accuracy.high every -9.225 "entropy at every step"
                Expect.floatClose Accuracy.high first -9.4 "entropy for the first action only"
            }

            test "K whole paths tile the starts; K actions at the horizon keep one path and hand the terminal K actions" {
                let paths = ResizeArray()
                let atHorizon = ResizeArray()
                let whole = lossOf (Objectives.wholePaths 3) paths
                let last = lossOf { Objectives.wholePaths 3 with Placement = ActionsAtHorizon } atHorizon

                let shapes (part: string) (calls: ResizeArray<string * int[]>) =
                    calls |> Seq.filter (fst >> (=) part) |> Seq.map snd |> List.ofSeq

                Expect.equal (shapes "step" paths) [ [| 6; 1 |]; [| 6; 1 |] ] "3 paths for each of 2 starts"
                // The policy gets the 2 starts once, with 3 copies (its head once per start), then each path's state.
                Expect.equal (shapes "act" paths) [ [| 3; 2; 1 |]; [| 1; 6; 1 |]; [| 1; 6; 1 |] ] "the policy's states"
                Expect.equal (shapes "terminal" paths) [ [| 1; 6; 1 |] ] "one terminal action per path"
                Expect.equal (shapes "step" atHorizon) [ [| 2; 1 |]; [| 2; 1 |] ] "one path per start"
                Expect.equal (shapes "act" atHorizon |> List.last) [| 3; 2; 1 |] "3 actions drawn at each last state"
                Expect.equal (shapes "terminal" atHorizon) [ [| 3; 2; 1 |] ] "the terminal sees the 3 actions of each state"
                // The toy path is deterministic, so both placements estimate the same return.
                Expect.floatClose Accuracy.high last whole "same value on a deterministic path"
            }

            test "the critics are averaged over the K terminal actions before the minimum" {
                let critics = Critics.init (key 2) 3 1 [| 8 |]
                let s = uniform 3 [| 4; 3 |] -1.0f 1.0f
                let a = uniform 4 [| 5; 4; 1 |] -1.0f 1.0f

                let q1s, q2s =
                    Array.init 5 (fun k -> Critics.both critics s (Tensor.slice 0 k 1 a |> Tensor.squeeze 0))
                    |> Array.unzip

                let mean (qs: Tensor[]) = (Array.reduce (+) qs / 5.0f).ToArray()
                let expected = Array.map2 min (mean q1s) (mean q2s)
                let got = (Critics.minOfMeans critics s a).ToArray()

                // Means over 5 actions in another summation order: float32 rounding only.
                expectAllClose { absolute = 1e-6; relative = 1e-5 } "min of the means" got expected
            }

            test "H = 0, K = 1: every placement and entropy choice is SAC's actor loss exactly" {
                let policy = TanhGaussianPolicy.init (key 5) 3 1 [| 16 |]
                let critics = Critics.init (key 6) 3 1 [| 16 |]
                let obs = uniform 7 [| 12; 3 |] -1.0f 1.0f
                let reference = Objectives.maac 0.99f 0 1 None critics 0.2f (key 8) obs policy |> Tensor.toScalar

                for placement in [ WholePaths; ActionsAtHorizon ] do
                    for entropy in [ EveryStep; FirstAction ] do
                        let choices = { Samples = 1; Placement = placement; Entropy = entropy }
                        let v = Objectives.maacWith choices 0.99f 0 None critics 0.2f (key 8) obs policy |> Tensor.toScalar
                        Expect.equal v reference (sprintf "%A, %A" placement entropy)
            }

            test "every combination's gradient through a learned model matches finite differences" {
                let ctx = RlTests.fittedPendulumModel 50
                let policy = TanhGaussianPolicy.init (key 51) 3 1 [| 16 |]
                let policy = { policy with Net = { policy.Net with Hidden = Activation.Tanh } }
                let c = Critics.init (key 52) 3 1 [| 16 |]

                let critics =
                    { Q1 = { c.Q1 with Hidden = Activation.Tanh }; Q2 = { c.Q2 with Hidden = Activation.Tanh } }

                let obs = uniform 53 [| 8; 3 |] -1.0f 1.0f

                for placement in [ WholePaths; ActionsAtHorizon ] do
                    for entropy in [ EveryStep; FirstAction ] do
                        for noise in [ SampledNoise; MeanPath ] do
                            let choices = { Samples = 3; Placement = placement; Entropy = entropy }
                            let ctx = { ctx with PathNoise = noise }

                            checkGradient
                                (sprintf "maac objective H=2 K=3 %A %A %A" placement entropy noise)
                                (fun ts ->
                                    Objectives.maacWith choices 0.99f 2 (Some ctx) critics 0.2f (key 54) obs (Parameters.rebuild policy ts))
                                (Parameters.tensors policy)
                                55
            }

            test "settings name the choices; unknown values are refused naming the setting and the values allowed" {
                let s = Settings.forTask "Pendulum" "maac"
                let c = Settings.pathwiseChoices { s with ActorSamplesAt = "horizon"; ActorEntropy = "first-action" } 4
                Expect.equal c { Samples = 4; Placement = ActionsAtHorizon; Entropy = FirstAction } "horizon, first action"
                Expect.equal (Settings.pathNoise { s with PathNoise = "mean" }) MeanPath "mean paths"
                let problems = Settings.problems { s with ActorSamplesAt = "ends"; PathNoise = "none" }
                Expect.contains problems "ActorSamplesAt must be one of 'paths', 'horizon', got 'ends'" "placement refused"
                Expect.contains problems "PathNoise must be one of 'sampled', 'mean', got 'none'" "noise refused"
            }
        ]
