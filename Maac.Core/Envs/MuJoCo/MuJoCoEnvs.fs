namespace Maac.Envs.MuJoCo

open System
open System.IO
open System.Security.Cryptography
open System.Xml.Linq
open Maac.Tensors
open Maac.Envs

/// One environment step of a MuJoCo task as its reward and termination see it.
type MuJoCoTransition =
    {
        /// The observation before the step.
        Observation: float32[]
        /// The action applied (clipped into the action space).
        Action: float32[]
        /// The observation after the step.
        NextObservation: float32[]
        /// Simulated seconds the step took (time step × frame skip).
        Dt: float
        /// The task's tracked values (MuJoCoTaskSpec.Track) before and after the step, for rewards of quantities
        /// the observation leaves out (the x position of a runner, whose change per second is the forward reward).
        TrackedBefore: float[]
        TrackedAfter: float[]
        /// The simulation after the step (qpos, qvel, contact forces, ...).
        Simulation: Simulation
    }

/// How a MuJoCo task's episodes start, around the model's reference configuration qpos0 and zero velocity.
[<RequireQualifiedAccess>]
type MuJoCoReset =
    /// qpos0 + U(−scale, scale) positions and U(−scale, scale) velocities (Gymnasium's Hopper, Walker2d, ...).
    | Uniform of scale: float
    /// qpos0 + U(−scale, scale) positions and scale · N(0, 1) velocities (Gymnasium's HalfCheetah, Ant, Humanoid).
    | UniformPositionsNormalVelocities of scale: float
    /// Any distribution: (qpos, qvel) from the episode's random key and the simulation.
    | Custom of (RandomKey -> Simulation -> float[] * float[])

/// How an episode of a MuJoCo task is started, observed, rewarded and ended.
type MuJoCoTaskSpec =
    {
        Name: string
        /// Physics steps per environment step.
        FrameSkip: int
        Reset: MuJoCoReset
        /// The observation of the simulation's current state.
        Observe: Simulation -> float32[]
        /// Values read from the simulation before and after each step for the reward ([||] when it needs none).
        Track: Simulation -> float[]
        /// Whether each step ends with mj_rnePostConstraint (as Gymnasium's steps do), which computes the contact forces
        /// (SimQuantity.CfrcExt) that an observation or reward reads; tasks that read none can leave it out.
        ContactForces: bool
        Reward: MuJoCoTransition -> float
        Terminated: MuJoCoTransition -> bool
    }

/// Helpers for writing task specs.
module MuJoCoSpec =
    /// No tracked values.
    let trackNothing (_: Simulation) : float[] = [||]

    /// Σ aᵢ² of an action.
    let squaredNorm (a: float32[]) = a |> Array.sumBy (fun x -> float x * float x)

    /// The change per second of tracked value i over the step.
    let velocityOf (i: int) (t: MuJoCoTransition) = (t.TrackedAfter.[i] - t.TrackedBefore.[i]) / t.Dt

    /// A spec whose reward and termination are functions of (observation, action, next observation) alone.
    let ofObservations
        name
        frameSkip
        reset
        observe
        (reward: float32[] -> float32[] -> float32[] -> float)
        (terminated: float32[] -> float32[] -> float32[] -> bool)
        =
        {
            Name = name
            FrameSkip = frameSkip
            Reset = reset
            Observe = observe
            Track = trackNothing
            ContactForces = true
            Reward = fun t -> reward t.Observation t.Action t.NextObservation
            Terminated = fun t -> terminated t.Observation t.Action t.NextObservation
        }

/// A MuJoCo model stepped with frame skip, as a Gymnasium-shaped environment. Actions are clipped to the
/// actuators' control ranges. A simulation that becomes unstable (MuJoCo's bad-acceleration warning,
/// after which it resets itself, or a non-finite state) is reported through info["simulation_unstable"]
/// and truncates the episode; the previous observation is returned and Reset must be called.
[<Sealed>]
type MuJoCoEnvironment(xmlPath: string, spec: MuJoCoTaskSpec) =
    let sim = new Simulation(xmlPath)
    let low, high = sim.ControlRange

    let actionSpace =
        Box.create
            (Array.init sim.Nu (fun i -> if low.[i] < high.[i] then float32 low.[i] else -1.0f))
            (Array.init sim.Nu (fun i -> if low.[i] < high.[i] then float32 high.[i] else 1.0f))

    let qpos0 = sim.InitialQpos
    let dt = sim.Timestep * float spec.FrameSkip
    let obsDim = (spec.Observe sim).Length
    let trackedDim = (spec.Track sim).Length
    let observationSpace = Box.unbounded obsDim
    let mutable key = RandomKey.ofSeed 0L
    let mutable obs: float32[] = [||]
    let mutable tracked: float[] = [||]
    let mutable started = false
    let unstable = EnvSupport.info [ "simulation_unstable", box true ]

    let startState (k: RandomKey) =
        let around (scale: float) (velocities: float32[]) =
            let u = EnvSupport.uniform (RandomKey.fold 0L k) sim.Nq (float32 -scale) (float32 scale)
            Array.init sim.Nq (fun i -> qpos0.[i] + float u.[i]), Array.map float velocities

        match spec.Reset with
        | MuJoCoReset.Uniform scale -> around scale (EnvSupport.uniform (RandomKey.fold 1L k) sim.Nv (float32 -scale) (float32 scale))
        | MuJoCoReset.UniformPositionsNormalVelocities scale ->
            around scale (EnvSupport.normal (RandomKey.fold 1L k) sim.Nv |> Array.map (fun z -> float32 scale * z))
        | MuJoCoReset.Custom f -> f k sim

    /// The simulation (positions, velocities, time step).
    member _.Simulation = sim
    /// Seconds of simulated time per environment step.
    member _.ControlDt = dt

    /// The episode key, whether an episode is running, the last observation and tracked values (the next step's
    /// reward reads them), then the simulation's parts (Simulation.SaveState).
    interface IRestorableEnv with
        member _.CanSaveState = true

        member _.SaveState() =
            EnvState.episodeParts key started
            @ [ "observation", EnvState.ofSingles obs; "tracked", Array.copy tracked ]
            @ sim.SaveState()

        member _.RestoreState saved =
            let name = spec.Name
            EnvState.requireParts name ([ "key"; "started"; "observation"; "tracked" ] @ List.map fst sim.StateParts) saved
            let k, s = EnvState.episode name saved
            // An environment saved before its first Reset has no observation and no tracked values yet.
            let fresh = not s && (snd (List.find (fun (n, _) -> n = "observation") saved)).Length = 0
            let o = EnvState.singles name saved "observation" (if fresh then 0 else obsDim)
            let t = EnvState.part name saved "tracked" (if fresh then 0 else trackedDim)
            sim.RestoreState(name, saved)
            key <- k
            started <- s
            obs <- o
            tracked <- t

    interface IEnv with
        member _.Name = spec.Name
        member _.ObservationSpace = observationSpace
        member _.ActionSpace = actionSpace

        member _.Reset seed =
            key <- EnvSupport.episodeKey seed key
            sim.SetState(startState key)
            obs <- spec.Observe sim
            tracked <- spec.Track sim
            started <- true
            { Observation = obs; Info = EnvSupport.noInfo }

        member _.Step action =
            if not started then
                invalidOp (sprintf "%s: call Reset before Step" spec.Name)

            let a = EnvSupport.validateAction spec.Name actionSpace action
            let warningsBefore = sim.UnstableCount
            sim.Step(a, spec.FrameSkip, spec.ContactForces)
            let next = spec.Observe sim

            if sim.UnstableCount <> warningsBefore || next |> Array.exists (fun v -> not (Single.IsFinite v)) then
                started <- false
                { Observation = obs; Reward = 0.0; Terminated = false; Truncated = true; Info = unstable }
            else
                let after = spec.Track sim

                let t =
                    {
                        Observation = obs
                        Action = a
                        NextObservation = next
                        Dt = dt
                        TrackedBefore = tracked
                        TrackedAfter = after
                        Simulation = sim
                    }

                let r = spec.Reward t
                let terminated = spec.Terminated t
                obs <- next
                tracked <- after

                {
                    Observation = next
                    Reward = r
                    Terminated = terminated
                    Truncated = false
                    Info = EnvSupport.noInfo
                }

        member _.Dispose() = (sim :> IDisposable).Dispose()

/// Built-in model files (embedded resources) written to disk for MuJoCo, optionally edited first.
module ModelFiles =
    let private modelDirectory = Path.Combine(Path.GetTempPath(), "maac-mjcf")

    /// An edit of a model file before it is loaded.
    type Edit =
        /// Sets an attribute of the element of this tag with this name attribute (the model must have it).
        | SetAttribute of tag: string * name: string * attribute: string * value: string

    let private apply (resource: string) (doc: XDocument) (edit: Edit) =
        match edit with
        | SetAttribute(tag, name, attribute, value) ->
            let target =
                doc.Descendants(XName.Get tag)
                |> Seq.tryFind (fun e ->
                    match e.Attribute(XName.Get "name") with
                    | null -> false
                    | a -> a.Value = name)

            match target with
            | Some e -> e.SetAttributeValue(XName.Get attribute, value)
            | None -> invalidArg "edits" (sprintf "model %s has no <%s name=\"%s\">" resource tag name)

    /// Writes an embedded model, with the edits applied, to a content-addressed file (written whole, then renamed)
    /// and returns its path.
    let path (resource: string) (edits: Edit list) =
        let asm = typeof<MuJoCoEnvironment>.Assembly
        use s = asm.GetManifestResourceStream("Maac.Models." + resource)

        if isNull s then
            invalidArg "resource" (sprintf "no built-in model named %s" resource)

        let bytes =
            if List.isEmpty edits then
                use ms = new MemoryStream()
                s.CopyTo ms
                ms.ToArray()
            else
                let doc = XDocument.Load s
                edits |> List.iter (apply resource doc)
                Text.Encoding.UTF8.GetBytes(doc.ToString())

        let hash = Convert.ToHexString(SHA256.HashData(bytes)).Substring(0, 16)
        Directory.CreateDirectory modelDirectory |> ignore
        let file = Path.Combine(modelDirectory, sprintf "%s-%s" hash resource)

        if not (File.Exists file) then
            let temp = file + "." + string Environment.ProcessId + ".tmp"
            File.WriteAllBytes(temp, bytes)
            File.Move(temp, file, true)

        file

/// A built-in MuJoCo task: its spec, its reward and termination as tensor functions for model rollouts, its
/// model file, sizes, episode length and the published definition it follows.
type MuJoCoTask =
    {
        /// How an observation, a reward and a termination are read from the simulator's state.
        Spec: MuJoCoTaskSpec
        /// The reward and termination again as tensor functions of (observation, action, next observation), which
        /// model rollouts use in place of the simulator.
        Functions: TaskFunctions
        /// Sizes of an observation and of an action.
        ObservationDim: int
        ActionDim: int
        /// Steps after which an episode is truncated (1,000 for the locomotion tasks).
        EpisodeSteps: int
        /// The embedded model file and the edits made to it before loading.
        Model: string * ModelFiles.Edit list
        /// The published definition followed: "Gymnasium v5" (Farama's v5 locomotion tasks) or "MBBL" (the
        /// model-based benchmark of Wang et al., 2019, whose variants the MAAC paper reports on).
        Definition: string
    }

/// Environments for users' own MJCF files.
module MuJoCoTasks =
    /// An environment for a user's MJCF file with their observation, reward and termination.
    let fromFile (path: string) (spec: MuJoCoTaskSpec) =
        if not (File.Exists path) then
            invalidArg "path" (sprintf "MJCF file not found: %s" path)

        new MuJoCoEnvironment(path, spec)

    /// A new environment of a built-in MuJoCo task (without its time limit).
    let create (task: MuJoCoTask) =
        let resource, edits = task.Model
        new MuJoCoEnvironment(ModelFiles.path resource edits, task.Spec)
