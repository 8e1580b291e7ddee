/// The training state as one value: the trainer is a fold of TrainingStep.step, the agent is one parameter collection
/// that checkpoints are written from, imagined paths accumulate in one place, and divergence names its part.
module Maac.Tests.TrainingStateTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Envs
open Maac.Rl
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Tests.Support

let private bits (a: AgentState) =
    Parameters.tensors a
    |> Array.collect (fun t -> t.ToArray())
    |> Array.map BitConverter.SingleToInt32Bits

let private withoutWall (rows: MetricsRow list) = rows |> List.map (fun r -> { r with WallSeconds = 0.0 }) |> MetricsCsv.text

/// The state after `n` steps of `run` from `init`, and every event those steps published, in order.
let private stepMany (run: TrainingRun) (n: int) (init: TrainingState) =
    Seq.fold (fun (st, evs) _ -> let next, e = TrainingStep.step run (fun () -> 0.0) st in next, evs @ e) (init, []) [ 1..n ]

/// Whether any of the events is a divergence.
let private anyDiverged (events: seq<TrainingEvent>) =
    events
    |> Seq.exists (function
        | Diverged _ -> true
        | _ -> false)

let private tempDir () = Path.Combine(Path.GetTempPath(), "maac-state-" + Guid.NewGuid().ToString "N")

/// Every value of a state that a resumed run must reproduce: the agent's bits, the buffers' contents, the counters,
/// the last episode's return and length (bits) and the metrics rows (wall times aside).
let private fingerprint (st: TrainingState) =
    let bufferBits (b: ReplayBuffer) = b.Arrays |> Array.map (Array.map BitConverter.SingleToInt32Bits)

    bits st.Agent,
    bufferBits st.Real,
    bufferBits st.Imagined,
    (st.Step, st.Episodes, st.Real.Count, st.Imagined.Count),
    (BitConverter.DoubleToInt64Bits st.LastEpisodeReturn, st.LastEpisodeLength),
    withoutWall st.Metrics

/// A run of `settings` on a task stopped (cancelled) after step `stopAt`, with its checkpoint written to `path`.
let private stoppedRun (settings: Settings) (algorithm: Algorithm) (task: TaskInfo) (stopAt: int) (path: string) =
    use cts = new Threading.CancellationTokenSource()
    let t = new Trainer(settings, algorithm, task)

    t.Run(
        settings.Steps,
        (function
        | Stepped p when p.Step = stopAt - 1 -> cts.Cancel()
        | _ -> ()),
        cts.Token
    )

    t.SaveCheckpoint path
    t

/// Pendulum's environment behind an interface that cannot save its state (as a user's environment may be).
let private unrestorablePendulum () =
    let inner = (Tasks.find "Pendulum").Create()

    { new IEnv with
        member _.Name = inner.Name
        member _.ObservationSpace = inner.ObservationSpace
        member _.ActionSpace = inner.ActionSpace
        member _.Reset seed = inner.Reset seed
        member _.Step a = inner.Step a
        member _.Dispose() = inner.Dispose()
    }

let tests =
    testList
        "training state"
        [
            test "a stage clock sees every stage of a step as often as the settings say, and changes no bit" {
                let s = { RlTests.tiny "Pendulum" "maac" with Steps = 240; EvalEvery = 120 }
                let task = Tasks.find "Pendulum"
                let calls = Collections.Generic.Dictionary<string, int>()

                let counting =
                    { new IStageClock with
                        member _.Stage(name, work) =
                            calls.[name] <-
                                (match calls.TryGetValue name with
                                 | true, n -> n
                                 | _ -> 0)
                                + 1

                            work ()
                    }

                let runWith (clock: IStageClock) =
                    let run = { TrainingStep.createRun s Algorithms.maac task with Stages = clock }
                    use _env = run.Env
                    let init = TrainingState.init s (TrainingStep.key run KeyPurpose.AgentInit 0) 3 1 false
                    Seq.fold (fun st _ -> fst (TrainingStep.step run (fun () -> 0.0) st)) init [ 1 .. s.Steps ]

                let timed, plain = runWith counting, runWith StageClock.untimed
                Expect.equal (bits timed.Agent) (bits plain.Agent) "the clock changes no parameter bit"
                let learning = s.Steps - s.RandomSteps
                let fits = 1 + learning / s.ModelTrainEvery
                let updates = learning * s.UpdatesPerStep

                let expected =
                    [
                        StageName.Acting, s.Steps
                        StageName.Environment, s.Steps
                        StageName.ModelFit, fits
                        StageName.ImaginedRollouts, fits
                        StageName.BatchSampling, updates
                        StageName.CriticTargets, updates
                        StageName.CriticUpdate, updates
                        StageName.ActorUpdate, updates
                        StageName.Temperature, updates
                        StageName.ReadBackAndPolyak, updates
                        StageName.Evaluation, s.Steps / s.EvalEvery
                    ]

                for name, n in expected do
                    Expect.equal
                        (match calls.TryGetValue name with
                         | true, c -> c
                         | _ -> 0)
                        n
                        (sprintf "calls of stage '%s'" name)
            }

            test "the trainer's Run is the fold of TrainingStep.step: same agent bits, buffers, counters and metrics" {
                let s = { RlTests.tiny "Pendulum" "maac" with Steps = 300; EvalEvery = 100 }
                let task = Tasks.find "Pendulum"
                use t = new Trainer(s, Algorithms.maac, task)
                let events = Collections.Generic.List<TrainingEvent>()
                t.Run(300, events.Add, Threading.CancellationToken.None)
                let run = TrainingStep.createRun s Algorithms.maac task
                use _env = run.Env
                let init = TrainingState.init s (TrainingStep.key run 1L 0) 3 1 false

                let folded, foldedEvents = stepMany run 300 init

                Expect.equal (bits folded.Agent) (bits t.State.Agent) "the same parameters and moments, bit for bit"

                Expect.equal
                    (folded.Step, folded.Episodes, folded.Real.Count, folded.Imagined.Count)
                    (t.State.Step, t.State.Episodes, t.State.Real.Count, t.State.Imagined.Count)
                    "the same counters and buffers"

                Expect.equal (withoutWall folded.Metrics) (withoutWall t.State.Metrics) "the same metrics rows"

                let kinds (es: TrainingEvent seq) =
                    es
                    |> Seq.choose (function
                        | Stepped _ -> None
                        | Evaluated r -> Some(sprintf "evaluated %d" r.Step)
                        | e -> Some(sprintf "%A" e))
                    |> Seq.toList

                Expect.equal (kinds events) (kinds foldedEvents) "the trainer publishes the step's events, in order"

                Expect.equal
                    (events
                     |> Seq.filter (function
                         | Stepped _ -> true
                         | _ -> false)
                     |> Seq.length)
                    300
                    "and one Stepped per environment step"

                Expect.contains (kinds events) "evaluated 300" "an evaluation at the budget"

                Expect.isTrue
                    (events
                     |> Seq.exists (function
                         | ModelFitted _ -> true
                         | _ -> false))
                    "the model fits are events"
            }

            test
                "the agent is one parameter collection: unique checkpoint names, a rebuild round trip, and checkpoints hold exactly its tensors and the buffers" {
                let s = RlTests.tiny "Pendulum" "maac"
                let a = Agent.init s (key 3) 3 1 false
                let named = (a :> IParameters<_>).Named
                Expect.equal (named |> Array.map fst |> Array.distinct).Length named.Length "names are unique"

                for prefix in
                    [
                        "policy."
                        "policyOpt.m."
                        "policyOpt.v."
                        "critics."
                        "criticsOpt."
                        "targetCritics."
                        "temperature."
                        "temperatureOpt."
                        "model."
                        "modelOpt."
                        "modelStats."
                    ] do
                    Expect.isTrue (named |> Array.exists (fun (n, _) -> n.StartsWith prefix)) (sprintf "holds %s*" prefix)

                let shifted = Parameters.map (fun t -> t + 1.0f) a

                Expect.equal
                    (Parameters.tensors shifted |> Array.map (fun t -> t.ToArray()))
                    (named |> Array.map (fun (_, t) -> (t + 1.0f).ToArray()))
                    "rebuild puts every tensor back in its place"

                Expect.equal shifted.Model.Elites a.Model.Elites "the elites are kept"
                let st = TrainingState.init s (key 3) 3 1 false
                let arrays, meta = TrainingState.toCheckpoint s "maac" "Pendulum" None st

                let expected =
                    Array.append
                        (named |> Array.map fst)
                        [|
                            for b in [ "real"; "imagined" ] do
                                for i in 0..4 -> sprintf "%s.%d" b i
                        |]

                Expect.equal
                    (arrays |> List.map (fun x -> x.Name) |> List.toArray)
                    expected
                    "the checkpoint's tensors are the state's named tensors and the buffers"

                Expect.equal meta.["adamSteps"] "0,0,0,0" "Adam's step counts in the metadata"
            }

            testPropertyWithConfig
                config
                "an imagined path's return is Σ γᵗ rₜ up to the first done flag, closed by γᴴ·V where still alive"
                (fun () ->
                    Prop.forAll
                        (Arb.fromGen (
                            gen {
                                let! n = Gen.choose (1, 5)
                                let! h = Gen.choose (0, 5)
                                let! rewards = Gen.arrayOfLength (n * h) (Gen.choose (-100, 100))
                                let! dones = Gen.arrayOfLength (n * h) (Gen.elements [ 0; 0; 0; 1 ])
                                let! terminal = Gen.arrayOfLength n (Gen.choose (-100, 100))

                                return
                                    n,
                                    h,
                                    rewards |> Array.map (fun r -> float32 r / 10.0f),
                                    dones |> Array.map float32,
                                    terminal |> Array.map float32
                            }
                        ))
                        (fun (n, h, rewards, dones, terminal) ->
                            let gamma = 0.9f
                            let row (t: int) (v: float32[]) = Tensor.ofArray [| n |] v.[t * n .. (t + 1) * n - 1]
                            let stepAt (t: int) (s: Tensor) = s + 1.0f, row t rewards, row t dones
                            let path = ImaginedPath.start (Tensor.zeros [| n; 2 |]) |> ImaginedPath.unroll gamma h stepAt
                            let closed = (ImaginedPath.close path (Tensor.ofArray [| n |] terminal)).ToArray()
                            let scanned = ImaginedPath.start (Tensor.zeros [| n; 2 |]) |> ImaginedPath.scan gamma h stepAt

                            for i in 0 .. n - 1 do
                                let mutable expected, alive, disc = 0.0, 1.0, 1.0

                                for t in 0 .. h - 1 do
                                    expected <- expected + disc * alive * float rewards.[t * n + i]
                                    alive <- alive * (1.0 - float dones.[t * n + i])
                                    disc <- disc * float gamma

                                expected <- expected + disc * alive * float terminal.[i]
                                Expect.floatClose { absolute = 1e-4; relative = 1e-5 } (float closed.[i]) expected (sprintf "row %d" i)

                            Expect.equal scanned.Length (h + 1) "scan keeps the start and every step"
                            Expect.equal ((Array.last scanned).Return.ToArray()) (path.Return.ToArray()) "scan ends where unroll does"

                            Expect.equal
                                ((Array.last scanned).State.ToArray())
                                (Array.create (2 * n) (float32 h))
                                "the state moved h times"))

            test "a diverging part ends the run with a Diverged event, the part's name, the step and what the folder keeps" {
                let s =
                    { RlTests.tiny "Pendulum" "sac" with
                        CriticLearningRate = 1e30f
                        ActorLearningRate = 1e30f
                        Steps = 400
                    }

                let dir = tempDir ()

                try
                    use session = RunSession.Start(s, Algorithms.sac, Tasks.find "Pendulum", Some dir)
                    let events = Collections.Generic.List<TrainingEvent>()

                    let e =
                        Expect.throwsC (fun () -> session.Train(400, events.Add, ignore, Threading.CancellationToken.None)) id

                    match e with
                    | :? DivergenceException as d ->
                        Expect.contains [ "critic"; "policy"; "temperature" ] d.Part "names an agent part"
                        Expect.stringContains d.Message "diverged at step" "and the step"

                        Expect.isTrue
                            (d.Message.Contains "The last good checkpoint (step 200)"
                             || d.Message.Contains "No checkpoint had been written yet")
                            (sprintf "says what is kept: %s" d.Message)

                        Expect.isTrue (anyDiverged events) "a Diverged event was published first"

                        let onDisk =
                            if File.Exists(RunFolder.checkpointFile dir) then
                                (RunFolder.readRows dir |> Array.length)
                            else
                                0

                        Expect.equal onDisk (session.Trainer.Metrics.Length) "metrics.csv agrees with what the session kept"

                        Expect.isTrue
                            session.Trainer.State.Episode.IsNone
                            "the episode is cut: the state is the one before the step, the environment one step on"
                    | other -> failtestf "a DivergenceException, got %s: %s" (other.GetType().Name) other.Message
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test "a run folder one session trains is refused to a second, which reads and changes nothing; released, it opens" {
                let s = { RlTests.tiny "Pendulum" "sac" with Steps = 200 }
                let task = Tasks.find "Pendulum"
                let dir = tempDir ()

                let files () =
                    [ RunFolder.configFile dir; RunFolder.metricsFile dir; RunFolder.checkpointFile dir ]
                    |> List.map File.ReadAllBytes

                try
                    do
                        use first = RunSession.Start(s, Algorithms.sac, task, Some dir)
                        first.Train(200, ignore, ignore, Threading.CancellationToken.None)
                        let before = files ()

                        let refused (what: string) (claim: unit -> RunSession) =
                            let e = Expect.throwsC (fun () -> (claim () :> IDisposable).Dispose()) id
                            Expect.equal (e.GetType()) typeof<IOException> (sprintf "%s: an IOException, got %s" what e.Message)
                            Expect.stringContains e.Message dir (sprintf "%s: names the folder" what)
                            Expect.stringContains e.Message "in use" (sprintf "%s: says why" what)

                        // resume would rewrite config.json with the new budget, start would refuse another run's folder
                        refused "resume" (fun () -> RunSession.Resume(dir, task, Some 400))
                        refused "open" (fun () -> RunSession.Open(dir, task))
                        refused "start" (fun () -> RunSession.Start(s, Algorithms.sac, task, Some dir))
                        Expect.equal (files ()) before "config.json, metrics.csv and the checkpoint are untouched"

                    use again = RunSession.Resume(dir, task, Some 400)
                    Expect.equal again.Trainer.Step 200 "the released folder resumes from its checkpoint"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            testProperty "the soft value bound is the best discounted soft return over every time an episode may end"
            <| fun (g: int) (a: int) (d: int) (r: int) ->
                // γ in [0.5, 0.995], α in [0, 5], 1 to 8 action dimensions, the largest reward in [−20, 20]
                let gamma = 0.5 + float (abs (g % 100)) * 0.005
                let alpha, dims, rMax = float (abs (a % 51)) * 0.1, 1 + abs (d % 8), float (r % 2001) * 0.01
                let perStep = rMax + alpha * float dims * log 2.0
                // Ending after T more steps earns rMax + Σₜ₌₁..T γᵗ perStep; γ^6000 < e^-30 leaves nothing to add.
                let best =
                    Seq.scan (fun (sum, discount) _ -> sum + discount * perStep, discount * gamma) (rMax, gamma) [ 1..6000 ]
                    |> Seq.map fst
                    |> Seq.max

                let bound = float (CriticValueCheck.softValueBound (float32 gamma) (float32 alpha) dims (float32 rMax))
                // float32 arithmetic on values of at most ~5,000: a few ulps of 5,000 is under 1e-2
                abs (bound - best) <= 1e-2 + 1e-5 * abs best

            test "critics that value the real data above what the rewards allow stop the run at the evaluation, naming the step" {
                let s = { RlTests.tiny "Pendulum" "sac" with Steps = 400 }
                let task = Tasks.find "Pendulum"
                let run = TrainingStep.createRun s Algorithms.sac task
                use _env = run.Env
                let init = TrainingState.init s (TrainingStep.key run KeyPurpose.AgentInit 0) 3 1 false
                let stepOnce st = TrainingStep.step run (fun () -> 0.0) st

                let before, earlier = stepMany run 399 init

                Expect.isFalse (anyDiverged earlier) "a sound run passes the check at its evaluations"

                let critics = before.Agent.Critics
                // the output layer's bias of each twin: the last bias of q1 and of q2
                let outputBiases =
                    Parameters.names critics
                    |> Array.filter (fun n -> n.EndsWith ".bias")
                    |> Array.groupBy (fun n -> n.Split('.').[0])
                    |> Array.map (snd >> Array.last)
                    |> set

                let shifted (by: float32) =
                    Parameters.names critics
                    |> Array.zip (Parameters.tensors critics)
                    |> Array.map (fun (t, n) -> if outputBiases.Contains n then t + by else t)
                    |> Parameters.rebuild critics

                // Shifting both output biases by c shifts min(Q1, Q2) by c everywhere: place the smallest value over
                // every real transition 17 above the threshold (more than Pendulum's largest reward magnitude, 16.3,
                // which a new transition could add to it, and one gradient step's change), or the largest 1 below it.
                let limits = CriticValueCheck.limits s before
                // Pendulum's rewards lie in [−(π² + 0.1 · 8² + 0.001 · 2²), 0] = [−16.2736, 0]
                Expect.isLessThanOrEqual
                    limits.Threshold
                    (max limits.Bound 0.0f + 16.2736f)
                    "the threshold is the bound or 0, whichever is larger, plus at most Pendulum's largest reward magnitude"

                let all = before.Real.All()
                let values = (Critics.minQ critics all.Obs all.Action).Primal.ToArray()

                let raised =
                    { before with
                        Agent = { before.Agent with Critics = shifted (limits.Threshold + 17.0f - Array.min values) }
                    }

                let after, events = stepOnce raised

                match events with
                | [ Diverged e ] ->
                    Expect.equal e.Part "critic" "the critics' divergence"
                    Expect.stringContains e.Message "at step 400" "names the step"
                    Expect.stringContains e.Message "above" "and the bound"
                    Expect.isTrue (obj.ReferenceEquals(after, raised)) "the state before the step is kept"
                | other -> failtestf "one Diverged event, got %A" other

                for by, why in
                    [
                        limits.Threshold - 1.0f - Array.max values, "values just below the threshold pass"
                        -1e4f, "values far below pass: only the upper side has a bound that holds for every policy"
                    ] do
                    Expect.isFalse (anyDiverged (snd (stepOnce { before with Agent = { before.Agent with Critics = shifted by } }))) why

                let unchecked = { run with Settings = { s with CriticValueCheck = false } }

                Expect.isFalse
                    (anyDiverged (snd (TrainingStep.step unchecked (fun () -> 0.0) raised)))
                    "with CriticValueCheck off the run goes on"
            }

            test "a critic still learning how negative Pendulum's rewards are is not called diverged" {
                // Every reward of the first 200 steps is below −5, so no policy is worth more than about −5, while the
                // critics start near 0 and have had 100 gradient steps to come down: between their start and the
                // truth, learning, not diverging.
                let s = { RlTests.tiny "Pendulum" "sac" with Seed = 1L; Steps = 200; EvalEvery = 100 }
                let run = TrainingStep.createRun s Algorithms.sac (Tasks.find "Pendulum")
                use _env = run.Env
                let init = TrainingState.init s (TrainingStep.key run KeyPurpose.AgentInit 0) 3 1 false

                let final, events = stepMany run 200 init

                Expect.isLessThan final.Real.MaxReward -1.0f "the rewards so far are all well below 0"

                Expect.isFalse (anyDiverged events) "no divergence reported"
            }

            test "a diverging run without a folder says that nothing was written" {
                let s = { RlTests.tiny "Pendulum" "sac" with CriticLearningRate = 1e30f; ActorLearningRate = 1e30f }
                use session = RunSession.Start(s, Algorithms.sac, Tasks.find "Pendulum", None)

                let msg =
                    Expect.throwsC (fun () -> session.Train(400, ignore, ignore, Threading.CancellationToken.None)) (fun e -> e.Message)

                Expect.stringContains msg "Nothing was written to disk" "in memory"
            }

            test "a checkpoint with a non-finite moment is refused on save as that part's divergence, and the old file stays" {
                let s = { RlTests.tiny "Pendulum" "sac" with Steps = 200 }
                let dir = tempDir ()

                try
                    use session = RunSession.Start(s, Algorithms.sac, Tasks.find "Pendulum", Some dir)
                    session.Train(200, ignore, ignore, Threading.CancellationToken.None)
                    let before = File.ReadAllBytes(RunFolder.checkpointFile dir)
                    let t = session.Trainer
                    let st = t.State

                    let poisoned =
                        { st.Agent.CriticsOpt with
                            SecondMoment = st.Agent.CriticsOpt.SecondMoment |> Array.mapi (fun i m -> if i = 0 then m * nanf else m)
                        }

                    let file = Path.Combine(dir, "poisoned.safetensors")

                    let arrays, meta =
                        TrainingState.toCheckpoint s "sac" "Pendulum" None { st with Agent = { st.Agent with CriticsOpt = poisoned } }

                    let e = Expect.throwsC (fun () -> Checkpoint.save file arrays meta) id
                    Expect.isTrue (e :? NonFiniteException) "refused"
                    Expect.stringContains e.Message "criticsOpt.v.0" "naming the moment"
                    Expect.isFalse (File.Exists file) "nothing written"
                    Expect.equal (File.ReadAllBytes(RunFolder.checkpointFile dir)) before "the run's checkpoint is untouched"
                    Expect.equal (TrainingState.partOfTensor "criticsOpt.v.0") "critic" "a critic moment is the critic's divergence"

                    Expect.equal
                        ([
                            "policyOpt.m.1"
                            "targetCritics.q1.layer0.bias"
                            "temperatureOpt.v.0"
                            "modelStats.inputStd"
                            "real.2"
                         ]
                         |> List.map TrainingState.partOfTensor)
                        [ "policy"; "critic"; "temperature"; "model"; "buffer" ]
                        "every part by its prefix"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test
                "a run stopped between evaluations resumes from its checkpoint bit for bit: the running episode and the environment's state are saved" {
                let cases =
                    [
                        "Pendulum", Algorithms.sac, 150
                        "Pendulum", Algorithms.mbpo, 333
                        if Maac.Envs.MuJoCo.Library.isAvailable () || Environment.GetEnvironmentVariable "CI" = "true" then
                            "Hopper", Algorithms.maac, 257
                    ]

                for taskName, algorithm, stopAt in cases do
                    let s = { RlTests.tiny taskName algorithm.Name with Steps = 400; EvalEvery = 100 }
                    let task = Tasks.find taskName
                    use whole = new Trainer(s, algorithm, task)
                    whole.Run(s.Steps, ignore, Threading.CancellationToken.None)
                    let dir = tempDir ()
                    let path = Path.Combine(dir, "checkpoint.safetensors")

                    try
                        use stopped = stoppedRun s algorithm task stopAt path
                        let what = sprintf "%s %s stopped at %d" taskName algorithm.Name stopAt
                        Expect.equal stopped.Step stopAt (sprintf "%s: stopped there" what)
                        Expect.isTrue stopped.State.Episode.IsSome (sprintf "%s: in the middle of an episode" what)
                        Expect.isTrue stopped.ResumesExactly "a built-in task can save its state"

                        Expect.isTrue
                            ((snd (Checkpoint.load path)).ContainsKey "runningEpisode")
                            (sprintf "%s: the checkpoint holds the episode" what)

                        use resumed = new Trainer(s, algorithm, task)
                        resumed.LoadCheckpoint path |> ignore
                        Expect.equal resumed.State.Episode stopped.State.Episode (sprintf "%s: the episode is restored" what)
                        resumed.Run(s.Steps, ignore, Threading.CancellationToken.None)
                        Expect.equal (fingerprint resumed.State) (fingerprint whole.State) (sprintf "%s: resumed equals uninterrupted" what)
                    finally
                        if Directory.Exists dir then
                            Directory.Delete(dir, true)
            }

            test "an environment that cannot save its state has the episode cut at a stop, and a saved episode is refused there" {
                let s = { RlTests.tiny "Pendulum" "sac" with Steps = 300; EvalEvery = 100 }
                let task = { Tasks.find "Pendulum" with Create = unrestorablePendulum }
                let dir = tempDir ()

                try
                    let cutPath = Path.Combine(dir, "cut.safetensors")
                    use stopped = stoppedRun s Algorithms.sac task 150 cutPath
                    Expect.isFalse stopped.ResumesExactly "it cannot resume exactly"
                    Expect.isTrue stopped.State.Episode.IsNone "the episode was cut"
                    let meta = snd (Checkpoint.load cutPath)
                    Expect.isFalse (meta.ContainsKey "runningEpisode") "no episode in the checkpoint"
                    Expect.equal meta.["episodes"] (string stopped.State.Episodes) "the cut episode is counted"
                    let savedPath = Path.Combine(dir, "saved.safetensors")
                    (stoppedRun s Algorithms.sac (Tasks.find "Pendulum") 150 savedPath :> IDisposable).Dispose()
                    use other = new Trainer(s, Algorithms.sac, task)

                    let e = Expect.throwsC (fun () -> other.LoadCheckpoint savedPath |> ignore) (fun e -> e)

                    Expect.isTrue (e :? CheckpointException) "a CheckpointException"
                    Expect.stringContains e.Message savedPath "names the file"
                    Expect.stringContains e.Message "holds a running episode, but Pendulum cannot restore an environment's state" "says why"
                    Expect.equal other.Step 0 "nothing was loaded"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test "a saved episode that does not fit is refused naming the file, the key and what is wrong; nothing is loaded" {
                let s = { RlTests.tiny "Pendulum" "sac" with Steps = 300; EvalEvery = 100 }
                let task = Tasks.find "Pendulum"
                let dir = tempDir ()

                try
                    let path = Path.Combine(dir, "good.safetensors")
                    (stoppedRun s Algorithms.sac task 150 path :> IDisposable).Dispose()
                    let arrays, meta = Checkpoint.load path
                    let episode = meta.["runningEpisode"]
                    let edited = System.Text.Json.Nodes.JsonNode.Parse(episode)
                    edited.["environment"].["state"] <- System.Text.Json.Nodes.JsonArray(System.Text.Json.Nodes.JsonValue.Create 0.5)
                    let observation = System.Text.Json.Nodes.JsonNode.Parse(episode)
                    observation.["observation"].[1] <- System.Text.Json.Nodes.JsonValue.Create "x"

                    let cases =
                        [
                            edited.ToJsonString(),
                            "metadata 'runningEpisode': Pendulum cannot restore this saved state: part 'state' has 1 values where this environment has 2"
                            observation.ToJsonString(), "metadata 'runningEpisode' 'observation' element 1 is \"x\", not a finite number"
                            episode.Replace("\"length\":", "\"length\":-"), "metadata 'runningEpisode' 'length' is -"
                            "[1]", "metadata 'runningEpisode' is not a JSON object"
                        ]

                    for i, (text, message) in List.indexed cases do
                        let bad = Path.Combine(dir, sprintf "bad%d.safetensors" i)
                        Checkpoint.save bad (arrays.Values |> List.ofSeq) (meta.Add("runningEpisode", text))
                        use t = new Trainer(s, Algorithms.sac, task)
                        let e = Expect.throwsC (fun () -> t.LoadCheckpoint bad |> ignore) (fun e -> e)
                        Expect.isTrue (e :? CheckpointException) (sprintf "a CheckpointException, got %s" (e.GetType().Name))
                        Expect.stringContains e.Message bad "names the file"
                        Expect.stringContains e.Message message "says what is wrong"
                        Expect.equal (t.Step, t.State.Real.Count) (0, 0) "nothing was loaded"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test "a run of a user-composed variant reopens once the variant is registered under its name" {
                let variant = { Algorithms.maac with Name = "maac-test-horizon1"; ActorHorizon = fun _ _ -> 1 }
                let s = { RlTests.tiny "Pendulum" variant.Name with Steps = 200 }
                let dir = tempDir ()

                try
                    do
                        use session = RunSession.Start(s, variant, Tasks.find "Pendulum", Some dir)
                        session.Train(200, ignore, ignore, Threading.CancellationToken.None)

                    let before =
                        Expect.throwsC (fun () -> (RunFolder.loadTrainer dir :> IDisposable).Dispose()) (fun e -> e.Message)

                    Expect.stringContains before "maac-test-horizon1" "an unknown variant is named"
                    Expect.stringContains before "Algorithms.register" "and the way to make it known"
                    Algorithms.register variant
                    use reopened = RunFolder.loadTrainer dir
                    Expect.equal reopened.Algorithm.Name variant.Name "the registered variant"
                    Expect.equal (reopened.Algorithm.ActorHorizon s 0) 1 "with its own schedule"
                    Expect.equal reopened.Step 200 "and the run's state"

                    Expect.throwsT<ArgumentException>
                        (fun () -> Algorithms.register { variant with Name = "MAAC" })
                        "a built-in name is refused"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }
        ]
