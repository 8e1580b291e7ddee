namespace Maac.Tensors

open Maac

open System

/// Helpers over tensor shapes (row-major, int arrays).
module Shape =
    /// "[2, 3]" style text for messages.
    let show (shape: int[]) = "[" + String.Join(", ", shape) + "]"

    /// Whether two shapes are the same, without allocating.
    let equal (a: int[]) (b: int[]) = ReadOnlySpan<int>(a).SequenceEqual(ReadOnlySpan<int>(b))

    /// Number of elements of a shape (1 for the scalar shape [||]).
    let numel (shape: int[]) =
        let mutable n = 1

        for d in shape do
            n <- n * d

        n

    /// Row-major strides of a contiguous tensor of this shape.
    let strides (shape: int[]) =
        let s = Array.zeroCreate shape.Length
        let mutable acc = 1

        for i in shape.Length - 1 .. -1 .. 0 do
            s.[i] <- acc
            acc <- acc * shape.[i]

        s

    let fail (op: string) (detail: string) : 'a = raise (ShapeException(sprintf "%s: %s" op detail))

    /// Checks that every dimension is non-negative.
    let validate (op: string) (shape: int[]) =
        if shape |> Array.exists (fun d -> d < 0) then
            fail op (sprintf "negative dimension in shape %s" (show shape))

    /// The broadcast of two shapes by NumPy's rules, or a ShapeException naming the operation.
    let broadcast (op: string) (a: int[]) (b: int[]) =
        if a = b then
            a
        else
            let r = max a.Length b.Length

            Array.init r (fun i ->
                let da = if i < r - a.Length then 1 else a.[i - (r - a.Length)]
                let db = if i < r - b.Length then 1 else b.[i - (r - b.Length)]

                if da = db then
                    da
                elif da = 1 then
                    db
                elif db = 1 then
                    da
                else
                    fail op (sprintf "shapes %s and %s cannot be broadcast together" (show a) (show b)))

    /// Resolves a possibly negative axis against a rank.
    let axis (op: string) (rank: int) (axis: int) =
        let a = if axis < 0 then axis + rank else axis

        if a < 0 || a >= rank then
            fail op (sprintf "axis %d is out of range for a tensor of rank %d" axis rank)

        a

    /// Splits a shape around an axis into (outer, size, inner) element counts.
    let splitAt (shape: int[]) (axis: int) =
        let mutable outer = 1

        for i in 0 .. axis - 1 do
            outer <- outer * shape.[i]

        let mutable inner = 1

        for i in axis + 1 .. shape.Length - 1 do
            inner <- inner * shape.[i]

        outer, shape.[axis], inner

    /// Replaces the size of one axis.
    let withAxis (shape: int[]) (axis: int) (size: int) =
        let s = Array.copy shape
        s.[axis] <- size
        s

    /// Removes one axis.
    let removeAxis (shape: int[]) (axis: int) = Array.append shape.[.. axis - 1] shape.[axis + 1 ..]
