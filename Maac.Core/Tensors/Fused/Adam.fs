namespace Maac.Tensors

/// The numbers of one fused Adam update.
[<Struct>]
type AdamHyper =
    {
        LearningRate: float32
        Beta1: float32
        Beta2: float32
        Epsilon: float32
        /// 1 − β1ᵗ.
        Correction1: float32
        /// 1 − β2ᵗ.
        Correction2: float32
    }

/// Adam's update of one parameter as one operation.
module AdamUpdate =
    /// Inputs: the parameter w, its gradient g and moments m, v (all of w's shape); outputs w', m', v' with
    /// m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g², w' = w − lr·(m'/c1)/(√(v'/c2) + ε), where c1, c2 are the bias
    /// corrections 1 − βᵗ. Not differentiated (an optimiser step).
    let step =
        { new FusedOp<AdamHyper>("adamStep", [| "parameter"; "gradient"; "first moment"; "second moment" |]) with
            member _.Gradient = NotDifferentiated

            member op.OutputShapes(_, shapes) =
                let w = shapes.[0]

                for i in 1..3 do
                    if shapes.[i] <> w then
                        Shape.fail
                            "adamStep"
                            (sprintf
                                "the %s has shape %s where the parameter has %s"
                                op.InputNames.[i]
                                (Shape.show shapes.[i])
                                (Shape.show w))

                [| w; w; w |]

            member _.Reference<'T>(ops: IOps<'T>, h, xs: 'T[]) =
                let w, g, m, v = xs.[0], xs.[1], xs.[2], xs.[3]
                let scale c x = ops.Scalar(MulScalar c, x)
                let m' = ops.Binary(Add, scale h.Beta1 m, scale (1.0f - h.Beta1) g)
                let v' = ops.Binary(Add, scale h.Beta2 v, scale (1.0f - h.Beta2) (ops.Unary(Square, g)))

                let step =
                    ops.Binary(
                        Div,
                        scale h.LearningRate (scale (1.0f / h.Correction1) m'),
                        ops.Scalar(AddScalar h.Epsilon, ops.Unary(Sqrt, scale (1.0f / h.Correction2) v'))
                    )

                [| ops.Binary(Sub, w, step); m'; v' |]
        }
