// A trained policy deployed from its .onnx file with ONNX Runtime alone: nothing here uses Maac.
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

/// <summary>A policy exported by Maac (input "observation" [batch, o], output "action" [batch, a]), run by ONNX Runtime.</summary>
public sealed class OnnxPolicy(string path) : IDisposable
{
    private readonly InferenceSession session = new(path);

    /// <summary>The action for one observation.</summary>
    public float[] Act(float[] observation)
    {
        var input = new DenseTensor<float>(observation, [1, observation.Length]);
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("observation", input)]);
        return results.First(r => r.Name == "action").AsTensor<float>().ToArray();
    }

    /// <inheritdoc/>
    public void Dispose() => session.Dispose();
}
