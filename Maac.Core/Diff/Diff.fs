namespace Maac

open System.Collections.Generic
open Maac.Tensors

/// Reverse-mode differentiation with a functional API in the style of DiffSharp and JAX.
/// Each call differentiates a function at a point by evaluating it on fresh leaf variables and
/// walking the recorded operations backwards. Nothing is global: calls may be nested (an inner
/// call's results are constants to the enclosing one) and may run on several threads at once.
/// Only first-order gradients are supported.
module Diff =
    /// Gradients of the scalar y with respect to the leaf variables vars (zeros where y does not depend on one).
    let private backward (op: string) (y: Tensor) (vars: Tensor[]) : Tensor[] =
        if y.Numel <> 1 then
            raise (
                ShapeException(sprintf "%s: the function must return a single number, but returned shape %s" op (Shape.show y.Primal.Shape))
            )
        // The gradient of each output of each node reached so far (null for an output not yet reached).
        let grads = Dictionary<Node, RawTensor[]>(HashIdentity.Reference)

        let accumulate (target: Tensor) (g: RawTensor) =
            let slots =
                match grads.TryGetValue target.Node with
                | true, s -> s
                | _ ->
                    let s = Array.zeroCreate target.Node.Outputs
                    grads.[target.Node] <- s
                    s

            let acc = slots.[target.Output]
            slots.[target.Output] <- if isNull acc then g else acc.Backend.Binary(Add, acc, g)

        if y.IsTracked then
            let leaves = HashSet<Node>(vars |> Seq.map (fun v -> v.Node), HashIdentity.Reference)
            // Post-order walk over tracked nodes; depends[n] says whether n reaches one of our variables.
            let depends = Dictionary<Node, bool>(HashIdentity.Reference)
            let order = List<Node>()
            let stack = Stack<struct (Node * int)>()
            stack.Push(struct (y.Node, 0))

            while stack.Count > 0 do
                let struct (n, i) = stack.Pop()

                if i < n.Inputs.Length then
                    stack.Push(struct (n, i + 1))
                    let child = n.Inputs.[i]

                    if child.IsTracked && not (depends.ContainsKey child.Node) then
                        depends.[child.Node] <- false
                        stack.Push(struct (child.Node, 0))
                else
                    depends.[n] <- leaves.Contains n || (n.Inputs |> Array.exists (fun t -> t.IsTracked && depends.[t.Node]))
                    order.Add n

            accumulate y (y.Primal.Backend.Full(y.Primal.Shape, 1.0f))

            for idx in order.Count - 1 .. -1 .. 0 do
                let n = order.[idx]

                match grads.TryGetValue n with
                | true, gs when n.Inputs.Length > 0 && depends.[n] ->
                    let need = n.Inputs |> Array.map (fun t -> t.IsTracked && depends.[t.Node])
                    let inputGrads = n.Backward gs need

                    for j in 0 .. n.Inputs.Length - 1 do
                        if need.[j] then
                            accumulate n.Inputs.[j] inputGrads.[j]

                    if not (leaves.Contains n) then
                        grads.Remove n |> ignore
                | _ -> ()

        vars
        |> Array.map (fun v ->
            match grads.TryGetValue v.Node with
            | true, gs -> Tensor.ofRaw gs.[0]
            | _ -> Tensor.zerosLike v)

    /// Value and gradients of a scalar function of several tensors.
    let valueAndGrads (f: Tensor[] -> Tensor) (xs: Tensor[]) : Tensor * Tensor[] =
        let vars = xs |> Array.map Tensor.variable
        let y = f vars
        Tensor.stopGradient y, backward "valueAndGrads" y vars

    /// Gradients of a scalar function of several tensors.
    let grads (f: Tensor[] -> Tensor) (xs: Tensor[]) = valueAndGrads f xs |> snd

    /// Value and gradient of a scalar function of one tensor.
    let valueAndGrad (f: Tensor -> Tensor) (x: Tensor) : Tensor * Tensor =
        let v, gs = valueAndGrads (fun xs -> f xs.[0]) [| x |]
        v, gs.[0]

    /// Gradient of a scalar function of one tensor.
    let grad (f: Tensor -> Tensor) (x: Tensor) = valueAndGrad f x |> snd

    /// Value and gradient of a scalar function of a parameter collection; the gradient has the same structure.
    let valueAndGradParams (f: 'P -> Tensor) (p: 'P :> IParameters<'P>) : Tensor * 'P =
        let v, gs = valueAndGrads (fun ts -> f (Parameters.rebuild p ts)) (Parameters.tensors p)
        v, Parameters.rebuild p gs

    /// Gradient of a scalar function of a parameter collection.
    let gradParams (f: 'P -> Tensor) (p: 'P :> IParameters<'P>) : 'P = valueAndGradParams f p |> snd
