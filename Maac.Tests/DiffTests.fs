/// The differentiation API: closed-form gradients, parameter collections, nesting, stopGradient, no-tape evaluation.
module Maac.Tests.DiffTests

open Expecto
open Maac
open Maac.Tensors
open Maac.Tests.Support

let tests =
    testList
        "differentiation API"
        [
            test "grad of x·x·sin x matches the closed form" {
                let x = Tensor.ofSeq [ -1.0f; 0.3f; 2.0f ]
                let g = Diff.grad (fun x -> Tensor.sum (x * x * Tensor.sin x)) x
                let expected = x.ToArray() |> Array.map (fun v -> 2.0f * v * sin v + v * v * cos v)
                Array.iter2 (fun a b -> Expect.floatClose Accuracy.high (float a) (float b) "d/dx x²sin x") (g.ToArray()) expected
            }

            test "valueAndGrad returns the value; a tensor used twice accumulates both paths" {
                let x = Tensor.scalar 3.0f
                let v, g = Diff.valueAndGrad (fun x -> x * x + x * 2.0f) x
                Expect.equal (Tensor.toScalar v) 15.0f "value"
                Expect.equal (Tensor.toScalar g) 8.0f "2x + 2"
                Expect.isFalse v.IsTracked "returned values are constants"
            }

            test "gradients over a parameter collection keep its structure and names" {
                let p = ParameterDict.OfSeq [ "a", Tensor.ofSeq [ 1.0f; 2.0f ]; "b", Tensor.scalar 3.0f ]
                let g = Diff.gradParams (fun (p: ParameterDict) -> Tensor.sum (p.["a"] * p.["b"])) p
                Expect.sequenceEqual (g.["a"].ToArray()) [| 3.0f; 3.0f |] "d/da = b"
                Expect.sequenceEqual (g.["b"].ToArray()) [| 3.0f |] "d/db = Σa"
            }

            test "an input the function ignores gets a zero gradient" {
                let gs = Diff.grads (fun xs -> Tensor.sum xs.[0]) [| Tensor.ones [| 2 |]; Tensor.ones [| 3 |] |]
                Expect.sequenceEqual (gs.[1].ToArray()) [| 0.0f; 0.0f; 0.0f |] "zero"
            }

            test "stopGradient blocks the path through it" {
                let g = Diff.grad (fun x -> Tensor.sum (x * Tensor.stopGradient x)) (Tensor.ofSeq [ 2.0f; -1.0f ])
                Expect.sequenceEqual (g.ToArray()) [| 2.0f; -1.0f |] "only the unstopped factor is differentiated"
            }

            test "evaluation outside a gradient computation records nothing" {
                let w = Tensor.ones [| 3; 2 |]
                let y = Tensor.matmul (Tensor.ones [| 4; 3 |]) w |> Tensor.tanh |> Tensor.sum
                Expect.isFalse y.IsTracked "plain evaluation builds no graph"
            }

            test "nested gradient computations do not interfere" {
                // Outer: f(x) = Σ x · g'(x)ᵀ1 where the inner gradient g'(x) = 3x² is a constant to the outer call.
                let x = Tensor.ofSeq [ 1.0f; 2.0f ]

                let outer =
                    Diff.grad
                        (fun x ->
                            let inner = Diff.grad (fun y -> Tensor.sum (y * y * y)) x
                            Expect.sequenceEqual (inner.ToArray()) [| 3.0f; 12.0f |] "inner gradient is right inside the outer call"
                            Tensor.sum (x * inner))
                        x

                Expect.sequenceEqual (outer.ToArray()) [| 3.0f; 12.0f |] "outer sees the inner result as a constant"
            }

            test "gradients computed on several threads at once agree" {
                let xs = Array.init 8 (fun i -> uniform i [| 64; 16 |] -1.0f 1.0f)
                let f (x: Tensor) = Tensor.sum (Tensor.tanh (Tensor.matmul x (Tensor.transpose x)))
                let serial = xs |> Array.map (fun x -> (Diff.grad f x).ToArray())
                let parallel' = xs |> Array.Parallel.map (fun x -> (Diff.grad f x).ToArray())
                Expect.sequenceEqual parallel' serial "thread-safe and deterministic"
            }

            test "grad of a non-scalar function is refused with the shape" {
                let e = Expect.throwsC (fun () -> Diff.grad id (Tensor.ones [| 2; 3 |]) |> ignore) (fun e -> e.Message)
                Expect.stringContains e "[2, 3]" "names the shape returned"

            }
        ]
