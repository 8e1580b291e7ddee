namespace Maac.Rl

open Maac.Tensors
open Maac.Nn
open Maac.Envs

/// Twin Q networks (Fujimoto et al. 2018), each MLP([obs, act]) → 1.
type Critics =
    {
        Q1: Mlp
        Q2: Mlp
    }

    /// The record's parts, declared once (made when the type is first used, not on every call).
    static member val private Parts =
        [
            ParameterPart.nested "q1" (fun c -> c.Q1) (fun c q -> { c with Q1 = q })
            ParameterPart.nested "q2" (fun c -> c.Q2) (fun c q -> { c with Q2 = q })
        ]

    interface IParameters<Critics> with
        member c.Named = PartsOf.named Critics.Parts c
        member c.WithTensors ts = PartsOf.withTensors Critics.Parts c ts

    interface IParameterTensors with
        member c.Tensors = PartsOf.tensors Critics.Parts c

/// Critic construction and evaluation.
module Critics =
    let init (key: RandomKey) (obsDim: int) (actDim: int) (hidden: int[]) =
        let k1, k2 = RandomKey.split2 key
        let sizes = Array.concat [ [| obsDim + actDim |]; hidden; [| 1 |] ]
        { Q1 = Mlp.init k1 sizes Activation.Relu; Q2 = Mlp.init k2 sizes Activation.Relu }

    /// Both Q estimates [N] for observations [N, o] and actions [N, a].
    let both (c: Critics) (obs: Tensor) (act: Tensor) =
        let x = Tensor.concat -1 [| obs; act |]
        Mlp.forward c.Q1 x |> Tensor.squeeze -1, Mlp.forward c.Q2 x |> Tensor.squeeze -1

    /// min(Q1, Q2) [N].
    let minQ (c: Critics) (obs: Tensor) (act: Tensor) = both c obs act ||> Tensor.minimum

    /// Both critics' values of states [N, o] given K actions at each, actions [K, N, a], each averaged over the K
    /// actions: ([N], [N]). With K = 1 this is `both` on the one action.
    let bothOverActions (c: Critics) (obs: Tensor) (actions: Tensor) =
        let k, n = actions.Shape.[0], actions.Shape.[1]

        if k = 1 then
            both c obs (Tensor.squeeze 0 actions)
        else
            let meanOverActions (q: Tensor) = Tensor.reshape [| k; n |] q |> Tensor.meanAxis 0 false
            let q1, q2 = both c (Tensor.repeatRows k obs) (Tensor.reshape [| k * n; -1 |] actions)
            meanOverActions q1, meanOverActions q2

    /// The clipped value of states [N, o] given K actions at each, actions [K, N, a]: each critic averaged over the
    /// K actions, then the smaller of the two averages [N]. With K = 1 this is minQ on the one action.
    let minOfMeans (c: Critics) (obs: Tensor) (actions: Tensor) = bothOverActions c obs actions ||> Tensor.minimum
