namespace Maac.Optim

open Maac

open Maac.Tensors

/// Settings of Adam (Kingma & Ba 2015), with PyTorch's defaults apart from the learning rate.
type AdamConfig =
    {
        LearningRate: float32
        Beta1: float32
        Beta2: float32
        Epsilon: float32
        /// Refuse non-finite gradients (a NonFiniteException naming the parameter). Reads the gradient
        /// back to the host, so a GPU training loop may turn it off and check less often.
        CheckFinite: bool
    }

    /// Adam with the given learning rate and β = (0.9, 0.999), ε = 1e-8.
    static member WithLearningRate(lr: float32) = { LearningRate = lr; Beta1 = 0.9f; Beta2 = 0.999f; Epsilon = 1e-8f; CheckFinite = true }

/// Adam's moments; a value, updated by returning a new one. As a parameter collection its tensors are the moments of
/// each parameter in turn ("m.0", "v.0", "m.1", ...); the step count is not a tensor.
type AdamState =
    {
        Step: int
        FirstMoment: Tensor[]
        SecondMoment: Tensor[]
    }

    interface IParameters<AdamState> with
        member s.Named =
            Array.init (2 * s.FirstMoment.Length) (fun j ->
                let i = j / 2

                if j % 2 = 0 then
                    sprintf "m.%d" i, s.FirstMoment.[i]
                else
                    sprintf "v.%d" i, s.SecondMoment.[i])

        member s.WithTensors ts =
            { s with
                FirstMoment = Array.init s.FirstMoment.Length (fun i -> ts.[2 * i])
                SecondMoment = Array.init s.SecondMoment.Length (fun i -> ts.[2 * i + 1])
            }

    interface IParameterTensors with
        member s.Tensors =
            Array.init (2 * s.FirstMoment.Length) (fun j ->
                if j % 2 = 0 then
                    s.FirstMoment.[j / 2]
                else
                    s.SecondMoment.[j / 2])

/// Adam as a pure function: (state, parameters, gradients) → (state', parameters').
module Adam =
    /// Zero moments for a parameter collection.
    let init (p: 'P :> IParameters<'P>) =
        let zeros = Parameters.tensors p |> Array.map Tensor.zerosLike
        { Step = 0; FirstMoment = zeros; SecondMoment = zeros }

    /// The tensors an optimiser step produces: the moments, then the parameters (what a step that replaces
    /// its state keeps, see Tensor.releasing).
    let tensors (state: AdamState, p: 'P :> IParameters<'P>) = Array.concat [ state.FirstMoment; state.SecondMoment; Parameters.tensors p ]

    /// One Adam step with bias correction (one fused kernel per parameter; parameters come back untracked).
    let step (cfg: AdamConfig) (state: AdamState) (p: 'P :> IParameters<'P>) (grads: 'P) : AdamState * 'P =
        let t = state.Step + 1
        let ws = Parameters.tensors p
        let gs = Parameters.tensors grads

        if gs.Length <> ws.Length || state.FirstMoment.Length <> ws.Length then
            invalidArg
                "grads"
                (sprintf "Adam: %d parameters, %d gradients and %d moments do not match" ws.Length gs.Length state.FirstMoment.Length)

        let hyper =
            {
                LearningRate = cfg.LearningRate
                Beta1 = cfg.Beta1
                Beta2 = cfg.Beta2
                Epsilon = cfg.Epsilon
                Correction1 = 1.0f - pown cfg.Beta1 t
                Correction2 = 1.0f - pown cfg.Beta2 t
            }

        let updated =
            Array.init ws.Length (fun i ->
                let g = gs.[i]

                if cfg.CheckFinite && not (Tensor.allFinite g) then
                    Tensor.checkFinite (sprintf "the gradient of parameter '%s'" (Parameters.names p).[i]) g |> ignore

                let w', m', v' = Tensor.adamStep hyper ws.[i] g state.FirstMoment.[i] state.SecondMoment.[i]
                m', v', w')

        {
            Step = t
            FirstMoment = updated |> Array.map (fun (m, _, _) -> m)
            SecondMoment = updated |> Array.map (fun (_, v, _) -> v)
        },
        Parameters.rebuild p (updated |> Array.map (fun (_, _, w) -> w))

/// Gradient clipping, target-network averaging.
module Gradients =
    /// The global L2 norm of all gradients, as a one-element tensor (no host round-trip).
    let globalNorm (grads: 'P :> IParameters<'P>) =
        Parameters.tensors grads
        |> Array.map (fun g -> Tensor.sum (g * g))
        |> Array.reduce (+)
        |> Tensor.sqrt

    /// Scales all gradients by min(1, maxNorm / norm); returns the clipped gradients and the norm before clipping.
    let clipByGlobalNorm (maxNorm: float32) (grads: 'P :> IParameters<'P>) : 'P * Tensor =
        if not (maxNorm > 0.0f) then
            invalidArg "maxNorm" (sprintf "the norm bound must be positive, got %g" maxNorm)

        let norm = globalNorm grads
        let scale = Tensor.minimum (Tensor.fullLike norm 1.0f) (maxNorm / (norm + 1e-6f))
        Parameters.map (fun g -> g * scale) grads, norm

/// Polyak (exponential moving) averaging of parameters, for target networks.
module Polyak =
    /// (1 − τ)·target + τ·online.
    let update (tau: float32) (target: 'P :> IParameters<'P>) (online: 'P) : 'P =
        if tau < 0.0f || tau > 1.0f then
            invalidArg "tau" (sprintf "τ must lie in [0, 1], got %g" tau)

        Parameters.map2 (fun t o -> (1.0f - tau) * t + tau * o) target online

/// Running mean and variance of vectors (Chan et al.'s parallel update), for input normalisation.
type RunningNormaliser = { Mean: Tensor; Variance: Tensor; Count: float }

/// Creating, updating and applying running normalisers.
module RunningNormaliser =
    /// No data yet: mean 0, variance 1.
    let init (dim: int) = { Mean = Tensor.zeros [| dim |]; Variance = Tensor.ones [| dim |]; Count = 0.0 }

    /// Folds in a batch [N, dim].
    let update (batch: Tensor) (n: RunningNormaliser) =
        let dim = n.Mean.Primal.Shape.[0]

        if batch.Rank <> 2 || batch.Primal.Shape.[1] <> dim then
            raise (ShapeException(sprintf "RunningNormaliser.update: expected a batch [N, %d], got %s" dim (Shape.show batch.Primal.Shape)))

        let b = float batch.Primal.Shape.[0]

        if b = 0.0 then
            n
        else
            let bMean = Tensor.meanAxis 0 false batch
            let centred = batch - bMean
            let bVar = Tensor.meanAxis 0 false (centred * centred)
            let total = n.Count + b
            let delta = bMean - n.Mean
            let wOld, wNew = float32 (n.Count / total), float32 (b / total)
            let mean = n.Mean + wNew * delta

            let m2 =
                (if n.Count = 0.0 then
                     Tensor.zerosLike n.Variance
                 else
                     wOld * n.Variance)
                + wNew * bVar
                + (wOld * wNew) * (delta * delta)

            { Mean = mean; Variance = m2; Count = total }

    /// (x − mean) / √(variance + 1e-8).
    let normalise (n: RunningNormaliser) (x: Tensor) = (x - n.Mean) / Tensor.sqrt (n.Variance + 1e-8f)

    /// The inverse of normalise.
    let denormalise (n: RunningNormaliser) (x: Tensor) = x * Tensor.sqrt (n.Variance + 1e-8f) + n.Mean
