namespace Maac;

/// <summary>A box in Rⁿ: a lower and an upper bound per dimension (observation bounds may be infinite).</summary>
public sealed class BoxSpace
{
    private readonly float[] low;
    private readonly float[] high;

    /// <summary>Creates a box from its bounds.</summary>
    /// <param name="low">Lower bound of each dimension.</param>
    /// <param name="high">Upper bound of each dimension (same length as <paramref name="low"/>).</param>
    /// <exception cref="ArgumentException">The lengths differ, the box is empty, or a bound is NaN or above its upper bound.</exception>
    public BoxSpace(float[] low, float[] high)
    {
        ArgumentNullException.ThrowIfNull(low);
        ArgumentNullException.ThrowIfNull(high);
        if (low.Length == 0)
            throw new ArgumentException("a box needs at least one dimension", nameof(low));
        if (low.Length != high.Length)
            throw new ArgumentException($"the bounds have lengths {low.Length} and {high.Length}", nameof(high));
        for (var i = 0; i < low.Length; i++)
            if (float.IsNaN(low[i]) || float.IsNaN(high[i]) || low[i] > high[i])
                throw new ArgumentException($"dimension {i} has bounds [{low[i]}, {high[i]}]", nameof(low));
        this.low = (float[])low.Clone();
        this.high = (float[])high.Clone();
    }

    /// <summary>[−bound, bound] in every one of <paramref name="dimension"/> dimensions.</summary>
    public static BoxSpace Symmetric(int dimension, float bound)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(dimension);
        return new BoxSpace(Enumerable.Repeat(-bound, dimension).ToArray(), Enumerable.Repeat(bound, dimension).ToArray());
    }

    /// <summary>(−∞, ∞) in every one of <paramref name="dimension"/> dimensions.</summary>
    public static BoxSpace Unbounded(int dimension) => Symmetric(dimension, float.PositiveInfinity);

    /// <summary>The number of dimensions.</summary>
    public int Dimension => low.Length;

    /// <summary>The lower bounds.</summary>
    public IReadOnlyList<float> Low => low;

    /// <summary>The upper bounds.</summary>
    public IReadOnlyList<float> High => high;

    internal Envs.Box ToCore() => Envs.BoxModule.create(low, high);

    internal static BoxSpace FromCore(Envs.Box box) => new(box.Low, box.High);
}
