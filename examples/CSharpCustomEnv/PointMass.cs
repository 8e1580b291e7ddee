using Maac;
using Maac.Tensors;

/// <summary>
/// A point mass on a line pushed towards the origin: position and velocity, force in [−1, 1],
/// semi-implicit Euler with dt = 0.1, reward −(x² + 0.1·v² + 0.01·u²), 50 steps per episode.
/// It also gives its reward as a tensor function, so MAAC's model rollouts use the true reward.
/// </summary>
sealed class PointMass : IEnvironment, IRewardFunction
{
    const float Dt = 0.1f;
    Random random = new(0);
    float position,
        velocity;

    public string Name => "PointMass";
    public BoxSpace ObservationSpace { get; } = new([-10f, -10f], [10f, 10f]);
    public BoxSpace ActionSpace { get; } = BoxSpace.Symmetric(1, 1f);
    public int MaxEpisodeSteps => 50;

    public float[] Reset(long? seed)
    {
        if (seed is long s)
            random = new Random((int)s);
        position = (float)(random.NextDouble() * 4 - 2);
        velocity = 0f;
        return [position, velocity];
    }

    public StepResult Step(float[] action)
    {
        var u = action[0]; // checked and clipped into ActionSpace by the library
        velocity = Math.Clamp(velocity + Dt * u, -10f, 10f);
        position = Math.Clamp(position + Dt * velocity, -10f, 10f);
        var reward = -(position * position + 0.1f * velocity * velocity + 0.01f * u * u);
        return new StepResult([position, velocity], reward, Terminated: false, Truncated: false);
    }

    // The same reward on batches: observation [N, 2], action [N, 1], next observation [N, 2] → [N].
    public Tensor Reward(Tensor observation, Tensor action, Tensor nextObservation) =>
        -(nextObservation.Column(0).Square() + 0.1f * nextObservation.Column(1).Square() + 0.01f * action.Column(0).Square());
}
