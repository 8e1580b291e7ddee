namespace Maac.Training

open Maac
open Maac.Algorithms
open Maac.Persistence

open System
open Maac.Tensors
open Maac.Optim
open Maac.Rl
open Maac.Envs

/// Everything a run is at one environment step: what one training step maps to the next and what a checkpoint holds.
/// The replay buffers are the run's append-only rings, shared by successive states (a step adds its transition to
/// them, where copying a million transitions per step is not an option); everything else is a value.
type TrainingState =
    {
        /// Parameters and optimiser states of policy, critics, temperature and model.
        Agent: AgentState
        Real: ReplayBuffer
        Imagined: ReplayBuffer
        /// Environment steps taken.
        Step: int
        /// The budget in environment steps (Settings.Steps; raised when a run is continued beyond it).
        Budget: int
        /// Training episodes finished or cut at a checkpoint; the next episode's reset seed derives from it.
        Episodes: int
        /// The running episode; ValueNone when the next step starts a new one.
        Episode: RunningEpisode voption
        ModelFitted: bool
        /// Mean hold-out MSE of the last model fit (NaN before the first).
        ModelHoldoutMse: float32
        LastEpisodeReturn: float
        LastEpisodeLength: int
        LastEvalReturn: float
        /// Losses and temperature of the last gradient step.
        LastUpdate: UpdateMetrics
        /// The metrics rows so far, oldest first.
        Metrics: MetricsRow list
        /// Training time of the run so far (every call of a trainer's Run), in seconds.
        WallSeconds: float
    }

/// Creating training states and converting them to and from checkpoints.
module TrainingState =
    /// The losses before any gradient step: none yet (α starts at 1).
    let private noUpdate = { CriticLoss = nanf; ActorLoss = nanf; Alpha = 1.0f }

    /// The state of a new run: a fresh agent (from `agentKey`), empty buffers, nothing done.
    let init (s: Settings) (agentKey: RandomKey) (obsDim: int) (actDim: int) (predictReward: bool) =
        {
            Agent = Agent.init s agentKey obsDim actDim predictReward
            Real = ReplayBuffer(s.RealCapacity, obsDim, actDim)
            Imagined = ReplayBuffer(s.ImaginedCapacity, obsDim, actDim)
            Step = 0
            Budget = s.Steps
            Episodes = 0
            Episode = ValueNone
            ModelFitted = false
            ModelHoldoutMse = nanf
            LastEpisodeReturn = nan
            LastEpisodeLength = 0
            LastEvalReturn = nan
            LastUpdate = noUpdate
            Metrics = []
            WallSeconds = 0.0
        }

    /// The state with its running episode cut (counted as an episode, the next step resets), as at every evaluation.
    /// A stop between evaluations keeps the episode when the environment can save its state (the checkpoint holds it);
    /// for one that cannot, it cuts the episode there, where the uninterrupted run would have gone on with it, so a run
    /// resumed from that checkpoint is a valid continuation but not bit-identical to the uninterrupted one.
    let cutEpisode (s: TrainingState) =
        if s.Episode.IsSome then
            { s with Episodes = s.Episodes + 1; Episode = ValueNone }
        else
            s

    /// The part of the agent a checkpoint tensor belongs to ("policy", "critic", "temperature", "model"; "buffer" for
    /// the replay buffers), for reporting a divergence found in it.
    let partOfTensor (name: string) =
        let first = name.Split('.').[0]

        if first.StartsWith "policy" then
            "policy"
        elif first.StartsWith "critics" || first.StartsWith "targetCritics" then
            "critic"
        elif first.StartsWith "temperature" then
            "temperature"
        elif first.StartsWith "model" then
            "model"
        else
            "buffer"

    let private buffers (s: TrainingState) = [ "real", s.Real; "imagined", s.Imagined ]

    let private invariant (x: 'T) = Convert.ToString(x, Globalization.CultureInfo.InvariantCulture)

    /// The checkpoint of a state: every named tensor of the agent and the filled part of each buffer as arrays, the
    /// counters, Adam's step counts, the model's elites, the settings and the metrics rows as metadata. A running
    /// episode is saved with its environment's state when `environment` holds that state (metadata "runningEpisode"),
    /// so the run resumes bit for bit; without it the checkpoint records the episode as cut (counted; the resumed run
    /// starts a new one).
    let toCheckpoint (settings: Settings) (algorithm: string) (taskName: string) (environment: EnvState option) (s: TrainingState) =
        let agent = s.Agent

        let episodes, running =
            match s.Episode, environment with
            | ValueSome e, Some env ->
                for part, values in env do
                    match Finite.firstNonFiniteDouble values with
                    | Some i ->
                        invalidOp (
                            sprintf
                                "%s's saved state is not finite at step %d: part '%s' element %d is %g"
                                taskName
                                s.Step
                                part
                                i
                                values.[i]
                        )
                    | None -> ()

                s.Episodes, [ "runningEpisode", RunningEpisode.toJson e env ]
            | ValueSome _, None -> s.Episodes + 1, []
            | ValueNone, _ -> s.Episodes, []

        let arrays =
            [
                for name, t in (agent :> IParameters<_>).Named -> { Name = name; Shape = t.Shape; Values = t.ToArray() }
                for prefix, b in buffers s do
                    yield!
                        b.Arrays
                        |> Array.mapi (fun i a -> { Name = sprintf "%s.%d" prefix i; Shape = [| a.Length |]; Values = a })
            ]

        let meta =
            Map.ofList
                [
                    "format", Checkpoint.Format
                    "algorithm", algorithm
                    "env", taskName
                    "step", string s.Step
                    "episodes", string episodes
                    "modelFitted", string s.ModelFitted
                    "modelMse", invariant s.ModelHoldoutMse
                    "elites", String.Join(",", agent.Model.Elites)
                    "wallSeconds", invariant s.WallSeconds
                    "adamSteps",
                    String.Join(",", [ agent.PolicyOpt.Step; agent.CriticsOpt.Step; agent.TemperatureOpt.Step; agent.ModelOpt.Step ])
                    "realCount", string s.Real.Count
                    "realHead", string s.Real.Head
                    "imaginedCount", string s.Imagined.Count
                    "imaginedHead", string s.Imagined.Head
                    "lastEpisodeReturn", invariant s.LastEpisodeReturn
                    "lastEpisodeLength", string s.LastEpisodeLength
                    "lastEval", invariant s.LastEvalReturn
                    "settings", SettingsFile.toJson { settings with Steps = s.Budget }
                    // The metrics rows up to this checkpoint travel with it, so that the run folder's metrics.csv can always
                    // be made to agree with its checkpoint.
                    "metrics", MetricsCsv.text s.Metrics
                ]
            |> Map.foldBack Map.add (Map.ofList running)

        arrays, meta

    /// A loaded checkpoint being read into a state: its tensors and metadata, and the tensor names used so far.
    type private CheckpointReading =
        {
            Path: string
            Arrays: Map<string, NamedArray>
            Meta: Map<string, string>
            Used: Collections.Generic.HashSet<string>
        }

    /// Raises the CheckpointException naming the checkpoint, the message formatted as by sprintf.
    let private refuse (c: CheckpointReading) fmt =
        Printf.kprintf (fun m -> raise (CheckpointException(sprintf "checkpoint %s: %s" c.Path m))) fmt

    let private metadata (c: CheckpointReading) (key: string) =
        match c.Meta.TryFind key with
        | Some v -> v
        | None -> refuse c "lacks the metadata '%s'" key

    let private parsed (c: CheckpointReading) (key: string) (reader: string -> bool * 'T) (what: string) =
        match reader (metadata c key) with
        | true, v -> v
        | _ -> refuse c "metadata '%s' is '%s', not %s" key (metadata c key) what

    let private integerIn (c: CheckpointReading) (key: string) (text: string) (lo: int) (hi: int) =
        match Int32.TryParse(text, Globalization.NumberStyles.Integer, Globalization.CultureInfo.InvariantCulture) with
        | true, v when v >= lo && v <= hi -> v
        | true, v -> refuse c "metadata '%s' holds %d, outside [%d, %d]" key v lo hi
        | _ -> refuse c "metadata '%s' holds '%s', not an integer" key text

    let private integer (c: CheckpointReading) (key: string) (lo: int) (hi: int) = integerIn c key (metadata c key) lo hi

    let private number (c: CheckpointReading) (key: string) =
        parsed c key (fun t -> Double.TryParse(t, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture)) "a number"

    /// The tensor of that name, which must have the expected shape; marks it used.
    let private shaped (c: CheckpointReading) (name: string) (expected: int[]) =
        match c.Arrays.TryFind name with
        | None -> refuse c "lacks tensor '%s'" name
        | Some a ->
            c.Used.Add name |> ignore

            if a.Shape <> expected then
                refuse c "tensor '%s' has shape %s where these settings imply %s" name (Shape.show a.Shape) (Shape.show expected)

            a

    /// The format is known, the checkpoint is for this algorithm and task, and it was trained with these settings
    /// (the budget aside): an edited config.json would otherwise change the run's meaning silently.
    let private checkIdentity (c: CheckpointReading) (settings: Settings) (algorithm: string) (taskName: string) =
        let format = metadata c "format"

        if format <> Checkpoint.Format && format <> "maac-checkpoint-1" then
            refuse c "has format '%s', expected %s" format Checkpoint.Format

        if metadata c "algorithm" <> algorithm || metadata c "env" <> taskName then
            refuse c "is for %s on %s, not %s on %s" (metadata c "algorithm") (metadata c "env") algorithm taskName

        match c.Meta.TryFind "settings" with
        | Some text ->
            let saved =
                try
                    SettingsFile.parse (c.Path + " (its settings)") text None None
                with :? ArgumentException as e ->
                    refuse c "its recorded settings are unreadable: %s" e.Message

            match SettingsFile.differences saved settings with
            | [] -> ()
            | changed -> refuse c "was trained with other settings than these (config.json edited?):\n- %s" (String.Join("\n- ", changed))
        | None -> ()

    /// The agent: every tensor of the fresh agent's collection by name, with its shape; the optimisers' step counts
    /// and the model's elites from the metadata.
    let private restoredAgent (c: CheckpointReading) (settings: Settings) (fresh: AgentState) =
        let tensors =
            (fresh :> IParameters<_>).Named
            |> Array.map (fun (n, t) -> let x = shaped c n t.Shape in Tensor.ofArray x.Shape x.Values)

        let restored = Parameters.rebuild fresh tensors

        let adamSteps =
            let parts = (metadata c "adamSteps").Split(',')

            if parts.Length <> 4 then
                refuse c "metadata 'adamSteps' has %d entries, expected 4" parts.Length

            parts |> Array.map (fun t -> integerIn c "adamSteps" t 0 Int32.MaxValue)

        let members = settings.ModelMembers

        let elites =
            let ids =
                (metadata c "elites").Split(',', StringSplitOptions.RemoveEmptyEntries)
                |> Array.map (fun t -> integerIn c "elites" t 0 (members - 1))

            if ids.Length <> fresh.Model.Elites.Length || (Array.distinct ids).Length <> ids.Length then
                refuse
                    c
                    "metadata 'elites' is '%s': expected %d distinct members of the %d-member ensemble"
                    (metadata c "elites")
                    fresh.Model.Elites.Length
                    members

            ids

        let withStep (o: AdamState) (t: int) = { o with Step = t }

        { restored with
            PolicyOpt = withStep restored.PolicyOpt adamSteps.[0]
            CriticsOpt = withStep restored.CriticsOpt adamSteps.[1]
            TemperatureOpt = withStep restored.TemperatureOpt adamSteps.[2]
            ModelOpt = withStep restored.ModelOpt adamSteps.[3]
            Model = { restored.Model with Elites = elites }
        }

    /// A buffer's filled part of each array, done flags 0 or 1, checked now; the returned function restores it
    /// into the buffer, to be called only once everything is checked.
    let private bufferRestorer (c: CheckpointReading) (prefix: string) (b: ReplayBuffer) =
        let count = integer c (prefix + "Count") 0 b.Capacity
        let head = integer c (prefix + "Head") 0 (b.Capacity - 1)
        let widths = b.ColumnWidths

        let parts =
            widths |> Array.mapi (fun i w -> (shaped c (sprintf "%s.%d" prefix i) [| count * w |]).Values)

        match parts.[4] |> Array.tryFindIndex (fun d -> d <> 0.0f && d <> 1.0f) with
        | Some i -> refuse c "tensor '%s.4' (done flags) element %d is %g, not 0 or 1" prefix i parts.[4].[i]
        | None -> ()

        fun () -> b.Restore(parts, count, head)

    /// The running episode a checkpoint holds, with the environment that will take its state back.
    let private runningEpisode (c: CheckpointReading) (env: IEnv) (obsDim: int) =
        match c.Meta.TryFind "runningEpisode" with
        | None -> None
        | Some text ->
            let refuseEpisode m = CheckpointException(sprintf "checkpoint %s: metadata 'runningEpisode' %s" c.Path m) :> exn

            let episode, envState = RunningEpisode.ofJson refuseEpisode obsDim text

            match EnvState.tryRestorable env with
            | Some r -> Some(episode, r, envState)
            | None -> refuse c "holds a running episode, but %s cannot restore an environment's state" env.Name

    /// The state a checkpoint holds, checked against `fresh` (a state of a run with the same settings, algorithm and
    /// task, which gives the shapes and whose buffers are refilled, only once every check has passed): beyond the file's own checks (Checkpoint.load: layout, checksums, finite values), every tensor must be one
    /// the agent has, with the shape its settings imply (parameters, Adam moments, model statistics, buffers), and every
    /// counter must be in range; anything else is a CheckpointException naming the file and the tensor or key. Returns
    /// the state (fresh's buffers, filled; nothing of fresh's progress kept) and whether the checkpoint carried its metrics rows (those of
    /// format 1 do not). A running episode in the checkpoint is restored into `env` (the run's environment, which must be
    /// able to restore its state), checked whole before anything changes.
    let ofCheckpoint (path: string) (settings: Settings) (algorithm: string) (taskName: string) (env: IEnv) (fresh: TrainingState) =
        let arrays, meta = Checkpoint.load path
        let c = { Path = path; Arrays = arrays; Meta = meta; Used = Collections.Generic.HashSet<string>() }
        checkIdentity c settings algorithm taskName
        let agent = restoredAgent c settings fresh.Agent
        let restoreBuffers = buffers fresh |> List.map (fun (prefix, b) -> bufferRestorer c prefix b)
        let unknown = arrays.Keys |> Seq.filter (fun k -> not (c.Used.Contains k)) |> Seq.toList

        if not unknown.IsEmpty then
            refuse c "holds tensors this agent does not have: %s" (String.Join(", ", unknown))

        let step = integer c "step" 0 settings.Steps
        let wall = number c "wallSeconds"

        if not (wall >= 0.0) then
            refuse c "metadata 'wallSeconds' is %g" wall

        let rows =
            meta.TryFind "metrics"
            |> Option.map (fun text ->
                MetricsCsv.parse (path + " (its metrics)") text
                |> Array.filter (fun r -> r.Step <= step)
                |> Array.toList)

        let running = runningEpisode c env fresh.Real.ObsDim

        let state =
            { fresh with
                Agent = agent
                Step = step
                Budget = settings.Steps
                Episodes = integer c "episodes" 0 Int32.MaxValue
                Episode =
                    match running with
                    | Some(e, _, _) -> ValueSome e
                    | None -> ValueNone
                ModelFitted = parsed c "modelFitted" (fun t -> Boolean.TryParse t) "true or false"
                ModelHoldoutMse = float32 (number c "modelMse")
                LastEpisodeReturn = number c "lastEpisodeReturn"
                LastEpisodeLength =
                    (if meta.ContainsKey "lastEpisodeLength" then
                         integer c "lastEpisodeLength" 0 Int32.MaxValue
                     else
                         0)
                LastEvalReturn = number c "lastEval"
                LastUpdate = noUpdate
                Metrics = defaultArg rows []
                WallSeconds = wall
            }

        // The environment checks the whole state before changing anything, so a refusal here leaves everything as it was.
        match running with
        | Some(_, r, envState) ->
            try
                r.RestoreState envState
            with :? ArgumentException as e ->
                refuse c "metadata 'runningEpisode': %s" e.Message
        | None -> ()

        for restore in restoreBuffers do
            restore ()

        state, rows.IsSome
