/// Every differentiable operation against central finite differences, on random shapes and values.
module Maac.Tests.OpGradientTests

open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Tests.Support

let private unaryCase (name: string) (lo: float32) (hi: float32) (kink: float32 option) (f: Tensor -> Tensor) =
    testPropertyWithConfig config name (fun () ->
        Prop.forAll arbShapeSeed (fun c ->
            let x = uniform c.Seed c.Shape lo hi

            let x =
                match kink with
                | Some k -> awayFrom k 0.05f x
                | None -> x

            checkGradient name (fun xs -> f xs.[0]) [| x |] (c.Seed + 1)))

let private onGrid (offset: float32) (x: Tensor) =
    Tensor.ofArray x.Shape (x.ToArray() |> Array.map (fun e -> System.MathF.Round(e * 5.0f) / 5.0f + offset))

let private binaryCase (name: string) (lo: float32) (hi: float32) (f: Tensor -> Tensor -> Tensor) (separate: bool) =
    testPropertyWithConfig config name (fun () ->
        Prop.forAll arbPairSeed (fun c ->
            let a = uniform c.Seed c.A lo hi
            let b = uniform (c.Seed + 7) c.B lo hi
            // For max/min put the operands on offset grids (|a − b| ≥ 0.1), so no element sits on the switch.
            let a, b = if separate then onGrid 0.05f a, onGrid 0.15f b else a, b
            checkGradient name (fun xs -> f xs.[0] xs.[1]) [| a; b |] (c.Seed + 3)))

let tests =
    testList
        "gradients of operations"
        [
            unaryCase "neg" -2.0f 2.0f None Tensor.neg
            unaryCase "exp" -2.0f 2.0f None Tensor.exp
            unaryCase "log" 0.5f 2.0f None Tensor.log
            unaryCase "sqrt" 0.5f 2.0f None Tensor.sqrt
            unaryCase "abs" -2.0f 2.0f (Some 0.0f) Tensor.abs
            unaryCase "sign (zero gradient)" -2.0f 2.0f (Some 0.0f) Tensor.sign
            unaryCase "square" -2.0f 2.0f None Tensor.square
            unaryCase "reciprocal" 0.5f 2.0f None Tensor.reciprocal
            unaryCase "relu" -2.0f 2.0f (Some 0.0f) Tensor.relu
            unaryCase "silu" -3.0f 3.0f None Tensor.silu
            unaryCase "tanh" -2.0f 2.0f None Tensor.tanh
            unaryCase "sigmoid" -3.0f 3.0f None Tensor.sigmoid
            unaryCase "softplus" -3.0f 3.0f None Tensor.softplus
            unaryCase "sin" -3.0f 3.0f None Tensor.sin
            unaryCase "cos" -3.0f 3.0f None Tensor.cos
            unaryCase "addScalar" -2.0f 2.0f None (Tensor.addScalar 1.5f)
            unaryCase "mulScalar" -2.0f 2.0f None (Tensor.mulScalar -0.7f)
            unaryCase "powScalar 3" -1.5f 1.5f None (Tensor.powScalar 3.0f)
            unaryCase "powScalar 0.5" 0.5f 2.0f None (Tensor.powScalar 0.5f)
            unaryCase "clamp" -2.0f 2.0f (Some 0.5f) (fun x -> Tensor.clamp -3.0f 0.5f x)
            unaryCase "sum" -2.0f 2.0f None Tensor.sum
            unaryCase "mean" -2.0f 2.0f None Tensor.mean
            unaryCase "sumAxis keep" -2.0f 2.0f None (fun x -> if x.Rank = 0 then x else Tensor.sumAxis -1 true x)
            unaryCase "meanAxis" -2.0f 2.0f None (fun x -> if x.Rank = 0 then x else Tensor.meanAxis 0 false x)
            unaryCase "reshape" -2.0f 2.0f None (fun x -> Tensor.reshape [| -1 |] x |> Tensor.exp)
            unaryCase "transpose" -2.0f 2.0f None (fun x ->
                if x.Rank < 2 then
                    x
                else
                    Tensor.transpose x * Tensor.transpose x)
            unaryCase "permute" -2.0f 2.0f None (fun x -> Tensor.permute (Array.init x.Rank (fun i -> x.Rank - 1 - i)) x |> Tensor.tanh)
            unaryCase "expand" -2.0f 2.0f None (fun x -> Tensor.expand (Array.append [| 3 |] x.Shape) x |> Tensor.sin)
            unaryCase "unsqueeze/squeeze" -2.0f 2.0f None (fun x -> Tensor.unsqueeze 0 x |> Tensor.square |> Tensor.squeeze 0)
            binaryCase "add" -2.0f 2.0f (+) false
            binaryCase "sub" -2.0f 2.0f (-) false
            binaryCase "mul" -2.0f 2.0f (*) false
            binaryCase "div" 0.5f 2.0f (/) false
            binaryCase "pow" 0.5f 1.5f Tensor.pow false
            binaryCase "atan2" 0.5f 1.5f Tensor.atan2 false
            binaryCase "maximum" -2.0f 2.0f Tensor.maximum true
            binaryCase "minimum" -2.0f 2.0f Tensor.minimum true
            testPropertyWithConfig config "maxAxis" (fun () ->
                Prop.forAll arbShapeSeed (fun c ->
                    if c.Shape.Length > 0 then
                        // Distinct values 0.1 apart, shuffled, so the maximum is unique and stable under the step.
                        let n = Shape.numel c.Shape
                        let perm = RandomKey.permutation n (key c.Seed)
                        let x = Tensor.ofArray c.Shape (perm |> Array.map (fun p -> 0.1f * float32 p - 1.0f))
                        checkGradient "maxAxis" (fun xs -> Tensor.maxAxis -1 false xs.[0] |> Tensor.square) [| x |] c.Seed))
            testPropertyWithConfig config "concat and slice" (fun () ->
                Prop.forAll arbShapeSeed (fun c ->
                    if c.Shape.Length > 0 then
                        let a = uniform c.Seed c.Shape -2.0f 2.0f
                        let b = uniform (c.Seed + 1) (Shape.withAxis c.Shape 0 2) -2.0f 2.0f

                        checkGradient
                            "concat/slice"
                            (fun xs ->
                                let j = Tensor.concat 0 [| xs.[0]; xs.[1] |]
                                Tensor.slice 0 1 (j.Shape.[0] - 1) j |> Tensor.tanh)
                            [| a; b |]
                            c.Seed))
            testPropertyWithConfig config "split and chunk" (fun () ->
                Prop.forAll arbShapeSeed (fun c ->
                    let x = uniform c.Seed (Array.append c.Shape [| 4 |]) -2.0f 2.0f

                    checkGradient
                        "split"
                        (fun xs ->
                            let p = Tensor.chunk -1 2 xs.[0]
                            let q = Tensor.split -1 [| 1; 3 |] xs.[0]
                            // Pieces nothing depends on: the middle one of three, and all but one of another split.
                            let r = Tensor.split -1 [| 1; 1; 2 |] xs.[0]
                            let single = (Tensor.chunk -1 4 xs.[0]).[2]

                            p.[0] * Tensor.exp p.[1]
                            + Tensor.sumAxis -1 true q.[1] * q.[0]
                            + r.[0] * Tensor.sumAxis -1 true r.[2]
                            + Tensor.sin single)
                        [| x |]
                        c.Seed))
            testPropertyWithConfig config "indexSelect with repeats and indexAdd" (fun () ->
                Prop.forAll arbShapeSeed (fun c ->
                    if c.Shape.Length > 0 then
                        let x = uniform c.Seed c.Shape -2.0f 2.0f
                        let n = c.Shape.[0]
                        let idx = RandomKey.integers (n + 2) n (key c.Seed)

                        checkGradient
                            "indexSelect"
                            (fun xs ->
                                let picked = Tensor.indexSelect 0 idx xs.[0] |> Tensor.square
                                Tensor.indexAdd (Shape.withAxis c.Shape 0 (n + 1)) 0 (idx |> Array.map (fun i -> i + 1)) picked)
                            [| x |]
                            c.Seed))
            testPropertyWithConfig config "matmul with transposes and bias" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip (Gen.arrayOfLength 3 (Gen.choose (1, 9))) (Gen.arrayOfLength 3 (Gen.elements [ false; true ]))))
                    (fun (dims, flags) ->
                        let m, k, n = dims.[0], dims.[1], dims.[2]
                        let ta, tb, withBias = flags.[0], flags.[1], flags.[2]
                        let seed = m * 100 + k * 10 + n
                        let a = uniform seed (if ta then [| k; m |] else [| m; k |]) -1.0f 1.0f
                        let b = uniform (seed + 1) (if tb then [| n; k |] else [| k; n |]) -1.0f 1.0f
                        let bias = uniform (seed + 2) [| n |] -1.0f 1.0f

                        checkGradient
                            "matmul"
                            (fun xs -> Tensor.matmulWith ta tb xs.[0] xs.[1] (if withBias then Some xs.[2] else None))
                            [| a; b; bias |]
                            seed))
            testPropertyWithConfig config "products: every accepted bias shape, values and gradients" (fun () ->
                // A bias of n elements is shared by every row whatever its shape; batch·n elements give one row per batch
                // entry. Each shape is checked against the broadcast sum it stands for and against finite differences.
                Prop.forAll (Arb.fromGen (Gen.arrayOfLength 4 (Gen.choose (1, 4)))) (fun d ->
                    let bsz, m, k, n = d.[0], d.[1], d.[2], d.[3]
                    let seed = bsz * 1000 + m * 100 + k * 10 + n

                    let cases =
                        [
                            false, [| n |]
                            false, [| 1; n |]
                            false, [| n; 1 |]
                            false, [| 1; 1; n |]
                            true, [| bsz; n |]
                            true, [| bsz; 1; n |]
                            true, [| bsz * n |]
                        ]

                    for rank in [ 2; 3 ] do
                        let batches = if rank = 3 then bsz else 1
                        let a = uniform seed (if rank = 3 then [| bsz; m; k |] else [| m; k |]) -1.0f 1.0f
                        let b = uniform (seed + 1) (if rank = 3 then [| bsz; k; n |] else [| k; n |]) -1.0f 1.0f

                        for perBatch, shape in cases do
                            if rank = 3 || not perBatch then
                                let bias = uniform (seed + 2) shape -1.0f 1.0f
                                let broadcastBias = Tensor.reshape (if perBatch then [| batches; 1; n |] else [| n |]) bias
                                let expected = (if rank = 3 then Tensor.bmm a b else Tensor.matmul a b) + broadcastBias
                                let got = Tensor.matmulWith false false a b (Some bias)
                                let label = sprintf "bias %s on a rank-%d product" (Shape.show shape) rank
                                // Sums of at most 4 products of values in [-1, 1] plus a bias: a few float32 roundings of magnitude ≤ 5.
                                Expect.isLessThan
                                    (Array.map2 (fun x y -> abs (x - y)) (got.ToArray()) (expected.ToArray()) |> Array.max)
                                    1e-5f
                                    (label + ": values")

                                checkGradient
                                    label
                                    (fun xs -> Tensor.matmulWith false false xs.[0] xs.[1] (Some xs.[2]))
                                    [| a; b; bias |]
                                    seed))
            test "a per-batch bias [B, n] with as many rows as batches gets its own rows' gradient (the fault found)" {
                // a [2, 2, 3], b [2, 3, 2], bias [2, 2]; d(sum(y · W))/d bias with W = 1..8 sums W over each batch's rows.
                let a = Tensor.ofArray [| 2; 2; 3 |] (Array.init 12 (fun i -> float32 i / 10.0f))
                let b = Tensor.ofArray [| 2; 3; 2 |] (Array.init 12 (fun i -> float32 (12 - i) / 10.0f))
                let bias = Tensor.zeros [| 2; 2 |]
                let w = Tensor.ofArray [| 2; 2; 2 |] (Array.init 8 (fun i -> float32 (i + 1)))
                let g = Diff.grad (fun c -> Tensor.sum (Tensor.matmulWith false false a b (Some c) * w)) bias
                Expect.sequenceEqual (g.ToArray()) [| 4.0f; 6.0f; 12.0f; 14.0f |] "W[b, 0, :] + W[b, 1, :] for each batch entry b"
            }
            testPropertyWithConfig config "batched matmul (baddbmm)" (fun () ->
                Prop.forAll (Arb.fromGen (Gen.arrayOfLength 4 (Gen.choose (1, 6)))) (fun d ->
                    let bsz, m, k, n = d.[0], d.[1], d.[2], d.[3]
                    let seed = bsz * 1000 + m * 100 + k * 10 + n
                    let x = uniform seed [| bsz; m; k |] -1.0f 1.0f
                    let w = uniform (seed + 1) [| bsz; k; n |] -1.0f 1.0f
                    let bias = uniform (seed + 2) [| bsz; 1; n |] -1.0f 1.0f
                    checkGradient "baddbmm" (fun xs -> Tensor.baddbmm xs.[2] xs.[0] xs.[1] |> Tensor.tanh) [| x; w; bias |] seed))
            testPropertyWithConfig config "fused products with activation (linear and batched, each activation)" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip (Gen.arrayOfLength 4 (Gen.choose (1, 5))) (Gen.elements [ Relu; Silu; Tanh ])))
                    (fun (d, activation) ->
                        let bsz, m, k, n = d.[0], d.[1], d.[2], d.[3]
                        let seed = bsz * 1000 + m * 100 + k * 10 + n
                        let x = uniform seed [| m; k |] -1.0f 1.0f
                        let w = uniform (seed + 1) [| k; n |] -1.0f 1.0f
                        let b = uniform (seed + 2) [| n |] -1.0f 1.0f
                        // Away from ReLU's kink: products near 0 would put the finite difference across it.
                        let f (xs: Tensor[]) = Tensor.linearActivation activation xs.[0] xs.[1] xs.[2]

                        if activation <> Relu || (Tensor.linear x w b).ToArray() |> Array.forall (fun v -> abs v > 0.05f) then
                            checkGradient "linearActivation" f [| x; w; b |] seed

                        let xb = uniform (seed + 3) [| bsz; m; k |] -1.0f 1.0f
                        let wb = uniform (seed + 4) [| bsz; k; n |] -1.0f 1.0f
                        let bb = uniform (seed + 5) [| bsz; 1; n |] -1.0f 1.0f

                        if activation <> Relu || (Tensor.baddbmm bb xb wb).ToArray() |> Array.forall (fun v -> abs v > 0.05f) then
                            checkGradient
                                "baddbmmActivation"
                                (fun xs -> Tensor.baddbmmActivation activation xs.[2] xs.[0] xs.[1])
                                [| xb; wb; bb |]
                                seed))
            testPropertyWithConfig config "fused Gaussian-head sample (in head, both log-variance bounds and noise)" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip3 (Gen.choose (1, 5)) (Gen.choose (1, 4)) (Gen.choose (0, 1_000_000))))
                    (fun (r, d, seed) ->
                        let head =
                            Tensor.concat -1 [| uniform seed [| r; d |] -1.0f 1.0f; uniform (seed + 1) [| r; d |] -3.0f 3.0f |]

                        let hi = uniform (seed + 2) [| d |] 0.0f 1.0f
                        let lo = uniform (seed + 3) [| d |] -3.0f -1.5f
                        let eps = uniform (seed + 4) [| r; d |] -2.0f 2.0f

                        checkGradient
                            "gaussianHeadSample"
                            (fun xs -> Tensor.gaussianHeadSample xs.[1] xs.[2] xs.[0] xs.[3])
                            [| head; hi; lo; eps |]
                            seed))
            testPropertyWithConfig config "fused tanh-Gaussian sample (actions, log-densities, or both; in head and noise)" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip3 (Gen.choose (1, 5)) (Gen.choose (1, 4)) (Gen.choose (0, 1_000_000))))
                    (fun (n, a, seed) ->
                        let lo, hi = -1.5f, 0.5f
                        let means = uniform seed [| n; a |] -1.0f 1.0f
                        // Raw log standard deviations on both sides of both clamp bounds, never within 0.05 of one.
                        let logStds = uniform (seed + 1) [| n; a |] -2.0f 1.0f |> awayFrom lo 0.05f |> awayFrom hi 0.05f
                        let head = Tensor.concat -1 [| means; logStds |]
                        let eps = uniform (seed + 2) [| n; a |] -2.0f 2.0f
                        let outputs = seed % 3

                        checkGradient
                            "tanhGaussianSample"
                            (fun xs ->
                                let action, logProb = Tensor.tanhGaussianSample lo hi xs.[0] xs.[1]

                                match outputs with
                                | 0 -> action
                                | 1 -> logProb
                                | _ -> Tensor.concat -1 [| action; Tensor.unsqueeze -1 logProb |])
                            [| head; eps |]
                            seed))
        ]
