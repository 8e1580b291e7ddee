namespace Maac.Rl

open Maac.Tensors
open Maac.Nn
open Maac.Envs

/// The entropy temperature α = exp(LogAlpha), learned towards a target entropy.
type Temperature =
    {
        LogAlpha: Tensor
    }

    /// The record's parts, declared once (made when the type is first used, not on every call).
    static member val private Parts = [ ParameterPart.tensor "logAlpha" (fun t -> t.LogAlpha) (fun _ a -> { LogAlpha = a }) ]

    interface IParameters<Temperature> with
        member t.Named = PartsOf.named Temperature.Parts t
        member t.WithTensors ts = PartsOf.withTensors Temperature.Parts t ts

    interface IParameterTensors with
        member t.Tensors = PartsOf.tensors Temperature.Parts t

/// The parts the pathwise actor objective is composed of; replace any of them to build a variant
/// (another policy class, true dynamics instead of a learned model, another terminal value).
type PathwiseParts =
    {
        /// K reparameterised actions for each row of states and their log-probabilities: key → K → states [N, o] →
        /// (actions [K·N, a], log π [K·N]), in K blocks of N rows (the states' rows as Tensor.repeatRows K lays
        /// them out). A policy whose samples start from a per-state head can compute it once per state
        /// (TanhGaussianPolicy.sampleCopies); PathwiseParts.actOnCopies makes this from one action per row.
        Act: RandomKey -> int -> Tensor -> Tensor * Tensor
        /// One model step: key → states → actions → (next states, rewards, done flags), all differentiable except done.
        Step: RandomKey -> Tensor -> Tensor -> Tensor * Tensor * Tensor
        /// The value that closes the horizon: states [N, o] → K actions at each [K, N, a] → values [N] (K = 1 when
        /// every path has its own terminal action).
        Terminal: Tensor -> Tensor -> Tensor
    }

/// Building pathwise parts.
module PathwiseParts =
    /// An Act from a sampler of one action per row of states: the states repeated K times (Tensor.repeatRows), then
    /// sampled.
    let actOnCopies (sample: RandomKey -> Tensor -> Tensor * Tensor) =
        fun (key: RandomKey) (copies: int) (states: Tensor) -> sample key (Tensor.repeatRows copies states)

/// Where the K samples per start state of the pathwise objective are drawn.
type SamplePlacement =
    /// K independent paths per start state, each closed by its own terminal action (the authors' October 2019 code).
    | WholePaths
    /// One path per start state; K actions drawn at its last state, each critic averaged over them before the
    /// minimum (the authors' January 2020 code): about K times less policy and model work.
    | ActionsAtHorizon

/// Which actions' entropy the pathwise objective pays (α log π subtracted from the return).
type PathEntropy =
    /// Every action along the path and the terminal action(s): a soft return throughout.
    | EveryStep
    /// The first action only; the terminal value carries no entropy term (the authors' code).
    | FirstAction

/// The pathwise objective's choices besides its horizon: samples per start state, where they are drawn, and which
/// actions pay entropy.
type PathwiseChoices = { Samples: int; Placement: SamplePlacement; Entropy: PathEntropy }

/// Actor and temperature objectives.
module Objectives =
    /// Today's default choices with K samples: K whole paths, entropy at every step.
    let wholePaths (samples: int) = { Samples = samples; Placement = WholePaths; Entropy = EveryStep }

    /// The pathwise objective (as a loss to minimise) with the given choices: H reparameterised steps of policy and
    /// model from each start state (K paths each, or one), J = Σₜ<H γᵗ (rₜ − α log πₜ) + γᴴ (V(s_H, a_H) − α log π),
    /// the entropy terms where the choices put them, cut where the step's done flag says so, averaged over start
    /// states and paths.
    let pathwiseWith
        (choices: PathwiseChoices)
        (gamma: float32)
        (horizon: int)
        (parts: PathwiseParts)
        (alpha: float32)
        (key: RandomKey)
        (obs: Tensor)
        =
        if horizon < 0 then
            invalidArg "horizon" (sprintf "the horizon must not be negative, got %d" horizon)

        if choices.Samples < 1 then
            invalidArg "samples" (sprintf "at least one sample per start state is needed, got %d" choices.Samples)

        let pathsPerStart =
            if choices.Placement = WholePaths then
                choices.Samples
            else
                1

        let actionsAtEnd =
            if choices.Placement = ActionsAtHorizon then
                choices.Samples
            else
                1

        let paysEntropy t =
            match choices.Entropy with
            | EveryStep -> true
            | FirstAction -> t = 0

        let keys = RandomKey.split (2 * horizon + 1) key

        // At t = 0 the states are the start states, once per path: the policy acts on the starts with that many
        // copies (its head once per start state, where it has one).
        let stepAt (t: int) (s: Tensor) =
            let a, logp =
                if t = 0 then
                    parts.Act keys.[0] pathsPerStart obs
                else
                    parts.Act keys.[2 * t] 1 s

            let next, r, d = parts.Step keys.[2 * t + 1] s a
            next, (if paysEntropy t then r - alpha * logp else r), d

        let path =
            ImaginedPath.start (Tensor.repeatRows pathsPerStart obs) |> ImaginedPath.unroll gamma horizon stepAt

        let rows = path.State.Shape.[0]
        let a, logp = parts.Act keys.[2 * horizon] actionsAtEnd path.State
        let value = parts.Terminal path.State (Tensor.reshape [| actionsAtEnd; rows; -1 |] a)

        let terminal =
            if not (paysEntropy horizon) then
                value
            elif actionsAtEnd = 1 then
                value - alpha * logp
            else
                value - alpha * (Tensor.reshape [| actionsAtEnd; rows |] logp |> Tensor.meanAxis 0 false)

        -(Tensor.mean (ImaginedPath.close path terminal))

    /// The pathwise objective with K whole paths per start state and entropy at every step (pathwiseWith
    /// (wholePaths K)).
    let pathwise (gamma: float32) (horizon: int) (samples: int) (parts: PathwiseParts) (alpha: float32) (key: RandomKey) (obs: Tensor) =
        pathwiseWith (wholePaths samples) gamma horizon parts alpha key obs

    /// MAAC's parts: the tanh-Gaussian policy, the learned ensemble (with the task's reward and
    /// termination), and the smaller of the twin critics (each averaged over the terminal actions) at the horizon.
    let maacParts (ctx: ModelContext option) (critics: Critics) (policy: TanhGaussianPolicy) =
        {
            Act = TanhGaussianPolicy.sampleCopies policy
            Step =
                fun k s a ->
                    match ctx with
                    | Some c -> Rollout.step c k s a
                    | None -> invalidArg "ctx" "a model horizon above 0 needs a model"
            Terminal = Critics.minOfMeans critics
        }

    /// The MAAC policy objective with the given choices: the pathwise objective with MAAC's parts.
    let maacWith
        (choices: PathwiseChoices)
        (gamma: float32)
        (horizon: int)
        (ctx: ModelContext option)
        (critics: Critics)
        (alpha: float32)
        (key: RandomKey)
        (obs: Tensor)
        (policy: TanhGaussianPolicy)
        =
        if horizon > 0 && ctx.IsNone then
            invalidArg "ctx" "a model horizon above 0 needs a model"

        pathwiseWith choices gamma horizon (maacParts ctx critics policy) alpha key obs

    /// The MAAC policy objective with K whole paths and entropy at every step. With H = 0 and K = 1 this is SAC's
    /// actor loss exactly.
    let maac
        (gamma: float32)
        (horizon: int)
        (samples: int)
        (ctx: ModelContext option)
        (critics: Critics)
        (alpha: float32)
        (key: RandomKey)
        (obs: Tensor)
        (policy: TanhGaussianPolicy)
        =
        maacWith (wholePaths samples) gamma horizon ctx critics alpha key obs policy

    /// SAC's actor loss E[α log π(a|s) − min Q(s, a)], written directly (the reference for H = 0).
    let sac (critics: Critics) (alpha: float32) (key: RandomKey) (obs: Tensor) (policy: TanhGaussianPolicy) =
        let keys = RandomKey.split 1 key
        let a, logp = TanhGaussianPolicy.sample policy keys.[0] obs
        Tensor.mean (alpha * logp - Critics.minQ critics obs a)

    /// The temperature loss −log α · (log π + target entropy), averaged (log π held fixed).
    let temperature (targetEntropy: float32) (logp: Tensor) (t: Temperature) =
        -(Tensor.mean (t.LogAlpha * Tensor.stopGradient (logp + targetEntropy)))

    /// The twin critic regression loss to a fixed target y.
    let critic (obs: Tensor) (act: Tensor) (y: Tensor) (c: Critics) =
        let q1, q2 = Critics.both c obs act
        let y = Tensor.stopGradient y
        Tensor.mean ((q1 - y) * (q1 - y)) + Tensor.mean ((q2 - y) * (q2 - y))
