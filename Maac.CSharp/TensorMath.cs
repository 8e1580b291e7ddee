using Maac.Tensors;
using Ops = Maac.Tensors.TensorModule;

namespace Maac;

/// <summary>
/// Differentiable tensor functions for writing reward and termination functions in C#. Every result
/// carries gradients back to its inputs, so model rollouts can differentiate through a C# reward.
/// Arithmetic (+, −, *, /, unary −, with tensors or floats, broadcasting) comes from <see cref="Tensor"/>'s operators.
/// </summary>
public static class TensorMath
{
    /// <summary>Column <paramref name="index"/> of a [N, d] tensor, as a [N] tensor.</summary>
    /// <exception cref="ArgumentException">The tensor is not two-dimensional.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The column is outside [0, d).</exception>
    public static Tensor Column(this Tensor x, int index)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.Rank != 2)
            throw new ArgumentException($"Column needs a [N, d] tensor, got shape [{string.Join(", ", x.Shape)}]", nameof(x));
        var columns = x.Shape[1];
        if (index < 0 || index >= columns)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"the tensor has {columns} columns");
        return Ops.squeeze(1, Ops.slice(1, index, 1, x));
    }

    /// <summary>The sum over one axis (that axis removed).</summary>
    public static Tensor Sum(this Tensor x, int axis) => Ops.sumAxis(axis, false, x);

    /// <summary>The mean over one axis (that axis removed).</summary>
    public static Tensor Mean(this Tensor x, int axis) => Ops.meanAxis(axis, false, x);

    /// <summary>x² elementwise.</summary>
    public static Tensor Square(this Tensor x) => Ops.square(x);

    /// <summary>√x elementwise.</summary>
    public static Tensor Sqrt(this Tensor x) => Ops.sqrt(x);

    /// <summary>|x| elementwise.</summary>
    public static Tensor Abs(this Tensor x) => Ops.abs(x);

    /// <summary>eˣ elementwise.</summary>
    public static Tensor Exp(this Tensor x) => Ops.exp(x);

    /// <summary>ln x elementwise.</summary>
    public static Tensor Log(this Tensor x) => Ops.log(x);

    /// <summary>tanh x elementwise.</summary>
    public static Tensor Tanh(this Tensor x) => Ops.tanh(x);

    /// <summary>sin x elementwise.</summary>
    public static Tensor Sin(this Tensor x) => Ops.sin(x);

    /// <summary>cos x elementwise.</summary>
    public static Tensor Cos(this Tensor x) => Ops.cos(x);

    /// <summary>x clamped into [<paramref name="low"/>, <paramref name="high"/>] (zero gradient outside).</summary>
    public static Tensor Clamp(this Tensor x, float low, float high) => Ops.clamp(low, high, x);

    /// <summary>The elementwise minimum of two tensors (broadcasting).</summary>
    public static Tensor Minimum(this Tensor x, Tensor y) => Ops.minimum(x, y);

    /// <summary>The elementwise maximum of two tensors (broadcasting).</summary>
    public static Tensor Maximum(this Tensor x, Tensor y) => Ops.maximum(x, y);

    /// <summary>1 where x &gt; y, else 0 (not differentiable; for termination functions).</summary>
    public static Tensor Greater(this Tensor x, Tensor y) => Ops.greater(x, y);

    /// <summary>A tensor of this shape filled with one value.</summary>
    public static Tensor Full(int[] shape, float value) => Ops.full(shape, value);

    /// <summary>A tensor from values in row-major order.</summary>
    public static Tensor FromArray(int[] shape, float[] values) => Ops.ofArray(shape, values);
}
