/// Fused operations (FusedOp): every kernel against its operation's reference composition, values and gradients;
/// a fused operation defined outside the library; the counting backend's view of them.
module Maac.Tests.FusedOpTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Tensors.Cpu
open Maac.Tests.Support

let private cpu = Backends.Get Device.Cpu

/// Uniform values in [lo, hi) as a raw CPU tensor.
let private values (seed: int) (shape: int[]) (lo: float32) (hi: float32) = (uniform seed shape lo hi).Primal

/// One fused operation with attributes and inputs, its type parameter hidden so that all can be listed together.
type FusedCase =
    {
        /// The operation and its attributes, for messages.
        Name: string
        /// Runs it on a backend: that backend's kernel, or the reference composition where it has none.
        Run: IBackend -> RawTensor[] -> RawTensor[]
        /// Its reference composition on the CPU backend's generic operations.
        Reference: RawTensor[] -> RawTensor[]
        /// Whether the backend has a kernel for it.
        HasKernel: IBackend -> bool
        /// Inputs (on the CPU) for a seed.
        Inputs: int -> RawTensor[]
    }

let private case (op: FusedOp<'A>) (attributes: 'A) (inputs: int -> RawTensor[]) =
    {
        Name = sprintf "%s %A" op.Name attributes
        Run = fun backend xs -> Fused.run backend op attributes xs
        Reference = Fused.reference cpu op attributes
        HasKernel = fun backend -> Fused.kernelOf backend op |> ValueOption.isSome
        Inputs = inputs
    }

let private bounds = { Lo = -1.0f; Hi = 1.0f }

/// Head values in [−2, 2] against clamp bounds [−1, 1] (both sides of both bounds), noise in [−2, 2].
let private tanhGaussianInputs (seed: int) =
    let n, a = 1 + seed % 9, 1 + seed % 5
    [| values seed [| n; 2 * a |] -2.0f 2.0f; values (seed + 1) [| n; a |] -2.0f 2.0f |]

let private withGradients (seed: int) (xs: RawTensor[]) (shapes: int[][]) =
    Array.append xs (shapes |> Array.mapi (fun i s -> values (seed + 10 + i) s -1.0f 1.0f))

let private gaussianHeadInputs (seed: int) =
    let r, d = 1 + seed % 11, 1 + seed % 6

    [|
        values seed [| r; 2 * d |] -3.0f 3.0f
        values (seed + 1) [| d |] 0.0f 1.0f
        values (seed + 2) [| d |] -3.0f -1.5f
        values (seed + 3) [| r; d |] -2.0f 2.0f
    |]

let private adamInputs (seed: int) =
    let shape = [| 1 + seed % 40 |]

    [|
        values seed shape -1.0f 1.0f
        values (seed + 1) shape -1.0f 1.0f
        values (seed + 2) shape -0.1f 0.1f
        values (seed + 3) shape 0.0f 0.01f
    |]

/// The fused operations the library defines, each with its attributes (all of them, or a representative set).
let cases =
    [
        case TanhGaussian.sample bounds tanhGaussianInputs
        for wrtNoise in [ false; true ] do
            case TanhGaussian.gradient { Bounds = bounds; WrtNoise = wrtNoise } (fun seed ->
                let xs = tanhGaussianInputs seed
                let n, a = xs.[1].Shape.[0], xs.[1].Shape.[1]
                withGradients seed xs [| [| n; a |]; [| n |] |])
        case GaussianHead.sample () gaussianHeadInputs
        for input in [ HeadInput; MaxLogVarInput; MinLogVarInput; NoiseInput ] do
            case GaussianHead.gradient input (fun seed ->
                let xs = gaussianHeadInputs seed
                withGradients seed xs [| xs.[3].Shape |])
        case AdamUpdate.step adamHyperAtStepOne adamInputs
        case AdamUpdate.step { adamHyperAtStepOne with Correction1 = 0.5f; Correction2 = 0.01f } adamInputs
        for activation in [ Relu; Silu; Tanh ] do
            for transA, transB, withBias in [ false, false, true; true, false, false; false, true, true ] do
                for productOp in [ MatMulActivation.op; MatMulActivation.activationOnly ] do
                    case productOp { TransA = transA; TransB = transB; Activation = activation } (fun seed ->
                        let m, k, n = 1 + seed % 7, 1 + seed % 5, 1 + seed % 6
                        let a = values seed (if transA then [| k; m |] else [| m; k |]) -1.0f 1.0f
                        let b = values (seed + 1) (if transB then [| n; k |] else [| k; n |]) -1.0f 1.0f

                        if withBias then
                            [| a; b; values (seed + 2) [| n |] -1.0f 1.0f |]
                        else
                            [| a; b |])
    ]

/// |actual − expected| ≤ absTol + relTol·|expected| for every element, with equal shapes.
let closeTo (what: string) (absTol: float32) (relTol: float32) (expected: RawTensor) (actual: RawTensor) =
    Expect.equal actual.Shape expected.Shape (what + ": shape")
    let e, a = expected.ToArray(), actual.ToArray()

    for i in 0 .. e.Length - 1 do
        if not (abs (a.[i] - e.[i]) <= absTol + relTol * abs e.[i]) then
            failtestf "%s: element %d is %g, the reference composition gives %g" what i a.[i] e.[i]

// Kernel and composition evaluate the same formulas with different libraries (MathF in the kernels,
// TensorPrimitives in the generic operations: a few ulps apart for exp, log, tanh) and in a different order (a sum
// over at most 6 terms, about ten operations in a row): relative and absolute 2e-5 (≈ 170 ulps) bound it.
let private kernelTolerance = 2e-5f

/// For every case and 20 seeds: the backend's kernel (inputs moved there with onBackend) equals the reference
/// composition on the CPU.
let kernelsMatchReferences (backend: IBackend) (onBackend: RawTensor -> RawTensor) =
    for c in cases do
        if c.HasKernel backend then
            for seed in 0..19 do
                let xs = c.Inputs(1000 * seed + 17)
                let expected = c.Reference xs
                let actual = c.Run backend (Array.map onBackend xs)

                Array.iteri2
                    (fun i e a -> closeTo (sprintf "%s, output %d, seed %d" c.Name i seed) kernelTolerance kernelTolerance e a)
                    expected
                    actual

/// A fused operation defined in this test, as a user would: softsign x / (1 + |x|), with no kernel anywhere and no
/// gradient of its own.
let private softsign =
    { new FusedOp<unit>("softsign", [| "x" |]) with
        member _.OutputShapes(_, shapes) = [| shapes.[0] |]

        member _.Reference<'T>(ops: IOps<'T>, (), xs: 'T[]) =
            [| ops.Binary(Div, xs.[0], ops.Scalar(AddScalar 1.0f, ops.Unary(Abs, xs.[0]))) |]
    }

/// Σ over outputs of sum(output · weight), with fixed random weights, as a function of the inputs.
let private weightedSum (outputs: Tensor[] -> Tensor[]) (weights: Tensor[]) (xs: Tensor[]) =
    Array.map2 (fun (y: Tensor) w -> Tensor.sum (y * w)) (outputs xs) weights |> Array.reduce (+)

let tests =
    testList
        "fused operations"
        [
            test "the CPU backend has a kernel for every fused operation of the library" {
                for c in cases do
                    Expect.isTrue (c.HasKernel cpu) (c.Name + ": a CPU kernel")
            }
            test "the Gaussian head's gradients, sharing each softplus's exponential with its sigmoid, give the composition's bits" {
                // σ(x) reads e^−x from softplus's e^−|x| where x ≥ 0 (the same float, ±0 included): bit for bit the
                // formulas with a separate exponential per sigmoid, on both signs of t and of hi − r, at ±0, far out
                // and at NaN.
                let bits (x: float32) = BitConverter.SingleToInt32Bits x
                let special = [| 0.0f; -0.0f; 1e-30f; -1e-30f; 30.0f; -30.0f; 100.0f; -100.0f; Single.NaN |]

                for x in Array.append special ((uniform 71 [| 2000 |] -40.0f 40.0f).Primal.ToArray()) do
                    Expect.equal
                        (bits (ScalarMath.SigmoidFrom(x, ScalarMath.ExpNegAbs x)))
                        (bits (ScalarMath.Sigmoid x))
                        (sprintf "σ(%g)" x)

                let inputs = (uniform 72 [| 4000; 5 |] -6.0f 6.0f).Primal.ToArray()

                for i in 0..3999 do
                    let r, hi, lo, e, g =
                        inputs.[5 * i], inputs.[5 * i + 1], inputs.[5 * i + 2], inputs.[5 * i + 3], inputs.[5 * i + 4]

                    let t = hi - ScalarMath.Softplus(hi - r) - lo
                    let byLogVar = 0.5f * MathF.Exp(0.5f * (lo + ScalarMath.Softplus t)) * e
                    let raw = g * byLogVar * ScalarMath.Sigmoid t * ScalarMath.Sigmoid(hi - r)
                    let upper = g * byLogVar * ScalarMath.Sigmoid t * (1.0f - ScalarMath.Sigmoid(hi - r))
                    let lower = g * byLogVar * (1.0f - ScalarMath.Sigmoid t)
                    let at = sprintf "r %g, hi %g, lo %g (t %g)" r hi lo t
                    Expect.equal (bits (GaussianHeadFormulas.RawGrad(r, hi, lo, e, g))) (bits raw) ("dL/dr at " + at)
                    Expect.equal (bits (GaussianHeadFormulas.MaxGrad(r, hi, lo, e, g))) (bits upper) ("dL/dhi at " + at)
                    Expect.equal (bits (GaussianHeadFormulas.MinGrad(r, hi, lo, e, g))) (bits lower) ("dL/dlo at " + at)
            }
            test "the CPU Gaussian-head kernels give the per-element formulas' bits, rows split across pieces" {
                // 3001 rows of 7 outputs: the kernels' pieces of 2,048 elements start inside rows, where each piece
                // finds its first element's row and column, and runs of 16 lanes span rows. 1001 rows of 18, with
                // raw log-variances out to ±120, where e^−|hi − r| is below the smallest float (lanes that MathF
                // computes). Element by element, and with the vector exp and log where the processor has them.
                let check (rows: int) (d: int) (spread: float32) =
                    let at = sprintf "%d rows of %d, vector exp and log %b" rows d LibmVector.InUse

                    let xs =
                        [|
                            values 81 [| rows; 2 * d |] -spread spread
                            values 82 [| d |] 0.0f 1.0f
                            values 83 [| d |] -3.0f -1.5f
                            values 84 [| rows; d |] -2.0f 2.0f
                            values 85 [| rows; d |] -1.0f 1.0f
                        |]

                    let h, hi, lo, e, g =
                        xs.[0].ToArray(), xs.[1].ToArray(), xs.[2].ToArray(), xs.[3].ToArray(), xs.[4].ToArray()

                    let bits (values: float32[]) = Array.map BitConverter.SingleToInt32Bits values
                    let mean i j = h.[i * 2 * d + j]
                    let raw i j = h.[i * 2 * d + d + j]

                    Expect.sequenceEqual
                        (bits ((Fused.run cpu GaussianHead.sample () xs.[0..3]).[0].ToArray()))
                        (bits (
                            Array.init (rows * d) (fun k ->
                                GaussianHeadFormulas.Sample(mean (k / d) (k % d), raw (k / d) (k % d), hi.[k % d], lo.[k % d], e.[k]))
                        ))
                        ("samples, " + at)

                    let byRaw k = raw (k / d) (k % d), hi.[k % d], lo.[k % d], e.[k], g.[k]

                    let head =
                        Array.init (rows * 2 * d) (fun c ->
                            let i, j = c / (2 * d), c % (2 * d)

                            if j < d then
                                g.[i * d + j]
                            else
                                GaussianHeadFormulas.RawGrad(byRaw (i * d + j - d)))

                    for input, expected in
                        [
                            HeadInput, head
                            MaxLogVarInput, Array.init (rows * d) (byRaw >> GaussianHeadFormulas.MaxGrad)
                            MinLogVarInput, Array.init (rows * d) (byRaw >> GaussianHeadFormulas.MinGrad)
                            NoiseInput,
                            Array.init (rows * d) (fun k ->
                                let r, upper, lower, _, gk = byRaw k
                                GaussianHeadFormulas.NoiseGrad(r, upper, lower, gk))
                        ] do
                        Expect.sequenceEqual
                            (bits ((Fused.run cpu GaussianHead.gradient input xs).[0].ToArray()))
                            (bits expected)
                            (sprintf "gradient in %A, %s" input at)

                for vectors in List.distinct [ false; LibmVector.Enabled ] do
                    LibmVector.InUse <- vectors

                    try
                        for rows, d, spread in [ 3001, 7, 3.0f; 1001, 18, 120.0f ] do
                            check rows d spread
                    finally
                        LibmVector.InUse <- LibmVector.Enabled
            }
            test "the CPU tanh-Gaussian kernels give the bits of the per-element formulas the GPU kernels call" {
                // The CPU kernels compute σ, u and dL/dm once per element and pass them to the formulas' steps; the
                // whole-element formulas recompute them. Same operations on the same values, so every bit must agree
                // (inside and outside the clamp range: head values in [−2, 2], bounds [−1, 1]). Also 3001 rows of 6
                // (several pieces, runs of 16 lanes spanning rows) with heads out to ±12, where tanh is ±1 and
                // expm1 takes every branch, and 700 rows of 1. Element by element, and with the vector exp and tanh
                // where the processor has them.
                let bits (xs: float32[]) = Array.map BitConverter.SingleToInt32Bits xs

                let check (seed: int) (xs: RawTensor[]) =
                    let n, a = xs.[1].Shape.[0], xs.[1].Shape.[1]
                    let h, e = xs.[0].ToArray(), xs.[1].ToArray()
                    let lo, hi = bounds.Lo, bounds.Hi
                    let m i j = h.[i * 2 * a + j]
                    let r i j = h.[i * 2 * a + a + j]
                    let outputs = Fused.run cpu TanhGaussian.sample bounds xs

                    let action =
                        Array.init (n * a) (fun k -> TanhGaussianFormulas.Action(m (k / a) (k % a), r (k / a) (k % a), e.[k], lo, hi))

                    let logProb =
                        Array.init n (fun i ->
                            Seq.fold
                                (fun total j -> total + TanhGaussianFormulas.LogProbTerm(m i j, r i j, e.[i * a + j], lo, hi))
                                0.0f
                                [ 0 .. a - 1 ])

                    Expect.sequenceEqual
                        (bits (outputs.[0].ToArray()))
                        (bits action)
                        (sprintf "actions, seed %d, vector exp and tanh %b" seed LibmVector.InUse)

                    Expect.sequenceEqual
                        (bits (outputs.[1].ToArray()))
                        (bits logProb)
                        (sprintf "log-densities, seed %d, vector exp and tanh %b" seed LibmVector.InUse)

                    let grads = withGradients seed xs [| [| n; a |]; [| n |] |]
                    let gA, gL = grads.[2].ToArray(), grads.[3].ToArray()
                    let args k = m (k / a) (k % a), r (k / a) (k % a), e.[k], lo, hi, gA.[k], gL.[k / a]

                    let byHead =
                        (Fused.run cpu TanhGaussian.gradient { Bounds = bounds; WrtNoise = false } grads).[0].ToArray()

                    let byNoise =
                        (Fused.run cpu TanhGaussian.gradient { Bounds = bounds; WrtNoise = true } grads).[0].ToArray()

                    let expectedHead =
                        Array.init (n * 2 * a) (fun c ->
                            let i, j = c / (2 * a), c % (2 * a)

                            if j < a then
                                TanhGaussianFormulas.MeanGrad(args (i * a + j))
                            else
                                TanhGaussianFormulas.LogStdGrad(args (i * a + j - a)))

                    Expect.sequenceEqual
                        (bits byHead)
                        (bits expectedHead)
                        (sprintf "head gradient, seed %d, vector exp and tanh %b" seed LibmVector.InUse)

                    Expect.sequenceEqual
                        (bits byNoise)
                        (bits (Array.init (n * a) (args >> TanhGaussianFormulas.NoiseGrad)))
                        (sprintf "noise gradient, seed %d, vector exp and tanh %b" seed LibmVector.InUse)

                let wide (seed: int) (n: int) (a: int) =
                    [| values seed [| n; 2 * a |] -12.0f 12.0f; values (seed + 1) [| n; a |] -4.0f 4.0f |]

                for vectors in List.distinct [ false; LibmVector.Enabled ] do
                    LibmVector.InUse <- vectors

                    try
                        for seed in 0..19 do
                            check seed (tanhGaussianInputs (1000 * seed + 17))

                        check 101 (wide 101 3001 6)
                        check 102 (wide 102 700 1)
                    finally
                        LibmVector.InUse <- LibmVector.Enabled
            }
            test "the CPU product + activation equals its composition bit for bit (edge tiles, k-blocks, batches)" {
                // The kernel activates each stored block with the element-wise kernels' own vector formulas, so no
                // rounding may differ: a scalar formula on edge tiles, or an activation applied before the last
                // k-block is summed, would show here. k = 300 spans two k-blocks of 256; 13 rows and 37 columns
                // leave partial tiles of both the 6-row and the 32- or 16-column micro-kernel, and blocks whose
                // length is no multiple of a vector; 150 rows make two blocks of rows; a 1×5 output is shorter than
                // one vector.
                let bits (x: RawTensor) = x.ToArray() |> Array.map BitConverter.SingleToInt32Bits

                for activation in [ Relu; Silu; Tanh ] do
                    for (transA, transB, batches, k), (m, n) in
                        List.allPairs [ false, false, 0, 300; true, false, 3, 45; false, true, 2, 7 ] [ 13, 37; 150, 37; 1, 5 ] do
                        let batched shape =
                            if batches = 0 then
                                shape
                            else
                                Array.append [| batches |] shape

                        let a = values 11 (batched (if transA then [| k; m |] else [| m; k |])) -4.0f 4.0f
                        let b = values 12 (batched (if transB then [| n; k |] else [| k; n |])) -1.0f 1.0f
                        let bias = values 13 (if batches = 0 then [| n |] else [| batches; 1; n |]) -1.0f 1.0f
                        let attributes = { TransA = transA; TransB = transB; Activation = activation }
                        let fused = Fused.run cpu MatMulActivation.op attributes [| a; b; bias |]
                        let product = cpu.MatMul(transA, transB, a, b, bias)

                        let what =
                            sprintf "%A, transA %b, transB %b, %d batches, %d×%d×%d" activation transA transB batches m k n

                        Expect.sequenceEqual (bits fused.[1]) (bits product) (what + ": the product")
                        Expect.sequenceEqual (bits fused.[0]) (bits (cpu.Unary(activation, product))) (what + ": the activation")
                        // Activated in place of the product (nothing to differentiate): the same bits.
                        let alone = Fused.run cpu MatMulActivation.activationOnly attributes [| a; b; bias |]
                        Expect.sequenceEqual (bits alone.[0]) (bits fused.[0]) (what + ": the activation alone")
            }
            test "on the CPU, every kernel equals its operation's reference composition" { kernelsMatchReferences cpu id }
            testPropertyWithConfig
                configFew
                "the fused gradients (sampling, product + activation) equal the gradients of the reference compositions"
                (fun () ->
                    Prop.forAll (Arb.fromGen (Gen.choose (0, 1_000_000))) (fun seed ->
                        // Each case: its name, its outputs through Tensor.fused, through the reference composition on
                        // differentiable tensors, its Backward called directly (given the output gradients), and inputs.
                        let differentiable
                            : (string *
                              (Tensor[] -> Tensor[]) *
                              (Tensor[] -> Tensor[]) *
                              (RawTensor[] -> RawTensor[] -> RawTensor[]) *
                              RawTensor[]) list =
                            let both (op: FusedOp<'A>) (attributes: 'A) (xs: RawTensor[]) =
                                sprintf "%s %A" op.Name attributes,
                                Tensor.fused op attributes,
                                (fun ts -> op.Reference(Tensor.ops, attributes, ts)),
                                (fun inputs outputGrads ->
                                    let outputs = Fused.run cpu op attributes inputs
                                    op.Backward(cpu, attributes, inputs, outputs, outputGrads, Array.create inputs.Length true)),
                                xs

                            [
                                both TanhGaussian.sample bounds (tanhGaussianInputs seed)
                                both GaussianHead.sample () (gaussianHeadInputs seed)
                                for activation, productOp in
                                    List.allPairs [ Relu; Tanh ] [ MatMulActivation.op; MatMulActivation.activationOnly ] do
                                    both
                                        productOp
                                        { TransA = seed % 2 = 0; TransB = seed % 3 = 0; Activation = activation }
                                        (let m, k, n = 1 + seed % 7, 1 + seed % 5, 1 + seed % 6

                                         [|
                                             values seed (if seed % 2 = 0 then [| k; m |] else [| m; k |]) -1.0f 1.0f
                                             values (seed + 1) (if seed % 3 = 0 then [| n; k |] else [| k; n |]) -1.0f 1.0f
                                             values (seed + 2) [| n |] -1.0f 1.0f
                                         |])
                            ]

                        for name, fusedOutputs, referenceOutputs, backward, xs in differentiable do
                            let inputs = Array.map Tensor.ofRaw xs
                            let weights = fusedOutputs inputs |> Array.mapi (fun i y -> uniform (seed + 100 + i) y.Shape -1.0f 1.0f)
                            let referenceGrads = Diff.grads (weightedSum referenceOutputs weights) inputs

                            let compare (what: string) (grads: RawTensor[]) =
                                Array.iteri2
                                    (fun i (r: Tensor) g ->
                                        closeTo
                                            (sprintf "%s, %s: gradient in input %d" name what i)
                                            kernelTolerance
                                            kernelTolerance
                                            r.Primal
                                            g)
                                    referenceGrads
                                    grads

                            compare
                                "through Tensor.fused"
                                (Diff.grads (weightedSum fusedOutputs weights) inputs |> Array.map (fun g -> g.Primal))

                            compare "its Backward" (backward xs (weights |> Array.map (fun w -> w.Primal)))

                        true))
            test "a fused operation defined outside the library runs as its composition and is differentiated through it" {
                let x = Tensor.ofArray [| 5 |] [| -3.0f; -0.5f; 0.0f; 0.25f; 4.0f |]
                let y = (Tensor.fused softsign () [| x |]).[0]
                let expected = x.ToArray() |> Array.map (fun v -> v / (1.0f + abs v))
                Expect.sequenceEqual (y.ToArray()) expected "values"
                let g = Diff.grad (fun x -> Tensor.sum (Tensor.fused softsign () [| x |]).[0]) x
                // d/dx x/(1 + |x|) = 1/(1 + |x|)² (at 0 too: sign(0) = 0 leaves 1); three float32 operations of the
                // quotient rule in a row: a few ulps (relative 1e-6).
                let slope = x.ToArray() |> Array.map (fun v -> 1.0f / ((1.0f + abs v) * (1.0f + abs v)))

                Array.iteri2
                    (fun i a e -> Expect.floatClose { absolute = 1e-7; relative = 1e-6 } (float a) (float e) (sprintf "gradient %d" i))
                    (g.ToArray())
                    slope

                checkGradient "softsign" (fun xs -> (Tensor.fused softsign () xs).[0]) [| uniform 3 [| 4; 3 |] -2.0f 2.0f |] 3
            }
            test "the counting backend counts a kernel under its operation's name and a composition by its operations" {
                let counter = CountingBackend cpu

                using (Backends.Use counter) (fun _ ->
                    let head, eps = Tensor.zeros [| 4; 6 |], Tensor.zeros [| 4; 3 |]
                    Tensor.tanhGaussianSample -5.0f 2.0f head eps |> ignore
                    Tensor.fused softsign () [| eps |] |> ignore)

                let calls = counter.Counts |> Array.map (fun c -> c.Operation, c.Calls) |> Map.ofArray
                Expect.equal (calls.TryFind "tanhGaussianSample") (Some 1L) "the kernel, by name"
                Expect.equal (calls.TryFind "softsign") None "no kernel: not counted as one operation"
                Expect.equal (calls.TryFind "unary Abs", calls.TryFind "binary div") (Some 1L, Some 1L) "its composition, op by op"
            }
            test "a fused operation refuses a wrong number of inputs, naming them" {
                let ex =
                    Expect.throwsC (fun () -> Fused.run cpu TanhGaussian.sample bounds [| cpu.Full([| 2; 4 |], 0.0f) |] |> ignore) id

                for part in [ "tanhGaussianSample"; "takes 2 inputs"; "head, noise"; "got 1" ] do
                    Expect.stringContains ex.Message part "message"
            }
        ]
