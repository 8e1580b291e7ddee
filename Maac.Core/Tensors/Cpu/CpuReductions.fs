namespace Maac.Tensors.Cpu

open System
open System.Runtime.Intrinsics

/// Vectorised sums and maxima in a fixed order (independent of alignment and threads).
module internal Reductions =
    let sum (x: ReadOnlySpan<float32>) =
        let w = Vector256<float32>.Count
        let mutable a0 = Vector256<float32>.Zero
        let mutable a1 = Vector256<float32>.Zero
        let mutable i = 0

        while i <= x.Length - 2 * w do
            a0 <- a0 + Vector256.Create<float32>(x.Slice(i, w))
            a1 <- a1 + Vector256.Create<float32>(x.Slice(i + w, w))
            i <- i + 2 * w

        let mutable s = Vector256.Sum(a0 + a1)

        while i < x.Length do
            s <- s + x.[i]
            i <- i + 1

        s

    let max (x: ReadOnlySpan<float32>) =
        let w = Vector256<float32>.Count
        let mutable m = Single.NegativeInfinity
        let mutable i = 0

        if x.Length >= w then
            let mutable acc = Vector256.Create<float32>(x.Slice(0, w))
            i <- w

            while i <= x.Length - w do
                acc <- Vector256.Max(acc, Vector256.Create<float32>(x.Slice(i, w)))
                i <- i + w

            for j in 0 .. w - 1 do
                m <- MathF.Max(m, acc.[j])

        while i < x.Length do
            m <- MathF.Max(m, x.[i])
            i <- i + 1

        m

    /// acc[i] += x[i].
    let addInto (acc: Span<float32>) (x: ReadOnlySpan<float32>) =
        let w = Vector256<float32>.Count
        let mutable i = 0

        while i <= acc.Length - w do
            (Vector256.Create<float32>(Span<float32>.op_Implicit(acc.Slice(i, w)))
             + Vector256.Create<float32>(x.Slice(i, w)))
                .CopyTo(acc.Slice(i, w))

            i <- i + w

        while i < acc.Length do
            acc.[i] <- acc.[i] + x.[i]
            i <- i + 1

    /// acc[i] = max(acc[i], x[i]).
    let maxInto (acc: Span<float32>) (x: ReadOnlySpan<float32>) =
        let w = Vector256<float32>.Count
        let mutable i = 0

        while i <= acc.Length - w do
            Vector256
                .Max(Vector256.Create<float32>(Span<float32>.op_Implicit(acc.Slice(i, w))), Vector256.Create<float32>(x.Slice(i, w)))
                .CopyTo(acc.Slice(i, w))

            i <- i + w

        while i < acc.Length do
            acc.[i] <- MathF.Max(acc.[i], x.[i])
            i <- i + 1
