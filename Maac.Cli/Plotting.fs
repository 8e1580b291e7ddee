/// Learning curves drawn with ScottPlot: mean ± standard deviation across the runs of each (task, algorithm, update
/// ratio).
module Maac.Cli.Plotting

open System
open Maac.Algorithms

/// Groups run folders by (task, algorithm, gradient steps per environment step) and returns, per group, the steps
/// common to all its runs with the mean and standard deviation across runs of the evaluation return.
let curves (runs: string list) =
    runs
    |> List.map (fun dir -> RunFolder.readSettings dir, RunFolder.readMetrics dir)
    |> List.groupBy (fun (s, _) -> s.Env, s.Algorithm, s.UpdatesPerStep)
    |> List.map (fun ((env, algo, updates), members) ->
        let tables =
            members
            |> List.map (fun (_, rows) -> rows |> Array.map (fun (step, mean, _) -> step, mean) |> Map.ofArray)

        let steps = tables |> List.map (fun t -> set t.Keys) |> Set.intersectMany |> Set.toArray

        let stats =
            steps
            |> Array.map (fun st ->
                let vs = tables |> List.map (fun t -> t.[st]) |> List.toArray
                let m = Array.average vs
                float st, m, sqrt (vs |> Array.averageBy (fun v -> (v - m) ** 2.0)))

        sprintf "%s %s, %d/step (%d run%s)" env algo updates members.Length (if members.Length = 1 then "" else "s"), stats)

/// Draws (x, mean, std) series as lines with ±std bands into a PNG file.
let drawWith (title: string) (xLabel: string) (yLabel: string) (groups: (string * (float * float * float)[]) list) (path: string) =
    use plt = new ScottPlot.Plot()

    for i, (label, stats) in List.indexed groups do
        if stats.Length > 0 then
            let color = plt.Add.Palette.GetColor i
            let xs = stats |> Array.map (fun (x, _, _) -> x)
            let ms = stats |> Array.map (fun (_, m, _) -> m)
            let lo = stats |> Array.map (fun (_, m, s) -> m - s)
            let hi = stats |> Array.map (fun (_, m, s) -> m + s)
            let band = plt.Add.FillY(xs, lo, hi)
            band.FillStyle.Color <- color.WithAlpha(0.2)
            band.LineStyle.Width <- 0.0f
            let line = plt.Add.Scatter(xs, ms)
            line.Color <- color
            line.LegendText <- label

    plt.Title title
    plt.XLabel xLabel
    plt.YLabel yLabel
    plt.ShowLegend() |> ignore
    plt.SavePng(path, 900, 540) |> ignore

/// Draws learning curves (evaluation return against environment steps) into a PNG file.
let draw (title: string) (groups: (string * (float * float * float)[]) list) (path: string) =
    drawWith title "environment steps" "evaluation return" groups path
