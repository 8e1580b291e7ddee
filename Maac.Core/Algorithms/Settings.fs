namespace Maac.Algorithms

open System
open Maac.Rl

/// Every setting of a training run (written to config.json). Defaults are the MAAC authors'
/// MuJoCo settings; Settings.forTask scales model and budgets down for the small managed tasks.
type Settings =
    {
        /// The task's name, as `train --env` takes it (for example "HalfCheetah" or "pendulum").
        Env: string
        /// The algorithm's registered name ("maac", "sac", "mbpo", "steve", "svg1" or a user-registered variant).
        Algorithm: string
        /// Seed of every random draw of the run: networks, exploration, minibatches, model rollouts.
        Seed: int64
        /// Budget of environment steps.
        Steps: int
        /// Discount factor γ, in (0, 1].
        Gamma: float32
        /// Target smoothing τ.
        Tau: float32
        /// Transitions per minibatch of the policy, critic and temperature updates.
        BatchSize: int
        /// Hidden-layer widths of the policy and of each critic.
        Hidden: int[]
        /// Adam's learning rates of the policy, the critics and the temperature α.
        ActorLearningRate: float32
        CriticLearningRate: float32
        AlphaLearningRate: float32
        /// Uniformly random actions before learning starts.
        RandomSteps: int
        /// Gradient steps per environment step.
        UpdatesPerStep: int
        /// Members of the probabilistic dynamics ensemble, and how many of the best on hold-out data are used.
        ModelMembers: int
        ModelElites: int
        /// Hidden-layer widths of each ensemble member.
        ModelHidden: int[]
        /// Adam's learning rate and minibatch size of the model fit, and its most epochs per fit.
        ModelLearningRate: float32
        ModelBatchSize: int
        ModelMaxEpochs: int
        /// Environment steps between model fits.
        ModelTrainEvery: int
        /// Start states per imagined-data refresh, and the rollout length from each.
        RolloutStarts: int
        RolloutLength: int
        /// Capacities, in transitions, of the imagined and the real replay buffers.
        ImaginedCapacity: int
        RealCapacity: int
        /// Share of real transitions in critic and actor batches when imagined data is used.
        RealFraction: float32
        /// The actor's model horizon H, samples per start state K, and the STEVE critic horizon.
        ActorHorizon: int
        ActorSamples: int
        CriticHorizon: int
        /// Where the actor objective's K samples are drawn: "paths" (K whole paths per start state, each closed by its
        /// own terminal action) or "horizon" (one path per start state and K actions at its last state, each critic
        /// averaged over them before the minimum).
        ActorSamplesAt: string
        /// Which actions of the actor's imagined paths pay entropy (α log π): "every-step" (every action and the
        /// terminal ones) or "first-action" (the first only; the terminal value then carries none).
        ActorEntropy: string
        /// How the actor's paths and the critic targets' model expansions draw next states: "sampled" (the model's
        /// full predicted noise) or "mean" (its mean prediction). Imagined data for the buffers is always sampled.
        PathNoise: string
        /// Environment steps between evaluations, and the deterministic episodes of each.
        EvalEvery: int
        EvalEpisodes: int
        /// Whether each evaluation stops the run when the critics value real transitions clearly above the most the
        /// rewards allow (Maac.Training.CriticValueCheck). A safeguard, not a training setting: it changes nothing a run
        /// computes until it stops it, so a run may be resumed with it switched.
        CriticValueCheck: bool
    }

module Settings =
    /// The names each choice setting takes and what they stand for, in the order the documentation lists them.
    let private placements = [ "paths", WholePaths; "horizon", ActionsAtHorizon ]
    let private entropies = [ "every-step", EveryStep; "first-action", FirstAction ]
    let private noises = [ "sampled", SampledNoise; "mean", MeanPath ]

    /// The values each choice setting takes, in the order the documentation lists them.
    let choices =
        [
            "ActorSamplesAt", List.map fst placements
            "ActorEntropy", List.map fst entropies
            "PathNoise", List.map fst noises
        ]

    /// "<setting> must be one of '<a>', '<b>', got '<value>'" when a choice setting's value is not one of its names.
    let private choiceProblem (setting: string) (value: string) =
        let allowed = choices |> List.find (fst >> (=) setting) |> snd

        if List.contains value allowed then
            None
        else
            Some(sprintf "%s must be one of %s, got '%s'" setting (String.Join(", ", allowed |> List.map (sprintf "'%s'"))) value)

    /// What a choice setting's value stands for; ArgumentException with choiceProblem's message otherwise.
    let private chosen (setting: string) (table: (string * 'T) list) (value: string) =
        match List.tryFind (fst >> (=) value) table with
        | Some(_, v) -> v
        | None -> invalidArg setting (choiceProblem setting value).Value

    /// The authors' settings (HalfCheetah-style) for an environment and algorithm.
    let authors (env: string) (algorithm: string) =
        {
            Env = env
            Algorithm = algorithm
            Seed = 0L
            Steps = 200_000
            Gamma = 0.99f
            Tau = 5e-3f
            BatchSize = 256
            Hidden = [| 256; 256 |]
            ActorLearningRate = 3e-4f
            CriticLearningRate = 3e-4f
            AlphaLearningRate = 3e-4f
            RandomSteps = 5000
            UpdatesPerStep = 8
            ModelMembers = 8
            ModelElites = 6
            ModelHidden = [| 200; 200; 200; 200 |]
            ModelLearningRate = 1e-3f
            ModelBatchSize = 256
            ModelMaxEpochs = 200
            ModelTrainEvery = 250
            RolloutStarts = 100_000
            RolloutLength = 1
            ImaginedCapacity = 2_000_000
            RealCapacity = 1_000_000
            RealFraction = 0.05f
            ActorHorizon = 4
            ActorSamples = 5
            CriticHorizon = 2
            ActorSamplesAt = "paths"
            ActorEntropy = "every-step"
            PathNoise = "sampled"
            EvalEvery = 5000
            EvalEpisodes = 10
            CriticValueCheck = true
        }

    /// Settings for a task: the authors' for the MuJoCo locomotion tasks and their MBBL variants (H = 2 on Walker2d);
    /// for the small tasks smaller networks, model and budgets that fit a 2-core machine, with 4 gradient steps per environment
    /// step on InvertedPendulum (with 2 it reached 1,000 on 1 of 3 seeds in 5,000 steps, with 4 on 3 of 3) and
    /// 4 steps with the authors' 2×256 networks on Pendulum (2 of 3 seeds above −200 at 5,000 steps with 2×128
    /// and 2 steps, 3 of 3 with these: docs/results.md). Pendulum's critics learn from the one-step TD target
    /// (CriticHorizon 0): STEVE's horizon-2 target equals it there to float rounding, as with the authors' weights
    /// (docs/algorithm.md), and its expansions took 38% of a training step. Pendulum's actor draws its K samples as
    /// actions at the end of one path (ActorSamplesAt "horizon"): its three seeds end within 0.6 of their K-paths
    /// returns, all above −200, and a step runs about 1.2 times as fast (docs/results.md).
    let forTask (env: string) (algorithm: string) =
        let a = authors env algorithm

        let small =
            { a with
                Steps = 5000
                Hidden = [| 128; 128 |]
                RandomSteps = 500
                UpdatesPerStep = 2
                ModelMembers = 5
                ModelElites = 4
                ModelHidden = [| 128; 128; 128 |]
                ModelMaxEpochs = 30
                RolloutStarts = 2000
                RealCapacity = 100_000
                ImaginedCapacity = 100_000
                ActorHorizon = 3
                ActorSamples = 2
                EvalEvery = 500
                EvalEpisodes = 10
            }
        // The MBBL variants take the settings of the task they vary.
        match env.ToLowerInvariant().Replace("-mbbl", "") with
        | "walker2d" -> { a with ActorHorizon = 2 }
        | "halfcheetah"
        | "hopper"
        | "ant" -> a
        | "invertedpendulum" -> { small with UpdatesPerStep = 4 }
        | "pendulum" ->
            { small with
                UpdatesPerStep = 4
                Hidden = [| 256; 256 |]
                CriticHorizon = 0
                ActorSamplesAt = "horizon"
            }
        | _ -> small

    /// The kinds of range a setting has: each takes the value's getter, then the name to show and the settings.
    module private Range =
        let positive (get: Settings -> int) name s =
            let v = get s

            if v <= 0 then
                Some(sprintf "%s must be positive, got %d" name v)
            else
                None

        let atLeast0 (get: Settings -> int) name s =
            let v = get s

            if v < 0 then
                Some(sprintf "%s must not be negative, got %d" name v)
            else
                None

        let rate (get: Settings -> float32) name s =
            let v = get s

            if not (Single.IsFinite v) || v <= 0.0f then
                Some(sprintf "%s must be a positive learning rate, got %g" name v)
            else
                None

        let widths (get: Settings -> int[]) name s =
            let v = get s

            if isNull v || v.Length = 0 || Array.exists (fun w -> w <= 0) v then
                Some(sprintf "%s must list positive layer widths, got [%s]" name (if isNull v then "" else String.Join(", ", v)))
            else
                None

        let unit (get: Settings -> float32) (lowOpen: bool) name s =
            let v = get s

            if not (Single.IsFinite v) || (if lowOpen then v <= 0.0f else v < 0.0f) || v > 1.0f then
                Some(sprintf "%s must lie in %s0, 1], got %g" name (if lowOpen then "(" else "[") v)
            else
                None

        let named (get: Settings -> string) what name s =
            if String.IsNullOrWhiteSpace(get s) then
                Some(sprintf "%s must name %s" name what)
            else
                None

        let choice setting (get: Settings -> string) (_: string) s = choiceProblem setting (get s)

    /// Each setting's own range, by the setting's name: a rule takes the name to show (the C# options show their
    /// property's name) and the settings, and gives the problem when the value is out of range.
    let private rangeRules: (string * (string -> Settings -> string option)) list =
        [
            "Env", Range.named (fun s -> s.Env) "a task"
            "Algorithm", Range.named (fun s -> s.Algorithm) "an algorithm"
            "Steps", Range.positive (fun s -> s.Steps)
            "Gamma", Range.unit (fun s -> s.Gamma) true
            "Tau", Range.unit (fun s -> s.Tau) true
            "BatchSize", Range.positive (fun s -> s.BatchSize)
            "Hidden", Range.widths (fun s -> s.Hidden)
            "ActorLearningRate", Range.rate (fun s -> s.ActorLearningRate)
            "CriticLearningRate", Range.rate (fun s -> s.CriticLearningRate)
            "AlphaLearningRate", Range.rate (fun s -> s.AlphaLearningRate)
            "RandomSteps", Range.atLeast0 (fun s -> s.RandomSteps)
            "UpdatesPerStep", Range.positive (fun s -> s.UpdatesPerStep)
            "ModelMembers", Range.positive (fun s -> s.ModelMembers)
            "ModelElites", Range.positive (fun s -> s.ModelElites)
            "ModelHidden", Range.widths (fun s -> s.ModelHidden)
            "ModelLearningRate", Range.rate (fun s -> s.ModelLearningRate)
            "ModelBatchSize", Range.positive (fun s -> s.ModelBatchSize)
            "ModelMaxEpochs", Range.positive (fun s -> s.ModelMaxEpochs)
            "ModelTrainEvery", Range.positive (fun s -> s.ModelTrainEvery)
            "RolloutStarts", Range.positive (fun s -> s.RolloutStarts)
            "RolloutLength", Range.positive (fun s -> s.RolloutLength)
            "ImaginedCapacity", Range.positive (fun s -> s.ImaginedCapacity)
            "RealCapacity", Range.positive (fun s -> s.RealCapacity)
            "RealFraction", Range.unit (fun s -> s.RealFraction) false
            "ActorHorizon", Range.atLeast0 (fun s -> s.ActorHorizon)
            "ActorSamples", Range.positive (fun s -> s.ActorSamples)
            "CriticHorizon", Range.atLeast0 (fun s -> s.CriticHorizon)
            "ActorSamplesAt", Range.choice "ActorSamplesAt" (fun s -> s.ActorSamplesAt)
            "ActorEntropy", Range.choice "ActorEntropy" (fun s -> s.ActorEntropy)
            "PathNoise", Range.choice "PathNoise" (fun s -> s.PathNoise)
            "EvalEvery", Range.positive (fun s -> s.EvalEvery)
            "EvalEpisodes", Range.positive (fun s -> s.EvalEpisodes)
        ]

    /// The problem of one setting's value, shown under the name `shownAs`; null when it is in range. Only the
    /// setting's own range is checked (relations between settings, such as ModelElites ≤ ModelMembers, are checked by
    /// problems). The C# options check each property with it, so both surfaces accept the same values.
    let problemOf (setting: string) (shownAs: string) (s: Settings) : string =
        match rangeRules |> List.tryFind (fun (name, _) -> name = setting) with
        | Some(_, rule) -> rule shownAs s |> Option.toObj
        | None -> invalidArg "setting" (sprintf "no setting is called '%s'" setting)

    /// Every out-of-range setting, each naming the setting and its value; empty when the settings can be run.
    /// The one check used by the command line, the C# options and F# callers (Trainer runs it).
    let problems (s: Settings) =
        [
            for name, rule in rangeRules do
                yield rule name s

            if s.ModelElites > s.ModelMembers then
                yield Some(sprintf "ModelElites (%d) must not exceed ModelMembers (%d)" s.ModelElites s.ModelMembers)
        ]
        |> List.choose id

    /// Settings that can be run but will not do what was probably meant (a budget spent on random actions or
    /// without an evaluation).
    let warnings (s: Settings) =
        [
            if s.RandomSteps >= s.Steps then
                yield
                    sprintf
                        "RandomSteps (%d) is not below Steps (%d): the whole budget is random actions and nothing is learned"
                        s.RandomSteps
                        s.Steps
            if s.EvalEvery > s.Steps then
                yield sprintf "EvalEvery (%d) exceeds Steps (%d): the only evaluation is at the end" s.EvalEvery s.Steps
        ]

    /// Raises ArgumentException listing every problem (naming the first problem's setting as the parameter).
    let validate (s: Settings) =
        match problems s with
        | [] -> ()
        | first :: _ as all ->
            let setting = first.Split(' ').[0]
            raise (ArgumentException(sprintf "invalid settings:\n- %s" (String.Join("\n- ", all)), setting))

    /// The path noise a settings' PathNoise names.
    let pathNoise (s: Settings) = chosen "PathNoise" noises s.PathNoise

    /// The pathwise objective's choices of a settings' ActorSamplesAt and ActorEntropy, with K samples.
    let pathwiseChoices (s: Settings) (samples: int) =
        {
            Samples = samples
            Placement = chosen "ActorSamplesAt" placements s.ActorSamplesAt
            Entropy = chosen "ActorEntropy" entropies s.ActorEntropy
        }
