// Train a policy with Maac, export it to ONNX, and run it from the .onnx file with ONNX Runtime alone (OnnxPolicy.cs):
// the way a trained policy is deployed into a game engine or a robot controller that does not carry Maac.
// Usage: dotnet run --project examples/OnnxDeployment -c Release [-- steps]
using Maac;

var steps = args.Length > 0 ? int.Parse(args[0]) : 5000;
var options = SacOptions.ForTask("Pendulum");
options.TotalSteps = steps;
using var agent = new SacAgent("Pendulum", options);
agent.Train(steps);
var path = Path.Combine(Path.GetTempPath(), $"maac-pendulum-{Environment.ProcessId}.onnx");
agent.ExportOnnx(path);
Console.WriteLine($"exported the policy after {agent.Step} steps to {path} ({new FileInfo(path).Length} bytes)");

// The deployed side: only the .onnx file and ONNX Runtime.
using var deployed = new OnnxPolicy(path);
var largest = 0f;
foreach (var angle in new[] { 0.0, 0.5, 1.5, 3.0, -2.0 })
{
    float[] observation = [(float)Math.Cos(angle), (float)Math.Sin(angle), 0.3f];
    var fromOnnx = deployed.Act(observation);
    var fromAgent = agent.Act(observation);
    largest = Math.Max(largest, Math.Abs(fromOnnx[0] - fromAgent[0]));
    Console.WriteLine($"angle {angle, 5:F1}: torque {fromOnnx[0], 8:F4} from the .onnx file, {fromAgent[0], 8:F4} from the agent");
}
if (largest > 1e-4f)
    throw new InvalidOperationException($"the ONNX policy differs from the agent by {largest}");
Console.WriteLine($"largest difference {largest:G3}: the deployed policy is the trained one");
File.Delete(path);
