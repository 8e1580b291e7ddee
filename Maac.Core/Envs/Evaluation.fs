namespace Maac.Envs

open System.Threading.Tasks

/// The return and length of one evaluation episode.
type EpisodeResult = { Seed: int64; Return: float; Length: int }

/// Evaluates a policy on N copies of an environment stepped in parallel threads. Episode i uses its own
/// environment and seed (seed + i), so results do not depend on scheduling or thread count.
module Evaluation =
    /// Runs one episode to termination, truncation or maxSteps.
    let episode (env: IEnv) (policy: float32[] -> float32[]) (seed: int64) (maxSteps: int) =
        let mutable obs = (env.Reset(Some seed)).Observation
        let mutable total = 0.0
        let mutable t = 0
        let mutable fin = false

        while not fin && t < maxSteps do
            let r = env.Step(policy obs)
            total <- total + r.Reward
            obs <- r.Observation
            fin <- r.Terminated || r.Truncated
            t <- t + 1

        { Seed = seed; Return = total; Length = t }

    /// Runs `episodes` episodes in parallel; makeEnv must give independent environments and policy must be
    /// safe to call from several threads (a pure function of the observation).
    let run (makeEnv: unit -> IEnv) (policy: float32[] -> float32[]) (episodes: int) (seed: int64) (maxSteps: int) =
        let results = Array.zeroCreate episodes

        Parallel.For(
            0,
            episodes,
            fun i ->
                use env = makeEnv ()
                results.[i] <- episode env policy (seed + int64 i) maxSteps
        )
        |> ignore

        results
