using Maac.Tensors;

namespace Maac;

/// <summary>What <see cref="IEnvironment.Step"/> returns: Gymnasium's step values.</summary>
/// <param name="Observation">The next observation (size of the observation space).</param>
/// <param name="Reward">The reward of the transition.</param>
/// <param name="Terminated">The task reached a terminal state: nothing is to be gained after it.</param>
/// <param name="Truncated">The episode was cut off (for example by a time limit) in a state that still has a value.</param>
/// <param name="Info">Anything else the step reports (Gymnasium's info dictionary); optional.</param>
public sealed record StepResult(
    float[] Observation,
    double Reward,
    bool Terminated,
    bool Truncated,
    IReadOnlyDictionary<string, object>? Info = null
);

/// <summary>
/// An environment a C# class implements to be trained on exactly like a built-in task. Observations and
/// actions are float vectors of the spaces' sizes; actions reaching <see cref="Step"/> have been checked
/// (size, finiteness) and clipped into <see cref="ActionSpace"/> by the library. Episodes are cut after
/// <see cref="MaxEpisodeSteps"/> steps. An environment that also holds native resources may implement
/// <see cref="IDisposable"/>; the library disposes every instance it made.
/// </summary>
/// <remarks>Implement <see cref="IRewardFunction"/> (and <see cref="ITerminationFunction"/>) as well to let
/// model rollouts use the true reward; otherwise the dynamics model learns the reward.</remarks>
public interface IEnvironment
{
    /// <summary>The task's name, used in messages and in saved runs.</summary>
    string Name { get; }

    /// <summary>The observation space.</summary>
    BoxSpace ObservationSpace { get; }

    /// <summary>The action space; its bounds must be finite.</summary>
    BoxSpace ActionSpace { get; }

    /// <summary>Steps after which an episode is truncated.</summary>
    int MaxEpisodeSteps { get; }

    /// <summary>Starts an episode and returns its first observation. With a seed, the episode's randomness must be fixed by it.</summary>
    float[] Reset(long? seed);

    /// <summary>Advances the environment by one action.</summary>
    StepResult Step(float[] action);

    /// <summary>What the last <see cref="Reset"/> reports besides the observation (Gymnasium's reset info); optional.</summary>
    IReadOnlyDictionary<string, object>? ResetInfo => null;
}

/// <summary>
/// An environment that can save the state of its running episode and continue it later, exactly. Implement it beside
/// <see cref="IEnvironment"/> so that a run stopped between evaluations (cancellation, a SIGTERM, <c>Save</c>)
/// resumes bit for bit: its checkpoint then holds the running episode with this state. Without it, a stop cuts the
/// running episode and the resumed run starts a new one (a valid continuation, but not the uninterrupted run's).
/// </summary>
public interface IRestorableEnvironment
{
    /// <summary>
    /// The state of the running episode (everything the next steps depend on: positions, velocities, step counters,
    /// random number state) as named arrays of finite numbers, always the same names in the same order. Called before
    /// the first <see cref="IEnvironment.Reset"/> too.
    /// </summary>
    IReadOnlyList<KeyValuePair<string, double[]>> SaveState();

    /// <summary>
    /// Returns to a state <see cref="SaveState"/> returned from an environment of the same task, so that the same
    /// actions then give the same steps. Check the whole state first and throw an <see cref="ArgumentException"/>
    /// naming what does not fit before changing anything: a checkpoint holding such a state is then refused and
    /// nothing is loaded.
    /// </summary>
    void RestoreState(IReadOnlyList<KeyValuePair<string, double[]>> state);
}

/// <summary>
/// A task's reward as a differentiable function of batched tensors, for model rollouts: observation
/// [N, o], action [N, a] (in the environment's action space), next observation [N, o] → reward [N].
/// Write it with the operators of <see cref="Tensor"/> and the methods of <see cref="TensorMath"/>.
/// </summary>
public interface IRewardFunction
{
    /// <summary>The rewards of a batch of transitions, shape [N].</summary>
    Tensor Reward(Tensor observation, Tensor action, Tensor nextObservation);
}

/// <summary>A task's termination as a function of batched tensors: 1 where the next state is terminal, 0 elsewhere ([N]).</summary>
public interface ITerminationFunction
{
    /// <summary>1 for terminal transitions, 0 otherwise, shape [N].</summary>
    Tensor Terminated(Tensor observation, Tensor action, Tensor nextObservation);
}
