namespace Maac.Cuda

open ILGPU
open ILGPU.Runtime
open Maac.Tensors

/// The device kernel of the fused product + activation's second half.
type internal MatMulActivationKernels =
    /// After a product without bias: adds the bias to the product in place (as the product's bias fill places it;
    /// none when hasBias = 0) and writes op(product) to y, in one pass.
    static member BiasActivation
        (i: Index1D)
        (product: ArrayView<float32>)
        (bias: ArrayView<float32>)
        (y: ArrayView<float32>)
        (n: int)
        (mn: int)
        (perBatch: int)
        (hasBias: int)
        (op: int)
        =
        let v =
            if hasBias = 1 then
                product.[i] + bias.[(i.X / mn) * perBatch + i.X % n]
            else
                product.[i]

        product.[i] <- v
        y.[i] <- Kernels.UnaryValue(op, v)

/// The GPU kernel of the product + activation: the product without bias (one cuBLAS call), then bias and
/// activation in one kernel: two launches where the product then the activation would take three (bias fill,
/// product, activation).
module internal MatMulActivationGpu =
    let op =
        GpuFusedKernel.define MatMulActivation.op (fun accelerator ->
            let kernel =
                accelerator.LoadAutoGroupedStreamKernel<
                    Index1D,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    int,
                    int,
                    int,
                    int,
                    int
                 >(
                    MatMulActivationKernels.BiasActivation
                )

            fun gpu p inputs shapes ->
                let a, b = inputs.[0], inputs.[1]
                let bias = if inputs.Length = 3 then inputs.[2] else null
                let plan = Plans.matMul p.TransA p.TransB a.Shape b.Shape (if isNull bias then -1 else bias.Numel)
                let product = gpu.Backend.MatMul(p.TransA, p.TransB, a, b, null)
                let productView = gpu.View product
                let biasView = if isNull bias then productView else gpu.View bias
                let struct (y, activated) = gpu.Alloc shapes.[0]

                let perBatch =
                    if not (isNull bias) && bias.Numel <> plan.N then
                        plan.N
                    else
                        0

                gpu.Launch(
                    activated.Numel,
                    fun c ->
                        kernel.Invoke(
                            c,
                            productView,
                            biasView,
                            y,
                            plan.N,
                            max 1 (plan.M * plan.N),
                            perBatch,
                            (if isNull bias then 0 else 1),
                            OpCodes.unary p.Activation
                        )
                )

                [| activated; product |])
