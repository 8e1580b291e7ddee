namespace Maac.Tensors.Cpu

open System
open System.Collections.Concurrent
open System.Threading
open Maac.Tensors

/// Arrays of one length waiting in a SizedArrayPool, and when that length was last asked for. A stack under a lock:
/// pushing allocates nothing once the stack has grown (a concurrent stack allocates a node per push).
[<Sealed>]
type internal PoolBucket() =
    let arrays = Collections.Generic.Stack<float32[]>()

    /// Adds a waiting array.
    member _.Push(a: float32[]) = lock arrays (fun () -> arrays.Push a)

    /// A waiting array, or null when there is none.
    member _.TryPop() =
        lock arrays (fun () ->
            match arrays.TryPop() with
            | true, a -> a
            | _ -> null)

    /// The pool's request count when this length was last asked for (0: never).
    member val LastAsked = 0L with get, set

/// A bounded pool of float arrays by exact length. When a returned array would take the pool past its capacity, the
/// lengths asked for least recently are dropped first (whole buckets, until the pool is at three quarters of its
/// capacity), so arrays of a workload's current sizes keep their place however many other sizes passed through
/// before: a pool that refused arrays once full would stay full of sizes nobody asks for any more.
[<Sealed>]
type internal SizedArrayPool(capacityBytes: int64) =
    let buckets = ConcurrentDictionary<int, PoolBucket>()
    let newBucket = Func<int, PoolBucket>(fun _ -> PoolBucket())
    let evicting = obj ()
    let mutable pooledBytes = 0L
    let mutable requests = 0L

    let bytesOf (n: int) = 4L * int64 n

    /// Drops whole buckets, least recently asked for first, until the pool holds at most `target` bytes.
    let evictDownTo (target: int64) =
        lock evicting (fun () ->
            let byAge = buckets.Values |> Seq.sortBy (fun b -> b.LastAsked) |> Seq.toArray
            let mutable i = 0

            while Volatile.Read &pooledBytes > target && i < byAge.Length do
                let mutable a = byAge.[i].TryPop()

                while not (isNull a) do
                    Interlocked.Add(&pooledBytes, -(bytesOf a.Length)) |> ignore
                    a <- byAge.[i].TryPop()

                i <- i + 1)

    /// Bytes held by the waiting arrays.
    member _.PooledBytes = Volatile.Read &pooledBytes

    /// A waiting array of length n, or null when there is none; either way n counts as asked for now.
    member _.TryTake(n: int) =
        let bucket = buckets.GetOrAdd(n, newBucket)
        bucket.LastAsked <- Interlocked.Increment &requests

        match bucket.TryPop() with
        | null -> null
        | a ->
            Interlocked.Add(&pooledBytes, -(bytesOf n)) |> ignore
            a

    /// Takes an array back (nobody may reference it any more); an array larger than the whole capacity is left to the
    /// collector.
    member _.Give(a: float32[]) =
        let bytes = bytesOf a.Length

        if bytes <= capacityBytes then
            if Interlocked.Add(&pooledBytes, bytes) > capacityBytes then
                evictDownTo (capacityBytes * 3L / 4L - bytes)

            buckets.GetOrAdd(a.Length, newBucket).Push a

/// Reuses float arrays of 256 elements and more once the garbage collector has found their tensors dead, or their
/// release scope ended. RL workloads allocate the same few sizes over and over; handing the memory back warm avoids
/// fresh large-object allocations (page faults, full collections) and, for per-row vectors of a batch (256 and a few
/// times 256 floats), most of the young-generation collections that pause every thread.
module internal StoragePool =
    /// Arrays shorter than this are ordinary garbage-collected arrays (a batch's per-row vectors are pooled).
    [<Literal>]
    let MinPooledLength = 256

    /// At most 1 GiB waits in the pool.
    let private pool = SizedArrayPool(1L <<< 30)

    /// After this many bytes of misses, a full collection is requested: dead tensors of
    /// earlier steps are then found and their arrays come back, instead of fresh memory being taken.
    let private missBytesBeforeCollect = 128L <<< 20

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
            match pool.TryTake n with
            | null -> miss n
            | a -> a

    /// Takes back an array nobody references any more.
    let give (a: float32[]) = pool.Give a

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
            if not s.Released then
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
