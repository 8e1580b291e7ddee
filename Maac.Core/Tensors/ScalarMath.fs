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

    /// e^−|x|: the exponential that softplus(x) takes, and that σ(x) takes too where x ≥ 0.
    static member ExpNegAbs(x: float32) = MathF.Exp(-(MathF.Abs x))

    /// softplus(x) given e^−|x| (expNegAbs): max(x, 0) + log1p(e^−|x|).
    static member SoftplusFrom(x: float32, expNegAbs: float32) = MathF.Max(x, 0.0f) + ScalarMath.Log1p expNegAbs

    /// log(1 + eˣ), computed stably as max(x, 0) + log1p(e^−|x|): accurate where eˣ is below float32's rounding
    /// of 1 (x ≤ −17), where log(1 + eˣ) would give 0.
    static member Softplus(x: float32) = ScalarMath.SoftplusFrom(x, ScalarMath.ExpNegAbs x)

    /// 1 / (1 + e^−x).
    static member Sigmoid(x: float32) = 1.0f / (1.0f + MathF.Exp(-x))

    /// σ(x) given e^−|x| (expNegAbs): where x ≥ 0, e^−x is that value (−x and −|x| are the same float, ±0 included),
    /// so σ(x) takes it instead of a second exponential; elsewhere it is Sigmoid x. The same bits as Sigmoid x.
    static member SigmoidFrom(x: float32, expNegAbs: float32) =
        if x >= 0.0f then
            1.0f / (1.0f + expNegAbs)
        else
            ScalarMath.Sigmoid x
