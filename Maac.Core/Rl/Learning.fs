namespace Maac.Rl

open Maac.Tensors
open Maac.Nn
open Maac.Envs

/// Twin Q networks (Fujimoto et al. 2018), each MLP([obs, act]) → 1.
type Critics =
    {
        Q1: Mlp
        Q2: Mlp
    }

    interface IParameters<Critics> with
        member c.Named =
            Array.append (Parameters.prefixed "q1" (c.Q1 :> IParameters<_>).Named) (Parameters.prefixed "q2" (c.Q2 :> IParameters<_>).Named)

        member c.WithTensors ts =
            let mutable offset = 0
            let q1 = Parameters.take c.Q1 ts &offset
            { Q1 = q1; Q2 = Parameters.take c.Q2 ts &offset }

/// The entropy temperature α = exp(LogAlpha), learned towards a target entropy.
type Temperature =
    {
        LogAlpha: Tensor
    }

    interface IParameters<Temperature> with
        member t.Named = [| "logAlpha", t.LogAlpha |]
        member _.WithTensors ts = { LogAlpha = ts.[0] }

/// Everything a rollout through the learned model needs: the model, the task's reward and
/// termination functions, the map from policy actions in [−1, 1] to the task's action space, and how the
/// differentiable paths (actor objective, critic targets) draw the model's next states. Imagined data for the
/// buffers is always sampled with the model's full noise.
type ModelContext =
    {
        Model: DynamicsModel
        Task: TaskFunctions
        ActionLow: Tensor
        ActionHigh: Tensor
        PathNoise: PathNoise
    }

/// Critic construction and evaluation.
module Critics =
    let init (key: RandomKey) (obsDim: int) (actDim: int) (hidden: int[]) =
        let k1, k2 = RandomKey.split2 key
        let sizes = Array.concat [ [| obsDim + actDim |]; hidden; [| 1 |] ]
        { Q1 = Mlp.init k1 sizes Activation.Relu; Q2 = Mlp.init k2 sizes Activation.Relu }

    /// Both Q estimates [N] for observations [N, o] and actions [N, a].
    let both (c: Critics) (obs: Tensor) (act: Tensor) =
        let x = Tensor.concat -1 [| obs; act |]
        Mlp.forward c.Q1 x |> Tensor.squeeze -1, Mlp.forward c.Q2 x |> Tensor.squeeze -1

    /// min(Q1, Q2) [N].
    let minQ (c: Critics) (obs: Tensor) (act: Tensor) = both c obs act ||> Tensor.minimum

    /// Both critics' values of states [N, o] given K actions at each, actions [K, N, a], each averaged over the K
    /// actions: ([N], [N]). With K = 1 this is `both` on the one action.
    let bothOverActions (c: Critics) (obs: Tensor) (actions: Tensor) =
        let k, n = actions.Shape.[0], actions.Shape.[1]

        if k = 1 then
            both c obs (Tensor.squeeze 0 actions)
        else
            let meanOverActions (q: Tensor) = Tensor.reshape [| k; n |] q |> Tensor.meanAxis 0 false
            let q1, q2 = both c (Tensor.repeatRows k obs) (Tensor.reshape [| k * n; -1 |] actions)
            meanOverActions q1, meanOverActions q2

    /// The clipped value of states [N, o] given K actions at each, actions [K, N, a]: each critic averaged over the
    /// K actions, then the smaller of the two averages [N]. With K = 1 this is minQ on the one action.
    let minOfMeans (c: Critics) (obs: Tensor) (actions: Tensor) = bothOverActions c obs actions ||> Tensor.minimum

/// Model rollouts and the pieces shared by targets, actor objectives and the planner.
module Rollout =
    /// Policy actions in [−1, 1] mapped to the task's action space.
    let toEnvAction (ctx: ModelContext) (a: Tensor) = ctx.ActionLow + (a + 1.0f) * 0.5f * (ctx.ActionHigh - ctx.ActionLow)

    /// One imagined transition through a dynamics step function (Dynamics.step, Dynamics.stepByBlocks or another):
    /// (next observation, reward, done), the reward from the task's function (or the model's prediction when the
    /// task has none), done from the task's termination function.
    let stepWith
        (dynamics: DynamicsModel -> RandomKey -> Tensor -> Tensor -> Tensor * Tensor option)
        (ctx: ModelContext)
        (key: RandomKey)
        (obs: Tensor)
        (act: Tensor)
        =
        let next, predicted = dynamics ctx.Model key obs act
        let envAct = toEnvAction ctx act

        let reward =
            match ctx.Task.Reward, predicted with
            | Some f, _ -> f obs envAct next
            | None, Some r -> r
            | None, None -> invalidOp "the task has no reward function and the model does not predict rewards"

        let isDone =
            match ctx.Task.Termination with
            | Some f -> f obs envAct next |> Tensor.stopGradient
            | None -> Tensor.zerosLike reward

        next, reward, isDone

    /// One imagined transition with Dynamics.step (each row to a random elite) under the context's path noise:
    /// (next observation, reward, done).
    let step (ctx: ModelContext) (key: RandomKey) (obs: Tensor) (act: Tensor) =
        stepWith (Dynamics.stepWithNoise ctx.PathNoise) ctx key obs act

    /// Imagined transitions from start states: `length` steps of the policy through the model (no gradient, the
    /// model's full noise whatever the context's path noise), stopping rows that reach a terminal state. Returns
    /// every transition made.
    let imagine (ctx: ModelContext) (policy: TanhGaussianPolicy) (key: RandomKey) (start: Tensor) (length: int) =
        let sampled = { ctx with PathNoise = SampledNoise }

        let rec go t (s: Tensor) acc =
            if t >= length || s.Shape.[0] = 0 then
                List.rev acc
            else
                let k = RandomKey.fold (int64 t) key
                let k1, k2 = RandomKey.split2 k
                let a, _ = TanhGaussianPolicy.sample policy k1 s
                let next, r, d = step sampled k2 s a
                let alive = d.ToArray() |> Array.indexed |> Array.filter (fun (_, v) -> v < 0.5f) |> Array.map fst
                go (t + 1) (Tensor.indexSelect 0 alive next) ({ Obs = s; Action = a; Reward = r; NextObs = next; Done = d } :: acc)

        go 0 start []

/// Where H imagined steps stand, row by row: the state reached, the discounted return so far, whether the path is still
/// alive (1 until a step's done flag cuts it) and the discount γᵗ of the next reward. The actor objective, the STEVE
/// targets and the planner all accumulate their paths with this one module.
type ImaginedPath = { State: Tensor; Return: Tensor; Alive: Tensor; Discount: float32 }

/// Accumulating rewards along imagined paths.
module ImaginedPath =
    /// Paths from states with a return already collected, an alive mask and the discount of the next reward.
    let from (state: Tensor) (ret: Tensor) (alive: Tensor) (discount: float32) =
        { State = state; Return = ret; Alive = alive; Discount = discount }

    /// Fresh paths from states [N, o]: return 0, all alive, discount 1.
    let start (state: Tensor) =
        let n = state.Shape.[0]
        from state (Tensor.zeros [| n |]) (Tensor.ones [| n |]) 1.0f

    /// One step: the return gains discount · alive · reward, the done flags cut the alive mask, the discount gains a
    /// factor γ and the state moves to next.
    let advance (gamma: float32) (p: ImaginedPath) (next: Tensor, reward: Tensor, isDone: Tensor) =
        {
            State = next
            Return = p.Return + p.Discount * p.Alive * reward
            Alive = p.Alive * (1.0f - isDone)
            Discount = p.Discount * gamma
        }

    /// Every path state of `horizon` steps, the start included (horizon + 1 of them); `stepAt t state` makes step t's
    /// (next state, reward, done).
    let scan (gamma: float32) (horizon: int) (stepAt: int -> Tensor -> Tensor * Tensor * Tensor) (p: ImaginedPath) =
        Array.scan (fun (q: ImaginedPath) t -> advance gamma q (stepAt t q.State)) p [| 0 .. horizon - 1 |]

    /// The path state after `horizon` steps.
    let unroll (gamma: float32) (horizon: int) (stepAt: int -> Tensor -> Tensor * Tensor * Tensor) (p: ImaginedPath) =
        Array.fold (fun (q: ImaginedPath) t -> advance gamma q (stepAt t q.State)) p [| 0 .. horizon - 1 |]

    /// The return closed by a terminal value at the state reached: return + discount · alive · terminal.
    let close (p: ImaginedPath) (terminal: Tensor) = p.Return + p.Discount * p.Alive * terminal

/// Value targets for the critics.
module Targets =
    /// The soft value of states under the target critics: min Q'(s, a) − α log π(a|s), a ~ π.
    let softValue (policy: TanhGaussianPolicy) (target: Critics) (alpha: float32) (key: RandomKey) (obs: Tensor) =
        let a, logp = TanhGaussianPolicy.sample policy key obs
        Critics.minQ target obs a - alpha * logp

    /// The one-step soft TD target r + γ(1 − d)·V'(s').
    let td (gamma: float32) (policy: TanhGaussianPolicy) (target: Critics) (alpha: float32) (key: RandomKey) (b: Batch) =
        b.Reward + gamma * (1.0f - b.Done) * softValue policy target alpha key b.NextObs

    /// Combines candidate targets by inverse variance (STEVE): each horizon's candidates [members, N] give a mean and
    /// a variance per row; horizon h weighs 1/(variance + 1e-8), normalised over the horizons, and the target is the
    /// weighted sum of the means. A horizon given as a single shared candidate [N] has variance 0 exactly.
    let combineByInverseVariance (shared: Tensor) (perMember: Tensor[]) =
        let means = perMember |> Array.map (Tensor.meanAxis 0 false)

        let variances =
            Array.map2 (fun (c: Tensor) (mu: Tensor) -> Tensor.meanAxis 0 false ((c - mu) * (c - mu))) perMember means

        let weights =
            Array.append [| Tensor.fullLike shared 1e8f |] (variances |> Array.map (fun v -> 1.0f / (v + 1e-8f)))

        let total = Array.reduce (+) weights

        Array.map2 (fun (w: Tensor) (mu: Tensor) -> w / total * mu) weights (Array.append [| shared |] means)
        |> Array.reduce (+)

    /// STEVE targets (Buckman et al. 2018) with clipped double-Q: the h = 0 candidate is the one-step soft TD target
    /// (`td` with the same key, so horizon 0 gives `td` exactly); for h = 1..horizon and every elite member m the
    /// candidate is r + Σᵢ₌₁ʰ γⁱ rᵢ + γʰ⁺¹ (min(Q'₁, Q'₂)(sₕ₊₁, a) − α log π) along m's own path. Horizons are
    /// weighed by 1/(variance over the members + 1e-8), per row. The h = 0 candidate is the same under every member,
    /// so its variance is 0 and its weight 1e8: unless the members agree to about 1e-4, the target is in effect the
    /// TD target, as in the MAAC authors' code (docs/algorithm.md).
    let steve
        (gamma: float32)
        (horizon: int)
        (ctx: ModelContext)
        (policy: TanhGaussianPolicy)
        (target: Critics)
        (alpha: float32)
        (key: RandomKey)
        (b: Batch)
        =
        let oneStep = td gamma policy target alpha key b

        if horizon = 0 then
            oneStep
        else
            let model = ctx.Model
            let e = model.Elites.Length
            let n = b.Obs.Shape.[0]
            let keys = RandomKey.split (2 * horizon + 1) (RandomKey.fold 1L key)

            let flat = Tensor.repeatRows e
            // Rows e*n: block i is rolled out under elite member i only, all blocks in one batched pass.
            let memberStep (k: RandomKey) (s: Tensor) (a: Tensor) =
                Rollout.stepWith (Dynamics.stepByBlocksWithNoise ctx.PathNoise) ctx k s a

            let stepAt (t: int) (s: Tensor) =
                let a, _ = TanhGaussianPolicy.sample policy keys.[2 * t + 1] s
                memberStep keys.[2 * t + 2] s a

            let perMember =
                ImaginedPath.from (flat b.NextObs) (flat b.Reward) (1.0f - flat b.Done) gamma
                |> ImaginedPath.scan gamma horizon stepAt
                |> Array.skip 1
                |> Array.map (fun p ->
                    let a, logp = TanhGaussianPolicy.sample policy keys.[0] p.State
                    ImaginedPath.close p (Critics.minQ target p.State a - alpha * logp) |> Tensor.reshape [| e; n |])

            combineByInverseVariance oneStep perMember

/// The parts the pathwise actor objective is composed of; replace any of them to build a variant
/// (another policy class, true dynamics instead of a learned model, another terminal value).
type PathwiseParts =
    {
        /// A reparameterised action and its log-probability for each row of states: key → states → (actions, log π).
        Act: RandomKey -> Tensor -> Tensor * Tensor
        /// One model step: key → states → actions → (next states, rewards, done flags), all differentiable except done.
        Step: RandomKey -> Tensor -> Tensor -> Tensor * Tensor * Tensor
        /// The value that closes the horizon: states [N, o] → K actions at each [K, N, a] → values [N] (K = 1 when
        /// every path has its own terminal action).
        Terminal: Tensor -> Tensor -> Tensor
    }

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

        let pathsPerStart, actionsAtEnd =
            match choices.Placement with
            | WholePaths -> choices.Samples, 1
            | ActionsAtHorizon -> 1, choices.Samples

        let paysEntropy t =
            match choices.Entropy with
            | EveryStep -> true
            | FirstAction -> t = 0

        let keys = RandomKey.split (2 * horizon + 1) key

        let stepAt (t: int) (s: Tensor) =
            let a, logp = parts.Act keys.[2 * t] s
            let next, r, d = parts.Step keys.[2 * t + 1] s a
            next, (if paysEntropy t then r - alpha * logp else r), d

        let path =
            ImaginedPath.start (Tensor.repeatRows pathsPerStart obs) |> ImaginedPath.unroll gamma horizon stepAt

        let rows = path.State.Shape.[0]
        let a, logp = parts.Act keys.[2 * horizon] (Tensor.repeatRows actionsAtEnd path.State)
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
            Act = fun k s -> TanhGaussianPolicy.sample policy k s
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
