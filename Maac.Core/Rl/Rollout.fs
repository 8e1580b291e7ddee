namespace Maac.Rl

open Maac.Tensors
open Maac.Nn
open Maac.Envs

/// Everything a rollout through the learned model needs: the model, the task's reward and
/// termination functions, the map from policy actions in [−1, 1] to the task's action space, and how the
/// differentiable paths (actor objective, critic targets) draw the model's next states. Imagined data for the
/// buffers is always sampled with the model's full noise.
type ModelContext =
    {
        Model: DynamicsModel
        Task: TaskFunctions
        ActionLow: Tensor
        ActionHigh: Tensor
        PathNoise: PathNoise
    }

/// Model rollouts and the pieces shared by targets, actor objectives and the planner.
module Rollout =
    /// Policy actions in [−1, 1] mapped to the task's action space.
    let toEnvAction (ctx: ModelContext) (a: Tensor) = Box.fromUnitTensor ctx.ActionLow ctx.ActionHigh a

    /// One imagined transition through a dynamics step function (Dynamics.step, Dynamics.stepByBlocks or another):
    /// (next observation, reward, done), the reward from the task's function (or the model's prediction when the
    /// task has none), done from the task's termination function.
    let stepWith
        (dynamics: DynamicsModel -> RandomKey -> Tensor -> Tensor -> Tensor * Tensor option)
        (ctx: ModelContext)
        (key: RandomKey)
        (obs: Tensor)
        (act: Tensor)
        =
        let next, predicted = dynamics ctx.Model key obs act
        let envAct = toEnvAction ctx act

        let reward =
            match ctx.Task.Reward, predicted with
            | Some f, _ -> f obs envAct next
            | None, Some r -> r
            | None, None -> invalidOp "the task has no reward function and the model does not predict rewards"

        let isDone =
            match ctx.Task.Termination with
            | Some f -> f obs envAct next |> Tensor.stopGradient
            | None -> Tensor.zerosLike reward

        next, reward, isDone

    /// One imagined transition with Dynamics.step (each row to a random elite) under the context's path noise:
    /// (next observation, reward, done).
    let step (ctx: ModelContext) (key: RandomKey) (obs: Tensor) (act: Tensor) =
        stepWith (Dynamics.stepWithNoise ctx.PathNoise) ctx key obs act

    /// Imagined transitions from start states: `length` steps of the policy through the model (no gradient, the
    /// model's full noise whatever the context's path noise), stopping rows that reach a terminal state. Returns
    /// every transition made.
    let imagine (ctx: ModelContext) (policy: TanhGaussianPolicy) (key: RandomKey) (start: Tensor) (length: int) =
        let sampled = { ctx with PathNoise = SampledNoise }

        let rec go t (s: Tensor) acc =
            if t >= length || s.Shape.[0] = 0 then
                List.rev acc
            else
                let k = RandomKey.fold (int64 t) key
                let k1, k2 = RandomKey.split2 k
                let a, _ = TanhGaussianPolicy.sample policy k1 s
                let next, r, d = step sampled k2 s a
                let alive = d.ToArray() |> Array.indexed |> Array.filter (fun (_, v) -> v < 0.5f) |> Array.map fst
                go (t + 1) (Tensor.indexSelect 0 alive next) ({ Obs = s; Action = a; Reward = r; NextObs = next; Done = d } :: acc)

        go 0 start []

/// Where H imagined steps stand, row by row: the state reached, the discounted return so far, whether the path is still
/// alive (1 until a step's done flag cuts it) and the discount γᵗ of the next reward. The actor objective, the STEVE
/// targets and the planner all accumulate their paths with this one module.
type ImaginedPath = { State: Tensor; Return: Tensor; Alive: Tensor; Discount: float32 }

/// Accumulating rewards along imagined paths.
module ImaginedPath =
    /// Paths from states with a return already collected, an alive mask and the discount of the next reward.
    let from (state: Tensor) (ret: Tensor) (alive: Tensor) (discount: float32) =
        { State = state; Return = ret; Alive = alive; Discount = discount }

    /// Fresh paths from states [N, o]: return 0, all alive, discount 1.
    let start (state: Tensor) =
        let n = state.Shape.[0]
        from state (Tensor.zeros [| n |]) (Tensor.ones [| n |]) 1.0f

    /// One step: the return gains discount · alive · reward, the done flags cut the alive mask, the discount gains a
    /// factor γ and the state moves to next.
    let advance (gamma: float32) (p: ImaginedPath) (next: Tensor, reward: Tensor, isDone: Tensor) =
        {
            State = next
            Return = p.Return + p.Discount * p.Alive * reward
            Alive = p.Alive * (1.0f - isDone)
            Discount = p.Discount * gamma
        }

    /// Every path state of `horizon` steps, the start included (horizon + 1 of them); `stepAt t state` makes step t's
    /// (next state, reward, done).
    let scan (gamma: float32) (horizon: int) (stepAt: int -> Tensor -> Tensor * Tensor * Tensor) (p: ImaginedPath) =
        Array.scan (fun (q: ImaginedPath) t -> advance gamma q (stepAt t q.State)) p [| 0 .. horizon - 1 |]

    /// The path state after `horizon` steps.
    let unroll (gamma: float32) (horizon: int) (stepAt: int -> Tensor -> Tensor * Tensor * Tensor) (p: ImaginedPath) =
        Array.fold (fun (q: ImaginedPath) t -> advance gamma q (stepAt t q.State)) p [| 0 .. horizon - 1 |]

    /// The return closed by a terminal value at the state reached: return + discount · alive · terminal.
    let close (p: ImaginedPath) (terminal: Tensor) = p.Return + p.Discount * p.Alive * terminal
