// Train MAAC on an environment written in C# (PointMass.cs).
// Usage: dotnet run --project examples/CSharpCustomEnv -c Release [-- steps]
using Maac;

var steps = args.Length > 0 ? int.Parse(args[0]) : 3000;

// Small networks and budgets: this task is simple. The environment checker runs on the first instance.
var options = new MaacOptions
{
    TotalSteps = steps,
    RandomSteps = Math.Min(500, steps / 2),
    HiddenSizes = [64, 64],
    UpdatesPerStep = 1,
    ModelMembers = 5,
    ModelElites = 4,
    ModelHiddenSizes = [64, 64],
    ModelMaxEpochs = 20,
    ModelTrainInterval = 250,
    RolloutStarts = 1000,
    ActorHorizon = 3,
    ActorSamples = 2,
    EvaluationInterval = Math.Max(1, steps / 5),
    EvaluationEpisodes = 5,
};
using var agent = new MaacAgent(() => new PointMass(), options);

var before = agent.Evaluate(episodes: 5);
agent.Train(steps);
foreach (var e in agent.Evaluations)
    Console.WriteLine($"step {e.Step, 5}: evaluation return {e.ReturnMean, 8:F2} ± {e.ReturnStandardDeviation:F2}");
var after = agent.Evaluate(episodes: 5);
Console.WriteLine($"PointMass: {before.Mean:F2} with the initial policy, {after.Mean:F2} after {agent.Step} steps of MAAC");
var start = new float[] { 1.5f, 0f };
Console.WriteLine($"force at x = 1.5, v = 0: {agent.Act(start)[0]:F3} (pushing towards the origin is negative)");
return double.IsFinite(after.Mean) ? 0 : 1;
