namespace Maac.Analysis

open System
open Maac.Tensors

/// Small dense float64 matrices (float[,]) for exact linear-quadratic analysis.
module Mat =
    let rows (m: float[,]) = Array2D.length1 m
    let cols (m: float[,]) = Array2D.length2 m
    let zeros r c = Array2D.zeroCreate<float> r c
    let identity n = Array2D.init n n (fun i j -> if i = j then 1.0 else 0.0)
    let transpose (m: float[,]) = Array2D.init (cols m) (rows m) (fun i j -> m.[j, i])
    let add (a: float[,]) (b: float[,]) = Array2D.init (rows a) (cols a) (fun i j -> a.[i, j] + b.[i, j])
    let sub (a: float[,]) (b: float[,]) = Array2D.init (rows a) (cols a) (fun i j -> a.[i, j] - b.[i, j])
    let scale (c: float) (a: float[,]) = Array2D.map ((*) c) a

    let mul (a: float[,]) (b: float[,]) =
        if cols a <> rows b then
            invalidArg "b" (sprintf "cannot multiply %dx%d by %dx%d" (rows a) (cols a) (rows b) (cols b))

        Array2D.init (rows a) (cols b) (fun i j -> Seq.sum (seq { for k in 0 .. cols a - 1 -> a.[i, k] * b.[k, j] }))

    let trace (a: float[,]) = Seq.sum (seq { for i in 0 .. rows a - 1 -> a.[i, i] })
    let outer (x: float[]) (y: float[]) = Array2D.init x.Length y.Length (fun i j -> x.[i] * y.[j])
    let apply (a: float[,]) (x: float[]) = Array.init (rows a) (fun i -> Seq.sum (seq { for k in 0 .. cols a - 1 -> a.[i, k] * x.[k] }))
    let frobenius (a: float[,]) = sqrt (Seq.sum (seq { for v in Seq.cast<float> a -> v * v }))
    let maxAbsDiff (a: float[,]) (b: float[,]) = Seq.max (Seq.map2 (fun x y -> abs (x - y)) (Seq.cast<float> a) (Seq.cast<float> b))
    let vecNorm (x: float[]) = sqrt (Array.sumBy (fun v -> v * v) x)

    /// The spectral norm ‖a‖₂ (largest singular value) by power iteration on aᵀa.
    let norm2 (a: float[,]) =
        let ata = mul (transpose a) a
        let mutable v = Array.init (cols a) (fun i -> 1.0 + 0.1 * float i)
        let mutable lambda = 0.0

        for _ in 1..500 do
            let w = apply ata v
            let n = vecNorm w
            lambda <- n / max 1e-300 (vecNorm v)
            v <- if n = 0.0 then v else Array.map (fun x -> x / n) w

        sqrt lambda

    /// Spectral radius by Gelfand's formula ‖aᵏ‖^(1/k) at k = 256 (a is small, k large enough for tests).
    let spectralRadius (a: float[,]) =
        let mutable p = a
        let mutable logScale = 0.0
        // Invariant: a^(2^i) = p · exp(logScale); each step normalises p and squares it.
        for _ in 1..8 do
            let n = max 1e-300 (frobenius p)
            logScale <- 2.0 * (logScale + log n)
            let q = scale (1.0 / n) p
            p <- mul q q

        exp ((log (max 1e-300 (frobenius p)) + logScale) / 256.0)

    let ofTensor (t: Tensor) =
        let v = t.ToArray()
        Array2D.init t.Shape.[0] t.Shape.[1] (fun i j -> float v.[i * t.Shape.[1] + j])

    let toTensor (a: float[,]) =
        Tensor.ofArray
            [| rows a; cols a |]
            [|
                for i in 0 .. rows a - 1 do
                    for j in 0 .. cols a - 1 -> float32 a.[i, j]
            |]

/// A discounted linear-quadratic problem: s' = A s + B u, reward −½(sᵀQs + uᵀRu), a linear-Gaussian
/// policy u = K s + σ ε (ε standard normal), discount γ, a fixed start state.
type LqProblem =
    {
        A: float[,]
        B: float[,]
        Q: float[,]
        R: float[,]
        Gamma: float
        NoiseStd: float
        Start: float[]
    }

    member p.StateDim = Mat.rows p.A
    member p.ActionDim = Mat.cols p.B

/// Exact quantities of a linear-Gaussian policy on a linear-quadratic problem (derivations: docs/gradient-error.md).
module LinearQuadratic =
    /// The closed-loop matrix M = A + B K.
    let closedLoop (p: LqProblem) (k: float[,]) = Mat.add p.A (Mat.mul p.B k)

    /// Whether the discounted second moments converge: γ ρ(M)² < 1.
    let isStable (p: LqProblem) (k: float[,]) = p.Gamma * (Mat.spectralRadius (closedLoop p k)) ** 2.0 < 1.0

    let private fixedPoint (step: float[,] -> float[,]) (start: float[,]) =
        let mutable x = start
        let mutable change = infinity
        let mutable it = 0

        while change > 1e-13 * (1.0 + Mat.frobenius x) && it < 100_000 do
            let next = step x
            change <- Mat.maxAbsDiff next x
            x <- next
            it <- it + 1

        if change > 1e-9 * (1.0 + Mat.frobenius x) then
            invalidOp "the discounted Lyapunov iteration did not converge (is γρ(A+BK)² < 1?)"

        x

    /// P with V(s) = −½ sᵀPs − c: the fixed point of P = Q + KᵀRK + γ MᵀPM.
    let valueMatrix (p: LqProblem) (k: float[,]) =
        let m = closedLoop p k
        let c = Mat.add p.Q (Mat.mul (Mat.transpose k) (Mat.mul p.R k))
        fixedPoint (fun x -> Mat.add c (Mat.scale p.Gamma (Mat.mul (Mat.transpose m) (Mat.mul x m)))) (Mat.zeros p.StateDim p.StateDim)

    /// W with Q(s, a) = −½ [s; a]ᵀ W [s; a] − const for the policy K (its action-value function).
    let qWeights (p: LqProblem) (k: float[,]) =
        let pm = valueMatrix p k
        let n, m = p.StateDim, p.ActionDim
        let g = p.Gamma
        let ss = Mat.add p.Q (Mat.scale g (Mat.mul (Mat.transpose p.A) (Mat.mul pm p.A)))
        let sa = Mat.scale g (Mat.mul (Mat.transpose p.A) (Mat.mul pm p.B))
        let aa = Mat.add p.R (Mat.scale g (Mat.mul (Mat.transpose p.B) (Mat.mul pm p.B)))

        Array2D.init (n + m) (n + m) (fun i j ->
            match i < n, j < n with
            | true, true -> ss.[i, j]
            | true, false -> sa.[i, j - n]
            | false, true -> sa.[j, i - n]
            | false, false -> aa.[i - n, j - n])

    /// Second moments S_t = E[s_t s_tᵀ] from the start state: S_{t+1} = M S_t Mᵀ + σ² B Bᵀ.
    let secondMoments (p: LqProblem) (k: float[,]) (steps: int) =
        let m = closedLoop p k
        let noise = Mat.scale (p.NoiseStd * p.NoiseStd) (Mat.mul p.B (Mat.transpose p.B))
        Array.scan (fun s _ -> Mat.add (Mat.mul m (Mat.mul s (Mat.transpose m))) noise) (Mat.outer p.Start p.Start) [| 1..steps |]

    /// Σ_K = Σₜ γᵗ E[s_t s_tᵀ], the fixed point of Σ = S₀ + γ (M Σ Mᵀ + σ² B Bᵀ/(1 − γ)).
    let discountedMoments (p: LqProblem) (k: float[,]) =
        let m = closedLoop p k
        let s0 = Mat.outer p.Start p.Start
        let noise = Mat.scale (p.NoiseStd * p.NoiseStd / (1.0 - p.Gamma)) (Mat.mul p.B (Mat.transpose p.B))
        fixedPoint (fun x -> Mat.add s0 (Mat.scale p.Gamma (Mat.add (Mat.mul m (Mat.mul x (Mat.transpose m))) noise))) s0

    /// The expected discounted return J(K) = Σₜ γᵗ E[r_t] from the start state.
    let expectedReturn (p: LqProblem) (k: float[,]) =
        let sigma = discountedMoments p k
        let c = Mat.add p.Q (Mat.mul (Mat.transpose k) (Mat.mul p.R k))
        -0.5 * (Mat.trace (Mat.mul c sigma) + p.NoiseStd * p.NoiseStd * Mat.trace p.R / (1.0 - p.Gamma))

    /// The exact policy gradient ∇_K J = −[(R + γBᵀPB) K + γ BᵀPA] Σ_K.
    let exactGradient (p: LqProblem) (k: float[,]) =
        let pm = valueMatrix p k
        let g = p.Gamma

        let e =
            Mat.add
                (Mat.mul (Mat.add p.R (Mat.scale g (Mat.mul (Mat.transpose p.B) (Mat.mul pm p.B)))) k)
                (Mat.scale g (Mat.mul (Mat.transpose p.B) (Mat.mul pm p.A)))

        Mat.scale -1.0 (Mat.mul e (discountedMoments p k))

    /// n start states from the block distribution d_H(s) = (1 − γ^(H+1)) Σⱼ γ^(j(H+1)) ρ_(j(H+1))(s): a
    /// trajectory of the policy from the start state observed every H + 1 steps, geometrically weighted.
    /// With these starts the H-step pathwise gradient, divided by 1 − γ^(H+1), is the exact policy gradient.
    let sampleBlockStarts (p: LqProblem) (k: float[,]) (horizon: int) (key: RandomKey) (n: int) =
        let q = p.Gamma ** float (horizon + 1)
        let ks = RandomKey.split 2 key
        let u = Array.zeroCreate<float32> n
        RandomKey.fillUniform ks.[0] (Span<float32>(u)) 0
        // j ~ Geometric(1 − q): P(j) = (1 − q) qʲ.
        let blocks = u |> Array.map (fun v -> int (floor (log (1.0 - float v * (1.0 - 1e-7)) / log q)))
        let steps = blocks |> Array.map (fun j -> j * (horizon + 1))
        let longest = Array.max steps
        let noise = Array.zeroCreate<float32>(max 1 (n * longest * p.ActionDim))
        RandomKey.fillNormal ks.[1] (Span<float32>(noise)) 0
        let m = closedLoop p k

        Array.init n (fun i ->
            let mutable s = Array.copy p.Start

            for t in 0 .. steps.[i] - 1 do
                let e = Array.init p.ActionDim (fun j -> p.NoiseStd * float noise.[(i * longest + t) * p.ActionDim + j])
                s <- Array.map2 (+) (Mat.apply m s) (Mat.apply p.B e)

            s)
