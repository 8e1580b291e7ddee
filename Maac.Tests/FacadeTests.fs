/// The C# façade as an application meets it: its public surface, options validation, user environments
/// (checked, trained on, with a reward function for rollouts), save/load, cancellation.
module Maac.Tests.FacadeTests

open System
open System.IO
open System.Reflection
open System.Threading
open Expecto
open Maac
open Maac.Tensors

/// A one-dimensional reaching task written against the façade's interface, as a C# user would:
/// x' = clip(x + 0.2·a, −1, 1), reward −x'², 20 steps, x₀ uniform from the seed. A fault can be asked for: "noise"
/// (a little reward noise: not reproducible), a NaN observation from the instance's `nanAt`-th step on (counted
/// across episodes; with "nan reward" the reward is NaN instead), or a reward function that disagrees with Step
/// ("wrong reward") or has the wrong shape ("wrong shape").
type Reach(?observationSize: int, ?fault: string, ?nanAt: int) =
    let size = defaultArg observationSize 1
    let fault = defaultArg fault ""
    let mutable x = 0.0f
    let mutable steps = 0
    let mutable rng = Random 0
    member val Disposed = false with get, set

    interface IEnvironment with
        member _.Name = "Reach"
        member _.ObservationSpace = BoxSpace.Symmetric(1, 1.0f)
        member _.ActionSpace = BoxSpace.Symmetric(1, 1.0f)
        member _.MaxEpisodeSteps = 20

        member _.Reset(seed: Nullable<int64>) =
            if seed.HasValue then
                rng <- Random(int seed.Value)

            x <- float32 (rng.NextDouble() * 2.0 - 1.0)
            Array.create size x

        member _.Step(action: float32[]) =
            x <- Math.Clamp(x + 0.2f * action.[0], -1.0f, 1.0f)
            steps <- steps + 1

            let noise =
                if fault = "noise" then
                    1e-6 * Random.Shared.NextDouble()
                else
                    0.0

            let broken = steps >= defaultArg nanAt Int32.MaxValue

            let obs =
                if broken && fault <> "nan reward" then
                    [| nanf |]
                else
                    [| x |]

            let reward =
                if broken && fault = "nan reward" then
                    nan
                else
                    float (-(x * x)) + noise

            StepResult(obs, reward, false, false)

    interface IRewardFunction with
        member _.Reward(_, _, next) =
            match fault with
            | "wrong reward" -> next.Column(0).Square()
            | "wrong shape" -> next.Square()
            | _ -> -(next.Column(0).Square())

    interface IDisposable with
        member this.Dispose() = this.Disposed <- true

/// A point that glides towards the origin, written as a C# user would, with its state saved and restored
/// (IRestorableEnvironment): v' = 0.9·v + 0.1·a, x' = clip(x + 0.1·v', −1, 1), reward −x'², 50 steps, x₀ from the seed.
/// With `forgetVelocity` its SaveState leaves v out, as a careless implementation might.
type Glide(?forgetVelocity: bool) =
    let forget = defaultArg forgetVelocity false
    let mutable x = 0.0
    let mutable v = 0.0

    interface IEnvironment with
        member _.Name = "Glide"
        member _.ObservationSpace = BoxSpace.Symmetric(2, 10.0f)
        member _.ActionSpace = BoxSpace.Symmetric(1, 1.0f)
        member _.MaxEpisodeSteps = 50

        member _.Reset(seed: Nullable<int64>) =
            x <- Random(if seed.HasValue then int seed.Value else 0).NextDouble() * 2.0 - 1.0
            v <- 0.0
            [| float32 x; float32 v |]

        member _.Step(action: float32[]) =
            v <- 0.9 * v + 0.1 * float action.[0]
            x <- Math.Clamp(x + 0.1 * v, -1.0, 1.0)
            StepResult([| float32 x; float32 v |], -(x * x), false, false)

    interface IRestorableEnvironment with
        member _.SaveState() =
            [|
                Collections.Generic.KeyValuePair("x", [| x |])
                if not forget then
                    Collections.Generic.KeyValuePair("v", [| v |])
            |]

        member _.RestoreState(state) =
            let value (name: string) =
                match state |> Seq.tryFind (fun p -> p.Key = name) with
                | Some p when p.Value.Length = 1 && Double.IsFinite p.Value.[0] -> p.Value.[0]
                | _ -> raise (ArgumentException(sprintf "Glide: the saved state has no finite part '%s'" name, "state"))

            let x', v' = value "x", (if forget then v else value "v")
            x <- x'
            v <- v'

/// Small settings so that a façade test trains in seconds.
let small (o: #AgentOptions) =
    o.TotalSteps <- 240
    o.RandomSteps <- 80
    o.HiddenSizes <- [| 16; 16 |]
    o.BatchSize <- 32
    o.UpdatesPerStep <- 1
    o.EvaluationInterval <- 120
    o.EvaluationEpisodes <- 2

    match box o with
    | :? ModelBasedOptions as m ->
        m.ModelMembers <- 3
        m.ModelElites <- 2
        m.ModelHiddenSizes <- [| 16; 16 |]
        m.ModelMaxEpochs <- 3
        m.ModelTrainInterval <- 80
    | _ -> ()

    match box o with
    | :? ImaginedDataOptions as i -> i.RolloutStarts <- 32
    | _ -> ()

    o

/// The exception of type 'E that f throws; fails the test when it throws none.
let private caught<'E when 'E :> exn> (f: unit -> unit) =
    try
        f ()
        failtestf "expected %s, nothing was thrown" typeof<'E>.Name
    with :? 'E as e ->
        e

/// Trains an agent towards `steps` more steps, cancelling once progress reports step `at`; the cancellation must
/// surface as an OperationCanceledException.
let private trainCancelledAt (at: int) (steps: int) (agent: Agent) =
    use cts = new CancellationTokenSource()

    let progress =
        { new IProgress<TrainingProgress> with
            member _.Report p =
                if p.Step >= at then
                    cts.Cancel()
        }

    Expect.throwsT<OperationCanceledException> (fun () -> agent.Train(steps, progress, cts.Token)) "cancelled"

/// Removes test folders (those that exist), with everything in them.
let private deleteFolders (dirs: string list) =
    for d in dirs do
        if Directory.Exists d then
            Directory.Delete(d, true)

let private tempDir () = Path.Combine(Path.GetTempPath(), "maac-facade-" + Guid.NewGuid().ToString("N"))

/// Types in a signature, with their generic arguments, element types and the like, all the way down.
let rec private typesIn (t: Type) : Type seq =
    seq {
        yield t

        if t.HasElementType then
            yield! typesIn (t.GetElementType())

        if t.IsGenericType then
            for a in t.GetGenericArguments() do
                yield! typesIn a
    }

/// Every type that appears in a public or protected signature of the façade, with where it appears.
let private publicSignatureTypes (asm: Assembly) =
    let flags =
        BindingFlags.Public
        ||| BindingFlags.NonPublic
        ||| BindingFlags.Instance
        ||| BindingFlags.Static
        ||| BindingFlags.DeclaredOnly

    let visible (m: MethodBase) = not (isNull m) && (m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly)

    [
        for t in asm.GetExportedTypes() do
            if not (isNull t.BaseType) then
                yield t.FullName + " base", t.BaseType

            for i in t.GetInterfaces() do
                yield t.FullName + " interface", i

            for m in t.GetMethods flags do
                if visible m then
                    yield t.FullName + "." + m.Name, m.ReturnType

                    for p in m.GetParameters() do
                        yield t.FullName + "." + m.Name + "(" + p.Name + ")", p.ParameterType

            for c in t.GetConstructors flags do
                if visible c then
                    for p in c.GetParameters() do
                        yield t.FullName + "..ctor(" + p.Name + ")", p.ParameterType

            for p in t.GetProperties flags do
                if visible (p.GetGetMethod true) || visible (p.GetSetMethod true) then
                    yield t.FullName + "." + p.Name, p.PropertyType

            for f in t.GetFields flags do
                if f.IsPublic || f.IsFamily then
                    yield t.FullName + "." + f.Name, f.FieldType
    ]
    |> List.collect (fun (where, ty) -> typesIn ty |> Seq.map (fun x -> where, x) |> Seq.toList)

/// F# collection, option, function and tuple types a C# caller should never meet.
let private isFSharpOrTuple (t: Type) =
    let n =
        if t.IsGenericType then
            t.GetGenericTypeDefinition().FullName
        else
            t.FullName

    not (isNull n)
    && (n.StartsWith "Microsoft.FSharp." || n.StartsWith "System.Tuple" || n.StartsWith "System.ValueTuple")

let tests =
    testList
        "C# façade"
        [
            test "no F# list, option, function or tuple type appears in a public signature" {
                let asm = typeof<MaacAgent>.Assembly
                let found = publicSignatureTypes asm
                // The walk must see the surface, or the check proves nothing.
                Expect.isGreaterThan found.Length 200 "the reflection walk found the public members"
                Expect.exists found (fun (w, t) -> w.Contains "Agent.Train" && t = typeof<CancellationToken>) "it sees Train's parameters"

                let bad =
                    found
                    |> List.filter (snd >> isFSharpOrTuple)
                    |> List.map (fun (w, t) -> sprintf "%s: %s" w t.FullName)
                    |> List.distinct

                Expect.isEmpty bad "F# or tuple types in the public C# surface"
            }

            test "the façade's names can be imported beside every namespace of Maac.Core and Maac.Cuda (no CS0104)" {
                // C# reports CS0104 when a name used is declared in two imported namespaces: the façade's Maac and
                // Maac.Envs, Maac.Tensors, ... F# modules are static classes to C#, so they count too.
                let facade =
                    typeof<MaacAgent>.Assembly.GetExportedTypes()
                    |> Array.filter (fun t -> t.Namespace = "Maac")
                    |> Array.map (fun t -> t.Name)
                    |> Set.ofArray

                Expect.isTrue (facade.Contains "IEnvironment" && facade.Contains "StepResult") "the walk sees the façade's names"

                let others =
                    [ typeof<Maac.Training.Trainer>.Assembly; typeof<Maac.Cuda.GpuBackend>.Assembly ]
                    |> List.collect (fun a -> a.GetExportedTypes() |> List.ofArray)
                    |> List.filter (fun t -> not (isNull t.Namespace) && t.Namespace.StartsWith "Maac.")

                Expect.isGreaterThan others.Length 50 "the walk sees the library's namespaces"
                let clashes = others |> List.filter (fun t -> facade.Contains t.Name) |> List.map (fun t -> t.FullName)
                Expect.isEmpty clashes (sprintf "types of Maac.* namespaces named like a façade type: %s" (String.Join(", ", clashes)))
            }

            test "the exceptions a user catches are in the Maac namespace" {
                for t in
                    [
                        typeof<ShapeException>
                        typeof<NonFiniteException>
                        typeof<CheckpointException>
                        typeof<DivergenceException>
                        typeof<GpuUnavailableException>
                        typeof<MuJoCoUnavailableException>
                    ] do
                    Expect.equal t.Namespace "Maac" t.Name
            }

            test "asking for CUDA without the Maac.Cuda package names the package and how to add it" {
                let e =
                    caught<GpuUnavailableException>(fun () ->
                        Devices.loadProvider "Maac.NoSuchBackend" "Maac.NoSuchBackend.Provider" |> ignore)

                Expect.stringContains e.Message "dotnet add package Maac.NoSuchBackend" "says which package to add"
                // With the package referenced (as this test program does), the provider is found by name.
                let provider = Devices.loadProvider Devices.CudaPackage "Maac.Cuda.CudaProvider"
                Expect.equal (provider.GetType()) typeof<Maac.Cuda.CudaProvider> "Maac.Cuda's provider"
            }

            test "device names: cpu, cuda and cuda:N are read, anything else is refused naming the text" {
                Expect.equal (Devices.parse " CPU ") Device.Cpu "cpu"
                Expect.equal (Devices.parse "cuda") (Device.Cuda 0) "cuda"
                Expect.equal (Devices.parse "cuda:3") (Device.Cuda 3) "cuda:3"

                for bad in [ "gpu"; "cuda:"; "cuda:-1"; "cuda:x" ] do
                    let e = caught<ArgumentException>(fun () -> Devices.parse bad |> ignore)
                    Expect.stringContains e.Message (sprintf "'%s'" bad) bad
            }

            test "argument errors read as C#: the parameter named once, the caller's own, no F# syntax" {
                use agent = new SacAgent("Pendulum", small (SacOptions.ForTask "Pendulum"))

                let errors =
                    [
                        caught<ArgumentException>(fun () -> agent.Act [| 1.0f |] |> ignore)
                        caught<ArgumentException>(fun () -> agent.Act [| 1.0f; nanf; 0.0f |] |> ignore)
                        caught<ArgumentException>(fun () -> new MaacAgent("NoSuchTask") |> ignore)
                        caught<ArgumentException>(fun () ->
                            new SacAgent((fun () -> new Reach(2) :> IEnvironment), small (SacOptions())) |> ignore)
                    ]

                for e in errors do
                    let suffixes = e.Message.Split("(Parameter '").Length - 1
                    Expect.equal suffixes 1 (sprintf "one parameter suffix: %s" e.Message)

                    Expect.contains
                        [ "observation"; "environment"; "environmentFactory" ]
                        e.ParamName
                        (sprintf "a public parameter: %s" e.Message)

                    for fsharp in [ "[|"; "|]"; "nanf"; "inff"; "Some "; "None" ] do
                        Expect.isFalse (e.Message.Contains fsharp) (sprintf "no '%s' in: %s" fsharp e.Message)
            }

            test "the walk would catch an F# type: it flags one in Maac.Core's surface" {
                let found = publicSignatureTypes typeof<Maac.Training.Trainer>.Assembly
                Expect.exists found (snd >> isFSharpOrTuple) "Maac.Core exposes F# types, and the walk sees them"
            }

            test "options default to the paper's settings; ForTask to the command line's" {
                let o = MaacOptions()

                Expect.equal
                    (o.ActorHorizon, o.ActorSamples, o.CriticHorizon, o.ModelMembers, o.ModelElites)
                    (4, 5, 2, 8, 6)
                    "paper's H, K, Hc, ensemble"

                Expect.equal o.HiddenSizes [| 256; 256 |] "paper's networks"
                let t = MaacOptions.ForTask "pendulum"
                let s = Maac.Algorithms.Settings.forTask "Pendulum" "maac"

                Expect.equal
                    (t.TotalSteps, t.ActorHorizon, t.HiddenSizes)
                    (s.Steps, s.ActorHorizon, s.Hidden)
                    "the CLI's settings for Pendulum"
            }

            test "the actor's choices as C# enums reach the settings under their documented names" {
                let o = MaacOptions()

                Expect.equal
                    (o.ActorSamplePlacement, o.ActorEntropy, o.PathNoise)
                    (ActorSamplePlacement.WholePaths, ActorEntropy.EveryStep, ModelPathNoise.Sampled)
                    "the defaults"

                o.ActorSamplePlacement <- ActorSamplePlacement.ActionsAtHorizon
                o.ActorEntropy <- ActorEntropy.FirstAction
                o.PathNoise <- ModelPathNoise.Mean
                let s = o.ToSettings "Pendulum"
                Expect.equal (s.ActorSamplesAt, s.ActorEntropy, s.PathNoise) ("horizon", "first-action", "mean") "the settings' values"
                Expect.isEmpty (Maac.Algorithms.Settings.problems s) "valid settings"

                try
                    o.PathNoise <- enum<ModelPathNoise> 7
                    failtest "an undefined PathNoise value was accepted"
                with :? ArgumentOutOfRangeException as e ->
                    Expect.equal e.ParamName "PathNoise" "names the property"
            }

            test "the C# options accept exactly the values the library's settings check accepts, and keep theirs on refusal" {
                let settingsWith (change: Maac.Algorithms.Settings -> Maac.Algorithms.Settings) =
                    change (MaacOptions().ToSettings "Pendulum")

                let cases: (string * (MaacOptions -> unit) * (Maac.Algorithms.Settings -> Maac.Algorithms.Settings)) list =
                    [
                        for v in [ 20.0f; 1e-13f; 0.0f; -1.0f; nanf; infinityf ] do
                            yield
                                sprintf "ActorLearningRate = %g" v,
                                (fun o -> o.ActorLearningRate <- v),
                                (fun s -> { s with ActorLearningRate = v })
                        for v in [ 0.0f; 1e-7f; 1.0f; 1.5f ] do
                            yield sprintf "Gamma = %g" v, (fun o -> o.Gamma <- v), (fun s -> { s with Gamma = v })

                            yield
                                sprintf "RealDataFraction = %g" v,
                                (fun o -> o.RealDataFraction <- v),
                                (fun s -> { s with RealFraction = v })
                        for v in [ -1; 0; 1 ] do
                            yield sprintf "RandomSteps = %d" v, (fun o -> o.RandomSteps <- v), (fun s -> { s with RandomSteps = v })
                            yield sprintf "ActorSamples = %d" v, (fun o -> o.ActorSamples <- v), (fun s -> { s with ActorSamples = v })
                    ]

                for name, setOption, setSetting in cases do
                    let o = MaacOptions()
                    let before = o.ToSettings "Pendulum"

                    let accepted =
                        try
                            setOption o
                            true
                        with :? ArgumentOutOfRangeException ->
                            Expect.equal (o.ToSettings "Pendulum") before (name + ": the refused value left the options as they were")
                            false

                    Expect.equal accepted (Maac.Algorithms.Settings.problems (settingsWith setSetting)).IsEmpty name
            }

            test "every option accepts its own value: each setter names a setting the library's check knows" {
                let options: obj list = [ MaacOptions(); SacOptions(); MbpoOptions(); SteveOptions(); Svg1Options() ]

                for o in options do
                    for property in o.GetType().GetProperties() do
                        if property.CanRead && property.CanWrite then
                            try
                                property.SetValue(o, property.GetValue o)
                            with :? Reflection.TargetInvocationException as e ->
                                failtestf "%s.%s refused its own value: %s" (o.GetType().Name) property.Name e.InnerException.Message
            }

            test "out-of-range options and bad arguments name the parameter" {
                let paramOf (f: unit -> unit) =
                    try
                        f ()
                        "no exception"
                    with :? ArgumentException as e ->
                        e.ParamName

                Expect.equal (paramOf (fun () -> MaacOptions(BatchSize = 0) |> ignore)) "BatchSize" "BatchSize"
                Expect.equal (paramOf (fun () -> SacOptions(Gamma = 1.5f) |> ignore)) "Gamma" "Gamma"
                Expect.equal (paramOf (fun () -> MbpoOptions(ModelHiddenSizes = [||]) |> ignore)) "ModelHiddenSizes" "ModelHiddenSizes"
                Expect.equal (paramOf (fun () -> new MaacAgent("NoSuchTask") |> ignore)) "environment" "unknown task"

                Expect.equal
                    (paramOf (fun () -> new SacAgent("Pendulum", small (SacOptions(BatchSize = 8, Threads = 0))) |> ignore))
                    "Threads"
                    "Threads"

                use agent = new SacAgent("Pendulum", small (SacOptions.ForTask "Pendulum"))
                Expect.equal (paramOf (fun () -> agent.Act [| 1.0f |] |> ignore)) "observation" "wrong observation size"
                Expect.equal (paramOf (fun () -> agent.Act [| 1.0f; nanf; 0.0f |] |> ignore)) "observation" "NaN in the observation"
                Expect.equal (paramOf (fun () -> agent.Train 0)) "steps" "no steps"
            }

            test "a user's environment that breaks its own observation space is refused with the problem listed" {
                let e =
                    caught<ArgumentException>(fun () ->
                        new SacAgent((fun () -> new Reach(2) :> IEnvironment), small (SacOptions())) |> ignore)

                Expect.equal e.ParamName "environmentFactory" "names the factory"

                Expect.stringContains
                    e.Message
                    "the observation Reset returned has size 2, the observation space says 1"
                    "says what is wrong"
            }

            test "a non-reproducible environment is accepted with a warning; strict checking refuses it" {
                let e () = new Reach(fault = "noise") :> IEnvironment
                let agent, stderr = Support.capturingStandardError (fun () -> new SacAgent(e, small (SacOptions())))
                use agent = agent
                Expect.exists agent.EnvironmentWarnings (fun w -> w.Contains "seeding does not fix an episode") "warned"
                Expect.stringContains stderr "warning: environment Reach: two rollouts with seed 123" "and written to standard error"
                let strict = small (SacOptions())
                strict.StrictEnvironmentChecks <- true
                let refused = caught<ArgumentException>(fun () -> new SacAgent(e, strict) |> ignore)
                Expect.stringContains refused.Message "seeding does not fix an episode" "refused when strict"
            }

            test "checker findings: NaN reported as NaN, once, with its step and element; functions compared with Step" {
                let nan =
                    caught<ArgumentException>(fun () ->
                        new SacAgent((fun () -> new Reach(nanAt = 3) :> IEnvironment), small (SacOptions())) |> ignore)

                Expect.stringContains nan.Message "the observation of step 3 is not finite: element 0 is NaN" "names step and element"
                Expect.stringContains nan.Message "and at " "reported once, with the count of further steps"
                Expect.isFalse (nan.Message.Contains "seeding") "not mistaken for non-determinism"
                Expect.equal (nan.Message.Split("not finite").Length - 1) 1 "one line for the finding"

                let wrong =
                    caught<ArgumentException>(fun () ->
                        new SacAgent((fun () -> new Reach(fault = "wrong reward") :> IEnvironment), small (SacOptions()))
                        |> ignore)

                Expect.stringContains wrong.Message "the reward function gives" "a reward function that disagrees with Step is refused"

                let shape =
                    caught<ArgumentException>(fun () ->
                        new SacAgent((fun () -> new Reach(fault = "wrong shape") :> IEnvironment), small (SacOptions()))
                        |> ignore)

                Expect.stringContains shape.Message "returned shape [50, 1]" "a wrong-shaped reward function is named as such"
            }

            test "during training, a NaN from the environment is reported as the environment's, with the step and element" {
                // NaN from step 120 on: after the checker's 50-step rollouts, within the first episode of training.
                use agent = new SacAgent((fun () -> new Reach(nanAt = 120) :> IEnvironment), small (SacOptions()))
                let e = caught<NonFiniteException>(fun () -> agent.Train 200)

                Expect.stringContains
                    e.Message
                    "Reach returned a non-finite observation at environment step 120: element 0 is NaN"
                    "the environment's fault"

                use rewards =
                    new SacAgent((fun () -> new Reach(fault = "nan reward", nanAt = 120) :> IEnvironment), small (SacOptions()))

                let r = caught<NonFiniteException>(fun () -> rewards.Train 200)

                Expect.stringContains
                    r.Message
                    "Reach returned a non-finite reward at environment step 120: NaN"
                    "a NaN reward is the environment's too, not a critic loss"
            }

            test "a user's environment trains like a built-in task; its reward function reaches model rollouts" {
                let task = EnvironmentAdapter.ToTask(fun () -> new Reach() :> IEnvironment)
                let reward = Expect.wantSome task.Functions.Reward "the reward function is used for rollouts"

                let r =
                    reward (Tensor.zeros [| 2; 1 |]) (Tensor.zeros [| 2; 1 |]) (Tensor.ofArray [| 2; 1 |] [| 0.5f; -1.0f |])

                Expect.equal (r.ToArray()) [| -0.25f; -1.0f |] "−x'² on a batch"
                let made = Collections.Concurrent.ConcurrentBag<Reach>()

                use agent =
                    new MaacAgent(
                        (fun () ->
                            let r = new Reach() in
                            made.Add r
                            r :> IEnvironment),
                        small (MaacOptions())
                    )

                agent.Train 240
                Expect.equal agent.Step 240 "trained the budget"
                Expect.equal (agent.Evaluations |> Seq.map (fun e -> e.Step) |> Seq.toList) [ 120; 240 ] "evaluated every 120 steps"
                let a = agent.Act([| 0.3f |], false)
                Expect.isTrue (a.Length = 1 && a.[0] >= -1.0f && a.[0] <= 1.0f) "an action inside the space"
                (agent :> IDisposable).Dispose()
                Expect.isTrue (made |> Seq.forall (fun r -> r.Disposed)) "every environment the library made was disposed"
            }

            test "Save then Load gives the same agent; nothing saved is overwritten; the wrong class is refused" {
                let dir = tempDir ()

                try
                    use agent = new SacAgent("Pendulum", small (SacOptions.ForTask "Pendulum"))
                    agent.Train 120
                    agent.Save dir
                    let obs = [| 0.6f; -0.8f; 0.3f |]

                    do
                        use loaded = SacAgent.Load dir
                        Expect.equal loaded.Step 120 "step restored"
                        Expect.equal (loaded.Act obs) (agent.Act obs) "same deterministic action"
                        let inUse = caught<IOException>(fun () -> agent.Save(dir, overwrite = true))
                        Expect.stringContains inUse.Message "in use" "the folder a loaded agent trains into is written by no other"

                    let e = caught<IOException>(fun () -> agent.Save dir)
                    Expect.stringContains e.Message "already holds a run" "an existing run is not overwritten"
                    agent.Save(dir, overwrite = true)
                    let e = caught<ArgumentException>(fun () -> MaacAgent.Load dir |> ignore)
                    Expect.stringContains e.Message "sac run" "says which algorithm the folder holds"
                    use any = Agent.Load dir
                    Expect.equal any.Algorithm "sac" "Agent.Load opens any run"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test "MaacAgent.Load opens a run folder written the way the command line's train writes it" {
                let dir = tempDir ()

                try
                    let s = { RlTests.tiny "Pendulum" "maac" with Steps = 200; EvalEvery = 200 }
                    Maac.Training.RunFolder.create dir s

                    let trainOnce () =
                        use trainer =
                            new Maac.Training.Trainer(s, Maac.Algorithms.Algorithms.maac, Maac.Envs.Tasks.find "Pendulum")

                        trainer.Run(200, ignore, (fun _ -> Maac.Training.RunFolder.record dir trainer), CancellationToken.None)

                    trainOnce ()
                    use agent = MaacAgent.Load dir
                    Expect.equal (agent.Step, agent.Algorithm, agent.Environment) (200, "maac", "Pendulum") "the CLI's run"
                    Expect.equal (agent.Act([| 1.0f; 0.0f; 0.0f |]).Length) 1 "acts"
                    Expect.equal (Path.GetFullPath agent.RunDirectory) (Path.GetFullPath dir) "continues in the same folder"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test "a run folder that already holds a run is refused at construction, and nothing in it changes" {
                let dir = tempDir ()

                try
                    let options = small (SacOptions.ForTask "Pendulum")
                    options.RunDirectory <- dir

                    let trainFirst () =
                        use first = new SacAgent("Pendulum", options)
                        first.Train 120

                    trainFirst ()
                    let before = File.ReadAllBytes(Path.Combine(dir, "checkpoint.safetensors"))
                    Expect.throwsT<IOException> (fun () -> new SacAgent("Pendulum", options) |> ignore) "refused"
                    Expect.equal (File.ReadAllBytes(Path.Combine(dir, "checkpoint.safetensors"))) before "the saved checkpoint is untouched"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test "choosing CUDA on a machine without a GPU fails with a clear error and leaves the CPU in use" {
                let hasGpu =
                    try
                        (Maac.Cuda.Gpu.cuda 0 :> IDisposable).Dispose()
                        true
                    with :? GpuUnavailableException ->
                        false

                if hasGpu then
                    skiptest "this machine has a GPU; the no-GPU error cannot be observed here"

                let options = small (SacOptions.ForTask "Pendulum")
                options.Device <- ComputeDevice.Cuda
                let e = caught<GpuUnavailableException>(fun () -> new SacAgent("Pendulum", options) |> ignore)
                Expect.stringContains e.Message "NVIDIA" "says what is missing"
                Expect.equal Backends.Default.Device Device.Cpu "new tensors still go to the CPU"
            }

            test "a loaded agent continues its run beyond the saved budget, on the device asked for, with its history" {
                let dir = tempDir ()

                try
                    let options = small (SacOptions.ForTask "Pendulum")
                    options.RunDirectory <- dir

                    do
                        use first = new SacAgent("Pendulum", options)
                        first.Train 240

                    use loaded = Agent.Load(dir, LoadOptions(Threads = Nullable 1))
                    Expect.equal (loaded.Evaluations |> Seq.map (fun e -> e.Step) |> List.ofSeq) [ 120; 240 ] "the run's evaluations"
                    loaded.Train 120 // beyond TotalSteps = 240: the budget is raised, as SB3's reset_num_timesteps=False
                    Expect.equal (loaded.Step, loaded.TotalSteps) (360, 360) "trained on"
                    Expect.equal (Maac.Training.RunFolder.readSettings dir).Steps 360 "config.json records the new budget"
                    Expect.equal (loaded.Evaluations |> Seq.last).Step 360 "a new evaluation at the end"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }

            test "evaluation gives every episode's return and length, on another environment too; batch actions equal single ones" {
                use agent = new SacAgent((fun () -> new Reach() :> IEnvironment), small (SacOptions()))
                agent.Train 240
                let r = agent.Evaluate(4)
                Expect.equal r.Returns.Count 4 "four returns"
                Expect.equal (List.ofSeq r.Lengths) [ 20; 20; 20; 20 ] "20-step episodes"
                Expect.floatClose Accuracy.high r.Mean (Seq.average r.Returns) "the mean of the returns"
                let other = agent.Evaluate(2, fun () -> new Reach() :> IEnvironment)
                Expect.equal other.Returns.Count 2 "on another environment"
                let batch = Array2D.init 3 1 (fun i _ -> float32 i * 0.4f - 0.4f)
                let acts = agent.Act batch

                for i in 0..2 do
                    Expect.floatClose Accuracy.high (float acts.[i, 0]) (float (agent.Act [| batch.[i, 0] |]).[0]) (sprintf "row %d" i)

                let e = caught<ArgumentException>(fun () -> agent.Act(Array2D.zeroCreate<float32> 2 3) |> ignore)
                Expect.equal e.ParamName "observations" "a wrong row size names the parameter"
            }

            test "callbacks see evaluations, episodes and checkpoints, and can stop training" {
                let dir = tempDir ()
                let best = tempDir ()

                try
                    let options = small (SacOptions.ForTask "Pendulum")
                    options.RunDirectory <- dir
                    use agent = new SacAgent("Pendulum", options)
                    let episodes = ResizeArray<EpisodeRecord>()
                    let checkpoints = ResizeArray<string>()

                    let watcher =
                        { new ITrainingCallback with
                            member _.OnEpisode(_, e) =
                                episodes.Add e
                                true

                            member _.OnCheckpoint(_, path) = checkpoints.Add path
                        }
                    // Any return beats −∞... a threshold of −1e9 is reached at the first evaluation: training stops there.
                    agent.Train(240, null, CancellationToken.None, watcher, StopOnReturnThreshold(-1e9), KeepBestModel(best))
                    Expect.equal agent.Step 120 "stopped at the first evaluation"
                    Expect.isNonEmpty checkpoints "checkpoints reported"
                    Expect.isTrue (episodes |> Seq.forall (fun e -> e.Length = 200)) "Pendulum's 200-step episodes"
                    Expect.isTrue (episodes |> Seq.forall (fun e -> e.WallSeconds > 0.0)) "with the run's time"
                    Expect.isTrue (File.Exists(Path.Combine(best, "checkpoint.safetensors"))) "the best model was kept"
                    let stopper = StopOnNoImprovement(1)

                    Expect.isTrue
                        ((stopper :> ITrainingCallback).OnEvaluation(agent, EvaluationRecord(1, 5.0, 0.0, 0f, 0f, 0f, 0f, 0.0)))
                        "a first best"

                    Expect.isFalse
                        ((stopper :> ITrainingCallback).OnEvaluation(agent, EvaluationRecord(2, 4.0, 0.0, 0f, 0f, 0f, 0f, 0.0)))
                        "no improvement stops"
                finally
                    deleteFolders [ dir; best ]
            }

            test "a Train call that ends within the random steps says so (which setting to change)" {
                let (), captured =
                    Support.capturingStandardError (fun () ->
                        use agent = new SacAgent((fun () -> new Reach() :> IEnvironment), SacOptions(TotalSteps = 2000)) // the paper's 5,000 random steps
                        agent.Train 100)

                Expect.stringContains captured "within the first 5000 steps of random actions (RandomSteps)" "names the setting"
            }

            test "progress reports nothing before it exists: no losses, α or remaining time in the random phase" {
                let options = small (SacOptions.ForTask "Pendulum")
                use agent = new SacAgent("Pendulum", options)
                let reports = ResizeArray<TrainingProgress>()

                agent.Train(
                    240,
                    { new IProgress<TrainingProgress> with
                        member _.Report p = reports.Add p
                    }
                )
                // The estimator itself is tested on a synthetic clock (progress tests); here, that it reaches C#.
                Expect.isTrue (reports |> Seq.exists (fun r -> r.Remaining.HasValue)) "a remaining time once learning has a rate"
                // Nothing is reported before it exists: no losses, α or remaining time in the random phase.
                let early = reports |> Seq.find (fun r -> r.Step = 50)

                Expect.equal
                    (early.CriticLoss, early.ActorLoss, early.Temperature, early.Remaining, early.LastEvaluationReturn)
                    (Nullable(), Nullable(), Nullable(), Nullable(), Nullable())
                    "null until known"

                let learning = reports |> Seq.find (fun r -> r.Step = 100)
                Expect.isTrue (learning.CriticLoss.HasValue && learning.Temperature.HasValue) "losses once a gradient step was made"
            }

            test "info dictionaries of Step and Reset reach the library's environment; episodes reach callbacks with their time" {
                let info =
                    dict [ "x_position", box 1.5 ]
                    |> Collections.Generic.Dictionary
                    |> fun d -> d :> Collections.Generic.IReadOnlyDictionary<string, obj>

                let env =
                    { new IEnvironment with
                        member _.Name = "Info"
                        member _.ObservationSpace = BoxSpace.Symmetric(1, 1.0f)
                        member _.ActionSpace = BoxSpace.Symmetric(1, 1.0f)
                        member _.MaxEpisodeSteps = 5
                        member _.Reset(_: Nullable<int64>) = [| 0.0f |]
                        member _.Step(_: float32[]) = StepResult([| 0.0f |], 0.0, false, false, info)
                        member _.ResetInfo = info
                    }

                let adapted = new EnvironmentAdapter(env) :> Maac.Envs.IEnv
                Expect.equal ((adapted.Reset None).Info.["x_position"]) (box 1.5) "reset info"
                Expect.equal ((adapted.Step [| 0.0f |]).Info.["x_position"]) (box 1.5) "step info"
            }

            test "a C# environment that implements IRestorableEnvironment resumes bit for bit after a cancellation between evaluations" {
                let dir, whole = tempDir (), tempDir ()

                try
                    let options () = small (SacOptions())

                    do
                        let o = options ()
                        o.RunDirectory <- whole
                        use uninterrupted = new SacAgent((fun () -> new Glide() :> IEnvironment), o)
                        uninterrupted.Train(240)

                    do
                        let o = options ()
                        o.RunDirectory <- dir
                        use agent = new SacAgent((fun () -> new Glide() :> IEnvironment), o)
                        trainCancelledAt 137 240 agent
                        Expect.notEqual (agent.Step % 50) 0 "stopped inside an episode"

                    use resumed = SacAgent.Load(dir, (fun () -> new Glide() :> IEnvironment))
                    resumed.Train(240 - resumed.Step)
                    let arraysA, _ = Maac.Persistence.Checkpoint.load (Path.Combine(whole, "checkpoint.safetensors"))
                    let arraysB, _ = Maac.Persistence.Checkpoint.load (Path.Combine(dir, "checkpoint.safetensors"))

                    for KeyValue(name, a) in arraysA do
                        let bitsOf (v: float32[]) = v |> Array.map BitConverter.SingleToInt32Bits
                        Expect.equal (bitsOf arraysB.[name].Values) (bitsOf a.Values) (sprintf "tensor %s bit for bit" name)

                    Expect.equal
                        (File.ReadAllLines(Path.Combine(dir, "metrics.csv"))
                         |> Array.map (fun l -> l.Substring(0, l.LastIndexOf ',')))
                        (File.ReadAllLines(Path.Combine(whole, "metrics.csv"))
                         |> Array.map (fun l -> l.Substring(0, l.LastIndexOf ',')))
                        "the same evaluations (wall times aside)"
                finally
                    deleteFolders [ dir; whole ]
            }

            test "a restorable C# environment whose saved state leaves something out is refused by the checker" {
                let e =
                    caught<ArgumentException>(fun () ->
                        new SacAgent((fun () -> new Glide(forgetVelocity = true) :> IEnvironment), small (SacOptions()))
                        |> ignore)

                Expect.stringContains e.Message "Glide" "names the environment"

                Expect.stringContains
                    e.Message
                    "the state saved after step 25, restored, does not continue the episode as before (first difference at step 26)"
                    "says what the check found"
            }

            test "cancellation stops after the current step and leaves a checkpoint that loads and trains on" {
                let dir = tempDir ()

                try
                    let options = small (SacOptions.ForTask "Pendulum")
                    options.RunDirectory <- dir

                    let stoppedAt =
                        use agent = new SacAgent("Pendulum", options)
                        trainCancelledAt 130 240 agent
                        Expect.isLessThan agent.Step 240 "stopped early"
                        agent.Step

                    use resumed = SacAgent.Load dir
                    Expect.equal resumed.Step stoppedAt "the checkpoint holds the step it stopped at"
                    resumed.Train(240 - resumed.Step)
                    Expect.equal resumed.Step 240 "and training goes on"
                    Expect.isTrue (File.Exists(Path.Combine(dir, "metrics.csv"))) "metrics written"
                finally
                    if Directory.Exists dir then
                        Directory.Delete(dir, true)
            }
        ]
