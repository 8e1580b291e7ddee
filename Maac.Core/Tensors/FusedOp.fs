namespace Maac.Tensors

open System.Collections.Generic

/// The generic operations a fused operation's reference composition is written in. Implemented for raw tensors
/// (`RawOps`: any backend's generic operations, nothing recorded) and for differentiable tensors (`Tensor.ops`),
/// so that one composition both runs where a backend has no kernel and, differentiated, defines the gradient of
/// an operation that gives none.
type IOps<'T> =
    /// The dimensions of x.
    abstract Shape: x: 'T -> int[]
    /// A tensor of the given shape, on like's device, with every element equal to value.
    abstract Full: like: 'T * shape: int[] * value: float32 -> 'T
    /// op(x) element-wise.
    abstract Unary: op: UnaryOp * x: 'T -> 'T
    /// op(x, constant) element-wise.
    abstract Scalar: op: ScalarOp * x: 'T -> 'T
    /// op(a, b) with broadcasting.
    abstract Binary: op: BinaryOp * a: 'T * b: 'T -> 'T
    /// The sum over one axis.
    abstract SumAxis: x: 'T * axis: int * keepDim: bool -> 'T
    /// The range [start, start + length) of one axis.
    abstract Slice: x: 'T * axis: int * start: int * length: int -> 'T
    /// Tensors joined along an axis.
    abstract Concat: xs: 'T[] * axis: int -> 'T
    /// The same values under another shape.
    abstract Reshape: x: 'T * shape: int[] -> 'T
    /// op(a)·op(b) (+ bias), as IBackend.MatMul.
    abstract MatMul: transA: bool * transB: bool * a: 'T * b: 'T * bias: 'T voption -> 'T

/// The generic operations of one backend, on raw tensors.
[<Sealed>]
type RawOps(backend: IBackend) =
    /// The backend the operations run on.
    member _.Backend = backend

    interface IOps<RawTensor> with
        member _.Shape x = x.Shape
        member _.Full(_, shape, value) = backend.Full(shape, value)
        member _.Unary(op, x) = backend.Unary(op, x)
        member _.Scalar(op, x) = backend.Scalar(op, x)
        member _.Binary(op, a, b) = backend.Binary(op, a, b)
        member _.SumAxis(x, axis, keepDim) = backend.SumAxis(x, axis, keepDim)
        member _.Slice(x, axis, start, length) = backend.Slice(x, axis, start, length)
        member _.Concat(xs, axis) = backend.Concat(xs, axis)
        member _.Reshape(x, shape) = backend.Reshape(x, shape)

        member _.MatMul(transA, transB, a, b, bias) = backend.MatMul(transA, transB, a, b, (ValueOption.toObj bias))

/// How the gradient of a fused operation is found.
type FusedGradient =
    /// The operation's Backward, which may itself run fused operations (gradient kernels).
    | FusedBackward
    /// Differentiating its reference composition: when an input is tracked, the composition runs on
    /// differentiable tensors instead of the kernel.
    | DifferentiateReference
    /// Its outputs are constants to every gradient computation (an optimiser's update, for example).
    | NotDifferentiated

/// A fused operation, defined once: its name (by which backends supply kernels and the counting backend counts it),
/// its inputs, the shapes of its outputs, its reference composition from generic operations, and how it is
/// differentiated. 'A is the operation's attributes (the numbers and flags that are not tensors). A backend may
/// supply a kernel for it (IFusedKernels); where none does, the reference composition runs, so a new backend
/// computes every fused operation from the first day.
[<AbstractClass>]
type FusedOp<'A>(name: string, inputNames: string[]) =
    /// The name kernels are registered and counted under.
    member _.Name = name
    /// The inputs, in order (for error messages).
    member _.InputNames = inputNames
    /// How many inputs may be given: all of them unless overridden (trailing inputs may then be optional).
    abstract MinInputs: int
    default _.MinInputs = inputNames.Length
    /// Checks the input shapes, raising ShapeException naming the operation and the offending input, and returns
    /// the output shapes.
    abstract OutputShapes: attributes: 'A * inputs: int[][] -> int[][]
    /// The operation as a composition of generic operations (the definition kernels are tested against).
    abstract Reference<'T> : ops: IOps<'T> * attributes: 'A * inputs: 'T[] -> 'T[]
    /// How the operation is differentiated (DifferentiateReference unless overridden).
    abstract Gradient: FusedGradient
    default _.Gradient = DifferentiateReference

    /// For FusedBackward: the inputs' gradients given the inputs, the outputs and one gradient per output (null
    /// for an output nothing differentiated depended on); null where `need` is false.
    abstract Backward:
        backend: IBackend * attributes: 'A * inputs: RawTensor[] * outputs: RawTensor[] * outputGrads: RawTensor[] * need: bool[] ->
            RawTensor[]

    default _.Backward(_, _, _, _, _, _) =
        invalidOp (sprintf "the fused operation %s has no Backward; its Gradient says how it is differentiated" name)

    /// The matrix product inside the operation, for the given input shapes (none for an operation without one):
    /// what the counting backend adds to its product total and lists by shape.
    abstract Product: attributes: 'A * inputs: int[][] -> ProductShape voption
    default _.Product(_, _) = ValueNone

    override _.ToString() = name

/// A backend's kernel for a fused operation: attributes, inputs (checked) and the output shapes → the outputs.
type FusedKernel<'A> = 'A -> RawTensor[] -> int[][] -> RawTensor[]

/// One kernel for one fused operation, as a backend lists its kernels.
[<Sealed>]
type FusedKernelEntry private (op: obj, kernel: obj) =
    member internal _.Op = op
    member internal _.Kernel = kernel

    /// The entry for op's kernel.
    static member Create(op: FusedOp<'A>, kernel: FusedKernel<'A>) = FusedKernelEntry(box op, box kernel)

/// A backend that supplies kernels for some fused operations (a backend without one runs every fused operation
/// as its reference composition).
type IFusedKernels =
    /// The backend's kernel for op, if it has one.
    abstract TryKernel<'A> : op: FusedOp<'A> -> FusedKernel<'A> voption

/// The kernels a backend supplies, found by operation.
[<Sealed>]
type FusedKernelTable(entries: FusedKernelEntry seq) =
    let table = Dictionary<obj, obj>(HashIdentity.Reference)

    do
        for e in entries do
            if table.ContainsKey e.Op then
                invalidArg "entries" (sprintf "two kernels are listed for the fused operation %O" e.Op)

            table.[e.Op] <- e.Kernel

    /// The kernel for op, if listed.
    member _.TryFind(op: FusedOp<'A>) : FusedKernel<'A> voption =
        match table.TryGetValue(box op) with
        | true, k -> ValueSome(k :?> FusedKernel<'A>)
        | _ -> ValueNone

    /// How many operations have kernels.
    member _.Count = table.Count

/// Running fused operations on raw tensors.
module Fused =
    /// Checks the number of inputs and their shapes, and returns the output shapes.
    let outputShapes (op: FusedOp<'A>) (attributes: 'A) (inputs: RawTensor[]) =
        let names = op.InputNames

        if inputs.Length < op.MinInputs || inputs.Length > names.Length then
            Shape.fail
                op.Name
                (sprintf
                    "takes %s inputs (%s), got %d"
                    (if op.MinInputs = names.Length then
                         string names.Length
                     else
                         sprintf "%d to %d" op.MinInputs names.Length)
                    (String.concat ", " names)
                    inputs.Length)

        inputs
        |> Array.iteri (fun i x ->
            if isNull x then
                Shape.fail op.Name (sprintf "its input %s is missing (null)" names.[i]))

        op.OutputShapes(attributes, inputs |> Array.map (fun x -> x.Shape))

    /// The backend's kernel for op, if it has one.
    let kernelOf (backend: IBackend) (op: FusedOp<'A>) =
        match backend with
        | :? IFusedKernels as k -> k.TryKernel op
        | _ -> ValueNone

    /// op's reference composition on backend's generic operations (inputs checked).
    let reference (backend: IBackend) (op: FusedOp<'A>) (attributes: 'A) (inputs: RawTensor[]) =
        outputShapes op attributes inputs |> ignore
        op.Reference(RawOps backend, attributes, inputs)

    /// Runs op on backend: the backend's kernel when it has one, otherwise the reference composition.
    let run (backend: IBackend) (op: FusedOp<'A>) (attributes: 'A) (inputs: RawTensor[]) =
        let shapes = outputShapes op attributes inputs

        match kernelOf backend op with
        | ValueSome kernel -> kernel attributes inputs shapes
        | ValueNone -> op.Reference(RawOps backend, attributes, inputs)
