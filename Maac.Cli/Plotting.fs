/// Learning curves drawn with ScottPlot: mean ± standard deviation across the runs (seeds) of each configuration.
module Maac.Cli.Plotting

open System
open Maac.Algorithms
open Maac.Persistence
open Maac.Training

/// Groups run folders by configuration (every setting but the seed and the budget) and returns, per group, its label
/// (SettingsFile.labels: task, algorithm, update ratio and what tells it from its siblings) and the steps common to
/// all its runs with the mean and standard deviation across runs of the evaluation return.
let curves (runs: string list) =
    let groups =
        runs
        |> List.map (fun dir -> RunFolder.readSettings dir, RunFolder.readMetrics dir)
        |> List.groupBy (fun (s, _) -> SettingsFile.configuration s)

    let labels = groups |> List.map (fun (_, members) -> fst members.Head) |> SettingsFile.labels

    List.zip labels groups
    |> List.map (fun (label, (_, members)) ->
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

        sprintf "%s (%d run%s)" label members.Length (if members.Length = 1 then "" else "s"), stats)

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
    // Inside the axes, upper left, above the data: room is made at the top for one line per curve.
    plt.Legend.Alignment <- ScottPlot.Alignment.UpperLeft
    plt.ShowLegend() |> ignore
    plt.Axes.Margins(0.03, 0.03, 0.05, 0.12 * float (List.length groups) + 0.1)
    let longest = groups |> List.fold (fun n (label: string, _) -> max n label.Length) 0
    plt.SavePng(path, max 900 (7 * longest + 400), 600) |> ignore

/// Draws learning curves (evaluation return against environment steps) into a PNG file.
let draw (title: string) (groups: (string * (float * float * float)[]) list) (path: string) =
    drawWith title "environment steps" "evaluation return" groups path
