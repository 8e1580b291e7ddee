namespace Maac.Tensors.Cpu

open System.Runtime.Intrinsics
open Maac.Tensors

/// ScalarMath's functions on sixteen lanes at a time, each lane with the bits of the scalar function (the same float
/// operations in the same order; exp and log from LibmVector, so only where LibmVector.Enabled).
module internal LaneMath =
    type private V = Vector512<float32>

    /// Each lane where mask is set from a, elsewhere from b.
    let inline select (mask: V) (a: V) (b: V) = Vector512.ConditionalSelect(mask, a, b)

    /// ScalarMath.Log1p: z where 1 + z rounds to 1, else log(w)·(z/(w − 1)) with w = 1 + z.
    let inline log1p (z: V) =
        let one = V.One
        let w = one + z
        select (Vector512.Equals(w, one)) z (LibmVector.log w * (z / (w - one)))

    /// ScalarMath.ExpNegAbs: e^−|x|.
    let inline expNegAbs (x: V) = LibmVector.exp -(Vector512.Abs x)

    /// ScalarMath.SoftplusFrom: max(x, 0) + log1p(e^−|x|) given e^−|x|.
    let inline softplusFrom (x: V) (expNegAbs: V) = Vector512.Max(x, V.Zero) + log1p expNegAbs

    /// ScalarMath.Softplus.
    let inline softplus (x: V) = softplusFrom x (expNegAbs x)

    /// ScalarMath.SigmoidFrom: 1/(1 + e^−|x|) where x ≥ 0, else 1/(1 + e^−x).
    let inline sigmoidFrom (x: V) (expNegAbs: V) =
        let one = V.One
        let atOrAboveZero = Vector512.GreaterThanOrEqual(x, V.Zero)

        let negative =
            if Vector512.EqualsAll(atOrAboveZero.AsUInt32(), Vector512<uint32>.AllBitsSet) then
                one
            else
                one / (one + LibmVector.exp -x)

        select atOrAboveZero (one / (one + expNegAbs)) negative
