namespace Maac.Tensors

open Maac

/// The sizes of a (batched) matrix product op(a)·op(b), checked once for every backend.
type MatMulPlan =
    {
        Batched: bool
        Batches: int
        M: int
        N: int
        K: int
        /// Elements per row of a and of b as stored (the leading dimensions).
        LdA: int
        LdB: int
        /// Elements between consecutive matrices of a batch (0 when not batched).
        StrideA: int
        StrideB: int
        OutShape: int[]
    }

/// One matrix product's sizes and layout: batches × (op(a)[m × k] · op(b)[k × n]), a and b transposed or not.
[<Struct>]
type ProductShape =
    {
        Batches: int
        M: int
        N: int
        K: int
        TransA: bool
        TransB: bool
    }

    /// Floating-point operations: 2·m·n·k per matrix (k multiplications and k additions per output element), times
    /// the batch; a bias adds one addition per output element, not counted.
    member p.Flops = 2L * int64 p.Batches * int64 p.M * int64 p.N * int64 p.K

    override p.ToString() =
        let op (trans: bool) (name: string) = if trans then name + "ᵀ" else name
        sprintf "%d × (%d×%d = %s·%s, k %d)" p.Batches p.M p.N (op p.TransA "A") (op p.TransB "B") p.K

/// Shape checks and size plans shared by the backends, so that every device refuses the same inputs with the
/// same messages.
module Plans =
    /// The plan of op(a)·op(b) (+ a bias of biasNumel elements, or −1 for none); ShapeException otherwise.
    let matMul (transA: bool) (transB: bool) (a: int[]) (b: int[]) (biasNumel: int) =
        let op = if a.Length = 3 then "bmm" else "matmul"

        let fail () =
            Shape.fail
                op
                (sprintf
                    "cannot multiply %s%s by %s%s"
                    (Shape.show a)
                    (if transA then "ᵀ" else "")
                    (Shape.show b)
                    (if transB then "ᵀ" else ""))

        if a.Length <> b.Length || (a.Length <> 2 && a.Length <> 3) then
            fail ()

        let batched = a.Length = 3
        let batches = if batched then a.[0] else 1

        if batched && b.[0] <> batches then
            fail ()

        let r = a.Length
        let ar, ac = a.[r - 2], a.[r - 1]
        let br, bc = b.[r - 2], b.[r - 1]
        let m, k = (if transA then ac, ar else ar, ac)
        let k2, n = (if transB then bc, br else br, bc)

        if k <> k2 then
            fail ()

        let outShape = if batched then [| batches; m; n |] else [| m; n |]

        if biasNumel >= 0 && biasNumel <> n && biasNumel <> batches * n then
            Shape.fail op (sprintf "a bias of %d elements does not fit a product of shape %s" biasNumel (Shape.show outShape))

        {
            Batched = batched
            Batches = batches
            M = m
            N = n
            K = k
            LdA = ac
            LdB = bc
            StrideA = (if batched then ar * ac else 0)
            StrideB = (if batched then br * bc else 0)
            OutShape = outShape
        }

    /// The sizes and layout of op(a)·op(b) for a and b of these shapes (checked as matMul checks them).
    let productShape (transA: bool) (transB: bool) (a: int[]) (b: int[]) =
        let plan = matMul transA transB a b -1

        { Batches = plan.Batches; M = plan.M; N = plan.N; K = plan.K; TransA = transA; TransB = transB }

    /// The output shape of a permutation (checked).
    let permute (shape: int[]) (perm: int[]) =
        let r = shape.Length

        if perm.Length <> r || (Array.sort perm <> Array.init r id) then
            Shape.fail "permute" (sprintf "%s is not a permutation of the %d axes of shape %s" (Shape.show perm) r (Shape.show shape))

        perm |> Array.map (fun p -> shape.[p])

    /// Checks that shape broadcasts to target.
    let expand (shape: int[]) (target: int[]) =
        if Shape.broadcast "expand" shape target <> target then
            Shape.fail "expand" (sprintf "shape %s cannot be expanded to %s" (Shape.show shape) (Shape.show target))

    /// (axis, output shape, (outer, total, inner)) of a concatenation (checked).
    let concat (shapes: int[][]) (axis: int) =
        if shapes.Length = 0 then
            Shape.fail "concat" "no tensors were given"

        let first = shapes.[0]
        let ax = Shape.axis "concat" first.Length axis

        for s in shapes do
            if s.Length <> first.Length || (Shape.removeAxis s ax <> Shape.removeAxis first ax) then
                Shape.fail
                    "concat"
                    (sprintf "shapes %s differ outside axis %d" (System.String.Join(", ", shapes |> Array.map Shape.show)) axis)

        let total = shapes |> Array.sumBy (fun s -> s.[ax])
        let outShape = Shape.withAxis first ax total
        ax, outShape, Shape.splitAt outShape ax

    /// The axis of a slice (checked).
    let slice (shape: int[]) (axis: int) (start: int) (length: int) =
        let ax = Shape.axis "slice" shape.Length axis

        if start < 0 || length < 0 || start + length > shape.[ax] then
            Shape.fail "slice" (sprintf "range [%d, %d) is outside axis %d of shape %s" start (start + length) axis (Shape.show shape))

        ax

    /// (axis, (outer, n, inner)) of an index selection (indices checked).
    let indexSelect (shape: int[]) (axis: int) (indices: int[]) =
        let ax = Shape.axis "indexSelect" shape.Length axis
        let outer, n, inner = Shape.splitAt shape ax

        for i in indices do
            if i < 0 || i >= n then
                Shape.fail "indexSelect" (sprintf "index %d is outside axis %d of size %d (shape %s)" i axis n (Shape.show shape))

        ax, (outer, n, inner)

    /// (axis, (outer, n, inner)) of an index addition into `shape` (source shape and indices checked).
    let indexAdd (shape: int[]) (axis: int) (indices: int[]) (source: int[]) =
        let ax = Shape.axis "indexAdd" shape.Length axis
        let outer, n, inner = Shape.splitAt shape ax

        if source <> Shape.withAxis shape ax indices.Length then
            Shape.fail
                "indexAdd"
                (sprintf
                    "source of shape %s does not match %d indices into shape %s along axis %d"
                    (Shape.show source)
                    indices.Length
                    (Shape.show shape)
                    axis)

        for i in indices do
            if i < 0 || i >= n then
                Shape.fail "indexAdd" (sprintf "index %d is outside axis %d of size %d" i axis n)

        ax, (outer, n, inner)

    /// Checks that values fill a shape.
    let ofArray (count: int) (shape: int[]) =
        Shape.validate "ofArray" shape

        if count <> Shape.numel shape then
            Shape.fail "ofArray" (sprintf "%d values do not fill shape %s (%d elements)" count (Shape.show shape) (Shape.numel shape))

    /// Checks a reshape.
    let reshape (numel: int) (from: int[]) (shape: int[]) =
        Shape.validate "reshape" shape

        if Shape.numel shape <> numel then
            Shape.fail "reshape" (sprintf "cannot view a tensor of shape %s (%d elements) as %s" (Shape.show from) numel (Shape.show shape))
