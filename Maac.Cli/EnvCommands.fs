/// `envs` (list the tasks) and `bench --env` (environment stepping speed).
module Maac.Cli.EnvCommands

open System
open System.Diagnostics
open Maac.Envs
open Maac.Envs.MuJoCo

/// Prints every built-in task with its sizes and whether it can run here.
let list () =
    printfn "%-22s %5s %5s %6s  %s" "task" "obs" "act" "steps" "available"
    for t in Tasks.all do
        let available =
            if Tasks.isAvailable t then "yes"
            else sprintf "no: needs %s (%s)" (defaultArg t.Requires "?") (defaultArg (Library.unavailableReason ()) "")
        printfn "%-22s %5d %5d %6d  %s" t.Name t.ObservationDim t.ActionDim t.EpisodeSteps available

/// Environment steps per second with uniform random actions, and for MuJoCo tasks the bare
/// simulation loop (controls written, frame-skip mj_step calls, nothing else) beside it.
let bench (name: string) (steps: int) =
    let task = Tasks.find name
    use env = Tasks.make name
    let actions =
        let space = env.ActionSpace
        let u = EnvSupport.uniform (Maac.Tensors.RandomKey.ofSeed 3L) (1000 * space.Dim) 0.0f 1.0f
        Array.init 1000 (fun t -> Array.init space.Dim (fun j -> space.Low.[j] + (space.High.[j] - space.Low.[j]) * u.[t * space.Dim + j]))
    let timeLoop (body: int -> unit) =
        for i in 0 .. 999 do body i
        let sw = Stopwatch.StartNew()
        for i in 0 .. steps - 1 do body i
        float steps / sw.Elapsed.TotalSeconds
    env.Reset(Some 0L) |> ignore
    let envRate = timeLoop (fun i -> if (env.Step actions.[i % 1000]).Truncated then env.Reset None |> ignore)
    printfn "%s through IEnv: %.0f steps/s" task.Name envRate
    match (env :?> TimeLimit).Inner with
    | :? MuJoCoEnvironment as m ->
        let sim = m.Simulation
        let frames = int (Math.Round(m.ControlDt / sim.Timestep))
        env.Reset(Some 0L) |> ignore
        let rawRate = timeLoop (fun i -> sim.Step(actions.[i % 1000], frames))
        printfn "%s bare simulation loop (%d mj_step per step): %.0f steps/s; environment overhead %.1f%%" task.Name frames rawRate (100.0 * (rawRate / envRate - 1.0))
    | _ -> ()
