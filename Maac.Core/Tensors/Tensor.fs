namespace Maac.Tensors

open Maac

open System

/// A recorded operation: its inputs, how many outputs it made, and how gradients of its outputs are sent back
/// to its inputs. backward receives one gradient per output (null for an output nothing depended on) and, for
/// each input, whether that input needs a gradient; it returns one raw gradient per input (null where not needed).
[<Sealed; AllowNullLiteral>]
type internal Node(inputs: Tensor[], outputs: int, backward: RawTensor[] -> bool[] -> RawTensor[]) =
    member _.Inputs = inputs
    member _.Outputs = outputs
    member _.Backward = backward

/// An immutable float32 tensor that can take part in reverse-mode differentiation.
/// A tensor is tracked only while it depends on a variable of a running gradient computation
/// (see Maac.Diff); everything else, such as acting or computing targets, records nothing.
and [<Sealed>] Tensor internal (primal: RawTensor, node: Node, output: int) =
    internal new(primal, node) = Tensor(primal, node, 0)
    /// The raw values (for backend authors and interop).
    member _.Primal = primal
    member internal _.Node = node
    /// Which output of its node this tensor is (operations with several outputs).
    member internal _.Output = output
    /// The dimensions, outermost first (a copy).
    member _.Shape = Array.copy primal.Shape
    /// The number of dimensions.
    member _.Rank = primal.Shape.Length
    /// The number of elements.
    member _.Numel = primal.Numel
    /// The device holding the values.
    member _.Device = primal.Backend.Device
    /// Whether this tensor is part of a gradient computation in progress.
    member _.IsTracked = not (isNull node)
    /// Copies the values to a host array (row-major).
    member _.ToArray() = primal.ToArray()

    override t.ToString() =
        let v = primal.ToArray()
        let shown = v |> Seq.truncate 8 |> Seq.map (fun x -> x.ToString("G5")) |> String.concat ", "

        sprintf
            "Tensor(%s, %O%s: [%s%s])"
            (Shape.show primal.Shape)
            primal.Backend.Device
            (if isNull node then "" else ", tracked")
            shown
            (if v.Length > 8 then ", ..." else "")

/// Differentiable tensor operations (the library's primitive vocabulary).
/// Shapes follow NumPy broadcasting; a mismatch raises ShapeException naming the operation and shapes.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Tensor =
    let inline private raws (ts: Tensor[]) = ts |> Array.map (fun t -> t.Primal)

    /// Wraps raw values as an untracked tensor.
    let ofRaw (raw: RawTensor) = Tensor(raw, null)

    /// A tensor recording an operation when any input is tracked, or a plain value otherwise.
    let internal record (value: RawTensor) (inputs: Tensor[]) (backward: RawTensor -> bool[] -> RawTensor[]) =
        if inputs |> Array.exists (fun t -> t.IsTracked) then
            Tensor(value, Node(inputs, 1, fun gs need -> backward gs.[0] need))
        else
            Tensor(value, null)

    /// Tensors for the outputs of one operation, recording it when any input is tracked. backward gets one
    /// gradient per output, null for an output that nothing differentiated depended on.
    let internal recordMany (values: RawTensor[]) (inputs: Tensor[]) (backward: RawTensor[] -> bool[] -> RawTensor[]) =
        if inputs |> Array.exists (fun t -> t.IsTracked) then
            let node = Node(inputs, values.Length, backward)
            values |> Array.mapi (fun i v -> Tensor(v, node, i))
        else
            values |> Array.map (fun v -> Tensor(v, null))

    /// A fresh leaf variable with the same values (used by Diff to start a gradient computation).
    let internal variable (t: Tensor) = Tensor(t.Primal, Node([||], 1, (fun _ _ -> [||])))

    /// The gradient of input i when the caller needs it (its thunk is only run then), null otherwise.
    let inline private whenNeeded (need: bool[]) (i: int) ([<InlineIfLambda>] gradient: unit -> RawTensor) =
        if need.[i] then gradient () else null

    let private backendOf (op: string) (ts: Tensor[]) =
        let b = ts.[0].Primal.Backend

        for t in ts do
            if not (obj.ReferenceEquals(t.Primal.Backend, b)) then
                Shape.fail op (sprintf "tensors are on different devices (%O and %O)" b.Device t.Device)

        b

    /// Sums a broadcast gradient back to the shape of the operand it came from.
    let internal sumTo (shape: int[]) (g: RawTensor) =
        if g.Shape = shape then
            g
        else
            let be = g.Backend
            let mutable r = g

            while r.Shape.Length > shape.Length do
                r <- be.SumAxis(r, 0, false)

            for i in 0 .. shape.Length - 1 do
                if shape.[i] = 1 && r.Shape.[i] <> 1 then
                    r <- be.SumAxis(r, i, true)

            if r.Shape <> shape then be.Reshape(r, shape) else r

    // ---------------------------------------------------------------- creation

    /// A tensor of the given shape holding a copy of values (row-major), on the default device.
    let ofArray (shape: int[]) (values: float32[]) = ofRaw (Backends.Default.OfArray(values, shape))

    /// A tensor from a 2-D array.
    let ofArray2D (values: float32[,]) =
        let r, c = Array2D.length1 values, Array2D.length2 values
        ofArray [| r; c |] (Array.init (r * c) (fun i -> values.[i / c, i % c]))

    /// A vector from a sequence of values.
    let ofSeq (values: seq<float32>) = let a = Seq.toArray values in ofArray [| a.Length |] a
    /// A scalar (shape [||]).
    let scalar (v: float32) = ofRaw (Backends.Default.Full([||], v))
    /// A tensor filled with one value.
    let full (shape: int[]) (v: float32) = ofRaw (Backends.Default.Full(shape, v))
    /// Zeros.
    let zeros (shape: int[]) = full shape 0.0f
    /// Ones.
    let ones (shape: int[]) = full shape 1.0f
    /// A tensor of the same shape and device filled with one value.
    let fullLike (t: Tensor) (v: float32) = ofRaw (t.Primal.Backend.Full(t.Primal.Shape, v))
    /// Zeros of the same shape and device.
    let zerosLike (t: Tensor) = fullLike t 0.0f
    /// Standard normal values, a pure function of key and shape.
    let randn (key: RandomKey) (shape: int[]) = ofRaw (Backends.Default.Random(Normal, key, shape))
    /// Uniform values in [0, 1), a pure function of key and shape.
    let rand (key: RandomKey) (shape: int[]) = ofRaw (Backends.Default.Random(Uniform, key, shape))
    /// Normal values with the shape and device of t.
    let randnLike (key: RandomKey) (t: Tensor) = ofRaw (t.Primal.Backend.Random(Normal, key, t.Primal.Shape))
    /// Standard normal values of the given shape on t's device (and backend), a pure function of key and shape.
    let randnOnDeviceOf (t: Tensor) (key: RandomKey) (shape: int[]) = ofRaw (t.Primal.Backend.Random(Normal, key, shape))

    /// The same values on another device.
    let toDevice (device: Device) (t: Tensor) =
        if t.Device = device then
            t
        else
            ofRaw ((Backends.Get device).OfArray(t.Primal.ToArray(), t.Primal.Shape))

    // ---------------------------------------------------------------- reading

    /// The value of a one-element tensor.
    let toScalar (t: Tensor) =
        if t.Numel <> 1 then
            Shape.fail "toScalar" (sprintf "a tensor of shape %s has %d elements, not 1" (Shape.show t.Primal.Shape) t.Numel)

        t.Primal.ToArray().[0]

    /// True when every element is finite.
    let allFinite (t: Tensor) = t.Primal.Backend.AllFinite t.Primal

    /// Raises NonFiniteException naming `where` when t holds a NaN or infinity; returns t otherwise.
    let checkFinite (where: string) (t: Tensor) =
        if not (allFinite t) then
            raise (NonFiniteException(sprintf "NaN or infinity in %s (shape %s)" where (Shape.show t.Primal.Shape)))

        t

    /// The same values, cut off from differentiation (a constant to every gradient computation).
    let stopGradient (t: Tensor) = if t.IsTracked then ofRaw t.Primal else t

    // ---------------------------------------------------------------- element-wise

    /// y = op(x), with op's fused derivative kernel.
    let unary (op: UnaryOp) (x: Tensor) =
        let be = x.Primal.Backend
        let y = be.Unary(op, x.Primal)
        record y [| x |] (fun g _ -> [| be.UnaryGrad(op, x.Primal, y, g) |])

    let private scalarOp (op: ScalarOp) (x: Tensor) =
        let be = x.Primal.Backend
        record (be.Scalar(op, x.Primal)) [| x |] (fun g _ -> [| be.ScalarGrad(op, x.Primal, g) |])

    let neg x = unary Neg x
    let exp x = unary Exp x
    let log x = unary Log x
    let sqrt x = unary Sqrt x
    let abs x = unary Abs x
    let sign x = unary Sign x
    let square x = unary Square x
    let reciprocal x = unary Reciprocal x
    let relu x = unary Relu x
    /// x·sigmoid(x), also called swish.
    let silu x = unary Silu x
    let tanh x = unary Tanh x
    let sigmoid x = unary Sigmoid x
    /// log(1 + eˣ), computed stably.
    let softplus x = unary Softplus x
    let sin x = unary Sin x
    let cos x = unary Cos x
    /// x + c.
    let addScalar (c: float32) x = scalarOp (AddScalar c) x
    /// x · c.
    let mulScalar (c: float32) x = scalarOp (MulScalar c) x
    /// xᶜ.
    let powScalar (c: float32) x = scalarOp (PowScalar c) x

    /// x limited to [lo, hi] (gradient 1 inside, 0 outside).
    let clamp (lo: float32) (hi: float32) x =
        if lo > hi then
            invalidArg "lo" (sprintf "clamp: lower bound %g is above upper bound %g" lo hi)

        scalarOp (Clamp(lo, hi)) x

    let private binary (op: BinaryOp) (a: Tensor) (b: Tensor) (grads: RawTensor -> RawTensor -> bool[] -> RawTensor[]) =
        let be = backendOf (BinaryOp.name op) [| a; b |]
        let y = be.Binary(op, a.Primal, b.Primal)
        record y [| a; b |] (grads y)

    let add (a: Tensor) (b: Tensor) =
        binary Add a b (fun _ g need ->
            [|
                (if need.[0] then sumTo a.Primal.Shape g else null)
                (if need.[1] then sumTo b.Primal.Shape g else null)
            |])

    let sub (a: Tensor) (b: Tensor) =
        binary Sub a b (fun _ g need ->
            [|
                (if need.[0] then sumTo a.Primal.Shape g else null)
                (whenNeeded need 1 (fun () -> sumTo b.Primal.Shape (g.Backend.Unary(Neg, g))))
            |])

    let mul (a: Tensor) (b: Tensor) =
        binary Mul a b (fun _ g need ->
            let be = g.Backend

            [|
                (whenNeeded need 0 (fun () -> sumTo a.Primal.Shape (be.Binary(Mul, g, b.Primal))))
                (whenNeeded need 1 (fun () -> sumTo b.Primal.Shape (be.Binary(Mul, g, a.Primal))))
            |])

    let div (a: Tensor) (b: Tensor) =
        binary Div a b (fun y g need ->
            let be = g.Backend

            [|
                (whenNeeded need 0 (fun () -> sumTo a.Primal.Shape (be.Binary(Div, g, b.Primal))))
                (whenNeeded need 1 (fun () -> sumTo b.Primal.Shape (be.Unary(Neg, be.Binary(Div, be.Binary(Mul, g, y), b.Primal)))))
            |])

    /// aᵇ element-wise (the gradient in b needs a > 0).
    let pow (a: Tensor) (b: Tensor) =
        binary Pow a b (fun y g need ->
            let be = g.Backend

            [|
                (if need.[0] then
                     let d = be.Binary(Mul, b.Primal, be.Binary(Pow, a.Primal, be.Scalar(AddScalar -1.0f, b.Primal)))
                     sumTo a.Primal.Shape (be.Binary(Mul, g, d))
                 else
                     null)
                (whenNeeded need 1 (fun () -> sumTo b.Primal.Shape (be.Binary(Mul, be.Binary(Mul, g, y), be.Unary(Log, a.Primal)))))
            |])

    /// atan2(y, x) element-wise: the angle of the point (x, y), in (−π, π].
    let atan2 (y: Tensor) (x: Tensor) =
        binary Atan2 y x (fun _ g need ->
            let be = g.Backend
            let r2 = be.Binary(Add, be.Binary(Mul, y.Primal, y.Primal), be.Binary(Mul, x.Primal, x.Primal))

            [|
                (whenNeeded need 0 (fun () -> sumTo y.Primal.Shape (be.Binary(Mul, g, be.Binary(Div, x.Primal, r2)))))
                (whenNeeded need 1 (fun () -> sumTo x.Primal.Shape (be.Unary(Neg, be.Binary(Mul, g, be.Binary(Div, y.Primal, r2))))))
            |])

    /// The element-wise maximum or minimum: the gradient goes to the chosen operand, and to a on ties.
    let private extremum (op: BinaryOp) (a: Tensor) (b: Tensor) =
        // a is chosen where first ≥ second: (a, b) for the maximum, (b, a) for the minimum.
        let first = if op = Maximum then a else b
        let second = if op = Maximum then b else a

        binary op a b (fun _ g need ->
            let be = g.Backend

            let towards (operand: Tensor) (mask: BinaryOp) (x: Tensor) (y: Tensor) =
                sumTo operand.Primal.Shape (be.Binary(Mul, g, be.Binary(mask, x.Primal, y.Primal)))

            [|
                (whenNeeded need 0 (fun () -> towards a GreaterEqual first second))
                (whenNeeded need 1 (fun () -> towards b Greater second first))
            |])

    /// Element-wise maximum (ties send the gradient to a).
    let maximum (a: Tensor) (b: Tensor) = extremum Maximum a b

    /// Element-wise minimum (ties send the gradient to a).
    let minimum (a: Tensor) (b: Tensor) = extremum Minimum a b

    /// 1 where a > b, else 0 (a constant: comparisons have no gradient).
    let greater (a: Tensor) (b: Tensor) = ofRaw ((backendOf "greater" [| a; b |]).Binary(Greater, a.Primal, b.Primal))

    // ---------------------------------------------------------------- shape

    /// The same values under another shape; one dimension may be -1 (inferred).
    let reshape (shape: int[]) (x: Tensor) =
        let resolved =
            match shape |> Array.filter (fun d -> d = -1) |> Array.length with
            | 0 -> shape
            | 1 ->
                let known = shape |> Array.filter (fun d -> d <> -1) |> Array.fold (*) 1

                if known = 0 || x.Numel % known <> 0 then
                    Shape.fail "reshape" (sprintf "cannot view shape %s as %s" (Shape.show x.Primal.Shape) (Shape.show shape))

                shape |> Array.map (fun d -> if d = -1 then x.Numel / known else d)
            | _ -> Shape.fail "reshape" (sprintf "more than one -1 in %s" (Shape.show shape))

        if resolved = x.Primal.Shape then
            x
        else
            let be = x.Primal.Backend
            let inShape = x.Primal.Shape
            record (be.Reshape(x.Primal, resolved)) [| x |] (fun g _ -> [| be.Reshape(g, inShape) |])

    /// Inserts a dimension of size 1 at axis.
    let unsqueeze (axis: int) (x: Tensor) =
        let s = x.Primal.Shape
        let a = Shape.axis "unsqueeze" (s.Length + 1) axis
        reshape (Array.concat [ s.[.. a - 1]; [| 1 |]; s.[a..] ]) x

    /// Removes a dimension of size 1.
    let squeeze (axis: int) (x: Tensor) =
        let s = x.Primal.Shape
        let a = Shape.axis "squeeze" s.Length axis

        if s.[a] <> 1 then
            Shape.fail "squeeze" (sprintf "axis %d of shape %s has size %d, not 1" axis (Shape.show s) s.[a])

        reshape (Shape.removeAxis s a) x

    /// Reorders dimensions: result dimension i is input dimension perm[i].
    let permute (perm: int[]) (x: Tensor) =
        let be = x.Primal.Backend
        let inverse = Array.zeroCreate perm.Length
        let y = be.Permute(x.Primal, perm)
        perm |> Array.iteri (fun i p -> inverse.[p] <- i)
        record y [| x |] (fun g _ -> [| be.Permute(g, inverse) |])

    /// Swaps the last two dimensions.
    let transpose (x: Tensor) =
        let r = x.Rank

        if r < 2 then
            Shape.fail "transpose" (sprintf "needs at least 2 dimensions, got shape %s" (Shape.show x.Primal.Shape))

        permute
            (Array.init r (fun i ->
                if i = r - 2 then r - 1
                elif i = r - 1 then r - 2
                else i))
            x

    /// x broadcast to a larger shape.
    let expand (shape: int[]) (x: Tensor) =
        if shape = x.Primal.Shape then
            x
        else
            let be = x.Primal.Backend
            let inShape = x.Primal.Shape
            record (be.Expand(x.Primal, shape)) [| x |] (fun g _ -> [| sumTo inShape g |])

    /// x [N, …] repeated k times along its first axis: [k·N, …], rows [i·N, (i+1)·N) a copy of x (x itself when k = 1).
    let repeatRows (k: int) (x: Tensor) =
        if k < 1 then
            invalidArg "k" (sprintf "repeatRows: the number of copies must be at least 1, got %d" k)

        if k = 1 then
            x
        else
            let shape = x.Primal.Shape
            expand (Array.append [| k |] shape) x |> reshape (Array.append [| k * shape.[0] |] shape.[1..])

    /// Joins tensors along an axis.
    let concat (axis: int) (xs: Tensor[]) =
        if xs.Length = 0 then
            Shape.fail "concat" "no tensors were given"

        let be = backendOf "concat" xs
        let y = be.Concat(raws xs, axis)
        let ax = Shape.axis "concat" y.Shape.Length axis

        record y xs (fun g need ->
            let starts = xs |> Array.scan (fun at (x: Tensor) -> at + x.Primal.Shape.[ax]) 0

            xs
            |> Array.mapi (fun i x ->
                if need.[i] then
                    be.Slice(g, ax, starts.[i], x.Primal.Shape.[ax])
                else
                    null))

    /// releasing (below) for a step whose caller drops its input state once it returns: besides the step's own
    /// tensors, the memory of the tensors in `consumed` that the result does not keep goes back to the pool then (a tensor of
    /// `consumed` the result still holds stays as it was), so a chain of such steps reuses its states' memory. Using a
    /// consumed tensor afterwards raises ObjectDisposedException; when `work` raises, nothing consumed is released.
    /// Only for a state nobody else can see (another thread acting with it, a caller keeping it to fall back to).
    let replacing (consumed: Tensor[]) (keep: 'T -> Tensor[]) (work: unit -> 'T) =
        match Backends.Default with
        | :? IReleasingBackend as b ->
            use scope = b.BeginScope()
            let result = work ()

            for t in consumed do
                scope.Consume t.Primal

            for t in keep result do
                scope.Keep t.Primal

            result
        | _ -> work ()

    /// Runs `work`; on a backend that releases memory by scopes (the CPU and GPU backends), every tensor it creates
    /// on this thread is released when it returns, except those `keep` picks from its result (an exception releases
    /// them all), and a released tensor raises ObjectDisposedException when used. Elsewhere it just runs `work`.
    /// For steps that replace their state: the new state is kept, the memory of the rest of the step's tensors
    /// goes back to the pool at once instead of when the garbage collector finds them.
    let releasing (keep: 'T -> Tensor[]) (work: unit -> 'T) = replacing [||] keep work

    /// The values of several one-element tensors, read back in one transfer: on a GPU, one wait for the queued
    /// work instead of one per tensor. Not recorded for differentiation.
    let toScalars (xs: Tensor[]) =
        if xs.Length = 0 then
            [||]
        else
            for x in xs do
                if x.Numel <> 1 then
                    Shape.fail "toScalars" (sprintf "a tensor of shape %s has %d elements, not 1" (Shape.show x.Primal.Shape) x.Numel)

            let be = backendOf "toScalars" xs
            be.Concat(xs |> Array.map (fun x -> be.Reshape(x.Primal, [| 1 |])), 0).ToArray()

    /// The range [start, start+length) of an axis.
    let slice (axis: int) (start: int) (length: int) (x: Tensor) =
        let be = x.Primal.Backend
        let inShape = x.Primal.Shape
        let y = be.Slice(x.Primal, axis, start, length)
        record y [| x |] (fun g _ -> [| be.IndexAdd(inShape, axis, Array.init length (fun i -> start + i), g) |])

    /// Splits an axis into pieces of the given sizes.
    let split (axis: int) (sizes: int[]) (x: Tensor) =
        let ax = Shape.axis "split" x.Rank axis

        if Array.sum sizes <> x.Primal.Shape.[ax] then
            Shape.fail "split" (sprintf "sizes %s do not add up to axis %d of shape %s" (Shape.show sizes) axis (Shape.show x.Primal.Shape))

        let starts = Array.scan (+) 0 sizes
        let be = x.Primal.Backend
        let inShape = x.Primal.Shape
        let pieces = sizes |> Array.mapi (fun i n -> be.Slice(x.Primal, ax, starts.[i], n))
        // One operation with a piece per output: its gradient is the pieces' gradients joined (zeros for pieces
        // nothing depended on), or, when only one piece has a gradient, that piece scattered into zeros.
        recordMany pieces [| x |] (fun gs _ ->
            match gs |> Array.filter (fun g -> not (isNull g)) with
            | [| only |] ->
                let i = Array.IndexOf(gs, only)
                [| be.IndexAdd(inShape, ax, Array.init sizes.[i] (fun k -> starts.[i] + k), only) |]
            | _ ->
                [|
                    be.Concat(gs |> Array.mapi (fun i g -> if isNull g then be.Full(pieces.[i].Shape, 0.0f) else g), ax)
                |])

    /// Splits an axis into n equal pieces.
    let chunk (axis: int) (n: int) (x: Tensor) =
        let ax = Shape.axis "chunk" x.Rank axis
        let size = x.Primal.Shape.[ax]

        if n <= 0 || size % n <> 0 then
            Shape.fail "chunk" (sprintf "axis %d of shape %s does not split into %d equal pieces" axis (Shape.show x.Primal.Shape) n)

        split ax (Array.create n (size / n)) x

    /// Entries indices[j] of an axis (a gather); the gradient scatters back, adding at repeated indices.
    let indexSelect (axis: int) (indices: int[]) (x: Tensor) =
        let be = x.Primal.Backend
        let inShape = x.Primal.Shape
        let y = be.IndexSelect(x.Primal, axis, indices)
        record y [| x |] (fun g _ -> [| be.IndexAdd(inShape, axis, indices, g) |])

    /// A zero tensor of the given shape with src's slices added at indices along axis (a scatter-add).
    let indexAdd (shape: int[]) (axis: int) (indices: int[]) (src: Tensor) =
        let be = src.Primal.Backend
        let y = be.IndexAdd(shape, axis, indices, src.Primal)
        record y [| src |] (fun g _ -> [| be.IndexSelect(g, axis, indices) |])

    // ---------------------------------------------------------------- reductions

    /// Sum of all elements (shape [||]).
    let sum (x: Tensor) =
        let be = x.Primal.Backend
        let inShape = x.Primal.Shape
        record (be.SumAll x.Primal) [| x |] (fun g _ -> [| be.Expand(g, inShape) |])

    /// Mean of all elements.
    let mean (x: Tensor) = sum x |> mulScalar (1.0f / float32 (max 1 x.Numel))

    /// Sum over one axis.
    let sumAxis (axis: int) (keepDim: bool) (x: Tensor) =
        let be = x.Primal.Backend
        let inShape = x.Primal.Shape
        let ax = Shape.axis "sum" inShape.Length axis

        record (be.SumAxis(x.Primal, ax, keepDim)) [| x |] (fun g _ ->
            let gk =
                if keepDim then
                    g
                else
                    be.Reshape(g, Shape.withAxis inShape ax 1)

            [| be.Expand(gk, inShape) |])

    /// Mean over one axis.
    let meanAxis (axis: int) (keepDim: bool) (x: Tensor) =
        let ax = Shape.axis "mean" x.Rank axis
        sumAxis ax keepDim x |> mulScalar (1.0f / float32 (max 1 x.Primal.Shape.[ax]))

    /// Maximum over one axis (the gradient is shared equally among tied maxima).
    let maxAxis (axis: int) (keepDim: bool) (x: Tensor) =
        let be = x.Primal.Backend
        let inShape = x.Primal.Shape
        let ax = Shape.axis "max" inShape.Length axis
        let yk = be.MaxAxis(x.Primal, ax, true)

        let y =
            if keepDim then
                yk
            else
                be.Reshape(yk, Shape.removeAxis inShape ax)

        record y [| x |] (fun g _ ->
            let gk = if keepDim then g else be.Reshape(g, yk.Shape)
            let mask = be.Binary(Equal, x.Primal, yk)
            let count = be.SumAxis(mask, ax, true)
            [| be.Binary(Mul, mask, be.Binary(Div, gk, count)) |])

    // ---------------------------------------------------------------- products

    /// op(a)·op(b) (+ bias), rank 2 or batched rank 3, where op transposes the last two dimensions when asked.
    /// bias has n elements (shared by all rows, of any shape: [n], [1, n], [n, 1], ...) or batch·n (one row per batch
    /// entry: [B, n], [B, 1, n] or [B·n]), or is None; values and gradients follow that reading for every shape.
    let matmulWith (transA: bool) (transB: bool) (a: Tensor) (b: Tensor) (bias: Tensor option) =
        let inputs =
            match bias with
            | Some c -> [| a; b; c |]
            | None -> [| a; b |]

        let be = backendOf "matmul" inputs
        let biasRaw = if inputs.Length = 3 then inputs.[2].Primal else null
        let y = be.MatMul(transA, transB, a.Primal, b.Primal, biasRaw)
        record y inputs (fun g need -> ProductGradients.inputs transA transB a.Primal b.Primal biasRaw g need)

    // ---------------------------------------------------------------- fused

    /// The generic operations on differentiable tensors, for writing (and differentiating) the reference
    /// compositions of fused operations.
    let ops =
        { new IOps<Tensor> with
            member _.Shape x = x.Primal.Shape
            member _.Full(like, shape, value) = ofRaw (like.Primal.Backend.Full(shape, value))
            member _.Unary(op, x) = unary op x

            member _.Scalar(op, x) =
                match op with
                | AddScalar c -> addScalar c x
                | MulScalar c -> mulScalar c x
                | PowScalar c -> powScalar c x
                | Clamp(lo, hi) -> clamp lo hi x

            member _.Binary(op, a, b) =
                match op with
                | Add -> add a b
                | Sub -> sub a b
                | Mul -> mul a b
                | Div -> div a b
                | Pow -> pow a b
                | Atan2 -> atan2 a b
                | Maximum -> maximum a b
                | Minimum -> minimum a b
                | Greater
                | GreaterEqual
                | Equal -> ofRaw ((backendOf (BinaryOp.name op) [| a; b |]).Binary(op, a.Primal, b.Primal))

            member _.SumAxis(x, axis, keepDim) = sumAxis axis keepDim x
            member _.Slice(x, axis, start, length) = slice axis start length x
            member _.Concat(xs, axis) = concat axis xs
            member _.Reshape(x, shape) = reshape shape x
            member _.MatMul(transA, transB, a, b, bias) = matmulWith transA transB a b (ValueOption.toOption bias)
        }

    /// Runs a fused operation (FusedOp) on its inputs' backend: the backend's kernel when it has one, otherwise the
    /// operation's reference composition. Differentiated as the operation says: through its Backward, through its
    /// reference composition (which then runs on the tracked inputs in place of the kernel), or not at all; where the
    /// backend has no kernel, tracked inputs always go through the composition.
    let fused (op: FusedOp<'A>) (attributes: 'A) (inputs: Tensor[]) : Tensor[] =
        let be = backendOf op.Name inputs
        let raw = raws inputs
        let tracked = inputs |> Array.exists (fun t -> t.IsTracked)

        match op.Gradient with
        | DifferentiateReference when tracked ->
            Fused.outputShapes op attributes raw |> ignore
            op.Reference(ops, attributes, inputs)
        | FusedBackward when tracked && (Fused.kernelOf be op).IsNone ->
            // No kernel here: the composition, recorded operation by operation, is the same arithmetic as the raw
            // composition followed by Backward, without the operation's bookkeeping on top.
            Fused.outputShapes op attributes raw |> ignore
            op.Reference(ops, attributes, inputs)
        | FusedBackward when tracked ->
            let outputs = Fused.run be op attributes raw
            recordMany outputs inputs (fun gs need -> op.Backward(be, attributes, raw, outputs, gs, need))
        | _ -> Fused.run be op attributes raw |> Array.map ofRaw

    /// activation(op(a)·op(b) (+ bias)) as one operation (MatMulActivation), with the operands of matmulWith: on a
    /// GPU the bias and the activation take one kernel after the product instead of two.
    let matmulActivationWith (activation: UnaryOp) (transA: bool) (transB: bool) (a: Tensor) (b: Tensor) (bias: Tensor option) =
        let inputs =
            match bias with
            | Some c -> [| a; b; c |]
            | None -> [| a; b |]

        let attributes = { TransA = transA; TransB = transB; Activation = activation }

        // The product stays out of memory where no gradient will read it (untracked inputs, or a ReLU layer, whose
        // gradient reads the output) and the backend has the one-output kernel.
        let activationOnly =
            (MatMulActivation.gradientFromOutput activation
             || not (inputs |> Array.exists (fun t -> t.IsTracked)))
            && (Fused.kernelOf (backendOf MatMulActivation.op.Name inputs) MatMulActivation.activationOnly).IsSome

        (fused
            (if activationOnly then
                 MatMulActivation.activationOnly
             else
                 MatMulActivation.op)
            attributes
            inputs).[0]

    /// Samples a tanh-squashed diagonal Gaussian in one fused operation (TanhGaussian.sample; formulas in
    /// TanhGaussianFormulas): head [N, 2A] holds each row's means, then its log standard deviations (clamped to
    /// [logStdMin, logStdMax] with clamp's gradient), eps [N, A] the standard-normal noise. Returns the actions
    /// tanh(μ + σ·ε) [N, A] and their exact log-densities [N]. Equal to the composition of chunk, clamp, exp, tanh and
    /// the log-density terms, but one operation forward and one backward instead of about sixty.
    let tanhGaussianSample (logStdMin: float32) (logStdMax: float32) (head: Tensor) (eps: Tensor) =
        if logStdMin > logStdMax then
            invalidArg "logStdMin" (sprintf "tanhGaussianSample: lower bound %g is above upper bound %g" logStdMin logStdMax)

        let outputs = fused TanhGaussian.sample { Lo = logStdMin; Hi = logStdMax } [| head; eps |]
        outputs.[0], outputs.[1]

    /// One fused Adam update (AdamUpdate.step) of a parameter w with its gradient g and moments m, v (AdamHyper: learning
    /// rate, betas, epsilon and bias corrections): the new parameter, first and second moments, untracked (an
    /// optimiser step is not differentiated). Every operand has w's shape.
    let adamStep (hyper: AdamHyper) (w: Tensor) (g: Tensor) (m: Tensor) (v: Tensor) =
        let outputs = fused AdamUpdate.step hyper [| w; g; m; v |]
        outputs.[0], outputs.[1], outputs.[2]

    /// Samples a Gaussian head with softly bounded log-variance in one fused operation (GaussianHead.sample; formulas
    /// in GaussianHeadFormulas): head [R, 2D] holds each row's means, then its raw log-variances; maxLogVar and
    /// minLogVar ([D], or any shape of D elements) the learned bounds; eps [R, D] the standard-normal noise. Returns
    /// μ + e^(v/2)·ε [R, D] with v = min + softplus(max − softplus(max − raw) − min), differentiable in all four.
    let gaussianHeadSample (maxLogVar: Tensor) (minLogVar: Tensor) (head: Tensor) (eps: Tensor) =
        let flat (t: Tensor) = reshape [| t.Numel |] t
        (fused GaussianHead.sample () [| head; flat maxLogVar; flat minLogVar; eps |]).[0]

    /// Matrix product of two rank-2 tensors.
    let matmul (a: Tensor) (b: Tensor) =
        if a.Rank <> 2 || b.Rank <> 2 then
            Shape.fail
                "matmul"
                (sprintf
                    "needs two rank-2 tensors, got %s and %s (use bmm for batches)"
                    (Shape.show a.Primal.Shape)
                    (Shape.show b.Primal.Shape))

        matmulWith false false a b None

    /// Batched matrix product: [B, m, k] · [B, k, n] → [B, m, n].
    let bmm (a: Tensor) (b: Tensor) =
        if a.Rank <> 3 || b.Rank <> 3 then
            Shape.fail "bmm" (sprintf "needs two rank-3 tensors, got %s and %s" (Shape.show a.Primal.Shape) (Shape.show b.Primal.Shape))

        matmulWith false false a b None

    let private fusedBias (op: string) (rows: Tensor) (bias: Tensor) (outCols: int) (batches: int) =
        if bias.Numel = outCols || bias.Numel = batches * outCols then
            Some bias
        else
            Shape.fail
                op
                (sprintf
                    "bias of shape %s does not fit inputs %s with %d outputs"
                    (Shape.show bias.Primal.Shape)
                    (Shape.show rows.Primal.Shape)
                    outCols)

    let private productWith (activation: UnaryOp option) =
        match activation with
        | Some act -> matmulActivationWith act false false
        | None -> matmulWith false false

    /// activation(x·W + bias) for operands of `rank` dimensions laid out as `layout` says (rank 3: one product per
    /// batch entry, the weight's first dimension).
    let private biasedProduct
        (op: string)
        (rank: int)
        (layout: string)
        (activation: UnaryOp option)
        (x: Tensor)
        (weight: Tensor)
        (bias: Tensor)
        =
        let w = weight.Primal.Shape

        if x.Rank <> rank || weight.Rank <> rank then
            Shape.fail op (sprintf "needs %s, got %s and %s" layout (Shape.show x.Primal.Shape) (Shape.show w))

        productWith activation x weight (fusedBias op x bias w.[rank - 1] (if rank = 3 then w.[0] else 1))

    let private linearWith activation x weight bias = biasedProduct "linear" 2 "input [N, in] and weight [in, out]" activation x weight bias

    let private baddbmmWith activation bias x weight =
        biasedProduct "baddbmm" 3 "input [B, N, in] and weight [B, in, out]" activation x weight bias

    /// x·W + b for x [N, in], W [in, out], b [out] (one fused product).
    let linear (x: Tensor) (weight: Tensor) (bias: Tensor) = linearWith None x weight bias

    /// activation(x·W + b), as linear followed by unary activation, in one operation.
    let linearActivation (activation: UnaryOp) (x: Tensor) (weight: Tensor) (bias: Tensor) = linearWith (Some activation) x weight bias

    /// bias + x·W per batch entry for x [B, N, in], W [B, in, out], bias [B, 1, out] (one fused batched product).
    let baddbmm (bias: Tensor) (x: Tensor) (weight: Tensor) = baddbmmWith None bias x weight

    /// activation(bias + x·W) per batch entry, as baddbmm followed by unary activation, in one operation.
    let baddbmmActivation (activation: UnaryOp) (bias: Tensor) (x: Tensor) (weight: Tensor) = baddbmmWith (Some activation) bias x weight

/// Operators on tensors: +, -, *, / with tensors or float32 scalars, unary minus and ** (power).
type Tensor with
    static member (+)(a: Tensor, b: Tensor) = Tensor.add a b
    static member (+)(a: Tensor, b: float32) = Tensor.addScalar b a
    static member (+)(a: float32, b: Tensor) = Tensor.addScalar a b
    static member (-)(a: Tensor, b: Tensor) = Tensor.sub a b
    static member (-)(a: Tensor, b: float32) = Tensor.addScalar -b a
    static member (-)(a: float32, b: Tensor) = Tensor.addScalar a (Tensor.neg b)
    static member (*)(a: Tensor, b: Tensor) = Tensor.mul a b
    static member (*)(a: Tensor, b: float32) = Tensor.mulScalar b a
    static member (*)(a: float32, b: Tensor) = Tensor.mulScalar a b
    static member (/)(a: Tensor, b: Tensor) = Tensor.div a b
    static member (/)(a: Tensor, b: float32) = Tensor.mulScalar (1.0f / b) a
    static member (/)(a: float32, b: Tensor) = Tensor.mulScalar a (Tensor.reciprocal b)
    static member (~-)(a: Tensor) = Tensor.neg a
    static member Pow(a: Tensor, b: float32) = Tensor.powScalar b a
    static member Pow(a: Tensor, b: Tensor) = Tensor.pow a b
