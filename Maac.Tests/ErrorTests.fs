/// Errors a user can cause say what was wrong and where.
module Maac.Tests.ErrorTests

open Maac

open Expecto
open Maac.Tensors
open Maac.Tests.Support

let private messageOf (f: unit -> unit) =
    try
        f ()
        failtest "expected an exception"
        ""
    with
    | :? ShapeException as e -> e.Message
    | :? NonFiniteException as e -> e.Message

let private contains (parts: string list) (message: string) =
    for p in parts do
        Expect.stringContains message p (sprintf "message '%s' names %s" message p)

let tests =
    testList
        "errors"
        [
            test "broadcasting mismatch names the operation and both shapes" {
                messageOf (fun () -> Tensor.ones [| 2; 3 |] + Tensor.ones [| 4 |] |> ignore)
                |> contains [ "add"; "[2, 3]"; "[4]" ]
            }
            test "matmul mismatch names both shapes" {
                messageOf (fun () -> Tensor.matmul (Tensor.ones [| 2; 3 |]) (Tensor.ones [| 4; 5 |]) |> ignore)
                |> contains [ "matmul"; "[2, 3]"; "[4, 5]" ]
            }
            test "linear with a wrong bias names it" {
                messageOf (fun () -> Tensor.linear (Tensor.ones [| 2; 3 |]) (Tensor.ones [| 3; 5 |]) (Tensor.ones [| 4 |]) |> ignore)
                |> contains [ "linear"; "[4]" ]
            }
            test "a fused Adam step with a moment of another shape names it and both shapes" {
                let hyper = adamHyperAtStepOne

                let w = Tensor.ones [| 2; 3 |]

                messageOf (fun () -> Tensor.adamStep hyper w w (Tensor.zeros [| 3; 2 |]) (Tensor.zeros [| 2; 3 |]) |> ignore)
                |> contains [ "adamStep"; "first moment"; "[3, 2]"; "[2, 3]" ]
            }
            test "reshape to a wrong size names both shapes" {
                messageOf (fun () -> Tensor.reshape [| 4 |] (Tensor.ones [| 2; 3 |]) |> ignore)
                |> contains [ "reshape"; "[2, 3]"; "[4]" ]
            }
            test "out-of-range index names the axis size" {
                messageOf (fun () -> Tensor.indexSelect 0 [| 5 |] (Tensor.ones [| 3 |]) |> ignore)
                |> contains [ "indexSelect"; "5"; "size 3" ]
            }
            test "fused sampling with misshapen operands names the operation and the shapes" {
                messageOf (fun () -> Tensor.tanhGaussianSample -20.0f 2.0f (Tensor.ones [| 4; 5 |]) (Tensor.ones [| 4; 2 |]) |> ignore)
                |> contains [ "tanhGaussianSample"; "[N, 2A]"; "[4, 5]" ]

                messageOf (fun () -> Tensor.tanhGaussianSample -20.0f 2.0f (Tensor.ones [| 4; 6 |]) (Tensor.ones [| 3; 3 |]) |> ignore)
                |> contains [ "tanhGaussianSample"; "[4, 3]"; "[3, 3]" ]

                messageOf (fun () ->
                    Tensor.gaussianHeadSample (Tensor.ones [| 3 |]) (Tensor.ones [| 2 |]) (Tensor.ones [| 5; 4 |]) (Tensor.ones [| 5; 2 |])
                    |> ignore)
                |> contains [ "gaussianHeadSample"; "[2]"; "[3]" ]
            }
            test "repeating rows fewer than once names the operation and the count" {
                for k in [ 0; -1 ] do
                    let message =
                        try
                            Tensor.repeatRows k (Tensor.ones [| 2; 3 |]) |> ignore
                            failtest "expected an exception"
                            ""
                        with :? System.ArgumentException as e ->
                            e.Message

                    contains [ "repeatRows"; sprintf "got %d" k ] message
            }
            test "ofArray with the wrong count" {
                messageOf (fun () -> Tensor.ofArray [| 2; 2 |] [| 1.0f |] |> ignore)
                |> contains [ "1 values"; "[2, 2]" ]
            }
            test "checkFinite names where the NaN was found" {
                messageOf (fun () -> Tensor.ofSeq [ 1.0f; nanf ] |> Tensor.checkFinite "observation from Pendulum" |> ignore)
                |> contains [ "observation from Pendulum"; "[2]" ]
            }
            test "rebuilding parameters with a wrong shape names the parameter" {
                let p = Maac.Nn.Linear.init (RandomKey.ofSeed 1L) 3 2

                messageOf (fun () -> Maac.Tensors.Parameters.rebuild p [| Tensor.ones [| 3; 2 |]; Tensor.ones [| 5 |] |] |> ignore)
                |> contains [ "bias"; "[2]"; "[5]" ]
            }
        ]
