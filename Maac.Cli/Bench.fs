/// The `bench` workloads: the same shapes as shared/bench/torch_maac_step.py (HalfCheetah-sized MAAC).
module Maac.Cli.Bench

open System
open System.Diagnostics
open Maac
open Maac.Tensors
open Maac.Tensors.Cpu
open Maac.Nn
open Maac.Optim

/// Sizes of the reference workloads.
type BenchShape =
    {
        Obs: int
        Act: int
        Members: int
        ModelHidden: int
        Hidden: int
        Batch: int
        Horizon: int
        Samples: int
    }

/// obs 17, act 6, 8 members of 4×200 swish, policy and twin Q 2×256, batch 256, horizon 4, 5 samples.
let reference =
    {
        Obs = 17
        Act = 6
        Members = 8
        ModelHidden = 200
        Hidden = 256
        Batch = 256
        Horizon = 4
        Samples = 5
    }

/// The reference's structure (the same operations) with 4-unit networks, 8 start states and 1 sample: almost no
/// arithmetic, so a step's time is the host's cost of its operations (differentiation layer, backend, launches).
let tiny = { reference with ModelHidden = 4; Hidden = 4; Batch = 8; Samples = 1 }

/// The networks and data of one benchmark run.
type private Setup =
    {
        Shape: BenchShape
        Context: Maac.Rl.ModelContext
        Policy: TanhGaussianPolicy
        Critics: Maac.Rl.Critics
        Start: Tensor
        ModelInputs: Tensor
        ModelTargets: Tensor
    }

let private setup (s: BenchShape) =
    let k = RandomKey.split 8 (RandomKey.ofSeed 0L)

    let model =
        Maac.Rl.Dynamics.init
            k.[0]
            {
                Members = s.Members
                EliteCount = s.Members
                Hidden = Array.create 4 s.ModelHidden
                LearningRate = 1e-3f
                BatchSize = s.Batch
                MaxEpochs = 1
                HoldoutFraction = 0.2
                Patience = 1
                HoldoutSeed = 0L
            }
            s.Obs
            s.Act
            true

    let critics = Maac.Rl.Critics.init k.[2] s.Obs s.Act [| s.Hidden; s.Hidden |]

    {
        Shape = s
        // The model predicts state change and reward, as in the reference (no task reward function).
        Context =
            {
                Model = model
                Task = { Reward = None; Termination = None }
                ActionLow = Tensor.full [| s.Act |] -1.0f
                ActionHigh = Tensor.ones [| s.Act |]
                PathNoise = Maac.Rl.SampledNoise
            }
        Policy = TanhGaussianPolicy.init k.[1] s.Obs s.Act [| s.Hidden; s.Hidden |]
        Critics = critics
        Start = Tensor.randn k.[4] [| s.Batch; s.Obs |]
        ModelInputs = Tensor.randn k.[5] [| s.Members; s.Batch; s.Obs + s.Act |]
        ModelTargets = Tensor.randn k.[6] [| s.Members; s.Batch; s.Obs + 1 |]
    }

/// Median and minimum milliseconds of `reps` timed runs after `warmup` untimed ones (each run ends when the
/// device has finished its work), the median time until the host had queued everything, GC pauses and
/// allocation per run.
let private time (warmup: int) (reps: int) (f: int -> unit) =
    let once i =
        f i
        let queued = Stopwatch.GetTimestamp()
        Backends.Default.Synchronize()
        queued

    for i in 1..warmup do
        once -i |> ignore

    let pause0 = GC.GetTotalPauseDuration()
    let bytes0 = GC.GetTotalAllocatedBytes(false)

    let runs =
        Array.init reps (fun i ->
            let start = Stopwatch.GetTimestamp()
            let queued = once i
            Stopwatch.GetElapsedTime(start).TotalMilliseconds, Stopwatch.GetElapsedTime(start, queued).TotalMilliseconds)

    let gcMs = (GC.GetTotalPauseDuration() - pause0).TotalMilliseconds / float reps
    let allocMb = float (GC.GetTotalAllocatedBytes(false) - bytes0) / 1e6 / float reps
    let ts = runs |> Array.map fst |> Array.sort
    let queuedTs = runs |> Array.map snd |> Array.sort
    ts.[reps / 2], ts.[0], queuedTs.[reps / 2], gcMs, allocMb

/// The most product shapes printCounts lists.
let private listedShapes = 16

/// Prints what one step asked of the backend, the operations taking the most time first, then the matrix products by
/// shape: calls, elements and milliseconds per step (on the CPU each operation's own time, on a GPU the time to queue
/// it).
let private printCounts (name: string) (steps: int) (counter: CountingBackend) =
    let perStep (x: int64) = float x / float steps
    let msPerStep (seconds: float) = seconds * 1e3 / float steps
    printfn "maac %s: %.0f raw operations per step (the time above includes the counter's own cost)" name (perStep counter.Total)
    printfn "maac %s: %.3f GFLOP of matrix products per step" name (perStep counter.ProductFlops / 1e9)

    for c in counter.Counts |> Array.sortByDescending (fun c -> c.Seconds) do
        printfn
            "  %-36s %8.1f calls/step %12.0f elements/step %9.3f ms/step"
            c.Operation
            (perStep c.Calls)
            (perStep c.Elements)
            (msPerStep c.Seconds)

    let products = counter.Products

    printfn
        "maac %s: matrix products by shape, %d of %d shapes (batches × (m×n, k))"
        name
        (min listedShapes products.Length)
        products.Length

    for p in Array.truncate listedShapes products do
        // A product faster than the clock's resolution has no rate to show.
        let rate =
            if p.Seconds > 0.0 then
                sprintf "%7.1f GFLOP/s" (float p.Shape.Flops * float p.Calls / p.Seconds / 1e9)
            else
                "      - GFLOP/s"

        printfn "  %-22s %-32s %6.1f calls/step %9.3f ms/step %s" p.Operation (string p.Shape) (perStep p.Calls) (msPerStep p.Seconds) rate

    counter.Reset()

/// The MAAC actor's step as the library runs it (H model steps, K samples per start state, terminal min-Q, α = 0.2):
/// each call one Adam step of the policy, which the workload keeps.
let private actorWorkload (shape: BenchShape) (su: Setup) (root: RandomKey) =
    // As in the agent's update (and PyTorch's optimiser): no per-parameter finiteness read inside the step.
    let cfg = { AdamConfig.WithLearningRate 3e-4f with CheckFinite = false }
    let mutable policy = su.Policy
    let mutable policyOpt = Adam.init su.Policy

    fun (i: int) ->
        // A step keeps the new optimiser state and parameters (the rest is released when it ends).
        let o, p =
            Tensor.releasing Adam.tensors (fun () ->
                let loss =
                    Maac.Rl.Objectives.maac
                        0.99f
                        shape.Horizon
                        shape.Samples
                        (Some su.Context)
                        su.Critics
                        0.2f
                        (RandomKey.fold (int64 i) root)
                        su.Start

                let _, g = Diff.valueAndGradParams loss policy
                Adam.step cfg policyOpt policy g)

        policyOpt <- o
        policy <- p

/// One Adam step of the dynamics ensemble on its NLL, per call.
let private modelWorkload (su: Setup) =
    let cfg = { AdamConfig.WithLearningRate 1e-3f with CheckFinite = false }
    let mutable model = su.Context.Model.Net
    let mutable modelOpt = Adam.init model

    // A chain of minibatch steps, as model fitting runs them: each consumes the state its predecessor made (not the
    // setup's model, which the update workload shares).
    fun (_: int) ->
        let consumed =
            if obj.ReferenceEquals(model, su.Context.Model.Net) then
                [||]
            else
                Adam.tensors (modelOpt, model)

        let o, m =
            Tensor.replacing consumed Adam.tensors (fun () ->
                let _, g =
                    Diff.valueAndGradParams (fun m -> GaussianEnsemble.nll m su.ModelInputs su.ModelTargets) model

                Adam.step cfg modelOpt model g)

        modelOpt <- o
        model <- m

/// One whole agent update as training does it: STEVE critic target, MAAC actor, temperature, Polyak, and the
/// update's single read-back of losses and gradient probes (HalfCheetah's settings, this batch size).
let private updateWorkload (shape: BenchShape) (su: Setup) (root: RandomKey) =
    let settings =
        { Maac.Algorithms.Settings.forTask "HalfCheetah" "maac" with
            BatchSize = shape.Batch
            Hidden = [| shape.Hidden; shape.Hidden |]
            ModelHidden = Array.create 4 shape.ModelHidden
        }

    let mutable agent =
        { Maac.Algorithms.Agent.init settings (RandomKey.ofSeed 2L) shape.Obs shape.Act true with
            Model = su.Context.Model
        }

    let batch: Maac.Rl.Batch =
        let k = RandomKey.split 4 (RandomKey.ofSeed 3L)

        {
            Obs = su.Start
            Action = Tensor.rand k.[0] [| shape.Batch; shape.Act |] * 2.0f - 1.0f
            Reward = Tensor.randn k.[1] [| shape.Batch |]
            NextObs = Tensor.randn k.[2] [| shape.Batch; shape.Obs |]
            Done = Tensor.zeros [| shape.Batch |]
        }

    let maac = Maac.Algorithms.Algorithms.find "maac"

    // A chain of updates, as in training: each consumes the state its predecessor made.
    fun (i: int) ->
        let next, _ =
            Maac.Algorithms.Agent.updateReplacingWith
                Maac.Algorithms.StageClock.untimed
                maac
                settings
                (Some su.Context)
                (max 0 i)
                (RandomKey.fold (int64 i) root)
                agent
                batch

        agent <- next

/// The cost of one operation on a one-element tensor, launch to completion, averaged over a queue of them: the
/// floor under any step made of that many operations. With keep, every tensor stays alive (no reuse).
let private opCostOver (count: int) (keep: bool) =
    let kept = ResizeArray()

    let fillOne () =
        let t = Backends.Default.Full([| 1 |], 0.0f)

        if keep then
            kept.Add t

    for _ in 1..200 do
        fillOne ()

    Backends.Default.Synchronize()
    let sw = Stopwatch.StartNew()

    for _ in 1..count do
        fillOne ()

    Backends.Default.Synchronize()
    sw.Elapsed.TotalMilliseconds * 1000.0 / float count

/// Prints what one small operation costs on this device; on a GPU, where its host time goes: the bare launch, the
/// pool's collections, device allocation.
let private printOperationCosts (device: string) =
    let opCost = opCostOver 5000
    printfn "maac %s one small operation (full [1]): %.2f µs" device (opCost false)

    match Backends.Default with
    | :? Maac.Cuda.GpuBackend as g ->
        printfn "maac %s one bare kernel launch (ILGPU): %.2f µs" device (g.MeasureLaunchMicroseconds 5000)
        let collectAfter = Maac.Cuda.DevicePool.CollectAfter
        Maac.Cuda.DevicePool.CollectAfter <- Int32.MaxValue
        printfn "maac %s one small operation without the pool's collections: %.2f µs" device (opCost false)
        printfn "maac %s one small operation whose tensor stays alive (a device allocation each): %.2f µs" device (opCost true)
        // Every buffer free in the pool (5000 made, dropped and collected), then 1000 operations: the pooled path alone.
        opCost false |> ignore
        let collect = Stopwatch.StartNew()
        GC.Collect(1, GCCollectionMode.Forced, true)
        GC.WaitForPendingFinalizers()
        printfn "maac %s one forced collection with about 5000 dropped tensors: %.2f ms" device collect.Elapsed.TotalMilliseconds
        printfn "maac %s one small operation on a pooled buffer: %.2f µs" device (opCostOver 1000 false)
        Maac.Cuda.DevicePool.CollectAfter <- collectAfter
    | _ -> ()

/// On a GPU: kernel launches, device allocations and pool collections so far.
let private gpuCounters (counter: CountingBackend option) =
    match counter |> Option.map (fun c -> c.Inner) |> Option.defaultValue Backends.Default with
    | :? Maac.Cuda.GpuBackend as g -> Some(g.Launches, g.Pool.Misses, g.Pool.Collections)
    | _ -> None

/// Times one workload (5 warm-up steps, then reps) and prints its line, with the GPU's counts per step and, with a
/// counter, its operations per step.
let private timeWorkload (device: string) (reps: int) (counter: CountingBackend option) (name: string) (step: int -> unit) =
    let before = gpuCounters counter
    let med, best, queued, gc, alloc = time 5 reps step

    let perStep =
        match before, gpuCounters counter with
        | Some(l0, m0, c0), Some(l1, m1, c1) ->
            let n = float (reps + 5)

            sprintf
                "; %.0f kernel launches, %.1f device allocations, %.2f pool collections per step"
                (float (l1 - l0) / n)
                (float (m1 - m0) / n)
                (float (c1 - c0) / n)
        | _ -> ""

    printfn
        "maac %s %s: median %.3f ms  min %.3f ms  (host done queueing at %.3f ms; GC pauses %.1f ms/step, %.2f MB fresh allocation/step%s)"
        device
        name
        med
        best
        queued
        gc
        alloc
        perStep

    counter |> Option.iter (printCounts name (reps + 5))

/// With count, a CountingBackend over the default backend, made the default until the returned scope is disposed;
/// without, nothing and a scope that does nothing.
let countingWhen (count: bool) =
    if count then
        let c = CountingBackend(Backends.Default)
        Some c, Backends.Use c
    else
        None,
        { new IDisposable with
            member _.Dispose() = ()
        }

/// Runs the workloads and prints `actor_step: median X ms`, `model_step: …` and `update_step: …` (a whole agent
/// update, which PyTorch's reference does not time). With countOps, every raw operation goes through a
/// CountingBackend and each workload's operations per step are listed after its time.
let run (device: Device) (threads: int) (reps: int) (countOps: bool) (shape: BenchShape) =
    CpuSettings.Threads <- threads

    let counter, counting = countingWhen countOps
    use _counting = counting
    let su = setup shape
    let root = RandomKey.ofSeed 1L

    let workloads =
        [
            "actor_step", actorWorkload shape su root
            "model_step", modelWorkload su
            "update_step", updateWorkload shape su root
        ]

    let device =
        match device, Backends.Default with
        | Device.Cpu, _ -> sprintf "cpu threads=%d (%s)" threads CpuBackend.KernelName
        | _, (:? Maac.Cuda.GpuBackend as g) when not g.UsesCublas -> "ilgpu-cpu (the GPU kernels on ILGPU's CPU accelerator)"
        | _ -> string device

    printOperationCosts device
    counter |> Option.iter (fun c -> c.Reset())

    for name, step in workloads do
        timeWorkload device reps counter name step
