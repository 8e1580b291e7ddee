namespace Maac.Tensors.Cpu

#nowarn "9"

open System
open System.Runtime.Intrinsics
open Microsoft.FSharp.NativeInterop
open Maac.Tensors

/// TanhGaussianFormulas on sixteen lanes: each lane has the bits of the scalar formula (the same float operations in
/// the same order, exp and tanh from LibmVector; only where LibmVector.Enabled).
module internal TanhGaussianLanes =
    type private V = Vector512<float32>

    let inline private c (v: float32) = Vector512.Create v

    /// TanhGaussianFormulas.LogStd: the raw value clamped to [lo, hi].
    let logStd (r: V) (lo: float32) (hi: float32) = Vector512.Min(Vector512.Max(r, c lo), c hi)

    /// TanhGaussianFormulas.Unsquashed: u = m + σ·e.
    let unsquashed (m: V) (sigma: V) (e: V) = m + sigma * e

    /// TanhGaussianFormulas.LogProbTermAt: −e²/2 − ℓ − log(2π)/2 − 2·(log 2 − u − softplus(−2u)).
    let logProbTermAt (ls: V) (u: V) (e: V) =
        c (-0.5f) * e * e
        - ls
        - c TanhGaussianFormulas.HalfLog2Pi
        - c 2.0f * (c 0.693147181f - u - LaneMath.softplus (c (-2.0f) * u))

    /// TanhGaussianFormulas.MeanGradAt: gA·(1 − a²) + gL·2a.
    let meanGradAt (a: V) (gA: V) (gL: V) = gA * (V.One - a * a) + gL * c 2.0f * a

    /// TanhGaussianFormulas.LogStdGradAt: dL/dm·σ·e − gL inside [lo, hi], zero outside.
    let logStdGradAt (r: V) (lo: float32) (hi: float32) (meanGrad: V) (sigma: V) (e: V) (gL: V) =
        let inside =
            Vector512.BitwiseAnd(Vector512.GreaterThanOrEqual(r, c lo), Vector512.LessThanOrEqual(r, c hi))

        Vector512.ConditionalSelect(inside, meanGrad * sigma * e - gL, V.Zero)

    /// TanhGaussianFormulas.NoiseGradAt: dL/dm·σ − gL·e.
    let noiseGradAt (meanGrad: V) (sigma: V) (e: V) (gL: V) = meanGrad * sigma - gL * e

/// CPU kernels of fused tanh-Gaussian sampling and its gradient (formulas in TanhGaussianFormulas), row-parallel:
/// sixteen elements at a time by TanhGaussianLanes where LibmVector.InUse, else element by element.
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
                if LibmVector.InUse then
                    // Each row's log-density sums its terms in order, as the element-by-element loop does.
                    let terms = NativePtr.stackalloc<float32> 16
                    let mutable total = 0.0f

                    HeadLanes.forRuns h a [||] [||] [||] (r0 * a) (count * a) (fun k n m r _ _ _ ->
                        let x = Elementwise.load512 e k (k + n)
                        let ls = TanhGaussianLanes.logStd r b.Lo b.Hi
                        let u = TanhGaussianLanes.unsquashed m (LibmVector.exp ls) x
                        Elementwise.store512 (LibmVector.tanh u) action k (k + n)
                        (TanhGaussianLanes.logProbTermAt ls u x).Store terms

                        HeadLanes.forElements k n a (fun at row column ->
                            total <- total + NativePtr.get terms (at - k)

                            if column = a - 1 then
                                logProb.[row] <- total
                                total <- 0.0f))
                else
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
                if LibmVector.InUse then
                    let result = NativePtr.stackalloc<float32> 32

                    HeadLanes.forRuns h a [||] [||] gl (r0 * a) (count * a) (fun k n m r _ _ gL ->
                        let x = Elementwise.load512 e k (k + n)
                        let gA = Elementwise.load512 ga k (k + n)
                        // dL/dm and σ are shared by the gradients (the formulas' own steps, computed once).
                        let sigma = LibmVector.exp (TanhGaussianLanes.logStd r lo hi)
                        let action = LibmVector.tanh (TanhGaussianLanes.unsquashed m sigma x)
                        let meanGrad = TanhGaussianLanes.meanGradAt action gA gL

                        if g.WrtNoise then
                            Elementwise.store512 (TanhGaussianLanes.noiseGradAt meanGrad sigma x gL) d k (k + n)
                        else
                            meanGrad.Store result
                            (TanhGaussianLanes.logStdGradAt r lo hi meanGrad sigma x gL).Store(NativePtr.add result 16)

                            HeadLanes.forElements k n a (fun at row column ->
                                d.[row * 2 * a + column] <- NativePtr.get result (at - k)
                                d.[row * 2 * a + a + column] <- NativePtr.get result (16 + at - k)))
                else
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
