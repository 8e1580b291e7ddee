namespace Maac.Rl

open Maac.Tensors
open Maac.Nn
open Maac.Envs

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
