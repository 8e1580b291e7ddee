namespace Maac.Rl

open Maac.Tensors
open Maac.Nn
open Maac.Envs

/// Twin Q networks (Fujimoto et al. 2018), each MLP([obs, act]) → 1.
type Critics =
    { Q1: Mlp
      Q2: Mlp }
    interface IParameters<Critics> with
        member c.Named = Array.append (Parameters.prefixed "q1" (c.Q1 :> IParameters<_>).Named) (Parameters.prefixed "q2" (c.Q2 :> IParameters<_>).Named)
        member c.WithTensors ts =
            let mutable offset = 0
            let q1 = Parameters.take c.Q1 ts &offset
            { Q1 = q1; Q2 = Parameters.take c.Q2 ts &offset }

/// The entropy temperature α = exp(LogAlpha), learned towards a target entropy.
type Temperature =
    { LogAlpha: Tensor }
    interface IParameters<Temperature> with
        member t.Named = [| "logAlpha", t.LogAlpha |]
        member _.WithTensors ts = { LogAlpha = ts.[0] }

/// Everything a rollout through the learned model needs: the model, the task's reward and
/// termination functions, and the map from policy actions in [−1, 1] to the task's action space.
type ModelContext =
    { Model: DynamicsModel
      Task: TaskFunctions
      ActionLow: Tensor
      ActionHigh: Tensor }

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

/// Model rollouts and the pieces shared by targets, actor objectives and the planner.
module Rollout =
    /// Policy actions in [−1, 1] mapped to the task's action space.
    let toEnvAction (ctx: ModelContext) (a: Tensor) = ctx.ActionLow + (a + 1.0f) * 0.5f * (ctx.ActionHigh - ctx.ActionLow)

    /// One imagined transition through a dynamics step function (Dynamics.step, Dynamics.stepByBlocks or another):
    /// (next observation, reward, done), the reward from the task's function (or the model's prediction when the
    /// task has none), done from the task's termination function.
    let stepWith (dynamics: DynamicsModel -> RandomKey -> Tensor -> Tensor -> Tensor * Tensor option) (ctx: ModelContext) (key: RandomKey) (obs: Tensor) (act: Tensor) =
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

    /// One imagined transition with Dynamics.step (each row to a random elite): (next observation, reward, done).
    let step (ctx: ModelContext) (key: RandomKey) (obs: Tensor) (act: Tensor) = stepWith Dynamics.step ctx key obs act

    /// Imagined transitions from start states: `length` steps of the policy through the model (no gradient),
    /// stopping rows that reach a terminal state. Returns every transition made.
    let imagine (ctx: ModelContext) (policy: TanhGaussianPolicy) (key: RandomKey) (start: Tensor) (length: int) =
        let rec go t (s: Tensor) acc =
            if t >= length || s.Shape.[0] = 0 then List.rev acc
            else
                let k = RandomKey.fold (int64 t) key
                let k1, k2 = RandomKey.split2 k
                let a, _ = TanhGaussianPolicy.sample policy k1 s
                let next, r, d = step ctx k2 s a
                let alive = d.ToArray() |> Array.indexed |> Array.filter (fun (_, v) -> v < 0.5f) |> Array.map fst
                go (t + 1) (Tensor.indexSelect 0 alive next) ({ Obs = s; Action = a; Reward = r; NextObs = next; Done = d } :: acc)
        go 0 start []

/// Value targets for the critics.
module Targets =
    /// The soft value of states under the target critics: min Q'(s, a) − α log π(a|s), a ~ π.
    let softValue (policy: TanhGaussianPolicy) (target: Critics) (alpha: float32) (key: RandomKey) (obs: Tensor) =
        let a, logp = TanhGaussianPolicy.sample policy key obs
        Critics.minQ target obs a - alpha * logp

    /// The one-step soft TD target r + γ(1 − d)·V'(s').
    let td (gamma: float32) (policy: TanhGaussianPolicy) (target: Critics) (alpha: float32) (key: RandomKey) (b: Batch) =
        b.Reward + gamma * (1.0f - b.Done) * softValue policy target alpha key b.NextObs

    /// STEVE targets (Buckman et al. 2018): for h = 0..horizon, candidates
    /// r + Σᵢ₌₁ʰ γⁱ rᵢ + γʰ⁺¹ (Q'ⱼ(sₕ₊₁, a) − α log π) under every elite model member m and both target
    /// critics j; each horizon's mean is weighted by 1/(variance over (m, j) + 1e-8), per row.
    let steve (gamma: float32) (horizon: int) (ctx: ModelContext) (policy: TanhGaussianPolicy) (target: Critics) (alpha: float32) (key: RandomKey) (b: Batch) =
        let model = ctx.Model
        let e = model.Elites.Length
        let n = b.Obs.Shape.[0]
        let keys = RandomKey.split (2 * horizon + 2) key
        let flat (t: Tensor) = Tensor.expand (Array.append [| e |] t.Shape) t |> Tensor.reshape (Array.append [| e * n |] t.Shape.[1 ..])
        // Rows e*n: block i is rolled out under elite member i only, all blocks in one batched pass.
        let memberStep (k: RandomKey) (s: Tensor) (a: Tensor) = Rollout.stepWith Dynamics.stepByBlocks ctx k s a
        let mutable s = flat b.NextObs
        let mutable ret = flat b.Reward
        let mutable alive = 1.0f - flat b.Done
        let mutable disc = gamma
        let candidates =
            [| for h in 0 .. horizon do
                if h > 0 then
                    let a, _ = TanhGaussianPolicy.sample policy keys.[2 * h] s
                    let next, r, d = memberStep keys.[2 * h + 1] s a
                    ret <- ret + disc * alive * r
                    alive <- alive * (1.0f - d)
                    disc <- disc * gamma
                    s <- next
                let a, logp = TanhGaussianPolicy.sample policy keys.[0] s
                let q1, q2 = Critics.both target s a
                let tail (q: Tensor) = ret + disc * alive * (q - alpha * logp)
                // [2e, n]: both critics under every member.
                yield Tensor.concat 0 [| tail q1 |> Tensor.reshape [| e; n |]; tail q2 |> Tensor.reshape [| e; n |] |] |]
        let means = candidates |> Array.map (Tensor.meanAxis 0 false)
        let weights = Array.map2 (fun (c: Tensor) (mu: Tensor) -> 1.0f / (Tensor.meanAxis 0 false ((c - mu) * (c - mu)) + 1e-8f)) candidates means
        let total = Array.reduce (+) weights
        Array.map2 (*) weights means |> Array.reduce (+) |> fun num -> num / total

/// The parts the pathwise actor objective is composed of; replace any of them to build a variant
/// (another policy class, true dynamics instead of a learned model, another terminal value).
type PathwiseParts =
    { /// A reparameterised action and its log-probability for each row of states: key → states → (actions, log π).
      Act: RandomKey -> Tensor -> Tensor * Tensor
      /// One model step: key → states → actions → (next states, rewards, done flags), all differentiable except done.
      Step: RandomKey -> Tensor -> Tensor -> Tensor * Tensor * Tensor
      /// The value that closes the horizon: states → actions → values.
      Terminal: Tensor -> Tensor -> Tensor }

/// Actor and temperature objectives.
module Objectives =
    /// The pathwise objective (as a loss to minimise): for K samples per start state, H reparameterised
    /// steps of policy and model, J = Σₜ<H γᵗ (rₜ − α log πₜ) + γᴴ (V(s_H, a_H) − α log π(a_H|s_H)),
    /// cut where the step's done flag says so, averaged over start states and samples.
    let pathwise (gamma: float32) (horizon: int) (samples: int) (parts: PathwiseParts) (alpha: float32) (key: RandomKey) (obs: Tensor) =
        if horizon < 0 then invalidArg "horizon" (sprintf "the horizon must not be negative, got %d" horizon)
        if samples < 1 then invalidArg "samples" (sprintf "at least one sample per start state is needed, got %d" samples)
        let b, o = obs.Shape.[0], obs.Shape.[1]
        let start = if samples = 1 then obs else Tensor.expand [| samples; b; o |] obs |> Tensor.reshape [| samples * b; o |]
        let keys = RandomKey.split (2 * horizon + 1) key
        let mutable s = start
        let mutable ret = Tensor.zeros [| samples * b |]
        let mutable alive = Tensor.ones [| samples * b |]
        let mutable disc = 1.0f
        for t in 0 .. horizon - 1 do
            let a, logp = parts.Act keys.[2 * t] s
            let next, r, d = parts.Step keys.[2 * t + 1] s a
            ret <- ret + disc * alive * (r - alpha * logp)
            alive <- alive * (1.0f - d)
            disc <- disc * gamma
            s <- next
        let a, logp = parts.Act keys.[2 * horizon] s
        ret <- ret + disc * alive * (parts.Terminal s a - alpha * logp)
        -(Tensor.mean ret)

    /// MAAC's parts: the tanh-Gaussian policy, the learned ensemble (with the task's reward and
    /// termination), and the smaller of the twin critics at the horizon.
    let maacParts (ctx: ModelContext option) (critics: Critics) (policy: TanhGaussianPolicy) =
        { Act = fun k s -> TanhGaussianPolicy.sample policy k s
          Step =
            fun k s a ->
                match ctx with
                | Some c -> Rollout.step c k s a
                | None -> invalidArg "ctx" "a model horizon above 0 needs a model"
          Terminal = Critics.minQ critics }

    /// The MAAC policy objective: the pathwise objective with MAAC's parts. With H = 0 and K = 1 this is
    /// SAC's actor loss exactly.
    let maac (gamma: float32) (horizon: int) (samples: int) (ctx: ModelContext option) (critics: Critics) (alpha: float32) (key: RandomKey) (obs: Tensor) (policy: TanhGaussianPolicy) =
        if horizon > 0 && ctx.IsNone then invalidArg "ctx" "a model horizon above 0 needs a model"
        pathwise gamma horizon samples (maacParts ctx critics policy) alpha key obs

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
