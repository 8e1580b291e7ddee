namespace Maac.Tensors.Cpu

open System
open System.Threading.Tasks

/// Settings of the managed CPU backend.
type CpuSettings private () =
    static let mutable threads = Environment.ProcessorCount

    /// Threads the CPU backend may use (default: the processor count). Results are bit-identical
    /// for every value: work is split into pieces whose arithmetic does not depend on the split.
    static member Threads
        with get () = threads
        and set (v: int) =
            if v < 1 then
                invalidArg "Threads" (sprintf "thread count must be at least 1, got %d" v)

            threads <- v

/// Background threads that run the pieces of one loop at a time beside the calling thread, with no allocation per
/// loop (Parallel.For allocates tasks and loop state on every call). Pieces are claimed one at a time by whichever
/// thread gets to them, and the caller waits for the pieces, not for the helpers: when the processor is busy and a
/// helper is not scheduled in time, the caller runs them itself. A call made while the team is busy (from inside a
/// piece, or from another thread) returns false and its caller runs the loop alone.
[<Sealed>]
type internal WorkerTeam(helpers: int) =
    /// The most pieces one loop may have (its count and next piece share one 64-bit word).
    static let maxPieces = 1 <<< 24
    let wake = new Threading.SemaphoreSlim(0)
    let finished = new Threading.ManualResetEventSlim(false, 1000)
    // The loop being run: `claims` holds its piece count (bits 24-47) and the next piece to hand out (bits 0-23). A
    // piece is claimed by a compare-exchange on the whole word, so a helper woken late can only claim a piece of the
    // loop running then, and reads that loop's body after its claim (TryRun writes the body before it publishes the
    // word, and no later loop starts before the piece is done).
    let mutable claims = 0L
    let mutable body: int -> unit = ignore
    let mutable completed = 0
    let mutable failure: Runtime.ExceptionServices.ExceptionDispatchInfo = null
    let mutable busy = 0

    let countOf (word: int64) = int ((word >>> 24) &&& 0xFFFFFFL)
    let nextOf (word: int64) = int (word &&& 0xFFFFFFL)

    /// The next piece of the running loop, or -1 when none is left.
    let claim () =
        let mutable piece = -2

        while piece = -2 do
            let word = Threading.Volatile.Read &claims

            if nextOf word >= countOf word then
                piece <- -1
            elif Threading.Interlocked.CompareExchange(&claims, word + 1L, word) = word then
                piece <- nextOf word

        piece

    /// Runs pieces until none is left to claim. The first exception stops the handing out of pieces (the unclaimed
    /// ones count as done) and is kept; the thread that completes the last piece sets `finished`.
    let work () =
        let mutable piece = claim ()

        while piece >= 0 do
            try
                body piece
            with e ->
                Threading.Interlocked.CompareExchange(&failure, Runtime.ExceptionServices.ExceptionDispatchInfo.Capture e, null)
                |> ignore

                let count = countOf (Threading.Volatile.Read &claims)
                let word = Threading.Interlocked.Exchange(&claims, (int64 count <<< 24) ||| int64 count)
                Threading.Interlocked.Add(&completed, count - nextOf word) |> ignore

            if Threading.Interlocked.Increment &completed = countOf (Threading.Volatile.Read &claims) then
                finished.Set()

            piece <- claim ()

    do
        for h in 1..helpers do
            let helper =
                Threading.Thread(
                    (fun () ->
                        while true do
                            wake.Wait()
                            work ()),
                    IsBackground = true,
                    Name = sprintf "maac-cpu-%d" h
                )

            helper.Start()

    /// Helper threads (besides the caller).
    member _.Helpers = helpers

    /// f i for i in 0..n-1 on the team and the calling thread, raising the first exception of any piece; false
    /// (nothing run) when the team is busy or the loop has more pieces than one loop may have.
    member _.TryRun(n: int, f: int -> unit) =
        if n <= 0 then
            true
        elif n >= maxPieces || Threading.Interlocked.CompareExchange(&busy, 1, 0) <> 0 then
            false
        else
            try
                finished.Reset()
                body <- f
                completed <- 0
                failure <- null
                Threading.Volatile.Write(&claims, int64 n <<< 24)
                wake.Release(helpers) |> ignore
                work ()
                finished.Wait()

                if not (isNull failure) then
                    failure.Throw()
            finally
                body <- ignore
                Threading.Volatile.Write(&busy, 0)

            true

/// Runs independent pieces of work on the configured number of threads.
module internal Workers =
    /// One team per thread count used so far (a count set again finds its team; each team's helpers wait, blocked,
    /// while another count is in force).
    let private teams = Collections.Concurrent.ConcurrentDictionary<int, WorkerTeam>()

    /// The team for a thread count: threads - 1 helpers beside the caller.
    let teamFor (threads: int) =
        match teams.TryGetValue threads with
        | true, t -> t
        | _ -> lock teams (fun () -> teams.GetOrAdd(threads, fun n -> WorkerTeam(n - 1)))

    /// body i for i in 0..count-1 on the team; on this thread when the team is busy.
    let runOnTeam (count: int) (body: int -> unit) =
        if not ((teamFor CpuSettings.Threads).TryRun(count, body)) then
            for i in 0 .. count - 1 do
                body i

    /// body i for i in 0..count-1; in parallel when worthwhile. Pieces must not depend on one another. Inlined, so
    /// that the work run on this thread alone (most of a step's small pieces) allocates no closure.
    let inline forEach (count: int) (parallelWorthIt: bool) ([<InlineIfLambda>] body: int -> unit) =
        if count <= 1 || not parallelWorthIt || CpuSettings.Threads <= 1 then
            for i in 0 .. count - 1 do
                body i
        else
            runOnTeam count (fun i -> body i)

    /// Splits [0, n) into fixed chunks (the same for every thread count) and runs body start length on each.
    let inline forChunks (n: int) (chunk: int) ([<InlineIfLambda>] body: int -> int -> unit) =
        let pieces = (n + chunk - 1) / chunk

        forEach pieces (n >= 2 * chunk) (fun p ->
            let s = p * chunk
            body s (min chunk (n - s)))
