namespace Maac.Envs

open Maac

open System
open System.Collections.Generic
open Maac.Tensors

/// A box in Rⁿ: per-dimension lower and upper bounds (infinite bounds allowed for observations).
type Box =
    {
        Low: float32[]
        High: float32[]
    }

    /// The number of dimensions.
    member b.Dim = b.Low.Length

/// Creating and using boxes.
module Box =
    /// A box from bounds; fails when the lengths differ or a lower bound exceeds its upper bound.
    let create (low: float32[]) (high: float32[]) =
        if low.Length <> high.Length then
            invalidArg "high" (sprintf "box bounds have lengths %d and %d" low.Length high.Length)

        for i in 0 .. low.Length - 1 do
            if Single.IsNaN low.[i] || Single.IsNaN high.[i] || low.[i] > high.[i] then
                invalidArg "low" (sprintf "box dimension %d has bounds [%g, %g]" i low.[i] high.[i])

        { Low = Array.copy low; High = Array.copy high }

    /// [−bound, bound]ⁿ.
    let symmetric (n: int) (bound: float32) = create (Array.create n -bound) (Array.create n bound)

    /// (−∞, ∞)ⁿ.
    let unbounded (n: int) = symmetric n Single.PositiveInfinity

    /// Whether x lies inside (same length, every coordinate within bounds).
    let contains (b: Box) (x: float32[]) =
        x.Length = b.Dim
        && Seq.forall (fun i -> x.[i] >= b.Low.[i] && x.[i] <= b.High.[i]) (seq { 0 .. x.Length - 1 })

    /// x clipped into the box.
    let clip (b: Box) (x: float32[]) = Array.init x.Length (fun i -> Math.Clamp(x.[i], b.Low.[i], b.High.[i]))

/// What reset returns.
type EnvReset = { Observation: float32[]; Info: IReadOnlyDictionary<string, obj> }

/// What step returns: Gymnasium's five values.
type EnvStep =
    {
        Observation: float32[]
        Reward: float
        /// The task reached a terminal state (no value beyond it).
        Terminated: bool
        /// The episode was cut off (time limit, unstable simulation); the state still has a value.
        Truncated: bool
        Info: IReadOnlyDictionary<string, obj>
    }

/// A Gymnasium-shaped environment. Observations are float32 vectors in ObservationSpace; actions
/// are float32 vectors of ActionSpace's size. Built-in tasks clip actions into ActionSpace; an action
/// of the wrong size or with a NaN or infinity is refused with an error naming the task.
type IEnv =
    inherit IDisposable
    /// The task's name, for messages.
    abstract Name: string
    abstract ObservationSpace: Box
    abstract ActionSpace: Box
    /// Starts an episode; with a seed the episode's randomness is fixed by it.
    abstract Reset: seed: int64 option -> EnvReset
    /// Advances by one action.
    abstract Step: action: float32[] -> EnvStep

/// A task's reward and termination as differentiable functions of batched tensors
/// (observation [N, o], action [N, a], next observation [N, o] → [N]); model rollouts use these.
/// Termination gives 1 where the next state is terminal and 0 elsewhere. A task without a reward
/// function (None) has its reward learned by the dynamics model instead.
type TaskFunctions =
    {
        Reward: (Tensor -> Tensor -> Tensor -> Tensor) option
        Termination: (Tensor -> Tensor -> Tensor -> Tensor) option
    }

/// Helpers for environment implementations.
module EnvSupport =
    let private empty = Dictionary<string, obj>() :> IReadOnlyDictionary<string, obj>

    /// An empty info dictionary.
    let noInfo = empty

    /// An info dictionary from pairs.
    let info (pairs: (string * obj) list) = (dict pairs |> Dictionary<string, obj>) :> IReadOnlyDictionary<string, obj>

    /// Checks an action's size and finiteness (naming the task) and clips it into the space.
    let validateAction (task: string) (space: Box) (action: float32[]) =
        if isNull action then
            invalidArg "action" (sprintf "%s: the action is null" task)

        if action.Length <> space.Dim then
            invalidArg "action" (sprintf "%s expects an action of size %d, got %d" task space.Dim action.Length)

        for i in 0 .. action.Length - 1 do
            if not (Single.IsFinite action.[i]) then
                raise (NonFiniteException(sprintf "%s: action element %d is %g" task i action.[i]))

        Box.clip space action

    /// The random key for an episode: from the seed when given, otherwise the next key of the stream.
    let episodeKey (seed: int64 option) (current: RandomKey) =
        match seed with
        | Some s -> RandomKey.ofSeed s
        | None -> RandomKey.fold 1L current

    /// n standard normal values from a key.
    let normal (key: RandomKey) (n: int) =
        let a = Array.zeroCreate n
        RandomKey.fillNormal key (Span<float32>(a)) 0
        a

    /// n uniform values in [lo, hi) from a key.
    let uniform (key: RandomKey) (n: int) (lo: float32) (hi: float32) =
        let a = Array.zeroCreate n
        RandomKey.fillUniform key (Span<float32>(a)) 0
        a |> Array.map (fun u -> lo + (hi - lo) * u)

/// Ends episodes after a number of steps with Truncated = true (Gymnasium's TimeLimit).
[<Sealed>]
type TimeLimit(env: IEnv, maxSteps: int) =
    do
        if maxSteps <= 0 then
            invalidArg "maxSteps" (sprintf "the step limit must be positive, got %d" maxSteps)

    let mutable steps = 0
    /// The wrapped environment.
    member _.Inner = env
    /// The step limit.
    member _.MaxSteps = maxSteps

    interface IEnv with
        member _.Name = env.Name
        member _.ObservationSpace = env.ObservationSpace
        member _.ActionSpace = env.ActionSpace

        member _.Reset seed =
            steps <- 0
            env.Reset seed

        member _.Step action =
            let r = env.Step action
            steps <- steps + 1

            if steps >= maxSteps && not r.Terminated then
                { r with Truncated = true }
            else
                r

        member _.Dispose() = env.Dispose()
