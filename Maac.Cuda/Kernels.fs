namespace Maac.Cuda

open System
open ILGPU
open ILGPU.Runtime
open Maac.Tensors

/// Up to eight dimensions (sizes or strides) passed to a kernel by value.
[<Struct>]
type Dims =
    {
        D0: int
        D1: int
        D2: int
        D3: int
        D4: int
        D5: int
        D6: int
        D7: int
    }

    static member Get(d: Dims, i: int) =
        match i with
        | 0 -> d.D0
        | 1 -> d.D1
        | 2 -> d.D2
        | 3 -> d.D3
        | 4 -> d.D4
        | 5 -> d.D5
        | 6 -> d.D6
        | _ -> d.D7

    /// Dims from an array of at most eight values (missing ones are 0).
    static member Of(values: int[]) =
        if values.Length > 8 then
            invalidArg "values" (sprintf "the GPU backend supports tensors of rank at most 8, got rank %d" values.Length)

        let at i = if i < values.Length then values.[i] else 0
        { D0 = at 0; D1 = at 1; D2 = at 2; D3 = at 3; D4 = at 4; D5 = at 5; D6 = at 6; D7 = at 7 }

/// Operation codes shared by the host and the kernels (kernels cannot take F# unions). Each code is a named literal that
/// the kernels match by name; a code without a case computes NaN in a kernel, which the kernel-equals-CPU tests catch.
module internal OpCodes =
    /// Codes of UnaryOp.
    module Unary =
        [<Literal>]
        let Neg = 0

        [<Literal>]
        let Exp = 1

        [<Literal>]
        let Log = 2

        [<Literal>]
        let Sqrt = 3

        [<Literal>]
        let Abs = 4

        [<Literal>]
        let Sign = 5

        [<Literal>]
        let Square = 6

        [<Literal>]
        let Reciprocal = 7

        [<Literal>]
        let Relu = 8

        [<Literal>]
        let Silu = 9

        [<Literal>]
        let Tanh = 10

        [<Literal>]
        let Sigmoid = 11

        [<Literal>]
        let Softplus = 12

        [<Literal>]
        let Sin = 13

        [<Literal>]
        let Cos = 14

    /// Codes of BinaryOp.
    module Binary =
        [<Literal>]
        let Add = 0

        [<Literal>]
        let Sub = 1

        [<Literal>]
        let Mul = 2

        [<Literal>]
        let Div = 3

        [<Literal>]
        let Pow = 4

        [<Literal>]
        let Atan2 = 5

        [<Literal>]
        let Maximum = 6

        [<Literal>]
        let Minimum = 7

        [<Literal>]
        let Greater = 8

        [<Literal>]
        let GreaterEqual = 9

        [<Literal>]
        let Equal = 10

    /// Codes of ScalarOp.
    module Scalar =
        [<Literal>]
        let AddScalar = 0

        [<Literal>]
        let MulScalar = 1

        [<Literal>]
        let PowScalar = 2

        [<Literal>]
        let Clamp = 3

    let unary (op: UnaryOp) =
        match op with
        | Neg -> Unary.Neg
        | Exp -> Unary.Exp
        | Log -> Unary.Log
        | Sqrt -> Unary.Sqrt
        | Abs -> Unary.Abs
        | Sign -> Unary.Sign
        | Square -> Unary.Square
        | Reciprocal -> Unary.Reciprocal
        | Relu -> Unary.Relu
        | Silu -> Unary.Silu
        | Tanh -> Unary.Tanh
        | Sigmoid -> Unary.Sigmoid
        | Softplus -> Unary.Softplus
        | Sin -> Unary.Sin
        | Cos -> Unary.Cos

    let binary (op: BinaryOp) =
        match op with
        | Add -> Binary.Add
        | Sub -> Binary.Sub
        | Mul -> Binary.Mul
        | Div -> Binary.Div
        | Pow -> Binary.Pow
        | Atan2 -> Binary.Atan2
        | Maximum -> Binary.Maximum
        | Minimum -> Binary.Minimum
        | Greater -> Binary.Greater
        | GreaterEqual -> Binary.GreaterEqual
        | Equal -> Binary.Equal

    /// (code, first constant, second constant) of a scalar operation.
    let scalar (op: ScalarOp) =
        match op with
        | AddScalar c -> Scalar.AddScalar, c, 0.0f
        | MulScalar c -> Scalar.MulScalar, c, 0.0f
        | PowScalar c -> Scalar.PowScalar, c, 0.0f
        | Clamp(lo, hi) -> Scalar.Clamp, lo, hi

/// The device kernels: static methods that ILGPU compiles for CUDA or runs on its CPU accelerator.
/// Their element formulas are those of the CPU backend (Maac.Core/Tensors/CpuKernels.fs).
type internal Kernels =

    static member SignOf(x: float32) =
        if x > 0.0f then 1.0f
        elif x < 0.0f then -1.0f
        else 0.0f

    static member Fill (i: Index1D) (dst: ArrayView<float32>) (value: float32) = dst.[i] <- value

    /// Copies src, viewed as rows of `width` elements, into dst's rows of `dstRow` elements starting at column
    /// `dstOffset` (one input of a concatenation, in one launch).
    static member CopyRows (i: Index1D) (src: ArrayView<float32>) (width: int) (dst: ArrayView<float32>) (dstRow: int) (dstOffset: int) =
        dst.[(i.X / width) * dstRow + dstOffset + i.X % width] <- src.[i]

    /// op(v) for a unary operation code (OpCodes.unary).
    static member UnaryValue(op: int, v: float32) =
        match op with
        | OpCodes.Unary.Neg -> -v
        | OpCodes.Unary.Exp -> MathF.Exp v
        | OpCodes.Unary.Log -> MathF.Log v
        | OpCodes.Unary.Sqrt -> MathF.Sqrt v
        | OpCodes.Unary.Abs -> MathF.Abs v
        | OpCodes.Unary.Sign -> Kernels.SignOf v
        | OpCodes.Unary.Square -> v * v
        | OpCodes.Unary.Reciprocal -> 1.0f / v
        | OpCodes.Unary.Relu -> MathF.Max(v, 0.0f)
        | OpCodes.Unary.Silu -> v * ScalarMath.Sigmoid v
        | OpCodes.Unary.Tanh -> MathF.Tanh v
        | OpCodes.Unary.Sigmoid -> ScalarMath.Sigmoid v
        | OpCodes.Unary.Softplus -> ScalarMath.Softplus v
        | OpCodes.Unary.Sin -> MathF.Sin v
        | OpCodes.Unary.Cos -> MathF.Cos v
        | _ -> nanf

    static member Unary (i: Index1D) (x: ArrayView<float32>) (y: ArrayView<float32>) (op: int) = y.[i] <- Kernels.UnaryValue(op, x.[i])

    static member UnaryGrad
        (i: Index1D)
        (x: ArrayView<float32>)
        (y: ArrayView<float32>)
        (g: ArrayView<float32>)
        (dx: ArrayView<float32>)
        (op: int)
        =
        let xv = x.[i]
        let yv = y.[i]
        let gv = g.[i]

        dx.[i] <-
            match op with
            | OpCodes.Unary.Neg -> -gv
            | OpCodes.Unary.Exp -> gv * yv
            | OpCodes.Unary.Log -> gv / xv
            | OpCodes.Unary.Sqrt -> gv * 0.5f / yv
            | OpCodes.Unary.Abs -> gv * Kernels.SignOf xv
            | OpCodes.Unary.Sign -> 0.0f
            | OpCodes.Unary.Square -> 2.0f * xv * gv
            | OpCodes.Unary.Reciprocal -> -(gv * yv * yv)
            | OpCodes.Unary.Relu -> if xv > 0.0f then gv else 0.0f
            | OpCodes.Unary.Silu -> let s = ScalarMath.Sigmoid xv in gv * s * (1.0f + xv * (1.0f - s))
            | OpCodes.Unary.Tanh -> gv * (1.0f - yv * yv)
            | OpCodes.Unary.Sigmoid -> gv * yv * (1.0f - yv)
            | OpCodes.Unary.Softplus -> gv * ScalarMath.Sigmoid xv
            | OpCodes.Unary.Sin -> gv * MathF.Cos xv
            | OpCodes.Unary.Cos -> -(gv * MathF.Sin xv)
            | _ -> nanf

    static member Scalar (i: Index1D) (x: ArrayView<float32>) (y: ArrayView<float32>) (op: int) (c0: float32) (c1: float32) =
        let v = x.[i]

        y.[i] <-
            match op with
            | OpCodes.Scalar.AddScalar -> v + c0
            | OpCodes.Scalar.MulScalar -> v * c0
            | OpCodes.Scalar.PowScalar -> if c0 = 2.0f then v * v else MathF.Pow(v, c0)
            | OpCodes.Scalar.Clamp -> MathF.Min(MathF.Max(v, c0), c1)
            | _ -> nanf

    static member ScalarGrad
        (i: Index1D)
        (x: ArrayView<float32>)
        (g: ArrayView<float32>)
        (dx: ArrayView<float32>)
        (op: int)
        (c0: float32)
        (c1: float32)
        =
        let v = x.[i]
        let gv = g.[i]

        dx.[i] <-
            match op with
            | OpCodes.Scalar.AddScalar -> gv
            | OpCodes.Scalar.MulScalar -> gv * c0
            | OpCodes.Scalar.PowScalar ->
                if c0 = 0.0f then
                    0.0f
                else
                    gv * c0 * MathF.Pow(v, c0 - 1.0f)
            | OpCodes.Scalar.Clamp -> if v >= c0 && v <= c1 then gv else 0.0f
            | _ -> nanf

    static member BinaryValue(op: int, a: float32, b: float32) =
        match op with
        | OpCodes.Binary.Add -> a + b
        | OpCodes.Binary.Sub -> a - b
        | OpCodes.Binary.Mul -> a * b
        | OpCodes.Binary.Div -> a / b
        | OpCodes.Binary.Pow -> MathF.Pow(a, b)
        | OpCodes.Binary.Atan2 -> MathF.Atan2(a, b)
        | OpCodes.Binary.Maximum -> MathF.Max(a, b)
        | OpCodes.Binary.Minimum -> MathF.Min(a, b)
        | OpCodes.Binary.Greater -> if a > b then 1.0f else 0.0f
        | OpCodes.Binary.GreaterEqual -> if a >= b then 1.0f else 0.0f
        | OpCodes.Binary.Equal -> if a = b then 1.0f else 0.0f
        | _ -> nanf

    /// z[i] = op(a[·], b[·]) with broadcasting: the output index is decomposed over `shape` and each input
    /// is read through its strides (0 along broadcast dimensions).
    static member Binary
        (i: Index1D)
        (a: ArrayView<float32>)
        (b: ArrayView<float32>)
        (z: ArrayView<float32>)
        (op: int)
        (rank: int)
        (shape: Dims)
        (aStrides: Dims)
        (bStrides: Dims)
        =
        let mutable rest = i.X
        let mutable ao = 0
        let mutable bo = 0
        let mutable d = rank - 1

        while d >= 0 do
            let size = Dims.Get(shape, d)
            let k = rest % size
            rest <- rest / size
            ao <- ao + k * Dims.Get(aStrides, d)
            bo <- bo + k * Dims.Get(bStrides, d)
            d <- d - 1

        z.[i] <- Kernels.BinaryValue(op, a.[ao], b.[bo])

    /// z[i] = op(a[i], b[i]) for operands of one shape: no index arithmetic, and fewer arguments to launch.
    static member BinarySameShape (i: Index1D) (a: ArrayView<float32>) (b: ArrayView<float32>) (z: ArrayView<float32>) (op: int) =
        z.[i] <- Kernels.BinaryValue(op, a.[i], b.[i])

    /// dst[i] = src[base + Σ index_d · strides_d] over the output shape: permute, expand and slice.
    static member Gather
        (i: Index1D)
        (src: ArrayView<float32>)
        (dst: ArrayView<float32>)
        (rank: int)
        (shape: Dims)
        (strides: Dims)
        (offset: int)
        =
        let mutable rest = i.X
        let mutable o = offset
        let mutable d = rank - 1

        while d >= 0 do
            let size = Dims.Get(shape, d)
            o <- o + (rest % size) * Dims.Get(strides, d)
            rest <- rest / size
            d <- d - 1

        dst.[i] <- src.[o]

    /// One group per output of a tensor viewed as [outer, n, inner] (elements past `count` ignored): the
    /// group's threads take every group-size-th element of the output's n (many loads in flight, not one
    /// thread's chain of dependent loads), then combine their partial results by halving in shared memory.
    /// The group size must be a power of two of at most 256.
    static member ReduceGroups (x: ArrayView<float32>) (dst: ArrayView<float32>) (n: int) (inner: int) (count: int) (isMax: int) =
        let shared = SharedMemory.Allocate<float32>(256)
        let g = Grid.IdxX
        let t = Group.IdxX
        let o = g / inner
        let r = g % inner
        let mutable acc = if isMax = 1 then Single.NegativeInfinity else 0.0f
        let mutable j = t

        while j < n do
            let e = (o * n + j) * inner + r

            if e < count then
                let v = x.[e]
                acc <- if isMax = 1 then MathF.Max(acc, v) else acc + v

            j <- j + Group.DimX

        shared.[t] <- acc
        Group.Barrier()
        let mutable half = Group.DimX / 2

        while half > 0 do
            if t < half then
                let other = shared.[t + half]

                shared.[t] <-
                    if isMax = 1 then
                        MathF.Max(shared.[t], other)
                    else
                        shared.[t] + other

            Group.Barrier()
            half <- half / 2

        if t = 0 then
            dst.[g] <- shared.[0]

    /// c[b, r, col] = Σₖ op(a)[b, r, k] · op(b)[b, k, col] (+ bias), one thread per output element.
    static member MatMul
        (i: Index1D)
        (a: ArrayView<float32>)
        (b: ArrayView<float32>)
        (c: ArrayView<float32>)
        (bias: ArrayView<float32>)
        (dims: Dims)
        (transA: int)
        (transB: int)
        =
        // dims: m, n, k, a's row length, b's row length, a's batch stride, b's batch stride, bias per batch (0/1/2)
        let m = dims.D0
        let n = dims.D1
        let k = dims.D2
        let lda = dims.D3
        let ldb = dims.D4
        let batch = i.X / (m * n)
        let r = (i.X / n) % m
        let col = i.X % n
        let aBase = batch * dims.D5
        let bBase = batch * dims.D6
        let mutable acc = 0.0f

        for j in 0 .. k - 1 do
            let av =
                if transA = 1 then
                    a.[aBase + j * lda + r]
                else
                    a.[aBase + r * lda + j]

            let bv =
                if transB = 1 then
                    b.[bBase + col * ldb + j]
                else
                    b.[bBase + j * ldb + col]

            acc <- acc + av * bv

        let withBias =
            match dims.D7 with
            | 1 -> acc + bias.[col]
            | 2 -> acc + bias.[batch * n + col]
            | _ -> acc

        c.[i] <- withBias

    /// c[i] = the bias of c's column: bias[col] (perBatch = 0) or bias[batch·n + col] (perBatch = n), over
    /// products of mn = m·n elements; cuBLAS then adds the product to it.
    static member BiasFill (i: Index1D) (bias: ArrayView<float32>) (c: ArrayView<float32>) (n: int) (mn: int) (perBatch: int) =
        c.[i] <- bias.[(i.X / mn) * perBatch + i.X % n]

    /// dst[(o·m + j)·inner + r] = src[(o·n + indices[j])·inner + r].
    static member IndexSelect
        (i: Index1D)
        (src: ArrayView<float32>)
        (dst: ArrayView<float32>)
        (indices: ArrayView<int>)
        (n: int)
        (m: int)
        (inner: int)
        =
        let r = i.X % inner
        let row = i.X / inner
        let o = row / m
        let j = row % m
        dst.[i] <- src.[(o * n + indices.[j]) * inner + r]

    /// One thread per (outer, inner): adds src's slices j into dst at indices[j], in the order of j (deterministic,
    /// the CPU backend's order).
    static member IndexAdd
        (i: Index1D)
        (src: ArrayView<float32>)
        (dst: ArrayView<float32>)
        (indices: ArrayView<int>)
        (n: int)
        (m: int)
        (inner: int)
        =
        let o = i.X / inner
        let r = i.X % inner

        for j in 0 .. m - 1 do
            let t = (o * n + indices.[j]) * inner + r
            dst.[t] <- dst.[t] + src.[(o * m + j) * inner + r]

    /// flag[0] is cleared when any element is NaN or infinite.
    static member CheckFinite (i: Index1D) (x: ArrayView<float32>) (flag: ArrayView<int>) =
        let v = x.[i]
        // v − v is 0 for finite v and NaN for NaN or ±∞.
        if not (v - v = 0.0f) then
            flag.[0] <- 0

    static member ToUnit(u: uint32) = float32 (u >>> 8) * (1.0f / 16777216.0f)

    static member ToUnitOpen(u: uint32) = float32 ((u >>> 8) + 1u) * (1.0f / 16777216.0f)

    /// Element i of a key's uniform (stream 0) or normal (stream 1) values, as RandomKey.fillUniform/fillNormal.
    static member Random (i: Index1D) (dst: ArrayView<float32>) (k0: uint32) (k1: uint32) (normal: int) =
        let e = i.X
        let struct (a, b, c, d) = Philox.block k0 k1 (uint32 (e >>> 2)) 0u 0u (uint32 normal)
        let lane = e &&& 3

        if normal = 0 then
            dst.[i] <-
                Kernels.ToUnit(
                    match lane with
                    | 0 -> a
                    | 1 -> b
                    | 2 -> c
                    | _ -> d
                )
        else
            let first = lane < 2
            let r = Math.Sqrt(-2.0 * Math.Log(float (Kernels.ToUnitOpen(if first then a else c))))
            let t = 2.0 * Math.PI * float (Kernels.ToUnit(if first then b else d))
            dst.[i] <- float32 (if lane % 2 = 0 then r * Math.Cos t else r * Math.Sin t)
