namespace Maac.Envs.MuJoCo

open System
open Maac.Tensors
open Maac.Envs

/// Indicator terms over batched observations for termination functions: 1 where a condition holds, 0 elsewhere.
module internal Indicators =
    /// Column i of [N, d] as [N].
    let column (i: int) (t: Tensor) = Tensor.slice -1 i 1 t |> Tensor.squeeze -1

    /// 1 where x ≤ lo or x ≥ hi (outside the open interval (lo, hi)).
    let outsideOpen (lo: float32) (hi: float32) (x: Tensor) =
        Tensor.maximum (1.0f - Tensor.greater x (Tensor.fullLike x lo)) (1.0f - Tensor.greater (Tensor.fullLike x hi) x)

    /// 1 where x < lo or x > hi (outside the closed interval [lo, hi]).
    let outsideClosed (lo: float32) (hi: float32) (x: Tensor) =
        Tensor.maximum (Tensor.greater (Tensor.fullLike x lo) x) (Tensor.greater x (Tensor.fullLike x hi))

    /// 1 where any of the indicators is 1.
    let any (indicators: Tensor list) = List.reduce Tensor.maximum indicators

/// Gymnasium's MuJoCo tasks in version 5, under their plain names: the same compiled physics as the model files
/// Gymnasium's *_v5.py load (Envs/MuJoCo/Models, written to their values), and the same observation layout, reward terms
/// and weights, termination, reset distributions and episode lengths.
///
/// The forward rewards are the change of an x position per second (Δx/dt), and x is not in the observation, so
/// these tasks give model rollouts no reward function: the dynamics model learns the reward (as MBPO does). Their
/// terminations are tensor functions of the next observation, equal to the environment's (see each task).
module GymnasiumTasks =
    [<Literal>]
    let Definition = "Gymnasium v5"

    let private clip (lo: float) (hi: float) (v: float) = Math.Clamp(v, lo, hi)

    /// qpos[skip..] followed by qvel clipped to ±limit (or unclipped when limit is infinite), as float32 (one array).
    let private positionsAndVelocities (skip: int) (limit: float) (sim: Simulation) =
        let out = sim.PositionsAndVelocities skip

        if not (Double.IsInfinity limit) then
            let l = float32 limit

            for i in sim.Nq - skip .. out.Length - 1 do
                out.[i] <- Math.Clamp(out.[i], -l, l)

        out

    let private trackQpos0 (sim: Simulation) = [| sim.QposAt 0 |]

    /// Tasks whose observation or reward reads contact forces (cfrc_ext).
    let private readsContactForces = set [ "Ant"; "Humanoid" ]

    let private task name frameSkip reset observe track reward terminated functions model (obs, act, steps) =
        {
            Spec =
                {
                    Name = name
                    FrameSkip = frameSkip
                    Reset = reset
                    Observe = observe
                    Track = track
                    Reward = reward
                    Terminated = terminated
                    ContactForces = readsContactForces.Contains name
                }
            Functions = functions
            Model = model
            ObservationDim = obs
            ActionDim = act
            EpisodeSteps = steps
            Definition = Definition
        }

    /// HalfCheetah-v5: obs qpos[1:] + qvel (17); reward Δx/dt − 0.1‖a‖²; never terminates; qpos0 + U(±0.1),
    /// qvel 0.1·N(0, 1).
    let halfCheetah =
        task
            "HalfCheetah"
            5
            (MuJoCoReset.UniformPositionsNormalVelocities 0.1)
            (positionsAndVelocities 1 infinity)
            trackQpos0
            (fun t -> MuJoCoSpec.velocityOf 0 t - 0.1 * MuJoCoSpec.squaredNorm t.Action)
            (fun _ -> false)
            { Reward = None; Termination = None }
            ("half_cheetah.xml", [])
            (17, 6, 1000)

    /// Hopper and Walker2d in v5: frame skip 4, qpos0 + U(±0.005) and qvel U(±0.005), obs qpos[1:] + clip(qvel, ±10),
    /// reward Δx/dt + 1 while healthy − 0.001‖a‖², terminating when unhealthy (termination for rollouts: of the next
    /// observation).
    let private planarWalker name (healthy: Simulation -> bool) (termination: Tensor -> Tensor) model obs act =
        task
            name
            4
            (MuJoCoReset.Uniform 0.005)
            (positionsAndVelocities 1 10.0)
            trackQpos0
            (fun t ->
                MuJoCoSpec.velocityOf 0 t + (if healthy t.Simulation then 1.0 else 0.0)
                - 0.001 * MuJoCoSpec.squaredNorm t.Action)
            (fun t -> not (healthy t.Simulation))
            { Reward = None; Termination = Some(fun _ _ next -> termination next) }
            (model, [])
            (obs, act, 1000)

    /// Hopper-v5's health: z = qpos[1] in (0.7, ∞), torso angle qpos[2] in (−0.2, 0.2), and every element of
    /// (qpos, qvel)[2:] in (−100, 100), all strict.
    let private hopperHealthy (sim: Simulation) =
        let qpos, qvel = sim.Qpos, sim.Qvel
        let state = Seq.append (Seq.skip 2 qpos) qvel

        qpos.[1] > 0.7
        && qpos.[2] > -0.2
        && qpos.[2] < 0.2
        && state |> Seq.forall (fun v -> v > -100.0 && v < 100.0)

    /// Hopper-v5: obs qpos[1:] + clip(qvel, ±10) (11); reward Δx/dt + 1 (while healthy) − 0.001‖a‖²; terminates
    /// when unhealthy; qpos0 + U(±0.005), qvel U(±0.005). The tensor termination reads the next observation, whose
    /// velocities are clipped to ±10: it equals the environment's except for a velocity beyond ±100, which the
    /// observation cannot show.
    let hopper =
        planarWalker
            "Hopper"
            hopperHealthy
            (fun next ->
                let state = Tensor.slice -1 1 10 next |> Tensor.abs

                Indicators.any
                    [
                        Indicators.outsideOpen 0.7f Single.PositiveInfinity (Indicators.column 0 next)
                        Indicators.outsideOpen -0.2f 0.2f (Indicators.column 1 next)
                        1.0f - Tensor.greater (Tensor.fullLike state 100.0f) state |> Tensor.maxAxis -1 false
                    ])
            "hopper.xml"
            11
            3

    /// Walker2d-v5's health: z = qpos[1] in (0.8, 2) and the torso angle qpos[2] in (−1, 1), strict.
    let private walkerHealthy (sim: Simulation) =
        let z, angle = sim.QposAt 1, sim.QposAt 2
        z > 0.8 && z < 2.0 && angle > -1.0 && angle < 1.0

    /// Walker2d-v5: obs qpos[1:] + clip(qvel, ±10) (17); reward Δx/dt + 1 (while healthy) − 0.001‖a‖²; terminates
    /// when unhealthy; qpos0 + U(±0.005), qvel U(±0.005).
    let walker2d =
        planarWalker
            "Walker2d"
            walkerHealthy
            (fun next ->
                Indicators.any
                    [
                        Indicators.outsideOpen 0.8f 2.0f (Indicators.column 0 next)
                        Indicators.outsideOpen -1.0f 1.0f (Indicators.column 1 next)
                    ])
            "walker2d.xml"
            17
            6

    /// The reward of a locomotion task with a contact cost: forward·Δx/dt + alive (while healthy) − control·‖a‖²
    /// − contactCost(‖contact forces‖²).
    let private contactLocomotionReward
        (forward: float)
        (alive: float)
        (control: float)
        (contactCost: float -> float)
        (contactForces: Simulation -> float[])
        (healthy: Simulation -> bool)
        (t: MuJoCoTransition)
        =
        let contact = contactForces t.Simulation |> Array.sumBy (fun f -> f * f)

        forward * MuJoCoSpec.velocityOf 0 t + (if healthy t.Simulation then alive else 0.0)
        - control * MuJoCoSpec.squaredNorm t.Action
        - contactCost contact

    /// Rollout functions for a task whose reward the model learns and whose episodes end when observation column 0
    /// (the torso's height) leaves [lo, hi] (outside: closed or open bounds).
    let private learnedRewardHeightTermination (outside: float32 -> float32 -> Tensor -> Tensor) (lo: float32) (hi: float32) =
        { Reward = None; Termination = Some(fun _ _ next -> outside lo hi (Indicators.column 0 next)) }

    /// Ant-v5's contact forces: cfrc_ext of every body clipped to [−1, 1] (row 0, the world, is always 0).
    let private antContactForces (sim: Simulation) = sim.Read SimQuantity.CfrcExt |> Array.map (clip -1.0 1.0)

    /// Ant-v5's health: every qpos and qvel finite and z = qpos[2] in [0.2, 1], inclusive.
    let private antHealthy (sim: Simulation) =
        let qpos = sim.Qpos

        Array.forall Double.IsFinite qpos
        && Array.forall Double.IsFinite sim.Qvel
        && qpos.[2] >= 0.2
        && qpos.[2] <= 1.0

    /// Ant-v5 (default observation with contact forces): obs qpos[2:] + qvel + clip(cfrc_ext[1:], ±1) (27 + 78 = 105);
    /// reward Δx/dt of the torso body's frame (xpos, as MuJoCo leaves it after the step) + 1 (while healthy)
    /// − 0.5‖a‖² − 5·10⁻⁴‖clip(cfrc_ext, ±1)‖²; terminates when unhealthy; qpos0 + U(±0.1), qvel 0.1·N(0, 1).
    let ant =
        task
            "Ant"
            5
            (MuJoCoReset.UniformPositionsNormalVelocities 0.1)
            (fun sim -> Array.append (positionsAndVelocities 2 infinity sim) (antContactForces sim |> Array.skip 6 |> Array.map float32))
            (fun sim -> [| sim.ReadAt(SimQuantity.Xpos, 3 * sim.IdOf(MuJoCoObject.Body, "torso")) |])
            (contactLocomotionReward 1.0 1.0 0.5 (fun c -> 5e-4 * c) antContactForces antHealthy)
            (fun t -> not (antHealthy t.Simulation))
            (learnedRewardHeightTermination Indicators.outsideClosed 0.2f 1.0f)
            ("ant.xml", [])
            (105, 8, 1000)

    /// InvertedPendulum-v5: obs qpos + qvel (4); reward 1 while the pole stands, 0 on the failing step; terminates
    /// when |angle| > 0.2 (or the observation is not finite); qpos0 + U(±0.01), qvel U(±0.01).
    let invertedPendulum =
        let fallen (t: MuJoCoTransition) =
            let q, v = t.Simulation.Qpos, t.Simulation.Qvel
            not (Array.forall Double.IsFinite q && Array.forall Double.IsFinite v) || abs q.[1] > 0.2

        task
            "InvertedPendulum"
            2
            (MuJoCoReset.Uniform 0.01)
            (positionsAndVelocities 0 infinity)
            MuJoCoSpec.trackNothing
            (fun t -> if fallen t then 0.0 else 1.0)
            fallen
            {
                Reward = Some(fun _ _ next -> 1.0f - Indicators.outsideClosed -0.2f 0.2f (Indicators.column 1 next))
                Termination = Some(fun _ _ next -> Indicators.outsideClosed -0.2f 0.2f (Indicators.column 1 next))
            }
            ("inverted_pendulum.xml", [])
            (4, 1, 1000)

    /// InvertedDoublePendulum-v5: obs [x, sin θ₁, sin θ₂, cos θ₁, cos θ₂, clip(qvel, ±10), clip(qfrc_constraint[0], ±10)]
    /// (9); reward 10 (while standing) − (0.01·x_tip² + (y_tip − 2)²) − (0.001·ω₁² + 0.005·ω₂²) with the tip site's
    /// position as MuJoCo leaves it after the step; terminates when y_tip ≤ 1; qpos0 + U(±0.1), qvel 0.1·N(0, 1).
    /// The tip's position comes from the kinematics of the step's last physics sub-step, not from the observation,
    /// so model rollouts learn the reward and have no termination function.
    let invertedDoublePendulum =
        let tip (sim: Simulation) =
            let site = 3 * sim.IdOf(MuJoCoObject.Site, "tip")
            sim.ReadAt(SimQuantity.SiteXpos, site), sim.ReadAt(SimQuantity.SiteXpos, site + 2)

        task
            "InvertedDoublePendulum"
            5
            (MuJoCoReset.UniformPositionsNormalVelocities 0.1)
            (fun sim ->
                let qpos, qvel = sim.Qpos, sim.Qvel

                [|
                    yield float32 qpos.[0]
                    for q in qpos.[1..] -> float32 (sin q)
                    for q in qpos.[1..] -> float32 (cos q)
                    for v in qvel -> float32 (clip -10.0 10.0 v)
                    yield float32 (clip -10.0 10.0 (sim.ReadAt(SimQuantity.QfrcConstraint, 0)))
                |])
            MuJoCoSpec.trackNothing
            (fun t ->
                let x, y = tip t.Simulation
                let qvel = t.Simulation.Qvel

                (if y <= 1.0 then 0.0 else 10.0)
                - (0.01 * x * x + (y - 2.0) ** 2.0)
                - (1e-3 * qvel.[1] * qvel.[1] + 5e-3 * qvel.[2] * qvel.[2]))
            (fun t -> snd (tip t.Simulation) <= 1.0)
            { Reward = None; Termination = None }
            ("inverted_double_pendulum.xml", [])
            (9, 1, 1000)

    /// Swimmer-v5: obs qpos[2:] + qvel (8); reward Δx/dt − 10⁻⁴‖a‖²; never terminates; qpos0 + U(±0.1), qvel U(±0.1).
    let swimmer =
        task
            "Swimmer"
            4
            (MuJoCoReset.Uniform 0.1)
            (positionsAndVelocities 2 infinity)
            trackQpos0
            (fun t -> MuJoCoSpec.velocityOf 0 t - 1e-4 * MuJoCoSpec.squaredNorm t.Action)
            (fun _ -> false)
            { Reward = None; Termination = None }
            ("swimmer.xml", [])
            (8, 2, 1000)

    /// Reacher-v5's start: arm joints qpos0 + U(±0.1), the target uniform in the disc of radius 0.2 (by rejection
    /// from the square), arm velocities U(±0.005), target velocity 0.
    let private reacherStart (key: RandomKey) (sim: Simulation) =
        let qpos0 = sim.InitialQpos
        let arm = EnvSupport.uniform (RandomKey.fold 0L key) 2 -0.1f 0.1f

        let rec goal (attempt: int64) =
            let g = EnvSupport.uniform (RandomKey.fold (100L + attempt) key) 2 -0.2f 0.2f

            if sqrt (float g.[0] * float g.[0] + float g.[1] * float g.[1]) < 0.2 then
                g
            else
                goal (attempt + 1L)

        let g = goal 0L
        let qpos = [| qpos0.[0] + float arm.[0]; qpos0.[1] + float arm.[1]; float g.[0]; float g.[1] |]
        let v = EnvSupport.uniform (RandomKey.fold 1L key) 2 -0.005f 0.005f
        qpos, [| float v.[0]; float v.[1]; 0.0; 0.0 |]

    /// The fingertip body's frame minus the target body's (xpos, as MuJoCo leaves it after the step).
    let private fingertipToTarget (sim: Simulation) =
        let fingertip, target =
            3 * sim.IdOf(MuJoCoObject.Body, "fingertip"), 3 * sim.IdOf(MuJoCoObject.Body, "target")

        Array.init 3 (fun k -> sim.ReadAt(SimQuantity.Xpos, fingertip + k) - sim.ReadAt(SimQuantity.Xpos, target + k))

    /// Reacher-v5: obs [cos θ₁, cos θ₂, sin θ₁, sin θ₂, target x, y, ω₁, ω₂, (fingertip − target) x, y] (10); reward
    /// −‖fingertip − target‖ − ‖a‖², both after the step; never terminates; 50 steps. The fingertip and target move
    /// in one plane (their z difference is 0), so the distance is the norm of the observation's last two elements
    /// and the tensor reward equals the environment's up to float32 rounding.
    let reacher =
        task
            "Reacher"
            2
            (MuJoCoReset.Custom reacherStart)
            (fun sim ->
                let qpos, qvel = sim.Qpos, sim.Qvel
                let d = fingertipToTarget sim

                [|
                    cos qpos.[0]
                    cos qpos.[1]
                    sin qpos.[0]
                    sin qpos.[1]
                    qpos.[2]
                    qpos.[3]
                    qvel.[0]
                    qvel.[1]
                    d.[0]
                    d.[1]
                |]
                |> Array.map float32)
            MuJoCoSpec.trackNothing
            (fun t ->
                let d = fingertipToTarget t.Simulation
                -(sqrt (Array.sumBy (fun v -> v * v) d)) - MuJoCoSpec.squaredNorm t.Action)
            (fun _ -> false)
            {
                Reward =
                    Some(fun _ a next ->
                        let d = Tensor.slice -1 8 2 next
                        -(Tensor.sumAxis -1 false (d * d) |> Tensor.sqrt) - Tensor.sumAxis -1 false (a * a))
                Termination = None
            }
            ("reacher.xml", [])
            (10, 2, 50)

    /// The x coordinate of the centre of mass: body masses weighting the bodies' centres of mass (xipos), as
    /// Gymnasium's mass_center.
    let private massCentreX (sim: Simulation) =
        let masses = sim.BodyMasses
        let xipos = sim.Read SimQuantity.Xipos
        (Seq.sum (seq { for b in 0 .. masses.Length - 1 -> masses.[b] * xipos.[3 * b] })) / Array.sum masses

    /// Humanoid-v5 (default observation): qpos[2:], qvel, cinert[1:], cvel[1:], qfrc_actuator[6:], cfrc_ext[1:]
    /// (22 + 23 + 130 + 78 + 17 + 78 = 348); reward 1.25·Δx/dt of the centre of mass + 5 (while healthy)
    /// − 0.1‖ctrl‖² − min(5·10⁻⁷‖cfrc_ext‖², 10); terminates when z = qpos[2] leaves (1, 2); qpos0 + U(±0.01),
    /// qvel U(±0.01). Controls lie in [−0.4, 0.4].
    let humanoid =
        let healthy (sim: Simulation) = let z = sim.QposAt 2 in z > 1.0 && z < 2.0

        task
            "Humanoid"
            5
            (MuJoCoReset.Uniform 0.01)
            (fun sim ->
                let skipWorld (q: SimQuantity) (width: int) = (sim.Read q).[width..]

                Array.concat
                    [
                        sim.Qpos.[2..]
                        sim.Qvel
                        skipWorld SimQuantity.Cinert 10
                        skipWorld SimQuantity.Cvel 6
                        (sim.Read SimQuantity.QfrcActuator).[6..]
                        skipWorld SimQuantity.CfrcExt 6
                    ]
                |> Array.map float32)
            (fun sim -> [| massCentreX sim |])
            (contactLocomotionReward 1.25 5.0 0.1 (fun c -> min (5e-7 * c) 10.0) (fun sim -> sim.Read SimQuantity.CfrcExt) healthy)
            (fun t -> not (healthy t.Simulation))
            (learnedRewardHeightTermination Indicators.outsideOpen 1.0f 2.0f)
            ("humanoid.xml", [])
            (348, 17, 1000)

    /// Every Gymnasium v5 task.
    let all =
        [
            halfCheetah
            hopper
            walker2d
            ant
            invertedPendulum
            invertedDoublePendulum
            swimmer
            reacher
            humanoid
        ]
