namespace Maac.Algorithms

open Maac

open System
open System.Diagnostics
open Maac.Tensors
open Maac.Optim
open Maac.Envs
open Maac.Rl

/// A live view of training, reported after every environment step that a caller asks for.
type ProgressInfo =
    { Step: int
      TotalSteps: int
      StepsPerSecond: float
      LastEpisodeReturn: float
      /// Whether a training episode ended (terminated or truncated) at this step; cuts at checkpoints do not count.
      EpisodeEnded: bool
      /// Length of the last finished training episode (0 before the first).
      LastEpisodeLength: int
      /// Training time of the run so far (all calls of Run), in seconds.
      WallSeconds: float
      LastEvalReturn: float
      CriticLoss: float32
      ActorLoss: float32
      Alpha: float32
      Remaining: TimeSpan }

/// One row of metrics.csv: written at every evaluation.
type MetricsRow =
    { Step: int
      EvalReturnMean: float
      EvalReturnStd: float
      CriticLoss: float32
      ActorLoss: float32
      Alpha: float32
      ModelHoldoutMse: float32
      WallSeconds: float }

/// metrics.csv's text: a header line and one line per MetricsRow (invariant culture, round-trip precision).
module MetricsCsv =
    /// The header line.
    let header = "step,eval_return_mean,eval_return_std,critic_loss,actor_loss,alpha,model_holdout_mse,wall_seconds"

    /// One row as a line.
    let line (r: MetricsRow) =
        let inv (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)
        String.Join(",", [ string r.Step; inv r.EvalReturnMean; inv r.EvalReturnStd; inv (float r.CriticLoss); inv (float r.ActorLoss)
                           inv (float r.Alpha); inv (float r.ModelHoldoutMse); inv r.WallSeconds ])

    /// The whole text of rows.
    let text (rows: MetricsRow seq) = String.Join("\n", Seq.append [ header ] (Seq.map line rows)) + "\n"

    /// Rows from a text written by `text`; `source` names it in errors (CheckpointException).
    let parse (source: string) (text: string) =
        let lines = text.Split('\n') |> Array.map (fun l -> l.Trim()) |> Array.filter (fun l -> l <> "")
        if lines.Length = 0 || lines.[0] <> header then raise (CheckpointException(sprintf "%s does not start with the metrics header" source))
        lines.[1..] |> Array.mapi (fun i l ->
            let c = l.Split(',')
            let number (k: int) =
                match Double.TryParse(c.[k], Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
                | true, v -> v
                | _ -> raise (CheckpointException(sprintf "%s: row %d, column %d is '%s', not a number" source (i + 1) (k + 1) c.[k]))
            if c.Length <> 8 then raise (CheckpointException(sprintf "%s: row %d has %d columns, expected 8" source (i + 1) c.Length))
            { Step = int (number 0); EvalReturnMean = number 1; EvalReturnStd = number 2; CriticLoss = float32 (number 3); ActorLoss = float32 (number 4)
              Alpha = float32 (number 5); ModelHoldoutMse = float32 (number 6); WallSeconds = number 7 })

/// Runs the loop of DESIGN.md: environment step → real buffer → (every N steps) fit the model and
/// refresh imagined data → G gradient steps → (every EvalEvery steps) evaluation, metrics, checkpoint.
/// Every random draw is derived from the seed and the step, so a run is reproducible from its settings;
/// the running episode is cut at each checkpoint so that a resumed run continues exactly.
[<Sealed>]
type Trainer(settings: Settings, algorithm: Algorithm, task: TaskInfo) =
    do Settings.validate settings
    let root = RandomKey.ofSeed settings.Seed
    let keyFor (purpose: int64) (step: int) = root |> RandomKey.fold purpose |> RandomKey.fold (int64 step)
    let env = task.Create()
    let obsDim, actDim = env.ObservationSpace.Dim, env.ActionSpace.Dim
    let low, high = env.ActionSpace.Low, env.ActionSpace.High
    let ctxBase = {| Low = Tensor.ofArray [| actDim |] low; High = Tensor.ofArray [| actDim |] high |}
    let mutable agent = Agent.init settings (keyFor 1L 0) obsDim actDim task.Functions.Reward.IsNone
    let real = ReplayBuffer(settings.RealCapacity, obsDim, actDim)
    let imagined = ReplayBuffer(settings.ImaginedCapacity, obsDim, actDim)
    let mutable step = 0
    let mutable episodes = 0
    let mutable modelFitted = false
    let mutable modelMse = nanf
    let mutable wallBefore = 0.0
    /// The clock of the Run call in progress (null between calls): wall time = wallBefore + its elapsed time.
    let mutable runClock: Stopwatch = null
    let wallSeconds () = wallBefore + (if isNull runClock then 0.0 else runClock.Elapsed.TotalSeconds)
    let mutable lastEpisodeReturn = nan
    let mutable lastEpisodeLength = 0
    let mutable lastEval = nan
    let mutable last = { CriticLoss = nanf; ActorLoss = nanf; Alpha = 1.0f }
    let metrics = Collections.Generic.List<MetricsRow>()

    let dynamicsSettings =
        { Members = settings.ModelMembers; EliteCount = settings.ModelElites; Hidden = settings.ModelHidden
          LearningRate = settings.ModelLearningRate; BatchSize = settings.ModelBatchSize; MaxEpochs = settings.ModelMaxEpochs
          HoldoutFraction = 0.2; Patience = 5 }

    let context () =
        if algorithm.UsesModel && modelFitted then
            Some { Model = agent.Model; Task = task.Functions; ActionLow = ctxBase.Low; ActionHigh = ctxBase.High }
        else None

    let toEnv (a: float32[]) = Array.init actDim (fun i -> low.[i] + (a.[i] + 1.0f) * 0.5f * (high.[i] - low.[i]))

    let fitModel () =
        let m, opt, report =
            // A diverging model is a diverging run, reported as every other part's divergence is.
            try Dynamics.fit dynamicsSettings (keyFor 2L step) agent.Model agent.ModelOpt (real.All())
            with :? NonFiniteException as e -> raise (DivergenceException(sprintf "training diverged at step %d: %s" step e.Message))
        agent <- { agent with Model = m; ModelOpt = opt }
        modelFitted <- true
        modelMse <- Array.average report.HoldoutMse
        if algorithm.UsesImaginedData then
            let starts = real.Sample(keyFor 3L step, settings.RolloutStarts).Obs
            let ctx = (context ()).Value
            for b in Rollout.imagine ctx agent.Policy (keyFor 4L step) starts (algorithm.RolloutLength settings step) do
                imagined.AddBatch b

    let sampleBatch (key: RandomKey) =
        let k1, k2 = RandomKey.split2 key
        if algorithm.UsesImaginedData && imagined.Count > 0 then
            let nReal = max 1 (int (MathF.Round(float32 settings.BatchSize * settings.RealFraction)))
            Batch.append (real.Sample(k1, nReal)) (imagined.Sample(k2, settings.BatchSize - nReal))
        else real.Sample(k1, settings.BatchSize)

    /// The agent's current state.
    member _.Agent = agent
    /// Environment steps taken.
    member _.Step = step
    /// Metrics rows so far.
    member _.Metrics = metrics |> Seq.toList
    member _.Settings = settings
    member _.Algorithm = algorithm
    member _.Task = task

    /// Evaluation episode i of a run with this seed resets its environment with seed EvaluationSeedBase + i.
    static member EvaluationSeedBase(seed: int64) = 1_000_000L + seed * 1000L

    /// The observation size of the task.
    member _.ObservationDim = obsDim
    /// The task's action space (actions returned by Act lie in it).
    member _.ActionSpace = env.ActionSpace

    /// The policy's action for one observation, scaled to the task's action space (the mean when
    /// deterministic; otherwise a sample drawn from the given key).
    member _.Act(observation: float32[], deterministic: bool, key: RandomKey) =
        if isNull observation then nullArg "observation"
        if observation.Length <> obsDim then
            invalidArg "observation" (sprintf "%s expects an observation of size %d, got %d" task.Name obsDim observation.Length)
        for i in 0 .. observation.Length - 1 do
            if not (Single.IsFinite observation.[i]) then invalidArg "observation" (sprintf "observation element %d is %g" i observation.[i])
        Agent.act agent key deterministic observation |> toEnv

    /// Mean and standard deviation of returns over parallel episodes of a policy that maps an observation
    /// to an action in [−1, 1] (scaled to the task's action space here).
    member _.EvaluatePolicy(policy: float32[] -> float32[], episodes: int) =
        let results = Evaluation.run task.Create (policy >> toEnv) episodes (Trainer.EvaluationSeedBase settings.Seed) task.EpisodeSteps
        let rs = results |> Array.map (fun r -> r.Return)
        let mean = Array.average rs
        mean, sqrt (rs |> Array.averageBy (fun r -> (r - mean) ** 2.0))

    /// The policy's actions for a batch of observations (rows), scaled to the task's action space.
    member _.ActBatch(observations: float32[][], deterministic: bool, key: RandomKey) =
        if isNull observations then nullArg "observations"
        for r in 0 .. observations.Length - 1 do
            let o = observations.[r]
            if isNull o || o.Length <> obsDim then
                invalidArg "observations" (sprintf "%s expects observations of size %d; row %d has %d" task.Name obsDim r (if isNull o then 0 else o.Length))
            match Array.tryFindIndex (fun v -> not (Single.IsFinite v)) o with
            | Some i -> invalidArg "observations" (sprintf "row %d, element %d is %g" r i o.[i])
            | None -> ()
        if observations.Length = 0 then [||]
        else
            let o = Tensor.ofArray [| observations.Length; obsDim |] (Array.concat observations)
            let a = if deterministic then Maac.Nn.TanhGaussianPolicy.deterministic agent.Policy o else fst (Maac.Nn.TanhGaussianPolicy.sample agent.Policy key o)
            let flat = a.ToArray()
            Array.init observations.Length (fun r -> toEnv flat.[r * actDim .. (r + 1) * actDim - 1])

    /// The deterministic policy's episodes (returns and lengths) on this task's environment or another task's
    /// (for example a wrapped copy), in parallel, episode i seeded with EvaluationSeedBase + i.
    member _.EvaluateEpisodes(episodes: int, onTask: TaskInfo option) =
        let target = defaultArg onTask task
        if target.ObservationDim <> obsDim || target.ActionDim <> actDim then
            invalidArg "onTask" (sprintf "%s has observation/action sizes %d/%d; the agent was trained for %d/%d" target.Name target.ObservationDim target.ActionDim obsDim actDim)
        let a = agent
        Evaluation.run target.Create (Agent.act a (keyFor 5L 0) true >> toEnv) episodes (Trainer.EvaluationSeedBase settings.Seed) target.EpisodeSteps

    /// The same run with a larger budget: a new trainer with Steps raised, holding this one's whole state (through a
    /// checkpoint in a temporary file). The run continues as one started with that budget would, except where
    /// schedules depend on the budget (none of the built-in algorithms' do). Dispose this trainer afterwards.
    member this.WithBudget(steps: int) =
        if steps < step then invalidArg "steps" (sprintf "a budget of %d is below the %d steps already taken" steps step)
        let file = IO.Path.Combine(IO.Path.GetTempPath(), sprintf "maac-budget-%s.safetensors" (Guid.NewGuid().ToString "N"))
        try
            this.SaveCheckpoint file
            let t = new Trainer({ settings with Steps = steps }, algorithm, task)
            try
                t.LoadCheckpoint file |> ignore
                t
            with _ ->
                (t :> IDisposable).Dispose()
                reraise ()
        finally
            if IO.File.Exists file then IO.File.Delete file

    /// Writes the deterministic policy as an ONNX model (observation → action in the task's action space; OnnxExport).
    member _.ExportOnnx(path: string) = OnnxExport.save path agent.Policy low high

    /// Mean and standard deviation of deterministic-policy returns over parallel episodes.
    member this.Evaluate(episodes: int) =
        let a = agent
        this.EvaluatePolicy(Agent.act a (keyFor 5L 0) true, episodes)

    /// The same with CEM planning through the learned model at every step (test-time MPC).
    member this.EvaluateWithPlanner(cfg: CemSettings, episodes: int) =
        match context () with
        | None -> invalidOp (sprintf "%s has no fitted model to plan with" algorithm.Name)
        | Some ctx ->
            let a = agent
            // The planner's key is derived from the observation, so episodes run in parallel stay reproducible.
            let keyOf (o: float32[]) = o |> Array.fold (fun acc v -> acc * 31L + int64 (BitConverter.SingleToInt32Bits v)) 17L
            this.EvaluatePolicy((fun o -> Cem.plan cfg settings.Gamma ctx a.Policy a.Critics (RandomKey.fold (keyOf o) (keyFor 9L 0)) o), episodes)

    /// Trains until step `until` (at most Settings.Steps). onProgress is called after each environment
    /// step; onCheckpoint after each evaluation with the new metrics row. Cancelling stops after the
    /// current environment step (its updates done, the running episode cut), so that SaveCheckpoint then
    /// writes a checkpoint that resumes cleanly.
    member this.Run(until: int, onProgress: ProgressInfo -> unit, onCheckpoint: MetricsRow -> unit, cancel: Threading.CancellationToken) =
        let until = min until settings.Steps
        let sw = Stopwatch.StartNew()
        runClock <- sw
        // However the call ends (done, cancelled, diverged), its time is added to the run's wall time.
        use _ = { new IDisposable with member _.Dispose() = wallBefore <- wallBefore + sw.Elapsed.TotalSeconds; runClock <- null }
        let startStep = step
        let mutable obs = [||]
        let mutable needReset = true
        let mutable episodeReturn = 0.0
        let mutable episodeLength = 0
        let mutable stop = false
        // The remaining time is estimated from the rate of the phase the run is in: random actions are far
        // faster than learning steps, so the learning phase's estimate starts afresh when it begins.
        let mutable phaseStart = struct (startStep, 0.0)
        while step < until && not stop do
            if needReset then
                obs <- (env.Reset(Some(settings.Seed * 1_000_003L + int64 episodes))).Observation
                needReset <- false
                episodeReturn <- 0.0
                episodeLength <- 0
            step <- step + 1
            if step = settings.RandomSteps + 1 && step > startStep + 1 then phaseStart <- struct (step - 1, sw.Elapsed.TotalSeconds)
            let action =
                if step <= settings.RandomSteps then EnvSupport.uniform (keyFor 6L step) actDim -1.0f 1.0f
                else Agent.act agent (keyFor 7L step) false obs
            let r = env.Step(toEnv action)
            // A malformed or non-finite value from the environment is the environment's fault: reported as such,
            // before it reaches a buffer or a loss.
            if isNull r.Observation || r.Observation.Length <> obsDim then
                invalidOp (sprintf "%s returned an observation of size %d at environment step %d; its observation space has %d dimensions" task.Name (if isNull r.Observation then 0 else r.Observation.Length) step obsDim)
            match Array.tryFindIndex (fun (v: float32) -> not (Single.IsFinite v)) r.Observation with
            | Some e -> raise (NonFiniteException(sprintf "%s returned a non-finite observation at environment step %d: element %d is %g" task.Name step e r.Observation.[e]))
            | None -> ()
            if not (Double.IsFinite r.Reward) then
                raise (NonFiniteException(sprintf "%s returned a non-finite reward at environment step %d: %g" task.Name step r.Reward))
            real.Add(obs, action, float32 r.Reward, r.Observation, r.Terminated)
            episodeReturn <- episodeReturn + r.Reward
            episodeLength <- episodeLength + 1
            obs <- r.Observation
            let endedNow = r.Terminated || r.Truncated
            if endedNow then
                lastEpisodeReturn <- episodeReturn
                lastEpisodeLength <- episodeLength
                episodes <- episodes + 1
                needReset <- true
            if algorithm.UsesModel && step >= settings.RandomSteps && (step - settings.RandomSteps) % settings.ModelTrainEvery = 0 then
                fitModel ()
            if step > settings.RandomSteps then
                let ctx = context ()
                for g in 0 .. settings.UpdatesPerStep - 1 do
                    let k = keyFor 8L (step * settings.UpdatesPerStep + g)
                    let k1, k2 = RandomKey.split2 k
                    let a, m = Agent.update algorithm settings ctx step k2 agent (sampleBatch k1)
                    agent <- a
                    last <- m
            if step % settings.EvalEvery = 0 || step = settings.Steps then
                let mean, std = this.Evaluate settings.EvalEpisodes
                lastEval <- mean
                let row =
                    { Step = step; EvalReturnMean = mean; EvalReturnStd = std; CriticLoss = last.CriticLoss; ActorLoss = last.ActorLoss
                      Alpha = last.Alpha; ModelHoldoutMse = modelMse; WallSeconds = wallSeconds () }
                metrics.Add row
                // Cut the episode here so that a run resumed from this checkpoint continues identically.
                if not needReset then
                    episodes <- episodes + 1
                    needReset <- true
                onCheckpoint row
            if cancel.IsCancellationRequested then
                // Cut the running episode as at a checkpoint, so a checkpoint written now resumes cleanly.
                if not needReset then
                    episodes <- episodes + 1
                    needReset <- true
                stop <- true
            let now = sw.Elapsed.TotalSeconds
            let rate = float (step - startStep) / max 1e-9 now
            let struct (phaseStep, phaseTime) = phaseStart
            let phaseRate = float (step - phaseStep) / max 1e-9 (now - phaseTime)
            onProgress
                { Step = step; TotalSteps = settings.Steps; StepsPerSecond = rate; LastEpisodeReturn = lastEpisodeReturn
                  EpisodeEnded = endedNow; LastEpisodeLength = lastEpisodeLength; WallSeconds = wallSeconds (); LastEvalReturn = lastEval
                  CriticLoss = last.CriticLoss; ActorLoss = last.ActorLoss; Alpha = last.Alpha
                  Remaining = TimeSpan.FromSeconds(float (until - step) / max 1e-9 phaseRate) }

    /// Everything needed to continue: parameters, optimiser moments, buffers and counters.
    member _.SaveCheckpoint(path: string) =
        let named (prefix: string) (p: (string * Tensor)[]) =
            p |> Array.map (fun (n, t) -> { Name = prefix + "." + n; Shape = t.Shape; Values = t.ToArray() }) |> Array.toList
        let moments (prefix: string) (o: AdamState) =
            [ for i in 0 .. o.FirstMoment.Length - 1 do
                yield { Name = sprintf "%s.m.%d" prefix i; Shape = o.FirstMoment.[i].Shape; Values = o.FirstMoment.[i].ToArray() }
                yield { Name = sprintf "%s.v.%d" prefix i; Shape = o.SecondMoment.[i].Shape; Values = o.SecondMoment.[i].ToArray() } ]
        let buffer (prefix: string) (b: ReplayBuffer) =
            b.Arrays |> Array.mapi (fun i a -> { Name = sprintf "%s.%d" prefix i; Shape = [| a.Length |]; Values = a }) |> Array.toList
        let a = agent
        let m = a.Model
        let arrays =
            List.concat [
                named "policy" (a.Policy :> IParameters<_>).Named; moments "policyOpt" a.PolicyOpt
                named "critics" (a.Critics :> IParameters<_>).Named; moments "criticsOpt" a.CriticsOpt
                named "targetCritics" (a.TargetCritics :> IParameters<_>).Named
                named "temperature" (a.Temperature :> IParameters<_>).Named; moments "temperatureOpt" a.TemperatureOpt
                named "model" (m.Net :> IParameters<_>).Named; moments "modelOpt" a.ModelOpt
                named "modelStats" [| "inputMean", m.InputMean; "inputStd", m.InputStd; "targetMean", m.TargetMean; "targetStd", m.TargetStd |]
                buffer "real" real; buffer "imagined" imagined ]
        let meta =
            Map.ofList [
                "format", Checkpoint.Format; "algorithm", algorithm.Name; "env", task.Name
                "step", string step; "episodes", string episodes; "modelFitted", string modelFitted; "modelMse", string modelMse
                "elites", String.Join(",", m.Elites); "wallSeconds", string (wallSeconds ())
                "adamSteps", String.Join(",", [ a.PolicyOpt.Step; a.CriticsOpt.Step; a.TemperatureOpt.Step; a.ModelOpt.Step ])
                "realCount", string real.Count; "realHead", string real.Head
                "imaginedCount", string imagined.Count; "imaginedHead", string imagined.Head
                "lastEpisodeReturn", string lastEpisodeReturn; "lastEval", string lastEval
                "settings", SettingsFile.toJson settings
                // The metrics rows up to this checkpoint travel with it, so that the run folder's metrics.csv can always
                // be made to agree with its checkpoint.
                "metrics", MetricsCsv.text metrics ]
        // A checkpoint is only ever written from finite state (parameters, moments, statistics, buffers): the last
        // good one stays otherwise. Checkpoint.save scans every value once and refuses; here that is a divergence.
        try Checkpoint.save path arrays meta
        with :? NonFiniteException as e -> raise (DivergenceException(sprintf "training diverged by step %d: %s" step e.Message))

    /// Restores a checkpoint written by SaveCheckpoint for the same task, algorithm and settings. Beyond the file's own
    /// checks (Checkpoint.load: layout, checksums, finite values), every tensor must be one this agent has, with the
    /// shape its settings imply (parameters, Adam moments, model statistics, buffers), and every counter must be in
    /// range; anything else is a CheckpointException naming the file and the tensor or key. Returns whether the
    /// checkpoint carried its metrics rows (those of format 1 do not: see RestoreMetrics).
    member _.LoadCheckpoint(path: string) : bool =
        let arrays, meta = Checkpoint.load path
        let refuse fmt = Printf.kprintf (fun m -> raise (CheckpointException(sprintf "checkpoint %s: %s" path m))) fmt
        let get (key: string) =
            match meta.TryFind key with
            | Some v -> v
            | None -> refuse "lacks the metadata '%s'" key
        let parse (key: string) (reader: string -> bool * 'T) (what: string) =
            match reader (get key) with
            | true, v -> v
            | _ -> refuse "metadata '%s' is '%s', not %s" key (get key) what
        let integer (key: string) (lo: int) (hi: int) =
            let v = parse key (fun t -> Int32.TryParse(t, Globalization.NumberStyles.Integer, Globalization.CultureInfo.InvariantCulture)) "an integer"
            if v < lo || v > hi then refuse "metadata '%s' is %d, outside [%d, %d]" key v lo hi
            v
        let number (key: string) = parse key (fun t -> Double.TryParse(t, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture)) "a number"
        let format = get "format"
        if format <> Checkpoint.Format && format <> "maac-checkpoint-1" then refuse "has format '%s', expected %s" format Checkpoint.Format
        if get "algorithm" <> algorithm.Name || get "env" <> task.Name then
            refuse "is for %s on %s, not %s on %s" (get "algorithm") (get "env") algorithm.Name task.Name
        // The settings the checkpoint was trained with must be the ones it is loaded with (the budget aside):
        // an edited config.json would otherwise change the run's meaning silently.
        match meta.TryFind "settings" with
        | Some text ->
            let saved =
                try SettingsFile.parse (path + " (its settings)") text None None
                with :? ArgumentException as e -> refuse "its recorded settings are unreadable: %s" e.Message
            match SettingsFile.differences saved settings with
            | [] -> ()
            | changed -> refuse "was trained with other settings than these (config.json edited?):\n- %s" (String.Join("\n- ", changed))
        | None -> ()
        let used = Collections.Generic.HashSet<string>()
        let array (name: string) =
            match arrays.TryFind name with
            | Some a -> used.Add name |> ignore; a
            | None -> refuse "lacks tensor '%s'" name
        let shaped (name: string) (expected: int[]) =
            let a = array name
            if a.Shape <> expected then refuse "tensor '%s' has shape %s where these settings imply %s" name (Shape.show a.Shape) (Shape.show expected)
            Tensor.ofArray a.Shape a.Values
        let restore (prefix: string) (p: 'P when 'P :> IParameters<'P>) =
            p.Named |> Array.map (fun (n, t) -> shaped (prefix + "." + n) t.Shape) |> Parameters.rebuild p
        let adamSteps =
            let parts = (get "adamSteps").Split(',')
            if parts.Length <> 4 then refuse "metadata 'adamSteps' has %d entries, expected 4" parts.Length
            parts |> Array.map (fun t ->
                match Int32.TryParse(t, Globalization.NumberStyles.Integer, Globalization.CultureInfo.InvariantCulture) with
                | true, v when v >= 0 -> v
                | _ -> refuse "metadata 'adamSteps' holds '%s', not a step count" t)
        // Adam's moments have the shapes of the parameters they belong to.
        let moments (prefix: string) (o: AdamState) (t: int) =
            { Step = t
              FirstMoment = o.FirstMoment |> Array.mapi (fun i m -> shaped (sprintf "%s.m.%d" prefix i) m.Shape)
              SecondMoment = o.SecondMoment |> Array.mapi (fun i m -> shaped (sprintf "%s.v.%d" prefix i) m.Shape) }
        let a = agent
        let stat n (like: Tensor) = shaped ("modelStats." + n) like.Shape
        let elites =
            let parts = (get "elites").Split(',', StringSplitOptions.RemoveEmptyEntries)
            let members = settings.ModelMembers
            let ids = parts |> Array.map (fun t -> match Int32.TryParse t with | true, v when v >= 0 && v < members -> v | _ -> refuse "metadata 'elites' holds '%s', not a member of the %d-member ensemble" t members)
            if ids.Length <> a.Model.Elites.Length || (Array.distinct ids).Length <> ids.Length then
                refuse "metadata 'elites' is '%s': expected %d distinct members" (get "elites") a.Model.Elites.Length
            ids
        let restored =
            { Policy = restore "policy" a.Policy; PolicyOpt = moments "policyOpt" a.PolicyOpt adamSteps.[0]
              Critics = restore "critics" a.Critics; CriticsOpt = moments "criticsOpt" a.CriticsOpt adamSteps.[1]
              TargetCritics = restore "targetCritics" a.TargetCritics
              Temperature = restore "temperature" a.Temperature; TemperatureOpt = moments "temperatureOpt" a.TemperatureOpt adamSteps.[2]
              Model =
                { Net = restore "model" a.Model.Net; PredictsReward = a.Model.PredictsReward
                  InputMean = stat "inputMean" a.Model.InputMean; InputStd = stat "inputStd" a.Model.InputStd
                  TargetMean = stat "targetMean" a.Model.TargetMean; TargetStd = stat "targetStd" a.Model.TargetStd
                  Elites = elites }
              ModelOpt = moments "modelOpt" a.ModelOpt adamSteps.[3] }
        // Buffers: the filled part of each array, done flags 0 or 1.
        let buffer (prefix: string) (b: ReplayBuffer) =
            let count = integer (prefix + "Count") 0 b.Capacity
            let head = integer (prefix + "Head") 0 (b.Capacity - 1)
            let widths = [| b.ObsDim; b.ActDim; 1; b.ObsDim; 1 |]
            let parts = widths |> Array.mapi (fun i w -> (shaped (sprintf "%s.%d" prefix i) [| count * w |]).ToArray())
            match parts.[4] |> Array.tryFindIndex (fun d -> d <> 0.0f && d <> 1.0f) with
            | Some i -> refuse "tensor '%s.4' (done flags) element %d is %g, not 0 or 1" prefix i parts.[4].[i]
            | None -> ()
            fun () -> b.Restore(parts, count, head)
        let restoreReal = buffer "real" real
        let restoreImagined = buffer "imagined" imagined
        let unknown = arrays.Keys |> Seq.filter (fun k -> not (used.Contains k)) |> Seq.toList
        if not unknown.IsEmpty then refuse "holds tensors this agent does not have: %s" (String.Join(", ", unknown))
        let savedStep = integer "step" 0 settings.Steps
        let savedEpisodes = integer "episodes" 0 Int32.MaxValue
        let fitted = parse "modelFitted" (fun t -> Boolean.TryParse t) "true or false"
        let mse, wall, lastReturn, lastEvaluation = number "modelMse", number "wallSeconds", number "lastEpisodeReturn", number "lastEval"
        if not (wall >= 0.0) then refuse "metadata 'wallSeconds' is %g" wall
        let rows =
            match meta.TryFind "metrics" with
            | Some text -> Some(MetricsCsv.parse (path + " (its metrics)") text |> Array.filter (fun r -> r.Step <= savedStep))
            | None -> None
        // Everything checked: only now is the trainer's state replaced.
        restoreReal ()
        restoreImagined ()
        agent <- restored
        step <- savedStep
        episodes <- savedEpisodes
        modelFitted <- fitted
        modelMse <- float32 mse
        wallBefore <- wall
        lastEpisodeReturn <- lastReturn
        lastEval <- lastEvaluation
        metrics.Clear()
        rows |> Option.iter metrics.AddRange
        rows.IsSome

    /// Replaces the metrics rows (for checkpoints that do not carry them: the rows of the run folder's metrics.csv up
    /// to the checkpoint's step).
    member _.RestoreMetrics(rows: MetricsRow seq) =
        metrics.Clear()
        metrics.AddRange(rows |> Seq.filter (fun r -> r.Step <= step))

    interface IDisposable with
        member _.Dispose() = env.Dispose()
