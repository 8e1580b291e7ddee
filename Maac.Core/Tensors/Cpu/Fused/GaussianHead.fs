namespace Maac.Tensors.Cpu

open Maac.Tensors

/// CPU kernels of fused Gaussian-head sampling and its gradient (formulas in GaussianHeadFormulas),
/// element-parallel.
module internal GaussianHeadCpu =
    /// The samples.
    let sample =
        CpuFusedKernel.define GaussianHead.sample (fun () inputs shapes outputs ->
            let h, hi, lo, e = inputs.[0], inputs.[1], inputs.[2], inputs.[3]
            let d = shapes.[3].[1]
            let dst = outputs.[0]

            Workers.forChunks dst.Length (Elementwise.Chunk / 8) (fun s len ->
                for k in s .. s + len - 1 do
                    let i, j = k / d, k % d
                    dst.[k] <- GaussianHeadFormulas.Sample(h.[i * 2 * d + j], h.[i * 2 * d + d + j], hi.[j], lo.[j], e.[k])))

    /// The gradient in one input (per row for the bounds).
    let gradient =
        CpuFusedKernel.define GaussianHead.gradient (fun input inputs shapes outputs ->
            let h, hi, lo, e, gv = inputs.[0], inputs.[1], inputs.[2], inputs.[3], inputs.[4]
            let d = shapes.[3].[1]
            let dst = outputs.[0]
            let width = if input = HeadInput then 2 * d else d

            Workers.forChunks dst.Length (Elementwise.Chunk / 8) (fun s len ->
                for k in s .. s + len - 1 do
                    let i, c = k / width, k % width
                    let j = c % d
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
                        | NoiseInput -> GaussianHeadFormulas.NoiseGrad(r, hi.[j], lo.[j], gk)))
