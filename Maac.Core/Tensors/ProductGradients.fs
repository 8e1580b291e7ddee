namespace Maac.Tensors

/// The inputs' gradients of a matrix product op(a)·op(b) (+ bias), on raw tensors (used by Tensor.matmulWith and
/// the fused product + activation).
module ProductGradients =
    /// The gradient of a product's bias, laid out as the forward pass reads it (whatever the bias's own shape):
    /// n elements are shared by every row (and batch entry), so g is summed over all but its last axis;
    /// batch·n elements give one row per batch entry, so g [B, m, n] is summed over its rows m.
    let bias (bias: RawTensor) (g: RawTensor) =
        let be = g.Backend
        let n = g.Shape.[g.Shape.Length - 1]

        let summed =
            if bias.Numel = n then
                Seq.fold (fun (r: RawTensor) _ -> be.SumAxis(r, 0, false)) g (seq { 2 .. g.Shape.Length })
            else
                be.SumAxis(g, 1, false)

        if summed.Shape = bias.Shape then
            summed
        else
            be.Reshape(summed, bias.Shape)

    /// The gradients of a, b and the bias (null when absent) given the product's gradient g; null where `need`
    /// is false. need has one entry per input (two without a bias).
    let inputs (transA: bool) (transB: bool) (a: RawTensor) (b: RawTensor) (biasInput: RawTensor) (g: RawTensor) (need: bool[]) =
        let be = g.Backend

        let dA =
            if not need.[0] then null
            elif transA then be.MatMul(transB, true, b, g, null)
            else be.MatMul(false, not transB, g, b, null)

        let dB =
            if not need.[1] then null
            elif transB then be.MatMul(true, transA, g, a, null)
            else be.MatMul(not transA, false, a, g, null)

        if isNull biasInput then
            [| dA; dB |]
        else
            [| dA; dB; (if need.[2] then bias biasInput g else null) |]
