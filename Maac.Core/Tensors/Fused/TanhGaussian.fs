namespace Maac.Tensors

open System

/// The element formulas of fused tanh-Gaussian sampling, shared by every backend (the GPU kernels call them too,
/// so they use only MathF and arithmetic). For one action dimension with mean m, log standard deviation before
/// clamping r, and standard-normal noise e:
/// ℓ = clamp(r, lo, hi), σ = eˡ, u = m + σ·e, a = tanh(u), and the dimension's share of log π(a) is
/// −e²/2 − ℓ − log(2π)/2 − log(1 − tanh²u), the last computed stably as 2·(log 2 − u − softplus(−2u)).
/// The noise is exactly (u − m)/σ, so neither m nor ℓ enters the Gaussian term except through −ℓ.
[<AbstractClass; Sealed>]
type TanhGaussianFormulas =
    /// log(2π)/2.
    static member HalfLog2Pi = 0.918938533f

    /// The clamped log standard deviation.
    static member LogStd(r: float32, lo: float32, hi: float32) = MathF.Min(MathF.Max(r, lo), hi)

    /// u = m + σ·e, the Gaussian sample before squashing, for the standard deviation σ = e^ℓ.
    static member Unsquashed(m: float32, sigma: float32, e: float32) = m + sigma * e

    /// The squashed action tanh(m + σ·e).
    static member Action(m: float32, r: float32, e: float32, lo: float32, hi: float32) =
        MathF.Tanh(TanhGaussianFormulas.Unsquashed(m, MathF.Exp(TanhGaussianFormulas.LogStd(r, lo, hi)), e))

    /// This dimension's term of the log-density, from the clamped log standard deviation ℓ and u = m + σ·e.
    static member LogProbTermAt(ls: float32, u: float32, e: float32) =
        -0.5f * e * e
        - ls
        - TanhGaussianFormulas.HalfLog2Pi
        - 2.0f * (0.693147181f - u - ScalarMath.Softplus(-2.0f * u))

    /// This dimension's term of the log-density of the action.
    static member LogProbTerm(m: float32, r: float32, e: float32, lo: float32, hi: float32) =
        let ls = TanhGaussianFormulas.LogStd(r, lo, hi)
        TanhGaussianFormulas.LogProbTermAt(ls, TanhGaussianFormulas.Unsquashed(m, MathF.Exp ls, e), e)

    /// dL/dm for the action a: gA·(1 − a²) + gL·2a.
    static member MeanGradAt(a: float32, gA: float32, gL: float32) = gA * (1.0f - a * a) + gL * 2.0f * a

    /// dL/dm given dL/da (gA) and dL/d(log π) (gL): gA·(1 − a²) + gL·2a.
    static member MeanGrad(m: float32, r: float32, e: float32, lo: float32, hi: float32, gA: float32, gL: float32) =
        TanhGaussianFormulas.MeanGradAt(TanhGaussianFormulas.Action(m, r, e, lo, hi), gA, gL)

    /// dL/dr from dL/dm and σ: inside the clamp range (where σ = eʳ), dL/dm·σ·e − gL (the −ℓ term); zero outside,
    /// as clamp's gradient.
    static member LogStdGradAt(r: float32, lo: float32, hi: float32, meanGrad: float32, sigma: float32, e: float32, gL: float32) =
        if r >= lo && r <= hi then
            meanGrad * sigma * e - gL
        else
            0.0f

    /// dL/dr: inside the clamp range, dL/dm·σ·e − gL (the −ℓ term); zero outside, as clamp's gradient.
    static member LogStdGrad(m: float32, r: float32, e: float32, lo: float32, hi: float32, gA: float32, gL: float32) =
        TanhGaussianFormulas.LogStdGradAt(r, lo, hi, TanhGaussianFormulas.MeanGrad(m, r, e, lo, hi, gA, gL), MathF.Exp r, e, gL)

    /// dL/de from dL/dm and σ: dL/dm·σ − gL·e.
    static member NoiseGradAt(meanGrad: float32, sigma: float32, e: float32, gL: float32) = meanGrad * sigma - gL * e

    /// dL/de: dL/dm·σ − gL·e.
    static member NoiseGrad(m: float32, r: float32, e: float32, lo: float32, hi: float32, gA: float32, gL: float32) =
        TanhGaussianFormulas.NoiseGradAt(
            TanhGaussianFormulas.MeanGrad(m, r, e, lo, hi, gA, gL),
            MathF.Exp(TanhGaussianFormulas.LogStd(r, lo, hi)),
            e,
            gL
        )

/// The attributes of fused tanh-Gaussian sampling: the range the log standard deviations are clamped to.
[<Struct>]
type TanhGaussianBounds =
    {
        /// The lower bound of the log standard deviations.
        Lo: float32
        /// The upper bound.
        Hi: float32
    }

/// The attributes of the gradient of fused tanh-Gaussian sampling.
[<Struct>]
type TanhGaussianGradient =
    {
        /// The clamp range of the sampling.
        Bounds: TanhGaussianBounds
        /// True for the gradient in the noise [N, A], false for the gradient in the head [N, 2A].
        WrtNoise: bool
    }

/// Fused tanh-Gaussian sampling (a squashed diagonal Gaussian policy's action and exact log-density in one
/// operation forward and one backward instead of about sixty) and its gradient.
module TanhGaussian =
    /// Checks a head [N, 2A] and noise [N, A] and returns (N, A).
    let private rowsAndActions (op: string) (shapes: int[][]) =
        let head, eps = shapes.[0], shapes.[1]

        if head.Length <> 2 || head.[1] % 2 <> 0 then
            Shape.fail op (sprintf "the head must be [N, 2A] (means then log standard deviations), got %s" (Shape.show head))

        let n, a = head.[0], head.[1] / 2

        if eps <> [| n; a |] then
            Shape.fail op (sprintf "the noise must be [%d, %d] for a head of shape %s, got %s" n a (Shape.show head) (Shape.show eps))

        n, a

    /// The means, the clamped log standard deviations and u = mean + σ·noise, as a composition.
    let private squashedInput (ops: IOps<'T>) (b: TanhGaussianBounds) (head: 'T) (eps: 'T) =
        let a = (ops.Shape eps).[1]
        let mean = ops.Slice(head, 1, 0, a)
        let logStd = ops.Scalar(Clamp(b.Lo, b.Hi), ops.Slice(head, 1, a, a))
        let u = ops.Binary(Add, mean, ops.Binary(Mul, ops.Unary(Exp, logStd), eps))
        mean, logStd, u

    /// The gradient of sampling in the head or the noise. Inputs: head [N, 2A], noise [N, A], the actions' gradient
    /// [N, A] and the log-densities' gradient [N]; output: the gradient [N, 2A] (means, then log standard deviations)
    /// or [N, A] (noise). Formulas in TanhGaussianFormulas.
    let gradient =
        { new FusedOp<TanhGaussianGradient>("tanhGaussianSampleGrad", [| "head"; "noise"; "actions' gradient"; "log-densities' gradient" |]) with
            member _.Gradient = NotDifferentiated

            member _.OutputShapes(g, shapes) =
                let op = "tanhGaussianSampleGrad"
                let n, a = rowsAndActions op shapes

                if shapes.[2] <> [| n; a |] then
                    Shape.fail op (sprintf "the actions' gradient must be [%d, %d], got %s" n a (Shape.show shapes.[2]))

                if shapes.[3] <> [| n |] then
                    Shape.fail op (sprintf "the log-densities' gradient must be [%d], got %s" n (Shape.show shapes.[3]))

                [| [| n; (if g.WrtNoise then a else 2 * a) |] |]

            member _.Reference<'T>(ops: IOps<'T>, g, xs: 'T[]) =
                let head, eps, gAction, gLogProb = xs.[0], xs.[1], xs.[2], xs.[3]
                let n = (ops.Shape eps).[0]
                let _, logStd, u = squashedInput ops g.Bounds head eps
                let action = ops.Unary(Tanh, u)
                let gL = ops.Reshape(gLogProb, [| n; 1 |])
                let sigma = ops.Unary(Exp, logStd)
                // dL/du = gA·(1 − a²) + gL·2a (the mean's gradient).
                let byU =
                    ops.Binary(
                        Add,
                        ops.Binary(Mul, gAction, ops.Scalar(AddScalar 1.0f, ops.Unary(Neg, ops.Unary(Square, action)))),
                        ops.Binary(Mul, gL, ops.Scalar(MulScalar 2.0f, action))
                    )

                if g.WrtNoise then
                    [| ops.Binary(Sub, ops.Binary(Mul, byU, sigma), ops.Binary(Mul, gL, eps)) |]
                else
                    // Inside the clamp range dL/dℓ = dL/du·σ·noise − gL; outside it, zero (clamp's gradient).
                    let a = (ops.Shape eps).[1]
                    let raw = ops.Slice(head, 1, a, a)
                    let bound v = ops.Full(raw, [||], v)

                    let inside =
                        ops.Binary(Mul, ops.Binary(GreaterEqual, raw, bound g.Bounds.Lo), ops.Binary(GreaterEqual, bound g.Bounds.Hi, raw))

                    let byLogStd = ops.Binary(Sub, ops.Binary(Mul, ops.Binary(Mul, byU, sigma), eps), gL)
                    [| ops.Concat([| byU; ops.Binary(Mul, inside, byLogStd) |], 1) |]
        }

    /// Sampling. Inputs: head [N, 2A] (each row's means, then its log standard deviations before clamping),
    /// noise [N, A] (standard normal); outputs: the actions tanh(μ + σ·ε) [N, A] and their log-densities [N].
    let sample =
        { new FusedOp<TanhGaussianBounds>("tanhGaussianSample", [| "head"; "noise" |]) with
            member _.Gradient = FusedBackward

            member _.OutputShapes(b, shapes) =
                if b.Lo > b.Hi then
                    Shape.fail "tanhGaussianSample" (sprintf "the lower bound %g is above the upper bound %g" b.Lo b.Hi)

                let n, a = rowsAndActions "tanhGaussianSample" shapes
                [| [| n; a |]; [| n |] |]

            member _.Reference<'T>(ops: IOps<'T>, b, xs: 'T[]) =
                let eps = xs.[1]
                let _, logStd, u = squashedInput ops b xs.[0] eps
                // log(1 − tanh²u) = 2·(log 2 − u − softplus(−2u)).
                let squash =
                    ops.Scalar(
                        MulScalar 2.0f,
                        ops.Binary(
                            Sub,
                            ops.Scalar(AddScalar 0.693147181f, ops.Unary(Neg, u)),
                            ops.Unary(Softplus, ops.Scalar(MulScalar -2.0f, u))
                        )
                    )

                let gaussian = ops.Binary(Sub, ops.Scalar(MulScalar -0.5f, ops.Unary(Square, eps)), logStd)
                let terms = ops.Binary(Sub, ops.Scalar(AddScalar -TanhGaussianFormulas.HalfLog2Pi, gaussian), squash)
                [| ops.Unary(Tanh, u); ops.SumAxis(terms, 1, false) |]

            member _.Backward(backend, b, xs, _, gs, need) =
                let head, eps = xs.[0], xs.[1]
                let orZero (g: RawTensor) (shape: int[]) = if isNull g then backend.Full(shape, 0.0f) else g
                let gAction = orZero gs.[0] eps.Shape
                let gLogProb = orZero gs.[1] [| eps.Shape.[0] |]

                let grad wrtNoise =
                    (Fused.run backend gradient { Bounds = b; WrtNoise = wrtNoise } [| head; eps; gAction; gLogProb |]).[0]

                [| (if need.[0] then grad false else null); (if need.[1] then grad true else null) |]
        }
