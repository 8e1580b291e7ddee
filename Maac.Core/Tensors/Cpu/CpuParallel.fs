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
type internal WorkerTeam(helpers: int, pieceCounted: Action) =
    /// The most claims one loop may have (its count and next claim share one 64-bit word).
    static let maxClaims = 1 <<< 24
    let wake = new Threading.SemaphoreSlim(0)
    let finished = new Threading.ManualResetEventSlim(false, 1000)
    // The loop being run: `claims` holds its claim count (bits 24-47) and the next claim to hand out (bits 0-23); a
    // claim is `perClaim` consecutive pieces of the loop's `pieces`. A claim is taken by a compare-exchange on the
    // whole word, so a helper woken late can only claim part of the loop running then, and reads that loop's body
    // and sizes after its claim (TryRun writes them before it publishes the word, and no later loop starts before
    // the claim is done).
    let mutable claims = 0L
    let mutable body: int -> unit = ignore
    let mutable pieces = 0
    let mutable perClaim = 1
    let mutable completed = 0
    let mutable failure: Runtime.ExceptionServices.ExceptionDispatchInfo = null
    let mutable busy = 0

    let countOf (word: int64) = int ((word >>> 24) &&& 0xFFFFFFL)
    let nextOf (word: int64) = int (word &&& 0xFFFFFFL)

    /// The word as it was when this thread took the next claim of the running loop (the claim is its nextOf, the
    /// loop's claim count its countOf), or -1 when none is left.
    let claim () =
        let mutable claimed = -2L

        while claimed = -2L do
            let word = Threading.Volatile.Read &claims

            if nextOf word >= countOf word then
                claimed <- -1L
            elif Threading.Interlocked.CompareExchange(&claims, word + 1L, word) = word then
                claimed <- word

        claimed

    /// Runs claims (each its consecutive pieces) until none is left. The first exception stops the handing out of
    /// claims (the untaken ones count as done) and is kept; the thread that completes the last claim sets `finished`.
    /// A claim's completion is counted against the claim count of the loop it was taken from, never against `claims`
    /// read afresh: by then a helper that completed a claim other than the last may see a later loop, and were its
    /// count equal to that loop's claim count it would set `finished` for a loop whose claims are still running.
    let work () =
        let mutable claimed = claim ()

        while claimed >= 0L do
            let count = countOf claimed

            try
                let first = nextOf claimed * perClaim

                for i in first .. min pieces (first + perClaim) - 1 do
                    body i
            with e ->
                Threading.Interlocked.CompareExchange(&failure, Runtime.ExceptionServices.ExceptionDispatchInfo.Capture e, null)
                |> ignore

                let word = Threading.Interlocked.Exchange(&claims, (int64 count <<< 24) ||| int64 count)
                Threading.Interlocked.Add(&completed, count - nextOf word) |> ignore

            let doneSoFar = Threading.Interlocked.Increment &completed

            if not (isNull pieceCounted) then
                pieceCounted.Invoke()

            if doneSoFar = count then
                finished.Set()

            claimed <- claim ()

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

    /// A team of `helpers` background threads. (The other constructor also takes an action that each thread runs
    /// after counting a claim done and before seeing whether it was its loop's last: a test holds a helper there, as
    /// the scheduler can.)
    new(helpers: int) = WorkerTeam(helpers, null)

    /// Helper threads (besides the caller).
    member _.Helpers = helpers

    /// f i for i in 0..n-1 on the team and the calling thread, handed out in claims of `piecesPerClaim`
    /// consecutive pieces, raising the first exception of any piece; false (nothing run) when the team is busy or
    /// the loop has more claims than one loop may have.
    member _.TryRun(n: int, piecesPerClaim: int, f: int -> unit) =
        let claimCount =
            if n <= 0 then
                0
            else
                (n + piecesPerClaim - 1) / piecesPerClaim

        if claimCount = 0 then
            true
        elif claimCount >= maxClaims || Threading.Interlocked.CompareExchange(&busy, 1, 0) <> 0 then
            false
        else
            try
                finished.Reset()
                body <- f
                pieces <- n
                perClaim <- piecesPerClaim
                completed <- 0
                failure <- null
                Threading.Volatile.Write(&claims, int64 claimCount <<< 24)
                wake.Release(helpers) |> ignore
                work ()
                finished.Wait()

                if not (isNull failure) then
                    failure.Throw()
            finally
                body <- ignore
                Threading.Volatile.Write(&busy, 0)

            true

    /// f i for i in 0..n-1 on the team and the calling thread, one piece per claim (see the other overload).
    member this.TryRun(n: int, f: int -> unit) = this.TryRun(n, 1, f)

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

    /// The most claims a loop is handed out in, per thread: a claim runs consecutive pieces, so a loop of many small
    /// pieces (packed panels, chunks of 16,384 values) updates the team's two shared counters once per claim, not per
    /// piece, while a thread that starts late still finds claims left to share.
    let ClaimsPerThread = 4

    /// The claims of a loop of count pieces on `threads` threads: claim c runs pieces [c·perClaim, (c+1)·perClaim).
    let claimsOf (count: int) (threads: int) =
        let cap = ClaimsPerThread * threads
        let perClaim = if count <= cap then 1 else (count + cap - 1) / cap
        struct ((count + perClaim - 1) / perClaim, perClaim)

    /// body i for i in 0..count-1 on the team; on this thread when the team is busy.
    let runOnTeam (count: int) (body: int -> unit) =
        let threads = CpuSettings.Threads
        let struct (_, perClaim) = claimsOf count threads

        if not ((teamFor threads).TryRun(count, perClaim, body)) then
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
