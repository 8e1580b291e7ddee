using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using CoreEnv = Maac.Envs.IEnv;
using CoreReset = Maac.Envs.EnvReset;
using CoreStep = Maac.Envs.EnvStep;

namespace Maac;

/// <summary>Presents a C# <see cref="IEnvironment"/> to the library as one of its own environments.</summary>
internal sealed class EnvironmentAdapter : CoreEnv, Envs.IRestorableEnv
{
    private readonly IEnvironment env;
    private readonly Envs.Box observationSpace;
    private readonly Envs.Box actionSpace;
    private readonly string name;

    public EnvironmentAdapter(IEnvironment env)
    {
        this.env = env;
        name = env.Name ?? throw new InvalidOperationException($"{env.GetType().Name}.Name returned null");
        observationSpace = (env.ObservationSpace ?? throw new InvalidOperationException($"{name}: ObservationSpace is null")).ToCore();
        actionSpace = (env.ActionSpace ?? throw new InvalidOperationException($"{name}: ActionSpace is null")).ToCore();
    }

    public string Name => name;
    public Envs.Box ObservationSpace => observationSpace;
    public Envs.Box ActionSpace => actionSpace;

    public CoreReset Reset(FSharpOption<long> seed)
    {
        long? s = FSharpOption<long>.get_IsSome(seed) ? seed.Value : null;
        var observation = env.Reset(s) ?? throw new InvalidOperationException($"{name}: Reset returned null");
        return new CoreReset((float[])observation.Clone(), env.ResetInfo ?? Envs.EnvSupport.noInfo);
    }

    public CoreStep Step(float[] action)
    {
        var clipped = Envs.EnvSupport.validateAction(name, actionSpace, action);
        var r = env.Step(clipped) ?? throw new InvalidOperationException($"{name}: Step returned null");
        var observation = r.Observation ?? throw new InvalidOperationException($"{name}: Step returned a null observation");
        return new CoreStep((float[])observation.Clone(), r.Reward, r.Terminated, r.Truncated, r.Info ?? Envs.EnvSupport.noInfo);
    }

    public void Dispose() => (env as IDisposable)?.Dispose();

    public bool CanSaveState => env is IRestorableEnvironment;

    public FSharpList<Tuple<string, double[]>> SaveState()
    {
        var saved = Restorable.SaveState() ?? throw new InvalidOperationException($"{name}: SaveState returned null");
        return ListModule.OfSeq(
            saved.Select(p =>
                Tuple.Create(
                    p.Key,
                    (double[])(p.Value ?? throw new InvalidOperationException($"{name}: SaveState returned a null part '{p.Key}'")).Clone()
                )
            )
        );
    }

    public void RestoreState(FSharpList<Tuple<string, double[]>> state) =>
        Restorable.RestoreState(state.Select(p => new KeyValuePair<string, double[]>(p.Item1, (double[])p.Item2.Clone())).ToArray());

    private IRestorableEnvironment Restorable =>
        env as IRestorableEnvironment
        ?? throw new NotSupportedException($"{name} does not implement IRestorableEnvironment: it cannot save or restore its state");

    /// <summary>A library task for environments made by a factory, checked by the environment checker.</summary>
    public static Envs.TaskInfo ToTask(Func<IEnvironment> environmentFactory, bool strictChecks = false)
    {
        ArgumentNullException.ThrowIfNull(environmentFactory);
        var factory = environmentFactory;
        var first = factory() ?? throw new ArgumentException("the environment factory returned null", nameof(environmentFactory));
        var steps = first.MaxEpisodeSteps;
        var reward = first as IRewardFunction;
        var termination = first as ITerminationFunction;
        (first as IDisposable)?.Dispose();
        if (steps <= 0)
            throw new ArgumentException($"{first.Name}: MaxEpisodeSteps must be positive, got {steps}", nameof(environmentFactory));
        Func<CoreEnv> create = () =>
            new EnvironmentAdapter(factory() ?? throw new InvalidOperationException("the environment factory returned null"));
        try
        {
            var task = Envs.Tasks.customWith(
                create,
                steps,
                reward is null ? null! : reward.Reward,
                termination is null ? null! : termination.Terminated,
                strictChecks
            );
            foreach (var warning in task.Warnings)
                Console.Error.WriteLine($"warning: environment {task.Name}: {warning}");
            return task;
        }
        catch (ArgumentException e) when (e.ParamName == "environment")
        {
            throw ArgumentErrors.For(e, nameof(environmentFactory));
        }
    }
}
