/// Saving and restoring a running episode (IRestorableEnv): every built-in task continues bit for bit from a saved
/// state, in a new environment or rewound, time limit included; a state that does not fit is refused naming the part
/// and changes nothing; a wrapper around an environment that cannot save says so.
module Maac.Tests.EnvStateTests

open System
open Expecto
open Maac
open Maac.Envs
open Maac.Envs.MuJoCo
open Maac.Tests.Support

/// What one step gave, as bits: observation, reward, terminated, truncated.
let private stepBits (r: EnvStep) =
    Array.map BitConverter.SingleToInt32Bits r.Observation, BitConverter.DoubleToInt64Bits r.Reward, r.Terminated, r.Truncated

/// Deterministic actions within the action space (a gentle sine per dimension, so that no simulation goes unstable).
let private action (space: Box) (k: int) =
    Array.init space.Dim (fun j ->
        space.Low.[j]
        + (space.High.[j] - space.Low.[j]) * float32 (0.5 + 0.4 * Math.Sin(0.37 * float k + float j)))

/// Steps from step `first` on until the episode ends or `count` steps are taken, with the same actions each time.
let private continueFrom (env: IEnv) (first: int) (count: int) =
    let rec go k acc =
        if k = first + count then
            List.rev acc
        else
            let r = env.Step(action env.ActionSpace k)
            let acc = stepBits r :: acc

            if r.Terminated || r.Truncated then
                List.rev acc
            else
                go (k + 1) acc

    go first []

let private restorable (env: IEnv) =
    match EnvState.tryRestorable env with
    | Some r -> r
    | None -> failtestf "%s cannot save its state" env.Name

/// Every built-in task that can run here (MuJoCo's only with the library; under CI its absence fails).
let private runnableTasks () =
    match Library.unavailableReason () with
    | None -> Tasks.all
    | Some reason when Environment.GetEnvironmentVariable "CI" = "true" -> failtestf "cannot run under CI: %s" reason
    | Some _ -> Tasks.all |> List.filter (fun t -> t.Requires.IsNone)

let private errorOf (f: unit -> unit) =
    try
        f ()
        failtest "expected an exception"
    with
    | :? AssertException -> reraise ()
    | e -> e

let tests =
    testList
        "environment state"
        [
            test "every built-in task saved mid-episode continues bit for bit, in a new environment and rewound, up to its time limit" {
                for task in runnableTasks () do
                    // The episode's length with these actions (some tasks terminate early), then states saved after the
                    // first step and halfway, each continued past the episode's end.
                    let length =
                        use env = task.Create()
                        env.Reset(Some 11L) |> ignore
                        (continueFrom env 0 80).Length

                    for saveAt in List.distinct [ 1; max 1 (min 30 (length / 2)) ] do
                        use env = task.Create()
                        env.Reset(Some 11L) |> ignore
                        let before = continueFrom env 0 saveAt
                        Expect.equal before.Length saveAt (sprintf "%s: no episode end before step %d" task.Name saveAt)
                        let saved = (restorable env).SaveState()
                        let expected = continueFrom env saveAt 40
                        use fresh = task.Create()
                        (restorable fresh).RestoreState saved

                        Expect.equal
                            (continueFrom fresh saveAt 40)
                            expected
                            (sprintf "%s saved at step %d: a new environment continues bit for bit" task.Name saveAt)

                        (restorable env).RestoreState saved

                        Expect.equal
                            (continueFrom env saveAt 40)
                            expected
                            (sprintf "%s saved at step %d: rewound, the same" task.Name saveAt)

                        Expect.equal ((restorable fresh).SaveState() |> List.map fst) (saved |> List.map fst) "the same parts"

                    // Where the episode runs into its time limit, the restored limit truncates at the same step.
                    if length = task.EpisodeSteps then
                        use env = task.Create()
                        env.Reset(Some 11L) |> ignore
                        let half = length / 2
                        continueFrom env 0 half |> ignore
                        let saved = (restorable env).SaveState()
                        use fresh = task.Create()
                        (restorable fresh).RestoreState saved
                        let rest = continueFrom fresh half length
                        Expect.isTrue (let _, _, _, truncated = List.last rest in truncated) (sprintf "%s truncates" task.Name)

                        Expect.equal
                            rest.Length
                            (length - half)
                            (sprintf "%s: the restored time limit counts on from step %d" task.Name half)
            }

            test "a state saved before the first reset restores an environment that must be reset first" {
                for task in runnableTasks () do
                    use unused = task.Create()
                    let saved = (restorable unused).SaveState()
                    use env = task.Create()
                    env.Reset(Some 3L) |> ignore
                    (restorable env).RestoreState saved
                    let e = errorOf (fun () -> env.Step(action env.ActionSpace 0) |> ignore)
                    Expect.stringContains e.Message "Reset" (sprintf "%s: stepping asks for a reset" task.Name)
            }

            test "a saved state that does not fit is refused naming the environment and the part, and nothing changes" {
                use env = (Tasks.find "Pendulum").Create()
                env.Reset(Some 5L) |> ignore
                continueFrom env 0 10 |> ignore
                let r = restorable env
                let saved = r.SaveState()
                let replace (name: string) (values: float[]) = saved |> List.map (fun (n, v) -> if n = name then n, values else n, v)

                let refusals =
                    [
                        saved.Tail, "its parts are [key, started, state]; this environment's are [elapsedSteps, key, started, state]"
                        replace "state" [| 0.5 |], "part 'state' has 1 values where this environment has 2"
                        replace "state" [| 0.5; nan |], "part 'state' element 1 is NaN"
                        replace "key" [| 1.5; 2.0 |], "part 'key' element 0 is 1.5, not a 32-bit word"
                        replace "started" [| 2.0 |], "part 'started' is 2, not 0 or 1"
                        replace "elapsedSteps" [| 201.0 |], "part 'elapsedSteps' is 201, not a whole number in [0, 200]"
                    ]

                let expected = continueFrom env 10 20
                r.RestoreState saved

                for bad, message in refusals do
                    let e = errorOf (fun () -> r.RestoreState bad)
                    Expect.isTrue (e :? ArgumentException) (sprintf "an ArgumentException, got %s" (e.GetType().Name))
                    Expect.stringContains e.Message "Pendulum cannot restore this saved state" "names the environment"
                    Expect.stringContains e.Message message "says what does not fit"

                Expect.equal (continueFrom env 10 20) expected "after the refusals the environment continues as before them"
            }

            test "a MuJoCo state is checked against the model: another task's state, a wrong qpos, an observation that is no float32" {
                match Library.unavailableReason () with
                | Some reason -> skipOrFail reason
                | None ->
                    use hopper = (Tasks.find "Hopper").Create()
                    use cheetah = (Tasks.find "HalfCheetah").Create()
                    hopper.Reset(Some 1L) |> ignore
                    cheetah.Reset(Some 1L) |> ignore
                    continueFrom hopper 0 5 |> ignore
                    let saved = (restorable hopper).SaveState()
                    let other = errorOf (fun () -> (restorable hopper).RestoreState((restorable cheetah).SaveState()))
                    Expect.stringContains other.Message "Hopper cannot restore this saved state" "names the task"

                    Expect.stringContains
                        other.Message
                        "part 'observation' has 17 values where this environment has 11"
                        "and the first part that differs"

                    let replace (name: string) (values: float[]) = saved |> List.map (fun (n, v) -> if n = name then n, values else n, v)

                    let qpos = errorOf (fun () -> (restorable hopper).RestoreState(replace "qpos" [| 0.0 |]))
                    Expect.stringContains qpos.Message "part 'qpos' has 1 values where this environment has 6" "names qpos"
                    let observation = snd (saved |> List.find (fun (n, _) -> n = "observation"))
                    let notSingle = Array.copy observation
                    notSingle.[2] <- 0.1
                    let e = errorOf (fun () -> (restorable hopper).RestoreState(replace "observation" notSingle))
                    Expect.stringContains e.Message "part 'observation' element 2 is 0.1, not a float32" "names the element"
            }

            test
                "a user's model with an actuator activation, a mocap body and userdata: every part read back as restored, and the episode continues bit for bit" {
                match Library.unavailableReason () with
                | Some reason -> skipOrFail reason
                | None ->
                    use folder = new TempFolder("maac-state")
                    let path = IO.Path.Combine(folder.Path, "filtered.xml")

                    IO.File.WriteAllText(
                        path,
                        String.concat
                            ""
                            [
                                "<mujoco model=\"filtered\"><size nuserdata=\"2\"/><worldbody>"
                                "<geom type=\"plane\" size=\"5 5 0.1\"/>"
                                "<body name=\"arm\" pos=\"0 0 0.5\"><joint name=\"hinge\" type=\"hinge\" axis=\"0 1 0\"/>"
                                "<geom type=\"capsule\" fromto=\"0 0 0 0.4 0 0\" size=\"0.05\"/></body>"
                                "<body name=\"target\" mocap=\"true\" pos=\"0.3 0 0.2\"><geom type=\"sphere\" size=\"0.1\"/></body>"
                                "</worldbody><actuator><general joint=\"hinge\" dyntype=\"filter\" dynprm=\"0.05\" gainprm=\"5\" "
                                "ctrllimited=\"true\" ctrlrange=\"-1 1\"/></actuator></mujoco>"
                            ]
                    )

                    let spec =
                        MuJoCoSpec.ofObservations
                            "Filtered"
                            2
                            (MuJoCoReset.Uniform 0.1)
                            (fun sim -> sim.PositionsAndVelocities 0)
                            (fun _ a _ -> -float a.[0] * float a.[0])
                            (fun _ _ _ -> false)

                    use env = MuJoCoTasks.fromFile path spec :> IEnv
                    env.Reset(Some 2L) |> ignore
                    continueFrom env 0 7 |> ignore
                    let saved = (restorable env).SaveState()
                    let size (name: string) = (snd (saved |> List.find (fun (n, _) -> n = name))).Length

                    Expect.equal
                        ([ "act"; "mocapPos"; "mocapQuat"; "userdata" ] |> List.map size)
                        [ 1; 3; 4; 2 ]
                        "one activation, one mocap body's position and orientation, two userdata values"

                    Expect.notEqual (snd (saved |> List.find (fun (n, _) -> n = "act"))).[0] 0.0 "the filter's activation has moved"
                    let expected = continueFrom env 7 20
                    use fresh = MuJoCoTasks.fromFile path spec :> IEnv
                    (restorable fresh).RestoreState saved
                    Expect.equal (continueFrom fresh 7 20) expected "a new environment continues bit for bit"
                    // Every part changed (the mocap body moved, userdata set, another activation), restored and read back.
                    let edited =
                        saved
                        |> List.map (fun (n, v) ->
                            match n with
                            | "mocapPos" -> n, [| 0.1; 0.2; 0.3 |]
                            | "userdata" -> n, [| 1.5; -2.5 |]
                            | "act" -> n, [| 0.25 |]
                            | _ -> n, v)

                    (restorable fresh).RestoreState edited
                    Expect.equal ((restorable fresh).SaveState()) edited "each part is read from where it was written"
            }

            test "a time limit around an environment that cannot save its state says so" {
                let plain =
                    { new IEnv with
                        member _.Name = "Plain"
                        member _.ObservationSpace = Box.unbounded 1
                        member _.ActionSpace = Box.symmetric 1 1.0f
                        member _.Reset _ = { Observation = [| 0.0f |]; Info = EnvSupport.noInfo }

                        member _.Step _ =
                            {
                                Observation = [| 0.0f |]
                                Reward = 0.0
                                Terminated = false
                                Truncated = false
                                Info = EnvSupport.noInfo
                            }

                        member _.Dispose() = ()
                    }

                use limited = new TimeLimit(plain, 10)
                Expect.isNone (EnvState.tryRestorable limited) "not restorable"
                Expect.isFalse (limited :> IRestorableEnv).CanSaveState "CanSaveState is false"
                let e = errorOf (fun () -> (limited :> IRestorableEnv).SaveState() |> ignore)
                Expect.isTrue (e :? NotSupportedException) "NotSupportedException"
                Expect.stringContains e.Message "Plain cannot save or restore its state" "names the wrapped environment"
            }
        ]
