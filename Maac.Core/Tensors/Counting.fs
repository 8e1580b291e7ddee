namespace Maac.Tensors

open System
open System.Collections.Generic

/// How often one kind of raw operation ran, on how many output elements in all, and the seconds spent in the inner
/// backend's calls (on the CPU the operations' own time; on a GPU, whose operations run after they are queued, the
/// time to queue them).
[<Struct>]
type OperationCount = { Operation: string; Calls: int64; Elements: int64; Seconds: float }

/// How often the matrix products of one shape ran, plain or inside a fused operation (named by Operation), and the
/// seconds spent in them (as OperationCount's).
[<Struct>]
type ProductCount = { Operation: string; Shape: ProductShape; Calls: int64; Seconds: float }

module private Timing =
    /// run's result and the Stopwatch ticks it took.
    let timed (run: unit -> 'T) =
        let start = Diagnostics.Stopwatch.GetTimestamp()
        let result = run ()
        struct (result, Diagnostics.Stopwatch.GetTimestamp() - start)

    /// Stopwatch ticks in seconds.
    let seconds (ticks: int64) = float ticks / float Diagnostics.Stopwatch.Frequency

/// A raw tensor of a CountingBackend: the inner backend's tensor, tagged so that operations on it come back
/// through the counter.
[<Sealed; AllowNullLiteral>]
type CountedTensor internal (inner: RawTensor, owner: CountingBackend) =
    inherit RawTensor(inner.Shape)
    /// The inner backend's tensor.
    member _.Inner = inner
    override _.Backend = owner :> IBackend
    override _.ToArray() = inner.ToArray()

/// A backend that forwards every raw operation to another and counts them by kind (for example "binary mul",
/// "matmul + bias" or a fused operation such as "tanhGaussianSample"), with the elements each produced and the time
/// each took, and lists the matrix products by shape: what a step asks of a device and where its time goes, for
/// finding the operations worth fusing or speeding up. Tensors made through it stay on it, so a whole computation is
/// counted when it starts from tensors created while it is the default backend (Backends.Use).
and [<Sealed>] CountingBackend(inner: IBackend) =
    // Per kind: calls, elements and Stopwatch ticks; per product shape: calls and ticks.
    let counts = Dictionary<string, struct (int64 * int64 * int64)>()
    let products = Dictionary<struct (string * ProductShape), struct (int64 * int64)>()
    let mutable productFlops = 0L
    let sync = obj ()
    // Names formatted once per kind (formatting a union on every call would cost more than the operation).
    let cache () = System.Collections.Concurrent.ConcurrentDictionary<'K, string>()
    let unaryNames, unaryGradNames, randomNames = cache (), cache (), cache ()
    let binaryNames, concatNames = cache (), cache ()

    let named (names: System.Collections.Concurrent.ConcurrentDictionary<'K, string>) (key: 'K) (format: 'K -> string) =
        match names.TryGetValue key with
        | true, name -> name
        | _ -> names.GetOrAdd(key, format key)

    let nameOf names (prefix: string) op = named names op (sprintf "%s %A" prefix)

    let productName (batched: bool) (withBias: bool) =
        (if batched then "batched matmul" else "matmul") + (if withBias then " + bias" else "")

    member private this.Wrap(t: RawTensor) = CountedTensor(t, this) :> RawTensor

    member private this.Unwrap(t: RawTensor) : RawTensor =
        match t with
        | null -> null
        | :? CountedTensor as c when obj.ReferenceEquals(c.Backend, this) -> c.Inner
        | _ ->
            invalidArg
                "t"
                (sprintf
                    "a tensor from %O's backend was given to the counting backend; create it while the counting backend is in use"
                    t.Backend.Device)

    /// Counts one call of the kind `name` that produced `elements` and took `ticks`.
    member private _.Count(name: string, elements: int, ticks: int64) =
        lock sync (fun () ->
            let struct (calls, total, time) =
                match counts.TryGetValue name with
                | true, c -> c
                | _ -> struct (0L, 0L, 0L)

            counts.[name] <- struct (calls + 1L, total + int64 elements, time + ticks))

    /// Counts one matrix product (plain or inside the operation `name`) that took `ticks`.
    member private _.CountProduct(name: string, shape: ProductShape, ticks: int64) =
        lock sync (fun () ->
            productFlops <- productFlops + shape.Flops
            let key = struct (name, shape)

            let struct (calls, time) =
                match products.TryGetValue key with
                | true, c -> c
                | _ -> struct (0L, 0L)

            products.[key] <- struct (calls + 1L, time + ticks))

    /// Runs one inner operation, counts it under `name` with its time, and wraps its result.
    member private this.Counted(name: string, run: unit -> RawTensor) =
        let struct (result, ticks) = Timing.timed run
        this.Count(name, result.Numel, ticks)
        this.Wrap result

    /// The backend doing the work.
    member _.Inner = inner

    /// The counts so far, most called first.
    member _.Counts =
        lock sync (fun () ->
            [|
                for KeyValue(name, struct (calls, elements, ticks)) in counts ->
                    { Operation = name; Calls = calls; Elements = elements; Seconds = Timing.seconds ticks }
            |])
        |> Array.sortByDescending (fun c -> c.Calls, c.Operation)

    /// The matrix products so far by operation and shape, longest total time first.
    member _.Products =
        lock sync (fun () ->
            [|
                for KeyValue(struct (name, shape), struct (calls, ticks)) in products ->
                    { Operation = name; Shape = shape; Calls = calls; Seconds = Timing.seconds ticks }
            |])
        |> Array.sortByDescending (fun p -> p.Seconds)

    /// Floating-point operations of the matrix products counted so far (2·m·n·k each, times the batch), plain or
    /// inside a fused operation (a product with its activation): the arithmetic that dominates learning;
    /// element-wise work is not in it.
    member _.ProductFlops = lock sync (fun () -> productFlops)

    /// The number of operations counted so far.
    member _.Total = lock sync (fun () -> counts.Values |> Seq.sumBy (fun (struct (c, _, _)) -> c))

    /// Forgets the counts so far.
    member _.Reset() =
        lock sync (fun () ->
            counts.Clear()
            products.Clear()
            productFlops <- 0L)

    interface IReleasingBackend with
        member this.BeginScope() =
            match inner with
            | :? IReleasingBackend as r ->
                let scope = r.BeginScope()

                { new IReleaseScope with
                    member _.Keep t = scope.Keep(this.Unwrap t)
                    member _.Consume t = scope.Consume(this.Unwrap t)
                    member _.Dispose() = scope.Dispose()
                }
            | _ ->
                { new IReleaseScope with
                    member _.Keep _ = ()
                    member _.Consume _ = ()
                    member _.Dispose() = ()
                }

    /// A fused operation runs on the inner backend's kernel when it has one, counted under the operation's name;
    /// otherwise its reference composition runs here, and its generic operations are counted one by one.
    interface IFusedKernels with
        member this.TryKernel op =
            Fused.kernelOf inner op
            |> ValueOption.map (fun kernel ->
                fun attributes inputs shapes ->
                    let struct (outputs, ticks) =
                        Timing.timed (fun () -> kernel attributes (Array.map this.Unwrap inputs) shapes)

                    this.Count(op.Name, outputs |> Array.sumBy (fun o -> o.Numel), ticks)

                    op.Product(attributes, inputs |> Array.map (fun i -> i.Shape))
                    |> ValueOption.iter (fun shape -> this.CountProduct(op.Name, shape, ticks))

                    Array.map this.Wrap outputs)

    interface IBackend with
        member _.Device = inner.Device
        member this.OfArray(values, shape) = this.Counted("ofArray", fun () -> inner.OfArray(values, shape))
        member this.Full(shape, value) = this.Counted("full", fun () -> inner.Full(shape, value))
        member this.Random(dist, key, shape) = this.Counted(nameOf randomNames "random" dist, fun () -> inner.Random(dist, key, shape))
        member this.Unary(op, x) = this.Counted(nameOf unaryNames "unary" op, fun () -> inner.Unary(op, this.Unwrap x))

        member this.UnaryGrad(op, x, y, g) =
            this.Counted(nameOf unaryGradNames "unaryGrad" op, fun () -> inner.UnaryGrad(op, this.Unwrap x, this.Unwrap y, this.Unwrap g))

        member this.Scalar(op, x) =
            let name =
                match op with
                | AddScalar _ -> "addScalar"
                | MulScalar _ -> "mulScalar"
                | PowScalar _ -> "powScalar"
                | Clamp _ -> "clamp"

            this.Counted(name, fun () -> inner.Scalar(op, this.Unwrap x))

        member this.ScalarGrad(op, x, g) =
            let name =
                match op with
                | AddScalar _ -> "addScalarGrad"
                | MulScalar _ -> "mulScalarGrad"
                | PowScalar _ -> "powScalarGrad"
                | Clamp _ -> "clampGrad"

            this.Counted(name, fun () -> inner.ScalarGrad(op, this.Unwrap x, this.Unwrap g))

        member this.Binary(op, a, b) =
            let name =
                named binaryNames struct (op, a.Shape <> b.Shape) (fun struct (op, broadcast) ->
                    "binary " + BinaryOp.name op + (if broadcast then " (broadcast)" else ""))

            this.Counted(name, fun () -> inner.Binary(op, this.Unwrap a, this.Unwrap b))

        member this.SumAxis(x, axis, keepDim) = this.Counted("sumAxis", fun () -> inner.SumAxis(this.Unwrap x, axis, keepDim))
        member this.MaxAxis(x, axis, keepDim) = this.Counted("maxAxis", fun () -> inner.MaxAxis(this.Unwrap x, axis, keepDim))
        member this.SumAll(x) = this.Counted("sumAll", fun () -> inner.SumAll(this.Unwrap x))

        member this.MatMul(transA, transB, a, b, bias) =
            let name = productName (a.Shape.Length = 3) (not (isNull bias))

            let struct (result, ticks) =
                Timing.timed (fun () -> inner.MatMul(transA, transB, this.Unwrap a, this.Unwrap b, this.Unwrap bias))

            this.Count(name, result.Numel, ticks)
            this.CountProduct(name, Plans.productShape transA transB a.Shape b.Shape, ticks)
            this.Wrap result

        member this.Reshape(x, shape) = this.Counted("reshape (view)", fun () -> inner.Reshape(this.Unwrap x, shape))
        member this.Permute(x, perm) = this.Counted("permute", fun () -> inner.Permute(this.Unwrap x, perm))
        member this.Expand(x, shape) = this.Counted("expand", fun () -> inner.Expand(this.Unwrap x, shape))

        member this.Concat(xs, axis) =
            this.Counted(nameOf concatNames "concat of" xs.Length, fun () -> inner.Concat(Array.map this.Unwrap xs, axis))

        member this.Slice(x, axis, start, length) = this.Counted("slice", fun () -> inner.Slice(this.Unwrap x, axis, start, length))
        member this.IndexSelect(x, axis, indices) = this.Counted("indexSelect", fun () -> inner.IndexSelect(this.Unwrap x, axis, indices))

        member this.IndexAdd(shape, axis, indices, src) =
            this.Counted("indexAdd", fun () -> inner.IndexAdd(shape, axis, indices, this.Unwrap src))

        member this.AllFinite(x) =
            let struct (result, ticks) = Timing.timed (fun () -> inner.AllFinite(this.Unwrap x))
            this.Count("allFinite", 0, ticks)
            result

        member _.Synchronize() = inner.Synchronize()
