/// Settings checked once, settings files with defaults and refusals, run folders that agree with themselves, and
/// resumption that refuses changes of meaning.
module Maac.Tests.RunFolderTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Maac
open Maac.Envs
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Tests.Support

let private tiny =
    { Settings.forTask "Pendulum" "sac" with
        Steps = 300
        RandomSteps = 100
        Hidden = [| 16; 16 |]
        BatchSize = 32
        UpdatesPerStep = 1
        EvalEvery = 100
        EvalEpisodes = 1
        RealCapacity = 1000
    }

/// A fresh temporary folder for a test, deleted with its contents when disposed.
let private folder (name: string) = new TempFolder("maac-" + name)

/// Trains a tiny run into a folder the way the command line does.
let private trainInto (dir: string) (s: Settings) (until: int) =
    let task = Tasks.find s.Env
    use t = new Trainer(s, Algorithms.find s.Algorithm, task)
    RunFolder.create dir s
    t.Run(until, ignore, (fun _ -> RunFolder.record dir t), Threading.CancellationToken.None)

let private errorOf (f: unit -> unit) =
    try
        f ()
        failtest "expected an error, nothing was thrown"
    with e ->
        e

let tests =
    testList
        "settings and run folders"
        [
            test "curve labels name the task, algorithm and ratio, and what tells a configuration from its siblings" {
                let maac = { Settings.forTask "Pendulum" "maac" with UpdatesPerStep = 8 }
                let h0 = { maac with ActorHorizon = 0 }
                let wholePaths = { maac with ActorSamplesAt = "paths" }
                let sac = Settings.forTask "Pendulum" "sac"

                Expect.equal
                    (SettingsFile.labels [ maac; h0; wholePaths; sac ])
                    [
                        "Pendulum maac, 8/step, ActorHorizon=3, ActorSamplesAt=horizon"
                        "Pendulum maac, 8/step, ActorHorizon=0, ActorSamplesAt=horizon"
                        "Pendulum maac, 8/step, ActorHorizon=3, ActorSamplesAt=paths"
                        sprintf "Pendulum sac, %d/step" sac.UpdatesPerStep
                    ]
                    "siblings differ by their settings; a configuration alone in its family has none"

                Expect.equal
                    (SettingsFile.configuration { maac with Seed = 7L; Steps = 99 })
                    (SettingsFile.configuration maac)
                    "the seed and the budget do not make another configuration"
            }

            test "every out-of-range setting is named with its value, all at once" {
                let bad =
                    { tiny with
                        Gamma = 0.0f
                        ActorLearningRate = -1e-3f
                        EvalEvery = 0
                        ModelElites = 9
                        ModelMembers = 3
                        Hidden = [| 16; 0 |]
                    }

                let problems = Settings.problems bad

                for expected in
                    [
                        "Gamma must lie in (0, 1], got 0"
                        "ActorLearningRate must be a positive learning rate, got -0.001"
                        "EvalEvery must be positive, got 0"
                        "ModelElites (9) must not exceed ModelMembers (3)"
                        "Hidden must list positive layer widths, got [16, 0]"
                    ] do
                    Expect.contains problems expected expected

                Expect.isEmpty (Settings.problems tiny) "the defaults are valid"
                // The Trainer refuses them before anything is created.
                let e = errorOf (fun () -> new Trainer(bad, Algorithms.sac, Tasks.find "Pendulum") |> ignore)
                Expect.stringContains e.Message "EvalEvery must be positive" "refused by the trainer"
            }

            test "every committed MBBL curve ran with the settings file its folder names (docs/experiments/mbbl)" {
                // A curve folder is TASK-VARIANT-seedN; VARIANT.json is its settings file (maac.json for "maac", MBPO's
                // HalfCheetah ratio in mbpo-halfcheetah.json). The run's config.json must be that file's settings for
                // the task and algorithm, apart from the steps and seed given on the command line.
                let root = repoRoot ()
                let settingsDir = Path.Combine(root, "docs", "experiments", "mbbl")
                let curves = Directory.GetDirectories(Path.Combine(root, "docs", "experiments", "curves", "mbbl"))
                Expect.isNonEmpty curves "curve folders"

                for dir in curves do
                    let name = Path.GetFileName dir
                    let run = RunFolder.readSettings dir
                    let variant = name.Substring(run.Env.Length + 1, name.LastIndexOf "-seed" - run.Env.Length - 1)

                    let file =
                        match variant with
                        | "mbpo" when run.Env = "HalfCheetah-MBBL" -> "mbpo-halfcheetah.json"
                        | v -> v + ".json"

                    let path = Path.Combine(settingsDir, file)
                    Expect.isTrue (File.Exists path) (sprintf "%s: its settings file %s" name file)
                    let committed = RunFolder.readSettingsFileFor path (Some run.Env) (Some run.Algorithm)
                    Expect.equal { run with Steps = committed.Steps; Seed = committed.Seed } committed name
            }

            test "a settings file may leave keys out (the task's defaults) but not misspell one (the nearest name is offered)" {
                let partial = """{ "Env": "Pendulum", "Algorithm": "sac", "Seed": 3, "BatchSize": 64 }"""
                let s = SettingsFile.parse "partial.json" partial None None
                Expect.equal (s.Seed, s.BatchSize) (3L, 64) "the keys given"
                Expect.equal s.Gamma (Settings.forTask "Pendulum" "sac").Gamma "a missing Gamma takes the task's default, not 0"

                let e =
                    errorOf (fun () -> SettingsFile.parse "typo.json" """{ "Env": "Pendulum", "ActorSample": 5 }""" None None |> ignore)

                Expect.stringContains e.Message "typo.json" "names the file"
                Expect.stringContains e.Message "unknown setting 'ActorSample'; did you mean 'ActorSamples'?" "names the nearest key"

                let e2 =
                    errorOf (fun () ->
                        SettingsFile.parse "neg.json" """{ "Env": "Pendulum", "CriticLearningRate": -0.5 }""" None None
                        |> ignore)

                Expect.stringContains e2.Message "CriticLearningRate must be a positive learning rate, got -0.5" "ranges checked"

                let e3 =
                    errorOf (fun () -> SettingsFile.parse "type.json" """{ "Env": "Pendulum", "BatchSize": "big" }""" None None |> ignore)

                Expect.stringContains e3.Message "BatchSize" "a wrong type names the key"
                // Flags win over the file's Env and Algorithm, and the defaults follow them.
                let s2 = SettingsFile.parse "f.json" """{ "Seed": 1 }""" (Some "InvertedPendulum") (Some "maac")
                Expect.equal (s2.Env, s2.Algorithm, s2.UpdatesPerStep) ("InvertedPendulum", "maac", 4) "InvertedPendulum's defaults"
            }

            test "a checkpoint refuses settings edited since it was written (the budget aside)" {
                use runFolder = folder "edited"
                let dir = runFolder.Path
                trainInto dir tiny 200
                let config = RunFolder.configFile dir
                let o = JsonNode.Parse(File.ReadAllText config).AsObject()
                o.["Seed"] <- JsonValue.Create 7L
                o.["ActorLearningRate"] <- JsonValue.Create 0.1
                File.WriteAllText(config, o.ToJsonString())
                let e = errorOf (fun () -> (RunFolder.loadTrainer dir :> IDisposable).Dispose())
                Expect.isTrue (e :? CheckpointException) "a CheckpointException"
                Expect.stringContains e.Message "Seed: 0 → 7" "names the seed change"
                Expect.stringContains e.Message "ActorLearningRate" "and the learning rate's"
                // A raised budget is a continuation, not a change; nor is switching the critic-value safeguard.
                o.["Seed"] <- JsonValue.Create 0L
                o.["ActorLearningRate"] <- JsonValue.Create tiny.ActorLearningRate
                o.["Steps"] <- JsonValue.Create 400
                o.["CriticValueCheck"] <- JsonValue.Create false
                File.WriteAllText(config, o.ToJsonString())
                use t = RunFolder.loadTrainer dir
                Expect.equal t.Step 200 "opens at its step"
                Expect.isFalse t.Settings.CriticValueCheck "with the safeguard off"
            }

            test "resuming: a budget below the checkpoint's step is refused; a raised one continues and is recorded" {
                use runFolder = folder "budget"
                let dir = runFolder.Path
                trainInto dir tiny 200
                let task = Tasks.find "Pendulum"
                let e = errorOf (fun () -> (RunFolder.resume dir task (Some 150) :> IDisposable).Dispose())
                Expect.stringContains e.Message "--steps 150 is below the step 200" "refused, naming both"
                Expect.equal (RunFolder.readSettings dir).Steps 300 "config.json untouched"
                use t = RunFolder.resume dir task (Some 500)
                Expect.equal (t.Step, t.Settings.Steps) (200, 500) "continues with the raised budget"
                Expect.equal (RunFolder.readSettings dir).Steps 500 "config.json records it"
            }

            test "metrics.csv always holds exactly the rows up to the checkpoint (a kill between the two writes, a stale file)" {
                use runFolder = folder "metrics"
                let dir = runFolder.Path
                trainInto dir tiny 200
                let rows () = RunFolder.readRows dir |> Array.map (fun r -> r.Step)
                Expect.equal (rows ()) [| 100; 200 |] "rows at 100 and 200"
                let task = Tasks.find "Pendulum"
                // As after a kill between the checkpoint's rename and the metrics write: the last row is missing.
                File.WriteAllText(RunFolder.metricsFile dir, MetricsCsv.text (RunFolder.readRows dir |> Array.take 1))
                // Looking at the run (eval, export) writes nothing; the process that trains on repairs the file.
                do
                    use looked = RunFolder.loadTrainer dir
                    Expect.equal (looked.Metrics |> List.map (fun r -> r.Step)) [ 100; 200 ] "the checkpoint's rows, loaded"

                Expect.equal (rows ()) [| 100 |] "a look leaves the file as it was"
                (RunFolder.openTrainerFor dir task :> IDisposable).Dispose()
                Expect.equal (rows ()) [| 100; 200 |] "restored from the checkpoint"
                // A metrics.csv ahead of its checkpoint (rows of a later, lost step) is cut back.
                let extra = { (RunFolder.readRows dir).[1] with Step = 300 }
                File.WriteAllText(RunFolder.metricsFile dir, MetricsCsv.text (Array.append (RunFolder.readRows dir) [| extra |]))
                (RunFolder.openTrainerFor dir task :> IDisposable).Dispose()
                Expect.equal (rows ()) [| 100; 200 |] "cut back to the checkpoint"
            }

            test "run folders: foreign files are refused, a run killed before its first checkpoint can start again" {
                use runFolder = folder "foreign"
                let dir = runFolder.Path
                File.WriteAllText(Path.Combine(dir, "thesis.tex"), "mine")
                let e = errorOf (fun () -> RunFolder.create dir tiny)
                Expect.stringContains e.Message "thesis.tex" "names the foreign file"
                Expect.equal (File.ReadAllText(Path.Combine(dir, "thesis.tex"))) "mine" "untouched"
                use killedFolder = folder "killed"
                let killed = killedFolder.Path
                RunFolder.create killed tiny
                RunFolder.create killed tiny // the same run again: allowed, nothing was trained yet
                let other = errorOf (fun () -> RunFolder.create killed { tiny with Seed = 5L })
                Expect.stringContains other.Message "another run's config.json" "another run's settings are not overwritten"
                use t = RunFolder.resume killed (Tasks.find "Pendulum") None
                Expect.equal t.Step 0 "resuming it starts from step 0"
            }

            test "a diverging model is reported as a divergence naming the part and the step" {
                // A learning rate so large that the model's loss overflows.
                let s =
                    { Settings.forTask "Pendulum" "mbpo" with
                        Steps = 200
                        RandomSteps = 100
                        Hidden = [| 16 |]
                        ModelMembers = 2
                        ModelElites = 1
                        ModelHidden = [| 16 |]
                        ModelLearningRate = 1e9f
                        ModelMaxEpochs = 3
                        ModelTrainEvery = 100
                        RolloutStarts = 8
                        EvalEvery = 100
                        EvalEpisodes = 1
                    }

                use t = new Trainer(s, Algorithms.mbpo, Tasks.find "Pendulum")
                let e = errorOf (fun () -> t.Run(200, ignore, ignore, Threading.CancellationToken.None))
                Expect.isTrue (e :? DivergenceException) (sprintf "a DivergenceException, got %s: %s" (e.GetType().Name) e.Message)
                Expect.stringContains e.Message "dynamics model" "names the model"
                Expect.equal (e :?> DivergenceException).Part "model" "its Part is the model"
                Expect.stringContains e.Message "step" "and the step"
            }
        ]
