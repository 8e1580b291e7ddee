/// The live display of a training run: a Spectre.Console progress bar with the phase, rates, the last episode and
/// the last evaluation on a terminal; plain lines (one per evaluation, one every 10% of the run) when the output is
/// redirected to a file or a pipe.
module Maac.Cli.LiveProgress

open System
open Spectre.Console
open Maac.Algorithms
open Maac.Persistence
open Maac.Training

/// What a run shows while it trains.
type Display =
    {
        /// Called after every environment step.
        Step: ProgressInfo -> unit
        /// Called after every evaluation.
        Evaluation: MetricsRow -> unit
    }

/// A value for the display, or "–" where none exists yet.
let private orDash (format: 'a -> string) (value: 'a option) = value |> Option.map format |> Option.defaultValue "–"

let private known (x: float) = if Double.IsNaN x then None else Some x

/// The remaining time, or "estimating…" before the learning phase has a measured rate.
let remainingText (p: ProgressInfo) =
    match p.Remaining with
    | Some t -> sprintf "about %s left" (t.ToString(@"hh\:mm\:ss"))
    | None -> "estimating…"

let private describe (randomSteps: int) (p: ProgressInfo) =
    let phase =
        if p.Step <= randomSteps then
            "random actions"
        else
            "learning"

    let update = if p.HasUpdated then Some p.LastUpdate else None

    sprintf
        "%s · %.1f steps/s · episode %s · eval %s · critic %s · actor %s · α %s"
        phase
        p.StepsPerSecond
        (known p.LastEpisodeReturn |> orDash (sprintf "%.1f"))
        (known p.LastEvalReturn |> orDash (sprintf "%.1f"))
        (update |> orDash (fun u -> sprintf "%.3g" u.CriticLoss))
        (update |> orDash (fun u -> sprintf "%.3g" u.ActorLoss))
        (update |> orDash (fun u -> sprintf "%.3f" u.Alpha))

/// Runs `train` (which gets the display to report to) with a live display on a terminal, or with plain lines.
let show (title: string) (settings: Settings) (start: int) (train: Display -> 'T) : 'T =
    let evaluationLine (r: MetricsRow) =
        sprintf
            "step %d: evaluation return %.1f ± %.1f (%d episodes), %.0f s"
            r.Step
            r.EvalReturnMean
            r.EvalReturnStd
            settings.EvalEpisodes
            r.WallSeconds

    if Console.IsOutputRedirected || not AnsiConsole.Profile.Capabilities.Interactive then
        let every = max 1 (settings.Steps / 10)

        train
            {
                Step =
                    fun p ->
                        if p.Step % every = 0 then
                            printfn "step %d/%d: %s, %s" p.Step p.TotalSteps (describe settings.RandomSteps p) (remainingText p)
                Evaluation = fun r -> printfn "%s" (evaluationLine r)
            }
    else
        AnsiConsole
            .Progress()
            .AutoClear(false)
            // The remaining time is the learning phase's estimate in the description, not the bar's own (which would
            // extrapolate the random phase's rate).
            .Columns(TaskDescriptionColumn(), ProgressBarColumn(), PercentageColumn(), SpinnerColumn())
            .Start(fun ctx ->
                let task = ctx.AddTask(Markup.Escape title, maxValue = float settings.Steps)
                task.Value <- float start

                train
                    {
                        Step =
                            fun p ->
                                task.Value <- float p.Step

                                if p.Step % 25 = 0 || p.Step = p.TotalSteps then
                                    task.Description <-
                                        Markup.Escape(sprintf "%s · %s · %s" title (describe settings.RandomSteps p) (remainingText p))
                        Evaluation = fun r -> AnsiConsole.MarkupLine(Markup.Escape(evaluationLine r))
                    })
