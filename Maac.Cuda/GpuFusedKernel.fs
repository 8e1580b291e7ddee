namespace Maac.Cuda

open System
open ILGPU
open ILGPU.Runtime
open Maac.Tensors

/// What a GPU kernel of a fused operation needs from the GPU backend.
type internal IGpuDevice =
    /// The backend (for generic operations a kernel builds on, such as the product).
    abstract Backend: IBackend
    /// The contiguous view of one of this backend's tensors (checked live).
    abstract View: x: RawTensor -> ArrayView<float32>
    /// A new uninitialised tensor and its view.
    abstract Alloc: shape: int[] -> struct (ArrayView<float32> * RawTensor)
    /// Queues a kernel over `count` elements on the backend's stream (nothing when count is 0).
    abstract Launch: count: int * run: (Index1D -> unit) -> unit

/// A GPU kernel of a fused operation: loaded for an accelerator and bound to its backend when the backend lists it.
type internal GpuKernel = { Bind: Accelerator -> IGpuDevice -> FusedKernelEntry }

/// GPU kernels of fused operations.
module internal GpuFusedKernel =
    /// A kernel for op: load compiles its ILGPU kernels for the accelerator (once per backend) and returns the
    /// function that, given the device, the attributes, the inputs (checked) and the output shapes, queues them and
    /// returns the outputs.
    let define (op: FusedOp<'A>) (load: Accelerator -> IGpuDevice -> 'A -> RawTensor[] -> int[][] -> RawTensor[]) =
        {
            Bind =
                fun accelerator ->
                    let run = load accelerator

                    fun device ->
                        FusedKernelEntry.Create(
                            op,
                            fun attributes inputs shapes ->
                                let outputs = run device attributes inputs shapes
                                // The inputs' buffers must not return to the pool before the kernels reading them are queued.
                                GC.KeepAlive inputs
                                outputs
                        )
        }
