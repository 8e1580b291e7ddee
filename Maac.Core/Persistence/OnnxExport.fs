namespace Maac.Persistence

open Maac.Algorithms

open System
open System.IO
open Maac.Nn

/// Exports a trained policy as an ONNX model (opset 13) that runs without Maac: the deterministic policy, from
/// observations [batch, o] to actions [batch, a] in the task's action space — the MLP's layers (Gemm, ReLU), the mean
/// half of its head, tanh, and the affine map from [−1, 1] to the action bounds. ONNX Runtime (or any ONNX runtime)
/// computes the same actions as Agent.act up to float32 rounding.
module OnnxExport =
    [<Literal>]
    let InputName = "observation"

    [<Literal>]
    let OutputName = "action"

    [<Literal>]
    let private FloatType = 1L

    let private tensor (name: string) (dims: int[]) (values: float32[]) =
        let raw = Array.zeroCreate<byte>(4 * values.Length)
        Buffer.BlockCopy(values, 0, raw, 0, raw.Length)

        Protobuf.message
            5
            [
                for d in dims do
                    yield Protobuf.int 1 (int64 d)
                yield Protobuf.int 2 FloatType
                yield Protobuf.string 8 name
                yield Protobuf.bytes 9 raw
            ]

    let private node (op: string) (inputs: string list) (output: string) =
        Protobuf.message
            1
            [
                for i in inputs do
                    yield Protobuf.string 1 i
                yield Protobuf.string 2 output
                yield Protobuf.string 3 (output + "_" + op)
                yield Protobuf.string 4 op
            ]

    /// A float tensor value [batch, width] with a symbolic batch dimension.
    let private valueInfo (field: int) (name: string) (width: int) =
        Protobuf.message
            field
            [
                Protobuf.string 1 name
                Protobuf.message
                    2
                    [
                        Protobuf.message
                            1
                            [
                                Protobuf.int 1 FloatType
                                Protobuf.message
                                    2
                                    [
                                        Protobuf.message 1 [ Protobuf.string 2 "batch" ]
                                        Protobuf.message 1 [ Protobuf.int 1 (int64 width) ]
                                    ]
                            ]
                    ]
            ]

    /// The ONNX model's bytes for a policy and the action space's bounds.
    let model (policy: TanhGaussianPolicy) (low: float32[]) (high: float32[]) =
        let layers = policy.Net.Layers
        let actDim = TanhGaussianPolicy.actionDim policy

        if low.Length <> actDim || high.Length <> actDim then
            invalidArg "low" (sprintf "the policy has %d action dimensions, the bounds %d and %d" actDim low.Length high.Length)

        let obsDim = layers.[0].Weight.Shape.[0]
        let last = layers.Length - 1

        let initializers, nodes =
            layers
            |> Array.mapi (fun i layer ->
                let w, b = layer.Weight.ToArray(), layer.Bias.ToArray()
                let rows, cols = layer.Weight.Shape.[0], layer.Weight.Shape.[1]
                // The head's first half is the mean; its second (the log standard deviations) is not needed.
                let keep = if i = last then actDim else cols
                let weight = Array.init (rows * keep) (fun k -> w.[(k / keep) * cols + k % keep])
                let input = if i = 0 then InputName else sprintf "hidden%d" (i - 1)
                let product = if i = last then "mean" else sprintf "linear%d" i

                [
                    tensor (sprintf "layer%d.weight" i) [| rows; keep |] weight
                    tensor (sprintf "layer%d.bias" i) [| keep |] b.[.. keep - 1]
                ],
                [
                    yield node "Gemm" [ input; sprintf "layer%d.weight" i; sprintf "layer%d.bias" i ] product
                    if i < last then
                        yield node "Relu" [ product ] (sprintf "hidden%d" i)
                ])
            |> Array.unzip

        // Box.fromUnit's expression, low + (a + 1)·½·(high − low), as nodes: ((a + 1)·½)·(high − low) + low.
        let range = Array.init actDim (fun j -> high.[j] - low.[j])

        let graph =
            [
                yield! List.concat nodes
                yield node "Tanh" [ "mean" ] "squashed"
                yield node "Add" [ "squashed"; "one" ] "shifted"
                yield node "Mul" [ "shifted"; "half" ] "unit"
                yield node "Mul" [ "unit"; "range" ] "scaled"
                yield node "Add" [ "scaled"; "low" ] OutputName
                yield Protobuf.string 2 "maac_policy"
                yield! List.concat initializers
                yield tensor "one" [| 1 |] [| 1.0f |]
                yield tensor "half" [| 1 |] [| 0.5f |]
                yield tensor "range" [| actDim |] range
                yield tensor "low" [| actDim |] low
                yield valueInfo 11 InputName obsDim
                yield valueInfo 12 OutputName actDim
            ]

        Protobuf.encode
            [
                Protobuf.int 1 8L // IR version 8
                Protobuf.string 2 "Maac"
                Protobuf.message 7 graph
                Protobuf.message 8 [ Protobuf.string 1 ""; Protobuf.int 2 13L ]
            ]

    /// Writes the policy's ONNX model to a file (written whole, then renamed).
    let save (path: string) (policy: TanhGaussianPolicy) (low: float32[]) (high: float32[]) =
        let bytes = model policy low high
        let full = Path.GetFullPath path
        Directory.CreateDirectory(Path.GetDirectoryName full) |> ignore
        let temp = full + ".tmp"
        File.WriteAllBytes(temp, bytes)
        File.Move(temp, full, true)
