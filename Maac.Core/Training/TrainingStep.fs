namespace Maac.Training

open Maac
open Maac.Algorithms
open Maac.Persistence

open System
open Maac.Tensors
open Maac.Envs
open Maac.Rl

/// What a training step reports besides its new state; a trainer publishes them to its subscribers (progress,
/// metrics rows, checkpoints, curves, callbacks) in the order they happened.
type TrainingEvent =
    /// A training episode ended (terminated or truncated) at this step; cuts at checkpoints do not count.
    | EpisodeEnded of step: int * episodeReturn: float * length: int
    /// The dynamics model was fitted at this step (mean hold-out MSE of its members).
    | ModelFitted of step: int * holdoutMse: float32
    /// An evaluation was made: the row is the state's newest metrics row, and the state (its running episode cut)
    /// is ready to be checkpointed.
    | Evaluated of MetricsRow
    /// A part diverged at this step: the state is the one before the step, and the run ends.
    | Diverged of DivergenceException
    /// The step is done (published last, after the step's other events, by the trainer).
    | Stepped of ProgressInfo

/// What every step of a run shares and never changes: its settings (the budget aside, which the state holds), the
/// algorithm, the task with its environment, and the action bounds.
type TrainingRun =
    {
        Settings: Settings
        Algorithm: Algorithm
        Task: TaskInfo
        Env: IEnv
        ActionLow: Tensor
        ActionHigh: Tensor
        /// What runs each stage of the work (StageName): StageClock.untimed in training, a timer in the benchmark.
        Stages: IStageClock
    }

/// What a random draw of a run is for. Each purpose folds its own number into the run's seed (TrainingStep.key), so
/// draws for different purposes never coincide; the numbers are part of every run's reproducibility.
module KeyPurpose =
    /// The agent's initial parameters.
    [<Literal>]
    let AgentInit = 1L

    /// A model fit's bootstrap and minibatch order.
    [<Literal>]
    let ModelFit = 2L

    /// The real states imagined rollouts start from.
    [<Literal>]
    let RolloutStarts = 3L

    /// The policy and model noise of imagined rollouts.
    [<Literal>]
    let Rollouts = 4L

    /// The deterministic policy's evaluation (it draws nothing; the key is fixed).
    [<Literal>]
    let Evaluation = 5L

    /// The uniform actions of the random phase.
    [<Literal>]
    let RandomActions = 6L

    /// The policy's sampled actions in the environment.
    [<Literal>]
    let Exploration = 7L

    /// A gradient step's batch and noise.
    [<Literal>]
    let Update = 8L

    /// The test-time planner's candidates.
    [<Literal>]
    let Planner = 9L

    /// The real transitions the critics' values are checked on at each evaluation (CriticValueCheck).
    [<Literal>]
    let CriticValueCheck = 10L

/// One environment step of training as a function from state to state and events: act (randomly for the first
/// RandomSteps), store the transition, fit the model every ModelTrainEvery steps, make UpdatesPerStep gradient steps,
/// and evaluate every EvalEvery steps. Every random draw is derived from the seed and the step, so a run is
/// reproducible from its settings.
module TrainingStep =
    /// A run of a task (its environment created here; dispose it with the run).
    let createRun (settings: Settings) (algorithm: Algorithm) (task: TaskInfo) =
        let env = task.Create()
        let space = env.ActionSpace

        {
            Settings = settings
            Algorithm = algorithm
            Task = task
            Env = env
            ActionLow = Tensor.ofArray [| space.Dim |] space.Low
            ActionHigh = Tensor.ofArray [| space.Dim |] space.High
            Stages = StageClock.untimed
        }

    /// The key of a purpose (KeyPurpose: what the draw is for) at a step of a run with this seed.
    let keyOfSeed (seed: int64) (purpose: int64) (step: int) =
        RandomKey.ofSeed seed |> RandomKey.fold purpose |> RandomKey.fold (int64 step)

    /// The key of a purpose (KeyPurpose: what the draw is for) at a step of the run.
    let key (run: TrainingRun) (purpose: int64) (step: int) = keyOfSeed run.Settings.Seed purpose step

    /// The settings in force in a state (its budget).
    let settingsOf (run: TrainingRun) (s: TrainingState) =
        if run.Settings.Steps = s.Budget then
            run.Settings
        else
            { run.Settings with Steps = s.Budget }

    /// A policy action in [−1, 1] scaled to the task's action space.
    let toEnv (run: TrainingRun) (a: float32[]) = Box.fromUnit run.Env.ActionSpace a

    /// The learned model's elites with the task's functions, once the algorithm has one and it was fitted.
    let modelContext (run: TrainingRun) (s: TrainingState) =
        if run.Algorithm.UsesModel && s.ModelFitted then
            Some
                {
                    Model = Dynamics.elitesOnly s.Agent.Model
                    Task = run.Task.Functions
                    ActionLow = run.ActionLow
                    ActionHigh = run.ActionHigh
                    PathNoise = Settings.pathNoise run.Settings
                }
        else
            None

    /// Evaluation episode i of a run with this seed resets its environment with seed evaluationSeedBase + i.
    let evaluationSeedBase (seed: int64) = 1_000_000L + seed * 1000L

    /// Mean and standard deviation of returns over parallel episodes of a policy mapping an observation to an action
    /// in [−1, 1].
    let evaluatePolicy (run: TrainingRun) (policy: float32[] -> float32[]) (episodes: int) =
        let results =
            Evaluation.run run.Task.Create (policy >> toEnv run) episodes (evaluationSeedBase run.Settings.Seed) run.Task.EpisodeSteps

        let rs = results |> Array.map (fun r -> r.Return)
        let mean = Array.average rs
        mean, sqrt (rs |> Array.averageBy (fun r -> (r - mean) ** 2.0))

    /// The deterministic policy of an agent (its key fixed: the mean does not draw).
    let deterministicPolicy (run: TrainingRun) (a: AgentState) = Agent.act a (key run KeyPurpose.Evaluation 0) true

    /// Fits the model on the real buffer and, for algorithms that train on imagined data, refreshes it with rollouts.
    let private fitModel (run: TrainingRun) (s: TrainingState) =
        let settings = settingsOf run s

        let m, opt, report =
            // A diverging model is a diverging run, reported as every other part's divergence is.
            try
                run.Stages.Stage(
                    StageName.ModelFit,
                    fun () ->
                        Dynamics.fit
                            (Agent.dynamicsSettings settings)
                            (key run KeyPurpose.ModelFit s.Step)
                            s.Agent.Model
                            s.Agent.ModelOpt
                            (s.Real.All())
                )
            with :? NonFiniteException as e ->
                raise (DivergenceException("model", sprintf "training diverged at step %d: %s" s.Step e.Message))

        let mse = Array.average report.HoldoutMse

        let fitted =
            { s with
                Agent = { s.Agent with Model = m; ModelOpt = opt }
                ModelFitted = true
                ModelHoldoutMse = mse
            }

        if run.Algorithm.UsesImaginedData then
            run.Stages.Stage(
                StageName.ImaginedRollouts,
                fun () ->
                    let starts = s.Real.Sample(key run KeyPurpose.RolloutStarts s.Step, settings.RolloutStarts).Obs
                    let ctx = (modelContext run fitted).Value
                    let length = run.Algorithm.RolloutLength settings s.Step

                    for b in Rollout.imagine ctx fitted.Agent.Policy (key run KeyPurpose.Rollouts s.Step) starts length do
                        s.Imagined.AddBatch b
            )

        fitted, ModelFitted(s.Step, mse)

    /// A training batch: real transitions only, or a RealFraction of real ones and the rest imagined.
    let private sampleBatch (run: TrainingRun) (s: TrainingState) (k: RandomKey) =
        let settings = run.Settings
        let k1, k2 = RandomKey.split2 k

        run.Stages.Stage(
            StageName.BatchSampling,
            fun () ->
                if run.Algorithm.UsesImaginedData && s.Imagined.Count > 0 then
                    let nReal = max 1 (int (MathF.Round(float32 settings.BatchSize * settings.RealFraction)))
                    Batch.append (s.Real.Sample(k1, nReal)) (s.Imagined.Sample(k2, settings.BatchSize - nReal))
                else
                    s.Real.Sample(k1, settings.BatchSize)
        )

    /// The environment's step, checked: a malformed or non-finite value is the environment's fault, reported as such
    /// with the step, before it reaches a buffer or a loss.
    let private envStep (run: TrainingRun) (step: int) (action: float32[]) =
        let task, obsDim = run.Task, run.Env.ObservationSpace.Dim
        let r = run.Stages.Stage(StageName.Environment, fun () -> run.Env.Step(toEnv run action))

        if isNull r.Observation || r.Observation.Length <> obsDim then
            invalidOp (
                sprintf
                    "%s returned an observation of size %d at environment step %d; its observation space has %d dimensions"
                    task.Name
                    (if isNull r.Observation then 0 else r.Observation.Length)
                    step
                    obsDim
            )

        r.Observation
        |> Finite.require (sprintf "%s returned a non-finite observation at environment step %d: element %d is %g" task.Name step)

        if not (Double.IsFinite r.Reward) then
            raise (NonFiniteException(sprintf "%s returned a non-finite reward at environment step %d: %g" task.Name step r.Reward))

        r

    /// Acts and stores the transition: the state one environment step on, and the episode's end if it ended.
    let private act (run: TrainingRun) (s: TrainingState) =
        let settings = run.Settings
        let step = s.Step + 1

        let episode =
            match s.Episode with
            | ValueSome e -> e
            | ValueNone ->
                {
                    Observation = (run.Env.Reset(Some(settings.Seed * 1_000_003L + int64 s.Episodes))).Observation
                    Return = 0.0
                    Length = 0
                }

        let action =
            run.Stages.Stage(
                StageName.Acting,
                fun () ->
                    if step <= settings.RandomSteps then
                        EnvSupport.uniform (key run KeyPurpose.RandomActions step) run.Env.ActionSpace.Dim -1.0f 1.0f
                    else
                        Agent.act s.Agent (key run KeyPurpose.Exploration step) false episode.Observation
            )

        let r = envStep run step action
        s.Real.Add(episode.Observation, action, float32 r.Reward, r.Observation, r.Terminated)
        let ret, length = episode.Return + r.Reward, episode.Length + 1

        if r.Terminated || r.Truncated then
            { s with
                Step = step
                Episodes = s.Episodes + 1
                Episode = ValueNone
                LastEpisodeReturn = ret
                LastEpisodeLength = length
            },
            [ EpisodeEnded(step, ret, length) ]
        else
            { s with
                Step = step
                Episode = ValueSome { Observation = r.Observation; Return = ret; Length = length }
            },
            []

    /// UpdatesPerStep gradient steps of the algorithm. The first leaves the step's agent intact (other threads may
    /// act with it, and a divergence returns to it); each later one consumes the agent its predecessor made, which
    /// nothing else sees, so the chain reuses the memory of its states (Agent.updateReplacingWith).
    let private update (run: TrainingRun) (s: TrainingState) =
        let settings = settingsOf run s
        let ctx = modelContext run s

        let agent, last =
            Seq.fold
                (fun (agent, _) g ->
                    let k1, k2 = RandomKey.split2 (key run KeyPurpose.Update (s.Step * settings.UpdatesPerStep + g))

                    let update =
                        if g = 0 then
                            Agent.updateWith
                        else
                            Agent.updateReplacingWith

                    update run.Stages run.Algorithm settings ctx s.Step k2 agent (sampleBatch run s k1))
                (s.Agent, s.LastUpdate)
                [ 0 .. settings.UpdatesPerStep - 1 ]

        { s with Agent = agent; LastUpdate = last }

    /// Checks the critics' values against the rewards (CriticValueCheck.check), evaluates the deterministic policy,
    /// adds the metrics row (its wall time from `clock`) and cuts the running episode, so that a run resumed from a
    /// checkpoint of this state continues identically.
    let private evaluate (run: TrainingRun) (clock: unit -> float) (s: TrainingState) =
        let mean, std =
            run.Stages.Stage(
                StageName.Evaluation,
                fun () ->
                    CriticValueCheck.check (settingsOf run s) (key run KeyPurpose.CriticValueCheck s.Step) s
                    evaluatePolicy run (deterministicPolicy run s.Agent) run.Settings.EvalEpisodes
            )

        let u = s.LastUpdate

        let row =
            {
                Step = s.Step
                EvalReturnMean = mean
                EvalReturnStd = std
                CriticLoss = u.CriticLoss
                ActorLoss = u.ActorLoss
                Alpha = u.Alpha
                ModelHoldoutMse = s.ModelHoldoutMse
                WallSeconds = clock ()
            }

        TrainingState.cutEpisode { s with LastEvalReturn = mean; Metrics = s.Metrics @ [ row ] }, Evaluated row

    /// One environment step of training: the next state and what happened, in order. A part that diverges ends the
    /// step with the state before it and a Diverged event.
    let step (run: TrainingRun) (clock: unit -> float) (s: TrainingState) : TrainingState * TrainingEvent list =
        let settings = settingsOf run s

        try
            let acted, ended = act run s
            let t = acted.Step

            let fitted, fit =
                if
                    run.Algorithm.UsesModel
                    && t >= settings.RandomSteps
                    && (t - settings.RandomSteps) % settings.ModelTrainEvery = 0
                then
                    let f, e = fitModel run acted
                    f, [ e ]
                else
                    acted, []

            let updated =
                if t > settings.RandomSteps then
                    update run fitted
                else
                    fitted

            let final, evaluated =
                if t % settings.EvalEvery = 0 || t = settings.Steps then
                    let e, row = evaluate run clock updated
                    e, [ row ]
                else
                    updated, []

            final, List.concat [ ended; fit; evaluated ]
        with :? DivergenceException as e ->
            s, [ Diverged e ]
