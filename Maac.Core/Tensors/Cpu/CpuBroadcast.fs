namespace Maac.Tensors.Cpu

open System
open System.Runtime.Intrinsics
open Maac.Tensors

/// How two contiguous operands are walked to produce a broadcast result: the output is seen as
/// rows of Inner elements; each operand's inner stride is 0 (one value repeated) or 1 (contiguous).
type internal BroadcastPlan =
    {
        OuterShape: int[]
        OuterStrideA: int[]
        OuterStrideB: int[]
        Inner: int
        InnerA: int
        InnerB: int
    }

module internal Broadcast =
    /// Strides of an operand aligned to the output's rank (0 where the operand is broadcast).
    let private alignedStrides (shape: int[]) (outShape: int[]) =
        let offset = outShape.Length - shape.Length
        let strides = Array.zeroCreate outShape.Length
        let mutable stride = 1

        for j in shape.Length - 1 .. -1 .. 0 do
            strides.[j + offset] <- (if shape.[j] = 1 then 0 else stride)
            stride <- stride * shape.[j]

        strides

    /// Builds the plan: drops unit dimensions and merges neighbours that both operands walk contiguously. Every
    /// element-wise operation of two tensors makes one, so it works in three arrays of the output's rank, merging in
    /// place, and allocates little else.
    let plan (aShape: int[]) (bShape: int[]) (outShape: int[]) =
        let sa, sb = alignedStrides aShape outShape, alignedStrides bShape outShape
        let sizes = Array.zeroCreate outShape.Length
        let mutable count = 0

        for i in 0 .. outShape.Length - 1 do
            let n = outShape.[i]

            if n <> 1 then
                let last = count - 1

                if count > 0 && sa.[last] = sa.[i] * n && sb.[last] = sb.[i] * n then
                    sizes.[last] <- sizes.[last] * n
                    sa.[last] <- sa.[i]
                    sb.[last] <- sb.[i]
                else
                    sizes.[count] <- n
                    sa.[count] <- sa.[i]
                    sb.[count] <- sb.[i]
                    count <- count + 1

        if count = 0 then
            { OuterShape = [||]; OuterStrideA = [||]; OuterStrideB = [||]; Inner = 1; InnerA = 0; InnerB = 0 }
        else
            let inner = count - 1

            {
                OuterShape = Array.sub sizes 0 inner
                OuterStrideA = Array.sub sa 0 inner
                OuterStrideB = Array.sub sb 0 inner
                Inner = sizes.[inner]
                InnerA = (if sa.[inner] = 0 then 0 else 1)
                InnerB = (if sb.[inner] = 0 then 0 else 1)
            }

    /// Where row `row` of the output starts in each operand.
    let rowOffsets (p: BroadcastPlan) (row: int) =
        let mutable offA = 0
        let mutable offB = 0
        let mutable rem = row

        for d in p.OuterShape.Length - 1 .. -1 .. 0 do
            let i = rem % p.OuterShape.[d]
            rem <- rem / p.OuterShape.[d]
            offA <- offA + i * p.OuterStrideA.[d]
            offB <- offB + i * p.OuterStrideB.[d]

        struct (offA, offB)

    /// The vector of an operand at position rel of a row (a repeated value when its inner stride is 0).
    let inline operandAt (src: float32[]) (off: int) (contiguous: int) (rel: int) (inner: int) =
        if contiguous = 1 then
            Elementwise.load src (off + rel) (off + inner)
        else
            Vector256.Create src.[off]

    /// Rows narrower than this that one operand repeats (a [D] row against [N, D]) are walked as one flat run.
    [<Literal>]
    let RepeatedRowLimit = 64

    /// Whether the plan is rows × inner with one operand in the output's order and the other repeating its first row,
    /// in rows narrower than RepeatedRowLimit; and whether that repeated operand is b.
    let repeatsNarrowRow (p: BroadcastPlan) =
        let narrow = p.OuterShape.Length = 1 && p.Inner < RepeatedRowLimit && p.InnerA = 1 && p.InnerB = 1

        if narrow && p.OuterStrideA.[0] = p.Inner && p.OuterStrideB.[0] = 0 then
            struct (true, true)
        elif narrow && p.OuterStrideA.[0] = 0 && p.OuterStrideB.[0] = p.Inner then
            struct (true, false)
        else
            struct (false, false)

    /// dst = f(x, row) for x in the output's order and `row` repeating every `inner` elements (rowIsB: row is f's
    /// second operand), as one flat run of vectors: row is read from a copy laid end to end, inner + 8 long, so that
    /// the vector at any column reads it whole. Each element meets the same operands in the same vector formula as
    /// on the row-by-row path; only the vectors' boundaries differ.
    let inline applyRepeatedRow
        (inner: int)
        (x: float32[])
        (row: float32[])
        (rowIsB: bool)
        (dst: float32[])
        ([<InlineIfLambda>] vf: Vector256<float32> -> Vector256<float32> -> Vector256<float32>)
        =
        let n = dst.Length
        let laid = Buffers.ArrayPool<float32>.Shared.Rent(inner + Vector256<float32>.Count)

        for j in 0 .. inner + Vector256<float32>.Count - 1 do
            laid.[j] <- row.[j % inner]

        Workers.forChunks n Elementwise.Chunk (fun start len ->
            let stop = start + len
            let mutable i = start
            let mutable column = start % inner

            while i < stop do
                let xv = Elementwise.load x i stop
                let rv = Vector256.Create<float32>(ReadOnlySpan<float32>(laid, column, Vector256<float32>.Count))
                Elementwise.store (if rowIsB then vf xv rv else vf rv xv) dst i stop
                i <- i + Vector256<float32>.Count
                column <- (column + Vector256<float32>.Count) % inner)

        Buffers.ArrayPool<float32>.Shared.Return laid

    /// dst = f(a, b) under the plan (every element through the same vector formula).
    let inline apply
        (p: BroadcastPlan)
        (a: float32[])
        (b: float32[])
        (dst: float32[])
        ([<InlineIfLambda>] vf: Vector256<float32> -> Vector256<float32> -> Vector256<float32>)
        =
        let rows = Shape.numel p.OuterShape
        let inner = p.Inner
        let rowsPerPiece = max 1 (Elementwise.Chunk / max 1 inner)
        let struct (repeats, rowIsB) = repeatsNarrowRow p

        if repeats && rows > 1 then
            let x, row = if rowIsB then a, b else b, a
            applyRepeatedRow inner x row rowIsB dst vf
        else
            Workers.forChunks rows rowsPerPiece (fun r0 count ->
                let w = Vector256<float32>.Count

                for row in r0 .. r0 + count - 1 do
                    let struct (offA, offB) = rowOffsets p row
                    let o = row * inner
                    let stop = o + inner
                    let mutable i = o

                    while i < stop do
                        Elementwise.store
                            (vf (operandAt a offA p.InnerA (i - o) inner) (operandAt b offB p.InnerB (i - o) inner))
                            dst
                            i
                            stop

                        i <- i + w)

    let binary (op: BinaryOp) (p: BroadcastPlan) (a: float32[]) (b: float32[]) (dst: float32[]) =
        let one = Vector256<float32>.One
        let zero = Vector256<float32>.Zero
        let inline flag (m: Vector256<float32>) = Vector256.ConditionalSelect(m, one, zero)

        match op with
        | Add -> apply p a b dst (fun x y -> x + y)
        | Sub -> apply p a b dst (fun x y -> x - y)
        | Mul -> apply p a b dst (fun x y -> x * y)
        | Div -> apply p a b dst (fun x y -> x / y)
        | Maximum -> apply p a b dst (fun x y -> Vector256.Max(x, y))
        | Minimum -> apply p a b dst (fun x y -> Vector256.Min(x, y))
        | Greater -> apply p a b dst (fun x y -> flag (Vector256.GreaterThan(x, y)))
        | GreaterEqual -> apply p a b dst (fun x y -> flag (Vector256.GreaterThanOrEqual(x, y)))
        | Equal -> apply p a b dst (fun x y -> flag (Vector256.Equals(x, y)))
        | Pow
        | Atan2 ->
            // No exact vector pow or atan2: evaluate element by element.
            let f =
                if op = Pow then
                    (fun (x: float32) (y: float32) -> MathF.Pow(x, y))
                else
                    (fun x y -> MathF.Atan2(x, y))

            let rows = Shape.numel p.OuterShape

            for row in 0 .. rows - 1 do
                let struct (offA, offB) = rowOffsets p row

                for i in 0 .. p.Inner - 1 do
                    dst.[row * p.Inner + i] <- f a.[offA + i * p.InnerA] b.[offB + i * p.InnerB]
