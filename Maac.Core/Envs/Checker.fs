namespace Maac.Envs

open System

/// The findings of an environment check: an empty list means the environment passed.
type CheckReport =
    { Environment: string
      Problems: string list }
    member r.Passed = List.isEmpty r.Problems

/// Checks any IEnv (built-in or a user's) in the spirit of Stable-Baselines3's check_env:
/// well-formed spaces, observations of the right size that are finite and inside the space,
/// finite rewards, determinism under a seed, and refusal of malformed actions.
module EnvChecker =
    let private isFiniteVector (x: float32[]) = not (isNull x) && x |> Array.forall Single.IsFinite

    /// "[NaN, 0, 1.5]": values as .NET writes them, for messages read from C# as well as F#.
    let private showValues (x: float32[]) =
        "[" + String.Join(", ", x |> Array.map (fun v -> v.ToString("G6", Globalization.CultureInfo.InvariantCulture))) + "]"

    /// Runs the checks for `steps` steps with actions drawn from a fixed seed.
    let check (steps: int) (env: IEnv) : CheckReport =
        let problems = Collections.Generic.List<string>()
        let problem fmt = Printf.kprintf problems.Add fmt
        let name = try env.Name with e -> sprintf "<Name threw %s>" e.Message
        let guard what (f: unit -> unit) =
            try f () with e -> problem "%s threw %s: %s" what (e.GetType().Name) e.Message
        guard "the spaces" (fun () ->
            let o, a = env.ObservationSpace, env.ActionSpace
            if o.Dim = 0 then problem "the observation space has no dimensions"
            if a.Dim = 0 then problem "the action space has no dimensions"
            for i in 0 .. a.Dim - 1 do
                if not (Single.IsFinite a.Low.[i] && Single.IsFinite a.High.[i]) then
                    problem "action dimension %d has unbounded range [%g, %g]; policies need finite bounds" i a.Low.[i] a.High.[i])
        if problems.Count = 0 then
            let obsDim, actSpace = env.ObservationSpace.Dim, env.ActionSpace
            let actions =
                let u = EnvSupport.uniform (Maac.Tensors.RandomKey.ofSeed 7L) (steps * actSpace.Dim) 0.0f 1.0f
                Array.init steps (fun t -> Array.init actSpace.Dim (fun j -> actSpace.Low.[j] + (actSpace.High.[j] - actSpace.Low.[j]) * u.[t * actSpace.Dim + j]))
            let rollout () =
                let first = env.Reset(Some 123L)
                let trace = Collections.Generic.List<float32[] * float>()
                trace.Add((first.Observation, 0.0))
                let mutable t = 0
                let mutable fin = false
                while t < steps && not fin do
                    let r = env.Step actions.[t]
                    trace.Add((r.Observation, r.Reward))
                    fin <- r.Terminated || r.Truncated
                    t <- t + 1
                trace |> Seq.toList
            guard "a seeded rollout" (fun () ->
                let one = rollout ()
                for (i, (obs, reward)) in List.indexed one do
                    if isNull obs || obs.Length <> obsDim then
                        problem "observation %d has size %d, the space says %d" i (if isNull obs then 0 else obs.Length) obsDim
                    elif not (isFiniteVector obs) then problem "observation %d is not finite: %s" i (showValues obs)
                    elif not (Box.contains env.ObservationSpace obs) then problem "observation %d lies outside the observation space: %s" i (showValues obs)
                    if Double.IsNaN reward || Double.IsInfinity reward then problem "reward %d is %g" i reward
                let two = rollout ()
                let same =
                    List.length one = List.length two
                    && List.forall2 (fun (o1: float32[], r1: float) (o2: float32[], r2) -> o1 = o2 && r1 = r2) one two
                if not same then problem "two rollouts with seed 123 and the same actions differ: seeding is not deterministic")
            guard "malformed actions" (fun () ->
                env.Reset(Some 1L) |> ignore
                let refused (a: float32[]) =
                    try
                        env.Step a |> ignore
                        false
                    with
                    | :? ArgumentException | :? ArithmeticException -> true
                if not (refused (Array.zeroCreate (actSpace.Dim + 1))) then problem "an action of size %d (expected %d) was accepted" (actSpace.Dim + 1) actSpace.Dim
                if not (refused (Array.create actSpace.Dim Single.NaN)) then problem "an action of NaNs was accepted")
        { Environment = name; Problems = List.ofSeq problems }

    /// Runs the checks and raises ArgumentException listing every problem.
    let ensure (env: IEnv) =
        let r = check 50 env
        if not r.Passed then
            invalidArg "env" (sprintf "environment %s failed the checks:\n- %s" r.Environment (String.Join("\n- ", r.Problems)))
