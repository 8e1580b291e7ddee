/// Environments: the checker on every task, hand-computed trajectories, seeding, tensor rewards equal to
/// environment rewards, bad input, MuJoCo layout and instability handling.
module Maac.Tests.EnvTests

open Maac

open System
open System.Diagnostics
open System.IO
open Expecto
open Maac.Tensors
open Maac.Envs
open Maac.Envs.MuJoCo
open Maac.Tests.Support

let private requireMuJoCo () =
    match Library.unavailableReason () with
    | Some reason -> skipOrFail reason
    | None -> ()

/// A test per task; MuJoCo tasks are skipped (with the reason) where the library is missing.
let private perTask (name: string) (body: TaskInfo -> unit) =
    testList
        name
        [
            for t in Tasks.all ->
                test t.Name {
                    if t.Requires.IsSome then
                        requireMuJoCo ()

                    body t
                }
        ]

let private uniformActions (space: Box) (n: int) (seed: int64) =
    let u = EnvSupport.uniform (RandomKey.ofSeed seed) (n * space.Dim) 0.0f 1.0f
    Array.init n (fun t -> Array.init space.Dim (fun j -> space.Low.[j] + (space.High.[j] - space.Low.[j]) * u.[t * space.Dim + j]))

let tests =
    testList
        "environments"
        [
            perTask "every task passes the environment checker" (fun t ->
                use env = t.Create()
                let r = EnvChecker.check 100 env
                Expect.isEmpty r.Problems (sprintf "%s: %A" t.Name r.Problems))

            perTask "sizes match the registry and the tensor reward equals the environment's on recorded transitions" (fun t ->
                use env = t.Create()
                Expect.equal env.ObservationSpace.Dim t.ObservationDim "observation size"
                Expect.equal env.ActionSpace.Dim t.ActionDim "action size"
                let actions = uniformActions env.ActionSpace 120 11L
                let mutable obs = (env.Reset(Some 5L)).Observation
                let rows = Collections.Generic.List<float32[] * float32[] * float32[] * float * bool>()
                let mutable i = 0

                while i < actions.Length do
                    let r = env.Step actions.[i]

                    if r.Truncated then
                        obs <- (env.Reset None).Observation
                    else
                        rows.Add((obs, actions.[i], r.Observation, r.Reward, r.Terminated))

                        obs <-
                            if r.Terminated then
                                (env.Reset None).Observation
                            else
                                r.Observation

                    i <- i + 1

                let stack (pick: float32[] * float32[] * float32[] * float * bool -> float32[]) =
                    let xs = rows |> Seq.map pick |> Seq.toArray
                    Tensor.ofArray [| xs.Length; xs.[0].Length |] (Array.concat xs)

                let o, a, n =
                    stack (fun (o, _, _, _, _) -> o), stack (fun (_, a, _, _, _) -> a), stack (fun (_, _, n, _, _) -> n)

                match t.Functions.Reward with
                | Some f ->
                    let predicted = (f o a n).ToArray()

                    rows
                    |> Seq.iteri (fun k (_, _, _, r, _) ->
                        Expect.floatClose
                            { absolute = 1e-4; relative = 1e-5 }
                            (float predicted.[k])
                            r
                            (sprintf "%s reward of transition %d" t.Name k))
                | None -> Expect.isFalse (t.Definition = "MBBL") "every MBBL task's reward is a function of the observation"

                match t.Functions.Termination with
                | Some f ->
                    let done' = (f o a n).ToArray()

                    rows
                    |> Seq.iteri (fun k (_, _, _, _, term) ->
                        Expect.equal (done'.[k] = 1.0f) term (sprintf "%s termination of transition %d" t.Name k))
                | None when t.Name = "InvertedDoublePendulum" -> () // terminates on the tip site's position, which the observation does not hold
                | None ->
                    Expect.isFalse
                        (rows |> Seq.exists (fun (_, _, _, _, term) -> term))
                        "a task without a termination function never terminates")

            perTask "seeding: the same seed gives the same episode, another seed another start" (fun t ->
                use env = t.Create()

                let run seed =
                    let first = (env.Reset(Some seed)).Observation
                    first :: [ for a in uniformActions env.ActionSpace 20 1L -> (env.Step a).Observation ]

                Expect.equal (run 3L) (run 3L) "same seed"

                if t.Name <> "DoubleIntegrator" then
                    Expect.notEqual (run 3L).Head (run 4L).Head "different seeds start differently")

            test "Pendulum follows the hand-computed equations for a fixed action sequence" {
                use env = new Pendulum()
                let e = env :> IEnv
                e.Reset(Some 0L) |> ignore
                let mutable th, thdot = env.State.[0], env.State.[1]

                for u in [ 1.0; -2.0; 0.5; 2.0; 3.0 ] do
                    let r = e.Step [| float32 u |]
                    let uc = max -2.0 (min 2.0 u) // actions are clipped to [−2, 2]
                    let wrapped = Math.IEEERemainder(th, 2.0 * Math.PI)
                    let expectedReward = -(wrapped * wrapped + 0.1 * thdot * thdot + 0.001 * uc * uc)
                    let newThdot = max -8.0 (min 8.0 (thdot + (15.0 * sin th + 3.0 * uc) * 0.05))
                    th <- th + newThdot * 0.05
                    thdot <- newThdot
                    Expect.floatClose Accuracy.high r.Reward expectedReward "reward"
                    Expect.sequenceEqual r.Observation [| float32 (cos th); float32 (sin th); float32 thdot |] "observation"
            }

            test "the double integrator follows s' = A s + B u with reward −½(sᵀs + u²)" {
                use env = new DoubleIntegrator()
                let e = env :> IEnv
                let first = e.Reset(Some 0L)
                Expect.sequenceEqual first.Observation [| 1.0f; 1.0f |] "starts at (1, 1)"
                let A, B = DoubleIntegrator.A, DoubleIntegrator.B
                let mutable x, v = 1.0, 1.0

                for k in 0..24 do
                    let u = Math.Sin(float k)
                    let r = e.Step [| float32 u |]
                    Expect.floatClose Accuracy.high r.Reward (-0.5 * (x * x + v * v + u * u)) (sprintf "reward at %d" k)
                    let x', v' = A.[0, 0] * x + A.[0, 1] * v + B.[0, 0] * u, A.[1, 0] * x + A.[1, 1] * v + B.[1, 0] * u
                    x <- x'
                    v <- v'
                    Expect.floatClose Accuracy.medium (float r.Observation.[0]) x "position"
                    Expect.floatClose Accuracy.medium (float r.Observation.[1]) v "velocity"

                Expect.floatClose Accuracy.veryHigh B.[0, 0] (0.5 * 0.05 * 0.05) "zero-order-hold B"
            }

            test "episodes end at the time limit with truncated, not terminated" {
                use env = (Tasks.find "Pendulum").Create()
                env.Reset(Some 1L) |> ignore
                let results = [ for _ in 1..200 -> env.Step [| 0.0f |] ]
                Expect.isTrue (List.last results).Truncated "step 200 truncates"
                Expect.isFalse (results |> List.take 199 |> List.exists (fun r -> r.Truncated || r.Terminated)) "no earlier end"
            }

            test "bad actions: wrong size names the task and the size, NaN is refused, out-of-range is clipped" {
                use env = new Pendulum() :> IEnv
                env.Reset(Some 1L) |> ignore
                let wrong = Expect.throwsC (fun () -> env.Step [| 0.0f; 1.0f |] |> ignore) (fun e -> e.Message)
                Expect.stringContains wrong "Pendulum" "names the task"
                Expect.stringContains wrong "size 1" "names the expected size"
                Expect.throwsT<NonFiniteException> (fun () -> env.Step [| nanf |] |> ignore) "NaN refused"

                let a =
                    (env.Reset(Some 2L) |> ignore
                     env.Step [| 50.0f |])

                let b =
                    (env.Reset(Some 2L) |> ignore
                     env.Step [| 2.0f |])

                Expect.equal a.Observation b.Observation "50 is clipped to the bound 2"
            }

            test "unknown task names list the built-in ones" {
                let msg = Expect.throwsC (fun () -> Tasks.find "Pendulm" |> ignore) (fun e -> e.Message)
                Expect.stringContains msg "Pendulum" "lists the names"
            }

            test "parallel evaluation gives the same returns as sequential episodes" {
                let task = Tasks.find "Pendulum"
                let policy (obs: float32[]) = [| -2.0f * obs.[1] - 0.5f * obs.[2] |]
                let parallel' = Evaluation.run task.Create policy 8 100L 200

                let sequential =
                    [|
                        for i in 0..7 -> (use env = task.Create() in Evaluation.episode env policy (100L + int64 i) 200)
                    |]

                Expect.equal parallel' sequential "independent of scheduling"
            }

            test "a user environment with a bad observation size fails the checker with a clear problem" {
                let bad =
                    { new IEnv with
                        member _.Name = "Bad"
                        member _.ObservationSpace = Box.unbounded 3
                        member _.ActionSpace = Box.symmetric 1 1.0f
                        member _.Reset _ = { Observation = [| 0.0f; 0.0f |]; Info = EnvSupport.noInfo }

                        member _.Step a =
                            {
                                Observation = [| 0.0f; 0.0f |]
                                Reward = 0.0
                                Terminated = false
                                Truncated = false
                                Info = EnvSupport.noInfo
                            }

                        member _.Dispose() = ()
                    }

                let r = EnvChecker.check 5 bad
                Expect.isFalse r.Passed "fails"
                Expect.exists r.Problems (fun p -> p.Contains "size 2" && p.Contains "says 3") "names the sizes"
                Expect.exists r.Problems (fun p -> p.Contains "was accepted") "notices unchecked actions"
            }

            testList
                "MuJoCo"
                [
                    test "observation and action sizes are Gymnasium v5's and MBBL's" {
                        requireMuJoCo ()
                        let sizes name = use env = Tasks.make name in env.ObservationSpace.Dim, env.ActionSpace.Dim

                        let expected =
                            [
                                "HalfCheetah", (17, 6)
                                "Hopper", (11, 3)
                                "Walker2d", (17, 6)
                                "Ant", (105, 8)
                                "InvertedPendulum", (4, 1)
                                "InvertedDoublePendulum", (9, 1)
                                "Swimmer", (8, 2)
                                "Reacher", (10, 2)
                                "Humanoid", (348, 17)
                                "HalfCheetah-MBBL", (17, 6)
                                "Hopper-MBBL", (11, 3)
                                "Walker2d-MBBL", (17, 6)
                                "Ant-MBBL", (27, 8)
                            ]

                        for name, size in expected do
                            Expect.equal (sizes name) size name
                    }

                    test "the hard-coded mjModel/mjData offsets match the installed headers" {
                        requireMuJoCo ()

                        if not (File.Exists "/usr/include/mujoco/mujoco.h") then
                            skipOrFail "the headers (Debian package libmujoco-dev) are not installed"

                        use folder = new TempFolder("maac-layout")
                        let dir = folder.Path
                        let src = Path.Combine(AppContext.BaseDirectory, "layout_probe.c")

                        let run (file: string) (args: string) =
                            use p =
                                Process.Start(ProcessStartInfo(file, args, RedirectStandardOutput = true, RedirectStandardError = true))

                            let out = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd()
                            p.WaitForExit()
                            p.ExitCode, out

                        let code, out = run "cc" (sprintf "%s -o %s/layout" src dir)
                        Expect.equal code 0 (sprintf "compiling the layout probe: %s" out)
                        let _, printed = run (Path.Combine(dir, "layout")) ""
                        let lines = printed.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                        Expect.equal lines.Length Layout.all.Length "the probe prints every entry"

                        for line, (expression, offset) in Array.zip lines (Array.ofList Layout.all) do
                            Expect.equal (line.Trim()) (sprintf "%s %d" expression offset) expression
                    }

                    test "an unstable simulation truncates the episode and says so in info" {
                        requireMuJoCo ()
                        use folder = new TempFolder("maac-unstable")
                        let path = Path.Combine(folder.Path, "unstable.xml")

                        File.WriteAllText(
                            path,
                            String.concat
                                ""
                                [
                                    "<mujoco model=\"unstable\"><option timestep=\"0.5\"/><worldbody><body name=\"b\" pos=\"0 0 1\">"
                                    "<joint name=\"j\" type=\"slide\" axis=\"1 0 0\" stiffness=\"1e12\"/><geom type=\"sphere\" size=\"0.1\" mass=\"0.001\"/>"
                                    "</body></worldbody><actuator><motor joint=\"j\" gear=\"1e9\" ctrllimited=\"true\" ctrlrange=\"-1 1\"/></actuator></mujoco>"
                                ]
                        )

                        let spec =
                            MuJoCoSpec.ofObservations
                                "Unstable"
                                1
                                (MuJoCoReset.Uniform 0.5)
                                (fun sim -> sim.PositionsAndVelocities 0)
                                (fun _ _ _ -> 0.0)
                                (fun _ _ _ -> false)

                        use env = MuJoCoTasks.fromFile path spec :> IEnv
                        env.Reset(Some 1L) |> ignore
                        let r, stderr = capturingStandardError (fun () -> env.Step [| 1.0f |])

                        Expect.stringContains
                            stderr
                            "MuJoCo warning: Nan, Inf or huge value in QACC"
                            "MuJoCo's own warning, on standard error"

                        Expect.isTrue r.Truncated "truncated"
                        Expect.isTrue (r.Info.ContainsKey "simulation_unstable") "reported in info"
                        Expect.isTrue (r.Observation |> Array.forall Single.IsFinite) "the observation stays finite"
                    }

                    test "a missing model file is refused with its path" {
                        requireMuJoCo ()

                        let spec =
                            MuJoCoSpec.ofObservations
                                "X"
                                1
                                (MuJoCoReset.Uniform 0.0)
                                (fun s -> s.PositionsAndVelocities 0)
                                (fun _ _ _ -> 0.0)
                                (fun _ _ _ -> false)

                        let msg =
                            Expect.throwsC (fun () -> MuJoCoTasks.fromFile "/nonexistent/model.xml" spec |> ignore) (fun e -> e.Message)

                        Expect.stringContains msg "/nonexistent/model.xml" "names the path"
                    }
                ]
        ]
