/// The paper's gradient analysis as properties over random linear-quadratic problems: the exact policy
/// gradient, the MAAC estimate's unbiasedness with exact Q and true dynamics, and the bounds on its error
/// when Q's action-gradient or the model's derivatives are off (derivations in docs/gradient-error.md).
module Maac.Tests.AnalysisTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Nn
open Maac.Rl
open Maac.Analysis
open Maac.Tests.Support

/// A random problem from a seed: n states, m actions, stable closed loop (ρ(A + BK) < 0.95, γρ² < 0.9),
/// positive-definite Q and R, γ in [0.5, 0.95], policy noise σ in [0.05, 0.5], start state N(0, 1).
let randomProblem (seed: int) =
    let rec attempt (s: int) =
        let ks = RandomKey.split 8 (RandomKey.ofSeed (int64 s))
        let draw (i: int) r c (scale: float32) = Mat.ofTensor (Tensor.randn ks.[i] [| r; c |] * scale)
        let n = 2 + (abs s % 2)
        let m = 1 + (abs (s / 2) % 2)
        let uniform01 (i: int) = float ((Tensor.rand ks.[i] [| 1 |]).ToArray().[0])
        let a = Mat.add (Mat.scale 0.6 (Mat.identity n)) (draw 0 n n 0.35f)
        let b = draw 1 n m 0.5f
        let k = draw 2 m n 0.3f
        let spd (i: int) d = let l = draw i d d 0.5f in Mat.add (Mat.mul l (Mat.transpose l)) (Mat.scale 0.1 (Mat.identity d))

        let p =
            {
                A = a
                B = b
                Q = spd 3 n
                R = spd 4 m
                Gamma = 0.5 + 0.45 * uniform01 5
                NoiseStd = 0.05 + 0.45 * uniform01 6
                Start = (Tensor.randn ks.[7] [| n |]).ToArray() |> Array.map float
            }

        let rho = Mat.spectralRadius (LinearQuadratic.closedLoop p k)

        if rho < 0.95 && p.Gamma * rho * rho < 0.9 then
            p, k
        else
            attempt (s + 1_000_003)

    attempt seed

/// A boolean property with a label shown when it fails.
let private holds (label: string) (ok: bool) = ok |> Prop.label label

let private problems = Arb.fromGen (Gen.choose (0, 1_000_000))

let private problemsAndHorizons =
    Arb.fromGen (
        gen {
            let! seed = Gen.choose (0, 1_000_000)
            let! h = Gen.choose (0, 6)
            return seed, h
        }
    )

let private toTensor (rows: float[][]) = Tensor.ofArray [| rows.Length; rows.[0].Length |] (rows |> Array.concat |> Array.map float32)

/// The estimate with exact Q and true dynamics, from `batches` independent batches of block starts.
let private batchEstimates (p: LqProblem) (k: float[,]) (h: int) (seed: int) (batches: int) (perBatch: int) =
    let w = LinearQuadratic.qWeights p k

    Array.init batches (fun b ->
        let kb = RandomKey.fold (int64 b) (key seed)
        let k1, k2 = RandomKey.split2 kb
        let starts = LinearQuadratic.sampleBlockStarts p k h k1 perBatch |> toTensor
        PathwiseGradient.estimate p h (PathwiseGradient.trueStep p) (PathwiseGradient.quadraticValue w None) k k2 starts)

let tests =
    testList
        "gradient analysis"
        [
            /// ∇_K J = −[(R + γBᵀPB)K + γBᵀPA] Σ_K, with P the discounted Lyapunov solution and Σ_K = Σₜγᵗ E[s_t s_tᵀ]
            /// (docs/gradient-error.md, "Exact policy gradient"), against central differences of the exact return J(K).
            testPropertyWithConfig configFew "the closed-form LQ policy gradient matches central differences of the exact return" (fun () ->
                Prop.forAll problems (fun seed ->
                    let p, k = randomProblem seed
                    let g = LinearQuadratic.exactGradient p k
                    let h = 1e-5

                    let fd =
                        Array2D.init (Mat.rows k) (Mat.cols k) (fun i j ->
                            let at d =
                                LinearQuadratic.expectedReturn
                                    p
                                    (Array2D.init (Mat.rows k) (Mat.cols k) (fun a b -> k.[a, b] + (if a = i && b = j then d else 0.0)))

                            (at h - at -h) / (2.0 * h))
                    // float64 differences: truncation O(h²·J''') and rounding O(1e-16·|J|/h) are far below 1e-6·scale.
                    let scale = 1.0 + Mat.frobenius g
                    Mat.maxAbsDiff g fd < 1e-6 * scale |> holds (sprintf "closed form %A, differences %A" g fd)))

            /// Identity 1 (docs/gradient-error.md §1): with Q = Q^K held fixed, true dynamics and starts from
            /// d_H = (1 − γ^(H+1)) Σⱼ γ^(j(H+1)) ρ_(j(H+1)), ∇_K J = ∇_K J_H / (1 − γ^(H+1)) for every H ≥ 0.
            testPropertyWithConfig
                { configFew with maxTest = 12 }
                "with exact Q, true dynamics and block starts, the MAAC gradient is the policy gradient for every H (Monte-Carlo tolerance)"
                (fun () ->
                    Prop.forAll problemsAndHorizons (fun (seed, h) ->
                        let p, k = randomProblem seed
                        let exact = LinearQuadratic.exactGradient p k
                        let batches = batchEstimates p k h (seed + 1) 16 512

                        let mean =
                            Array2D.init (Mat.rows k) (Mat.cols k) (fun i j -> batches |> Array.averageBy (fun g -> g.[i, j]))

                        let stderr =
                            Array2D.init (Mat.rows k) (Mat.cols k) (fun i j ->
                                let v = batches |> Array.averageBy (fun g -> (g.[i, j] - mean.[i, j]) ** 2.0)
                                sqrt (v / float (batches.Length - 1)))
                        // 5 standard errors of the batch mean (its spread shrinks as 1/√samples), plus float32 rounding
                        // of the estimate, relative 1e-4 of its size.
                        let ok =
                            Seq.forall
                                (fun (i, j) ->
                                    abs (mean.[i, j] - exact.[i, j]) <= 5.0 * stderr.[i, j] + 1e-4 * (1.0 + Mat.frobenius exact))
                                (seq {
                                    for i in 0 .. Mat.rows k - 1 do
                                        for j in 0 .. Mat.cols k - 1 -> i, j
                                })

                        ok |> holds (sprintf "H=%d γ=%.3f: exact %A, estimate %A ± %A" h p.Gamma exact mean stderr)))

            /// The tolerance of identity 1 detects a biased estimate: the H = 0 start distribution used with H = 4.
            test "the Monte-Carlo tolerance is not vacuous: a wrong start distribution is detected" {
                // Starts from the ordinary discounted distribution (H = 0's blocks) used with H = 4: biased.
                let p, k = randomProblem 17
                let p = { p with Gamma = 0.9 }
                let w = LinearQuadratic.qWeights p k
                let exact = LinearQuadratic.exactGradient p k

                let estimates =
                    Array.init 16 (fun b ->
                        let k1, k2 = RandomKey.split2 (RandomKey.fold (int64 b) (key 5))
                        let starts = LinearQuadratic.sampleBlockStarts p k 0 k1 512 |> toTensor
                        PathwiseGradient.estimate p 4 (PathwiseGradient.trueStep p) (PathwiseGradient.quadraticValue w None) k k2 starts)

                let mean =
                    Array2D.init (Mat.rows k) (Mat.cols k) (fun i j -> estimates |> Array.averageBy (fun g -> g.[i, j]))

                let worst =
                    Seq.max (
                        seq {
                            for i in 0 .. Mat.rows k - 1 do
                                for j in 0 .. Mat.cols k - 1 do
                                    let sd = sqrt ((estimates |> Array.averageBy (fun g -> (g.[i, j] - mean.[i, j]) ** 2.0)) / 15.0)
                                    yield abs (mean.[i, j] - exact.[i, j]) / (5.0 * sd + 1e-4 * (1.0 + Mat.frobenius exact))
                        }
                    )

                Expect.isGreaterThan worst 1.0 "the biased estimate fails the tolerance"
            }

            /// Bound 2 (docs/gradient-error.md §2): if ‖∇ₐQ̃ − ∇ₐQ‖ ≤ ε_Q (Q̃ − Q a function of the action), then
            /// ‖∇J̃_H − ∇J_H‖ ≤ γᴴ ε_Q C_H, C_H = (1 + ‖K‖‖B‖Σₖ‖Mᵏ‖) E[max_{t≤H}‖s_t‖] / (1 − γ^(H+1)), bounded in H.
            testPropertyWithConfig
                configFew
                "a Q whose action-gradient is off by ε_Q gives a gradient error of at most γ^H·C_H·ε_Q"
                (fun () ->
                    Prop.forAll problemsAndHorizons (fun (seed, h) ->
                        let p, k = randomProblem seed
                        let w = LinearQuadratic.qWeights p k
                        let epsQ = 0.1
                        let direction = (Tensor.randn (key (seed + 2)) [| p.ActionDim |]).ToArray()
                        let unit = direction |> Array.map (fun v -> v / float32 (Mat.vecNorm (Array.map float direction)))
                        let k1, k2 = RandomKey.split2 (key (seed + 3))
                        let startRows = LinearQuadratic.sampleBlockStarts p k h k1 1024
                        let starts = toTensor startRows

                        let estimate shift =
                            PathwiseGradient.estimate
                                p
                                h
                                (PathwiseGradient.trueStep p)
                                (PathwiseGradient.quadraticValue w shift)
                                k
                                k2
                                starts

                        let exactQ = estimate None
                        let shifted = estimate (Some(unit |> Array.map (fun v -> float32 epsQ * v)))
                        let error = Mat.frobenius (Mat.sub shifted exactQ)
                        let noise = PathwiseGradient.policyNoise p h k2 startRows.Length
                        let c = PathwiseGradient.qErrorConstant p h k (PathwiseGradient.paths p h k noise startRows)
                        let bound = p.Gamma ** float h * c * epsQ
                        // float32: both estimates carry rounding of relative 1e-5 of their size.
                        (error <= bound * (1.0 + 1e-6) + 1e-5 * (1.0 + Mat.frobenius exactQ) && error > 0.0)
                        |> holds (sprintf "H=%d γ=%.3f: error %.3g, bound %.3g (C_H = %.3g)" h p.Gamma error bound c)))

            /// Bound 3 (docs/gradient-error.md §3): with a model Ã = A + ε_f E, ‖E‖₂ = 1, and exact Q, the error is at
            /// most c₁(H) ε_f, c₁ from the recursions for the path error e_t and the sensitivity error Δ_t; 0 at H = 0.
            testPropertyWithConfig
                configFew
                "a model whose derivatives are off by ε_f gives a gradient error of at most c1(H)·ε_f, zero at H = 0"
                (fun () ->
                    Prop.forAll problemsAndHorizons (fun (seed, h) ->
                        let p, k = randomProblem seed
                        let w = LinearQuadratic.qWeights p k
                        let epsF = 0.01
                        let e = Mat.ofTensor (Tensor.randn (key (seed + 4)) [| p.StateDim; p.StateDim |])
                        let e = Mat.scale (1.0 / Mat.norm2 e) e
                        let wrongA = Mat.add p.A (Mat.scale epsF e)
                        let k1, k2 = RandomKey.split2 (key (seed + 5))
                        let startRows = LinearQuadratic.sampleBlockStarts p k h k1 1024
                        let starts = toTensor startRows
                        let terminal = PathwiseGradient.quadraticValue w None
                        let exact = PathwiseGradient.estimate p h (PathwiseGradient.trueStep p) terminal k k2 starts

                        let modelled =
                            PathwiseGradient.estimate p h (PathwiseGradient.linearStep p wrongA p.B) terminal k k2 starts

                        let error = Mat.frobenius (Mat.sub modelled exact)
                        let noise = PathwiseGradient.policyNoise p h k2 startRows.Length

                        let bound =
                            PathwiseGradient.modelErrorBound p h k w epsF (PathwiseGradient.paths p h k noise startRows) noise

                        let rounding = 1e-5 * (1.0 + Mat.frobenius exact)

                        (if h = 0 then
                             error = 0.0 && bound = 0.0
                         else
                             error <= bound + rounding)
                        |> holds (sprintf "H=%d γ=%.3f: error %.3g, bound c1·ε %.3g" h p.Gamma error bound)))

            /// The dynamic program behind `experiment pendulum-optimum`: on a coarse grid its value at the upright rest
            /// state is the cost of staying there (0), and its controller, run in the real environment, swings up from
            /// every start for less than 400 and earns far more than applying no torque.
            test "the Pendulum dynamic program's controller swings up from the evaluation starts" {
                let grid = { Angles = 64; Speeds = 41; Torques = 21 }
                let values, at = PendulumOptimum.solve grid
                Expect.isGreaterThan (at values.[0] 0.0 0.0) -0.5 "upright at rest costs (almost) nothing"
                let returns = PendulumOptimum.evaluationReturns grid 0L 3

                let idle =
                    Array.init 3 (fun e ->
                        use env = new Maac.Envs.TimeLimit(new Maac.Envs.Pendulum(), 200) :> Maac.Envs.IEnv
                        env.Reset(Some(Maac.Training.Trainer.EvaluationSeedBase 0L + int64 e)) |> ignore
                        Array.init 200 (fun _ -> (env.Step [| 0.0f |]).Reward) |> Array.sum)

                for e in 0..2 do
                    Expect.isGreaterThan
                        returns.[e]
                        (idle.[e] + 200.0)
                        (sprintf "episode %d: controller %.0f vs no torque %.0f" e returns.[e] idle.[e])

                    Expect.isGreaterThan returns.[e] -400.0 "a swing-up from anywhere costs less than 400"
            }

            /// Reverse-mode AD of the MAAC objective equals a central difference along a random direction (tolerance
            /// of Support.checkGradient) for random smooth policies, critics and ensembles, H ∈ 0…4, K ∈ 1…3.
            testPropertyWithConfig
                configFew
                "AD and finite differences agree on the MAAC objective for random compositions of model, policy and critic (any H, K)"
                (fun () ->
                    Prop.forAll
                        (Arb.fromGen (
                            gen {
                                let! seed = Gen.choose (0, 100_000)
                                let! h = Gen.choose (0, 4)
                                let! samples = Gen.choose (1, 3)
                                return seed, h, samples
                            }
                        ))
                        (fun (seed, h, samples) ->
                            let ks = RandomKey.split 6 (key seed)
                            let obs, act = 3, 1
                            // Smooth activations everywhere, so that central differences are valid at every point.
                            let policy = TanhGaussianPolicy.init ks.[0] obs act [| 12 |]
                            let policy = { policy with Net = { policy.Net with Hidden = Activation.Tanh } }
                            let critics = Critics.init ks.[1] obs act [| 12 |]

                            let critics =
                                {
                                    Q1 = { critics.Q1 with Hidden = Activation.Tanh }
                                    Q2 = { critics.Q2 with Hidden = Activation.Tanh }
                                }

                            let model =
                                Dynamics.init
                                    ks.[2]
                                    {
                                        Members = 3
                                        EliteCount = 2
                                        Hidden = [| 12 |]
                                        LearningRate = 1e-3f
                                        BatchSize = 8
                                        MaxEpochs = 1
                                        HoldoutFraction = 0.2
                                        Patience = 1
                                        HoldoutSeed = 0L
                                    }
                                    obs
                                    act
                                    false

                            let model =
                                { model with
                                    Net = { model.Net with Net = { model.Net.Net with Hidden = Activation.Tanh } }
                                    Elites = [| 0; 2 |]
                                }
                            // A smooth reward (the built-in tasks' clamps and angle wrapping have kinks that differences can straddle).
                            let smooth: Maac.Envs.TaskFunctions =
                                {
                                    Reward = Some(fun _ a n -> -(Tensor.sumAxis 1 false (n * n) + 0.1f * Tensor.sumAxis 1 false (a * a)))
                                    Termination = None
                                }

                            let ctx =
                                {
                                    Model = model
                                    Task = smooth
                                    ActionLow = Tensor.ofSeq [ -2.0f ]
                                    ActionHigh = Tensor.ofSeq [ 2.0f ]
                                    PathNoise = SampledNoise
                                }

                            let starts = Tensor.rand ks.[3] [| 6; obs |] * 2.0f - 1.0f
                            let tensors = Parameters.tensors policy

                            checkGradient
                                (sprintf "H=%d K=%d" h samples)
                                (fun ts ->
                                    Objectives.maac 0.95f h samples (Some ctx) critics 0.2f ks.[4] starts (Parameters.rebuild policy ts))
                                tensors
                                (seed % 1000)

                            true))
        ]
