namespace Maac.Cuda

open System
open ILGPU
open ILGPU.Runtime
open Maac.Tensors

/// The device kernel of Adam's update.
type internal AdamKernels =
    /// Element i of w', m', v' (AdamUpdate.step).
    static member Step
        (i: Index1D)
        (w: ArrayView<float32>)
        (g: ArrayView<float32>)
        (m: ArrayView<float32>)
        (v: ArrayView<float32>)
        (w2: ArrayView<float32>)
        (m2: ArrayView<float32>)
        (v2: ArrayView<float32>)
        (h: AdamHyper)
        =
        let gv = g.[i]
        let mv = h.Beta1 * m.[i] + (1.0f - h.Beta1) * gv
        let vv = h.Beta2 * v.[i] + (1.0f - h.Beta2) * gv * gv
        m2.[i] <- mv
        v2.[i] <- vv
        w2.[i] <- w.[i] - h.LearningRate * (mv / h.Correction1) / (MathF.Sqrt(vv / h.Correction2) + h.Epsilon)

/// The GPU kernel of Adam's update, one thread per element.
module internal AdamGpu =
    let step =
        GpuFusedKernel.define AdamUpdate.step (fun accelerator ->
            let kernel =
                accelerator.LoadAutoGroupedStreamKernel<
                    Index1D,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    AdamHyper
                 >(
                    AdamKernels.Step
                )

            fun gpu hyper inputs shapes ->
                let v = inputs |> Array.map gpu.View
                let outputs = shapes |> Array.map gpu.Alloc
                let struct (w', tw) = outputs.[0]
                let struct (m', tm) = outputs.[1]
                let struct (v', tv) = outputs.[2]
                gpu.Launch(tw.Numel, fun n -> kernel.Invoke(n, v.[0], v.[1], v.[2], v.[3], w', m', v', hyper))
                [| tw; tm; tv |])
