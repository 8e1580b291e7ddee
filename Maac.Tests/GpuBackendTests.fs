/// The GPU backend on ILGPU's CPU accelerator (CI has no GPU) and on CUDA where a GPU is found: every raw operation against the
/// CPU backend on random shapes, and a whole MAAC step (value and gradient) on both backends.
module Maac.Tests.GpuBackendTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Nn
open Maac.Rl
open Maac.Cuda
open Maac.Tests.Support

let private cpu = Backends.Get Device.Cpu

let private random (seed: int) (shape: int[]) =
    cpu.Random(Uniform, key seed, shape)
    |> fun r -> cpu.Scalar(AddScalar -0.5f, cpu.Scalar(MulScalar 4.0f, r))

/// |gpu − cpu| ≤ abs + rel·|cpu| elementwise, with the same shape.
let private close (what: string) (absTol: float32) (relTol: float32) (expected: RawTensor) (actual: RawTensor) =
    Expect.equal actual.Shape expected.Shape (what + ": shape")
    let e, a = expected.ToArray(), actual.ToArray()

    for i in 0 .. e.Length - 1 do
        let ok =
            (Single.IsNaN e.[i] && Single.IsNaN a.[i]) || abs (a.[i] - e.[i]) <= absTol + relTol * abs e.[i]

        if not ok then
            failtestf "%s: element %d is %g on the GPU backend, %g on the CPU" what i a.[i] e.[i]

// Element formulas are the same arithmetic, but exp/log/tanh/sin/cos come from different libraries
// (TensorPrimitives vs MathF): a few ulps apart, so relative 1e-5 (≈ 80 ulps) and absolute 1e-6 near zero.
let private elementTol = 1e-6f, 1e-5f

/// Makes a tensor and drops it, in a frame of its own: no stack slot of the caller keeps it reachable.
[<System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)>]
let private dropNew (g: IBackend) (length: int) = g.Full([| length |], 1.0f) |> ignore

/// The suite for one GPU backend (created on first use, once for the whole run).
/// Every case of a union whose cases carry no fields.
let private allCases<'U> () =
    Microsoft.FSharp.Reflection.FSharpType.GetUnionCases typeof<'U>
    |> Array.map (fun c -> Microsoft.FSharp.Reflection.FSharpValue.MakeUnion(c, [||]) :?> 'U)

let private suite (name: string) (gpu: Lazy<GpuBackend>) =
    let onGpu (t: RawTensor) = (gpu.Value :> IBackend).OfArray(t.ToArray(), t.Shape)

    testList
        name
        [
            test "every fused operation has a kernel on this backend (the comparisons below compare kernels)" {
                let has (op: FusedOp<'A>) = Fused.kernelOf gpu.Value op |> ValueOption.isSome

                Expect.isTrue
                    (has MatMulActivation.op
                     && has TanhGaussian.sample
                     && has TanhGaussian.gradient
                     && has GaussianHead.sample
                     && has GaussianHead.gradient
                     && has AdamUpdate.step)
                    "kernels listed"
            }
            test "every fused kernel equals its operation's reference composition" { FusedOpTests.kernelsMatchReferences gpu.Value onGpu }
            test "softplus holds float32 accuracy down to x = -87" {
                let x = (gpu.Value :> IBackend).OfArray(softplusGrid, [| softplusGrid.Length |])
                Expect.isLessThan (softplusWorstError ((gpu.Value :> IBackend).Unary(Softplus, x).ToArray())) 2e-6 "GPU kernel"
            }
            testPropertyWithConfig configFew "unary operations and their gradient kernels match the CPU backend" (fun () ->
                Prop.forAll arbShapeSeed (fun c ->
                    let shape, seed = c.Shape, c.Seed
                    let x = random seed shape
                    let g = random (seed + 1) shape

                    // Every case of the union, so that a new operation is tested (and a kernel without its case fails).
                    for op in allCases<UnaryOp>() do
                        // Log, Sqrt and Reciprocal on positive inputs (away from their poles).
                        let x =
                            match op with
                            | Log
                            | Sqrt
                            | Reciprocal -> cpu.Scalar(AddScalar 2.5f, x)
                            | _ -> x

                        let y = cpu.Unary(op, x)
                        let absT, relT = elementTol
                        close (sprintf "%A" op) absT relT y ((gpu.Value :> IBackend).Unary(op, onGpu x))

                        close
                            (sprintf "%A gradient" op)
                            absT
                            relT
                            (cpu.UnaryGrad(op, x, y, g))
                            ((gpu.Value :> IBackend).UnaryGrad(op, onGpu x, onGpu y, onGpu g))

                    true))

            testPropertyWithConfig configFew "scalar and broadcast binary operations match the CPU backend" (fun () ->
                Prop.forAll arbPairSeed (fun c ->
                    let sa, sb, seed = c.A, c.B, c.Seed
                    let a, b = random seed sa, random (seed + 1) sb
                    let g = random (seed + 2) sa
                    let absT, relT = elementTol

                    for op in [ AddScalar 0.5f; MulScalar -2.0f; PowScalar 2.0f; PowScalar 3.0f; Clamp(-0.5f, 0.7f) ] do
                        close (sprintf "%A" op) absT relT (cpu.Scalar(op, a)) ((gpu.Value :> IBackend).Scalar(op, onGpu a))

                        close
                            (sprintf "%A gradient" op)
                            absT
                            relT
                            (cpu.ScalarGrad(op, a, g))
                            ((gpu.Value :> IBackend).ScalarGrad(op, onGpu a, onGpu g))

                    let positive = cpu.Scalar(AddScalar 2.5f, a)
                    // The same shape on both sides takes the GPU's kernel without index arithmetic.
                    let sameShape = random (seed + 3) sa

                    for op in allCases<BinaryOp>() do
                        let left = if op = Pow then positive else a

                        close
                            (BinaryOp.name op)
                            absT
                            relT
                            (cpu.Binary(op, left, b))
                            ((gpu.Value :> IBackend).Binary(op, onGpu left, onGpu b))

                        close
                            (BinaryOp.name op + ", same shapes")
                            absT
                            relT
                            (cpu.Binary(op, left, sameShape))
                            ((gpu.Value :> IBackend).Binary(op, onGpu left, onGpu sameShape))

                    true))

            testPropertyWithConfig
                configFew
                "reductions, reshape, permute, expand, concat, slice, index select and index add match"
                (fun () ->
                    Prop.forAll arbShapeSeed (fun c ->
                        let shape, seed = c.Shape, c.Seed
                        let x = random seed shape
                        let gx = onGpu x
                        let g = gpu.Value :> IBackend
                        let r = shape.Length
                        // Sums are accumulated in another order (SIMD lanes on the CPU): within n·ε of the sum of magnitudes.
                        let sumTol = 1e-5f * float32 (max 1 x.Numel)

                        for axis in 0 .. r - 1 do
                            close (sprintf "sum over %d" axis) sumTol 1e-5f (cpu.SumAxis(x, axis, false)) (g.SumAxis(gx, axis, false))

                            if shape.[axis] > 0 then
                                close (sprintf "max over %d" axis) 0.0f 0.0f (cpu.MaxAxis(x, axis, true)) (g.MaxAxis(gx, axis, true))

                        close "sum of all" sumTol 1e-5f (cpu.SumAll x) (g.SumAll gx)
                        close "reshape" 0.0f 0.0f (cpu.Reshape(x, [| x.Numel |])) (g.Reshape(gx, [| x.Numel |]))
                        let perm = Array.init r (fun i -> r - 1 - i)
                        close "permute" 0.0f 0.0f (cpu.Permute(x, perm)) (g.Permute(gx, perm))
                        let bigger = Array.append [| 2 |] shape
                        close "expand" 0.0f 0.0f (cpu.Expand(x, bigger)) (g.Expand(gx, bigger))
                        let axis = if r = 0 then 0 else seed % r

                        if r > 0 then
                            close "concat" 0.0f 0.0f (cpu.Concat([| x; x |], axis)) (g.Concat([| gx; gx |], axis))

                        let n = if r = 0 then 0 else shape.[axis]

                        if n > 0 then
                            close "slice" 0.0f 0.0f (cpu.Slice(x, axis, n / 2, n - n / 2)) (g.Slice(gx, axis, n / 2, n - n / 2))
                            let idx = [| n - 1; 0; n / 2; n - 1 |]
                            let sel = cpu.IndexSelect(x, axis, idx)
                            close "indexSelect" 0.0f 0.0f sel (g.IndexSelect(gx, axis, idx))
                            // Repeated indices accumulate in the same order on both backends: equal bits.
                            close "indexAdd" 0.0f 0.0f (cpu.IndexAdd(shape, axis, idx, sel)) (g.IndexAdd(shape, axis, idx, onGpu sel))
                            // A run of consecutive indices is a slice (and its gradient): the GPU takes another path.
                            let run = [| n / 2 .. n - 1 |]
                            let selRun = cpu.IndexSelect(x, axis, run)
                            close "indexSelect of a run" 0.0f 0.0f selRun (g.IndexSelect(gx, axis, run))

                            close
                                "indexAdd of a run"
                                0.0f
                                0.0f
                                (cpu.IndexAdd(shape, axis, run, selRun))
                                (g.IndexAdd(shape, axis, run, onGpu selRun))

                        true))

            testPropertyWithConfig configFew "matrix products (transposes, batches, bias) match within the rounding bound" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip (genProduct 20 30 20) (Gen.elements [ false; true ])))
                    (fun ((m, k, n, ta, tb, batches), withBias) ->
                        let lead = if batches = 0 then [||] else [| batches |]
                        let a = random (m + k) (Array.append lead (if ta then [| k; m |] else [| m; k |]))
                        let b = random (k + n) (Array.append lead (if tb then [| n; k |] else [| k; n |]))
                        let bias = if withBias then random n [| n |] else null
                        // Inputs in [−2, 2]: each product is a k-term sum of terms ≤ 4 in magnitude, rounded differently
                        // (blocked SIMD vs sequential): |error| ≤ 2·k·ε·Σ|terms| ≤ 2·k·ε·4k (+ the bias).
                        let tol = 2.0f * float32 k * 1.2e-7f * (4.0f * float32 k + 2.0f)
                        let gpuBias = if withBias then onGpu bias else null

                        close
                            "matmul"
                            tol
                            0.0f
                            (cpu.MatMul(ta, tb, a, b, bias))
                            ((gpu.Value :> IBackend).MatMul(ta, tb, onGpu a, onGpu b, gpuBias))
                        // With an activation: the product (bias added after it on the GPU, before on the CPU: one more
                        // rounding of a value ≤ 4k + 2) and the activation of it.
                        for activation in [ UnaryOp.Relu; UnaryOp.Silu; UnaryOp.Tanh ] do
                            let attributes = { TransA = ta; TransB = tb; Activation = activation }
                            let operands = if withBias then [| a; b; bias |] else [| a; b |]
                            let cpuOut = Fused.run cpu MatMulActivation.op attributes operands
                            let gpuOut = Fused.run gpu.Value MatMulActivation.op attributes (Array.map onGpu operands)
                            close (sprintf "matmul before %A" activation) (2.0f * tol) 0.0f cpuOut.[1] gpuOut.[1]
                            // Each activation has slope at most 1.1 (swish): the product's error, passed on, plus a few ulps.
                            close (sprintf "matmul and %A" activation) (2.2f * tol + 1e-6f) 1e-5f cpuOut.[0] gpuOut.[0]

                        true))

            testPropertyWithConfig configFew "fused tanh-Gaussian sampling and its gradients match the CPU backend" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip3 (Gen.choose (1, 40)) (Gen.choose (1, 7)) (Gen.choose (0, 1_000_000))))
                    (fun (n, a, seed) ->
                        let g = gpu.Value :> IBackend
                        // Head values in [−2, 2] against clamp bounds [−1, 1]: both sides of both bounds.
                        let head, eps = random seed [| n; 2 * a |], random (seed + 1) [| n; a |]
                        let gA, gL = random (seed + 2) [| n; a |], random (seed + 3) [| n |]
                        let bounds = { Lo = -1.0f; Hi = 1.0f }
                        let sample = Fused.run cpu TanhGaussian.sample bounds [| head; eps |]
                        let gpuSample = Fused.run g TanhGaussian.sample bounds [| onGpu head; onGpu eps |]
                        let absT, relT = elementTol
                        close "actions" absT relT sample.[0] gpuSample.[0]
                        // A sum of a terms, each a few ulps apart between the math libraries.
                        close "log-densities" (absT * float32 a) relT sample.[1] gpuSample.[1]
                        let zeroA, zeroL = cpu.Full([| n; a |], 0.0f), cpu.Full([| n |], 0.0f)

                        for gradA, gradL in [ gA, gL; gA, zeroL; zeroA, gL ] do
                            for wrtNoise in [ false; true ] do
                                let attributes = { Bounds = bounds; WrtNoise = wrtNoise }
                                let operands = [| head; eps; gradA; gradL |]

                                close
                                    (sprintf "gradient (in the noise %b)" wrtNoise)
                                    absT
                                    relT
                                    (Fused.run cpu TanhGaussian.gradient attributes operands).[0]
                                    (Fused.run g TanhGaussian.gradient attributes (Array.map onGpu operands)).[0]

                        true))

            testPropertyWithConfig configFew "fused Gaussian-head sampling and its gradients match the CPU backend" (fun () ->
                Prop.forAll
                    (Arb.fromGen (Gen.zip3 (Gen.choose (1, 40)) (Gen.choose (1, 7)) (Gen.choose (0, 1_000_000))))
                    (fun (r, d, seed) ->
                        let g = gpu.Value :> IBackend

                        let head, eps, grad =
                            random seed [| r; 2 * d |], random (seed + 1) [| r; d |], random (seed + 2) [| r; d |]

                        let hi, lo =
                            cpu.Scalar(AddScalar 1.0f, random (seed + 3) [| d |]), cpu.Scalar(AddScalar -3.0f, random (seed + 4) [| d |])

                        let absT, relT = elementTol

                        close
                            "samples"
                            absT
                            relT
                            (Fused.run cpu GaussianHead.sample () [| head; hi; lo; eps |]).[0]
                            (Fused.run g GaussianHead.sample () (Array.map onGpu [| head; hi; lo; eps |])).[0]

                        for input in [ HeadInput; MaxLogVarInput; MinLogVarInput; NoiseInput ] do
                            close
                                (sprintf "gradient in %A" input)
                                absT
                                relT
                                (Fused.run cpu GaussianHead.gradient input [| head; hi; lo; eps; grad |]).[0]
                                (Fused.run g GaussianHead.gradient input (Array.map onGpu [| head; hi; lo; eps; grad |])).[0]

                        true))

            test "random streams are the CPU backend's, Adam and the finiteness check agree" {
                let g = gpu.Value :> IBackend
                let k = key 42
                close "uniform" 0.0f 0.0f (cpu.Random(Uniform, k, [| 1001 |])) (g.Random(Uniform, k, [| 1001 |]))
                close "normal" 1e-6f 1e-6f (cpu.Random(Normal, k, [| 7; 143 |])) (g.Random(Normal, k, [| 7; 143 |]))

                let w, grad, m, v =
                    random 1 [| 37 |], random 2 [| 37 |], random 3 [| 37 |], cpu.Unary(Abs, random 4 [| 37 |])

                let h = adamHyperAtStepOne

                let onCpu = Fused.run cpu AdamUpdate.step h [| w; grad; m; v |]
                let onDevice = Fused.run g AdamUpdate.step h (Array.map onGpu [| w; grad; m; v |])
                close "adam w" 1e-6f 1e-5f onCpu.[0] onDevice.[0]
                close "adam m" 1e-6f 1e-5f onCpu.[1] onDevice.[1]
                close "adam v" 1e-6f 1e-5f onCpu.[2] onDevice.[2]
                Expect.isTrue (g.AllFinite(onGpu w)) "finite"
                Expect.isFalse (g.AllFinite(g.OfArray([| 1.0f; nanf; 2.0f |], [| 3 |]))) "NaN found"
                Expect.isFalse (g.AllFinite(g.OfArray([| infinityf |], [| 1 |]))) "infinity found"
            }

            test "device buffers of collected tensors are reused, and a reused buffer holds the new values" {
                let g = gpu.Value
                let length = 12_347 // a length no other test uses
                let make (v: float32) = (g :> IBackend).Full([| length |], v)
                dropNew g length
                // Queued launches (also other tests' on the shared backend) may still hold their inputs until they run.
                (g :> IBackend).Synchronize()

                for _ in 1..2 do
                    GC.Collect()
                    GC.WaitForPendingFinalizers()

                let hits = g.Pool.Hits
                let again = make 2.0f
                Expect.isGreaterThan g.Pool.Hits hits "the released buffer served the new tensor"
                Expect.allEqual (again.ToArray()) 2.0f "with its own values"
            }

            test "a release scope gives back what it made except what it keeps, and a released tensor cannot be used" {
                let g = gpu.Value
                let be = g :> IBackend
                let length = 7_919 // a length no other test uses
                checkReleaseScopes be length
                // The released buffers are in the pool at once, without a collection.
                let hits = g.Pool.Hits
                let again = be.Full([| length |], 5.0f)
                Expect.isGreaterThan g.Pool.Hits hits "a released buffer served the next tensor of its length"
                Expect.allEqual (again.ToArray()) 5.0f "with its own values"
                checkConsumingScopes be length
            }

            test "a whole MAAC agent update (STEVE critic target, actor, temperature, Polyak) gives the same result on both backends" {
                let run () =
                    let settings, agent, ctx, batch = smallMaacUpdate ()

                    let next, metrics =
                        Maac.Algorithms.Agent.update (Maac.Algorithms.Algorithms.find "maac") settings (Some ctx) 0 (key 13) agent batch
                    // Adam's first moments after one step are 0.1 × the gradients: the critics', the policy's, α's.
                    metrics,
                    Array.concat [ next.CriticsOpt.FirstMoment; next.PolicyOpt.FirstMoment; next.TemperatureOpt.FirstMoment ]
                    |> Array.map (fun t -> t.Primal)

                let cpuMetrics, cpuMoments = run ()

                let gpuMetrics, gpuMoments =
                    use _ = Backends.Use(gpu.Value)
                    run ()

                Expect.all gpuMoments (fun t -> t.Backend.Device = Device.Cuda 0) "the GPU run computed on the GPU backend"

                Expect.floatClose
                    { absolute = 1e-4; relative = 1e-4 }
                    (float gpuMetrics.CriticLoss)
                    (float cpuMetrics.CriticLoss)
                    "same critic loss"

                Expect.floatClose
                    { absolute = 1e-4; relative = 1e-4 }
                    (float gpuMetrics.ActorLoss)
                    (float cpuMetrics.ActorLoss)
                    "same actor loss"
                // As in the actor step test: different summation orders through two networks and the model, so
                // relative 1e-3 of each tensor's largest entry.
                Array.iter2
                    (fun (c: RawTensor) (g: RawTensor) ->
                        let scale = c.ToArray() |> Array.map abs |> Array.fold max 1e-3f
                        close "gradient (Adam's first moment)" (1e-3f * scale) 0.0f c g)
                    cpuMoments
                    gpuMoments
            }

            test "a whole MAAC actor step gives the same loss and gradient on both backends" {
                let run () =
                    let policy = TanhGaussianPolicy.init (key 1) 3 1 [| 16; 16 |]
                    let critics = Critics.init (key 2) 3 1 [| 16; 16 |]

                    let model =
                        Dynamics.init
                            (key 3)
                            {
                                Members = 3
                                EliteCount = 2
                                Hidden = [| 16 |]
                                LearningRate = 1e-3f
                                BatchSize = 8
                                MaxEpochs = 1
                                HoldoutFraction = 0.2
                                Patience = 1
                                HoldoutSeed = 0L
                            }
                            3
                            1
                            false

                    let model = { model with Elites = [| 0; 2 |] }

                    let ctx =
                        {
                            Model = model
                            Task = (Maac.Envs.Tasks.find "Pendulum").Functions
                            ActionLow = Tensor.ofSeq [ -2.0f ]
                            ActionHigh = Tensor.ofSeq [ 2.0f ]
                            PathNoise = SampledNoise
                        }

                    let obs = Tensor.rand (key 4) [| 32; 3 |] * 2.0f - 1.0f

                    let loss, grads =
                        Diff.valueAndGradParams (Objectives.maac 0.99f 3 2 (Some ctx) critics 0.2f (key 5) obs) policy

                    Tensor.toScalar loss, Parameters.tensors grads |> Array.map (fun t -> t.Primal)

                let cpuLoss, cpuGrads = run ()

                let gpuLoss, gpuGrads =
                    use _ = Backends.Use(gpu.Value)
                    run ()

                Expect.all gpuGrads (fun t -> t.Backend.Device = Device.Cuda 0) "the GPU run computed on the GPU backend"
                Expect.floatClose { absolute = 1e-5; relative = 1e-4 } (float gpuLoss) (float cpuLoss) "same loss"
                // Three model steps and two networks deep, different summation orders: relative 1e-3 of the largest entry.
                Array.iter2
                    (fun (c: RawTensor) (g: RawTensor) ->
                        let scale = c.ToArray() |> Array.map abs |> Array.fold max 1e-3f
                        close "gradient" (1e-3f * scale) 0.0f c g)
                    cpuGrads
                    gpuGrads
            }
        ]

/// The real GPU when this machine has one (with its driver and cuBLAS), else nothing: CI has none.
let private cuda =
    try
        Some(Gpu.cuda 0)
    with :? GpuUnavailableException ->
        None

let tests =
    testList
        "GPU backend"
        [
            // The kernels on ILGPU's CPU accelerator: a kernel bug fails CI, which has no GPU.
            suite "ILGPU CPU accelerator" (lazy (Gpu.cpuSimulator ()))
            match cuda with
            | Some backend -> suite "CUDA" (lazy backend)
            | None -> ()
        ]
