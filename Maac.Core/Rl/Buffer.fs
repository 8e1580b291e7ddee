namespace Maac.Rl

open System
open Maac.Tensors

/// A batch of transitions as tensors: observations [N, o], actions [N, a], rewards [N],
/// next observations [N, o], and done [N] (1 where the next state is terminal).
type Batch = { Obs: Tensor; Action: Tensor; Reward: Tensor; NextObs: Tensor; Done: Tensor }

/// A fixed-capacity ring buffer of transitions with uniform, seeded sampling.
[<Sealed>]
type ReplayBuffer(capacity: int, obsDim: int, actDim: int) =
    do
        if capacity <= 0 then
            invalidArg "capacity" (sprintf "capacity must be positive, got %d" capacity)

    let obs = Array.zeroCreate<float32>(capacity * obsDim)
    let act = Array.zeroCreate<float32>(capacity * actDim)
    let reward = Array.zeroCreate<float32> capacity
    let next = Array.zeroCreate<float32>(capacity * obsDim)
    let isDone = Array.zeroCreate<float32> capacity
    /// The storage's columns in their one order (observation, action, reward, next observation, done flag) with
    /// each row's width: checkpoints save and restore them in this order.
    let columns = [| obs, obsDim; act, actDim; reward, 1; next, obsDim; isDone, 1 |]
    let mutable count = 0
    let mutable head = 0

    member _.Capacity = capacity
    member _.ObsDim = obsDim
    member _.ActDim = actDim
    /// Transitions held (at most Capacity).
    member _.Count = count
    /// Where the next transition is written (for checkpoints).
    member _.Head = head

    /// The largest reward held (−∞ when empty).
    member _.MaxReward =
        if count = 0 then
            Single.NegativeInfinity
        else
            Numerics.Tensors.TensorPrimitives.Max(ReadOnlySpan<float32>(reward, 0, count))

    /// The largest reward magnitude |r| held (0 when empty).
    member _.MaxRewardMagnitude =
        if count = 0 then
            0.0f
        else
            abs (Numerics.Tensors.TensorPrimitives.MaxMagnitude(ReadOnlySpan<float32>(reward, 0, count)))

    /// Adds one transition (overwriting the oldest when full).
    member _.Add(o: float32[], a: float32[], r: float32, o2: float32[], terminal: bool) =
        if o.Length <> obsDim || o2.Length <> obsDim || a.Length <> actDim then
            invalidArg
                "o"
                (sprintf
                    "replay buffer holds observations of size %d and actions of size %d; got %d, %d, %d"
                    obsDim
                    actDim
                    o.Length
                    a.Length
                    o2.Length)

        Array.Copy(o, 0, obs, head * obsDim, obsDim)
        Array.Copy(a, 0, act, head * actDim, actDim)
        Array.Copy(o2, 0, next, head * obsDim, obsDim)
        reward.[head] <- r
        isDone.[head] <- if terminal then 1.0f else 0.0f
        head <- (head + 1) % capacity
        count <- min capacity (count + 1)

    /// Adds a batch of transitions given as tensors (imagined data).
    member this.AddBatch(b: Batch) =
        let n = b.Obs.Shape.[0]

        let o, a, r, o2, d =
            b.Obs.ToArray(), b.Action.ToArray(), b.Reward.ToArray(), b.NextObs.ToArray(), b.Done.ToArray()

        for i in 0 .. n - 1 do
            this.Add(
                o.[i * obsDim .. (i + 1) * obsDim - 1],
                a.[i * actDim .. (i + 1) * actDim - 1],
                r.[i],
                o2.[i * obsDim .. (i + 1) * obsDim - 1],
                d.[i] > 0.5f
            )

    /// The transitions at the given indices.
    member _.Gather(indices: int[]) =
        let n = indices.Length

        let pick (src: float32[]) (width: int) =
            let dst = Array.zeroCreate (n * width)
            indices |> Array.iteri (fun j i -> Array.Copy(src, i * width, dst, j * width, width))
            dst

        {
            Obs = Tensor.ofArray [| n; obsDim |] (pick obs obsDim)
            Action = Tensor.ofArray [| n; actDim |] (pick act actDim)
            Reward = Tensor.ofArray [| n |] (pick reward 1)
            NextObs = Tensor.ofArray [| n; obsDim |] (pick next obsDim)
            Done = Tensor.ofArray [| n |] (pick isDone 1)
        }

    /// n transitions drawn uniformly with replacement.
    member this.Sample(key: RandomKey, n: int) =
        if count = 0 then
            invalidOp "cannot sample from an empty replay buffer"

        this.Gather(RandomKey.integers n count key)

    /// Everything held, in storage order.
    member this.All() = this.Gather(Array.init count id)

    /// The filled part of the storage (Count rows of observations, actions, rewards, next observations,
    /// done flags), for checkpoints.
    member _.Arrays = columns |> Array.map (fun (a, w) -> a.[.. count * w - 1])

    /// Each column's values per transition, in the order of Arrays.
    member _.ColumnWidths = columns |> Array.map snd

    /// Restores contents saved from Arrays, Count and Head.
    member _.Restore(arrays: float32[][], savedCount: int, savedHead: int) =
        let targets = columns

        if
            savedCount < 0
            || savedCount > capacity
            || savedHead < 0
            || savedHead >= capacity
            || arrays.Length <> targets.Length
            || Array.exists2 (fun (a: float32[]) (_, w) -> a.Length <> savedCount * w) arrays targets
        then
            invalidArg
                "arrays"
                (sprintf
                    "the saved buffer (%d transitions) does not fit this buffer (capacity %d, observation %d, action %d)"
                    savedCount
                    capacity
                    obsDim
                    actDim)

        Array.iter2 (fun (src: float32[]) (dst: float32[], _) -> Array.Copy(src, dst, src.Length)) arrays targets
        count <- savedCount
        head <- savedHead

/// Concatenating batches.
module Batch =
    /// Rows of a then rows of b.
    let append (a: Batch) (b: Batch) =
        {
            Obs = Tensor.concat 0 [| a.Obs; b.Obs |]
            Action = Tensor.concat 0 [| a.Action; b.Action |]
            Reward = Tensor.concat 0 [| a.Reward; b.Reward |]
            NextObs = Tensor.concat 0 [| a.NextObs; b.NextObs |]
            Done = Tensor.concat 0 [| a.Done; b.Done |]
        }
