namespace Maac;

/// <summary>
/// Hooks into training, as Stable-Baselines3's callbacks: each method is called on the training thread and may stop
/// training by returning false (<see cref="Agent.Train"/> then returns normally). Implement the methods you need;
/// the others do nothing.
/// </summary>
public interface ITrainingCallback
{
    /// <summary>After every evaluation (EvaluationInterval steps); false stops training.</summary>
    bool OnEvaluation(Agent agent, EvaluationRecord evaluation) => true;

    /// <summary>After every finished training episode; false stops training.</summary>
    bool OnEpisode(Agent agent, EpisodeRecord episode) => true;

    /// <summary>After a checkpoint was written to the run folder (agents with a RunDirectory).</summary>
    void OnCheckpoint(Agent agent, string checkpointPath) { }

    /// <summary>After every environment step.</summary>
    void OnStep(Agent agent, int step) { }
}

/// <summary>Stops training once an evaluation's mean return reaches a threshold (SB3's StopTrainingOnRewardThreshold).</summary>
/// <param name="threshold">The mean evaluation return to reach.</param>
public sealed class StopOnReturnThreshold(double threshold) : ITrainingCallback
{
    /// <summary>The return that stops training.</summary>
    public double Threshold { get; } = threshold;

    /// <inheritdoc/>
    public bool OnEvaluation(Agent agent, EvaluationRecord evaluation) => evaluation.ReturnMean < Threshold;
}

/// <summary>
/// Stops training when the mean evaluation return has not improved for a number of evaluations in a row
/// (SB3's StopTrainingOnNoModelImprovement).
/// </summary>
public sealed class StopOnNoImprovement : ITrainingCallback
{
    private double best = double.NegativeInfinity;
    private int stale;

    /// <summary>A callback that stops after <paramref name="evaluations"/> evaluations without a new best return.</summary>
    public StopOnNoImprovement(int evaluations)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(evaluations);
        Evaluations = evaluations;
    }

    /// <summary>Evaluations without improvement that stop training.</summary>
    public int Evaluations { get; }

    /// <inheritdoc/>
    public bool OnEvaluation(Agent agent, EvaluationRecord evaluation)
    {
        if (evaluation.ReturnMean > best)
        {
            best = evaluation.ReturnMean;
            stale = 0;
        }
        else
            stale++;
        return stale < Evaluations;
    }
}

/// <summary>Keeps the agent with the best mean evaluation return so far in a folder (SB3's EvalCallback best_model).</summary>
/// <param name="directory">The folder; the best agent so far is saved there (replacing the previous best).</param>
public sealed class KeepBestModel(string directory) : ITrainingCallback
{
    /// <summary>The folder the best agent is saved to.</summary>
    public string Directory { get; } = directory ?? throw new ArgumentNullException(nameof(directory));

    /// <summary>The best mean evaluation return so far (negative infinity before the first evaluation).</summary>
    public double BestReturn { get; private set; } = double.NegativeInfinity;

    /// <inheritdoc/>
    public bool OnEvaluation(Agent agent, EvaluationRecord evaluation)
    {
        if (evaluation.ReturnMean > BestReturn)
        {
            BestReturn = evaluation.ReturnMean;
            agent.Save(Directory, overwrite: true);
        }
        return true;
    }
}

/// <summary>
/// Saves the agent to a folder every N environment steps (SB3's CheckpointCallback), replacing the previous save.
/// A save between evaluations holds the running episode's transitions; resuming from it starts a new episode.
/// </summary>
public sealed class CheckpointEvery : ITrainingCallback
{
    /// <summary>A callback that saves to <paramref name="directory"/> every <paramref name="steps"/> steps.</summary>
    public CheckpointEvery(int steps, string directory)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(steps);
        Steps = steps;
        Directory = directory ?? throw new ArgumentNullException(nameof(directory));
    }

    /// <summary>Steps between saves.</summary>
    public int Steps { get; }

    /// <summary>The folder saved to.</summary>
    public string Directory { get; }

    /// <inheritdoc/>
    public void OnStep(Agent agent, int step)
    {
        if (step % Steps == 0)
            agent.Save(Directory, overwrite: true);
    }
}
