/// The ONNX export run by ONNX Runtime: the exported policy's actions equal the agent's on random observations, for
/// every algorithm.
module Maac.Tests.OnnxTests

open System
open System.IO
open Expecto
open Microsoft.ML.OnnxRuntime
open Microsoft.ML.OnnxRuntime.Tensors
open Maac
open Maac.Envs
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Tests.Support

/// Runs an ONNX model file on a batch of observations with ONNX Runtime alone.
let private runOnnx (path: string) (observations: float32[][]) =
    use session = new InferenceSession(path)
    let width = observations.[0].Length

    let input =
        DenseTensor<float32>(Memory<float32>(Array.concat observations), ReadOnlySpan<int>([| observations.Length; width |]))

    use results = session.Run([ NamedOnnxValue.CreateFromTensor(OnnxExport.InputName, input) ])
    let output = results |> Seq.find (fun r -> r.Name = OnnxExport.OutputName)
    let t = output.AsTensor<float32>()
    Array.init observations.Length (fun r -> Array.init (int t.Dimensions.[1]) (fun c -> t.[r, c]))

let tests =
    testList
        "ONNX export"
        [
            for algo in [ "maac"; "sac"; "mbpo"; "steve"; "svg1" ] do
                yield
                    test (sprintf "%s: ONNX Runtime computes the agent's deterministic actions (within float32 rounding)" algo) {
                        // InvertedPendulum's actions lie in [-3, 3]: the export must map tanh's range to the bounds. Without
                        // MuJoCo the check runs on Pendulum ([-2, 2]).
                        let env =
                            if Maac.Envs.MuJoCo.Library.isAvailable () then
                                "InvertedPendulum"
                            else
                                "Pendulum"

                        let s =
                            { Settings.forTask env algo with
                                Steps = 150
                                RandomSteps = 100
                                Hidden = [| 24; 24 |]
                                BatchSize = 32
                                UpdatesPerStep = 1
                                ModelMembers = 3
                                ModelElites = 2
                                ModelHidden = [| 16 |]
                                ModelTrainEvery = 100
                                ModelMaxEpochs = 2
                                RolloutStarts = 16
                                EvalEvery = 150
                                EvalEpisodes = 1
                            }

                        use t = new Trainer(s, Algorithms.find algo, Tasks.find env)
                        t.Run(150, ignore, ignore, Threading.CancellationToken.None)
                        use folder = new TempFolder("maac-onnx")
                        let path = Path.Combine(folder.Path, "policy.onnx")
                        t.ExportOnnx path
                        let rng = Random 5

                        let observations =
                            Array.init 64 (fun _ -> Array.init t.ObservationDim (fun _ -> float32 (rng.NextDouble() * 4.0 - 2.0)))

                        let expected = t.ActBatch(observations, true, Maac.Tensors.RandomKey.ofSeed 0L)
                        let actual = runOnnx path observations
                        // Two MLP layers and tanh in float32 on two engines with other summation orders: 1e-5 of the bounds.
                        for r in 0 .. observations.Length - 1 do
                            for c in 0 .. expected.[r].Length - 1 do
                                Expect.floatClose
                                    { absolute = 1e-5; relative = 1e-5 }
                                    (float actual.[r].[c])
                                    (float expected.[r].[c])
                                    (sprintf "row %d, action %d" r c)
                    }
            yield
                test "the export maps tanh's range onto asymmetric bounds (a saturated policy gives the upper bounds)" {
                    let policy = Maac.Nn.TanhGaussianPolicy.init (Maac.Tensors.RandomKey.ofSeed 3L) 2 2 [| 8 |]
                    // A head whose means are +20: tanh is 1 to float32 precision, so the actions are the upper bounds.
                    let head = Array.last policy.Net.Layers
                    let bias = Maac.Tensors.Tensor.ofArray [| 4 |] [| 20.0f; 20.0f; 0.0f; 0.0f |]

                    let saturated =
                        { policy with
                            Net =
                                { policy.Net with
                                    Layers =
                                        Array.append policy.Net.Layers.[.. policy.Net.Layers.Length - 2] [| { head with Bias = bias } |]
                                }
                        }

                    use folder = new TempFolder("maac-onnx-bounds")
                    let path = Path.Combine(folder.Path, "policy.onnx")
                    File.WriteAllBytes(path, OnnxExport.model saturated [| -3.0f; 0.0f |] [| 3.0f; 10.0f |])
                    let actions = runOnnx path [| [| 0.1f; -0.2f |]; [| 0.0f; 0.0f |] |]

                    for a in actions do
                        Expect.sequenceEqual a [| 3.0f; 10.0f |] "the upper bounds"
                }
        ]
