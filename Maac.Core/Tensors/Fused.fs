namespace Maac.Tensors

open System

/// Scalar functions shared by the fused formulas and the GPU kernels (MathF and arithmetic only, so that ILGPU
/// can compile them for the device).
[<AbstractClass; Sealed>]
type ScalarMath =
    /// log(1 + z) to float32 accuracy for z ≥ 0 (Goldberg's correction: log(1 + z) is computed from w = fl(1 + z) as
    /// log(w)·z/(w − 1), which cancels w's rounding; z itself when w rounds to 1).
    static member Log1p(z: float32) =
        let w = 1.0f + z
        if w = 1.0f then z else MathF.Log w * (z / (w - 1.0f))

    /// log(1 + eˣ), computed stably as max(x, 0) + log1p(e^−|x|): accurate where eˣ is below float32's rounding
    /// of 1 (x ≤ −17), where log(1 + eˣ) would give 0.
    static member Softplus(x: float32) = MathF.Max(x, 0.0f) + ScalarMath.Log1p(MathF.Exp(-(MathF.Abs x)))

    /// 1 / (1 + e^−x).
    static member Sigmoid(x: float32) = 1.0f / (1.0f + MathF.Exp(-x))

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

    /// The squashed action tanh(m + σ·e).
    static member Action(m: float32, r: float32, e: float32, lo: float32, hi: float32) =
        MathF.Tanh(m + MathF.Exp(TanhGaussianFormulas.LogStd(r, lo, hi)) * e)

    /// This dimension's term of the log-density of the action.
    static member LogProbTerm(m: float32, r: float32, e: float32, lo: float32, hi: float32) =
        let ls = TanhGaussianFormulas.LogStd(r, lo, hi)
        let u = m + MathF.Exp ls * e

        -0.5f * e * e
        - ls
        - TanhGaussianFormulas.HalfLog2Pi
        - 2.0f * (0.693147181f - u - ScalarMath.Softplus(-2.0f * u))

    /// dL/dm given dL/da (gA) and dL/d(log π) (gL): gA·(1 − a²) + gL·2a.
    static member MeanGrad(m: float32, r: float32, e: float32, lo: float32, hi: float32, gA: float32, gL: float32) =
        let a = TanhGaussianFormulas.Action(m, r, e, lo, hi)
        gA * (1.0f - a * a) + gL * 2.0f * a

    /// dL/dr: inside the clamp range, dL/dm·σ·e − gL (the −ℓ term); zero outside, as clamp's gradient.
    static member LogStdGrad(m: float32, r: float32, e: float32, lo: float32, hi: float32, gA: float32, gL: float32) =
        if r >= lo && r <= hi then
            TanhGaussianFormulas.MeanGrad(m, r, e, lo, hi, gA, gL) * MathF.Exp r * e - gL
        else
            0.0f

    /// dL/de: dL/dm·σ − gL·e.
    static member NoiseGrad(m: float32, r: float32, e: float32, lo: float32, hi: float32, gA: float32, gL: float32) =
        TanhGaussianFormulas.MeanGrad(m, r, e, lo, hi, gA, gL)
        * MathF.Exp(TanhGaussianFormulas.LogStd(r, lo, hi))
        - gL * e

/// The element formulas of fused sampling from a Gaussian head with softly bounded log-variance (the dynamics
/// ensemble's output; Chua et al. 2018), shared by every backend. For one output with mean μ, raw log-variance
/// r, learned bounds hi (max) and lo (min), and standard-normal noise e:
/// t = hi − softplus(hi − r) − lo, v = lo + softplus(t) (the bounded log-variance), sample = μ + e^(v/2)·e.
[<AbstractClass; Sealed>]
type GaussianHeadFormulas =
    /// t, the argument of the outer softplus.
    static member Inner(r: float32, hi: float32, lo: float32) = hi - ScalarMath.Softplus(hi - r) - lo

    /// The bounded log-variance v.
    static member LogVar(r: float32, hi: float32, lo: float32) = lo + ScalarMath.Softplus(GaussianHeadFormulas.Inner(r, hi, lo))

    /// μ + e^(v/2)·e.
    static member Sample(mean: float32, r: float32, hi: float32, lo: float32, e: float32) =
        mean + MathF.Exp(0.5f * GaussianHeadFormulas.LogVar(r, hi, lo)) * e

    /// d sample / dv = e^(v/2)·e/2.
    static member private SampleByLogVar(r: float32, hi: float32, lo: float32, e: float32) =
        0.5f * MathF.Exp(0.5f * GaussianHeadFormulas.LogVar(r, hi, lo)) * e

    /// dL/dr for dL/dsample g: g·(e^(v/2)·e/2)·σ(t)·σ(hi − r).
    static member RawGrad(r: float32, hi: float32, lo: float32, e: float32, g: float32) =
        g
        * GaussianHeadFormulas.SampleByLogVar(r, hi, lo, e)
        * ScalarMath.Sigmoid(GaussianHeadFormulas.Inner(r, hi, lo))
        * ScalarMath.Sigmoid(hi - r)

    /// dL/dhi: g·(e^(v/2)·e/2)·σ(t)·(1 − σ(hi − r)).
    static member MaxGrad(r: float32, hi: float32, lo: float32, e: float32, g: float32) =
        g
        * GaussianHeadFormulas.SampleByLogVar(r, hi, lo, e)
        * ScalarMath.Sigmoid(GaussianHeadFormulas.Inner(r, hi, lo))
        * (1.0f - ScalarMath.Sigmoid(hi - r))

    /// dL/dlo: g·(e^(v/2)·e/2)·(1 − σ(t)).
    static member MinGrad(r: float32, hi: float32, lo: float32, e: float32, g: float32) =
        g
        * GaussianHeadFormulas.SampleByLogVar(r, hi, lo, e)
        * (1.0f - ScalarMath.Sigmoid(GaussianHeadFormulas.Inner(r, hi, lo)))

    /// dL/de: g·e^(v/2).
    static member NoiseGrad(r: float32, hi: float32, lo: float32, g: float32) = g * MathF.Exp(0.5f * GaussianHeadFormulas.LogVar(r, hi, lo))
