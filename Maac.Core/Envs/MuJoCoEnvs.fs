namespace Maac.Envs.MuJoCo

open System
open System.IO
open System.Security.Cryptography
open Maac.Tensors
open Maac.Envs

/// How an episode of a MuJoCo task is observed, rewarded and ended. Reward and termination are
/// functions of (observation, action, next observation) so the same definition serves the
/// environment and, through TaskFunctions, model rollouts.
type MuJoCoTaskSpec =
    { Name: string
      /// Physics steps per environment step.
      FrameSkip: int
      /// Uniform noise half-width added to qpos0 and to zero velocities at reset.
      ResetNoise: float
      /// The observation of the simulation's current state.
      Observe: Simulation -> float32[]
      Reward: float32[] -> float32[] -> float32[] -> float
      Terminated: float32[] -> float32[] -> float32[] -> bool }

/// A MuJoCo model stepped with frame skip, as a Gymnasium-shaped environment. Actions are clipped to the
/// actuators' control ranges. A simulation that becomes unstable (MuJoCo's bad-acceleration warning,
/// after which it resets itself, or a non-finite state) is reported through info["simulation_unstable"]
/// and truncates the episode; the previous observation is returned and Reset must be called.
[<Sealed>]
type MuJoCoEnvironment(xmlPath: string, spec: MuJoCoTaskSpec) =
    let sim = new Simulation(xmlPath)
    let low, high = sim.ControlRange
    let actionSpace =
        Box.create (Array.init sim.Nu (fun i -> if low.[i] < high.[i] then float32 low.[i] else -1.0f))
                   (Array.init sim.Nu (fun i -> if low.[i] < high.[i] then float32 high.[i] else 1.0f))
    let qpos0 = sim.InitialQpos
    let obsDim = (spec.Observe sim).Length
    let observationSpace = Box.unbounded obsDim
    let mutable key = RandomKey.ofSeed 0L
    let mutable obs: float32[] = [||]
    let mutable started = false
    let unstable = EnvSupport.info [ "simulation_unstable", box true ]

    /// The simulation (positions, velocities, time step).
    member _.Simulation = sim
    /// Seconds of simulated time per environment step.
    member _.ControlDt = sim.Timestep * float spec.FrameSkip

    interface IEnv with
        member _.Name = spec.Name
        member _.ObservationSpace = observationSpace
        member _.ActionSpace = actionSpace
        member _.Reset seed =
            key <- EnvSupport.episodeKey seed key
            let noise = EnvSupport.uniform key (sim.Nq + sim.Nv) (float32 -spec.ResetNoise) (float32 spec.ResetNoise)
            let qpos = Array.init sim.Nq (fun i -> qpos0.[i] + float noise.[i])
            let qvel = Array.init sim.Nv (fun i -> float noise.[sim.Nq + i])
            sim.SetState(qpos, qvel)
            obs <- spec.Observe sim
            started <- true
            { Observation = obs; Info = EnvSupport.noInfo }
        member _.Step action =
            if not started then invalidOp (sprintf "%s: call Reset before Step" spec.Name)
            let a = EnvSupport.validateAction spec.Name actionSpace action
            let warningsBefore = sim.UnstableCount
            sim.Step(a, spec.FrameSkip)
            let next = spec.Observe sim
            if sim.UnstableCount <> warningsBefore || next |> Array.exists (fun v -> not (Single.IsFinite v)) then
                started <- false
                { Observation = obs; Reward = 0.0; Terminated = false; Truncated = true; Info = unstable }
            else
                let r = spec.Reward obs a next
                let t = spec.Terminated obs a next
                obs <- next
                { Observation = next; Reward = r; Terminated = t; Truncated = false; Info = EnvSupport.noInfo }
        member _.Dispose() = (sim :> IDisposable).Dispose()

/// The MBBL-style locomotion reward: forward velocity − 0.1‖a‖² (− 3(z − target)² + 1 for tasks with a
/// height term), read from the next observation; one definition, as numbers and as tensors.
type LocomotionReward =
    { VelocityIndex: int
      /// Index of the torso height in the observation and its target, for tasks that have the term.
      Height: (int * float32) option }
    member r.Scalar (_: float32[]) (a: float32[]) (next: float32[]) =
        let control = a |> Array.sumBy (fun x -> float x * float x)
        let heightTerm =
            match r.Height with
            | Some (i, target) -> 1.0 - 3.0 * (float next.[i] - float target) ** 2.0
            | None -> 0.0
        float next.[r.VelocityIndex] - 0.1 * control + heightTerm
    member r.Tensor (_: Tensor) (a: Tensor) (next: Tensor) =
        let column i = Tensor.slice -1 i 1 next |> Tensor.squeeze -1
        let basic = column r.VelocityIndex - 0.1f * Tensor.sumAxis -1 false (a * a)
        match r.Height with
        | Some (i, target) ->
            let dz = column i - target
            basic + (1.0f - 3.0f * dz * dz)
        | None -> basic

/// The built-in MuJoCo tasks with their models (written for Maac; see Envs/Models) and the
/// observations and rewards of the MAAC authors' MBBL setting: no early termination for locomotion.
module MuJoCoTasks =
    let private modelDirectory = Path.Combine(Path.GetTempPath(), "maac-mjcf")

    /// Writes an embedded model to a content-addressed file (written whole, then renamed) and returns its path.
    let modelPath (resource: string) =
        let asm = typeof<MuJoCoEnvironment>.Assembly
        use s = asm.GetManifestResourceStream("Maac.Models." + resource)
        if isNull s then invalidArg "resource" (sprintf "no built-in model named %s" resource)
        use ms = new MemoryStream()
        s.CopyTo ms
        let bytes = ms.ToArray()
        let hash = Convert.ToHexString(SHA256.HashData(bytes)).Substring(0, 16)
        Directory.CreateDirectory modelDirectory |> ignore
        let path = Path.Combine(modelDirectory, sprintf "%s-%s" hash resource)
        if not (File.Exists path) then
            let temp = path + "." + string Environment.ProcessId + ".tmp"
            File.WriteAllBytes(temp, bytes)
            File.Move(temp, path, true)
        path

    let private locomotion name frameSkip dropQpos noise (reward: LocomotionReward) =
        { Name = name; FrameSkip = frameSkip; ResetNoise = noise
          Observe = fun sim -> sim.PositionsAndVelocities dropQpos
          Reward = reward.Scalar
          Terminated = fun _ _ _ -> false },
        { Reward = Some reward.Tensor; Termination = None }

    let private invertedPendulumReward = fun (_: float32[]) (_: float32[]) (_: float32[]) -> 1.0
    let private invertedPendulumDone = fun (_: float32[]) (_: float32[]) (next: float32[]) -> abs next.[1] > 0.2f

    /// (spec, tensor functions, model resource, observation size, action size) of each built-in MuJoCo task.
    let all =
        [ let cheetah = { VelocityIndex = 8; Height = None }
          let hopper = { VelocityIndex = 5; Height = Some(0, 1.3f) }
          let walker = { VelocityIndex = 8; Height = Some(0, 1.3f) }
          let ant = { VelocityIndex = 13; Height = Some(0, 0.57f) }
          yield locomotion "HalfCheetah" 5 1 0.1 cheetah, "half_cheetah.xml", 17, 6
          yield locomotion "Hopper" 4 1 0.005 hopper, "hopper.xml", 11, 3
          yield locomotion "Walker2d" 4 1 0.005 walker, "walker2d.xml", 17, 6
          yield locomotion "Ant" 5 2 0.1 ant, "ant.xml", 27, 8
          yield
              ({ Name = "InvertedPendulum"; FrameSkip = 2; ResetNoise = 0.01
                 Observe = fun sim -> sim.PositionsAndVelocities 0
                 Reward = invertedPendulumReward
                 Terminated = invertedPendulumDone },
               { Reward = Some(fun obs _ _ -> Tensor.fullLike (Tensor.slice -1 0 1 obs |> Tensor.squeeze -1) 1.0f)
                 Termination = Some(fun _ _ next ->
                    let angle = Tensor.slice -1 1 1 next |> Tensor.squeeze -1 |> Tensor.abs
                    Tensor.greater angle (Tensor.fullLike angle 0.2f)) }),
              "inverted_pendulum.xml", 4, 1 ]

    /// An environment for a user's MJCF file with their observation, reward and termination.
    let fromFile (path: string) (spec: MuJoCoTaskSpec) =
        if not (File.Exists path) then invalidArg "path" (sprintf "MJCF file not found: %s" path)
        new MuJoCoEnvironment(path, spec)
