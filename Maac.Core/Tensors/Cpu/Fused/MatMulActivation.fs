namespace Maac.Tensors.Cpu

open Maac.Tensors

/// The CPU kernel of the product + activation: the matrix product applies ReLU or swish to each block of its output's
/// rows as soon as the block is stored, while it is in the cache, instead of in a second pass over the whole output; other
/// activations take that second pass. Both use the element-wise kernels' formulas, so the outputs equal the
/// composition's bit for bit.
module internal MatMulActivationCpu =
    /// Runs the product into `product` and writes its activation to `activated` (which may be the same array: the
    /// activation then replaces the product block by block).
    let private run (p: ProductActivation) (inputs: float32[][]) (shapes: int[][]) (product: float32[]) (activated: float32[]) =
        let bias = if inputs.Length = 3 then inputs.[2] else null

        let plan =
            Plans.matMul p.TransA p.TransB shapes.[0] shapes.[1] (if isNull bias then -1 else bias.Length)

        let a, b = Gemm.operands plan p.TransA p.TransB inputs.[0] inputs.[1]

        if Elementwise.storesActivation p.Activation then
            let activate (offset: int) (length: int) = Elementwise.activationRange p.Activation product activated offset length

            Gemm.runThen activate plan.Batches plan.M plan.N plan.K a b product bias
        else
            Gemm.run plan.Batches plan.M plan.N plan.K a b product bias
            Elementwise.unary p.Activation product activated

    /// The activation and the product with its bias (MatMulActivation.op's outputs).
    let op =
        CpuFusedKernel.define MatMulActivation.op (fun p inputs shapes outputs -> run p inputs shapes outputs.[1] outputs.[0])

    /// The activation alone (MatMulActivation.activationOnly), activated in place of the product: one output array
    /// written.
    let activationOnly =
        CpuFusedKernel.define MatMulActivation.activationOnly (fun p inputs shapes outputs -> run p inputs shapes outputs.[0] outputs.[0])
