namespace Maac.Tensors.Cpu

open System
open Maac.Tensors

/// What a CPU kernel of a fused operation needs from the CPU backend: its tensors' arrays, and new ones.
type internal ICpuArrays =
    /// The values of a CPU tensor (checked live).
    abstract Data: x: RawTensor -> float32[]
    /// A pooled array of at least `length` elements (not cleared).
    abstract Alloc: length: int -> float32[]
    /// A tensor over an array from Alloc.
    abstract Wrap: data: float32[] * shape: int[] -> RawTensor

/// A CPU kernel of a fused operation, bound to the CPU backend's arrays when the backend lists it.
type internal CpuKernel = { Bind: ICpuArrays -> FusedKernelEntry }

/// CPU kernels of fused operations, written on arrays.
module internal CpuFusedKernel =
    /// A kernel for op: run gets the attributes, the inputs' arrays and shapes, and the outputs' arrays (allocated
    /// with the operation's output shapes, not cleared: the kernel writes every element). The CPU backend binds it
    /// to its arrays (CpuBackend lists its kernels).
    let define (op: FusedOp<'A>) (run: 'A -> float32[][] -> int[][] -> float32[][] -> unit) =
        {
            Bind =
                fun cpu ->
                    FusedKernelEntry.Create(
                        op,
                        fun attributes inputs shapes ->
                            let outputs = shapes |> Array.map (fun s -> cpu.Alloc(Shape.numel s))
                            run attributes (inputs |> Array.map cpu.Data) (inputs |> Array.map (fun x -> x.Shape)) outputs
                            let result = Array.map2 (fun data shape -> cpu.Wrap(data, shape)) outputs shapes
                            // The inputs' pooled arrays stay theirs until the kernel reading them has finished.
                            GC.KeepAlive inputs
                            result
                    )
        }
