namespace Maac.Envs

open System
open Maac.Tensors

/// The findings of an environment check: problems (the environment cannot be trained on as it is) and warnings
/// (it can, but something may not be what was meant). Each kind of finding is reported once, with the first step
/// and element where it was seen and how many steps showed it.
type CheckReport =
    {
        Environment: string
        Problems: string list
        Warnings: string list
    }

    member r.Passed = List.isEmpty r.Problems

/// How strictly to check.
type CheckOptions =
    {
        /// Steps of the seeded rollouts.
        Steps: int
        /// Whether a seed that does not fix the episode is a problem (true) or a warning (false: simulators and hardware
        /// may not be reproducible).
        StrictDeterminism: bool
        /// The task's reward and termination as tensor functions, compared with what Step returns on the sampled
        /// transitions.
        Functions: TaskFunctions
    }

/// Checks any IEnv (built-in or a user's) in the spirit of Gymnasium's and Stable-Baselines3's check_env:
/// well-formed spaces, observations of the right size that are finite and inside the space, finite rewards,
/// determinism under a seed, refusal of malformed actions, and reward and termination functions that agree with
/// the environment's steps.
module EnvChecker =
    /// "[NaN, 0, 1.5]": values as .NET writes them, for messages read from C# as well as F#.
    let private showValues (x: float32[]) =
        "["
        + String.Join(", ", x |> Array.map (fun v -> v.ToString("G6", Globalization.CultureInfo.InvariantCulture)))
        + "]"

    /// The default options: 50 steps, determinism a warning, no functions to compare.
    let defaults =
        { Steps = 50; StrictDeterminism = false; Functions = { Reward = None; Termination = None } }

    /// Collects findings of one kind: the first occurrence's text and how many steps showed it.
    type private Tally() =
        let found = Collections.Generic.Dictionary<string, string * int>()
        let order = Collections.Generic.List<string>()

        member _.Add(kind: string, text: string) =
            match found.TryGetValue kind with
            | true, (first, n) -> found.[kind] <- (first, n + 1)
            | _ ->
                found.[kind] <- (text, 1)
                order.Add kind

        member _.Texts =
            [
                for kind in order ->
                    let text, n = found.[kind]

                    if n > 1 then
                        sprintf "%s (and at %d more steps)" text (n - 1)
                    else
                        text
            ]

    /// (action, step result) per action until the episode ends or the actions run out.
    let private stepThrough (env: IEnv) (actions: float32[][]) =
        let steps = Collections.Generic.List<float32[] * EnvStep>()
        let mutable t = 0
        let mutable fin = false

        while t < actions.Length && not fin do
            let r = env.Step actions.[t]
            steps.Add((actions.[t], r))
            fin <- r.Terminated || r.Truncated
            t <- t + 1

        List.ofSeq steps

    /// One seeded rollout: the first observation, then (action, step result) per step until the episode ends.
    let private rollout (env: IEnv) (actions: float32[][]) =
        let first = env.Reset(Some 123L)
        first.Observation, stepThrough env actions

    /// For an environment that says it can save its state: the seeded rollout's state saved halfway, the rest stepped,
    /// the state restored and the rest stepped again; the first step (counted from the reset) whose observation,
    /// reward or end differs, if any.
    let private restoreDifference (env: IEnv) (r: IRestorableEnv) (actions: float32[][]) =
        let half = actions.Length / 2
        let _, before = rollout env actions.[.. half - 1]

        if before.Length < half then
            None // the episode ended before the halfway point: nothing to continue
        else
            let saved = r.SaveState()
            let outcome (_, s: EnvStep) = s.Observation, s.Reward, s.Terminated, s.Truncated
            let rest = stepThrough env actions.[half..] |> List.map outcome
            r.RestoreState saved
            let again = stepThrough env actions.[half..] |> List.map outcome

            if again.Length <> rest.Length then
                Some(half + 1 + min again.Length rest.Length)
            else
                List.zip rest again
                |> List.tryFindIndex (fun (a, b) -> a <> b)
                |> Option.map (fun i -> half + 1 + i)

    /// Compares a tensor function with the values Step returned; a problem when it fails, has the wrong shape or
    /// disagrees.
    let private compareFunction
        (what: string)
        (problems: Tally)
        (f: Tensor -> Tensor -> Tensor -> Tensor)
        (rows: (float32[] * float32[] * float32[]) list)
        (expected: float list)
        =
        let stack (pick: float32[] * float32[] * float32[] -> float32[]) =
            let xs = rows |> List.map pick |> Array.ofList
            Tensor.ofArray [| xs.Length; xs.[0].Length |] (Array.concat xs)

        try
            let o, a, n = stack (fun (o, _, _) -> o), stack (fun (_, a, _) -> a), stack (fun (_, _, n) -> n)
            let result = f o a n

            if result.Shape <> [| rows.Length |] then
                problems.Add(
                    what + " shape",
                    sprintf
                        "the %s function returned shape %s for %d transitions; it must return one value per transition, shape [%d]"
                        what
                        (Shape.show result.Shape)
                        rows.Length
                        rows.Length
                )
            else
                let values = result.ToArray()

                List.iteri
                    (fun i (e: float) ->
                        let v = float values.[i]

                        if not (abs (v - e) <= 1e-4 + 1e-4 * abs e) then
                            problems.Add(
                                what + " disagrees",
                                sprintf "the %s function gives %g at step %d where Step returned %g" what v (i + 1) e
                            ))
                    expected
        with e ->
            problems.Add(what + " failed", sprintf "the %s function failed on a batch of %d transitions: %s" what rows.Length e.Message)

    /// The spaces: both have dimensions, every action dimension has finite bounds.
    let private checkSpaces (problems: Tally) (env: IEnv) =
        let o, a = env.ObservationSpace, env.ActionSpace

        if o.Dim = 0 then
            problems.Add("obs dims", "the observation space has no dimensions")

        if a.Dim = 0 then
            problems.Add("act dims", "the action space has no dimensions")

        for i in 0 .. a.Dim - 1 do
            if not (Single.IsFinite a.Low.[i] && Single.IsFinite a.High.[i]) then
                problems.Add(
                    "act bounds",
                    sprintf "action dimension %d has unbounded range [%g, %g]; policies need finite bounds" i a.Low.[i] a.High.[i]
                )

    /// Every observation of a rollout has the space's size, is finite and lies in the space; every reward is
    /// finite. True when all values were finite.
    let private checkRolloutValues (problems: Tally) (env: IEnv) (observations: float32[] list) (steps: (float32[] * EnvStep) list) =
        let obsDim = env.ObservationSpace.Dim

        let observationFinite i (obs: float32[]) =
            let at =
                if i = 0 then
                    "the observation Reset returned"
                else
                    sprintf "the observation of step %d" i

            if isNull obs || obs.Length <> obsDim then
                problems.Add(
                    "obs size",
                    sprintf "%s has size %d, the observation space says %d" at (if isNull obs then 0 else obs.Length) obsDim
                )

                true
            else
                match Maac.Finite.firstNonFinite obs with
                | Some e ->
                    problems.Add("obs finite", sprintf "%s is not finite: element %d is %g" at e obs.[e])
                    false
                | None ->
                    if not (Box.contains env.ObservationSpace obs) then
                        problems.Add("obs space", sprintf "%s lies outside the observation space: %s" at (showValues obs))

                    true

        let rewardFinite i (_, r: EnvStep) =
            if Double.IsFinite r.Reward then
                true
            else
                problems.Add("reward", sprintf "the reward of step %d is %g" (i + 1) r.Reward)
                false

        let observationsFinite = observations |> List.mapi observationFinite |> List.forall id
        let rewardsFinite = steps |> List.mapi rewardFinite |> List.forall id
        observationsFinite && rewardsFinite

    /// Two rollouts with the same seed and actions must agree (a problem under StrictDeterminism, else a warning);
    /// where the environment saves its state, a restored state must continue the episode exactly.
    let private checkDeterminism
        options
        (problems: Tally)
        (warnings: Tally)
        (env: IEnv)
        actions
        (first, steps: (float32[] * EnvStep) list)
        =
        let first2, steps2 = rollout env actions

        let differing =
            if first2 <> first then
                Some "the observations Reset returned"
            elif steps2.Length <> steps.Length then
                Some(sprintf "the episode lengths (%d and %d steps)" steps.Length steps2.Length)
            else
                List.zip steps steps2
                |> List.tryFindIndex (fun ((_, r1), (_, r2)) -> r1.Observation <> r2.Observation || r1.Reward <> r2.Reward)
                |> Option.map (fun i -> sprintf "step %d" (i + 1))

        match differing with
        | Some what ->
            let text =
                sprintf
                    "two rollouts with seed 123 and the same actions differ (first at %s): seeding does not fix an episode, so runs are not reproducible"
                    what

            if options.StrictDeterminism then
                problems.Add("determinism", text)
            else
                warnings.Add("determinism", text)
        | None ->
            // A resumed run relies on a restored state continuing the episode exactly.
            match EnvState.tryRestorable env |> Option.bind (fun r -> restoreDifference env r actions) with
            | Some step ->
                problems.Add(
                    "restore",
                    sprintf
                        "the state saved after step %d, restored, does not continue the episode as before (first difference at step %d): SaveState leaves out part of the state, or RestoreState does not put it all back"
                        (Array.length actions / 2)
                        step
                )
            | None -> ()

    /// The task's reward and termination functions against what Step returned, on the rollout's transitions.
    let private checkFunctions options (problems: Tally) (observations: float32[] list) (steps: (float32[] * EnvStep) list) =
        let rows =
            List.zip (List.take steps.Length observations) steps
            |> List.map (fun (o, (a, r)) -> o, a, r.Observation)

        options.Functions.Reward
        |> Option.iter (fun f -> compareFunction "reward" problems f rows (steps |> List.map (fun (_, r) -> r.Reward)))

        options.Functions.Termination
        |> Option.iter (fun f ->
            compareFunction "termination" problems f rows (steps |> List.map (fun (_, r) -> if r.Terminated then 1.0 else 0.0)))

    /// Actions of the wrong size and actions of NaNs must be refused.
    let private checkMalformedActions (problems: Tally) (env: IEnv) =
        let actDim = env.ActionSpace.Dim
        env.Reset(Some 1L) |> ignore

        let refused (a: float32[]) =
            try
                env.Step a |> ignore
                false
            with
            | :? ArgumentException
            | :? ArithmeticException -> true

        if not (refused (Array.zeroCreate (actDim + 1))) then
            problems.Add("size accepted", sprintf "an action of size %d (expected %d) was accepted" (actDim + 1) actDim)

        if not (refused (Array.create actDim Single.NaN)) then
            problems.Add("nan accepted", "an action of NaNs was accepted")

    /// Runs the checks with the given options.
    let checkWith (options: CheckOptions) (env: IEnv) : CheckReport =
        let problems, warnings = Tally(), Tally()

        let name =
            try
                env.Name
            with e ->
                sprintf "<Name threw %s>" e.Message

        let guard what (f: unit -> unit) =
            try
                f ()
            with e ->
                problems.Add(what, sprintf "%s threw %s: %s" what (e.GetType().Name) e.Message)

        guard "the spaces" (fun () -> checkSpaces problems env)

        if problems.Texts.IsEmpty then
            let actSpace = env.ActionSpace

            let actions =
                let u = EnvSupport.uniform (RandomKey.ofSeed 7L) (options.Steps * actSpace.Dim) 0.0f 1.0f

                Array.init options.Steps (fun t ->
                    Array.init actSpace.Dim (fun j -> actSpace.Low.[j] + (actSpace.High.[j] - actSpace.Low.[j]) * u.[t * actSpace.Dim + j]))

            guard "a seeded rollout" (fun () ->
                let first, steps = rollout env actions
                let observations = first :: (steps |> List.map (fun (_, r) -> r.Observation))
                let finite = checkRolloutValues problems env observations steps
                // Determinism: only meaningful when the values are finite (NaN never equals itself).
                if finite && problems.Texts.IsEmpty then
                    checkDeterminism options problems warnings env actions (first, steps)

                if finite && problems.Texts.IsEmpty && not steps.IsEmpty then
                    checkFunctions options problems observations steps)

            guard "malformed actions" (fun () -> checkMalformedActions problems env)

        { Environment = name; Problems = problems.Texts; Warnings = warnings.Texts }

    /// Runs the default checks for `steps` steps.
    let check (steps: int) (env: IEnv) : CheckReport = checkWith { defaults with Steps = steps } env

    /// Runs the checks and raises ArgumentException listing every problem (each once); returns the warnings.
    let ensureWith (options: CheckOptions) (env: IEnv) =
        let r = checkWith options env

        if not r.Passed then
            invalidArg "environment" (sprintf "environment %s failed the checks:\n- %s" r.Environment (String.Join("\n- ", r.Problems)))

        r.Warnings

    /// ensureWith the default options.
    let ensure (env: IEnv) = ensureWith defaults env
