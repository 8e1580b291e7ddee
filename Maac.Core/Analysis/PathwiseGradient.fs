namespace Maac.Analysis

open Maac.Tensors
open Maac.Rl

/// The MAAC (pathwise, H-step) gradient estimate on a linear-quadratic problem, with the true or any
/// other dynamics and terminal value, and the per-sample bounds of docs/gradient-error.md.
module PathwiseGradient =
    /// −½ Σ rows of (x W) ∘ x: the quadratic form −½ xᵀWx of each row of x [N, d].
    let quadratic (w: float[,]) (x: Tensor) = -0.5f * Tensor.sumAxis 1 false (Tensor.matmul x (Mat.toTensor w) * x)

    /// The problem's reward −½(sᵀQs + uᵀRu) on batches.
    let reward (p: LqProblem) (s: Tensor) (u: Tensor) = quadratic p.Q s + quadratic p.R u

    /// Linear dynamics s' = A s + B u with the problem's reward, as a pathwise step (never done).
    let linearStep (p: LqProblem) (a: float[,]) (b: float[,]) (_: RandomKey) (s: Tensor) (u: Tensor) =
        let next =
            Tensor.matmulWith false true s (Mat.toTensor a) None
            + Tensor.matmulWith false true u (Mat.toTensor b) None

        let r = reward p s u
        next, r, Tensor.zerosLike r

    /// The true dynamics as a pathwise step.
    let trueStep (p: LqProblem) = linearStep p p.A p.B

    /// The quadratic action-value Q(s, a) = −½ [s; a]ᵀ W [s; a] (constant dropped), plus an optional
    /// linear term ε wᵀa that shifts its action-gradient by exactly ε w.
    let quadraticValue (w: float[,]) (shift: float32[] option) (s: Tensor) (a: Tensor) =
        let q = quadratic w (Tensor.concat 1 [| s; a |])

        match shift with
        | None -> q
        | Some v -> q + Tensor.sumAxis 1 false (a * Tensor.ofArray [| 1; v.Length |] v)

    /// The linear-Gaussian policy u = K s + σ ε as the pathwise objective's sampler (log-probability unused: α = 0).
    let linearPolicy (sigma: float32) (k: Tensor) (key: RandomKey) (s: Tensor) =
        let mean = Tensor.matmulWith false true s k None

        let u =
            if sigma = 0.0f then
                mean
            else
                mean + sigma * Tensor.randn key mean.Shape

        u, Tensor.zeros [| s.Shape.[0] |]

    /// The H-step pathwise estimate of ∇_K J at K from start states [N, n] (one sample each): the gradient of
    /// mean[Σ_{t<H} γᵗ r_t + γᴴ V(s_H, a_H)] divided by 1 − γ^(H+1), the normalisation that makes it the policy
    /// gradient when the starts come from LinearQuadratic.sampleBlockStarts.
    let estimate (p: LqProblem) (horizon: int) step terminal (k: float[,]) (key: RandomKey) (starts: Tensor) =
        let objective (kt: Tensor) =
            // One sample per path: the terminal action comes as [1, N, a].
            let parts =
                {
                    Act = PathwiseParts.actOnCopies (linearPolicy (float32 p.NoiseStd) kt)
                    Step = step
                    Terminal = fun s a -> terminal s (Tensor.squeeze 0 a)
                }

            Objectives.pathwise (float32 p.Gamma) horizon 1 parts 0.0f key starts

        let g = Maac.Diff.grad objective (Mat.toTensor k)
        Mat.scale (-1.0 / (1.0 - p.Gamma ** float (horizon + 1))) (Mat.ofTensor g)

    /// The policy noise σε_t the estimate draws for a key, t = 0 … H, as [t][sample][action] (float64).
    let policyNoise (p: LqProblem) (horizon: int) (key: RandomKey) (samples: int) =
        let keys = RandomKey.split (2 * horizon + 1) key
        let m = p.ActionDim

        Array.init (horizon + 1) (fun t ->
            let e = (Tensor.randn keys.[2 * t] [| samples; m |]).ToArray()
            Array.init samples (fun i -> Array.init m (fun j -> p.NoiseStd * float e.[i * m + j])))

    /// The true-dynamics states s_0 … s_H of each start under the policy with the given noise ([sample][t][i]).
    let paths (p: LqProblem) (horizon: int) (k: float[,]) (noise: float[][][]) (starts: float[][]) =
        let cl = LinearQuadratic.closedLoop p k

        starts
        |> Array.mapi (fun i s0 ->
            let path = Array.zeroCreate (horizon + 1)
            path.[0] <- s0

            for t in 0 .. horizon - 1 do
                path.[t + 1] <- Array.map2 (+) (Mat.apply cl path.[t]) (Mat.apply p.B noise.[t].[i])

            path)

    /// Σ_{k≥0} ‖M^k‖₂ for a stable M (summed until the terms fall below 1e-12).
    let powerNormSum (m: float[,]) =
        let mutable p = Mat.identity (Mat.rows m)
        let mutable total = 0.0
        let mutable k = 0
        let mutable term = 1.0

        while (term > 1e-12 || k < 10) && k < 100_000 do
            term <- Mat.norm2 p
            total <- total + term
            p <- Mat.mul p m
            k <- k + 1

        total

    /// The Q-error bound's constant C_H (docs/gradient-error.md, bound 2): with ∇ₐQ off by at most ε_Q,
    /// ‖error‖ ≤ γᴴ ε_Q C_H, C_H = (1 + ‖K‖‖B‖ Σₖ‖Mᵏ‖) · mean over samples of max_{t≤H} ‖s_t‖ / (1 − γ^(H+1)).
    let qErrorConstant (p: LqProblem) (horizon: int) (k: float[,]) (paths: float[][][]) =
        let gain = 1.0 + Mat.norm2 k * Mat.norm2 p.B * powerNormSum (LinearQuadratic.closedLoop p k)
        let meanMax = paths |> Array.averageBy (fun path -> path |> Array.map Mat.vecNorm |> Array.max)
        gain * meanMax / (1.0 - p.Gamma ** float (horizon + 1))

    /// The model-error bound c1(H)·ε_f (docs/gradient-error.md, bound 3) for a model Ã = A + ε_f E, ‖E‖₂ ≤ 1,
    /// with the exact Q's weights W: the sample mean of the per-path bound, divided by 1 − γ^(H+1).
    /// `noise` is policyNoise's [t][sample][action].
    let modelErrorBound
        (p: LqProblem)
        (horizon: int)
        (k: float[,])
        (w: float[,])
        (epsilon: float)
        (paths: float[][][])
        (noise: float[][][])
        =
        let nK, nB = Mat.norm2 k, Mat.norm2 p.B
        let cl = LinearQuadratic.closedLoop p k
        let nM = Mat.norm2 cl
        let nMt = nM + epsilon
        let n = p.StateDim
        let m = p.ActionDim

        let wr =
            Array2D.init (n + m) (n + m) (fun i j ->
                if i < n && j < n then p.Q.[i, j]
                elif i >= n && j >= n then p.R.[i - n, j - n]
                else 0.0)

        let nWr, nW = Mat.norm2 wr, Mat.norm2 w

        let perPath (i: int) =
            let path = paths.[i]
            let mutable e, delta, d = 0.0, 0.0, 0.0
            let mutable total = 0.0

            for t in 0..horizon do
                let s = path.[t]
                let u = Array.map2 (+) (Mat.apply k s) noise.[t].[i]
                let zNorm = Mat.vecNorm (Array.append s u)
                let zTildeSens = (1.0 + nK) * (d + delta) + Mat.vecNorm s + e
                let term = (1.0 + nK) * e * zTildeSens + zNorm * ((1.0 + nK) * delta + e)
                total <- total + p.Gamma ** float t * (if t < horizon then nWr else nW) * term
                let sNorm = Mat.vecNorm s
                // Next: e' ≤ ‖M̃‖e + ε‖s‖; Δ' ≤ ‖M̃‖Δ + ε d + ‖B‖e; d' ≤ ‖M‖d + ‖B‖‖s‖.
                let e' = nMt * e + epsilon * sNorm
                let delta' = nMt * delta + epsilon * d + nB * e
                let d' = nM * d + nB * sNorm
                e <- e'
                delta <- delta'
                d <- d'

            total

        (Array.init paths.Length perPath |> Array.average) / (1.0 - p.Gamma ** float (horizon + 1))
