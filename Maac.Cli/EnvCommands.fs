/// `envs` (list the tasks) and `bench --env` (environment stepping speed).
module Maac.Cli.EnvCommands

open System
open System.Diagnostics
open Maac.Envs
open Maac.Envs.MuJoCo

/// Prints every built-in task with its sizes, the definition it follows and whether it can run here.
let list () =
    printfn "%-24s %5s %5s %6s  %-22s %s" "task" "obs" "act" "steps" "definition" "available"

    for t in Tasks.all do
        let available =
            if Tasks.isAvailable t then
                "yes"
            else
                sprintf "no: needs %s (%s)" (defaultArg t.Requires "?") (defaultArg (Library.unavailableReason ()) "")

        printfn "%-24s %5d %5d %6d  %-22s %s" t.Name t.ObservationDim t.ActionDim t.EpisodeSteps t.Definition available

/// Prints the compiled physics of an MJCF file, or of a built-in task's model when given a task name, as JSON.
let dumpModel (fileOrTask: string) =
    let path =
        if IO.File.Exists fileOrTask then
            fileOrTask
        else
            match
                GymnasiumTasks.all @ MbblTasks.all
                |> List.tryFind (fun t -> String.Equals(t.Spec.Name, fileOrTask, StringComparison.OrdinalIgnoreCase))
            with
            | Some t -> ModelFiles.path (fst t.Model) (snd t.Model)
            | None -> failwithf "'%s' is neither a file nor a MuJoCo task (see `envs`)" fileOrTask

    use sim = new Simulation(path)
    printfn "%s" (ModelFacts.toJson (ModelFacts.read sim))

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
        for i in 0..999 do
            body i

        let sw = Stopwatch.StartNew()

        for i in 0 .. steps - 1 do
            body i

        float steps / sw.Elapsed.TotalSeconds

    env.Reset(Some 0L) |> ignore

    let envRate =
        timeLoop (fun i ->
            if (env.Step actions.[i % 1000]).Truncated then
                env.Reset None |> ignore)

    printfn "%s through IEnv: %.0f steps/s" task.Name envRate

    match (env :?> TimeLimit).Inner with
    | :? MuJoCoEnvironment as m ->
        let sim = m.Simulation
        let frames = int (Math.Round(m.ControlDt / sim.Timestep))
        env.Reset(Some 0L) |> ignore
        let rawRate = timeLoop (fun i -> sim.StepPhysics(actions.[i % 1000], frames))

        printfn
            "%s bare simulation loop (%d mj_step per step, nothing else): %.0f steps/s; environment overhead %.1f%%"
            task.Name
            frames
            rawRate
            (100.0 * (rawRate / envRate - 1.0))
    | _ -> ()
