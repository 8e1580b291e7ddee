namespace Maac.Tensors

open System

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

    /// d sample / dv = e^(v/2)·e/2, from t and e^−|t| (v = lo + softplus(t)).
    static member private SampleByLogVar(t: float32, expNegAbsT: float32, lo: float32, e: float32) =
        0.5f * MathF.Exp(0.5f * (lo + ScalarMath.SoftplusFrom(t, expNegAbsT))) * e

    /// The gradients' shared steps: the gap hi − r, t, and e^−|·| of each (which softplus and σ share; see
    /// ScalarMath.SigmoidFrom), with d sample / dv. The same operations as Inner and the formulas above.
    static member private GradientSteps(r: float32, hi: float32, lo: float32, e: float32) =
        let gap = hi - r
        let expNegAbsGap = ScalarMath.ExpNegAbs gap
        let t = hi - ScalarMath.SoftplusFrom(gap, expNegAbsGap) - lo
        let expNegAbsT = ScalarMath.ExpNegAbs t
        struct (gap, expNegAbsGap, t, expNegAbsT, GaussianHeadFormulas.SampleByLogVar(t, expNegAbsT, lo, e))

    /// dL/dr for dL/dsample g: g·(e^(v/2)·e/2)·σ(t)·σ(hi − r).
    static member RawGrad(r: float32, hi: float32, lo: float32, e: float32, g: float32) =
        let struct (gap, expNegAbsGap, t, expNegAbsT, byLogVar) =
            GaussianHeadFormulas.GradientSteps(r, hi, lo, e)

        g * byLogVar * ScalarMath.SigmoidFrom(t, expNegAbsT) * ScalarMath.SigmoidFrom(gap, expNegAbsGap)

    /// dL/dhi: g·(e^(v/2)·e/2)·σ(t)·(1 − σ(hi − r)).
    static member MaxGrad(r: float32, hi: float32, lo: float32, e: float32, g: float32) =
        let struct (gap, expNegAbsGap, t, expNegAbsT, byLogVar) =
            GaussianHeadFormulas.GradientSteps(r, hi, lo, e)

        g
        * byLogVar
        * ScalarMath.SigmoidFrom(t, expNegAbsT)
        * (1.0f - ScalarMath.SigmoidFrom(gap, expNegAbsGap))

    /// dL/dlo: g·(e^(v/2)·e/2)·(1 − σ(t)).
    static member MinGrad(r: float32, hi: float32, lo: float32, e: float32, g: float32) =
        let struct (_, _, t, expNegAbsT, byLogVar) = GaussianHeadFormulas.GradientSteps(r, hi, lo, e)
        g * byLogVar * (1.0f - ScalarMath.SigmoidFrom(t, expNegAbsT))

    /// dL/de: g·e^(v/2).
    static member NoiseGrad(r: float32, hi: float32, lo: float32, g: float32) = g * MathF.Exp(0.5f * GaussianHeadFormulas.LogVar(r, hi, lo))

/// The inputs of fused Gaussian-head sampling a gradient can be asked for.
type GaussianHeadInput =
    /// The head [R, 2D]: means, then raw log-variances.
    | HeadInput
    /// The upper log-variance bound [D].
    | MaxLogVarInput
    /// The lower log-variance bound [D].
    | MinLogVarInput
    /// The standard-normal noise [R, D].
    | NoiseInput

/// Fused sampling from a Gaussian head with softly bounded log-variance (the dynamics ensemble's output) and its
/// gradient.
module GaussianHead =
    /// Checks a head [R, 2D], bounds [D] and noise [R, D] and returns (R, D).
    let private rowsAndOutputs (op: string) (shapes: int[][]) =
        let head, maxLogVar, minLogVar, eps = shapes.[0], shapes.[1], shapes.[2], shapes.[3]

        if head.Length <> 2 || head.[1] % 2 <> 0 then
            Shape.fail op (sprintf "the head must be [R, 2D] (means then raw log-variances), got %s" (Shape.show head))

        let r, d = head.[0], head.[1] / 2

        if maxLogVar <> [| d |] || minLogVar <> [| d |] then
            Shape.fail op (sprintf "the log-variance bounds must be [%d], got %s and %s" d (Shape.show maxLogVar) (Shape.show minLogVar))

        if eps <> [| r; d |] then
            Shape.fail op (sprintf "the noise must be [%d, %d] for a head of shape %s, got %s" r d (Shape.show head) (Shape.show eps))

        r, d

    /// The raw log-variances r, t = hi − softplus(hi − r) − lo and the bounded log-variance v = lo + softplus(t).
    let private logVariance (ops: IOps<'T>) (head: 'T) (hi: 'T) (lo: 'T) =
        let d = (ops.Shape head).[1] / 2
        let raw = ops.Slice(head, 1, d, d)
        let inner = ops.Binary(Sub, ops.Binary(Sub, hi, ops.Unary(Softplus, ops.Binary(Sub, hi, raw))), lo)
        raw, inner, ops.Binary(Add, lo, ops.Unary(Softplus, inner))

    /// The gradient of sampling in one input (the attribute). Inputs: head [R, 2D], bounds [D], noise [R, D] and
    /// the samples' gradient [R, D]; output: the gradient in the head [R, 2D], or per row in a bound or the noise
    /// [R, D] (the caller sums a bound's over rows). Formulas in GaussianHeadFormulas.
    let gradient =
        { new FusedOp<GaussianHeadInput>("gaussianHeadSampleGrad",
                                         [| "head"; "upper log-variance bound"; "lower log-variance bound"; "noise"; "samples' gradient" |]) with
            member _.Gradient = NotDifferentiated

            member _.OutputShapes(input, shapes) =
                let r, d = rowsAndOutputs "gaussianHeadSampleGrad" shapes

                if shapes.[4] <> [| r; d |] then
                    Shape.fail
                        "gaussianHeadSampleGrad"
                        (sprintf "the samples' gradient must be [%d, %d], got %s" r d (Shape.show shapes.[4]))

                [| [| r; (if input = HeadInput then 2 * d else d) |] |]

            member _.Reference<'T>(ops: IOps<'T>, input, xs: 'T[]) =
                let head, hi, lo, eps, g = xs.[0], xs.[1], xs.[2], xs.[3], xs.[4]
                let raw, inner, logVar = logVariance ops head hi lo
                let std = ops.Unary(Exp, ops.Scalar(MulScalar 0.5f, logVar))
                // dL/dv = g·e^(v/2)·ε/2.
                let byLogVar = ops.Binary(Mul, g, ops.Scalar(MulScalar 0.5f, ops.Binary(Mul, std, eps)))
                let sigmaInner = ops.Unary(Sigmoid, inner)
                let sigmaGap = ops.Unary(Sigmoid, ops.Binary(Sub, hi, raw))
                let oneMinus x = ops.Scalar(AddScalar 1.0f, ops.Unary(Neg, x))

                [|
                    match input with
                    | HeadInput -> ops.Concat([| g; ops.Binary(Mul, ops.Binary(Mul, byLogVar, sigmaInner), sigmaGap) |], 1)
                    | MaxLogVarInput -> ops.Binary(Mul, ops.Binary(Mul, byLogVar, sigmaInner), oneMinus sigmaGap)
                    | MinLogVarInput -> ops.Binary(Mul, byLogVar, oneMinus sigmaInner)
                    | NoiseInput -> ops.Binary(Mul, g, std)
                |]
        }

    /// Sampling. Inputs: head [R, 2D] (each row's means, then its raw log-variances), the learned bounds maxLogVar
    /// and minLogVar [D], noise [R, D] (standard normal); output: the samples μ + e^(v/2)·ε [R, D] with
    /// v = min + softplus(max − softplus(max − raw) − min).
    let sample =
        { new FusedOp<unit>("gaussianHeadSample", [| "head"; "upper log-variance bound"; "lower log-variance bound"; "noise" |]) with
            member _.Gradient = FusedBackward

            member _.OutputShapes(_, shapes) =
                let r, d = rowsAndOutputs "gaussianHeadSample" shapes
                [| [| r; d |] |]

            member _.Reference<'T>(ops: IOps<'T>, (), xs: 'T[]) =
                let head, eps = xs.[0], xs.[3]
                let d = (ops.Shape eps).[1]
                let _, _, logVar = logVariance ops head xs.[1] xs.[2]
                let std = ops.Unary(Exp, ops.Scalar(MulScalar 0.5f, logVar))
                [| ops.Binary(Add, ops.Slice(head, 1, 0, d), ops.Binary(Mul, std, eps)) |]

            member _.Backward(backend, (), xs, _, gs, need) =
                let grad input = (Fused.run backend gradient input (Array.append xs [| gs.[0] |])).[0]

                let bound input = backend.SumAxis(grad input, 0, false)

                [|
                    (if need.[0] then grad HeadInput else null)
                    (if need.[1] then bound MaxLogVarInput else null)
                    (if need.[2] then bound MinLogVarInput else null)
                    (if need.[3] then grad NoiseInput else null)
                |]
        }
