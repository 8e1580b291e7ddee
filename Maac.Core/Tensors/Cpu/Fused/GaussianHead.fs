namespace Maac.Tensors.Cpu

#nowarn "9"

open System.Runtime.Intrinsics
open Microsoft.FSharp.NativeInterop
open Maac.Tensors

/// GaussianHeadFormulas on sixteen lanes: each lane has the bits of the scalar formula (LaneMath's functions, the
/// same float operations in the same order; only where LibmVector.Enabled).
module internal GaussianHeadLanes =
    type private V = Vector512<float32>

    let private half = Vector512.Create 0.5f

    /// The bounded log-variance v = lo + softplus(hi − softplus(hi − r) − lo) (GaussianHeadFormulas.LogVar).
    let inline private logVar (r: V) (hi: V) (lo: V) = lo + LaneMath.softplus (hi - LaneMath.softplus (hi - r) - lo)

    /// GaussianHeadFormulas.Sample: μ + e^(v/2)·e.
    let sample (mean: V) (r: V) (hi: V) (lo: V) (e: V) = mean + LibmVector.exp (half * logVar r hi lo) * e

    /// GaussianHeadFormulas.NoiseGrad: g·e^(v/2).
    let noiseGrad (r: V) (hi: V) (lo: V) (g: V) = g * LibmVector.exp (half * logVar r hi lo)

    /// GaussianHeadFormulas.RawGrad, MaxGrad or MinGrad (by input) for the samples' gradient g, from the formulas'
    /// shared steps (GradientSteps: the gap hi − r, t, and e^−|·| of each).
    let gradient (input: GaussianHeadInput) (r: V) (hi: V) (lo: V) (e: V) (g: V) =
        let gap = hi - r
        let expNegAbsGap = LaneMath.expNegAbs gap
        let t = hi - LaneMath.softplusFrom gap expNegAbsGap - lo
        let expNegAbsT = LaneMath.expNegAbs t
        let byLogVar = half * LibmVector.exp (half * (lo + LaneMath.softplusFrom t expNegAbsT)) * e
        let gByLogVar = g * byLogVar
        let sigmaT = LaneMath.sigmoidFrom t expNegAbsT

        match input with
        | MaxLogVarInput -> gByLogVar * sigmaT * (V.One - LaneMath.sigmoidFrom gap expNegAbsGap)
        | MinLogVarInput -> gByLogVar * (V.One - sigmaT)
        | _ -> gByLogVar * sigmaT * LaneMath.sigmoidFrom gap expNegAbsGap

/// CPU kernels of fused Gaussian-head sampling and its gradient (formulas in GaussianHeadFormulas), element-parallel:
/// sixteen elements at a time by GaussianHeadLanes where LibmVector.InUse, else element by element.
module internal GaussianHeadCpu =
    /// The samples.
    let sample =
        CpuFusedKernel.define GaussianHead.sample (fun () inputs shapes outputs ->
            let h, hi, lo, e = inputs.[0], inputs.[1], inputs.[2], inputs.[3]
            let d = shapes.[3].[1]
            let dst = outputs.[0]

            Workers.forChunks dst.Length (Elementwise.Chunk / 8) (fun s len ->
                if LibmVector.InUse then
                    HeadLanes.forRuns h d hi lo [||] s len (fun k n mean raw upper lower _ ->
                        let v = GaussianHeadLanes.sample mean raw upper lower (Elementwise.load512 e k (k + n))
                        Elementwise.store512 v dst k (k + n))
                else
                    HeadLanes.forElements s len d (fun k i j ->
                        dst.[k] <- GaussianHeadFormulas.Sample(h.[i * 2 * d + j], h.[i * 2 * d + d + j], hi.[j], lo.[j], e.[k]))))

    /// The gradient in one input: per element of [R, D] for the bounds (which the caller sums over rows) and the
    /// noise; for the head [R, 2D], the samples' gradient for the means, then the raw log-variances'.
    let gradient =
        CpuFusedKernel.define GaussianHead.gradient (fun input inputs shapes outputs ->
            let h, hi, lo, e, gv = inputs.[0], inputs.[1], inputs.[2], inputs.[3], inputs.[4]
            let d = shapes.[3].[1]
            let dst = outputs.[0]
            // Where element (i, j) of [R, D] goes: the head's gradient has the means' first in each row.
            let rawAt i j = if input = HeadInput then i * 2 * d + d + j else i * d + j

            Workers.forChunks gv.Length (Elementwise.Chunk / 8) (fun s len ->
                if input = HeadInput then
                    HeadLanes.forElements s len d (fun k i j -> dst.[i * 2 * d + j] <- gv.[k])

                if LibmVector.InUse then
                    let result = NativePtr.stackalloc<float32> 16

                    HeadLanes.forRuns h d hi lo [||] s len (fun k n _ raw upper lower _ ->
                        let g = Elementwise.load512 gv k (k + n)

                        let v =
                            match input with
                            | NoiseInput -> GaussianHeadLanes.noiseGrad raw upper lower g
                            | _ -> GaussianHeadLanes.gradient input raw upper lower (Elementwise.load512 e k (k + n)) g

                        if input = HeadInput then
                            v.Store result
                            HeadLanes.forElements k n d (fun at row column -> dst.[rawAt row column] <- NativePtr.get result (at - k))
                        else
                            Elementwise.store512 v dst k (k + n))
                else
                    HeadLanes.forElements s len d (fun k i j ->
                        let r, x, gk = h.[i * 2 * d + d + j], e.[k], gv.[k]

                        dst.[rawAt i j] <-
                            match input with
                            | NoiseInput -> GaussianHeadFormulas.NoiseGrad(r, hi.[j], lo.[j], gk)
                            | MaxLogVarInput -> GaussianHeadFormulas.MaxGrad(r, hi.[j], lo.[j], x, gk)
                            | MinLogVarInput -> GaussianHeadFormulas.MinGrad(r, hi.[j], lo.[j], x, gk)
                            | HeadInput -> GaussianHeadFormulas.RawGrad(r, hi.[j], lo.[j], x, gk))))
