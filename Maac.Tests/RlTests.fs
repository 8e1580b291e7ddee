/// Learning pieces and algorithms: the MAAC objective's identities and gradients, model fitting,
/// compositions, checkpoints, resumption and divergence.
module Maac.Tests.RlTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open Maac
open Maac.Tensors
open Maac.Nn
open Maac.Envs
open Maac.Rl
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Tests.Support

/// Settings small enough for tests: tiny networks and budgets on a managed task.
let tiny (env: string) (algo: string) =
    { Settings.forTask env algo with
        Steps = 400
        RandomSteps = 100
        Hidden = [| 32; 32 |]
        BatchSize = 64
        UpdatesPerStep = 1
        ModelMembers = 3
        ModelElites = 2
        ModelHidden = [| 32; 32 |]
        ModelMaxEpochs = 5
        ModelTrainEvery = 100
        RolloutStarts = 64
        RolloutLength = 1
        RealCapacity = 10_000
        ImaginedCapacity = 10_000
        ActorHorizon = 2
        ActorSamples = 2
        CriticHorizon = 1
        EvalEvery = 200
        EvalEpisodes = 2
    }

/// The test models' fitting settings: 3 members of 2×32, up to 60 epochs.
let private fitSettings =
    {
        Members = 3
        EliteCount = 2
        Hidden = [| 32; 32 |]
        LearningRate = 1e-3f
        BatchSize = 64
        MaxEpochs = 60
        HoldoutFraction = 0.2
        Patience = 10
        HoldoutSeed = 0L
    }

let private fittedContextWith (predictReward: bool) (seed: int) =
    let task = Tasks.find "Pendulum"
    use env = task.Create()
    let buffer = ReplayBuffer(2000, 3, 1)
    let mutable obs = (env.Reset(Some(int64 seed))).Observation

    for a in EnvSupport.uniform (key seed) 600 -1.0f 1.0f do
        let r = env.Step [| 2.0f * a |]
        buffer.Add(obs, [| a |], float32 r.Reward, r.Observation, r.Terminated)

        obs <-
            if r.Truncated then
                (env.Reset None).Observation
            else
                r.Observation

    let s = fitSettings

    let m0 = Dynamics.init (key (seed + 1)) s 3 1 predictReward
    let m, _, report = Dynamics.fit s (key (seed + 2)) m0 (Maac.Optim.Adam.init m0.Net) (buffer.All())

    {
        Model = m
        Task = task.Functions
        ActionLow = Tensor.ofSeq [ -2.0f ]
        ActionHigh = Tensor.ofSeq [ 2.0f ]
        PathNoise = SampledNoise
    },
    report,
    buffer

let private fittedContext = fittedContextWith false

/// A model fitted to random-action Pendulum data, with its context (the task's reward, actions in [−2, 2]).
let fittedPendulumModel (seed: int) =
    let ctx, _, _ = fittedContext seed
    ctx

let private runTrainer (s: Settings) (alg: Algorithm) (until: int) (onCheckpoint: Trainer -> MetricsRow -> unit) =
    let t = new Trainer(s, alg, Tasks.find s.Env)
    t.Run(until, ignore, onCheckpoint t, Threading.CancellationToken.None)
    t

let private bits = tensorBits

/// The same network with its output raised by c everywhere (the last layer's bias shifted).
let private raiseOutput (c: float32) (q: Mlp) =
    let last = q.Layers.Length - 1

    { q with
        Layers = q.Layers |> Array.mapi (fun i l -> if i = last then { l with Bias = l.Bias + c } else l)
    }

let private policyBits (a: AgentState) =
    Parameters.tensors a.Policy
    |> Array.collect (fun t -> t.ToArray())
    |> Array.map BitConverter.SingleToInt32Bits

/// Every element of two policy gradients within the accuracy.
let private expectCloseGradients (accuracy: Accuracy) (g1: TanhGaussianPolicy) (g2: TanhGaussianPolicy) =
    Array.iter2
        (fun (a: Tensor) (b: Tensor) ->
            Array.iter2
                (fun (x: float32) (y: float32) -> Expect.floatClose accuracy (float x) (float y) "gradient")
                (a.ToArray())
                (b.ToArray()))
        (Parameters.tensors g1)
        (Parameters.tensors g2)

let tests =
    testList
        "learning"
        [
            test "H = 0, K = 1: the MAAC objective is SAC's actor loss exactly (value and gradient)" {
                let policy = TanhGaussianPolicy.init (key 1) 3 1 [| 16 |]
                let critics = Critics.init (key 2) 3 1 [| 16 |]
                let obs = uniform 3 [| 20; 3 |] -1.0f 1.0f
                let k = key 4
                let v1, g1 = Diff.valueAndGradParams (Objectives.maac 0.99f 0 1 None critics 0.2f k obs) policy
                let v2, g2 = Diff.valueAndGradParams (Objectives.sac critics 0.2f k obs) policy
                // The same quantity summed in a different order: equal up to float32 rounding of a mean of
                // 20 terms (a few units in the last place, relative 1e-6).
                Expect.floatClose { absolute = 1e-7; relative = 1e-6 } (float (Tensor.toScalar v1)) (float (Tensor.toScalar v2)) "same loss"
                expectCloseGradients { absolute = 1e-8; relative = 1e-5 } g1 g2
            }

            test "the MAAC objective's gradient through the learned model matches finite differences" {
                let ctx, _, _ = fittedContext 10
                let policy = TanhGaussianPolicy.init (key 11) 3 1 [| 16 |]
                let policy = { policy with Net = { policy.Net with Hidden = Activation.Tanh } }
                let critics = Critics.init (key 12) 3 1 [| 16 |]

                let critics =
                    {
                        Q1 = { critics.Q1 with Hidden = Activation.Tanh }
                        Q2 = { critics.Q2 with Hidden = Activation.Tanh }
                    }

                let obs = uniform 13 [| 8; 3 |] -1.0f 1.0f
                let k = key 14

                checkGradient
                    "maac objective H=3 K=2"
                    (fun ts -> Objectives.maac 0.99f 3 2 (Some ctx) critics 0.2f k obs (Parameters.rebuild policy ts))
                    (Parameters.tensors policy)
                    15
            }

            test "model fitting learns the pendulum's dynamics and chooses elites by hold-out error" {
                let ctx, report, buffer = fittedContext 20
                Expect.equal ctx.Model.Elites.Length 2 "two elites"
                let worst = Array.max report.HoldoutMse
                let elitesWorst = ctx.Model.Elites |> Array.map (fun i -> report.HoldoutMse.[i]) |> Array.max
                Expect.isLessThanOrEqual elitesWorst worst "elites are the best members"
                // Standardised targets start with hold-out error ≈ 1; a fitted model explains most of the variance.
                Expect.isLessThan (Array.average report.HoldoutMse) 0.2f "hold-out MSE of normalised state changes"
                let b = buffer.Sample(key 21, 256)
                let predicted, _ = Dynamics.step ctx.Model (key 22) b.Obs b.Action
                let err = Tensor.mean ((predicted - b.NextObs) * (predicted - b.NextObs)) |> Tensor.toScalar
                let spread = Tensor.mean ((b.Obs - b.NextObs) * (b.Obs - b.NextObs)) |> Tensor.toScalar
                Expect.isLessThan err (0.5f * spread) "sampled next states are closer than 'no change'"
            }

            test "a model step by blocks sends block i to elite i: every member's prediction, that member picked, the same noise" {
                let ctx, _, buffer = fittedContextWith true 40
                // Elites in an order other than the members': block 0 goes to member 2, block 1 to member 0.
                let m = { ctx.Model with Elites = [| 2; 0 |] }
                let b = buffer.Sample(key 41, 40)
                let next, reward = Dynamics.stepByBlocks m (key 42) b.Obs b.Action
                let mean, logVar = Dynamics.predictAll m b.Obs b.Action

                let pick (t: Tensor) =
                    Tensor.concat 0 [| Tensor.slice 1 0 20 (Tensor.slice 0 2 1 t); Tensor.slice 1 20 20 (Tensor.slice 0 0 1 t) |]
                    |> Tensor.reshape [| 40; -1 |]

                let mean, logVar = pick mean, pick logVar

                let sample =
                    (mean + Tensor.exp (0.5f * logVar) * Tensor.randnLike (key 42) mean) * m.TargetStd + m.TargetMean

                let expectedNext = b.Obs + Tensor.slice 1 0 3 sample
                let expectedReward = Tensor.slice 1 3 1 sample |> Tensor.squeeze 1
                // The same float32 arithmetic on the same rows (a batched product per member either way).
                let closeTo what (x: Tensor) (y: Tensor) =
                    Array.iteri2
                        (fun i (u: float32) (v: float32) ->
                            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } (float u) (float v) (sprintf "%s %d" what i))
                        (x.ToArray())
                        (y.ToArray())

                closeTo "next observation" next expectedNext
                closeTo "reward" reward.Value expectedReward

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        Dynamics.stepByBlocks m (key 43) (Tensor.slice 0 0 39 b.Obs) (Tensor.slice 0 0 39 b.Action)
                        |> ignore)
                    "rows that do not split into one block per elite are refused"
            }

            test "the model reduced to its elites steps exactly as the whole model, by blocks and by random rows" {
                let ctx, _, buffer = fittedContextWith true 40
                // Elites out of the members' order, so that a reduction that kept the members' order would differ.
                let m = { ctx.Model with Elites = [| 2; 0 |] }
                let reduced = Dynamics.elitesOnly m
                Expect.equal reduced.Elites [| 0; 1 |] "the reduced model's elites are all its members, in order"
                Expect.equal (EnsembleMlp.members reduced.Net.Net) 2 "one member per elite"
                let b = buffer.Sample(key 48, 40)
                let bits (x: Tensor) = x.ToArray() |> Array.map BitConverter.SingleToInt32Bits

                for step in [ Dynamics.stepByBlocks; Dynamics.step ] do
                    let next, reward = step m (key 49) b.Obs b.Action
                    let next2, reward2 = step reduced (key 49) b.Obs b.Action
                    Expect.sequenceEqual (bits next2) (bits next) "next observation"
                    Expect.sequenceEqual (bits reward2.Value) (bits reward.Value) "reward"
            }
            test "STEVE with horizon 0 is the one-step soft TD target exactly, on the same draws, under every elite" {
                let ctx, _, buffer = fittedContext 30
                let policy = TanhGaussianPolicy.init (key 31) 3 1 [| 16 |]
                let critics = Critics.init (key 32) 3 1 [| 16 |]
                let b = buffer.Sample(key 33, 64)
                let steve0 = Targets.steve 0.99f 0 ctx policy critics 0.2f (key 34) b
                let td = Targets.td 0.99f policy critics 0.2f (key 34) b
                Expect.equal (bits steve0) (bits td) "horizon-0 STEVE is TD, bit for bit"
                let steve2 = Targets.steve 0.99f 2 ctx policy critics 0.2f (key 34) b
                Expect.isTrue (Tensor.allFinite steve2) "finite with horizon 2"
            }

            test "STEVE runs the policy's network once per set of states, with the bits of running it at every use" {
                let ctx, _, buffer = fittedContext 50
                // 40 and 24 units: products on both micro-kernels; 50 rows put the repeated rows at other places in
                // the products' tiles than the rows they repeat.
                let policy = TanhGaussianPolicy.init (key 51) 3 1 [| 40; 24 |]
                let critics = Critics.init (key 52) 3 1 [| 16 |]
                let b = buffer.Sample(key 53, 50)
                let gamma, alpha, horizon = 0.99f, 0.2f, 3
                let e, n = ctx.Model.Elites.Length, 50
                // The target with the policy evaluated wherever an action is drawn.
                let keys = RandomKey.split (2 * horizon + 1) (RandomKey.fold 1L (key 54))
                let flat = Tensor.repeatRows e

                let stepAt (t: int) (s: Tensor) =
                    let a, _ = TanhGaussianPolicy.sample policy keys.[2 * t + 1] s
                    Rollout.stepWith (Dynamics.stepByBlocksWithNoise ctx.PathNoise) ctx keys.[2 * t + 2] s a

                let perMember =
                    ImaginedPath.from (flat b.NextObs) (flat b.Reward) (1.0f - flat b.Done) gamma
                    |> ImaginedPath.scan gamma horizon stepAt
                    |> Array.skip 1
                    |> Array.map (fun p ->
                        let a, logp = TanhGaussianPolicy.sample policy keys.[0] p.State

                        ImaginedPath.close p (Critics.minQ critics p.State a - alpha * logp) |> Tensor.reshape [| e; n |])

                let expected =
                    Targets.combineByInverseVariance (Targets.td gamma policy critics alpha (key 54) b) perMember

                let steve = Targets.steve gamma horizon ctx policy critics alpha (key 54) b
                Expect.equal (bits steve) (bits expected) "the same bits"
            }

            test "the MAAC objective runs the policy once per start state: the value of acting on copies, bit for bit" {
                // K = 5 whole paths from 50 starts: the first actions come from the policy's head on the 50 starts,
                // repeated, where an Act that samples one action per row runs the network on all 250 rows. Rows are
                // computed alike whatever the batch, so the value is the same float; the gradient sums each start's 5
                // copies before the network's products instead of inside them. Each parameter's gradient is a sum of
                // a few hundred terms of size ≤ 1, so the two orders differ by at most ~250·2⁻²⁴·Σ|terms| ≈ 1e-4.
                let ctx, _, buffer = fittedContext 70
                let policy = TanhGaussianPolicy.init (key 71) 3 1 [| 40; 24 |]
                let critics = Critics.init (key 72) 3 1 [| 16 |]
                let obs = (buffer.Sample(key 73, 50)).Obs
                let choices = Objectives.wholePaths 5

                let objective (act: TanhGaussianPolicy -> RandomKey -> int -> Tensor -> Tensor * Tensor) (p: TanhGaussianPolicy) =
                    let parts = { Objectives.maacParts (Some ctx) critics p with Act = act p }
                    Objectives.pathwiseWith choices 0.99f 3 parts 0.2f (key 74) obs

                let v1, g1 = Diff.valueAndGradParams (objective TanhGaussianPolicy.sampleCopies) policy

                let v2, g2 =
                    Diff.valueAndGradParams (objective (fun p -> PathwiseParts.actOnCopies (TanhGaussianPolicy.sample p))) policy

                Expect.equal (bits v1) (bits v2) "the same value"
                expectCloseGradients { absolute = 1e-4; relative = 1e-4 } g1 g2
            }

            test "STEVE candidates take the smaller twin critic: a critic raised by 5 everywhere changes nothing" {
                let ctx, _, buffer = fittedContext 35
                let policy = TanhGaussianPolicy.init (key 36) 3 1 [| 16 |]
                let q = (Critics.init (key 37) 3 1 [| 16 |]).Q1
                let raised = raiseOutput 5.0f q
                let b = buffer.Sample(key 38, 60)
                let target (c: Critics) = Targets.steve 0.99f 2 ctx policy c 0.2f (key 39) b
                let same = target { Q1 = q; Q2 = q }
                // min(Q, Q + 5) = Q in every candidate; averaging the twins (the earlier target) would add about 2.5·γʰ⁺¹.
                Expect.equal (bits (target { Q1 = q; Q2 = raised })) (bits same) "Q2 raised: the minimum is Q1"
                Expect.equal (bits (target { Q1 = raised; Q2 = q })) (bits same) "Q1 raised: the minimum is Q2"
            }

            test "STEVE's inverse-variance combination, on hand-computed candidates" {
                // Two rows; the shared h = 0 candidate has variance 0 (weight 1e8); horizon 1's members give variance
                // 1 on row 0 (candidates 1 and 3: mean 2) and 0 on row 1 (candidates 5 and 5).
                let shared = Tensor.ofArray [| 2 |] [| 10.0f; 4.0f |]
                let h1 = Tensor.ofArray [| 2; 2 |] [| 1.0f; 5.0f; 3.0f; 5.0f |]
                let y = Targets.combineByInverseVariance shared [| h1 |] |> fun t -> t.ToArray()
                let w0, w1row0, w1row1 = 1e8, 1.0 / (1.0 + 1e-8), 1e8
                let expected0 = (w0 * 10.0 + w1row0 * 2.0) / (w0 + w1row0)
                let expected1 = (w0 * 4.0 + w1row1 * 5.0) / (w0 + w1row1)
                Expect.floatClose Accuracy.high (float y.[0]) expected0 "row 0: the h = 0 candidate dominates"
                Expect.floatClose { absolute = 1e-5; relative = 1e-6 } (float y.[1]) expected1 "row 1: equal weights, the mean of 4 and 5"
            }

            test "a mean path is the model's mean prediction: no noise, whatever the key" {
                let ctx, _, buffer = fittedContextWith true 44
                let m = { ctx.Model with Elites = [| 2; 0 |] }
                let b = buffer.Sample(key 45, 40)
                let next, reward = Dynamics.stepByBlocksWithNoise MeanPath m (key 46) b.Obs b.Action
                let again, _ = Dynamics.stepByBlocksWithNoise MeanPath m (key 47) b.Obs b.Action
                let mean, _ = Dynamics.predictAll m b.Obs b.Action

                let picked =
                    Tensor.concat 0 [| Tensor.slice 1 0 20 (Tensor.slice 0 2 1 mean); Tensor.slice 1 20 20 (Tensor.slice 0 0 1 mean) |]
                    |> Tensor.reshape [| 40; -1 |]
                    |> fun t -> t * m.TargetStd + m.TargetMean

                Expect.equal (bits next) (bits again) "the key draws nothing"
                let expected = (b.Obs + Tensor.slice 1 0 3 picked).ToArray()

                // The same float32 arithmetic on the same rows, apart from the order of the products' sums.
                let tol = { absolute = 1e-5; relative = 1e-5 }
                expectAllClose tol "next observation" (next.ToArray()) expected
                expectAllClose tol "reward" (reward.Value.ToArray()) ((Tensor.slice 1 3 1 picked |> Tensor.squeeze 1).ToArray())
            }

            test "the hold-out split is fixed per row: rows keep their side as the data grows" {
                let hold1, train1 = Dynamics.holdoutSplit 7L 0.2 1000
                let hold2, _ = Dynamics.holdoutSplit 7L 0.2 5000
                Expect.equal (Array.sort (Array.append hold1 train1)) (Array.init 1000 id) "every row on exactly one side"
                Expect.equal (hold2 |> Array.filter (fun i -> i < 1000)) hold1 "the first 1,000 rows keep their side"
                // 20% of 5,000 rows: 1,000 ± 4 standard deviations (√(5000·0.2·0.8) ≈ 28).
                Expect.isTrue (abs (hold2.Length - 1000) < 113) (sprintf "about 20%% held out, got %d" hold2.Length)
                let other, _ = Dynamics.holdoutSplit 8L 0.2 1000
                Expect.notEqual other hold1 "another seed, another split"
            }

            test "a fit keeps each member's best hold-out weights and never returns a member worse than it started" {
                let ctx, first, buffer = fittedContextWith false 60
                let s = { fitSettings with MaxEpochs = 6; Patience = 2; LearningRate = 3e-2f }
                let opt = Maac.Optim.Adam.init ctx.Model.Net
                let data = buffer.All()
                let m, _, report = Dynamics.fit s (key 61) ctx.Model opt data
                // The hold-out error of the returned weights, measured here on the fixed hold-out rows.
                let holdIdx, _ = Dynamics.holdoutSplit s.HoldoutSeed s.HoldoutFraction data.Obs.Shape.[0]
                let x = Tensor.indexSelect 0 holdIdx (Tensor.concat -1 [| data.Obs; data.Action |])
                let y = Tensor.indexSelect 0 holdIdx (data.NextObs - data.Obs)

                let mse (model: DynamicsModel) =
                    let mean, _ =
                        GaussianEnsemble.forward
                            model.Net
                            (Tensor.expand [| 3; x.Shape.[0]; x.Shape.[1] |] ((x - m.InputMean) / m.InputStd))

                    let err = mean - Tensor.expand mean.Shape ((y - m.TargetMean) / m.TargetStd)
                    (Tensor.meanAxis -1 false (Tensor.meanAxis -1 false (err * err))).ToArray()

                let returned = mse m

                let started =
                    mse
                        { ctx.Model with
                            InputMean = m.InputMean
                            InputStd = m.InputStd
                            TargetMean = m.TargetMean
                            TargetStd = m.TargetStd
                        }

                // The same quantity, reduced over the same rows in another order: float32 rounding only.
                expectAllClose { absolute = 1e-6; relative = 1e-4 } "the reported error is the returned weights'" returned report.HoldoutMse

                Array.iteri2
                    (fun i (r: float32) (st: float32) ->
                        Expect.isLessThanOrEqual r (st * 1.0001f) (sprintf "member %d is no worse than its start" i))
                    returned
                    started

                Expect.isGreaterThan first.Epochs 0 "the first fit trained"
            }

            test "every algorithm trains a few hundred steps and writes metrics" {
                for alg in Algorithms.all do
                    use t = runTrainer { tiny "Pendulum" alg.Name with Steps = 300 } alg 300 (fun _ _ -> ())
                    Expect.equal t.Step 300 (sprintf "%s ran" alg.Name)

                    Expect.equal
                        (t.Metrics |> List.map (fun r -> r.Step))
                        [ 200; 300 ]
                        (sprintf "%s evaluated at 200 and at the end" alg.Name)

                    Expect.isTrue (t.Metrics |> List.forall (fun r -> not (Double.IsNaN r.EvalReturnMean))) "finite evaluations"
            }

            test "a user-composed variant: MAAC whose horizon grows with training progress" {
                let seen = Collections.Generic.HashSet<int>()

                let growing =
                    { Algorithms.maac with
                        Name = "maac"
                        ActorHorizon =
                            fun s step ->
                                let h = min 3 (1 + (step - s.RandomSteps) / 100) in
                                lock seen (fun () -> seen.Add h |> ignore)
                                h
                    }

                use _t = runTrainer (tiny "Pendulum" "maac") growing 400 (fun _ _ -> ())
                Expect.equal (Set.ofSeq seen) (set [ 1; 2; 3 ]) "the schedule was used: horizons 1, 2 and 3"
            }

            test "a resumed run ends with the same parameters as an uninterrupted one" {
                let s = { tiny "Pendulum" "maac" with Steps = 400 }
                use folder = new TempFolder("maac-resume")
                let dir = folder.Path
                let path = Path.Combine(dir, "checkpoint.safetensors")
                use whole = runTrainer s Algorithms.maac 400 (fun _ _ -> ())
                use _first = runTrainer s Algorithms.maac 200 (fun t _ -> t.SaveCheckpoint path)
                use second = new Trainer(s, Algorithms.maac, Tasks.find "Pendulum")
                second.LoadCheckpoint path |> ignore
                Expect.equal second.Step 200 "restored step"
                let clock = Diagnostics.Stopwatch.StartNew()
                second.Run(400, ignore, ignore, Threading.CancellationToken.None)
                let own = clock.Elapsed.TotalSeconds
                Expect.sequenceEqual (policyBits second.Agent) (policyBits whole.Agent) "bit-identical policy"
                // The wall time carries over: the checkpoint holds the time spent up to step 200.
                let before = (_first.Metrics |> List.last).WallSeconds
                Expect.isGreaterThan before 0.0 "the first part took time"

                Expect.isGreaterThanOrEqual
                    (second.Metrics |> List.last).WallSeconds
                    (before + 0.9 * own)
                    "the resumed run's wall time includes it"
            }

            test "corrupt and mismatched checkpoints are refused with clear errors" {
                let s = tiny "Pendulum" "sac"
                use folder = new TempFolder("maac-corrupt")
                let dir = folder.Path
                let path = Path.Combine(dir, "checkpoint.safetensors")
                use _t = runTrainer s Algorithms.sac 200 (fun t _ -> t.SaveCheckpoint path)
                let bytes = File.ReadAllBytes path
                let cut = Path.Combine(dir, "cut.safetensors")
                File.WriteAllBytes(cut, bytes.[.. bytes.Length / 2])
                use fresh = new Trainer(s, Algorithms.sac, Tasks.find "Pendulum")
                let msg = Expect.throwsC (fun () -> fresh.LoadCheckpoint cut |> ignore) (fun e -> e.Message)
                Expect.stringContains msg "cut.safetensors" "names the file"
                use other = new Trainer(tiny "Pendulum" "mbpo", Algorithms.mbpo, Tasks.find "Pendulum")
                let msg2 = Expect.throwsC (fun () -> other.LoadCheckpoint path |> ignore) (fun e -> e.Message)
                Expect.stringContains msg2 "sac" "says which algorithm the checkpoint is for"
            }

            test "the checkpoint fuzzer: every corrupted copy of a small MBPO run is refused naming the file (a subset of the full set)" {
                // `experiment checkpoint-fuzz --run DIR` runs ~300 cases; here every family with about a fifth of them, on a
                // checkpoint written in the middle of an episode (so it holds the running episode and the environment's state).
                let s = { tiny "Pendulum" "mbpo" with Steps = 300 }
                use folder = new TempFolder("maac-fuzz-run")
                let dir = folder.Path
                RunFolder.create dir s
                use trainer = runTrainer s Algorithms.mbpo 250 (fun _ _ -> ())
                trainer.SaveCheckpoint(RunFolder.checkpointFile dir)
                Expect.isTrue trainer.State.Episode.IsSome "a checkpoint inside an episode"
                let task = Tasks.find "Pendulum"

                let results =
                    CheckpointFuzz.run dir 60 7 (fun d -> (RunFolder.openTrainerFor d task :> IDisposable).Dispose())

                Expect.isGreaterThanOrEqual results.Length 60 "cases run"
                Expect.equal (results |> List.map (fun c -> c.Family) |> List.distinct |> List.length) 12 "every family"

                let bad =
                    results
                    |> List.filter (fun c -> not c.Outcome.IsRefused)
                    |> List.map (fun c -> sprintf "%s (%s): %A" c.Family c.Description c.Outcome)

                Expect.isEmpty bad (String.Join("\n", bad))
                // The uncorrupted checkpoint loads: the fuzzer's refusals are not a loader that refuses everything.
                (RunFolder.openTrainerFor dir task :> IDisposable).Dispose()
            }

            test "nothing non-finite is written: a NaN in any tensor is refused naming it, the previous file stays" {
                use folder = new TempFolder("maac-nonfinite")
                let dir = folder.Path
                let path = Path.Combine(dir, "c.safetensors")
                let good = [ { Name = "a"; Shape = [| 2 |]; Values = [| 1.0f; 2.0f |] } ]
                Checkpoint.save path good Map.empty
                let before = File.ReadAllBytes path

                let e =
                    Expect.throwsC
                        (fun () -> Checkpoint.save path [ { Name = "a"; Shape = [| 2 |]; Values = [| 1.0f; nanf |] } ] Map.empty)
                        id

                Expect.stringContains e.Message "'a' element 1" "names the tensor and the element"
                Expect.equal (File.ReadAllBytes path) before "the previous checkpoint is untouched"
                let arrays, _ = Checkpoint.load path
                Expect.equal arrays.["a"].Values [| 1.0f; 2.0f |] "and still loads"
            }

            test "a killed checkpoint write leaves no temporary file behind after the next write" {
                use folder = new TempFolder("maac-stale")
                let dir = folder.Path
                let path = Path.Combine(dir, "checkpoint.safetensors")
                File.WriteAllText(Path.Combine(dir, ".checkpoint.safetensors.99999.tmp"), "half written")
                Checkpoint.save path [ { Name = "a"; Shape = [| 1 |]; Values = [| 1.0f |] } ] Map.empty
                Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName) [| "checkpoint.safetensors" |] "only the checkpoint"
            }

            test "learning check: MAAC improves the double integrator's return well beyond its initial policy" {
                // Deterministic (fixed seed, bit-identical on any thread count). The initial policy returns
                // −48.7 from (1, 1); the finite-horizon LQR optimum is −34.2; this run reaches about −40.8.
                // The policy changes only through the actor's gradient, so cutting it keeps −48.7 and fails.
                let s =
                    { Settings.forTask "DoubleIntegrator" "maac" with
                        Steps = 1200
                        RandomSteps = 200
                        Hidden = [| 64; 64 |]
                        BatchSize = 128
                        ModelMembers = 3
                        ModelElites = 2
                        ModelHidden = [| 64; 64 |]
                        ModelMaxEpochs = 20
                        ModelTrainEvery = 200
                        RolloutStarts = 256
                        EvalEvery = 200
                        EvalEpisodes = 5
                        RealCapacity = 20_000
                        ImaginedCapacity = 20_000
                    }

                use t = runTrainer s Algorithms.maac 1200 (fun _ _ -> ())
                let returns = t.Metrics |> List.map (fun r -> r.EvalReturnMean)
                let first, last = List.head returns, List.last returns
                Expect.isGreaterThan last (first + 5.0) (sprintf "return improves by more than 5 (%A)" returns)
                Expect.isGreaterThan last -43.5 (sprintf "return above −43.5 (%A)" returns)
            }

            test "CEM planning returns bounded, reproducible actions" {
                let ctx, _, _ = fittedContext 40
                let policy = TanhGaussianPolicy.init (key 41) 3 1 [| 16 |]
                let critics = Critics.init (key 42) 3 1 [| 16 |]
                let cfg = { CemSettings.Paper with Candidates = 64 }
                let obs = [| 1.0f; 0.0f; 0.5f |]
                let a1 = Cem.plan cfg 0.99f ctx policy critics (key 43) obs
                let a2 = Cem.plan cfg 0.99f ctx policy critics (key 43) obs
                Expect.equal a1 a2 "same key, same plan"
                Expect.isTrue (a1 |> Array.forall (fun v -> v >= -1.0f && v <= 1.0f)) "within [−1, 1]"
            }

            test "without a task reward function the model learns the reward, and training runs on it" {
                let pendulum = Tasks.find "Pendulum"
                let noReward = { pendulum with Functions = { Reward = None; Termination = None } }
                let s = { tiny "Pendulum" "maac" with Steps = 300 }
                use t = new Trainer(s, Algorithms.maac, noReward)
                t.Run(300, ignore, ignore, Threading.CancellationToken.None)
                Expect.isTrue t.Agent.Model.PredictsReward "the model predicts rewards"
                // A model fitted on enough data predicts the reward far better than a constant.
                let ctx, _, buffer = fittedContextWith true 50
                let b = buffer.All()
                let mean, _ = Dynamics.predictAll ctx.Model b.Obs b.Action
                let rewardColumn = Tensor.slice -1 3 1 mean |> Tensor.meanAxis 0 false |> Tensor.squeeze -1

                let predicted =
                    rewardColumn * Tensor.slice 0 3 1 ctx.Model.TargetStd + Tensor.slice 0 3 1 ctx.Model.TargetMean

                let err = Tensor.mean ((predicted - b.Reward) * (predicted - b.Reward)) |> Tensor.toScalar
                let c = b.Reward - Tensor.mean b.Reward
                Expect.isLessThan err (0.2f * Tensor.toScalar (Tensor.mean (c * c))) "reward MSE below a fifth of the reward variance"
            }

            test "settings round-trip through config.json; malformed settings files are refused with their path" {
                use folder = new TempFolder("maac-config")
                let dir = folder.Path
                let s = tiny "Pendulum" "mbpo"
                RunFolder.writeSettings dir s
                Expect.equal (RunFolder.readSettings dir) s "round trip"
                let bad = Path.Combine(dir, "bad.json")
                File.WriteAllText(bad, "{ \"Env\": ")
                let msg = Expect.throwsC (fun () -> RunFolder.readSettingsFile bad |> ignore) (fun e -> e.Message)
                Expect.stringContains msg "bad.json" "names the file"
            }

            test "every built-in parameter collection lists the same tensors, in the same order, with and without names" {
                let settings, agent, ctx, batch = smallMaacUpdate ()
                // After an update the two moments of each parameter are different tensors.
                let a, _ = Agent.update (Algorithms.find "maac") settings (Some ctx) 0 (key 13) agent batch

                let same (what: string) (p: 'P :> IParameters<'P>) =
                    Expect.isTrue (box p :? IParameterTensors) (what + " lists its tensors without names")
                    let named = p.Named |> Array.map snd
                    let fast = Parameters.tensors p
                    Expect.equal fast.Length named.Length (what + ": as many tensors")

                    Array.iteri2
                        (fun i (x: Tensor) (y: Tensor) -> Expect.isTrue (obj.ReferenceEquals(x, y)) (sprintf "%s: tensor %d" what i))
                        fast
                        named

                same "the agent" a
                same "the policy" a.Policy
                same "the policy's optimiser" a.PolicyOpt
                same "the critics" a.Critics
                same "the model" a.Model.Net
                same "a layer" a.Policy.Net.Layers.[0]
                same "the temperature" a.Temperature
                same "a dictionary" (ParameterDict.OfSeq [ "b", Tensor.zeros [| 2 |]; "a", Tensor.ones [| 3 |]; "c", Tensor.ones [| 1 |] ])
            }

            test "a chain of updates that consumes its states computes what plain updates do, and releases what it replaced" {
                let settings, agent, ctx, batch = smallMaacUpdate ()
                let maac = Algorithms.find "maac"
                let update (k: int) a = Agent.update maac settings (Some ctx) 0 (key k) a batch |> fst

                let consuming (k: int) a = Agent.updateReplacingWith StageClock.untimed maac settings (Some ctx) 0 (key k) a batch |> fst

                let plain = agent |> update 13 |> update 14
                let first = update 13 agent
                let stateBits a = Agent.tensors a |> Array.collect bits
                let firstBits = stateBits first
                let poisoned = { batch with Reward = Tensor.full [| 24 |] nanf }

                Expect.throwsT<DivergenceException>
                    (fun () ->
                        Agent.updateReplacingWith StageClock.untimed maac settings (Some ctx) 0 (key 14) first poisoned
                        |> ignore)
                    "a non-finite loss is refused"

                Expect.sequenceEqual (stateBits first) firstBits "a failed update leaves the state it would consume intact"
                let chained = consuming 14 first
                Expect.sequenceEqual (stateBits chained) (stateBits plain) "bit-identical to updates that consume nothing"
                let shared = Agent.tensors chained |> Array.map (fun t -> t.Primal) |> HashSet<RawTensor>

                let kept, released = Agent.tensors first |> Array.partition (fun t -> shared.Contains t.Primal)

                Expect.isNonEmpty kept "the model passes through the update unchanged"
                Expect.isNonEmpty released "the policy, critics and moments are replaced"
                kept |> Array.iter (fun t -> t.ToArray() |> ignore)

                released
                |> Array.iter (fun t -> expectReleased t.Primal "a replaced tensor of the consumed state is released")

                Expect.sequenceEqual (stateBits agent) (stateBits agent) "the chain's first input was not consumed"
            }

            test "a run diverging at a later update of a step keeps the agent from before the step, usable" {
                // SAC whose actor loss turns NaN at its third evaluation: the third of the first learning step's four
                // updates. The earlier two consumed nothing the trainer falls back to.
                let calls = ref 0

                let failing =
                    { Algorithms.sac with
                        ActorObjective =
                            fun inputs policy ->
                                let loss = Algorithms.pathwiseActor inputs policy

                                if Threading.Interlocked.Increment calls = 3 then
                                    loss * nanf
                                else
                                    loss
                    }

                let s = { tiny "Pendulum" "sac" with UpdatesPerStep = 4 }
                use t = new Trainer(s, failing, Tasks.find s.Env)
                Expect.throwsT<DivergenceException> (fun () -> t.Run(400, ignore, ignore, Threading.CancellationToken.None)) "it diverges"
                Expect.equal calls.Value 3 "at the third update"
                Expect.equal t.Step s.RandomSteps "of the first learning step, whose state the trainer keeps"

                for x in Agent.tensors t.Agent do
                    Expect.isTrue (x.ToArray() |> Array.forall Single.IsFinite) "the agent before the step is whole"

                let action = t.Act(Array.zeroCreate t.ObservationDim, true, key 1)
                Expect.isTrue (action |> Array.forall Single.IsFinite) "and acts"
            }

            test "a diverging run stops with a report of where the NaN appeared" {
                let s = { tiny "Pendulum" "sac" with CriticLearningRate = 1e30f; ActorLearningRate = 1e30f }

                let msg =
                    Expect.throwsC (fun () -> (runTrainer s Algorithms.sac 400 (fun _ _ -> ()) :> IDisposable).Dispose()) (fun e ->
                        e.Message)

                Expect.stringContains msg "diverged at step" "reports the step"
            }
        ]
