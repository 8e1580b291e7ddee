/// The live display of a training run: a Spectre.Console progress bar with the phase, rates, the last episode and
/// the last evaluation on a terminal; plain lines (one per evaluation, one every 10% of the run) when the output is
/// redirected to a file or a pipe.
module Maac.Cli.LiveProgress

open System
open Spectre.Console
open Maac.Algorithms

/// What a run shows while it trains.
type Display =
    {
        /// Called after every environment step.
        Step: ProgressInfo -> unit
        /// Called after every evaluation.
        Evaluation: MetricsRow -> unit
    }

let private describe (randomSteps: int) (p: ProgressInfo) =
    let phase =
        if p.Step <= randomSteps then
            "random actions"
        else
            "learning"

    let eval =
        if Double.IsNaN p.LastEvalReturn then
            "-"
        else
            sprintf "%.1f" p.LastEvalReturn

    let episode =
        if Double.IsNaN p.LastEpisodeReturn then
            "-"
        else
            sprintf "%.1f" p.LastEpisodeReturn

    sprintf
        "%s · %.1f steps/s · episode %s · eval %s · critic %.3g · actor %.3g · α %.3f"
        phase
        p.StepsPerSecond
        episode
        eval
        p.LastUpdate.CriticLoss
        p.LastUpdate.ActorLoss
        p.LastUpdate.Alpha

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
                            printfn
                                "step %d/%d: %s, about %s left"
                                p.Step
                                p.TotalSteps
                                (describe settings.RandomSteps p)
                                (p.Remaining.ToString(@"hh\:mm\:ss"))
                Evaluation = fun r -> printfn "%s" (evaluationLine r)
            }
    else
        AnsiConsole
            .Progress()
            .AutoClear(false)
            .Columns(TaskDescriptionColumn(), ProgressBarColumn(), PercentageColumn(), RemainingTimeColumn(), SpinnerColumn())
            .Start(fun ctx ->
                let task = ctx.AddTask(Markup.Escape title, maxValue = float settings.Steps)
                task.Value <- float start

                train
                    {
                        Step =
                            fun p ->
                                task.Value <- float p.Step

                                if p.Step % 25 = 0 || p.Step = p.TotalSteps then
                                    task.Description <- Markup.Escape(sprintf "%s · %s" title (describe settings.RandomSteps p))
                        Evaluation = fun r -> AnsiConsole.MarkupLine(Markup.Escape(evaluationLine r))
                    })
