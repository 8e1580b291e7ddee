// Train MAAC on Pendulum from C#, print the evaluation returns, save, load, and act.
// Usage: dotnet run --project examples/CSharpQuickstart -c Release [-- steps]
using Maac;

var steps = args.Length > 0 ? int.Parse(args[0]) : 5000;

// The settings the command line uses for Pendulum; any property can be changed before training.
var options = MaacOptions.ForTask("Pendulum");
options.TotalSteps = steps;
options.Seed = 0;

using var agent = new MaacAgent("Pendulum", options);

// A live line on a terminal; nothing when the output goes to a file.
IProgress<TrainingProgress>? progress = Console.IsOutputRedirected
    ? null
    : new Progress<TrainingProgress>(p =>
        Console.Write(
            $"\rstep {p.Step}/{p.TotalSteps}  {p.StepsPerSecond:F1} steps/s  last evaluation {p.LastEvaluationReturn?.ToString("F1") ?? "–"}   "
        )
    );
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};
await agent.TrainAsync(steps, progress, cancel.Token);
Console.WriteLine();

foreach (var e in agent.Evaluations)
    Console.WriteLine($"step {e.Step, 6}: evaluation return {e.ReturnMean, 8:F1} ± {e.ReturnStandardDeviation:F1}");

var folder = Path.Combine(Path.GetTempPath(), $"maac-quickstart-{Environment.ProcessId}");
agent.Save(folder);
using var loaded = MaacAgent.Load(folder);
var observation = new float[] { 1f, 0f, 0f }; // upright, at rest: (cos θ, sin θ, θ̇)
var action = loaded.Act(observation);
Console.WriteLine($"saved to {folder}; the loaded agent (step {loaded.Step}) applies torque {action[0]:F3} when upright");
var final = loaded.Evaluate(episodes: 10);
Console.WriteLine($"loaded agent: evaluation return {final.Mean:F1} ± {final.StandardDeviation:F1} over {final.Episodes} episodes");
if (action.Length != 1 || !double.IsFinite(final.Mean))
    return 1;
Directory.Delete(folder, recursive: true);
return 0;
