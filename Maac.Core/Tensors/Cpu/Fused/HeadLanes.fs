namespace Maac.Tensors.Cpu

#nowarn "9"

open System.Runtime.Intrinsics
open Microsoft.FSharp.NativeInterop

/// Element loops over a distribution head's output: for a head [R, 2D] (each row D first values, then D second values,
/// e.g. means then raw log-variances) and its [R, D] elements k = i·D + j, one element at a time or in sixteen-lane
/// runs of consecutive elements, which may span rows.
module internal HeadLanes =
    /// f k i j for the elements k in [start, start + length) of rows d wide, k = i·d + j: the row and column advanced
    /// with k, not divided out of it for each element.
    let inline forElements (start: int) (length: int) (d: int) ([<InlineIfLambda>] f: int -> int -> int -> unit) =
        let mutable i = start / d
        let mutable j = start % d

        for k in start .. start + length - 1 do
            f k i j
            j <- j + 1

            if j = d then
                j <- 0
                i <- i + 1

    /// f k n first second column0 column1 row for the runs of up to 16 consecutive elements k in [start, start +
    /// length) of [R, D]: k the run's first element, n its length, and lanes of the head's first and second halves, of
    /// byColumn0 and byColumn1 at each element's column, and of byRow at its row (an empty array gives zero lanes).
    /// Lanes past n are zero.
    let inline forRuns
        (head: float32[])
        (d: int)
        (byColumn0: float32[])
        (byColumn1: float32[])
        (byRow: float32[])
        (start: int)
        (length: int)
        ([<InlineIfLambda>] f:
            int -> int -> Vector512<float32> -> Vector512<float32> -> Vector512<float32> -> Vector512<float32> -> Vector512<float32> -> unit)
        =
        let lanes = NativePtr.stackalloc<float32> 80

        for l in 0..79 do
            NativePtr.set lanes l 0.0f

        let lane (buffer: int) = NativePtr.add lanes (16 * buffer)
        let load (buffer: int) = Vector512.Load(lane buffer)
        let hasColumn0 = byColumn0.Length > 0
        let hasColumn1 = byColumn1.Length > 0
        let hasRow = byRow.Length > 0
        let stop = start + length
        let mutable k = start

        while k < stop do
            let n = min 16 (stop - k)

            forElements k n d (fun at i j ->
                let l = at - k
                NativePtr.set (lane 0) l head.[i * 2 * d + j]
                NativePtr.set (lane 1) l head.[i * 2 * d + d + j]

                if hasColumn0 then
                    NativePtr.set (lane 2) l byColumn0.[j]

                if hasColumn1 then
                    NativePtr.set (lane 3) l byColumn1.[j]

                if hasRow then
                    NativePtr.set (lane 4) l byRow.[i])

            // A short last run: the lanes past it would still hold the previous run's values.
            for buffer in 0..4 do
                for l in n..15 do
                    NativePtr.set (lane buffer) l 0.0f

            f k n (load 0) (load 1) (load 2) (load 3) (load 4)
            k <- k + n
