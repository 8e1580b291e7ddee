namespace Maac.Tensors

open System

/// Where a tensor's numbers live.
[<RequireQualifiedAccess>]
type Device =
    | Cpu
    | Cuda of index: int

    override d.ToString() =
        match d with
        | Cpu -> "cpu"
        | Cuda i -> sprintf "cuda:%d" i

/// Element-wise functions of one tensor. Each has a fused derivative kernel in every backend.
type UnaryOp =
    | Neg
    | Exp
    | Log
    | Sqrt
    | Abs
    | Sign
    | Square
    | Reciprocal
    | Relu
    | Silu
    | Tanh
    | Sigmoid
    | Softplus
    | Sin
    | Cos

/// Element-wise functions of one tensor and a constant.
type ScalarOp =
    | AddScalar of float32
    | MulScalar of float32
    | PowScalar of float32
    | Clamp of lo: float32 * hi: float32

/// Element-wise functions of two tensors, with NumPy broadcasting.
/// Comparisons give 1 where true and 0 where false (they are not differentiable).
type BinaryOp =
    | Add
    | Sub
    | Mul
    | Div
    | Pow
    /// atan2(a, b): the angle of the point (b, a).
    | Atan2
    | Maximum
    | Minimum
    | Greater
    | GreaterEqual
    | Equal

/// Names of binary operations, for error messages (no reflection on hot paths).
module BinaryOp =
    let name (op: BinaryOp) =
        match op with
        | Add -> "add"
        | Sub -> "sub"
        | Mul -> "mul"
        | Div -> "div"
        | Pow -> "pow"
        | Atan2 -> "atan2"
        | Maximum -> "maximum"
        | Minimum -> "minimum"
        | Greater -> "greater"
        | GreaterEqual -> "greaterEqual"
        | Equal -> "equal"

/// Distributions a backend draws from, as a pure function of a RandomKey and element index.
type Distribution =
    | Uniform
    | Normal

/// An immutable block of float32 numbers in row-major order, owned by one backend.
/// Raw tensors know nothing of differentiation; Maac.Tensors.Tensor wraps them.
[<AbstractClass; AllowNullLiteral>]
type RawTensor(shape: int[]) =
    /// The dimensions, outermost first.
    member _.Shape = shape
    /// The number of elements.
    member _.Numel = Shape.numel shape
    /// The backend that owns the storage.
    abstract Backend: IBackend
    /// Copies the values to a new host array.
    abstract ToArray: unit -> float32[]

/// The raw-kernel interface that each device implements: generic operations only. The differentiation layer calls
/// only this, so a new device is a new implementation of IBackend and nothing else; fused operations (FusedOp) run as
/// compositions of these until the backend also supplies kernels for them (IFusedKernels).
/// Inputs are never modified; every operation returns a new tensor (storage may be shared by Reshape).
and IBackend =
    /// The device this backend computes on.
    abstract Device: Device
    /// A tensor holding a copy of the given host values.
    abstract OfArray: values: float32[] * shape: int[] -> RawTensor
    /// A tensor with every element equal to value.
    abstract Full: shape: int[] * value: float32 -> RawTensor
    /// Random values: element i is a pure function of (key, i).
    abstract Random: Distribution * RandomKey * shape: int[] -> RawTensor
    /// y = op(x).
    abstract Unary: UnaryOp * x: RawTensor -> RawTensor
    /// dL/dx given x, y = op(x) and g = dL/dy.
    abstract UnaryGrad: UnaryOp * x: RawTensor * y: RawTensor * g: RawTensor -> RawTensor
    /// y = op(x, constant).
    abstract Scalar: ScalarOp * x: RawTensor -> RawTensor
    /// dL/dx given x and g = dL/dy.
    abstract ScalarGrad: ScalarOp * x: RawTensor * g: RawTensor -> RawTensor
    /// z = op(a, b), broadcast.
    abstract Binary: BinaryOp * a: RawTensor * b: RawTensor -> RawTensor
    /// Sum over one axis.
    abstract SumAxis: x: RawTensor * axis: int * keepDim: bool -> RawTensor
    /// Maximum over one axis.
    abstract MaxAxis: x: RawTensor * axis: int * keepDim: bool -> RawTensor
    /// Sum of all elements, as a tensor of shape [||].
    abstract SumAll: x: RawTensor -> RawTensor
    /// Matrix product op(a)·op(b) (+ bias broadcast over rows), where op transposes the last two
    /// dimensions when asked. Rank 2, or rank 3 with a leading batch dimension (batched product).
    /// bias may be null; otherwise it has n elements (shared) or batch·n elements (one row per batch).
    abstract MatMul: transA: bool * transB: bool * a: RawTensor * b: RawTensor * bias: RawTensor -> RawTensor

    /// The same values under another shape with the same number of elements.
    abstract Reshape: x: RawTensor * shape: int[] -> RawTensor
    /// Dimensions reordered: result dimension i is input dimension perm[i].
    abstract Permute: x: RawTensor * perm: int[] -> RawTensor
    /// x broadcast to a larger shape.
    abstract Expand: x: RawTensor * shape: int[] -> RawTensor
    /// Tensors joined along an axis.
    abstract Concat: xs: RawTensor[] * axis: int -> RawTensor
    /// The range [start, start+length) of one axis.
    abstract Slice: x: RawTensor * axis: int * start: int * length: int -> RawTensor
    /// Entries indices[j] of one axis, in that order.
    abstract IndexSelect: x: RawTensor * axis: int * indices: int[] -> RawTensor
    /// A zero tensor of the given shape to which src's slices j along axis are added at indices[j]
    /// (repeated indices accumulate, in order).
    abstract IndexAdd: shape: int[] * axis: int * indices: int[] * src: RawTensor -> RawTensor
    /// True when every element is finite.
    abstract AllFinite: x: RawTensor -> bool
    /// Waits until every operation queued so far has finished (a no-op where operations run synchronously).
    abstract Synchronize: unit -> unit

/// A piece of work whose tensors are released when it ends, except those kept (see IReleasingBackend).
type IReleaseScope =
    inherit IDisposable
    /// Keeps a tensor (and the views sharing its memory) beyond the scope.
    abstract Keep: RawTensor -> unit
    /// Hands the scope a tensor made before it, which its caller will not use again: its memory is released when the
    /// scope ends unless kept (for a step that replaces its input, see Tensor.replacing). A kept one stays where it was.
    abstract Consume: RawTensor -> unit

/// A backend whose memory can be given back as soon as a piece of work ends, rather than when the garbage
/// collector finds its tensors unreachable: device memory, which the collector neither sees nor counts, and the
/// CPU backend's pooled arrays, which then come back warm for the next step.
type IReleasingBackend =
    /// Records the tensors this thread creates on the backend until the scope is disposed, then releases those
    /// not kept; using a released tensor raises ObjectDisposedException.
    abstract BeginScope: unit -> IReleaseScope
