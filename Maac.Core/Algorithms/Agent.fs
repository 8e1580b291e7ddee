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

/// All learned state of an agent (parameters and optimiser moments): data, replaced by each update. As a parameter
/// collection its tensors are named as in checkpoints ("policy.layer0.weight", "policyOpt.m.0", "model.net...",
/// "modelStats.inputMean", ...); Adam's step counts and the model's elites are not tensors.
type AgentState =
    {
        Policy: TanhGaussianPolicy
        PolicyOpt: AdamState
        Critics: Critics
        CriticsOpt: AdamState
        TargetCritics: Critics
        Temperature: Temperature
        TemperatureOpt: AdamState
        Model: DynamicsModel
        ModelOpt: AdamState
    }

    interface IParameters<AgentState> with
        member a.Named =
            let part (prefix: string) (p: IParameters<'P>) = Parameters.prefixed prefix p.Named
            let m = a.Model

            Array.concat
                [
                    part "policy" a.Policy
                    part "policyOpt" a.PolicyOpt
                    part "critics" a.Critics
                    part "criticsOpt" a.CriticsOpt
                    part "targetCritics" a.TargetCritics
                    part "temperature" a.Temperature
                    part "temperatureOpt" a.TemperatureOpt
                    part "model" m.Net
                    part "modelOpt" a.ModelOpt
                    Parameters.prefixed
                        "modelStats"
                        [|
                            "inputMean", m.InputMean
                            "inputStd", m.InputStd
                            "targetMean", m.TargetMean
                            "targetStd", m.TargetStd
                        |]
                ]

        member a.WithTensors ts =
            let mutable offset = 0
            let policy = Parameters.take a.Policy ts &offset
            let policyOpt = Parameters.take a.PolicyOpt ts &offset
            let critics = Parameters.take a.Critics ts &offset
            let criticsOpt = Parameters.take a.CriticsOpt ts &offset
            let targetCritics = Parameters.take a.TargetCritics ts &offset
            let temperature = Parameters.take a.Temperature ts &offset
            let temperatureOpt = Parameters.take a.TemperatureOpt ts &offset
            let net = Parameters.take a.Model.Net ts &offset
            let modelOpt = Parameters.take a.ModelOpt ts &offset

            {
                Policy = policy
                PolicyOpt = policyOpt
                Critics = critics
                CriticsOpt = criticsOpt
                TargetCritics = targetCritics
                Temperature = temperature
                TemperatureOpt = temperatureOpt
                ModelOpt = modelOpt
                Model =
                    { a.Model with
                        Net = net
                        InputMean = ts.[offset]
                        InputStd = ts.[offset + 1]
                        TargetMean = ts.[offset + 2]
                        TargetStd = ts.[offset + 3]
                    }
            }

/// Losses of one gradient step.
type UpdateMetrics = { CriticLoss: float32; ActorLoss: float32; Alpha: float32 }

// Compiled as AgentModule: the façade's Agent class is what a C# caller means by Agent.
/// Creating agents, acting, and one gradient step of an algorithm.
[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Agent =
    /// The model-fitting settings of a run's settings (hold-out 20% fixed by the run's seed, patience 5 epochs).
    let dynamicsSettings (s: Settings) =
        {
            Members = s.ModelMembers
            EliteCount = s.ModelElites
            Hidden = s.ModelHidden
            LearningRate = s.ModelLearningRate
            BatchSize = s.ModelBatchSize
            MaxEpochs = s.ModelMaxEpochs
            HoldoutFraction = 0.2
            Patience = 5
            HoldoutSeed = s.Seed
        }

    /// A fresh agent for a task's sizes; the model learns rewards when the task has no reward function.
    let init (s: Settings) (key: RandomKey) (obsDim: int) (actDim: int) (predictReward: bool) =
        let ks = RandomKey.split 4 key
        let policy = TanhGaussianPolicy.init ks.[0] obsDim actDim s.Hidden
        let critics = Critics.init ks.[1] obsDim actDim s.Hidden
        let temperature = { LogAlpha = Tensor.zeros [| 1 |] }

        let model = Dynamics.init ks.[2] (dynamicsSettings s) obsDim actDim predictReward

        {
            Policy = policy
            PolicyOpt = Adam.init policy
            Critics = critics
            CriticsOpt = Adam.init critics
            TargetCritics = critics
            Temperature = temperature
            TemperatureOpt = Adam.init temperature
            Model = model
            ModelOpt = Adam.init model.Net
        }

    /// The policy's action in [−1, 1] for one observation (the mean when deterministic).
    let act (a: AgentState) (key: RandomKey) (deterministic: bool) (obs: float32[]) =
        let o = Tensor.ofArray [| 1; obs.Length |] obs

        let action =
            if deterministic then
                TanhGaussianPolicy.deterministic a.Policy o
            else
                fst (TanhGaussianPolicy.sample a.Policy key o)

        action.ToArray()

    /// Checks, with one read from the device, the losses of an update and a probe of each gradient (its sum,
    /// which is NaN or infinite when any element is); raises DivergenceException naming the part and the first bad one.
    let private checkFinite (step: int) (probes: (string * string * Tensor)[]) =
        let values = Tensor.toScalars (probes |> Array.map (fun (_, _, t) -> t))

        Array.iter2
            (fun (part: string, what: string, _) (v: float32) ->
                if not (Single.IsFinite v) then
                    raise (DivergenceException(part, sprintf "training diverged at step %d: %s is %g" step what v)))
            probes
            values

        values

    let private gradientProbes (part: string) (g: 'P :> IParameters<'P>) =
        g.Named
        |> Array.map (fun (name, t) -> part, sprintf "the sum of the gradient of %s parameter '%s'" part name, Tensor.sum t)

    let private updateOnce
        (alg: Algorithm)
        (s: Settings)
        (ctx: ModelContext option)
        (step: int)
        (key: RandomKey)
        (a: AgentState)
        (b: Batch)
        =
        let ks = RandomKey.split 4 key
        let alpha = Tensor.toScalar (Tensor.exp a.Temperature.LogAlpha)

        let y =
            match alg.CriticTarget, ctx with
            | SteveTarget, Some c -> Targets.steve s.Gamma s.CriticHorizon c a.Policy a.TargetCritics alpha ks.[0] b
            | _ -> Targets.td s.Gamma a.Policy a.TargetCritics alpha ks.[0] b

        let criticLoss, cg = Maac.Diff.valueAndGradParams (Objectives.critic b.Obs b.Action y) a.Critics
        let nocheck lr = { AdamConfig.WithLearningRate lr with CheckFinite = false }
        let cOpt, critics = Adam.step (nocheck s.CriticLearningRate) a.CriticsOpt a.Critics cg
        let horizon = alg.ActorHorizon s step
        let samples = alg.ActorSamples s

        let inputs =
            {
                Gamma = s.Gamma
                Horizon = horizon
                Choices = Settings.pathwiseChoices s samples
                Context = ctx
                Critics = critics
                Alpha = alpha
                Key = ks.[1]
                Observations = b.Obs
                Step = step
            }

        let actorLoss, pg = Maac.Diff.valueAndGradParams (alg.ActorObjective inputs) a.Policy
        let pOpt, policy = Adam.step (nocheck s.ActorLearningRate) a.PolicyOpt a.Policy pg
        let _, logp = TanhGaussianPolicy.sample policy ks.[2] b.Obs
        let targetEntropy = -(float32 (TanhGaussianPolicy.actionDim a.Policy))
        let _, tg = Maac.Diff.valueAndGradParams (Objectives.temperature targetEntropy logp) a.Temperature
        let tOpt, temperature = Adam.step (nocheck s.AlphaLearningRate) a.TemperatureOpt a.Temperature tg
        // The only read from the device inside the update (besides α at its start): the work above is queued
        // without waiting, and a NaN anywhere is still caught before the new state is returned.
        let values =
            checkFinite
                step
                (Array.concat
                    [
                        [| "critic", "the critic loss", criticLoss; "policy", "the actor loss", actorLoss |]
                        gradientProbes "critic" cg
                        gradientProbes "policy" pg
                        gradientProbes "temperature" tg
                    ])

        { a with
            Policy = policy
            PolicyOpt = pOpt
            Critics = critics
            CriticsOpt = cOpt
            TargetCritics = Polyak.update s.Tau a.TargetCritics critics
            Temperature = temperature
            TemperatureOpt = tOpt
        },
        { CriticLoss = values.[0]; ActorLoss = values.[1]; Alpha = alpha }

    /// Every tensor an agent's state holds (parameters and optimiser moments, its parameter collection's tensors).
    let tensors (a: AgentState) = Parameters.tensors a

    /// One gradient step on a batch: critics on the algorithm's target, then the actor on its
    /// objective, then the temperature, then Polyak averaging of the target critics. Every tensor the step
    /// makes except the new state goes back to its backend's pool when it returns (Tensor.releasing).
    let update (alg: Algorithm) (s: Settings) (ctx: ModelContext option) (step: int) (key: RandomKey) (a: AgentState) (b: Batch) =
        Tensor.releasing (fst >> tensors) (fun () -> updateOnce alg s ctx step key a b)
