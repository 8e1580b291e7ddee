namespace Maac.Analysis

open System
open System.Threading.Tasks
open Maac.Envs
open Maac.Training

/// Grid sizes of the dynamic program.
type PendulumGrid =
    {
        Angles: int
        Speeds: int
        Torques: int
    }

    /// The grid used for the figures in docs/results.md (about 20 s on two cores).
    static member Fine = { Angles = 256; Speeds = 161; Torques = 81 }

/// A near-optimal controller for the classic Pendulum by finite-horizon dynamic programming on a grid (the
/// value function bilinearly interpolated, the torque chosen by one-step lookahead on a finer set), used to
/// say how far a learned policy's evaluation return is from the best achievable on the same start states.
module PendulumOptimum =
    let private horizon = 200

    let private wrap (th: float) = Pendulum.Normalise th

    /// The environment's own transition and reward.
    let private step (th: float) (w: float) (u: float) =
        let struct (th', w') = Pendulum.Advance(th, w, u)
        th', w'

    let private reward (th: float) (w: float) (u: float) = Pendulum.Reward(th, w, u)

    /// Values V_t on the grid for t = 0 … 200 (V_200 = 0), and a function reading V_t at any state.
    let solve (grid: PendulumGrid) =
        let angle i = -Math.PI + 2.0 * Math.PI * float i / float grid.Angles
        let speed j = -Pendulum.MaxSpeed + 2.0 * Pendulum.MaxSpeed * float j / float (grid.Speeds - 1)
        let torques = Array.init grid.Torques (fun k -> -2.0 + 4.0 * float k / float (grid.Torques - 1))

        let at (v: float[,]) (th: float) (w: float) =
            let x = (wrap th + Math.PI) / (2.0 * Math.PI) * float grid.Angles
            let i = int (floor x)
            let fx = x - float i

            let i0, i1 =
                ((i % grid.Angles) + grid.Angles) % grid.Angles, (((i + 1) % grid.Angles) + grid.Angles) % grid.Angles

            let y = (w + Pendulum.MaxSpeed) / (2.0 * Pendulum.MaxSpeed) * float (grid.Speeds - 1)
            let j = min (grid.Speeds - 2) (max 0 (int (floor y)))
            let fy = y - float j

            (1.0 - fx) * ((1.0 - fy) * v.[i0, j] + fy * v.[i0, j + 1])
            + fx * ((1.0 - fy) * v.[i1, j] + fy * v.[i1, j + 1])

        let values = Array.init (horizon + 1) (fun _ -> Array2D.zeroCreate<float> grid.Angles grid.Speeds)

        for t in horizon - 1 .. -1 .. 0 do
            let next = values.[t + 1]

            Parallel.For(
                0,
                grid.Angles,
                fun i ->
                    for j in 0 .. grid.Speeds - 1 do
                        let th, w = angle i, speed j

                        values.[t].[i, j] <-
                            torques
                            |> Array.fold (fun best u -> let th', w' = step th w u in max best (reward th w u + at next th' w')) -infinity
            )
            |> ignore

        values, at

    /// Returns of the near-optimal controller on the evaluation episodes a run with this seed uses
    /// (Trainer.EvaluatePolicy's seeds), through the real environment.
    let evaluationReturns (grid: PendulumGrid) (trainSeed: int64) (episodes: int) =
        let values, at = solve grid
        let fine = Array.init 401 (fun k -> -2.0 + 4.0 * float k / 400.0)

        Array.init episodes (fun e ->
            let pendulum = new Pendulum()
            use env = new TimeLimit(pendulum, horizon) :> IEnv
            env.Reset(Some(Maac.Training.Trainer.EvaluationSeedBase trainSeed + int64 e)) |> ignore
            let mutable total = 0.0

            for t in 0 .. horizon - 1 do
                let s = pendulum.State

                let u =
                    fine
                    |> Array.maxBy (fun u -> let th', w' = step s.[0] s.[1] u in reward s.[0] s.[1] u + at values.[t + 1] th' w')

                total <- total + (env.Step [| float32 u |]).Reward

            total)
