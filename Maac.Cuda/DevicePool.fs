namespace Maac.Cuda

open Maac

open System
open ILGPU
open ILGPU.Runtime
open ILGPU.Runtime.Cuda
open ILGPU.Runtime.CPU
open ILGPU.Algorithms
open Maac.Tensors

/// A buffer lent by the pool, and whether it has come back (so that it comes back once).
[<Sealed; AllowNullLiteral>]
type internal Lease(buffer: MemoryBuffer1D<float32, Stride1D.Dense>) =
    member _.Buffer = buffer
    member val Returned = false with get, set

/// The device buffer behind one tensor and its reshaped views: the pool watches it through a weak handle, and
/// takes its buffer back once it is unreachable, or when the release scope it was made in ends (release gives
/// it back through the function the pool provides).
[<Sealed; AllowNullLiteral>]
type internal DeviceBlock(lease: Lease, release: DeviceBlock -> unit) =
    member _.Lease = lease
    member _.Buffer = lease.Buffer
    /// Set when a release scope gave the buffer back: the tensor must not be used any more.
    member val Released = false with get, set
    /// Set while a release scope is asked to keep the block.
    member val Kept = false with get, set

    interface IReleasableBlock with
        member b.Kept
            with get () = b.Kept
            and set v = b.Kept <- v

        member b.Release() = release b

/// Device buffers kept for reuse, by length: allocating device memory is slow (about 9 µs on an H100) and
/// freeing it waits for the device. A buffer lent to a tensor is watched through a weak handle on the tensor's
/// block and returns when a sweep finds the block collected. Sweeps follow garbage collections: any that ran
/// since the last sweep, or, when a rent finds no free buffer and `CollectAfter` rents have passed, a forced
/// young-generation collection. No finaliser is involved (finalising each tensor cost about 5.5 µs on the H100
/// host). All work runs on one stream, in order, so a buffer handed out again is written only after the kernels
/// that read it before have run. At most `capacity` floats are kept free; beyond that buffers are freed.
[<Sealed; AllowNullLiteral>]
type DevicePool(accelerator: Accelerator, capacity: int64) =
    let gate = obj ()

    let free =
        Collections.Generic.Dictionary<int64, Collections.Generic.Stack<MemoryBuffer1D<float32, Stride1D.Dense>>>()

    let lent = Collections.Generic.List<struct (Runtime.InteropServices.GCHandle * Lease)>()
    let mutable kept = 0L
    let mutable hits = 0L
    let mutable misses = 0L
    let mutable collections = 0L
    let mutable rentsSinceCollection = 0
    let mutable collectionsSeen = GC.CollectionCount 0

    let allocate (length: int64) =
        misses <- misses + 1L
        let b = accelerator.Allocate1D<float32>(length)
        // The pool decides when a buffer is freed: ILGPU's own finaliser must not free it behind the pool's back.
        GC.SuppressFinalize b
        GC.SuppressFinalize (b.View :> IArrayView).Buffer // the raw allocation behind the typed buffer has its own finaliser
        b

    let putBack (buffer: MemoryBuffer1D<float32, Stride1D.Dense>) =
        if not buffer.IsDisposed then
            if kept + buffer.Length <= capacity then
                kept <- kept + buffer.Length

                match free.TryGetValue buffer.Length with
                | true, stack -> stack.Push buffer
                | _ ->
                    let stack = Collections.Generic.Stack()
                    stack.Push buffer
                    free.[buffer.Length] <- stack
            else
                buffer.Dispose()

    /// Takes back the buffers of collected blocks.
    let sweep () =
        collectionsSeen <- GC.CollectionCount 0
        let mutable alive = 0

        for i in 0 .. lent.Count - 1 do
            let struct (handle, lease) = lent.[i]

            if isNull handle.Target then
                handle.Free()

                if not lease.Returned then
                    lease.Returned <- true
                    putBack lease.Buffer
            else
                lent.[alive] <- lent.[i]
                alive <- alive + 1

        lent.RemoveRange(alive, lent.Count - alive)

    let tryTake (length: int64) =
        match free.TryGetValue length with
        | true, stack when stack.Count > 0 ->
            kept <- kept - length
            hits <- hits + 1L
            Some(stack.Pop())
        | _ -> None

    /// A buffer of exactly `length` floats, reused when one is free; the caller returns it (Return) or hands it
    /// to a block (Track).
    member _.Rent(length: int64) =
        // Buffers of blocks collected since the last sweep, then of those a forced collection finds.
        let reclaimed () =
            if GC.CollectionCount 0 <> collectionsSeen then
                sweep ()

            match tryTake length with
            | None when rentsSinceCollection >= DevicePool.CollectAfter ->
                rentsSinceCollection <- 0
                collections <- collections + 1L
                GC.Collect(1, GCCollectionMode.Forced, true)
                sweep ()
                tryTake length
            | taken -> taken

        lock gate (fun () ->
            rentsSinceCollection <- rentsSinceCollection + 1

            match tryTake length |> Option.orElseWith reclaimed with
            | Some b -> b
            | None -> allocate length)

    /// Takes back a buffer no tensor uses.
    member _.Return(buffer: MemoryBuffer1D<float32, Stride1D.Dense>) = lock gate (fun () -> putBack buffer)

    /// Watches a block: its buffer comes back once the block is collected.
    member internal _.Track(block: DeviceBlock) =
        lock gate (fun () ->
            lent.Add(struct (Runtime.InteropServices.GCHandle.Alloc(block, Runtime.InteropServices.GCHandleType.Weak), block.Lease)))

    /// Gives a block's buffer back now (its release scope ended); the block is marked released.
    member internal _.Release(block: DeviceBlock) =
        lock gate (fun () ->
            block.Released <- true

            if not block.Lease.Returned then
                block.Lease.Returned <- true
                putBack block.Buffer)

    /// Rents served from free buffers, rents that allocated, and the collections run to get buffers back.
    member _.Hits = hits
    member _.Misses = misses
    member _.Collections = collections

    /// Rents after which a rent that finds no free buffer runs a collection first (see Rent): 1024 unless the
    /// environment variable MAAC_GPU_COLLECT_AFTER gives another number. Fewer collections cost less host time
    /// and more device allocations.
    static member val CollectAfter =
        match Int32.TryParse(Environment.GetEnvironmentVariable "MAAC_GPU_COLLECT_AFTER") with
        | true, n when n > 0 -> n
        | _ -> 1024 with get, set
