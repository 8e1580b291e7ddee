namespace Maac.Cuda

open Maac

open System
open ILGPU
open ILGPU.Runtime
open ILGPU.Runtime.Cuda
open ILGPU.Runtime.CPU
open ILGPU.Algorithms
open Maac.Tensors

/// The raw-kernel backend on an ILGPU accelerator: CUDA on NVIDIA GPUs, or ILGPU's CPU accelerator (which runs
/// the same kernels on the host; the tests use it so that a kernel bug fails CI without a GPU). Every
/// operation launches kernels on the accelerator's default stream and returns without waiting; only ToArray
/// and AllFinite read back to the host.
[<Sealed>]
type GpuBackend(accelerator: Accelerator, device: Device) as this =
    /// Up to 2³⁰ floats (4 GiB) of released buffers are kept for reuse.
    let pool = DevicePool(accelerator, 1L <<< 30)
    let fill = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, float32>(Kernels.Fill)

    let copyRows =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, int, ArrayView<float32>, int, int>(Kernels.CopyRows)

    let unary =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, int>(Kernels.Unary)

    let unaryGrad =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, ArrayView<float32>, ArrayView<float32>, int>(
            Kernels.UnaryGrad
        )

    let scalar =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, int, float32, float32>(Kernels.Scalar)

    let scalarGrad =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, ArrayView<float32>, int, float32, float32>(
            Kernels.ScalarGrad
        )

    let binary =
        accelerator.LoadAutoGroupedStreamKernel<
            Index1D,
            ArrayView<float32>,
            ArrayView<float32>,
            ArrayView<float32>,
            int,
            int,
            Dims,
            Dims,
            Dims
         >(
            Kernels.Binary
        )

    let binarySameShape =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, ArrayView<float32>, int>(
            Kernels.BinarySameShape
        )

    let gather =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, int, Dims, Dims, int>(Kernels.Gather)

    let reduceGroups =
        accelerator.LoadStreamKernel<ArrayView<float32>, ArrayView<float32>, int, int, int, int>(Kernels.ReduceGroups)

    /// Threads per reduction group: 256, or the accelerator's largest power of two below that.
    let groupSize =
        let mutable g = 256

        while g > accelerator.MaxNumThreadsPerGroup do
            g <- g / 2

        g

    let matMul =
        accelerator.LoadAutoGroupedStreamKernel<
            Index1D,
            ArrayView<float32>,
            ArrayView<float32>,
            ArrayView<float32>,
            ArrayView<float32>,
            Dims,
            int,
            int
         >(
            Kernels.MatMul
        )

    let indexSelect =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, ArrayView<int>, int, int, int>(
            Kernels.IndexSelect
        )

    let indexAdd =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, ArrayView<int>, int, int, int>(
            Kernels.IndexAdd
        )

    let checkFinite =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<int>>(Kernels.CheckFinite)

    let random =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, uint32, uint32, int>(Kernels.Random)

    let biasFill =
        accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float32>, ArrayView<float32>, int, int, int>(Kernels.BiasFill)

    /// The CUDA stream the kernels are queued on (none on ILGPU's CPU accelerator).
    let cudaStream =
        match accelerator with
        | :? CudaAccelerator -> Some (accelerator.DefaultStream :?> CudaStream).StreamPtr
        | _ -> None

    /// cuBLAS on that stream (so products and kernels stay in order); elsewhere products run the MatMul kernel.
    let blas = cudaStream |> Option.map (fun stream -> new CublasHandle(stream))

    /// On CUDA, uploads of up to 16 MiB go through page-locked memory without waiting for the device.
    let staging =
        cudaStream
        |> Option.map (fun stream -> new StagingRing(16L <<< 20, stream, fun () -> accelerator.Synchronize()))

    /// Elements summed by one group in the first pass of SumAll.
    let piece = 16 * groupSize
    let mutable launches = 0L

    /// The fused operations with GPU kernels, compiled on first use (the others run as their reference
    /// compositions).
    let kernels =
        lazy
            (FusedKernelTable(
                [
                    MatMulActivationGpu.op
                    TanhGaussianGpu.sample
                    TanhGaussianGpu.gradient
                    GaussianHeadGpu.sample
                    GaussianHeadGpu.gradient
                    AdamGpu.step
                ]
                |> List.map (fun k -> k.Bind accelerator (this :> IGpuDevice))
            ))

    member private this.Wrap(shape: int[], block: DeviceBlock) = GpuTensor(Array.copy shape, block, this) :> RawTensor

    /// A new uninitialised tensor.
    member private this.Alloc(shape: int[]) =
        let buffer = pool.Rent(int64 (max 1 (Shape.numel shape)))
        let block = DeviceBlock(Lease buffer, pool.Release)
        pool.Track block
        let scope = GpuBackend.currentScope

        if not (isNull scope) && obj.ReferenceEquals(scope.Owner, this) then
            scope.Add block

        buffer, this.Wrap(shape, block)

    member private _.Of(x: RawTensor) : GpuTensor =
        match x with
        | null -> nullArg "x"
        | :? GpuTensor as g ->
            GpuTensor.CheckLive g.Block
            g
        | other ->
            invalidArg
                "x"
                (sprintf "a tensor on %O was given to the %O backend; move it with Tensor.toDevice first" other.Backend.Device device)

    /// Launches over `count` elements. The closure holds the input tensors, and is kept alive until the launch is
    /// queued: otherwise an input's buffer could return to the pool, and be rented and written by another thread,
    /// before the kernel reading it is queued.
    member private _.Launch(count: int, run: Index1D -> unit) =
        if count > 0 then
            launches <- launches + 1L
            run (Index1D count)
            GC.KeepAlive run

    /// Integers uploaded into a pooled buffer (device allocation and freeing would each wait for the device).
    /// The caller returns it to the pool once the kernel reading it is queued: work runs in stream order.
    member private this.Ints(values: int[]) =
        let b = pool.Rent(int64 (max 1 values.Length))

        if values.Length > 0 && not (this.Staged(fun ring -> ring.Upload(values, b.NativePtr))) then
            b.View.AsContiguous().Cast<int>().SubView(0L, int64 values.Length).CopyFromCPU(values)

        b

    /// Makes the accelerator's CUDA context current on this thread (driver calls made outside ILGPU need it).
    member private _.Bind() =
        if Accelerator.Current <> accelerator then
            accelerator.Bind()

    /// Runs an upload through the staging ring when there is one and it fits (false otherwise).
    member private this.Staged(upload: StagingRing -> bool) =
        match staging with
        | Some ring ->
            this.Bind()
            upload ring
        | None -> false

    /// The first index when the indices are start, start+1, … (a slice), else None.
    static member private RangeStart(indices: int[]) =
        let mutable consecutive = indices.Length > 0
        let mutable i = 1

        while consecutive && i < indices.Length do
            consecutive <- indices.[i] = indices.[0] + i
            i <- i + 1

        if consecutive then Some indices.[0] else None

    static member private AsInts(b: MemoryBuffer1D<float32, Stride1D.Dense>) = b.View.AsContiguous().Cast<int>()

    /// The innermost release scope of this thread (on whichever backend made it).
    [<ThreadStatic; DefaultValue>]
    static val mutable private currentScope: ReleaseScope<DeviceBlock>

    /// The accelerator this backend launches on.
    member _.Accelerator = accelerator

    /// The pool of released device buffers.
    member _.Pool = pool

    /// Microseconds per launch of the smallest kernel (one element, into one buffer), averaged over `count`
    /// launches queued back to back: the accelerator's own launch cost, without the backend's work per operation.
    member _.MeasureLaunchMicroseconds(count: int) =
        let buffer = pool.Rent 1L
        let view = buffer.View.AsContiguous()
        fill.Invoke(Index1D 1, view, 0.0f)
        accelerator.Synchronize()
        let sw = Diagnostics.Stopwatch.StartNew()

        for _ in 1..count do
            fill.Invoke(Index1D 1, view, 0.0f)

        accelerator.Synchronize()
        let perLaunch = sw.Elapsed.TotalMilliseconds * 1000.0 / float count
        pool.Return buffer
        perLaunch

    /// Kernels launched through Launch so far (cuBLAS calls not counted): a measure of per-operation overhead.
    member _.Launches = launches

    interface IReleasingBackend with
        member this.BeginScope() =
            ReleaseScope<DeviceBlock>
                .Begin(
                    this,
                    GpuBackend.currentScope,
                    (fun s -> GpuBackend.currentScope <- s),
                    fun t ->
                        match t with
                        | :? GpuTensor as g -> g.Block
                        | _ -> null
                )

    interface IGpuDevice with
        member this.Backend = this :> IBackend
        member this.View x = this.Of(x).View.AsContiguous()

        member this.Alloc shape =
            let buffer, t = this.Alloc shape
            struct (buffer.View.AsContiguous(), t)

        member this.Launch(count, run) = this.Launch(count, run)

    interface IFusedKernels with
        member _.TryKernel op = kernels.Force().TryFind op

    interface IBackend with
        member _.Device = device

        member this.OfArray(values, shape) =
            Plans.ofArray values.Length shape
            let buffer, t = this.Alloc shape

            if values.Length > 0 && not (this.Staged(fun ring -> ring.Upload(values, buffer.NativePtr))) then
                buffer.View.SubView(0L, int64 values.Length).CopyFromCPU(values)

            t

        member this.Full(shape, value) =
            Shape.validate "full" shape
            let buffer, t = this.Alloc shape
            this.Launch(t.Numel, fun n -> fill.Invoke(n, buffer.View.AsContiguous(), value))
            t

        member this.Random(dist, key, shape) =
            Shape.validate "random" shape
            let buffer, t = this.Alloc shape

            this.Launch(
                t.Numel,
                fun n ->
                    random.Invoke(
                        n,
                        buffer.View.AsContiguous(),
                        key.K0,
                        key.K1,
                        (match dist with
                         | Uniform -> 0
                         | Normal -> 1)
                    )
            )

            t

        member this.Unary(op, x) =
            let x = this.Of x
            let buffer, t = this.Alloc x.Shape
            this.Launch(x.Numel, fun n -> unary.Invoke(n, x.View.AsContiguous(), buffer.View.AsContiguous(), OpCodes.unary op))
            t

        member this.UnaryGrad(op, x, y, g) =
            let x, y, g = this.Of x, this.Of y, this.Of g
            let buffer, t = this.Alloc x.Shape

            this.Launch(
                x.Numel,
                fun n ->
                    unaryGrad.Invoke(
                        n,
                        x.View.AsContiguous(),
                        y.View.AsContiguous(),
                        g.View.AsContiguous(),
                        buffer.View.AsContiguous(),
                        OpCodes.unary op
                    )
            )

            t

        member this.Scalar(op, x) =
            let x = this.Of x
            let code, c0, c1 = OpCodes.scalar op
            let buffer, t = this.Alloc x.Shape
            this.Launch(x.Numel, fun n -> scalar.Invoke(n, x.View.AsContiguous(), buffer.View.AsContiguous(), code, c0, c1))
            t

        member this.ScalarGrad(op, x, g) =
            let x, g = this.Of x, this.Of g
            let code, c0, c1 = OpCodes.scalar op
            let buffer, t = this.Alloc x.Shape

            this.Launch(
                x.Numel,
                fun n -> scalarGrad.Invoke(n, x.View.AsContiguous(), g.View.AsContiguous(), buffer.View.AsContiguous(), code, c0, c1)
            )

            t

        member this.Binary(op, a, b) =
            let a, b = this.Of a, this.Of b
            let outShape = Shape.broadcast (BinaryOp.name op) a.Shape b.Shape
            let r = outShape.Length
            // Strides of an input aligned to the right of the output shape, 0 along broadcast dimensions.
            let stridesOf (s: int[]) =
                let own = Shape.strides s

                Array.init r (fun d ->
                    let i = d - (r - s.Length)
                    if i < 0 || s.[i] = 1 then 0 else own.[i])

            let buffer, t = this.Alloc outShape

            if a.Shape = b.Shape then
                this.Launch(
                    t.Numel,
                    fun n ->
                        binarySameShape.Invoke(
                            n,
                            a.View.AsContiguous(),
                            b.View.AsContiguous(),
                            buffer.View.AsContiguous(),
                            OpCodes.binary op
                        )
                )
            else
                this.Launch(
                    t.Numel,
                    fun n ->
                        binary.Invoke(
                            n,
                            a.View.AsContiguous(),
                            b.View.AsContiguous(),
                            buffer.View.AsContiguous(),
                            OpCodes.binary op,
                            r,
                            Dims.Of outShape,
                            Dims.Of(stridesOf a.Shape),
                            Dims.Of(stridesOf b.Shape)
                        )
                )

            t

        member this.SumAxis(x, axis, keepDim) = this.Reduce(x, Shape.axis "sum" x.Shape.Length axis, keepDim, false)
        member this.MaxAxis(x, axis, keepDim) = this.Reduce(x, Shape.axis "max" x.Shape.Length axis, keepDim, true)

        member this.SumAll(x) =
            let x = this.Of x
            let total, t = this.Alloc [||]

            if x.Numel = 0 then
                this.Launch(1, fun c -> fill.Invoke(c, total.View.AsContiguous(), 0.0f))
            elif x.Numel <= piece then
                this.ReduceInto(x.Buffer, total, 1, x.Numel, 1, x.Numel, false)
            else
                // Two passes: one group per piece, then one group over the pieces' sums.
                let pieces = (x.Numel + piece - 1) / piece
                let partial, partialTensor = this.Alloc [| pieces |]
                this.ReduceInto(x.Buffer, partial, pieces, piece, 1, x.Numel, false)
                this.ReduceInto(partial, total, 1, pieces, 1, pieces, false)
                // The partial sums' buffer must not return to the pool before the second pass is queued.
                GC.KeepAlive partialTensor

            GC.KeepAlive x
            t

        member this.MatMul(transA, transB, a, b, bias) =
            let a, b = this.Of a, this.Of b
            let p = Plans.matMul transA transB a.Shape b.Shape (if isNull bias then -1 else bias.Numel)

            let biasMode, biasView =
                match bias with
                | null -> 0, a.View.AsContiguous()
                | bias -> (if bias.Numel = p.N then 1 else 2), (this.Of bias).View.AsContiguous()

            let buffer, t = this.Alloc p.OutShape

            match blas with
            | Some blas when p.K > 0 && t.Numel > 0 ->
                if biasMode <> 0 then
                    this.Launch(
                        t.Numel,
                        fun c -> biasFill.Invoke(c, biasView, buffer.View.AsContiguous(), p.N, p.M * p.N, (if biasMode = 2 then p.N else 0))
                    )

                this.Bind()

                blas.Gemm(
                    transA,
                    transB,
                    p.M,
                    p.N,
                    p.K,
                    a.Buffer.NativePtr,
                    p.LdA,
                    int64 p.StrideA,
                    b.Buffer.NativePtr,
                    p.LdB,
                    int64 p.StrideB,
                    (if biasMode = 0 then 0.0f else 1.0f),
                    buffer.NativePtr,
                    t.Numel / (p.M * p.N)
                )
                // The inputs' buffers must not return to the pool before the product that reads them is queued.
                GC.KeepAlive a
                GC.KeepAlive b
                GC.KeepAlive bias
            | _ ->
                let dims = Dims.Of [| p.M; p.N; p.K; p.LdA; p.LdB; p.StrideA; p.StrideB; biasMode |]

                this.Launch(
                    t.Numel,
                    fun n ->
                        matMul.Invoke(
                            n,
                            a.View.AsContiguous(),
                            b.View.AsContiguous(),
                            buffer.View.AsContiguous(),
                            biasView,
                            dims,
                            (if transA then 1 else 0),
                            (if transB then 1 else 0)
                        )
                )

            t

        member this.Reshape(x, shape) =
            let x = this.Of x
            Plans.reshape x.Numel x.Shape shape
            this.Wrap(shape, x.Block)

        member this.Permute(x, perm) =
            let x = this.Of x
            let outShape = Plans.permute x.Shape perm
            let inStrides = Shape.strides x.Shape
            this.GatherInto(x, outShape, perm |> Array.map (fun p -> inStrides.[p]), 0)

        member this.Expand(x, shape) =
            let x = this.Of x
            Plans.expand x.Shape shape
            let r = shape.Length
            let own = Shape.strides x.Shape

            let strides =
                Array.init r (fun d -> let i = d - (r - x.Shape.Length) in if i < 0 || x.Shape.[i] = 1 then 0 else own.[i])

            this.GatherInto(x, shape, strides, 0)

        member this.Concat(xs, axis) =
            let xs = xs |> Array.map this.Of
            let ax, outShape, (outer, total, inner) = Plans.concat (xs |> Array.map (fun x -> x.Shape)) axis
            let buffer, t = this.Alloc outShape
            let mutable at = 0

            for x in xs do
                // x, viewed as [outer, w], goes to the output's [outer, total·inner] rows at column at·inner.
                let w = x.Shape.[ax] * inner

                if w > 0 then
                    this.Launch(
                        outer * w,
                        fun n -> copyRows.Invoke(n, x.View.AsContiguous(), w, buffer.View.AsContiguous(), total * inner, at * inner)
                    )

                at <- at + x.Shape.[ax]

            t

        member this.Slice(x, axis, start, length) =
            let x = this.Of x
            let ax = Plans.slice x.Shape axis start length
            let outShape = Shape.withAxis x.Shape ax length
            let strides = Shape.strides x.Shape
            this.GatherInto(x, outShape, strides, start * strides.[ax])

        member this.IndexSelect(x, axis, indices) =
            let x = this.Of x
            let ax, (_, n, inner) = Plans.indexSelect x.Shape axis indices

            match GpuBackend.RangeStart indices with
            | Some start -> (this :> IBackend).Slice(x, ax, start, indices.Length) // no indices to upload
            | None ->
                let buffer, t = this.Alloc(Shape.withAxis x.Shape ax indices.Length)
                let idx = this.Ints indices

                this.Launch(
                    t.Numel,
                    fun c ->
                        indexSelect.Invoke(
                            c,
                            x.View.AsContiguous(),
                            buffer.View.AsContiguous(),
                            GpuBackend.AsInts idx,
                            n,
                            indices.Length,
                            inner
                        )
                )

                pool.Return idx
                t

        member this.IndexAdd(shape, axis, indices, src) =
            let src = this.Of src
            let _, (outer, n, inner) = Plans.indexAdd shape axis indices src.Shape
            let buffer, t = this.Alloc shape
            this.Launch(t.Numel, fun c -> fill.Invoke(c, buffer.View.AsContiguous(), 0.0f))

            match GpuBackend.RangeStart indices with
            | Some start ->
                // A slice's gradient: src's rows go to columns start·inner.. of the output's rows (no indices to upload).
                let width = indices.Length * inner

                this.Launch(
                    outer * width,
                    fun c -> copyRows.Invoke(c, src.View.AsContiguous(), width, buffer.View.AsContiguous(), n * inner, start * inner)
                )
            | None ->
                let idx = this.Ints indices

                this.Launch(
                    outer * inner,
                    fun c ->
                        indexAdd.Invoke(
                            c,
                            src.View.AsContiguous(),
                            buffer.View.AsContiguous(),
                            GpuBackend.AsInts idx,
                            n,
                            indices.Length,
                            inner
                        )
                )

                pool.Return idx

            t

        member _.Synchronize() = accelerator.Synchronize()

        member this.AllFinite(x) =
            let x = this.Of x
            let flag = this.Ints [| 1 |]
            this.Launch(x.Numel, fun n -> checkFinite.Invoke(n, x.View.AsContiguous(), GpuBackend.AsInts flag))
            let ok = BitConverter.SingleToInt32Bits(flag.View.SubView(0L, 1L).GetAsArray1D().[0]) = 1
            pool.Return flag
            ok

    member private this.Reduce(x: RawTensor, ax: int, keepDim: bool, isMax: bool) =
        let x = this.Of x
        let outer, n, inner = Shape.splitAt x.Shape ax

        let outShape =
            if keepDim then
                Shape.withAxis x.Shape ax 1
            else
                Shape.removeAxis x.Shape ax

        if n = 0 && isMax then
            Shape.fail "max" (sprintf "cannot take the maximum over an empty axis of shape %s" (Shape.show x.Shape))

        let buffer, t = this.Alloc outShape

        if n = 0 then
            this.Launch(t.Numel, fun c -> fill.Invoke(c, buffer.View.AsContiguous(), 0.0f))
        else
            this.ReduceInto(x.Buffer, buffer, outer * inner, n, inner, x.Numel, isMax)

        GC.KeepAlive x
        t

    /// Queues one reduction group per output (Kernels.ReduceGroups).
    member private _.ReduceInto
        (
            x: MemoryBuffer1D<float32, Stride1D.Dense>,
            dst: MemoryBuffer1D<float32, Stride1D.Dense>,
            outputs: int,
            n: int,
            inner: int,
            count: int,
            isMax: bool
        ) =
        launches <- launches + 1L

        reduceGroups.Invoke(
            KernelConfig(Index1D outputs, Index1D groupSize),
            x.View.AsContiguous(),
            dst.View.AsContiguous(),
            n,
            inner,
            count,
            (if isMax then 1 else 0)
        )

    member private this.GatherInto(x: GpuTensor, outShape: int[], strides: int[], offset: int) =
        let buffer, t = this.Alloc outShape

        this.Launch(
            t.Numel,
            fun n ->
                gather.Invoke(
                    n,
                    x.View.AsContiguous(),
                    buffer.View.AsContiguous(),
                    outShape.Length,
                    Dims.Of outShape,
                    Dims.Of strides,
                    offset
                )
        )

        t

    /// Whether matrix products go through cuBLAS (on CUDA) rather than the MatMul kernel.
    member _.UsesCublas = blas.IsSome

    interface IDisposable with
        member _.Dispose() =
            blas |> Option.iter (fun b -> (b :> IDisposable).Dispose())
            staging |> Option.iter (fun r -> (r :> IDisposable).Dispose())
            accelerator.Dispose()
