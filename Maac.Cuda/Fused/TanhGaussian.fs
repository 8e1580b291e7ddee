namespace Maac.Cuda

open ILGPU
open ILGPU.Runtime
open Maac.Tensors

/// The constants of fused tanh-Gaussian sampling and its gradient, passed by value.
[<Struct>]
type TanhGaussianArgs =
    {
        /// Action dimensions A (the head has 2A columns).
        Actions: int
        Lo: float32
        Hi: float32
        /// 1 for the gradient in the noise [N, A], 0 for the gradient in the head [N, 2A].
        WrtNoise: int
    }

/// The device kernels of fused tanh-Gaussian sampling (formulas in TanhGaussianFormulas).
type internal TanhGaussianKernels =
    /// Row i: its actions and its log-density.
    static member Sample
        (i: Index1D)
        (head: ArrayView<float32>)
        (eps: ArrayView<float32>)
        (action: ArrayView<float32>)
        (logProb: ArrayView<float32>)
        (args: TanhGaussianArgs)
        =
        let a = args.Actions
        let mutable total = 0.0f

        for j in 0 .. a - 1 do
            let m, r, e = head.[i.X * 2 * a + j], head.[i.X * 2 * a + a + j], eps.[i.X * a + j]
            action.[i.X * a + j] <- TanhGaussianFormulas.Action(m, r, e, args.Lo, args.Hi)
            total <- total + TanhGaussianFormulas.LogProbTerm(m, r, e, args.Lo, args.Hi)

        logProb.[i] <- total

    /// Element i of the gradient, in the head (rows of 2A: means, then log standard deviations) or in the noise
    /// (rows of A).
    static member Gradient
        (i: Index1D)
        (head: ArrayView<float32>)
        (eps: ArrayView<float32>)
        (gAction: ArrayView<float32>)
        (gLogProb: ArrayView<float32>)
        (dst: ArrayView<float32>)
        (args: TanhGaussianArgs)
        =
        let a = args.Actions
        let width = if args.WrtNoise = 1 then a else 2 * a
        let row = i.X / width
        let col = i.X % width
        let j = if col < a then col else col - a
        let m, r, e = head.[row * 2 * a + j], head.[row * 2 * a + a + j], eps.[row * a + j]
        let gA, gL = gAction.[row * a + j], gLogProb.[row]

        dst.[i] <-
            if args.WrtNoise = 1 then
                TanhGaussianFormulas.NoiseGrad(m, r, e, args.Lo, args.Hi, gA, gL)
            elif col < a then
                TanhGaussianFormulas.MeanGrad(m, r, e, args.Lo, args.Hi, gA, gL)
            else
                TanhGaussianFormulas.LogStdGrad(m, r, e, args.Lo, args.Hi, gA, gL)

/// GPU kernels of fused tanh-Gaussian sampling and its gradient.
module internal TanhGaussianGpu =
    let private args (actions: int) (b: TanhGaussianBounds) (wrtNoise: bool) =
        { Actions = actions; Lo = b.Lo; Hi = b.Hi; WrtNoise = (if wrtNoise then 1 else 0) }

    /// Actions and log-densities, one thread per row.
    let sample =
        GpuFusedKernel.define TanhGaussian.sample (fun accelerator ->
            let kernel =
                accelerator.LoadAutoGroupedStreamKernel<
                    Index1D,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    TanhGaussianArgs
                 >(
                    TanhGaussianKernels.Sample
                )

            fun gpu b inputs shapes ->
                let head, eps = gpu.View inputs.[0], gpu.View inputs.[1]
                let struct (action, actionTensor) = gpu.Alloc shapes.[0]
                let struct (logProb, logProbTensor) = gpu.Alloc shapes.[1]
                // Outputs: the actions [N, A] and the log-densities [N].
                let a = args shapes.[0].[1] b false
                gpu.Launch(shapes.[1].[0], fun rows -> kernel.Invoke(rows, head, eps, action, logProb, a))
                [| actionTensor; logProbTensor |])

    /// The gradient in the head or the noise, one thread per element.
    let gradient =
        GpuFusedKernel.define TanhGaussian.gradient (fun accelerator ->
            let kernel =
                accelerator.LoadAutoGroupedStreamKernel<
                    Index1D,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    ArrayView<float32>,
                    TanhGaussianArgs
                 >(
                    TanhGaussianKernels.Gradient
                )

            fun gpu g inputs shapes ->
                let views = inputs |> Array.map gpu.View
                let struct (dst, t) = gpu.Alloc shapes.[0]
                let a = args inputs.[1].Shape.[1] g.Bounds g.WrtNoise
                gpu.Launch(t.Numel, fun n -> kernel.Invoke(n, views.[0], views.[1], views.[2], views.[3], dst, a))
                [| t |])
