namespace Maac.Tensors.Cpu

open System
open System.Runtime.Intrinsics
open Maac.Tensors

/// A raw tensor in a managed float array (contiguous, row-major, never mutated after creation).
[<Sealed; AllowNullLiteral>]
type CpuTensor internal (storage: CpuStorage, shape: int[]) =
    inherit RawTensor(shape)
    member internal _.Storage = storage
    /// The values (shared between reshaped views; never written after creation).
    member internal _.Data = storage.Data

    /// Raises ObjectDisposedException when the storage's release scope has given its array back.
    static member internal CheckLive(storage: CpuStorage) =
        if storage.Released then
            raise (
                ObjectDisposedException(
                    "CpuTensor",
                    "a tensor was used after its memory was given back: the release scope it was made in ended (Tensor.releasing keeps only what its keep function picks), or a step consumed it (Tensor.replacing)"
                )
            )

    override _.Backend = CpuBackend.Instance :> IBackend

    override this.ToArray() =
        CpuTensor.CheckLive storage
        let copy = Array.copy storage.Data
        GC.KeepAlive this
        copy

/// The managed CPU backend: SIMD element-wise kernels (System.Runtime.Intrinsics and
/// System.Numerics.Tensors) and a blocked multi-threaded SGEMM.
and [<Sealed>] CpuBackend private () =
    static let instance = CpuBackend()

    /// The fused operations with CPU kernels (the others run as their reference compositions).
    static let kernels =
        lazy
            (let arrays =
                { new ICpuArrays with
                    member _.Data x = CpuBackend.Data x
                    member _.Alloc n = CpuBackend.Alloc n
                    member _.Wrap(data, shape) = CpuBackend.Make(data, shape)
                }

             FusedKernelTable(
                 [
                     TanhGaussianCpu.sample
                     TanhGaussianCpu.gradient
                     GaussianHeadCpu.sample
                     GaussianHeadCpu.gradient
                     AdamCpu.step
                     MatMulActivationCpu.op
                     MatMulActivationCpu.activationOnly
                 ]
                 |> List.map (fun k -> k.Bind arrays)
             ))

    /// The single instance.
    static member Instance = instance

    /// Which matrix-product micro-kernel this processor runs (for benchmark reports).
    static member KernelName =
        if Gemm.wide then
            sprintf "AVX-512 %dx%d kernel" Gemm.MR Gemm.NR
        else
            sprintf "256-bit %dx%d kernel" Gemm.MR Gemm.NR

    static member private Data(x: RawTensor) = CpuBackend.Cpu(x).Data

    static member private Cpu(x: RawTensor) : CpuTensor =
        match x with
        | :? CpuTensor as c ->
            CpuTensor.CheckLive c.Storage
            c
        | null -> invalidArg "x" "a tensor argument was null"
        | _ -> invalidArg "x" (sprintf "a tensor on %O was given to the CPU backend; move it to the CPU first" x.Backend.Device)

    static member private Alloc(n: int) = StoragePool.rent n

    static member private Zeros(n: int) =
        let a = StoragePool.rent n
        Array.Clear a
        a

    static member private Make(data: float32[], shape: int[]) =
        let storage = CpuStorage.Of data
        let scope = CpuBackend.currentScope

        if not (isNull scope) then
            scope.Add storage

        CpuTensor(storage, shape) :> RawTensor

    /// The innermost release scope of this thread.
    [<ThreadStatic; DefaultValue>]
    static val mutable private currentScope: ReleaseScope<CpuStorage>

    /// The result tensor; the inputs are passed only to keep them (and so their pooled storage)
    /// alive until the kernel that read their arrays has finished (one overload per input count: no array per call).
    static member private Out(data: float32[], shape: int[], inputs: RawTensor[]) =
        let r = CpuBackend.Make(data, shape)
        GC.KeepAlive inputs
        r

    static member private Out(data: float32[], shape: int[], x: RawTensor) =
        let r = CpuBackend.Make(data, shape)
        GC.KeepAlive x
        r

    static member private Out(data: float32[], shape: int[], x: RawTensor, y: RawTensor) =
        let r = CpuBackend.Make(data, shape)
        GC.KeepAlive x
        GC.KeepAlive y
        r

    static member private Out(data: float32[], shape: int[], x: RawTensor, y: RawTensor, z: RawTensor) =
        let r = CpuBackend.Make(data, shape)
        GC.KeepAlive x
        GC.KeepAlive y
        GC.KeepAlive z
        r

    /// Sum (or max) over the middle axis of an (outer, n, inner) view.
    static member private Reduce(x: RawTensor, axis: int, keepDim: bool, isMax: bool) =
        let src = CpuBackend.Data x
        let outer, n, inner = Shape.splitAt x.Shape axis

        let outShape =
            if keepDim then
                Shape.withAxis x.Shape axis 1
            else
                Shape.removeAxis x.Shape axis

        let dst = CpuBackend.Alloc(outer * inner)

        if n = 0 then
            if isMax then
                Shape.fail "max" (sprintf "cannot take the maximum over an empty axis of shape %s" (Shape.show x.Shape))

            Array.Clear dst
        elif inner = 1 then
            Workers.forChunks outer (max 1 (Elementwise.Chunk / n)) (fun o0 count ->
                for o in o0 .. o0 + count - 1 do
                    let row = ReadOnlySpan<float32>(src, o * n, n)
                    dst.[o] <- if isMax then Reductions.max row else Reductions.sum row)
        else
            Workers.forChunks outer (max 1 (Elementwise.Chunk / (n * inner))) (fun o0 count ->
                for o in o0 .. o0 + count - 1 do
                    let acc = Span<float32>(dst, o * inner, inner)
                    ReadOnlySpan<float32>(src, o * n * inner, inner).CopyTo(acc)

                    for j in 1 .. n - 1 do
                        let row = ReadOnlySpan<float32>(src, (o * n + j) * inner, inner)

                        if isMax then
                            Reductions.maxInto acc row
                        else
                            Reductions.addInto acc row)

        CpuBackend.Out(dst, outShape, x)

    /// Release scopes: the arrays of the tensors a step makes go back to the pool when it ends (except those it
    /// keeps), instead of when the garbage collector finds them, so the next step reuses warm memory.
    interface IReleasingBackend with
        member this.BeginScope() =
            ReleaseScope<CpuStorage>
                .Begin(
                    this,
                    CpuBackend.currentScope,
                    (fun s -> CpuBackend.currentScope <- s),
                    fun t ->
                        match t with
                        | :? CpuTensor as c -> c.Storage
                        | _ -> null
                )

    interface IFusedKernels with
        member _.TryKernel op = kernels.Force().TryFind op

    interface IBackend with
        member _.Device = Device.Cpu

        member _.OfArray(values, shape) =
            Plans.ofArray values.Length shape
            let d = CpuBackend.Alloc values.Length
            Array.Copy(values, d, values.Length)
            CpuBackend.Make(d, Array.copy shape)

        member _.Full(shape, value) =
            Shape.validate "full" shape
            let d = CpuBackend.Alloc(Shape.numel shape)
            Array.Fill(d, value)
            CpuBackend.Make(d, Array.copy shape)

        member _.Random(dist, key, shape) =
            Shape.validate "random" shape
            let d = CpuBackend.Alloc(Shape.numel shape)

            // A normal costs a logarithm and a sine-cosine pair per two values: split from smaller pieces, as the
            // fused element kernels are (each value depends only on the key and its index, so the pieces give the
            // same bits on any number of threads).
            let chunk =
                match dist with
                | Uniform -> Elementwise.Chunk
                | Normal -> Elementwise.Chunk / 8

            Workers.forChunks d.Length chunk (fun s len ->
                match dist with
                | Uniform -> RandomKey.fillUniform key (Span<float32>(d, s, len)) s
                | Normal -> RandomKey.fillNormal key (Span<float32>(d, s, len)) s)

            CpuBackend.Make(d, Array.copy shape)

        member _.Unary(op, x) =
            let d = CpuBackend.Alloc x.Numel
            Elementwise.unary op (CpuBackend.Data x) d
            CpuBackend.Out(d, x.Shape, x)

        member _.UnaryGrad(op, x, y, g) =
            let d = CpuBackend.Alloc x.Numel
            Elementwise.unaryGrad op (CpuBackend.Data x) (CpuBackend.Data y) (CpuBackend.Data g) d
            CpuBackend.Out(d, x.Shape, x, y, g)

        member _.Scalar(op, x) =
            let d = CpuBackend.Alloc x.Numel
            Elementwise.scalar op (CpuBackend.Data x) d
            CpuBackend.Out(d, x.Shape, x)

        member _.ScalarGrad(op, x, g) =
            let d = CpuBackend.Alloc x.Numel
            Elementwise.scalarGrad op (CpuBackend.Data x) (CpuBackend.Data g) d
            CpuBackend.Out(d, x.Shape, x, g)

        member _.Binary(op, a, b) =
            let outShape = Shape.broadcast (BinaryOp.name op) a.Shape b.Shape
            let d = CpuBackend.Alloc(Shape.numel outShape)
            Broadcast.binary op (Broadcast.plan a.Shape b.Shape outShape) (CpuBackend.Data a) (CpuBackend.Data b) d
            CpuBackend.Out(d, outShape, a, b)

        member _.SumAxis(x, axis, keepDim) = CpuBackend.Reduce(x, Shape.axis "sum" x.Shape.Length axis, keepDim, false)
        member _.MaxAxis(x, axis, keepDim) = CpuBackend.Reduce(x, Shape.axis "max" x.Shape.Length axis, keepDim, true)

        member _.SumAll(x) =
            let src = CpuBackend.Data x
            let pieces = (src.Length + Elementwise.Chunk - 1) / Elementwise.Chunk
            let partial = Array.zeroCreate (max 1 pieces)

            Workers.forChunks src.Length Elementwise.Chunk (fun s len ->
                partial.[s / Elementwise.Chunk] <- Reductions.sum (ReadOnlySpan<float32>(src, s, len)))

            CpuBackend.Out([| Reductions.sum (ReadOnlySpan<float32>(partial)) |], [||], x)

        member _.MatMul(transA, transB, a, b, bias) =
            let p = Plans.matMul transA transB a.Shape b.Shape (if isNull bias then -1 else bias.Numel)
            let c = CpuBackend.Alloc(p.Batches * p.M * p.N)
            let biasData = if isNull bias then null else CpuBackend.Data bias
            let opA, opB = Gemm.operands p transA transB (CpuBackend.Data a) (CpuBackend.Data b)
            Gemm.run p.Batches p.M p.N p.K opA opB c biasData
            CpuBackend.Out(c, p.OutShape, a, b, bias)

        member _.Reshape(x, shape) =
            Plans.reshape x.Numel x.Shape shape
            CpuTensor(CpuBackend.Cpu(x).Storage, Array.copy shape) :> RawTensor

        member _.Permute(x, perm) =
            let r = x.Shape.Length
            let outShape = Plans.permute x.Shape perm
            let src = CpuBackend.Data x
            let inStrides = Shape.strides x.Shape
            let strideOf = perm |> Array.map (fun p -> inStrides.[p])
            let dst = CpuBackend.Alloc src.Length

            if r = 2 && perm = [| 1; 0 |] then
                let rows, cols = x.Shape.[0], x.Shape.[1]
                let blk = 32

                for i0 in 0..blk .. rows - 1 do
                    for j0 in 0..blk .. cols - 1 do
                        for i in i0 .. min rows (i0 + blk) - 1 do
                            for j in j0 .. min cols (j0 + blk) - 1 do
                                dst.[j * rows + i] <- src.[i * cols + j]
            else
                let idx = Array.zeroCreate r

                for o in 0 .. dst.Length - 1 do
                    let mutable off = 0

                    for d in 0 .. r - 1 do
                        off <- off + idx.[d] * strideOf.[d]

                    dst.[o] <- src.[off]
                    let mutable d = r - 1
                    let mutable carry = true

                    while carry && d >= 0 do
                        idx.[d] <- idx.[d] + 1

                        if idx.[d] < outShape.[d] then
                            carry <- false
                        else
                            idx.[d] <- 0
                            d <- d - 1

            CpuBackend.Out(dst, outShape, x)

        member _.Expand(x, shape) =
            Plans.expand x.Shape shape
            let d = CpuBackend.Alloc(Shape.numel shape)
            let src = CpuBackend.Data x
            Broadcast.apply (Broadcast.plan x.Shape x.Shape shape) src src d (fun a _ -> a)
            CpuBackend.Out(d, Array.copy shape, x)

        member _.Concat(xs, axis) =
            let ax, outShape, (outer, total, inner) = Plans.concat (xs |> Array.map (fun x -> x.Shape)) axis
            let d = CpuBackend.Alloc(Shape.numel outShape)
            let mutable at = 0

            for x in xs do
                let src = CpuBackend.Data x
                let w = x.Shape.[ax] * inner

                for o in 0 .. outer - 1 do
                    Array.Copy(src, o * w, d, o * total * inner + at * inner, w)

                at <- at + x.Shape.[ax]

            CpuBackend.Out(d, outShape, xs)

        member _.Slice(x, axis, start, length) =
            let ax = Plans.slice x.Shape axis start length
            let outer, n, inner = Shape.splitAt x.Shape ax
            let src = CpuBackend.Data x
            let d = CpuBackend.Alloc(outer * length * inner)

            for o in 0 .. outer - 1 do
                Array.Copy(src, (o * n + start) * inner, d, o * length * inner, length * inner)

            CpuBackend.Out(d, Shape.withAxis x.Shape ax length, x)

        member _.IndexSelect(x, axis, indices) =
            let ax, (outer, n, inner) = Plans.indexSelect x.Shape axis indices
            let src = CpuBackend.Data x
            let m = indices.Length
            let d = CpuBackend.Alloc(outer * m * inner)

            Workers.forChunks (outer * m) (max 1 (Elementwise.Chunk / max 1 inner)) (fun r0 count ->
                for r in r0 .. r0 + count - 1 do
                    let o, j = r / m, r % m
                    Array.Copy(src, (o * n + indices.[j]) * inner, d, r * inner, inner))

            CpuBackend.Out(d, Shape.withAxis x.Shape ax m, x)

        member _.IndexAdd(shape, axis, indices, src) =
            let _, (outer, n, inner) = Plans.indexAdd shape axis indices src.Shape
            let m = indices.Length
            let s = CpuBackend.Data src
            let d = CpuBackend.Zeros(outer * n * inner)

            Workers.forEach outer (outer * m * inner >= 2 * Elementwise.Chunk) (fun o ->
                for j in 0 .. m - 1 do
                    Reductions.addInto
                        (Span<float32>(d, (o * n + indices.[j]) * inner, inner))
                        (ReadOnlySpan<float32>(s, (o * m + j) * inner, inner)))

            CpuBackend.Out(d, Array.copy shape, src)

        member _.Synchronize() = ()

        member _.AllFinite(x) =
            let src = CpuBackend.Data x
            let mutable ok = true
            let mutable i = 0

            while ok && i < src.Length do
                if not (Single.IsFinite src.[i]) then
                    ok <- false

                i <- i + 1

            GC.KeepAlive x
            ok
