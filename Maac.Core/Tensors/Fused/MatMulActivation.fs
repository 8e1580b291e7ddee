namespace Maac.Tensors

/// The attributes of a fused product + activation.
[<Struct>]
type ProductActivation =
    {
        /// Whether a's last two dimensions are transposed.
        TransA: bool
        /// Whether b's last two dimensions are transposed.
        TransB: bool
        /// The activation applied to the product.
        Activation: UnaryOp
    }

/// activation(op(a)·op(b) (+ bias)) as one operation: on a GPU the bias and the activation take one kernel after
/// the product instead of two.
module MatMulActivation =
    /// Inputs: a, b and optionally the bias (as IBackend.MatMul); outputs: the activation of the product, and the
    /// product with its bias (the activation's input, which its gradient needs).
    let op =
        { new FusedOp<ProductActivation>("matmulActivation", [| "a"; "b"; "bias" |]) with
            member _.MinInputs = 2
            member _.Gradient = FusedBackward

            member _.OutputShapes(p, shapes) =
                let biasNumel = if shapes.Length = 3 then Shape.numel shapes.[2] else -1
                let plan = Plans.matMul p.TransA p.TransB shapes.[0] shapes.[1] biasNumel
                [| plan.OutShape; plan.OutShape |]

            member _.Product(p, shapes) = ValueSome(Plans.productShape p.TransA p.TransB shapes.[0] shapes.[1])

            member _.Reference<'T>(ops: IOps<'T>, p, xs: 'T[]) =
                let bias = if xs.Length = 3 then ValueSome xs.[2] else ValueNone
                let product = ops.MatMul(p.TransA, p.TransB, xs.[0], xs.[1], bias)
                [| ops.Unary(p.Activation, product); product |]

            member _.Backward(backend, p, xs, ys, gs, need) =
                let activated, product = ys.[0], ys.[1]

                let byProduct =
                    match gs.[0], gs.[1] with
                    | null, g -> g
                    | g, null -> backend.UnaryGrad(p.Activation, product, activated, g)
                    | g, direct -> backend.Binary(Add, backend.UnaryGrad(p.Activation, product, activated, g), direct)

                let bias = if xs.Length = 3 then xs.[2] else null
                ProductGradients.inputs p.TransA p.TransB xs.[0] xs.[1] bias byProduct need
        }

    /// Whether the activation's gradient can be read off its output alone: ReLU's is g where the output is
    /// positive, which is exactly where its input is.
    let gradientFromOutput (activation: UnaryOp) = activation = Relu

    /// activation(op(a)·op(b) (+ bias)) alone: a kernel can activate the product where it stores it and write one
    /// output instead of op's two. Inputs as op; output: the activation of the product. For where nothing will be
    /// differentiated through it (a target, an action to take) and for ReLU layers (gradientFromOutput: its
    /// gradient reads the output in place of the product, with the same bits); any other activation's gradient
    /// computes the product again.
    let activationOnly =
        { new FusedOp<ProductActivation>("matmulActivationOnly", [| "a"; "b"; "bias" |]) with
            member _.MinInputs = 2
            member _.Gradient = FusedBackward

            member _.Product(p, shapes) = op.Product(p, shapes)

            member _.OutputShapes(p, shapes) = [| (op.OutputShapes(p, shapes)).[0] |]

            member _.Reference<'T>(ops: IOps<'T>, p, xs: 'T[]) = [| (op.Reference(ops, p, xs)).[0] |]

            member _.Backward(backend, p, xs, ys, gs, need) =
                let activated = ys.[0]
                let bias = if xs.Length = 3 then xs.[2] else null

                let product =
                    if gradientFromOutput p.Activation then
                        activated
                    else
                        backend.MatMul(p.TransA, p.TransB, xs.[0], xs.[1], bias)

                let byProduct = backend.UnaryGrad(p.Activation, product, activated, gs.[0])
                ProductGradients.inputs p.TransA p.TransB xs.[0] xs.[1] bias byProduct need
        }
