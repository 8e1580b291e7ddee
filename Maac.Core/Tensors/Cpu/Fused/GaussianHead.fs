namespace Maac.Tensors.Cpu

open Maac.Tensors

/// CPU kernels of fused Gaussian-head sampling and its gradient (formulas in GaussianHeadFormulas),
/// element-parallel.
module internal GaussianHeadCpu =
    /// f k i c for the elements k in [start, start + length) of rows `width` wide, k = i·width + c: the row and column
    /// advanced with k, not divided out of it for each element.
    let inline private forElements (start: int) (length: int) (width: int) ([<InlineIfLambda>] f: int -> int -> int -> unit) =
        let mutable i = start / width
        let mutable c = start % width

        for k in start .. start + length - 1 do
            f k i c
            c <- c + 1

            if c = width then
                c <- 0
                i <- i + 1

    /// The samples.
    let sample =
        CpuFusedKernel.define GaussianHead.sample (fun () inputs shapes outputs ->
            let h, hi, lo, e = inputs.[0], inputs.[1], inputs.[2], inputs.[3]
            let d = shapes.[3].[1]
            let dst = outputs.[0]

            Workers.forChunks dst.Length (Elementwise.Chunk / 8) (fun s len ->
                forElements s len d (fun k i j ->
                    dst.[k] <- GaussianHeadFormulas.Sample(h.[i * 2 * d + j], h.[i * 2 * d + d + j], hi.[j], lo.[j], e.[k]))))

    /// The gradient in one input (per row for the bounds).
    let gradient =
        CpuFusedKernel.define GaussianHead.gradient (fun input inputs shapes outputs ->
            let h, hi, lo, e, gv = inputs.[0], inputs.[1], inputs.[2], inputs.[3], inputs.[4]
            let d = shapes.[3].[1]
            let dst = outputs.[0]
            let width = if input = HeadInput then 2 * d else d

            Workers.forChunks dst.Length (Elementwise.Chunk / 8) (fun s len ->
                forElements s len width (fun k i c ->
                    let j = if c < d then c else c - d
                    let r, x, gk = h.[i * 2 * d + d + j], e.[i * d + j], gv.[i * d + j]

                    dst.[k] <-
                        match input with
                        | HeadInput ->
                            if c < d then
                                gk
                            else
                                GaussianHeadFormulas.RawGrad(r, hi.[j], lo.[j], x, gk)
                        | MaxLogVarInput -> GaussianHeadFormulas.MaxGrad(r, hi.[j], lo.[j], x, gk)
                        | MinLogVarInput -> GaussianHeadFormulas.MinGrad(r, hi.[j], lo.[j], x, gk)
                        | NoiseInput -> GaussianHeadFormulas.NoiseGrad(r, hi.[j], lo.[j], gk))))
