namespace Maac.Cuda

open System
open System.Runtime.InteropServices

/// The CUDA driver calls used for asynchronous uploads (ILGPU's copies from ordinary host arrays are
/// synchronous: the driver waits for all queued work before copying from pageable memory).
module internal CudaDriver =
    [<Literal>]
    let Library = "libcuda.so.1"

    [<DllImport(Library)>]
    extern int cuMemAllocHost_v2(nativeint& pointer, unativeint bytes)

    [<DllImport(Library)>]
    extern int cuMemFreeHost(nativeint pointer)

    [<DllImport(Library)>]
    extern int cuMemcpyHtoDAsync_v2(uint64 destination, nativeint source, unativeint bytes, nativeint stream)

    let check (call: string) (status: int) =
        if status <> 0 then
            raise (InvalidOperationException(sprintf "%s failed with CUDA error %d" call status))

/// A ring of page-locked host memory through which small uploads are queued on the stream without waiting:
/// values are copied into the ring and the device copy is queued behind the kernels before it. When the ring
/// wraps, the stream is synchronised first, so a region is rewritten only after its earlier copy has run.
[<Sealed>]
type internal StagingRing(capacity: int64, stream: nativeint, synchronize: unit -> unit) =
    let start =
        let mutable p = 0n
        CudaDriver.cuMemAllocHost_v2 (&p, unativeint capacity) |> CudaDriver.check "cuMemAllocHost"
        p

    let mutable offset = 0L
    let mutable disposed = false

    /// Reserves `bytes` of the ring (aligned to 256 bytes), waiting for the device when it wraps; None when
    /// the upload is larger than the ring.
    member private this.Reserve(bytes: int64) =
        if bytes > capacity then
            None
        else
            if disposed then
                raise (ObjectDisposedException "StagingRing")

            if offset + bytes > capacity then
                synchronize ()
                offset <- 0L

            let at = start + nativeint offset
            offset <- offset + ((bytes + 255L) &&& ~~~255L)
            Some at

    /// Queues the upload of `count` four-byte values, written into the ring by `write`, to the device address
    /// `destination`; false when they do not fit the ring.
    member private this.Queue(count: int, destination: nativeint, write: nativeint -> unit) =
        lock this (fun () ->
            let bytes = int64 count * 4L

            match this.Reserve bytes with
            | Some at ->
                write at

                CudaDriver.cuMemcpyHtoDAsync_v2 (uint64 destination, at, unativeint bytes, stream)
                |> CudaDriver.check "cuMemcpyHtoDAsync"

                true
            | None -> false)

    /// Queues the upload of `values` to the device address `destination`; false when they do not fit the ring.
    member this.Upload(values: float32[], destination: nativeint) =
        this.Queue(values.Length, destination, fun at -> Marshal.Copy(values, 0, at, values.Length))

    /// As Upload, for integers.
    member this.Upload(values: int[], destination: nativeint) =
        this.Queue(values.Length, destination, fun at -> Marshal.Copy(values, 0, at, values.Length))

    interface IDisposable with
        member _.Dispose() =
            if not disposed then
                disposed <- true
                CudaDriver.cuMemFreeHost start |> ignore
