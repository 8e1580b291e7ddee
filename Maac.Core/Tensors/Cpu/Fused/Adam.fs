namespace Maac.Tensors.Cpu

open System.Runtime.Intrinsics
open Maac.Tensors

/// The CPU kernel of Adam's update: one SIMD pass over the parameter, its gradient and moments.
module internal AdamCpu =
    let step =
        CpuFusedKernel.define AdamUpdate.step (fun h inputs _ outputs ->
            let w, g, m, v = inputs.[0], inputs.[1], inputs.[2], inputs.[3]
            let w', m', v' = outputs.[0], outputs.[1], outputs.[2]
            let b1, b2 = Vector256.Create h.Beta1, Vector256.Create h.Beta2
            let a1, a2 = Vector256.Create(1.0f - h.Beta1), Vector256.Create(1.0f - h.Beta2)
            let lr, eps = Vector256.Create h.LearningRate, Vector256.Create h.Epsilon
            let ic1, ic2 = Vector256.Create(1.0f / h.Correction1), Vector256.Create(1.0f / h.Correction2)

            Workers.forChunks w.Length Elementwise.Chunk (fun start len ->
                let stop = start + len
                let mutable i = start

                while i < stop do
                    let gv = Elementwise.load g i stop
                    let mv = b1 * Elementwise.load m i stop + a1 * gv
                    let vv = b2 * Elementwise.load v i stop + a2 * gv * gv
                    Elementwise.store mv m' i stop
                    Elementwise.store vv v' i stop
                    Elementwise.store (Elementwise.load w i stop - lr * (mv * ic1) / (Vector256.Sqrt(vv * ic2) + eps)) w' i stop
                    i <- i + Vector256<float32>.Count))
