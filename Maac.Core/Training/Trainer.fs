namespace Maac.Training

open Maac
open Maac.Algorithms
open Maac.Persistence

open System
open System.Diagnostics
open Maac.Tensors
open Maac.Envs
open Maac.Rl

/// Runs the training loop as a fold of TrainingStep.step over the run's TrainingState, publishing each step's
/// events to the caller: environment step → real buffer → (every N steps) fit the model and refresh imagined data →
/// G gradient steps → (every EvalEvery steps) evaluation and metrics row, at which the caller checkpoints. The trainer
/// holds one state reference, replaced after every step (Act and Evaluate on other threads see the last one).
[<Sealed>]
type Trainer(settings: Settings, algorithm: Algorithm, task: TaskInfo) =
    do Settings.validate settings
    let run = TrainingStep.createRun settings algorithm task
    let restorable = EnvState.tryRestorable run.Env
    let obsDim, actDim = run.Env.ObservationSpace.Dim, run.Env.ActionSpace.Dim

    let mutable state =
        TrainingState.init settings (TrainingStep.key run KeyPurpose.AgentInit 0) obsDim actDim task.Functions.Reward.IsNone

    let checkObservation (name: string) (row: string) (o: float32[]) =
        if isNull o || o.Length <> obsDim then
            invalidArg
                name
                (sprintf "%s expects observations of size %d; %s has %d" task.Name obsDim row (if isNull o then 0 else o.Length))

        match Finite.firstNonFinite o with
        | Some i -> invalidArg name (sprintf "%s, element %d is %g" row i o.[i])
        | None -> ()

    /// The run's state after the last finished step.
    member _.State = state
    /// The agent's current state.
    member _.Agent = state.Agent
    /// Environment steps taken.
    member _.Step = state.Step
    /// Metrics rows so far.
    member _.Metrics = state.Metrics
    /// The settings, with the budget in force.
    member _.Settings = TrainingStep.settingsOf run state
    member _.Algorithm = algorithm
    member _.Task = task

    /// Evaluation episode i of a run with this seed resets its environment with seed EvaluationSeedBase + i.
    static member EvaluationSeedBase(seed: int64) = TrainingStep.evaluationSeedBase seed

    /// Whether a stop between evaluations resumes bit for bit: the environment can save its state, so checkpoints hold
    /// the running episode (the built-in tasks can; an environment that cannot has its episode cut at a stop).
    member _.ResumesExactly = restorable.IsSome

    /// The observation size of the task.
    member _.ObservationDim = obsDim
    /// The task's action space (actions returned by Act lie in it).
    member _.ActionSpace = run.Env.ActionSpace

    /// The policy's action for one observation, scaled to the task's action space (the mean when
    /// deterministic; otherwise a sample drawn from the given key).
    member _.Act(observation: float32[], deterministic: bool, key: RandomKey) =
        if isNull observation then
            nullArg "observation"

        checkObservation "observation" "the observation" observation
        Agent.act state.Agent key deterministic observation |> TrainingStep.toEnv run

    /// The policy's actions for a batch of observations (rows), scaled to the task's action space.
    member _.ActBatch(observations: float32[][], deterministic: bool, key: RandomKey) =
        if isNull observations then
            nullArg "observations"

        observations |> Array.iteri (fun r o -> checkObservation "observations" (sprintf "row %d" r) o)

        if observations.Length = 0 then
            [||]
        else
            let o = Tensor.ofArray [| observations.Length; obsDim |] (Array.concat observations)
            let flat = (Agent.actRows state.Agent key deterministic o).ToArray()
            Array.init observations.Length (fun r -> TrainingStep.toEnv run flat.[r * actDim .. (r + 1) * actDim - 1])

    /// Mean and standard deviation of returns over parallel episodes of a policy that maps an observation
    /// to an action in [−1, 1] (scaled to the task's action space here).
    member _.EvaluatePolicy(policy: float32[] -> float32[], episodes: int) = TrainingStep.evaluatePolicy run policy episodes

    /// The deterministic policy's episodes (returns and lengths) on this task's environment or another task's
    /// (for example a wrapped copy), in parallel, episode i seeded with EvaluationSeedBase + i.
    member _.EvaluateEpisodes(episodes: int, onTask: TaskInfo option) =
        let target = defaultArg onTask task

        if target.ObservationDim <> obsDim || target.ActionDim <> actDim then
            invalidArg
                "onTask"
                (sprintf
                    "%s has observation/action sizes %d/%d; the agent was trained for %d/%d"
                    target.Name
                    target.ObservationDim
                    target.ActionDim
                    obsDim
                    actDim)

        Evaluation.run
            target.Create
            (TrainingStep.deterministicPolicy run state.Agent >> TrainingStep.toEnv run)
            episodes
            (TrainingStep.evaluationSeedBase settings.Seed)
            target.EpisodeSteps

    /// Sets the budget to `steps` (Settings.Steps; at least the steps taken): the run continues as one started with that budget would, except
    /// where schedules depend on the budget (MBPO's rollout length grows over the first half of the budget; the other
    /// built-in algorithms' schedules do not depend on it).
    member _.SetBudget(steps: int) =
        if steps < state.Step then
            invalidArg "steps" (sprintf "a budget of %d is below the %d steps already taken" steps state.Step)

        Settings.validate { settings with Steps = steps }
        state <- { state with Budget = steps }

    /// Writes the deterministic policy as an ONNX model (observation → action in the task's action space; OnnxExport).
    member _.ExportOnnx(path: string) = OnnxExport.save path state.Agent.Policy run.Env.ActionSpace.Low run.Env.ActionSpace.High

    /// Mean and standard deviation of deterministic-policy returns over parallel episodes.
    member _.Evaluate(episodes: int) = TrainingStep.evaluatePolicy run (TrainingStep.deterministicPolicy run state.Agent) episodes

    /// The same with CEM planning through the learned model at every step (test-time MPC).
    member _.EvaluateWithPlanner(cfg: CemSettings, episodes: int) =
        let s = state

        match TrainingStep.modelContext run s with
        | None -> invalidOp (sprintf "%s has no fitted model to plan with" algorithm.Name)
        | Some ctx ->
            let a = s.Agent
            // The planner's key is derived from the observation, so episodes run in parallel stay reproducible.
            let keyOf (o: float32[]) = o |> Array.fold (fun acc v -> acc * 31L + int64 (BitConverter.SingleToInt32Bits v)) 17L

            let plan o =
                Cem.plan cfg settings.Gamma ctx a.Policy a.Critics (RandomKey.fold (keyOf o) (TrainingStep.key run KeyPurpose.Planner 0)) o

            TrainingStep.evaluatePolicy run plan episodes

    /// Trains until step `until` (at most the budget), publishing every step's events to onEvent, Stepped last. At
    /// Evaluated the state is ready to be checkpointed (SaveCheckpoint). Cancelling stops after the current environment
    /// step (its updates done); a checkpoint written then holds the running episode with the environment's state, so
    /// the run resumes bit for bit (ResumesExactly). An environment that cannot save its state has the episode cut
    /// there instead, a valid continuation but not the uninterrupted run's. A Diverged event is published and then
    /// raised as its DivergenceException.
    member _.Run(until: int, onEvent: TrainingEvent -> unit, cancel: Threading.CancellationToken) =
        let until = min until state.Budget
        let sw = Stopwatch.StartNew()
        let wallAtStart = state.WallSeconds
        let clock () = wallAtStart + sw.Elapsed.TotalSeconds
        let startStep = state.Step
        // The remaining time comes from the learning phase's recent rate: random actions are far faster and say
        // nothing about learning steps.
        let mutable remaining =
            RemainingTime.create settings.RandomSteps startStep until |> RemainingTime.observe startStep 0.0

        let mutable stop = false

        while state.Step < until && not stop do
            let next, events = TrainingStep.step run clock state
            state <- { next with WallSeconds = clock () }

            for e in events do
                onEvent e

                match e with
                | Diverged ex ->
                    // The state is the one before the step, the environment one step on: the episode is cut, so that a
                    // checkpoint written after this (if a caller writes one) never pairs them.
                    state <- TrainingState.cutEpisode state
                    raise ex
                | _ -> ()

            if cancel.IsCancellationRequested then
                if restorable.IsNone then
                    state <- TrainingState.cutEpisode state

                stop <- true

            let now = sw.Elapsed.TotalSeconds
            let step = state.Step
            remaining <- RemainingTime.observe step now remaining

            onEvent (
                Stepped
                    {
                        Step = step
                        TotalSteps = state.Budget
                        StepsPerSecond = float (step - startStep) / max 1e-9 now
                        LastEpisodeReturn = state.LastEpisodeReturn
                        EpisodeEnded =
                            events
                            |> List.exists (function
                                | EpisodeEnded _ -> true
                                | _ -> false)
                        LastEpisodeLength = state.LastEpisodeLength
                        WallSeconds = state.WallSeconds
                        LastEvalReturn = state.LastEvalReturn
                        LastUpdate = state.LastUpdate
                        HasUpdated = step > settings.RandomSteps
                        Remaining = RemainingTime.estimate step now remaining
                    }
            )

    /// Trains until step `until`: onProgress after every environment step, onCheckpoint after every evaluation with
    /// its metrics row (see the event form of Run).
    member this.Run(until: int, onProgress: ProgressInfo -> unit, onCheckpoint: MetricsRow -> unit, cancel: Threading.CancellationToken) =
        this.Run(
            until,
            (function
            | Stepped p -> onProgress p
            | Evaluated row -> onCheckpoint row
            | _ -> ()),
            cancel
        )

    /// Everything needed to continue: the state's named tensors (parameters, optimiser moments, model statistics,
    /// buffers) and counters. A checkpoint is only ever written from finite state: the last good one stays otherwise,
    /// and the non-finite value is this run's divergence, naming the part.
    member _.SaveCheckpoint(path: string) =
        let environment =
            match state.Episode, restorable with
            | ValueSome _, Some r -> Some(r.SaveState())
            | _ -> None

        let arrays, meta = TrainingState.toCheckpoint settings algorithm.Name task.Name environment state

        try
            Checkpoint.save path arrays meta
        with :? NonFiniteException as e ->
            let part =
                arrays
                |> List.tryFind (fun a -> e.Message.Contains(sprintf "'%s'" a.Name))
                |> Option.map (fun a -> TrainingState.partOfTensor a.Name)
                |> Option.defaultValue "buffer"

            raise (DivergenceException(part, sprintf "training diverged by step %d: %s" state.Step e.Message))

    /// Restores a checkpoint written by SaveCheckpoint for the same task, algorithm and settings (TrainingState.ofCheckpoint
    /// says what is checked); the state is replaced only when everything fits. Returns whether the checkpoint carried its
    /// metrics rows (those of format 1 do not: see RestoreMetrics).
    member _.LoadCheckpoint(path: string) : bool =
        // The current state gives the shapes and its buffers are refilled (only once everything is checked): no second
        // set of buffers is allocated.
        let loaded, carried = TrainingState.ofCheckpoint path settings algorithm.Name task.Name run.Env state
        state <- loaded
        carried

    /// Replaces the metrics rows (for checkpoints that do not carry them: the rows of the run folder's metrics.csv up
    /// to the checkpoint's step).
    member _.RestoreMetrics(rows: MetricsRow seq) =
        state <- { state with Metrics = rows |> Seq.filter (fun r -> r.Step <= state.Step) |> Seq.toList }

    interface IDisposable with
        member _.Dispose() = run.Env.Dispose()
