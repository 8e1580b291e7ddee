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

/// Runs independent pieces of work on the configured number of threads.
module internal Workers =
    /// The parallel loop's options for the configured thread count.
    let options () = ParallelOptions(MaxDegreeOfParallelism = CpuSettings.Threads)

    /// body i for i in 0..count-1; in parallel when worthwhile. Pieces must not depend on one another. Inlined, so
    /// that the work run on this thread alone (most of a step's small pieces) allocates no closure.
    let inline forEach (count: int) (parallelWorthIt: bool) ([<InlineIfLambda>] body: int -> unit) =
        if count <= 1 || not parallelWorthIt || CpuSettings.Threads <= 1 then
            for i in 0 .. count - 1 do
                body i
        else
            Parallel.For(0, count, options (), Action<int>(fun i -> body i)) |> ignore

    /// Splits [0, n) into fixed chunks (the same for every thread count) and runs body start length on each.
    let inline forChunks (n: int) (chunk: int) ([<InlineIfLambda>] body: int -> int -> unit) =
        let pieces = (n + chunk - 1) / chunk

        forEach pieces (n >= 2 * chunk) (fun p ->
            let s = p * chunk
            body s (min chunk (n - s)))
