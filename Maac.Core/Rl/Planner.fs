namespace Maac.Rl

open Maac.Tensors
open Maac.Nn

/// Settings of the cross-entropy method (the paper's Table 1: 256 candidates, horizon 5,
/// 5 iterations, 10% elites, smoothing 0.1).
type CemSettings =
    {
        Candidates: int
        Horizon: int
        Iterations: int
        EliteFraction: float
        /// Weight of the previous mean and spread in each update.
        Smoothing: float32
    }

    static member Paper = { Candidates = 256; Horizon = 5; Iterations = 5; EliteFraction = 0.1; Smoothing = 0.1f }

/// Test-time model-predictive control: CEM over action sequences seeded from the policy, scored by
/// the model's return plus γ^H · min Q at the last state.
module Cem =
    /// The first action (in [−1, 1]) of the best sequence found from one observation.
    let plan
        (cfg: CemSettings)
        (gamma: float32)
        (ctx: ModelContext)
        (policy: TanhGaussianPolicy)
        (critics: Critics)
        (key: RandomKey)
        (obs: float32[])
        =
        let o = obs.Length
        let ks = RandomKey.split (cfg.Iterations + 1) key
        // Initial mean: the policy's actions rolled through the model; initial spread: the policy's std.
        let means, stds =
            Array.init cfg.Horizon id
            |> Array.mapFold
                (fun s h ->
                    let mu, logStd = TanhGaussianPolicy.distribution policy s
                    let a = Tensor.tanh mu
                    let next, _, _ = Rollout.step ctx (RandomKey.fold (int64 h) ks.[0]) s a
                    (a.ToArray(), (Tensor.exp logStd).ToArray()), next)
                (Tensor.ofArray [| 1; o |] obs)
            |> fst
            |> Array.unzip

        let act = means.[0].Length
        let mutable mean = Array.concat means
        let mutable std = Array.concat stds
        let n = cfg.Candidates
        let eliteCount = max 1 (int (float n * cfg.EliteFraction))

        for it in 1 .. cfg.Iterations do
            let k1, k2 = RandomKey.split2 ks.[it]
            let noise = Tensor.randn k1 [| n; cfg.Horizon * act |]
            let candidates = Tensor.clamp -1.0f 1.0f (Tensor.ofSeq mean + Tensor.ofSeq std * noise)
            let stepAt (h: int) (st: Tensor) = Rollout.step ctx (RandomKey.fold (int64 h) k2) st (Tensor.slice 1 (h * act) act candidates)

            let path =
                ImaginedPath.start (Tensor.expand [| n; o |] (Tensor.ofArray [| 1; o |] obs))
                |> ImaginedPath.unroll gamma cfg.Horizon stepAt

            let terminal = Critics.minQ critics path.State (TanhGaussianPolicy.deterministic policy path.State)
            let scores = (ImaginedPath.close path terminal).ToArray()
            let order = Array.init n id |> Array.sortBy (fun i -> -scores.[i])
            let c = candidates.ToArray()
            let width = cfg.Horizon * act
            let elite = order.[.. eliteCount - 1]
            let newMean = Array.init width (fun j -> elite |> Array.averageBy (fun i -> c.[i * width + j]))

            let newStd =
                Array.init width (fun j -> sqrt (elite |> Array.averageBy (fun i -> (c.[i * width + j] - newMean.[j]) ** 2.0f)))

            mean <- Array.map2 (fun old nw -> cfg.Smoothing * old + (1.0f - cfg.Smoothing) * nw) mean newMean
            std <- Array.map2 (fun old nw -> cfg.Smoothing * old + (1.0f - cfg.Smoothing) * nw) std newStd

        mean.[.. act - 1]
