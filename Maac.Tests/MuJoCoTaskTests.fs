/// The MuJoCo tasks against their published definitions: compiled physics equal to Gymnasium v5's model files,
/// rewards and terminations of scripted trajectories equal to v5's and MBBL's formulas (restated here from the
/// published code, independently of the library's), reset distributions, and the state beyond qpos/qvel.
module Maac.Tests.MuJoCoTaskTests

open System
open System.IO
open Expecto
open Maac
open Maac.Tensors
open Maac.Envs
open Maac.Envs.MuJoCo
open Maac.Tests.Support

let private requireMuJoCo () =
    match Library.unavailableReason () with
    | Some reason when Environment.GetEnvironmentVariable "CI" = "true" -> failtestf "cannot run under CI: %s" reason
    | Some reason -> skiptest reason
    | None -> ()

let private task (name: string) = GymnasiumTasks.all @ MbblTasks.all |> List.find (fun t -> t.Spec.Name = name)

let private simulationOf (t: MuJoCoTask) = new Simulation(ModelFiles.path (fst t.Model) (snd t.Model))

/// The compiled facts of Gymnasium's model file for a task, dumped through MuJoCo 2.2.2 (see Reference/README.md).
let private reference (name: string) =
    ModelFacts.ofJson (File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Reference", name + ".json")))

/// One scripted episode: (simulation state before, action, step result, simulation state after) per step.
type private Recorded =
    {
        QposBefore: float[]
        QvelBefore: float[]
        Action: float32[]
        Result: EnvStep
        QposAfter: float[]
        QvelAfter: float[]
        ObservationBefore: float32[]
        TorsoXBefore: float
        TorsoXAfter: float
        CfrcExtAfter: float[]
        TipAfter: float[]
        MassCentreXBefore: float
        MassCentreXAfter: float
    }

/// Steps a task's environment with sine-wave actions (bounded by the action space), recording the simulation.
let private record (t: MuJoCoTask) (steps: int) =
    use env = MuJoCoTasks.create t
    let sim = env.Simulation
    let e = env :> IEnv
    let first = e.Reset(Some 17L)

    let torsoX () =
        if t.Spec.Name.StartsWith "Ant" then
            sim.Read(SimQuantity.Xpos).[3 * sim.IdOf(MuJoCoObject.Body, "torso")]
        else
            nan

    let tip () =
        if t.Spec.Name = "InvertedDoublePendulum" then
            sim.Read(SimQuantity.SiteXpos)
        else
            [||]

    let masses = ModelFacts.read sim |> List.find (fun (n, _) -> n = "body_mass") |> snd

    let massCentreX () =
        let xipos = sim.Read SimQuantity.Xipos
        Array.sum (Array.init masses.Length (fun b -> masses.[b] * xipos.[3 * b])) / Array.sum masses

    let space = e.ActionSpace
    let mutable obs = first.Observation

    [
        for k in 0 .. steps - 1 do
            let a = Array.init space.Dim (fun j -> space.High.[j] * float32 (Math.Sin(0.37 * float k + float j)))
            let qb, vb, xb, cb = sim.Qpos, sim.Qvel, torsoX (), massCentreX ()
            let r = e.Step a

            let row =
                {
                    QposBefore = qb
                    QvelBefore = vb
                    Action = a
                    Result = r
                    QposAfter = sim.Qpos
                    QvelAfter = sim.Qvel
                    ObservationBefore = obs
                    TorsoXBefore = xb
                    TorsoXAfter = torsoX ()
                    CfrcExtAfter = sim.Read SimQuantity.CfrcExt
                    TipAfter = tip ()
                    MassCentreXBefore = cb
                    MassCentreXAfter = massCentreX ()
                }

            obs <- r.Observation
            yield row

            if r.Terminated || r.Truncated then
                obs <- (e.Reset None).Observation
    ]

let private sq (a: float32[]) = a |> Array.sumBy (fun x -> float x * float x)
let private clamp lo hi (v: float) = max lo (min hi v)

/// v5's reward and termination of a recorded step, restated from Gymnasium's *_v5.py.
let private gymnasiumV5 (name: string) (dt: float) (r: Recorded) : float * bool =
    let dx = (r.QposAfter.[0] - r.QposBefore.[0]) / dt
    let q, v = r.QposAfter, r.QvelAfter

    match name with
    | "HalfCheetah" -> dx - 0.1 * sq r.Action, false
    | "Hopper" ->
        let healthy =
            Array.append q.[2..] v |> Array.forall (fun s -> -100.0 < s && s < 100.0)
            && 0.7 < q.[1]
            && -0.2 < q.[2]
            && q.[2] < 0.2

        dx + (if healthy then 1.0 else 0.0) - 1e-3 * sq r.Action, not healthy
    | "Walker2d" ->
        let healthy = 0.8 < q.[1] && q.[1] < 2.0 && -1.0 < q.[2] && q.[2] < 1.0
        dx + (if healthy then 1.0 else 0.0) - 1e-3 * sq r.Action, not healthy
    | "Ant" ->
        let healthy = Array.forall Double.IsFinite (Array.append q v) && 0.2 <= q.[2] && q.[2] <= 1.0
        let contact = r.CfrcExtAfter |> Array.sumBy (fun f -> let c = clamp -1.0 1.0 f in c * c)

        (r.TorsoXAfter - r.TorsoXBefore) / dt + (if healthy then 1.0 else 0.0)
        - 0.5 * sq r.Action
        - 5e-4 * contact,
        not healthy
    | "InvertedPendulum" ->
        let terminated = abs q.[1] > 0.2
        (if terminated then 0.0 else 1.0), terminated
    | "InvertedDoublePendulum" ->
        let x, y = r.TipAfter.[0], r.TipAfter.[2]
        let terminated = y <= 1.0

        (if terminated then 0.0 else 10.0)
        - (0.01 * x * x + (y - 2.0) ** 2.0)
        - (1e-3 * v.[1] ** 2.0 + 5e-3 * v.[2] ** 2.0),
        terminated
    | "Swimmer" -> dx - 1e-4 * sq r.Action, false
    | "Humanoid" ->
        let healthy = 1.0 < q.[2] && q.[2] < 2.0
        let contact = min (5e-7 * (r.CfrcExtAfter |> Array.sumBy (fun f -> f * f))) 10.0

        1.25 * (r.MassCentreXAfter - r.MassCentreXBefore) / dt + (if healthy then 5.0 else 0.0)
        - 0.1 * sq r.Action
        - contact,
        not healthy
    | other -> failwithf "no restated v5 formula for %s" other

/// MBBL's reward of a recorded step (from the observation before the step), restated from mbbl/env/gym_env/walker.py.
let private mbbl (name: string) (r: Recorded) =
    let s = r.ObservationBefore |> Array.map float
    let c = 0.1 * sq r.Action

    match name with
    | "HalfCheetah-MBBL" -> s.[8] - c
    | "Hopper-MBBL" -> s.[5] - 3.0 * (s.[0] - 1.3) ** 2.0 - c + 1.0
    | "Walker2d-MBBL" -> s.[8] - 3.0 * (s.[0] - 1.3) ** 2.0 - c + 1.0
    | "Ant-MBBL" -> s.[13] - 3.0 * (s.[0] - 0.57) ** 2.0 - c + 1.0
    | other -> failwithf "no restated MBBL formula for %s" other

let private perTask (label: string) (tasks: MuJoCoTask list) (body: MuJoCoTask -> unit) =
    testList
        label
        [
            for t in tasks ->
                test t.Spec.Name {
                    requireMuJoCo ()
                    body t
                }
        ]

let tests =
    testList
        "MuJoCo tasks: published definitions"
        [
            perTask "the compiled physics equal Gymnasium's model file" (GymnasiumTasks.all @ MbblTasks.all) (fun t ->
                use sim = simulationOf t
                let published = reference (t.Spec.Name.Replace("-MBBL", ""))
                let differences = ModelFacts.differences 1e-9 published (ModelFacts.read sim)

                if t.Spec.Name = "Walker2d-MBBL" then
                    // gym's walker2d.xml, which MBBL ran, has the right foot's friction at 0.9 where v5 has 1.9.
                    let foot = sim.IdOf(MuJoCoObject.Geom, "foot_geom")

                    Expect.equal
                        differences
                        [ sprintf "geom_friction[%d]: 0.90000000000000002, expected 1.8999999999999999" (3 * foot) ]
                        "only the right foot's friction"
                else
                    Expect.isEmpty differences (String.Join("\n", differences)))

            test "the comparison sees a changed value: the old Ant model's negated ankle axes differ from the reference" {
                requireMuJoCo ()
                let published = reference "Ant"

                let edited =
                    ModelFiles.path "ant.xml" [ ModelFiles.SetAttribute("joint", "ankle_2", "axis", "-1 -1 0") ]

                use sim = new Simulation(edited)
                Expect.isNonEmpty (ModelFacts.differences 1e-9 published (ModelFacts.read sim)) "an axis change is found"
            }

            perTask
                "v5 rewards and terminations of a scripted trajectory equal the published formulas"
                (GymnasiumTasks.all |> List.filter (fun t -> t.Spec.Name <> "Reacher"))
                (fun t ->
                    use probe = simulationOf t
                    let dt = probe.Timestep * float t.Spec.FrameSkip
                    let rows = record t 300
                    Expect.isGreaterThan rows.Length 0 "steps recorded"

                    for k, r in List.indexed rows do
                        let reward, terminated = gymnasiumV5 t.Spec.Name dt r

                        Expect.floatClose
                            { absolute = 1e-9; relative = 1e-9 }
                            r.Result.Reward
                            reward
                            (sprintf "%s reward at step %d" t.Spec.Name k)

                        Expect.equal r.Result.Terminated terminated (sprintf "%s termination at step %d" t.Spec.Name k))

            test "Reacher-v5: reward −‖fingertip − target‖ − ‖a‖² after the step, the target still, 50-step episodes" {
                requireMuJoCo ()
                let t = task "Reacher"
                use env = MuJoCoTasks.create t
                let e = env :> IEnv
                let start = e.Reset(Some 3L)
                let goal = start.Observation.[4..5]
                Expect.isLessThan (sqrt (float goal.[0] ** 2.0 + float goal.[1] ** 2.0)) 0.2 "the goal lies in the disc of radius 0.2"

                for k in 0..20 do
                    let a = [| 0.5f * float32 (sin (float k)); -0.3f |]
                    let r = e.Step a
                    let sim = env.Simulation
                    let xpos = sim.Read SimQuantity.Xpos
                    let f, g = 3 * sim.IdOf(MuJoCoObject.Body, "fingertip"), 3 * sim.IdOf(MuJoCoObject.Body, "target")
                    let dist = sqrt (Seq.sum (seq { for i in 0..2 -> (xpos.[f + i] - xpos.[g + i]) ** 2.0 }))
                    Expect.floatClose { absolute = 1e-9; relative = 1e-9 } r.Reward (-dist - sq a) (sprintf "reward at step %d" k)
                    Expect.sequenceEqual r.Observation.[4..5] goal "the target does not move"

                Expect.equal t.EpisodeSteps 50 "50 steps"
            }

            perTask "MBBL rewards are functions of the observation before the step; no early termination" MbblTasks.all (fun t ->
                let rows = record t 300

                for k, r in List.indexed rows do
                    Expect.floatClose
                        { absolute = 1e-6; relative = 1e-6 }
                        r.Result.Reward
                        (mbbl t.Spec.Name r)
                        (sprintf "%s reward at step %d" t.Spec.Name k)

                    Expect.isFalse r.Result.Terminated "MBBL tasks do not terminate early"

                Expect.equal t.EpisodeSteps 1000 "1000 steps")

            perTask
                "reset noise has the published distribution (mean and standard deviation over 2000 resets)"
                (GymnasiumTasks.all |> List.filter (fun t -> t.Spec.Name <> "Reacher"))
                (fun t ->
                    use env = MuJoCoTasks.create t
                    let e = env :> IEnv
                    let sim = env.Simulation
                    let qpos0 = sim.InitialQpos
                    let n = 2000

                    let samples =
                        [|
                            for i in 0 .. n - 1 ->
                                (e.Reset(Some(int64 i)) |> ignore
                                 Array.map2 (-) sim.Qpos qpos0, sim.Qvel)
                        |]

                    let check (what: string) (values: float[]) (expectedStd: float) =
                        let mean = Array.average values
                        let std = sqrt (values |> Array.averageBy (fun v -> (v - mean) ** 2.0))
                        // The mean of n draws has standard error σ/√n: 5 of those; the sample deviation is within 6% at n = 2000.
                        Expect.isLessThan (abs mean) (5.0 * expectedStd / sqrt (float n)) (sprintf "%s: mean %g" what mean)

                        Expect.floatClose
                            { absolute = 0.0; relative = 0.06 }
                            std
                            expectedStd
                            (sprintf "%s: standard deviation %g" what std)

                    let scale, normalVelocities =
                        match t.Spec.Reset with
                        | MuJoCoReset.Uniform s -> s, false
                        | MuJoCoReset.UniformPositionsNormalVelocities s -> s, true
                        | MuJoCoReset.Custom _ -> failtest "not a noise reset"
                    // A free joint's orientation quaternion (Ant's and Humanoid's qpos[3:7]) gets the same noise, but MuJoCo normalises it in
                    // mj_forward (as in Gymnasium's set_state): it is checked to be a unit quaternion instead.
                    let quaternion =
                        if t.Spec.Name = "Ant" || t.Spec.Name = "Humanoid" then
                            set [ 3; 4; 5; 6 ]
                        else
                            Set.empty

                    for i in 0 .. sim.Nq - 1 do
                        if not (quaternion.Contains i) then
                            check (sprintf "qpos[%d]" i) (samples |> Array.map (fun (q, _) -> q.[i])) (scale / sqrt 3.0)

                    if not quaternion.IsEmpty then
                        for q, _ in samples do
                            let norm = sqrt (Seq.sum (seq { for i in 3..6 -> (q.[i] + qpos0.[i]) ** 2.0 }))
                            Expect.floatClose Accuracy.high norm 1.0 "the torso's orientation is a unit quaternion"

                    for i in 0 .. sim.Nv - 1 do
                        check
                            (sprintf "qvel[%d]" i)
                            (samples |> Array.map (fun (_, v) -> v.[i]))
                            (if normalVelocities then scale else scale / sqrt 3.0))

            test "the published reset scales and distributions" {
                let scales =
                    GymnasiumTasks.all @ MbblTasks.all
                    |> List.map (fun t ->
                        t.Spec.Name,
                        match t.Spec.Reset with
                        | MuJoCoReset.Uniform s -> sprintf "uniform %g" s
                        | MuJoCoReset.UniformPositionsNormalVelocities s -> sprintf "uniform/normal %g" s
                        | MuJoCoReset.Custom _ -> "custom")

                Expect.equal
                    scales
                    [
                        "HalfCheetah", "uniform/normal 0.1"
                        "Hopper", "uniform 0.005"
                        "Walker2d", "uniform 0.005"
                        "Ant", "uniform/normal 0.1"
                        "InvertedPendulum", "uniform 0.01"
                        "InvertedDoublePendulum", "uniform/normal 0.1"
                        "Swimmer", "uniform 0.1"
                        "Reacher", "custom"
                        "Humanoid", "uniform 0.01"
                        "HalfCheetah-MBBL", "uniform/normal 0.1"
                        "Hopper-MBBL", "uniform 0.005"
                        "Walker2d-MBBL", "uniform 0.005"
                        "Ant-MBBL", "uniform/normal 0.1"
                    ]
                    "reset noise per task"

                let frameSkips = GymnasiumTasks.all |> List.map (fun t -> t.Spec.Name, t.Spec.FrameSkip)

                Expect.equal
                    frameSkips
                    [
                        "HalfCheetah", 5
                        "Hopper", 4
                        "Walker2d", 4
                        "Ant", 5
                        "InvertedPendulum", 2
                        "InvertedDoublePendulum", 5
                        "Swimmer", 4
                        "Reacher", 2
                        "Humanoid", 5
                    ]
                    "frame skips of the *_v5.py files"
            }

            test "the state beyond qpos/qvel: body positions, inertias, velocities and contact forces agree with the model" {
                requireMuJoCo ()
                use env = MuJoCoTasks.create (task "Ant")
                let sim = env.Simulation
                let e = env :> IEnv
                e.Reset(Some 2L) |> ignore
                let torso = sim.IdOf(MuJoCoObject.Body, "torso")
                // After a reset the torso's frame is at the free joint's position.
                Expect.sequenceEqual
                    (sim.Read(SimQuantity.Xpos).[3 * torso .. 3 * torso + 2])
                    sim.Qpos.[0..2]
                    "xpos of the torso is qpos[0:3]"
                // cinert's last element of each body is its mass.
                let masses = ModelFacts.read sim |> List.find (fun (n, _) -> n = "body_mass") |> snd
                let cinert = sim.Read SimQuantity.Cinert

                for b in 0 .. sim.Nbody - 1 do
                    Expect.floatClose Accuracy.high cinert.[10 * b + 9] masses.[b] (sprintf "cinert mass of body %d" b)

                Expect.equal (sim.Read SimQuantity.Cvel).Length (6 * sim.Nbody) "cvel: 6 per body"
                Expect.equal (sim.Read SimQuantity.QfrcActuator).Length sim.Nv "qfrc_actuator: one per dof"
                // Falling onto the floor: contacts appear and the contact forces are not all zero; the world body's stay zero.
                for _ in 1..20 do
                    e.Step(Array.zeroCreate 8) |> ignore

                Expect.isGreaterThan sim.ContactCount 0 "the ant touches the floor"
                let cfrc = sim.Read SimQuantity.CfrcExt
                Expect.isTrue (cfrc.[6..] |> Array.exists (fun f -> f <> 0.0)) "contact forces are computed after the step"
                Expect.sequenceEqual cfrc.[0..5] (Array.zeroCreate 6) "none on the world body"
                Expect.equal (sim.Read SimQuantity.Xipos).Length (3 * sim.Nbody) "xipos: 3 per body"
            }

            test "a model file for a newer MuJoCo is refused naming the installed version" {
                requireMuJoCo ()
                use folder = new TempFolder("maac-newer")
                let path = Path.Combine(folder.Path, "newer.xml")
                // gravcomp (MuJoCo 2.3.3) is what Gymnasium's own re-exported model files carry.
                File.WriteAllText(path, "<mujoco><worldbody><body gravcomp=\"0\"><geom size=\"0.1\"/></body></worldbody></mujoco>")

                let spec =
                    MuJoCoSpec.ofObservations
                        "Newer"
                        1
                        (MuJoCoReset.Uniform 0.0)
                        (fun s -> s.PositionsAndVelocities 0)
                        (fun _ _ _ -> 0.0)
                        (fun _ _ _ -> false)

                let msg = Expect.throwsC (fun () -> MuJoCoTasks.fromFile path spec |> ignore) (fun e -> e.Message)
                Expect.stringContains msg "2.2.2" "names the installed version"
                Expect.stringContains msg "newer" "says that a newer MuJoCo is needed"
                Expect.stringContains msg path "names the file"
            }

            test "every task says which definition it follows" {
                let definitions = Tasks.all |> List.map (fun t -> t.Name, t.Definition) |> Map.ofList

                for name in
                    [
                        "HalfCheetah"
                        "Hopper"
                        "Walker2d"
                        "Ant"
                        "InvertedPendulum"
                        "InvertedDoublePendulum"
                        "Swimmer"
                        "Reacher"
                        "Humanoid"
                    ] do
                    Expect.equal definitions.[name] "Gymnasium v5" name

                for name in [ "HalfCheetah-MBBL"; "Hopper-MBBL"; "Walker2d-MBBL"; "Ant-MBBL" ] do
                    Expect.equal definitions.[name] "MBBL" name
            }
        ]
