namespace Maac.Algorithms

open Maac

open System
open Maac.Tensors
open Maac.Nn
open Maac.Optim
open Maac.Envs
open Maac.Rl

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

    /// The record's parts, declared once (made when the type is first used, not on every call).
    static member val private Parts =
        let model (get: DynamicsModel -> 'P) (set: DynamicsModel -> 'P -> DynamicsModel) =
            (fun (a: AgentState) -> get a.Model), (fun (a: AgentState) v -> { a with Model = set a.Model v })

        let statistic name get set =
            let getter, setter = model get set
            ParameterPart.tensor ("modelStats." + name) getter setter

        [
            ParameterPart.nested "policy" (fun a -> a.Policy) (fun a v -> { a with Policy = v })
            ParameterPart.nested "policyOpt" (fun a -> a.PolicyOpt) (fun a v -> { a with PolicyOpt = v })
            ParameterPart.nested "critics" (fun a -> a.Critics) (fun a v -> { a with Critics = v })
            ParameterPart.nested "criticsOpt" (fun a -> a.CriticsOpt) (fun a v -> { a with CriticsOpt = v })
            ParameterPart.nested "targetCritics" (fun a -> a.TargetCritics) (fun a v -> { a with TargetCritics = v })
            ParameterPart.nested "temperature" (fun a -> a.Temperature) (fun a v -> { a with Temperature = v })
            ParameterPart.nested "temperatureOpt" (fun a -> a.TemperatureOpt) (fun a v -> { a with TemperatureOpt = v })
            ParameterPart.nested "model" (fun a -> a.Model.Net) (fun a v -> { a with Model = { a.Model with Net = v } })
            ParameterPart.nested "modelOpt" (fun a -> a.ModelOpt) (fun a v -> { a with ModelOpt = v })
            statistic "inputMean" (fun m -> m.InputMean) (fun m v -> { m with InputMean = v })
            statistic "inputStd" (fun m -> m.InputStd) (fun m v -> { m with InputStd = v })
            statistic "targetMean" (fun m -> m.TargetMean) (fun m v -> { m with TargetMean = v })
            statistic "targetStd" (fun m -> m.TargetStd) (fun m v -> { m with TargetStd = v })
        ]

    interface IParameters<AgentState> with
        member a.Named = PartsOf.named AgentState.Parts a
        member a.WithTensors ts = PartsOf.withTensors AgentState.Parts a ts

    interface IParameterTensors with
        member a.Tensors = PartsOf.tensors AgentState.Parts a

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

    /// The policy's actions in [−1, 1] for observations [N, o]: the means when deterministic, else samples drawn from key.
    let actRows (a: AgentState) (key: RandomKey) (deterministic: bool) (obs: Tensor) =
        if deterministic then
            TanhGaussianPolicy.deterministic a.Policy obs
        else
            fst (TanhGaussianPolicy.sample a.Policy key obs)

    /// The policy's action in [−1, 1] for one observation (actRows on one row).
    let act (a: AgentState) (key: RandomKey) (deterministic: bool) (obs: float32[]) =
        (actRows a key deterministic (Tensor.ofArray [| 1; obs.Length |] obs)).ToArray()

    /// Each gradient probe's part and description, in the order of the collection's tensors.
    let private gradientProbeNames (part: string) (g: 'P :> IParameters<'P>) =
        Parameters.names g
        |> Array.map (fun name -> part, sprintf "the sum of the gradient of %s parameter '%s'" part name)

    /// The update's one read from the device (besides α at its start): the losses and a probe of each gradient (its
    /// sum, which is NaN or infinite when any element is). The work before it is queued without waiting, and a NaN
    /// anywhere is still caught before the new state is returned: DivergenceException names the part and the first
    /// bad value (the names are made only then).
    let private readBack (step: int) (alpha: float32) (criticLoss, cg: Critics) (actorLoss, pg: TanhGaussianPolicy) (tg: Temperature) =
        let probes =
            Array.concat
                [
                    [| criticLoss; actorLoss |]
                    Parameters.tensors cg |> Array.map Tensor.sum
                    Parameters.tensors pg |> Array.map Tensor.sum
                    Parameters.tensors tg |> Array.map Tensor.sum
                ]

        let values = Tensor.toScalars probes

        match values |> Array.tryFindIndex (Single.IsFinite >> not) with
        | Some i ->
            let part, what =
                (Array.concat
                    [
                        [| "critic", "the critic loss"; "policy", "the actor loss" |]
                        gradientProbeNames "critic" cg
                        gradientProbeNames "policy" pg
                        gradientProbeNames "temperature" tg
                    ]).[i]

            raise (DivergenceException(part, sprintf "training diverged at step %d: %s is %g" step what values.[i]))
        | None -> { CriticLoss = values.[0]; ActorLoss = values.[1]; Alpha = alpha }

    /// What the actor objective of an algorithm gets at a step: its horizon and choices, the freshly updated critics.
    let private actorInputs alg (s: Settings) ctx (step: int) (critics: Critics) (alpha: float32) (key: RandomKey) (b: Batch) =
        {
            Gamma = s.Gamma
            Horizon = alg.ActorHorizon s step
            Choices = Settings.pathwiseChoices s (alg.ActorSamples s)
            Context = ctx
            Critics = critics
            Alpha = alpha
            Key = key
            Observations = b.Obs
            Step = step
        }

    let private updateOnce
        (clock: IStageClock)
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
            clock.Stage(
                StageName.CriticTargets,
                fun () ->
                    match alg.CriticTarget, ctx with
                    | SteveTarget, Some c -> Targets.steve s.Gamma s.CriticHorizon c a.Policy a.TargetCritics alpha ks.[0] b
                    | _ -> Targets.td s.Gamma a.Policy a.TargetCritics alpha ks.[0] b
            )

        let nocheck lr = { AdamConfig.WithLearningRate lr with CheckFinite = false }

        let criticLoss, cg, cOpt, critics =
            clock.Stage(
                StageName.CriticUpdate,
                fun () ->
                    let loss, cg = Maac.Diff.valueAndGradParams (Objectives.critic b.Obs b.Action y) a.Critics
                    let cOpt, critics = Adam.step (nocheck s.CriticLearningRate) a.CriticsOpt a.Critics cg
                    loss, cg, cOpt, critics
            )

        let inputs = actorInputs alg s ctx step critics alpha ks.[1] b

        let actorLoss, pg, pOpt, policy =
            clock.Stage(
                StageName.ActorUpdate,
                fun () ->
                    let loss, pg = Maac.Diff.valueAndGradParams (alg.ActorObjective inputs) a.Policy
                    let pOpt, policy = Adam.step (nocheck s.ActorLearningRate) a.PolicyOpt a.Policy pg
                    loss, pg, pOpt, policy
            )

        let tg, tOpt, temperature =
            clock.Stage(
                StageName.Temperature,
                fun () ->
                    let _, logp = TanhGaussianPolicy.sample policy ks.[2] b.Obs
                    let targetEntropy = -(float32 (TanhGaussianPolicy.actionDim a.Policy))
                    let _, tg = Maac.Diff.valueAndGradParams (Objectives.temperature targetEntropy logp) a.Temperature
                    let tOpt, temperature = Adam.step (nocheck s.AlphaLearningRate) a.TemperatureOpt a.Temperature tg
                    tg, tOpt, temperature
            )

        clock.Stage(
            StageName.ReadBackAndPolyak,
            fun () ->
                let updated =
                    { a with
                        Policy = policy
                        PolicyOpt = pOpt
                        Critics = critics
                        CriticsOpt = cOpt
                        TargetCritics = Polyak.update s.Tau a.TargetCritics critics
                        Temperature = temperature
                        TemperatureOpt = tOpt
                    }

                updated, readBack step alpha (criticLoss, cg) (actorLoss, pg) tg
        )

    /// Every tensor an agent's state holds (parameters and optimiser moments, its parameter collection's tensors).
    let tensors (a: AgentState) = Parameters.tensors a

    /// update with its stages (StageName: critic targets, critic update, actor update, temperature, read-back and
    /// Polyak) run through a clock; the same arithmetic, in the same order.
    let updateWith
        (clock: IStageClock)
        (alg: Algorithm)
        (s: Settings)
        (ctx: ModelContext option)
        (step: int)
        (key: RandomKey)
        (a: AgentState)
        (b: Batch)
        =
        Tensor.releasing (fst >> tensors) (fun () -> updateOnce clock alg s ctx step key a b)

    /// updateWith for a caller that drops `a` once it returns, as in a chain of updates: the memory of a's tensors
    /// that the new state does not share goes back to the pool at once (Tensor.replacing), so each update of the
    /// chain reuses its predecessor's instead of taking new memory. `a` must not be used afterwards (its released
    /// tensors raise ObjectDisposedException) and must not be visible elsewhere (another thread acting with it, a
    /// caller keeping it to fall back to after a divergence); when the update raises, `a` is left intact.
    let updateReplacingWith (clock: IStageClock) (alg: Algorithm) (s: Settings) ctx step key (a: AgentState) (b: Batch) =
        Tensor.replacing (tensors a) (fst >> tensors) (fun () -> updateOnce clock alg s ctx step key a b)

    /// One gradient step on a batch: critics on the algorithm's target, then the actor on its objective, then the
    /// temperature, then Polyak averaging of the target critics (updateWith, its stages untimed). Every tensor the step
    /// makes except the new state goes back to its backend's pool when it returns (Tensor.releasing).
    let update (alg: Algorithm) (s: Settings) (ctx: ModelContext option) (step: int) (key: RandomKey) (a: AgentState) (b: Batch) =
        updateWith StageClock.untimed alg s ctx step key a b
