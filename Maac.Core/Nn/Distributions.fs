namespace Maac.Nn

open System
open Maac.Tensors

/// An ensemble of diagonal Gaussians: each member maps its inputs to a mean and a log-variance,
/// and the log-variance is kept inside learned soft bounds (Chua et al. 2018):
/// lv ← max − softplus(max − lv); lv ← min + softplus(lv − min).
type GaussianEnsemble =
    {
        Net: EnsembleMlp
        MaxLogVar: Tensor
        MinLogVar: Tensor
    }

    /// The record's parts, declared once (made when the type is first used, not on every call).
    static member val private Parts =
        [
            ParameterPart.nested "net" (fun g -> g.Net) (fun g n -> { g with Net = n })
            ParameterPart.tensor "maxLogVar" (fun g -> g.MaxLogVar) (fun g t -> { g with MaxLogVar = t })
            ParameterPart.tensor "minLogVar" (fun g -> g.MinLogVar) (fun g t -> { g with MinLogVar = t })
        ]

    interface IParameters<GaussianEnsemble> with
        member g.Named = PartsOf.named GaussianEnsemble.Parts g
        member g.WithTensors ts = PartsOf.withTensors GaussianEnsemble.Parts g ts

    interface IParameterTensors with
        member g.Tensors = PartsOf.tensors GaussianEnsemble.Parts g

/// Creating, applying and fitting Gaussian ensembles.
module GaussianEnsemble =
    /// Weight of the penalty that keeps the learned bounds tight: 0.01·(Σ max − Σ min).
    [<Literal>]
    let BoundPenalty = 0.01f

    /// members networks from inDim through hidden layers to a mean and log-variance of outDim each.
    /// The bounds start at 0.5 (max) and −10 (min).
    let init (key: RandomKey) (members: int) (inDim: int) (hidden: int[]) (outDim: int) (activation: Activation) =
        {
            Net = EnsembleMlp.init key members (Array.concat [ [| inDim |]; hidden; [| 2 * outDim |] ]) activation
            MaxLogVar = Tensor.full [| 1; 1; outDim |] 0.5f
            MinLogVar = Tensor.full [| 1; 1; outDim |] -10.0f
        }

    /// x [M, N, in] → mean [M, N, out], bounded log-variance [M, N, out].
    let forward (g: GaussianEnsemble) (x: Tensor) =
        let out = EnsembleMlp.forward g.Net x
        let halves = Tensor.chunk -1 2 out
        let mean, rawLogVar = halves.[0], halves.[1]
        let upper = g.MaxLogVar - Tensor.softplus (g.MaxLogVar - rawLogVar)
        let logVar = g.MinLogVar + Tensor.softplus (upper - g.MinLogVar)
        mean, logVar

    /// Gaussian negative log-likelihood (without the constant) averaged over elements, plus the bound penalty:
    /// mean((μ − y)²·e^(−lv) + lv) + 0.01·(Σ max − Σ min).
    let nll (g: GaussianEnsemble) (x: Tensor) (target: Tensor) =
        let mean, logVar = forward g x
        let err = mean - target
        let perElement = err * err * Tensor.exp (-logVar) + logVar
        Tensor.mean perElement + BoundPenalty * (Tensor.sum g.MaxLogVar - Tensor.sum g.MinLogVar)

/// A tanh-squashed diagonal Gaussian policy (as in SAC): u = μ(s) + σ(s)·ε, a = tanh(u) ∈ (−1, 1)^d.
type TanhGaussianPolicy =
    {
        Net: Mlp
        LogStdMin: float32
        LogStdMax: float32
    }

    interface IParameters<TanhGaussianPolicy> with
        member p.Named = (p.Net :> IParameters<_>).Named
        member p.WithTensors ts = { p with Net = Parameters.rebuild p.Net ts }

    interface IParameterTensors with
        member p.Tensors = Parameters.tensors p.Net

/// Creating, sampling and scoring tanh-Gaussian policies.
module TanhGaussianPolicy =

    /// A policy for obsDim observations and actDim actions with the given hidden sizes (ReLU).
    let init (key: RandomKey) (obsDim: int) (actDim: int) (hidden: int[]) =
        {
            Net = Mlp.init key (Array.concat [ [| obsDim |]; hidden; [| 2 * actDim |] ]) Activation.Relu
            LogStdMin = -20.0f
            LogStdMax = 2.0f
        }

    /// The network's output for each observation [N, 2·act]: means, then log standard deviations before clamping.
    /// Rows are independent and computed the same whatever the batch, so the head of states repeated is the head
    /// repeated, bit for bit: one head can serve several samples of the same states.
    let head (p: TanhGaussianPolicy) (obs: Tensor) = Mlp.forward p.Net obs

    /// The Gaussian before squashing: mean and clamped log standard deviation, each [N, act].
    let distribution (p: TanhGaussianPolicy) (obs: Tensor) =
        let halves = head p obs |> Tensor.chunk -1 2
        halves.[0], Tensor.clamp p.LogStdMin p.LogStdMax halves.[1]

    /// A reparameterised sample for each row of a head (`head`): action [N, act] and its log-probability [N], the
    /// noise drawn from key for N rows. sample p key obs is sampleFromHead p key (head p obs).
    let sampleFromHead (p: TanhGaussianPolicy) (key: RandomKey) (head: Tensor) =
        let eps = Tensor.randnOnDeviceOf head key [| head.Shape.[0]; head.Shape.[1] / 2 |]
        Tensor.tanhGaussianSample p.LogStdMin p.LogStdMax head eps

    /// A reparameterised sample for each observation: action [N, act] and its log-probability [N].
    /// The action is a differentiable function of the parameters (the noise comes from key). One fused operation
    /// (Tensor.tanhGaussianSample) computes it: the log-density's one definition is that operation's reference
    /// composition, which its CPU and GPU kernels are tested against.
    let sample (p: TanhGaussianPolicy) (key: RandomKey) (obs: Tensor) = sampleFromHead p key (head p obs)

    /// K reparameterised samples for each observation [N, o]: actions [K·N, act] and log-probabilities [K·N] in K
    /// blocks of N rows, as sample p key (Tensor.repeatRows K obs) gives them, bit for bit; the network runs once per
    /// observation, so its gradient sums the K copies before its products (the same sums in another order).
    let sampleCopies (p: TanhGaussianPolicy) (key: RandomKey) (copies: int) (obs: Tensor) =
        sampleFromHead p key (Tensor.repeatRows copies (head p obs))

    /// The number of action dimensions.
    let actionDim (p: TanhGaussianPolicy) = (Array.last p.Net.Layers).Bias.Shape.[0] / 2

    /// The deterministic action tanh(μ(s)).
    let deterministic (p: TanhGaussianPolicy) (obs: Tensor) = distribution p obs |> fst |> Tensor.tanh
