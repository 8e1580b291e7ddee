namespace Maac.Rl

open Maac.Tensors
open Maac.Nn
open Maac.Envs

/// Value targets for the critics.
module Targets =
    /// softValue given the policy's head at the states (TanhGaussianPolicy.head).
    let private softValueFromHead policy (target: Critics) (alpha: float32) (key: RandomKey) (obs: Tensor) (head: Tensor) =
        let a, logp = TanhGaussianPolicy.sampleFromHead policy key head
        Critics.minQ target obs a - alpha * logp

    /// The soft value of states under the target critics: min Q'(s, a) − α log π(a|s), a ~ π.
    let softValue (policy: TanhGaussianPolicy) (target: Critics) (alpha: float32) (key: RandomKey) (obs: Tensor) =
        softValueFromHead policy target alpha key obs (TanhGaussianPolicy.head policy obs)

    /// td given the policy's head at the next states.
    let private tdFromHead gamma policy target alpha key (b: Batch) (nextHead: Tensor) =
        b.Reward + gamma * (1.0f - b.Done) * softValueFromHead policy target alpha key b.NextObs nextHead

    /// The one-step soft TD target r + γ(1 − d)·V'(s').
    let td (gamma: float32) (policy: TanhGaussianPolicy) (target: Critics) (alpha: float32) (key: RandomKey) (b: Batch) =
        tdFromHead gamma policy target alpha key b (TanhGaussianPolicy.head policy b.NextObs)

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
    /// The policy's network runs once per set of states: at the next states for the TD target and, repeated, for the
    /// paths' first actions; at each later path state for both its action and its closing value (rows are computed
    /// the same whatever the batch, so this gives the bits of evaluating the policy at every use).
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
        let nextHead = TanhGaussianPolicy.head policy b.NextObs
        let oneStep = tdFromHead gamma policy target alpha key b nextHead

        if horizon = 0 then
            oneStep
        else
            let model = ctx.Model
            let e = model.Elites.Length
            let n = b.Obs.Shape.[0]
            let keys = RandomKey.split (2 * horizon + 1) (RandomKey.fold 1L key)

            let flat = Tensor.repeatRows e

            // Step t from a path state and the policy's head there: rows e*n, block i rolled out under elite member i
            // only, all blocks in one batched pass; returns the next path state and its head.
            let stepAt (p: ImaginedPath, head: Tensor) (t: int) =
                let a, _ = TanhGaussianPolicy.sampleFromHead policy keys.[2 * t + 1] head

                let next =
                    Rollout.stepWith (Dynamics.stepByBlocksWithNoise ctx.PathNoise) ctx keys.[2 * t + 2] p.State a
                    |> ImaginedPath.advance gamma p

                next, TanhGaussianPolicy.head policy next.State

            let close (p: ImaginedPath, head: Tensor) =
                ImaginedPath.close p (softValueFromHead policy target alpha keys.[0] p.State head)
                |> Tensor.reshape [| e; n |]

            let start = ImaginedPath.from (flat b.NextObs) (flat b.Reward) (1.0f - flat b.Done) gamma, flat nextHead

            let perMember = Array.scan stepAt start [| 0 .. horizon - 1 |] |> Array.skip 1 |> Array.map close

            combineByInverseVariance oneStep perMember
