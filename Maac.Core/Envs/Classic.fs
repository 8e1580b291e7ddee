namespace Maac.Envs

open System
open Maac.Tensors

/// Shared machinery of the managed tasks: a state vector advanced by a pure transition function.
/// Subclasses give the spaces, the initial state, the transition and the observation.
[<AbstractClass>]
type ManagedEnvironment(name: string, observationSpace: Box, actionSpace: Box) =
    let mutable key = RandomKey.ofSeed 0L
    let mutable state: float[] = [||]
    let mutable started = false

    /// A fresh initial state drawn from the episode's key.
    abstract Initial: RandomKey -> float[]
    /// (next state, reward, terminated) for a clipped action.
    abstract Transition: float[] * float32[] -> float[] * float * bool
    /// The observation of a state.
    abstract Observe: float[] -> float32[]

    /// The current internal state (for tests and analysis).
    member _.State = Array.copy state

    /// The episode key, whether an episode has started, and the state vector (empty before the first Reset).
    interface IRestorableEnv with
        member _.CanSaveState = true

        member _.SaveState() = EnvState.episodeParts key started @ [ "state", Array.copy state ]

        member this.RestoreState saved =
            EnvState.requireParts name [ "key"; "started"; "state" ] saved
            let k, s = EnvState.episode name saved
            let x = EnvState.part name saved "state" (if s then (this.Initial k).Length else 0)
            key <- k
            started <- s
            state <- x

    interface IEnv with
        member _.Name = name
        member _.ObservationSpace = observationSpace
        member _.ActionSpace = actionSpace

        member this.Reset seed =
            key <- EnvSupport.episodeKey seed key
            state <- this.Initial key
            started <- true
            { Observation = this.Observe state; Info = EnvSupport.noInfo }

        member this.Step action =
            if not started then
                invalidOp (sprintf "%s: call Reset before Step" name)

            let a = EnvSupport.validateAction name actionSpace action
            let next, reward, terminated = this.Transition(state, a)
            state <- next

            {
                Observation = this.Observe next
                Reward = reward
                Terminated = terminated
                Truncated = false
                Info = EnvSupport.noInfo
            }

        member _.Dispose() = ()

/// The classic pendulum swing-up (Gymnasium's Pendulum-v1): g = 10, m = l = 1, dt = 0.05,
/// torque in [−2, 2], speed limited to ±8; observation (cos θ, sin θ, θ̇);
/// reward −(θ² + 0.1·θ̇² + 0.001·u²) with θ normalised to [−π, π]; 200 steps, no termination.
[<Sealed>]
type Pendulum() =
    inherit ManagedEnvironment("Pendulum", Box.create [| -1.0f; -1.0f; -8.0f |] [| 1.0f; 1.0f; 8.0f |], Box.symmetric 1 2.0f)
    static member Gravity = 10.0
    static member Dt = 0.05
    static member MaxSpeed = 8.0
    /// θ wrapped into [−π, π).
    static member Normalise(theta: float) = ((theta + Math.PI) % (2.0 * Math.PI) + 2.0 * Math.PI) % (2.0 * Math.PI) - Math.PI

    override _.Initial key =
        let u = EnvSupport.uniform key 2 -1.0f 1.0f
        [| Math.PI * float u.[0]; float u.[1] |]

    /// The reward of torque u in state (θ, θ̇): −(θ² + 0.1·θ̇² + 0.001·u²), θ normalised to [−π, π].
    static member Reward(th: float, thdot: float, u: float) = -(Pendulum.Normalise th ** 2.0 + 0.1 * thdot ** 2.0 + 0.001 * u * u)

    /// The next (θ, θ̇) after torque u (semi-implicit Euler, speed clipped to ±MaxSpeed).
    static member Advance(th: float, thdot: float, u: float) =
        let newThdot =
            Math.Clamp(thdot + (3.0 * Pendulum.Gravity / 2.0 * sin th + 3.0 * u) * Pendulum.Dt, -Pendulum.MaxSpeed, Pendulum.MaxSpeed)

        struct (th + newThdot * Pendulum.Dt, newThdot)

    override _.Transition(s, a) =
        let th, thdot = s.[0], s.[1]
        let u = float a.[0]
        let struct (th', thdot') = Pendulum.Advance(th, thdot, u)
        [| th'; thdot' |], Pendulum.Reward(th, thdot, u), false

    override _.Observe s = [| float32 (cos s.[0]); float32 (sin s.[0]); float32 s.[1] |]

    /// The reward as a tensor function of (observation, action, next observation).
    static member Functions =
        {
            Reward =
                Some
                <| fun obs act _ ->
                    let cols = Tensor.split -1 [| 1; 1; 1 |] obs
                    let theta = Tensor.atan2 cols.[1] cols.[0]
                    let u = Tensor.clamp -2.0f 2.0f act
                    -(Tensor.squeeze -1 (theta * theta + 0.1f * cols.[2] * cols.[2] + 0.001f * u * u))
            Termination = None
        }

/// Gymnasium's MountainCarContinuous-v0: position in [−1.2, 0.6], speed within ±0.07, force in [−1, 1];
/// reaching position 0.45 ends the episode with +100; each step costs 0.1·force²; 999 steps.
[<Sealed>]
type MountainCarContinuous() =
    inherit ManagedEnvironment("MountainCarContinuous", Box.create [| -1.2f; -0.07f |] [| 0.6f; 0.07f |], Box.symmetric 1 1.0f)
    static member GoalPosition = 0.45

    override _.Initial key = [| float (EnvSupport.uniform key 1 -0.6f -0.4f).[0]; 0.0 |]

    override _.Transition(s, a) =
        let force = float a.[0]
        let v = Math.Clamp(s.[1] + force * 0.0015 - 0.0025 * cos (3.0 * s.[0]), -0.07, 0.07)
        let x = Math.Clamp(s.[0] + v, -1.2, 0.6)
        let v = if x = -1.2 && v < 0.0 then 0.0 else v
        let terminated = x >= MountainCarContinuous.GoalPosition && v >= 0.0
        [| x; v |], (if terminated then 100.0 else 0.0) - 0.1 * force * force, terminated

    override _.Observe s = [| float32 s.[0]; float32 s.[1] |]

    /// Termination (goal reached) and reward as tensor functions.
    static member Functions =
        let reached (next: Tensor) =
            let cols = Tensor.split -1 [| 1; 1 |] next

            let atGoal =
                Tensor.greater cols.[0] (Tensor.fullLike cols.[0] (float32 MountainCarContinuous.GoalPosition - 1e-6f))

            let moving = Tensor.greater cols.[1] (Tensor.fullLike cols.[1] -1e-9f)
            Tensor.squeeze -1 (atGoal * moving)

        {
            Reward =
                Some
                <| fun _ act next ->
                    let f = Tensor.clamp -1.0f 1.0f act
                    100.0f * reached next - 0.1f * Tensor.squeeze -1 (f * f)
            Termination = Some(fun _ _ next -> reached next)
        }

/// Cart-pole swing-up from the classic cart-pole equations (Barto, Sutton & Anderson 1983; as
/// corrected by Florian 2007): cart 1 kg, pole 0.1 kg, half-length 0.5 m, g 9.8, force 10·a with a in
/// [−1, 1], dt 0.05 (Euler). The pole starts hanging down (θ = π, θ = 0 is upright). Observation
/// (x, ẋ, cos θ, sin θ, θ̇); reward cos θ − 0.01·x² − 0.001·a²; leaving |x| ≤ 2.4 terminates; 200 steps.
[<Sealed>]
type CartPoleSwingUp() =
    inherit
        ManagedEnvironment(
            "CartPoleSwingUp",
            Box.create [| -infinityf; -infinityf; -1.0f; -1.0f; -infinityf |] [| infinityf; infinityf; 1.0f; 1.0f; infinityf |],
            Box.symmetric 1 1.0f
        )

    static member Dt = 0.05
    static member TrackLimit = 2.4

    override _.Initial key =
        let u = EnvSupport.uniform key 4 -0.05f 0.05f
        [| float u.[0]; float u.[1]; Math.PI + float u.[2]; float u.[3] |]

    override _.Transition(s, a) =
        let g, mc, mp, l = 9.8, 1.0, 0.1, 0.5
        let x, xdot, th, thdot = s.[0], s.[1], s.[2], s.[3]
        let f = 10.0 * float a.[0]
        let total = mc + mp
        let temp = (f + mp * l * thdot * thdot * sin th) / total
        let thacc = (g * sin th - cos th * temp) / (l * (4.0 / 3.0 - mp * cos th * cos th / total))
        let xacc = temp - mp * l * thacc * cos th / total
        let dt = CartPoleSwingUp.Dt
        let next = [| x + dt * xdot; xdot + dt * xacc; th + dt * thdot; thdot + dt * thacc |]
        let terminated = abs next.[0] > CartPoleSwingUp.TrackLimit
        next, cos th - 0.01 * x * x - 0.001 * float a.[0] * float a.[0], terminated

    override _.Observe s = [| float32 s.[0]; float32 s.[1]; float32 (cos s.[2]); float32 (sin s.[2]); float32 s.[3] |]

    /// Reward and termination as tensor functions.
    static member Functions =
        {
            Reward =
                Some
                <| fun obs act _ ->
                    let cols = Tensor.split -1 [| 1; 1; 1; 1; 1 |] obs
                    let a = Tensor.clamp -1.0f 1.0f act
                    Tensor.squeeze -1 (cols.[2] - 0.01f * cols.[0] * cols.[0] - 0.001f * a * a)
            Termination =
                Some(fun _ _ next ->
                    let x = Tensor.slice -1 0 1 next |> Tensor.squeeze -1
                    Tensor.greater (Tensor.abs x) (Tensor.fullLike x (float32 CartPoleSwingUp.TrackLimit)))
        }

/// The double integrator of the MAAC paper's gradient-error study: state (x, v), dt = 0.05,
/// s' = A·s + B·u with the exact zero-order-hold discretisation A = [[1, dt], [0, 1]], B = [dt²/2, dt],
/// reward −½(x² + v² + u²), u in [−1, 1], episodes of 25 steps from (1, 1) (or a random start).
[<Sealed>]
type DoubleIntegrator(randomStart: bool) =
    inherit ManagedEnvironment("DoubleIntegrator", Box.unbounded 2, Box.symmetric 1 1.0f)
    new() = new DoubleIntegrator(false)
    static member Dt = 0.05
    /// The state transition matrix A (row-major 2×2).
    static member A = array2D [ [ 1.0; DoubleIntegrator.Dt ]; [ 0.0; 1.0 ] ]
    /// The input matrix B (2×1).
    static member B = array2D [ [ 0.5 * DoubleIntegrator.Dt * DoubleIntegrator.Dt ]; [ DoubleIntegrator.Dt ] ]
    /// The state cost Q of the reward −½(sᵀQs + uᵀRu).
    static member Q = array2D [ [ 1.0; 0.0 ]; [ 0.0; 1.0 ] ]
    /// The action cost R.
    static member R = array2D [ [ 1.0 ] ]
    /// The paper's start state.
    static member Start = [| 1.0; 1.0 |]

    override _.Initial key =
        if randomStart then
            EnvSupport.uniform key 2 -1.0f 1.0f |> Array.map float
        else
            Array.copy DoubleIntegrator.Start

    override _.Transition(s, a) =
        let u = float a.[0]

        let next =
            [|
                s.[0] + DoubleIntegrator.Dt * s.[1] + DoubleIntegrator.B.[0, 0] * u
                s.[1] + DoubleIntegrator.B.[1, 0] * u
            |]

        next, -0.5 * (s.[0] * s.[0] + s.[1] * s.[1] + u * u), false

    override _.Observe s = [| float32 s.[0]; float32 s.[1] |]

    /// The reward as a tensor function (the dynamics are linear, so models can also be checked exactly).
    static member Functions =
        {
            Reward =
                Some
                <| fun obs act _ ->
                    let u = Tensor.clamp -1.0f 1.0f act
                    -0.5f * (Tensor.sumAxis -1 false (obs * obs) + Tensor.sumAxis -1 false (u * u))
            Termination = None
        }
