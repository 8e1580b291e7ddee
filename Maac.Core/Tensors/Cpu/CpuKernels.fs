namespace Maac.Tensors.Cpu

#nowarn "9"

open System
open System.Runtime.Intrinsics
open System.Numerics.Tensors
open Microsoft.FSharp.NativeInterop
open Maac.Tensors

/// Vectorised element-wise loops over float arrays, split into fixed chunks across threads.
module internal Elementwise =
    /// Elements per parallel piece: large enough to amortise scheduling, a multiple of every vector width.
    [<Literal>]
    let Chunk = 16384

    /// The 8 elements of src from i, those at or past i + count (count < 8) read as zero: a ragged tail padded
    /// without touching memory past it or allocating.
    let inline padded256 (src: float32[]) (i: int) (count: int) =
        let inline at j = if j < count then src.[i + j] else 0.0f
        Vector256.Create(at 0, at 1, at 2, at 3, at 4, at 5, at 6, at 7)

    /// Loads a 256-bit vector at i (a ragged tail padded with zeros), so that every element, including those of a
    /// ragged tail, goes through the same vector formula (same bits anywhere).
    let inline load (src: float32[]) (i: int) (stop: int) =
        if i + Vector256<float32>.Count <= stop then
            Vector256.Create<float32>(ReadOnlySpan<float32>(src, i, Vector256<float32>.Count))
        else
            padded256 src i (stop - i)

    /// Stores the first min(w, stop − i) of a w-lane vector's lanes at i: all of them with copyAll, else lane by lane.
    let inline storeLanes
        (w: int)
        ([<InlineIfLambda>] copyAll: unit -> unit)
        ([<InlineIfLambda>] lane: int -> float32)
        (dst: float32[])
        (i: int)
        (stop: int)
        =
        if i + w <= stop then
            copyAll ()
        else
            for j in 0 .. stop - i - 1 do
                dst.[i + j] <- lane j

    /// Stores the first min(8, stop − i) lanes of v at i.
    let inline store (v: Vector256<float32>) (dst: float32[]) (i: int) (stop: int) =
        storeLanes Vector256<float32>.Count (fun () -> v.CopyTo(dst, i)) (fun j -> v.[j]) dst i stop

    /// dst[i] = f(x[i]).
    let inline map1 (x: float32[]) (dst: float32[]) ([<InlineIfLambda>] vf: Vector256<float32> -> Vector256<float32>) =
        Workers.forChunks dst.Length Chunk (fun start len ->
            let stop = start + len
            let mutable i = start

            while i < stop do
                store (vf (load x i stop)) dst i stop
                i <- i + Vector256<float32>.Count)

    /// dst[i] = f(x[i], y[i], z[i]).
    let inline map3
        (x: float32[])
        (y: float32[])
        (z: float32[])
        (dst: float32[])
        ([<InlineIfLambda>] vf: Vector256<float32> -> Vector256<float32> -> Vector256<float32> -> Vector256<float32>)
        =
        Workers.forChunks dst.Length Chunk (fun start len ->
            let stop = start + len
            let mutable i = start

            while i < stop do
                store (vf (load x i stop) (load y i stop) (load z i stop)) dst i stop
                i <- i + Vector256<float32>.Count)

    /// Applies the System.Numerics.Tensors primitive for op chunk by chunk.
    let primitive (op: UnaryOp) (x: float32[]) (dst: float32[]) =
        Workers.forChunks dst.Length Chunk (fun start len ->
            let s = ReadOnlySpan<float32>(x, start, len)
            let d = Span<float32>(dst, start, len)

            match op with
            | Exp -> TensorPrimitives.Exp(s, d)
            | Log -> TensorPrimitives.Log(s, d)
            | Tanh -> TensorPrimitives.Tanh(s, d)
            | Sigmoid -> TensorPrimitives.Sigmoid(s, d)
            | Sin -> TensorPrimitives.Sin(s, d)
            | Cos -> TensorPrimitives.Cos(s, d)
            | other -> invalidOp (sprintf "no primitive for %A" other))

    // 512-bit loops for the transcendental-heavy swish kernels on processors with AVX-512 (twice the
    // lanes per exp); elements of a ragged tail take the same 512-bit formula, padded with zeros.

    /// Loads a 512-bit vector at i, the lanes at or past stop read as zero.
    let inline load512 (src: float32[]) (i: int) (stop: int) =
        if i + Vector512<float32>.Count <= stop then
            Vector512.Create<float32>(ReadOnlySpan<float32>(src, i, Vector512<float32>.Count))
        else
            Vector512.Create(load src i stop, padded256 src (i + 8) (stop - i - 8))

    /// Stores the first min(16, stop − i) lanes of v at i.
    let inline store512 (v: Vector512<float32>) (dst: float32[]) (i: int) (stop: int) =
        storeLanes Vector512<float32>.Count (fun () -> v.CopyTo(dst, i)) (fun j -> v.[j]) dst i stop

    let inline private sigmoid512 (x: Vector512<float32>) = Vector512<float32>.One / (Vector512<float32>.One + Vector512.Exp(-x))

    /// Swish forward with 512-bit vectors: x·σ(x).
    let inline private silu512v (x: Vector512<float32>) = x * sigmoid512 x

    /// Swish forward (silu512v) and backward (dx = g·σ(x)·(1 + x·(1 − σ(x)))) with 512-bit vectors.
    let private silu512 (x: float32[]) (g: float32[]) (dst: float32[]) (backward: bool) =
        let one = Vector512<float32>.One

        Workers.forChunks dst.Length Chunk (fun start len ->
            let stop = start + len
            let mutable i = start

            while i < stop do
                let xv = load512 x i stop

                let r =
                    if backward then
                        let s = sigmoid512 xv
                        load512 g i stop * s * (one + xv * (one - s))
                    else
                        silu512v xv

                store512 r dst i stop
                i <- i + Vector512<float32>.Count)

    let private wide = Vector512.IsHardwareAccelerated

    let inline private vsigmoid (x: Vector256<float32>) = Vector256<float32>.One / (Vector256<float32>.One + Vector256.Exp(-x))

    let inline private select (mask: Vector256<float32>) (a: Vector256<float32>) (b: Vector256<float32>) =
        Vector256.ConditionalSelect(mask, a, b)

    let inline private signOf (v: Vector256<float32>) =
        let zero = Vector256<float32>.Zero

        select (Vector256.GreaterThan(v, zero)) Vector256<float32>.One zero
        - select (Vector256.LessThan(v, zero)) Vector256<float32>.One zero

    let inline private relu (v: Vector256<float32>) = Vector256.Max(v, Vector256<float32>.Zero)
    let inline private silu (v: Vector256<float32>) = v * vsigmoid v

    /// Whether activationRange computes op: the activations the matrix product applies as it stores its tiles.
    let storesActivation (op: UnaryOp) =
        match op with
        | Relu
        | Silu -> true
        | _ -> false

    /// y = f(x) over the ragged tail [i, stop), fewer than `lanes` elements, through a zero-padded stack buffer
    /// (made by `create`, read back by `lane`), so that they take the same vector formula. Kept out of the loops
    /// that call it: a stack allocation slows the whole method that holds it.
    let private raggedTail
        (lanes: int)
        (create: nativeptr<float32> -> 'V)
        (lane: 'V -> int -> float32)
        (f: 'V -> 'V)
        (x: float32[])
        (y: float32[])
        (i: int)
        (stop: int)
        =
        let buffer = NativePtr.stackalloc<float32> lanes

        for j in 0 .. lanes - 1 do
            NativePtr.set buffer j (if i + j < stop then x.[i + j] else 0.0f)

        let r = f (create buffer)

        for j in 0 .. stop - i - 1 do
            y.[i + j] <- lane r j

    /// y = f(x) over [start, start + len) in vectors of `lanes` floats ('V, loaded and stored through the given
    /// functions), without allocating, every element through the same vector formula: a ragged tail is the last
    /// whole vector of the range computed again (its lanes before the tail get the values they already have) when
    /// the range holds one and y is not x, else it goes through raggedTail. Written once, inlined for each width.
    let inline private rangeOf
        (lanes: int)
        ([<InlineIfLambda>] load: float32[] -> int -> 'V)
        ([<InlineIfLambda>] store: 'V -> float32[] -> int -> unit)
        (create: nativeptr<float32> -> 'V)
        (lane: 'V -> int -> float32)
        ([<InlineIfLambda>] f: 'V -> 'V)
        (x: float32[])
        (y: float32[])
        (start: int)
        (len: int)
        =
        let mutable i = start
        let stop = start + len

        while i + lanes <= stop do
            store (f (load x i)) y i
            i <- i + lanes

        if i < stop then
            if len >= lanes && not (obj.ReferenceEquals(x, y)) then
                store (f (load x (stop - lanes))) y (stop - lanes)
            else
                raggedTail lanes create lane f x y i stop

    let inline private load256At (x: float32[]) i = Vector256.LoadUnsafe(&x.[i])
    let inline private store256At (v: Vector256<float32>) (y: float32[]) i = Vector256.StoreUnsafe(v, &y.[i])
    let inline private load512At (x: float32[]) i = Vector512.LoadUnsafe(&x.[i])
    let inline private store512At (v: Vector512<float32>) (y: float32[]) i = Vector512.StoreUnsafe(v, &y.[i])

    let inline private range256 ([<InlineIfLambda>] f) x y start len =
        rangeOf 8 load256At store256At (fun p -> Vector256.Load p) (fun (v: Vector256<float32>) j -> v.[j]) f x y start len

    let inline private range512 ([<InlineIfLambda>] f) x y start len =
        rangeOf 16 load512At store512At (fun p -> Vector512.Load p) (fun (v: Vector512<float32>) j -> v.[j]) f x y start len

    /// y[i] = op(x[i]) for i in [start, start + len), op a storesActivation one, by the same vector formulas as
    /// `unary` (the same bits, whatever the range), without allocating: the product calls it on every block it stores.
    let activationRange (op: UnaryOp) (x: float32[]) (y: float32[]) (start: int) (len: int) =
        if len > 0 then
            match op with
            | Relu -> range256 relu x y start len
            | Silu when wide -> range512 silu512v x y start len
            | Silu -> range256 silu x y start len
            | other -> invalidArg "op" (sprintf "%A is not an activation the product stores" other)

    let unary (op: UnaryOp) (x: float32[]) (y: float32[]) =
        let zero = Vector256<float32>.Zero
        let one = Vector256<float32>.One

        match op with
        | Exp
        | Log
        | Tanh
        | Sigmoid
        | Sin
        | Cos -> primitive op x y
        | Neg -> map1 x y (fun v -> -v)
        | Sqrt -> map1 x y Vector256.Sqrt
        | Abs -> map1 x y Vector256.Abs
        | Sign -> map1 x y signOf
        | Square -> map1 x y (fun v -> v * v)
        | Reciprocal -> map1 x y (fun v -> one / v)
        | Relu -> map1 x y relu
        | Silu when wide -> silu512 x x y false
        | Silu -> map1 x y silu
        // Softplus log(1 + e^x), computed stably as max(x, 0) + log1p(e^−|x|), log1p as in ScalarMath.Log1p.
        | Softplus ->
            map1 x y (fun v ->
                let z = Vector256.Exp(-(Vector256.Abs v))
                let w = one + z
                let log1p = Vector256.ConditionalSelect(Vector256.Equals(w, one), z, Vector256.Log w * (z / (w - one)))
                Vector256.Max(v, zero) + log1p)

    /// dx from x, y = op(x) and the incoming gradient g.
    let unaryGrad (op: UnaryOp) (x: float32[]) (y: float32[]) (g: float32[]) (dx: float32[]) =
        let one = Vector256<float32>.One
        let zero = Vector256<float32>.Zero
        let half = Vector256.Create 0.5f
        let two = Vector256.Create 2.0f

        match op with
        | Neg -> map3 x y g dx (fun _ _ g -> -g)
        | Exp -> map3 x y g dx (fun _ y g -> g * y)
        | Log -> map3 x y g dx (fun x _ g -> g / x)
        | Sqrt -> map3 x y g dx (fun _ y g -> g * half / y)
        | Abs -> map3 x y g dx (fun x _ g -> g * signOf x)
        | Sign -> Array.Clear dx
        | Square -> map3 x y g dx (fun x _ g -> two * x * g)
        | Reciprocal -> map3 x y g dx (fun _ y g -> -(g * y * y))
        | Relu -> map3 x y g dx (fun x _ g -> select (Vector256.GreaterThan(x, zero)) g zero)
        | Silu when wide -> silu512 x g dx true
        | Silu -> map3 x y g dx (fun x _ g -> let s = vsigmoid x in g * s * (one + x * (one - s)))
        | Tanh -> map3 x y g dx (fun _ y g -> g * (one - y * y))
        | Sigmoid -> map3 x y g dx (fun _ y g -> g * y * (one - y))
        | Softplus -> map3 x y g dx (fun x _ g -> g * vsigmoid x)
        | Sin -> map3 x y g dx (fun x _ g -> g * Vector256.Cos x)
        | Cos -> map3 x y g dx (fun x _ g -> -(g * Vector256.Sin x))

    let scalar (op: ScalarOp) (x: float32[]) (y: float32[]) =
        match op with
        | AddScalar c -> let v = Vector256.Create c in map1 x y (fun a -> a + v)
        | MulScalar c -> let v = Vector256.Create c in map1 x y (fun a -> a * v)
        | PowScalar 2.0f -> map1 x y (fun a -> a * a)
        | PowScalar c ->
            for i in 0 .. x.Length - 1 do
                y.[i] <- MathF.Pow(x.[i], c)
        | Clamp(lo, hi) ->
            let vl, vh = Vector256.Create lo, Vector256.Create hi
            map1 x y (fun a -> Vector256.Min(Vector256.Max(a, vl), vh))

    let scalarGrad (op: ScalarOp) (x: float32[]) (g: float32[]) (dx: float32[]) =
        match op with
        | AddScalar _ -> Array.Copy(g, dx, g.Length)
        | MulScalar c -> let v = Vector256.Create c in map1 g dx (fun a -> a * v)
        | PowScalar c ->
            for i in 0 .. x.Length - 1 do
                dx.[i] <-
                    if c = 0.0f then
                        0.0f
                    else
                        g.[i] * c * MathF.Pow(x.[i], c - 1.0f)
        | Clamp(lo, hi) ->
            let vl, vh = Vector256.Create lo, Vector256.Create hi
            let zero = Vector256<float32>.Zero
            map3 x x g dx (fun a _ gv -> select (Vector256.GreaterThanOrEqual(a, vl) &&& Vector256.LessThanOrEqual(a, vh)) gv zero)
