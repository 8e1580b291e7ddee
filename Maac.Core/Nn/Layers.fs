namespace Maac.Nn

open Maac.Tensors

/// Hidden-layer nonlinearities (data, so that a network can be saved and described).
type Activation =
    | Identity
    | Relu
    | Silu
    | Tanh

/// Applying activations.
module Activation =
    /// The element-wise operation, or None for the identity.
    let operation (a: Activation) =
        match a with
        | Identity -> None
        | Relu -> Some UnaryOp.Relu
        | Silu -> Some UnaryOp.Silu
        | Tanh -> Some UnaryOp.Tanh

    /// The activation applied element-wise.
    let apply (a: Activation) (x: Tensor) =
        match operation a with
        | Some op -> Tensor.unary op x
        | None -> x

/// Uniform initialisation U(-1/√fanIn, 1/√fanIn), the default of common deep-learning libraries.
module internal Init =
    let uniform (key: RandomKey) (shape: int[]) (fanIn: int) =
        let bound = 1.0f / sqrt (float32 (max 1 fanIn))
        Tensor.rand key shape |> Tensor.mulScalar (2.0f * bound) |> Tensor.addScalar (-bound)

/// An affine map's parameters: a weight and a bias. One record serves a single layer (W [in, out], b [out]) and an
/// ensemble of M layers evaluated as one batched product (W [M, in, out], b [M, 1, out]); the modules Linear and
/// EnsembleLinear create and apply each kind, and the products check the shapes.
type Affine =
    {
        Weight: Tensor
        Bias: Tensor
    }

    /// The record's parts, declared once (made when the type is first used, not on every call).
    static member val private Parts =
        [
            ParameterPart.tensor "weight" (fun l -> l.Weight) (fun l w -> { l with Weight = w })
            ParameterPart.tensor "bias" (fun l -> l.Bias) (fun l b -> { l with Bias = b })
        ]

    interface IParameters<Affine> with
        member l.Named = PartsOf.named Affine.Parts l
        member l.WithTensors ts = PartsOf.withTensors Affine.Parts l ts

    interface IParameterTensors with
        member l.Tensors = [| l.Weight; l.Bias |]

/// An affine layer y = x·W + b with W of shape [in, out].
type Linear = Affine

/// M independent affine layers evaluated as one batched product: W [M, in, out], b [M, 1, out].
type EnsembleLinear = Affine

/// Creating and applying affine layers.
module Linear =
    /// A layer from inDim to outDim inputs, initialised from key.
    let init (key: RandomKey) (inDim: int) (outDim: int) =
        let kw, kb = RandomKey.split2 key
        { Weight = Init.uniform kw [| inDim; outDim |] inDim; Bias = Init.uniform kb [| outDim |] inDim }

    /// x [N, in] → [N, out].
    let forward (layer: Linear) (x: Tensor) = Tensor.linear x layer.Weight layer.Bias

    /// activation(x·W + b) in one fused operation.
    let forwardActivated (activation: Activation) (layer: Linear) (x: Tensor) =
        match Activation.operation activation with
        | Some op -> Tensor.linearActivation op x layer.Weight layer.Bias
        | None -> forward layer x

/// Names and rebuilds a stack of layers that each implement IParameters.
module internal Stack =
    let named (layers: 'L[] when 'L :> IParameters<'L>) =
        layers |> Array.mapi (fun i l -> Parameters.prefixed (sprintf "layer%d" i) l.Named) |> Array.concat

    let rebuild (layers: 'L[] when 'L :> IParameters<'L>) (ts: Tensor[]) =
        let mutable offset = 0
        layers |> Array.map (fun l -> Parameters.take l ts &offset)

    /// Applies the layers in turn with the hidden activation fused into each but the last.
    let forward (apply: Activation -> 'L -> Tensor -> Tensor) (layers: 'L[]) (hidden: Activation) (x: Tensor) =
        let last = layers.Length - 1

        layers
        |> Array.fold (fun (i, h) l -> i + 1, apply (if i < last then hidden else Identity) l h) (0, x)
        |> snd

/// Affine layers with an activation between them (none after the last): a multilayer perceptron (Mlp, of Linear
/// layers) or an ensemble of M perceptrons of one architecture evaluated together (EnsembleMlp, of EnsembleLinear).
type LayerStack =
    {
        Layers: Affine[]
        Hidden: Activation
    }

    interface IParameters<LayerStack> with
        member m.Named = Stack.named m.Layers
        member m.WithTensors ts = { m with Layers = Stack.rebuild m.Layers ts }

    interface IParameterTensors with
        member m.Tensors = m.Layers |> Array.collect Parameters.tensors

/// A multilayer perceptron: affine layers with an activation between them (none after the last).
type Mlp = LayerStack

/// An ensemble of M MLPs of the same architecture, evaluated together.
type EnsembleMlp = LayerStack

/// Creating and applying MLPs.
module Mlp =
    /// An MLP through the given layer sizes, for example [| 17; 256; 256; 6 |].
    let init (key: RandomKey) (sizes: int[]) (hidden: Activation) =
        if sizes.Length < 2 then
            invalidArg "sizes" (sprintf "an MLP needs at least input and output sizes, got %s" (Shape.show sizes))

        let keys = RandomKey.split (sizes.Length - 1) key

        {
            Layers = Array.init (sizes.Length - 1) (fun i -> Linear.init keys.[i] sizes.[i] sizes.[i + 1])
            Hidden = hidden
        }

    /// x [N, in] → [N, out].
    let forward (m: Mlp) (x: Tensor) = Stack.forward Linear.forwardActivated m.Layers m.Hidden x

/// Creating and applying ensemble layers.
module EnsembleLinear =
    /// members independent layers from inDim to outDim.
    let init (key: RandomKey) (members: int) (inDim: int) (outDim: int) =
        let kw, kb = RandomKey.split2 key

        {
            Weight = Init.uniform kw [| members; inDim; outDim |] inDim
            Bias = Init.uniform kb [| members; 1; outDim |] inDim
        }

    /// x [M, N, in] → [M, N, out]: member m sees only its own rows x[m].
    let forward (layer: EnsembleLinear) (x: Tensor) = Tensor.baddbmm layer.Bias x layer.Weight

    /// activation(forward layer x) in one fused operation.
    let forwardActivated (activation: Activation) (layer: EnsembleLinear) (x: Tensor) =
        match Activation.operation activation with
        | Some op -> Tensor.baddbmmActivation op layer.Bias x layer.Weight
        | None -> forward layer x

/// Creating and applying ensemble MLPs.
module EnsembleMlp =
    /// members MLPs through the given sizes.
    let init (key: RandomKey) (members: int) (sizes: int[]) (hidden: Activation) =
        if sizes.Length < 2 then
            invalidArg "sizes" (sprintf "an MLP needs at least input and output sizes, got %s" (Shape.show sizes))

        let keys = RandomKey.split (sizes.Length - 1) key

        {
            Layers = Array.init (sizes.Length - 1) (fun i -> EnsembleLinear.init keys.[i] members sizes.[i] sizes.[i + 1])
            Hidden = hidden
        }

    /// The number of members.
    let members (m: EnsembleMlp) = m.Layers.[0].Weight.Primal.Shape.[0]

    /// x [M, N, in] → [M, N, out].
    let forward (m: EnsembleMlp) (x: Tensor) = Stack.forward EnsembleLinear.forwardActivated m.Layers m.Hidden x
