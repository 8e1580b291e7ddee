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
    { Obs: int; Act: int; Members: int; ModelHidden: int; Hidden: int; Batch: int; Horizon: int; Samples: int }

/// obs 17, act 6, 8 members of 4×200 swish, policy and twin Q 2×256, batch 256, horizon 4, 5 samples.
let reference = { Obs = 17; Act = 6; Members = 8; ModelHidden = 200; Hidden = 256; Batch = 256; Horizon = 4; Samples = 5 }

/// The networks and data of one benchmark run.
type private Setup =
    { Shape: BenchShape
      Model: GaussianEnsemble
      Policy: TanhGaussianPolicy
      Q1: Mlp
      Q2: Mlp
      Start: Tensor
      ModelInputs: Tensor
      ModelTargets: Tensor }

let private setup (s: BenchShape) =
    let k = RandomKey.split 8 (RandomKey.ofSeed 0L)
    let outDim = s.Obs + 1 // state change and reward
    { Shape = s
      Model = GaussianEnsemble.init k.[0] s.Members (s.Obs + s.Act) (Array.create 4 s.ModelHidden) outDim Activation.Silu
      Policy = TanhGaussianPolicy.init k.[1] s.Obs s.Act [| s.Hidden; s.Hidden |]
      Q1 = Mlp.init k.[2] [| s.Obs + s.Act; s.Hidden; s.Hidden; 1 |] Activation.Relu
      Q2 = Mlp.init k.[3] [| s.Obs + s.Act; s.Hidden; s.Hidden; 1 |] Activation.Relu
      Start = Tensor.randn k.[4] [| s.Batch; s.Obs |]
      ModelInputs = Tensor.randn k.[5] [| s.Members; s.Batch; s.Obs + s.Act |]
      ModelTargets = Tensor.randn k.[6] [| s.Members; s.Batch; outDim |] }

/// One step of the ensemble: each row goes to one random member (rows permuted, split into M equal
/// groups, evaluated as one batched product, then put back in order), as the reference's grouped variant.
let private modelStep (su: Setup) (key: RandomKey) (x: Tensor) =
    let rows = x.Shape.[0]
    let perm = RandomKey.permutation rows key
    let inverse = Array.zeroCreate rows
    perm |> Array.iteri (fun i p -> inverse.[p] <- i)
    let grouped = Tensor.indexSelect 0 perm x |> Tensor.reshape [| su.Shape.Members; -1; x.Shape.[1] |]
    let mean, logVar = GaussianEnsemble.forward su.Model grouped
    let back (t: Tensor) = t |> Tensor.reshape [| rows; -1 |] |> Tensor.indexSelect 0 inverse
    back mean, back logVar

/// The MAAC actor objective of the reference: H model steps with K samples per start state,
/// entropy along the path, terminal min-Q; returns the loss to minimise.
let private actorLoss (su: Setup) (key: RandomKey) (policy: TanhGaussianPolicy) =
    let s = su.Shape
    let keys = RandomKey.split (3 * s.Horizon + 1) key
    let start = Tensor.expand [| s.Samples; s.Batch; s.Obs |] su.Start |> Tensor.reshape [| s.Samples * s.Batch; s.Obs |]
    let mutable state = start
    let mutable ret = Tensor.zeros [| s.Samples * s.Batch |]
    let mutable logps = Tensor.zeros [| s.Samples * s.Batch |]
    let mutable disc = 1.0f
    for t in 0 .. s.Horizon - 1 do
        let a, logp = TanhGaussianPolicy.sample policy keys.[3 * t] state
        logps <- logps + disc * logp
        let mean, logVar = modelStep su keys.[3 * t + 1] (Tensor.concat -1 [| state; a |])
        let out = mean + Tensor.exp (0.5f * logVar) * Tensor.randnLike keys.[3 * t + 2] mean
        let parts = Tensor.split -1 [| 1; s.Obs |] out
        ret <- ret + disc * Tensor.squeeze -1 parts.[0]
        state <- state + parts.[1]
        disc <- disc * 0.99f
    let a, _ = TanhGaussianPolicy.sample policy keys.[3 * s.Horizon] state
    let sa = Tensor.concat -1 [| state; a |]
    let q = Tensor.minimum (Mlp.forward su.Q1 sa) (Mlp.forward su.Q2 sa) |> Tensor.squeeze -1
    ret <- ret + disc * q
    -(Tensor.mean (ret - 0.2f * logps))

/// Median and minimum milliseconds of `reps` timed runs after `warmup` untimed ones.
let private time (warmup: int) (reps: int) (f: int -> unit) =
    for i in 1 .. warmup do f -i
    let pause0 = GC.GetTotalPauseDuration()
    let bytes0 = GC.GetTotalAllocatedBytes(false)
    let ts =
        Array.init reps (fun i ->
            let sw = Stopwatch.StartNew()
            f i
            sw.Elapsed.TotalMilliseconds)
    let gcMs = (GC.GetTotalPauseDuration() - pause0).TotalMilliseconds / float reps
    let allocMb = float (GC.GetTotalAllocatedBytes(false) - bytes0) / 1e6 / float reps
    Array.sortInPlace ts
    ts.[reps / 2], ts.[0], gcMs, allocMb

/// Runs both workloads and prints `actor_step: median X ms` and `model_step: median X ms`.
let run (threads: int) (reps: int) (shape: BenchShape) =
    CpuSettings.Threads <- threads
    let su = setup shape
    let actorCfg = AdamConfig.WithLearningRate 3e-4f
    let modelCfg = AdamConfig.WithLearningRate 1e-3f
    let mutable policy = su.Policy
    let mutable policyOpt = Adam.init su.Policy
    let mutable model = su.Model
    let mutable modelOpt = Adam.init su.Model
    let root = RandomKey.ofSeed 1L
    let actorStep (i: int) =
        let _, g = Diff.valueAndGradParams (actorLoss su (RandomKey.fold (int64 i) root)) policy
        let o, p = Adam.step actorCfg policyOpt policy g
        policyOpt <- o
        policy <- p
    let modelStep (_: int) =
        let _, g = Diff.valueAndGradParams (fun m -> GaussianEnsemble.nll m su.ModelInputs su.ModelTargets) model
        let o, m = Adam.step modelCfg modelOpt model g
        modelOpt <- o
        model <- m
    let device = sprintf "cpu threads=%d (%s)" threads CpuBackend.KernelName
    for name, step in [ "actor_step", actorStep; "model_step", modelStep ] do
        let med, best, gc, alloc = time 5 reps step
        printfn "maac %s %s: median %.3f ms  min %.3f ms  (GC pauses %.1f ms/step, %.0f MB fresh allocation/step)" device name med best gc alloc
