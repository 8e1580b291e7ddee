namespace Maac;

/// <summary>A snapshot of training, reported through <see cref="IProgress{T}"/>. Values that do not exist yet are
/// null: no episode return before the first training episode ends, no evaluation return before the first evaluation,
/// no losses or temperature before the first gradient step, no remaining time before the learning phase has a
/// measured rate.</summary>
/// <param name="Step">Environment steps taken so far.</param>
/// <param name="TotalSteps">The training budget.</param>
/// <param name="StepsPerSecond">Environment steps per second in this call of Train.</param>
/// <param name="LastEpisodeReturn">Return of the last finished training episode.</param>
/// <param name="LastEvaluationReturn">Mean return of the last evaluation.</param>
/// <param name="CriticLoss">Critic loss of the last gradient step.</param>
/// <param name="ActorLoss">Actor loss of the last gradient step.</param>
/// <param name="Temperature">The entropy temperature α after the last gradient step.</param>
/// <param name="Remaining">Estimated time to the end of this call of Train, from the recent rate of learning steps.</param>
public sealed record TrainingProgress(
    int Step,
    int TotalSteps,
    double StepsPerSecond,
    double? LastEpisodeReturn,
    double? LastEvaluationReturn,
    float? CriticLoss,
    float? ActorLoss,
    float? Temperature,
    TimeSpan? Remaining
);

/// <summary>The returns of an evaluation over several episodes.</summary>
/// <param name="Mean">Mean return.</param>
/// <param name="StandardDeviation">Standard deviation of the returns.</param>
/// <param name="Episodes">Episodes run.</param>
/// <param name="Returns">Every episode's return, in episode order (empty for planner evaluations).</param>
/// <param name="Lengths">Every episode's length in steps, in episode order (empty for planner evaluations).</param>
public sealed record EvaluationResult(
    double Mean,
    double StandardDeviation,
    int Episodes,
    IReadOnlyList<double> Returns,
    IReadOnlyList<int> Lengths
)
{
    /// <summary>The result of episodes with these returns and lengths.</summary>
    public static EvaluationResult Of(double[] returns, int[] lengths)
    {
        var mean = returns.Average();
        var std = Math.Sqrt(returns.Average(r => (r - mean) * (r - mean)));
        return new EvaluationResult(mean, std, returns.Length, returns, lengths);
    }
}

/// <summary>A finished training episode.</summary>
/// <param name="Step">The environment step at which it ended.</param>
/// <param name="Return">Its return.</param>
/// <param name="Length">Its length in steps.</param>
/// <param name="WallSeconds">Training time of the run when it ended.</param>
public sealed record EpisodeRecord(int Step, double Return, int Length, double WallSeconds);

/// <summary>One periodic evaluation during training (a row of metrics.csv).</summary>
/// <param name="Step">Environment step of the evaluation.</param>
/// <param name="ReturnMean">Mean evaluation return.</param>
/// <param name="ReturnStandardDeviation">Standard deviation of the evaluation returns.</param>
/// <param name="CriticLoss">Critic loss of the last gradient step.</param>
/// <param name="ActorLoss">Actor loss of the last gradient step.</param>
/// <param name="Temperature">Entropy temperature α.</param>
/// <param name="ModelHoldoutError">Mean hold-out squared error of the dynamics model (NaN without one).</param>
/// <param name="WallSeconds">Training time so far.</param>
public sealed record EvaluationRecord(
    int Step,
    double ReturnMean,
    double ReturnStandardDeviation,
    float CriticLoss,
    float ActorLoss,
    float Temperature,
    float ModelHoldoutError,
    double WallSeconds
)
{
    /// <summary>The record of a metrics row (one evaluation of the library's training loop).</summary>
    internal static EvaluationRecord Of(Maac.Training.MetricsRow row) =>
        new(
            row.Step,
            row.EvalReturnMean,
            row.EvalReturnStd,
            row.CriticLoss,
            row.ActorLoss,
            row.Alpha,
            row.ModelHoldoutMse,
            row.WallSeconds
        );
}
