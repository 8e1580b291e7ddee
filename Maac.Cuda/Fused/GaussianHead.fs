namespace Maac.Cuda

open ILGPU
open ILGPU.Runtime
open Maac.Tensors

/// The device kernels of fused Gaussian-head sampling (formulas in GaussianHeadFormulas).
type internal GaussianHeadKernels =
    /// Element i of the samples: head rows of 2D, samples rows of D.
    static member Sample
        (i: Index1D)
        (head: ArrayView<float32>)
        (hi: ArrayView<float32>)
        (lo: ArrayView<float32>)
        (eps: ArrayView<float32>)
        (dst: ArrayView<float32>)
        (d: int)
        =
        let row, j = i.X / d, i.X % d
        dst.[i] <- GaussianHeadFormulas.Sample(head.[row * 2 * d + j], head.[row * 2 * d + d + j], hi.[j], lo.[j], eps.[i])

    /// Element i of the gradient in one input: 0 the head (rows of 2D), 1 the upper bound, 2 the lower bound, 3 the
    /// noise (rows of D, per row).
    static member Gradient
        (i: Index1D)
        (head: ArrayView<float32>)
        (hi: ArrayView<float32>)
        (lo: ArrayView<float32>)
        (eps: ArrayView<float32>)
        (g: ArrayView<float32>)
        (dst: ArrayView<float32>)
        (d: int)
        (input: int)
        =
        let width = if input = 0 then 2 * d else d
        let row, c = i.X / width, i.X % width
        let j = c % d
        let r, x, gk = head.[row * 2 * d + d + j], eps.[row * d + j], g.[row * d + j]

        dst.[i] <-
            if input = 0 then
                (if c < d then
                     gk
                 else
                     GaussianHeadFormulas.RawGrad(r, hi.[j], lo.[j], x, gk))
            elif input = 1 then
                GaussianHeadFormulas.MaxGrad(r, hi.[j], lo.[j], x, gk)
            elif input = 2 then
                GaussianHeadFormulas.MinGrad(r, hi.[j], lo.[j], x, gk)
            else
                GaussianHeadFormulas.NoiseGrad(r, hi.[j], lo.[j], gk)

/// GPU kernels of fused Gaussian-head sampling and its gradient, one thread per element.
module internal GaussianHeadGpu =
    let sample =
        GpuFusedKernel.define GaussianHead.sample (fun accelerator ->
            let kernel =
                accelerator.LoadAutoGroupedStreamKernel<
                    Index1D,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    int
                 >(
                    GaussianHeadKernels.Sample
                )

            fun gpu () inputs shapes ->
                let v = inputs |> Array.map gpu.View
                let struct (dst, t) = gpu.Alloc shapes.[0]
                let d = shapes.[0].[1]
                gpu.Launch(t.Numel, fun n -> kernel.Invoke(n, v.[0], v.[1], v.[2], v.[3], dst, d))
                [| t |])

    let gradient =
        GpuFusedKernel.define GaussianHead.gradient (fun accelerator ->
            let kernel =
                accelerator.LoadAutoGroupedStreamKernel<
                    Index1D,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    int,
                    int
                 >(
                    GaussianHeadKernels.Gradient
                )

            fun gpu input inputs shapes ->
                let v = inputs |> Array.map gpu.View
                let struct (dst, t) = gpu.Alloc shapes.[0]
                let d = inputs.[3].Shape.[1]

                let code =
                    match input with
                    | HeadInput -> 0
                    | MaxLogVarInput -> 1
                    | MinLogVarInput -> 2
                    | NoiseInput -> 3

                gpu.Launch(t.Numel, fun n -> kernel.Invoke(n, v.[0], v.[1], v.[2], v.[3], v.[4], dst, d, code))
                [| t |])
