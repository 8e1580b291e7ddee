namespace Maac.Algorithms

open Maac

open System
open Maac.Tensors
open Maac.Nn
open Maac.Optim
open Maac.Envs
open Maac.Rl

/// Which value target trains the critics.
type CriticTarget =
    /// One-step soft TD (SAC).
    | TdTarget
    /// STEVE's inverse-variance combination of model expansions (horizon Settings.CriticHorizon).
    | SteveTarget

/// What an actor objective is given at one gradient step.
type ActorInputs =
    {
        Gamma: float32
        /// The model horizon H of this step (from Algorithm.ActorHorizon).
        Horizon: int
        /// Samples K per start state (from Algorithm.ActorSamples), where they are drawn and which actions pay entropy
        /// (from Settings.ActorSamplesAt and ActorEntropy).
        Choices: PathwiseChoices
        /// The learned model with the task's functions (None before the first fit or without a model).
        Context: ModelContext option
        /// The critics after this step's critic update.
        Critics: Critics
        Alpha: float32
        Key: RandomKey
        /// Start states [B, o].
        Observations: Tensor
        /// The environment step.
        Step: int
    }

/// An algorithm as a composition of the same pieces: whether a model is learned, whether imagined
/// transitions feed the updates, which target trains the critics, and the actor's model horizon and
/// samples (schedules of the training step, so that a user can write, e.g., a growing horizon).
type Algorithm =
    {
        Name: string
        UsesModel: bool
        UsesImaginedData: bool
        CriticTarget: CriticTarget
        ActorHorizon: Settings -> int -> int
        ActorSamples: Settings -> int
        RolloutLength: Settings -> int -> int
        /// The loss the policy minimises, a function of the step's inputs and the policy.
        ActorObjective: ActorInputs -> TanhGaussianPolicy -> Tensor
    }

/// The paper's algorithm and its baselines.
module Algorithms =
    /// MAAC's actor objective (Objectives.maacWith) on the step's inputs; SAC's loss when H = 0 and K = 1.
    let pathwiseActor (i: ActorInputs) (policy: TanhGaussianPolicy) =
        Objectives.maacWith i.Choices i.Gamma i.Horizon i.Context i.Critics i.Alpha i.Key i.Observations policy

    /// Soft actor-critic: model-free, TD targets, H = 0.
    let sac =
        {
            Name = "sac"
            UsesModel = false
            UsesImaginedData = false
            CriticTarget = TdTarget
            ActorHorizon = (fun _ _ -> 0)
            ActorSamples = (fun _ -> 1)
            RolloutLength = (fun _ _ -> 0)
            ActorObjective = pathwiseActor
        }

    /// MBPO: SAC on a mix of real and short imagined rollouts whose length grows from 1 to
    /// Settings.RolloutLength over the first half of training.
    let mbpo =
        { sac with
            Name = "mbpo"
            UsesModel = true
            UsesImaginedData = true
            RolloutLength = fun s step -> 1 + int (float (max 0 (s.RolloutLength - 1)) * min 1.0 (float step / (0.5 * float s.Steps)))
        }

    /// STEVE on SAC: real data only, STEVE critic targets.
    let steve = { sac with Name = "steve"; UsesModel = true; CriticTarget = SteveTarget }

    /// SVG(1): the value gradient through one model step (H = 1, one sample), TD targets.
    let svg1 = { sac with Name = "svg1"; UsesModel = true; ActorHorizon = (fun _ _ -> 1) }

    /// MAAC: imagined data, STEVE targets, the H-step pathwise actor objective with K samples.
    let maac =
        {
            Name = "maac"
            UsesModel = true
            UsesImaginedData = true
            CriticTarget = SteveTarget
            ActorHorizon = (fun s _ -> s.ActorHorizon)
            ActorSamples = (fun s -> s.ActorSamples)
            RolloutLength = (fun s _ -> s.RolloutLength)
            ActorObjective = pathwiseActor
        }

    let all = [ maac; sac; mbpo; steve; svg1 ]

    /// MAAC without the model in the actor objective (H = 0: SAC's actor loss on MAAC's data and critics).
    let maacNoHorizon = { maac with Name = "maac-h0"; ActorHorizon = fun _ _ -> 0 }

    /// MAAC with one-step TD critic targets instead of STEVE's.
    let maacTdTargets = { maac with Name = "maac-td"; CriticTarget = TdTarget }

    /// MAAC with a single sampled path per start state (K = 1).
    let maacSingleSample = { maac with Name = "maac-k1"; ActorSamples = fun _ -> 1 }

    /// The paper's ablations (Figure 4), trainable by name like the algorithms.
    let ablations = [ maacNoHorizon; maacTdTargets; maacSingleSample ]

    let private registered =
        Collections.Concurrent.ConcurrentDictionary<string, Algorithm>(StringComparer.OrdinalIgnoreCase)

    let private builtIn (name: string) =
        all @ ablations
        |> List.tryFind (fun a -> String.Equals(a.Name, name, StringComparison.OrdinalIgnoreCase))

    /// Registers a user-composed algorithm under its name, so that `find` knows it: a run folder of it (whose
    /// config.json names the algorithm) can then be reopened, evaluated and resumed. The names of the built-in
    /// algorithms and ablations are refused; registering the same name again replaces the earlier variant.
    let register (a: Algorithm) =
        if String.IsNullOrWhiteSpace a.Name then
            invalidArg "a" "an algorithm needs a name to be registered"

        if (builtIn a.Name).IsSome then
            invalidArg "a" (sprintf "'%s' is a built-in algorithm; give the variant its own name" a.Name)

        registered.[a.Name] <- a

    /// The algorithm or ablation with this name (built-in or registered); a clear error listing the names otherwise.
    let find (name: string) =
        match builtIn name with
        | Some a -> a
        | None ->
            match registered.TryGetValue name with
            | true, a -> a
            | _ ->
                let known =
                    (all @ ablations |> List.map (fun a -> a.Name)) @ (registered.Keys |> Seq.sort |> Seq.toList)

                invalidArg
                    "name"
                    (sprintf
                        "unknown algorithm '%s'; choose one of %s (a variant of your own must be registered under its name first: Algorithms.register)"
                        name
                        (String.Join(", ", known)))
