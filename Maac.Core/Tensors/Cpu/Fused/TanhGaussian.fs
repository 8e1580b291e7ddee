namespace Maac.Tensors.Cpu

open System
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
                        // The action and the log-density share ℓ and u (the formulas' own steps, computed once).
                        let ls = TanhGaussianFormulas.LogStd(r, b.Lo, b.Hi)
                        let u = TanhGaussianFormulas.Unsquashed(m, MathF.Exp ls, x)
                        action.[i * a + j] <- MathF.Tanh u
                        total <- total + TanhGaussianFormulas.LogProbTermAt(ls, u, x)

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

                        // dL/dm and σ are shared by the gradients (the formulas' own steps, computed once).
                        let sigma = MathF.Exp(TanhGaussianFormulas.LogStd(r, lo, hi))
                        let a' = MathF.Tanh(TanhGaussianFormulas.Unsquashed(m, sigma, x))
                        let meanGrad = TanhGaussianFormulas.MeanGradAt(a', gA, gL)

                        if g.WrtNoise then
                            d.[i * a + j] <- TanhGaussianFormulas.NoiseGradAt(meanGrad, sigma, x, gL)
                        else
                            d.[i * 2 * a + j] <- meanGrad
                            d.[i * 2 * a + a + j] <- TanhGaussianFormulas.LogStdGradAt(r, lo, hi, meanGrad, sigma, x, gL)))
