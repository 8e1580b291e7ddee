/// Networks, distributions and optimisers: whole-function gradients and hand-computed values.
module Maac.Tests.NnTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Nn
open Maac.Optim
open Maac.Tests.Support

/// Gradient check with respect to every parameter of a collection, plus the input.
let private checkParams name (f: 'P -> Tensor -> Tensor) (p: 'P :> IParameters<'P>) (x: Tensor) seed =
    let ts = Parameters.tensors p
    checkGradient name (fun xs -> f (Parameters.rebuild p xs.[1..]) xs.[0]) (Array.append [| x |] ts) seed

/// The log-density of a = tanh(u) for the pre-squash value u [N, act], written out as plain tensor operations (an
/// independent reference for the fused sample): Gaussian log-density minus log(1 − tanh²u) = 2·(log 2 − u − softplus(−2u)).
let private logProbOfPreTanh (mean: Tensor) (logStd: Tensor) (u: Tensor) =
    let z = (u - mean) * Tensor.exp (-logStd)
    let gaussian = -0.5f * z * z - logStd - float32 (0.5 * Math.Log(2.0 * Math.PI))
    let logOneMinusTanhSquared = 2.0f * (float32 (Math.Log 2.0) - u - Tensor.softplus (-2.0f * u))
    Tensor.sumAxis -1 false (gaussian - logOneMinusTanhSquared)

let tests =
    testList
        "networks and optimisers"
        [
            // Whole networks are checked with smooth activations: a finite-difference step that moves every
            // parameter at once can carry a ReLU pre-activation across its kink (ReLU itself is checked per
            // operation, away from the kink).
            testPropertyWithConfig configFew "MLP gradients (input and every parameter)" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip (Gen.choose (1, 6)) (Gen.elements [ Activation.Identity; Activation.Silu; Activation.Tanh ])))
                    (fun (n, act) ->
                        let mlp = Mlp.init (key n) [| 3; 7; 5; 2 |] act
                        let x = uniform (n + 1) [| n; 3 |] -1.0f 1.0f
                        checkParams "mlp" Mlp.forward mlp x n))

            testPropertyWithConfig configFew "ensemble MLP and Gaussian NLL gradients" (fun () ->
                Prop.forAll (Arb.fromGen (Gen.choose (1, 5))) (fun n ->
                    let g = GaussianEnsemble.init (key n) 3 4 [| 6; 6 |] 2 Activation.Silu
                    let x = uniform (n + 1) [| 3; n; 4 |] -1.0f 1.0f
                    let y = uniform (n + 2) [| 3; n; 2 |] -1.0f 1.0f
                    checkParams "gaussian ensemble nll" (fun p x -> GaussianEnsemble.nll p x y) g x n))

            test "ensemble members see only their own rows" {
                let g = EnsembleMlp.init (key 1) 3 [| 2; 5; 1 |] Activation.Silu
                let x = uniform 2 [| 3; 4; 2 |] -1.0f 1.0f
                let full = (EnsembleMlp.forward g x).ToArray()

                for m in 0..2 do
                    let single =
                        { g with
                            Layers =
                                g.Layers
                                |> Array.map (fun l -> { Weight = Tensor.slice 0 m 1 l.Weight; Bias = Tensor.slice 0 m 1 l.Bias })
                        }

                    let alone = (EnsembleMlp.forward single (Tensor.slice 0 m 1 x)).ToArray()
                    Expect.sequenceEqual alone full.[m * 4 .. m * 4 + 3] (sprintf "member %d" m)
            }

            test "log-variance stays inside the soft bounds" {
                let g = GaussianEnsemble.init (key 3) 2 3 [| 8 |] 2 Activation.Silu
                let _, lv = GaussianEnsemble.forward g (uniform 4 [| 2; 50; 3 |] -100.0f 100.0f)
                // The bounds are soft: min + softplus(upper − min) can exceed upper by at most log(1 + e^(min − max)).
                let slack = log (1.0 + exp (-10.0 - 0.5))

                Expect.isTrue
                    (lv.ToArray() |> Array.forall (fun v -> float v <= 0.5 + slack + 1e-6 && v >= -10.0f))
                    "within [min, max + slack]"
            }

            testPropertyWithConfig configFew "policy log-probability gradients" (fun () ->
                Prop.forAll (Arb.fromGen (Gen.choose (1, 6))) (fun n ->
                    let p = TanhGaussianPolicy.init (key n) 3 2 [| 8; 8 |]
                    let p = { p with Net = { p.Net with Hidden = Activation.Tanh } }
                    let obs = uniform (n + 1) [| n; 3 |] -1.0f 1.0f
                    let k = key (n + 2)

                    checkParams
                        "policy sample and log-prob"
                        (fun p obs ->
                            let a, logp = TanhGaussianPolicy.sample p k obs
                            Tensor.sumAxis -1 false a + logp)
                        p
                        obs
                        n))

            test "the fused policy sample is the change-of-variables density in float64, clamped log-stds included" {
                let p = TanhGaussianPolicy.init (key 21) 4 3 [| 16 |]
                // The last layer scaled so that log standard deviations reach past both clamp bounds [-20, 2].
                let last = Array.last p.Net.Layers

                let p =
                    { p with
                        Net =
                            { p.Net with
                                Layers =
                                    Array.append p.Net.Layers.[.. p.Net.Layers.Length - 2] [| { last with Weight = last.Weight * 60.0f } |]
                            }
                    }

                let obs = uniform 22 [| 32; 4 |] -1.0f 1.0f
                let k = key 23
                let mean, logStd = TanhGaussianPolicy.distribution p obs
                let ls = toF64 logStd
                Expect.isTrue (Array.contains 2.0 ls && Array.contains -20.0 ls) "log standard deviations clamped at both bounds"
                let mu, e = toF64 mean, toF64 (Tensor.randnLike k mean)
                let a, lp = TanhGaussianPolicy.sample p k obs
                let av, lpv = toF64 a, toF64 lp

                for i in 0..31 do
                    let mutable expected = 0.0

                    for j in 0..2 do
                        let idx = i * 3 + j
                        let u = mu.[idx] + exp ls.[idx] * e.[idx]
                        Expect.floatClose { absolute = 1e-6; relative = 1e-5 } av.[idx] (tanh u) (sprintf "action %d" idx)
                        // log(1 − tanh²u) = 2(log 2 − |u| − log(1 + e^(−2|u|))), exact in float64 for any u.
                        expected <-
                            expected
                            - 0.5 * e.[idx] * e.[idx]
                            - ls.[idx]
                            - 0.5 * log (2.0 * Math.PI)
                            - 2.0 * (log 2.0 - abs u - log (1.0 + exp (-2.0 * abs u)))
                    // Float32 terms of size up to ~40 (|u| and ℓ = −20): a few ulps of each.
                    Expect.floatClose { absolute = 1e-4; relative = 1e-5 } lpv.[i] expected (sprintf "log-density of row %d" i)
            }

            test "the fused policy sample's gradients equal those of its composition from distribution, tanh and the log-density" {
                let p = TanhGaussianPolicy.init (key 24) 4 3 [| 16 |]
                let obs = uniform 25 [| 32; 4 |] -1.0f 1.0f
                let k = key 26

                let composed (p: TanhGaussianPolicy) =
                    let mean, logStd = TanhGaussianPolicy.distribution p obs
                    let u = mean + Tensor.exp logStd * Tensor.randnLike k mean
                    Tensor.tanh u, logProbOfPreTanh mean logStd u

                let loss f p = let a, lp = f p in Tensor.sum (a * a) + 0.3f * Tensor.sum lp
                let g1 = Diff.gradParams (loss (fun p -> TanhGaussianPolicy.sample p k obs)) p
                let g2 = Diff.gradParams (loss composed) p
                // The composition recovers the noise as (u − μ)/σ, exact only up to rounding (σ ≈ 1 here).
                Array.iter2
                    (fun (x: Tensor) (y: Tensor) ->
                        Array.iteri2
                            (fun i (u: float32) (v: float32) ->
                                Expect.floatClose
                                    { absolute = 1e-4; relative = 1e-4 }
                                    (float u)
                                    (float v)
                                    (sprintf "gradient element %d" i))
                            (x.ToArray())
                            (y.ToArray()))
                    (Parameters.tensors g1)
                    (Parameters.tensors g2)
            }

            test "the fused Gaussian-head sample equals its composition from GaussianEnsemble.forward (values and gradients)" {
                let g = GaussianEnsemble.init (key 27) 2 3 [| 8 |] 2 Activation.Silu
                // Bounds away from their initial values, and inputs large enough to push log-variances against both.
                let g =
                    { g with
                        MaxLogVar = Tensor.ofArray [| 1; 1; 2 |] [| 0.3f; 0.9f |]
                        MinLogVar = Tensor.ofArray [| 1; 1; 2 |] [| -2.0f; -1.0f |]
                    }

                let x = uniform 28 [| 2; 10; 3 |] -30.0f 30.0f
                let eps = Tensor.randn (key 29) [| 20; 2 |]

                let composed (g: GaussianEnsemble) =
                    let mean, logVar = GaussianEnsemble.forward g x
                    Tensor.reshape [| 20; 2 |] mean + Tensor.exp (0.5f * Tensor.reshape [| 20; 2 |] logVar) * eps

                let fused (g: GaussianEnsemble) =
                    Tensor.gaussianHeadSample g.MaxLogVar g.MinLogVar (EnsembleMlp.forward g.Net x |> Tensor.reshape [| 20; 4 |]) eps

                let closeArrays what (x: Tensor) (y: Tensor) =
                    // The same formulas, as vector primitives or scalar MathF: a few ulps apart.
                    Array.iteri2
                        (fun i (u: float32) (v: float32) ->
                            Expect.floatClose { absolute = 1e-5; relative = 1e-4 } (float u) (float v) (sprintf "%s element %d" what i))
                        (x.ToArray())
                        (y.ToArray())

                closeArrays "samples" (fused g) (composed g)
                let loss f g = Tensor.sum (f g * Tensor.randn (key 30) [| 20; 2 |])
                let g1, g2 = Diff.gradParams (loss fused) g, Diff.gradParams (loss composed) g
                Array.iter2 (closeArrays "gradient") (Parameters.tensors g1) (Parameters.tensors g2)
                let gBounds = [| g1.MaxLogVar; g1.MinLogVar |] |> Array.collect (fun t -> t.ToArray())
                Expect.isTrue (gBounds |> Array.forall (fun v -> v <> 0.0f)) "the bounds receive gradient"
            }

            test "Adam's first two steps match a hand computation" {
                // p = 1, g = 0.5 then g = -1; lr 0.1, β1 0.9, β2 0.999, ε 1e-8.
                let cfg = AdamConfig.WithLearningRate 0.1f
                let p0 = ParameterDict.OfSeq [ "w", Tensor.scalar 1.0f ]
                let s0 = Adam.init p0
                let g1 = ParameterDict.OfSeq [ "w", Tensor.scalar 0.5f ]
                let s1, p1 = Adam.step cfg s0 p0 g1
                // m1 = 0.05, v1 = 0.00025; m̂ = 0.5, v̂ = 0.25 → step = 0.1·0.5/0.5 = 0.1.
                Expect.floatClose Accuracy.high (float (Tensor.toScalar p1.["w"])) 0.9 "first step"
                let g2 = ParameterDict.OfSeq [ "w", Tensor.scalar -1.0f ]
                let _, p2 = Adam.step cfg s1 p1 g2
                // m2 = 0.9·0.05 − 0.1 = −0.055, v2 = 0.999·0.00025 + 0.001 = 0.00124975;
                // m̂ = −0.055/0.19 = −0.289474, v̂ = 0.00124975/0.001999 = 0.625188; step = 0.1·m̂/(√v̂ + ε).
                let expected = 0.9 - 0.1 * (-0.055 / 0.19) / (sqrt (0.00124975 / 0.001999) + 1e-8)
                Expect.floatClose { absolute = 1e-6; relative = 1e-6 } (float (Tensor.toScalar p2.["w"])) expected "second step"
            }

            test "Adam refuses a NaN gradient and names the parameter" {
                let p = ParameterDict.OfSeq [ "policy.w", Tensor.scalar 1.0f ]
                let g = ParameterDict.OfSeq [ "policy.w", Tensor.scalar Single.NaN ]

                let e =
                    Expect.throwsC (fun () -> Adam.step (AdamConfig.WithLearningRate 0.1f) (Adam.init p) p g |> ignore) (fun e -> e.Message)

                Expect.stringContains e "policy.w" "names the parameter"

            }

            test "global-norm clipping scales to the bound and leaves small gradients alone" {
                let g = ParameterDict.OfSeq [ "a", Tensor.ofSeq [ 3.0f ]; "b", Tensor.ofSeq [ 4.0f ] ]
                let clipped, norm = Gradients.clipByGlobalNorm 1.0f g
                Expect.floatClose Accuracy.medium (float (Tensor.toScalar norm)) 5.0 "norm before clipping"
                Expect.floatClose Accuracy.medium (float (Tensor.toScalar (Gradients.globalNorm clipped))) 1.0 "norm after"
                let same, _ = Gradients.clipByGlobalNorm 10.0f g
                Expect.sequenceEqual (same.["a"].ToArray()) [| 3.0f |] "unchanged below the bound"
            }

            test "Polyak averaging" {
                let t = ParameterDict.OfSeq [ "w", Tensor.scalar 0.0f ]
                let o = ParameterDict.OfSeq [ "w", Tensor.scalar 1.0f ]
                Expect.floatClose Accuracy.high (float (Tensor.toScalar (Polyak.update 0.25f t o).["w"])) 0.25 "(1−τ)·0 + τ·1"
            }

            test "running normaliser equals the mean and variance of all data seen" {
                let data = uniform 5 [| 300; 3 |] -2.0f 5.0f

                let n =
                    [ 0; 100; 250 ]
                    |> List.pairwise
                    |> List.append [ (250, 300) ]
                    |> List.fold (fun n (s, e) -> RunningNormaliser.update (Tensor.slice 0 s (e - s) data) n) (RunningNormaliser.init 3)

                let cols =
                    Array.init 3 (fun j -> toF64 data |> Array.indexed |> Array.filter (fun (i, _) -> i % 3 = j) |> Array.map snd)

                for j in 0..2 do
                    let m = Array.average cols.[j]
                    let v = cols.[j] |> Array.averageBy (fun x -> (x - m) ** 2.0)
                    Expect.floatClose { absolute = 1e-4; relative = 1e-4 } (float (n.Mean.ToArray().[j])) m "mean"
                    Expect.floatClose { absolute = 1e-3; relative = 1e-4 } (float (n.Variance.ToArray().[j])) v "variance"

                let z = RunningNormaliser.normalise n data

                Expect.floatClose
                    { absolute = 1e-3; relative = 1e-3 }
                    (float (Tensor.toScalar (Tensor.mean (z * z))))
                    1.0
                    "normalised data has unit second moment"
            }
        ]
