namespace Maac.Cuda

open Maac

open System
open ILGPU
open ILGPU.Runtime
open ILGPU.Runtime.Cuda
open ILGPU.Runtime.CPU
open ILGPU.Algorithms
open Maac.Tensors

/// A tensor whose values live in an accelerator's memory buffer (shared between reshaped views).
[<Sealed; AllowNullLiteral>]
type GpuTensor internal (shape: int[], block: DeviceBlock, backend: IBackend) =
    inherit RawTensor(shape)
    member internal _.Block = block
    /// The device buffer (at least one element long).
    member _.Buffer = block.Buffer
    member internal _.View = block.Buffer.View

    /// Raises ObjectDisposedException when the block's release scope has given its buffer back.
    static member internal CheckLive(block: DeviceBlock) =
        if block.Released then
            raise (
                ObjectDisposedException(
                    "GpuTensor",
                    "a GPU tensor was used after its memory was given back: the release scope it was made in ended (Tensor.releasing keeps only what its keep function picks), or a step consumed it (Tensor.replacing)"
                )
            )

    override _.Backend = backend

    override t.ToArray() =
        GpuTensor.CheckLive block
        let all = block.Buffer.GetAsArray1D()

        if all.Length = t.Numel then
            all
        else
            Array.sub all 0 t.Numel
