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

    /// A policy's action in [−1, 1]ⁿ mapped affinely onto the box: low + (a + 1)·½·(high − low), so −1 is the
    /// lower bound and 1 the upper. This is the one definition of action scaling: fromUnitTensor is the same
    /// expression on tensors and the ONNX export writes it as graph nodes.
    let fromUnit (b: Box) (a: float32[]) = Array.init a.Length (fun i -> b.Low.[i] + (a.[i] + 1.0f) * 0.5f * (b.High.[i] - b.Low.[i]))

    /// fromUnit on tensors: actions [..., n] in [−1, 1] onto the box with bounds low and high [n].
    let fromUnitTensor (low: Tensor) (high: Tensor) (a: Tensor) = low + (a + 1.0f) * 0.5f * (high - low)

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

/// The state of an environment's running episode as named arrays of numbers, in the environment's order (a managed
/// task's state vector; MuJoCo's time, qpos, qvel, warm start, ...; a wrapper's counters): an environment of the same
/// task restored to it continues the episode exactly, bit for bit, as the one it was saved from would.
type EnvState = (string * float[]) list

/// An environment that can save the state of its running episode and continue it later. Training checkpoints hold
/// this state, so a run stopped between evaluations resumes bit for bit. As with Stream.CanSeek, a wrapper implements
/// it and says through CanSaveState whether what it wraps can.
type IRestorableEnv =
    /// Whether SaveState and RestoreState work (false for a wrapper around an environment that cannot).
    abstract CanSaveState: bool
    /// The environment's state now (before the first Reset too).
    abstract SaveState: unit -> EnvState
    /// Returns the environment to a state saved from an environment of the same task. The state is checked whole
    /// first (the parts' names in order, each part's size, every value finite and in range); an ArgumentException
    /// names the environment and the first part or element that does not fit, and then nothing has changed.
    abstract RestoreState: state: EnvState -> unit

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

/// Checking and converting the parts of a saved environment state (EnvState).
module EnvState =
    let private refuse (env: string) fmt =
        Printf.kprintf (fun m -> invalidArg "state" (sprintf "%s cannot restore this saved state: %s" env m)) fmt

    /// Checks that the state's parts are exactly these names, in this order.
    let requireParts (env: string) (names: string list) (state: EnvState) =
        if isNull (box state) then
            nullArg "state"

        let given = state |> List.map fst

        if given <> names then
            refuse env "its parts are [%s]; this environment's are [%s]" (String.Join(", ", given)) (String.Join(", ", names))

    /// The values of a part, checked: `size` values, every one finite (a copy).
    let part (env: string) (state: EnvState) (name: string) (size: int) =
        match state |> List.tryFind (fun (n, _) -> n = name) with
        | None -> refuse env "it has no part '%s'" name
        | Some(_, values) when isNull values -> refuse env "part '%s' is null" name
        | Some(_, values) ->
            if values.Length <> size then
                refuse env "part '%s' has %d values where this environment has %d" name values.Length size

            match Maac.Finite.firstNonFiniteDouble values with
            | Some i -> refuse env "part '%s' element %d is %g" name i values.[i]
            | None -> Array.copy values

    /// float32 values saved with ofSingles, checked: `size` values, each exactly a finite float32.
    let singles (env: string) (state: EnvState) (name: string) (size: int) =
        let v = part env state name size

        match v |> Array.tryFindIndex (fun x -> float (float32 x) <> x) with
        | Some i -> refuse env "part '%s' element %d is %g, not a float32" name i v.[i]
        | None -> Array.map float32 v

    /// A flag saved as 0 or 1.
    let flag (env: string) (state: EnvState) (name: string) =
        match part env state name 1 with
        | [| 0.0 |] -> false
        | [| 1.0 |] -> true
        | v -> refuse env "part '%s' is %g, not 0 or 1" name v.[0]

    /// A count saved as a whole number in [0, max].
    let count (env: string) (state: EnvState) (name: string) (max: int) =
        let v = (part env state name 1).[0]

        if v <> Math.Floor v || v < 0.0 || v > float max then
            refuse env "part '%s' is %g, not a whole number in [0, %d]" name v max

        int v

    /// A random key as a part (its two 32-bit words).
    let ofKey (k: RandomKey) = [| float k.K0; float k.K1 |]

    /// A random key saved with ofKey, checked: two whole numbers in [0, 2³²).
    let key (env: string) (state: EnvState) (name: string) =
        let v = part env state name 2

        let word i =
            if v.[i] <> Math.Floor v.[i] || v.[i] < 0.0 || v.[i] > float UInt32.MaxValue then
                refuse env "part '%s' element %d is %g, not a 32-bit word" name i v.[i]

            uint32 v.[i]

        { K0 = word 0; K1 = word 1 }

    /// The parts every episodic environment starts its state with: its episode key and whether an episode has started.
    let episodeParts (key: RandomKey) (started: bool) : EnvState = [ "key", ofKey key; "started", [| (if started then 1.0 else 0.0) |] ]

    /// The key and the started flag saved by episodeParts, checked.
    let episode (env: string) (state: EnvState) = key env state "key", flag env state "started"

    /// float32 values as a part (exactly: every float32 is a double).
    let ofSingles (values: float32[]) = Array.map float values

    /// The restorable view of an environment, if it can save its state (IRestorableEnv with CanSaveState).
    let tryRestorable (env: IEnv) =
        match box env with
        | :? IRestorableEnv as r when r.CanSaveState -> Some r
        | _ -> None

/// Ends episodes after a number of steps with Truncated = true (Gymnasium's TimeLimit).
[<Sealed>]
type TimeLimit(env: IEnv, maxSteps: int) =
    do
        if maxSteps <= 0 then
            invalidArg "maxSteps" (sprintf "the step limit must be positive, got %d" maxSteps)

    let mutable steps = 0

    let inner () =
        match EnvState.tryRestorable env with
        | Some r -> r
        | None -> raise (NotSupportedException(sprintf "%s cannot save or restore its state" env.Name))

    /// The wrapped environment.
    member _.Inner = env
    /// The step limit.
    member _.MaxSteps = maxSteps

    /// The step counter (its part "elapsedSteps") before the wrapped environment's parts.
    interface IRestorableEnv with
        member _.CanSaveState = (EnvState.tryRestorable env).IsSome
        member _.SaveState() = ("elapsedSteps", [| float steps |]) :: (inner ()).SaveState()

        member _.RestoreState state =
            let restorable = inner ()

            match state with
            | ("elapsedSteps", _) :: rest ->
                let elapsed = EnvState.count env.Name state "elapsedSteps" maxSteps
                restorable.RestoreState rest
                steps <- elapsed
            | _ -> EnvState.requireParts env.Name ("elapsedSteps" :: List.map fst (restorable.SaveState())) state

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
