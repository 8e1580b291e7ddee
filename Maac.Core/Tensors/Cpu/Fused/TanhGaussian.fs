namespace Maac.Tensors.Cpu

open Maac.Tensors

/// CPU kernels of fused tanh-Gaussian sampling and its gradient (formulas in TanhGaussianFormulas), row-parallel.
module internal TanhGaussianCpu =
    /// Rows per parallel chunk for rows of a actions.
    let private rowsPerChunk (a: int) = max 1 (Elementwise.Chunk / (8 * max 1 a))

    /// Actions and log-densities.
    let sample =
        CpuFusedKernel.define TanhGaussian.sample (fun b inputs shapes outputs ->
            let h, e = inputs.[0], inputs.[1]
            let n, a = shapes.[1].[0], shapes.[1].[1]
            let action, logProb = outputs.[0], outputs.[1]

            Workers.forChunks n (rowsPerChunk a) (fun r0 count ->
                for i in r0 .. r0 + count - 1 do
                    let mutable total = 0.0f

                    for j in 0 .. a - 1 do
                        let m, r, x = h.[i * 2 * a + j], h.[i * 2 * a + a + j], e.[i * a + j]
                        action.[i * a + j] <- TanhGaussianFormulas.Action(m, r, x, b.Lo, b.Hi)
                        total <- total + TanhGaussianFormulas.LogProbTerm(m, r, x, b.Lo, b.Hi)

                    logProb.[i] <- total))

    /// The gradient in the head or the noise.
    let gradient =
        CpuFusedKernel.define TanhGaussian.gradient (fun g inputs shapes outputs ->
            let h, e, ga, gl = inputs.[0], inputs.[1], inputs.[2], inputs.[3]
            let n, a = shapes.[1].[0], shapes.[1].[1]
            let lo, hi = g.Bounds.Lo, g.Bounds.Hi
            let d = outputs.[0]

            Workers.forChunks n (rowsPerChunk a) (fun r0 count ->
                for i in r0 .. r0 + count - 1 do
                    let gL = gl.[i]

                    for j in 0 .. a - 1 do
                        let m, r, x, gA = h.[i * 2 * a + j], h.[i * 2 * a + a + j], e.[i * a + j], ga.[i * a + j]

                        if g.WrtNoise then
                            d.[i * a + j] <- TanhGaussianFormulas.NoiseGrad(m, r, x, lo, hi, gA, gL)
                        else
                            d.[i * 2 * a + j] <- TanhGaussianFormulas.MeanGrad(m, r, x, lo, hi, gA, gL)
                            d.[i * 2 * a + a + j] <- TanhGaussianFormulas.LogStdGrad(m, r, x, lo, hi, gA, gL)))
