namespace Maac.Tensors.Cpu

open System
open System.Collections.Concurrent
open System.Threading
open Maac.Tensors

/// Reuses large float arrays once the garbage collector has found their tensors dead.
/// RL workloads allocate the same few sizes over and over; handing the memory back warm avoids
/// fresh large-object allocations (page faults, full collections) on every operation.
module internal StoragePool =
    /// Arrays shorter than this are ordinary garbage-collected arrays.
    [<Literal>]
    let MinPooledLength = 2048

    /// At most this many bytes wait in the pool; beyond it arrays are left to the collector.
    let private capacityBytes = 1L <<< 30

    /// After this many bytes of misses, a young-generation collection is requested: dead tensors of
    /// earlier steps are then found and their arrays come back, instead of fresh memory being taken.
    let private missBytesBeforeCollect = 128L <<< 20

    let private buckets = ConcurrentDictionary<int, ConcurrentStack<float32[]>>()
    let mutable private pooledBytes = 0L
    let mutable private missedBytes = 0L

    let private miss (n: int) =
        if Interlocked.Add(&missedBytes, 4L * int64 n) > missBytesBeforeCollect then
            Interlocked.Exchange(&missedBytes, 0L) |> ignore
            GC.Collect(2, GCCollectionMode.Forced, true, false)
            GC.WaitForPendingFinalizers()

        GC.AllocateUninitializedArray<float32> n

    /// An array of length n with unspecified contents.
    let rent (n: int) =
        if n < MinPooledLength then
            GC.AllocateUninitializedArray<float32> n
        else
            match buckets.TryGetValue n with
            | true, stack ->
                match stack.TryPop() with
                | true, a ->
                    Interlocked.Add(&pooledBytes, -(4L * int64 n)) |> ignore
                    a
                | _ -> miss n
            | _ -> miss n

    /// Takes back an array nobody references any more.
    let give (a: float32[]) =
        let bytes = 4L * int64 a.Length

        if Interlocked.Add(&pooledBytes, bytes) <= capacityBytes then
            buckets.GetOrAdd(a.Length, fun _ -> ConcurrentStack<float32[]>()).Push a
        else
            Interlocked.Add(&pooledBytes, -bytes) |> ignore

/// The storage behind one or more CPU tensors (reshaped tensors share it). When the last tensor
/// using it is collected, a large array goes back to the pool; when the release scope it was made in ends
/// (IReleasingBackend), it is released at once instead, and its tensors refuse to be used.
[<Sealed; AllowNullLiteral>]
type internal CpuStorage private (data: float32[]) =
    member _.Data = data
    /// Set when a release scope gave the array back.
    member val Released = false with get, set
    /// Set while a release scope is asked to keep the storage.
    member val Kept = false with get, set

    override s.Finalize() =
        if not s.Released then
            StoragePool.give data

    interface IReleasableBlock with
        member s.Kept
            with get () = s.Kept
            and set v = s.Kept <- v

        member s.Release() =
            s.Released <- true
            GC.SuppressFinalize s

            if data.Length >= StoragePool.MinPooledLength then
                StoragePool.give data

    /// Storage for an array (only pooled sizes keep their finaliser).
    static member Of(data: float32[]) =
        let s = new CpuStorage(data)

        if data.Length < StoragePool.MinPooledLength then
            GC.SuppressFinalize s

        s
