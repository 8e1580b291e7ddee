namespace Maac.Rl

open Maac

open System
open Maac.Tensors
open Maac.Nn
open Maac.Optim

/// A probabilistic dynamics ensemble: M Gaussian networks over normalised (observation, action)
/// predicting the normalised change of observation (and the reward, when PredictsReward). Inputs and
/// targets are standardised with statistics of the data it was last fitted on; Elites are the members
/// with the lowest hold-out error.
type DynamicsModel =
    {
        Net: GaussianEnsemble
        PredictsReward: bool
        InputMean: Tensor
        InputStd: Tensor
        TargetMean: Tensor
        TargetStd: Tensor
        Elites: int[]
    }

/// Settings of model fitting (the authors': Adam 1e-3, batch 256, ≤ 200 epochs, 20% hold-out).
type DynamicsSettings =
    {
        Members: int
        EliteCount: int
        Hidden: int[]
        LearningRate: float32
        BatchSize: int
        MaxEpochs: int
        HoldoutFraction: float
        /// Epochs without a 1% hold-out improvement of any member before stopping.
        Patience: int
    }

/// What one fit did.
type FitReport = { Epochs: int; HoldoutMse: float32[]; TrainLoss: float32 }

/// Creating, fitting and stepping dynamics ensembles.
module Dynamics =
    /// A fresh ensemble for obsDim observations and actDim actions (predicting the reward too when asked).
    let init (key: RandomKey) (s: DynamicsSettings) (obsDim: int) (actDim: int) (predictReward: bool) =
        let inDim = obsDim + actDim
        let outDim = obsDim + (if predictReward then 1 else 0)

        {
            Net = GaussianEnsemble.init key s.Members inDim s.Hidden outDim Activation.Silu
            PredictsReward = predictReward
            InputMean = Tensor.zeros [| inDim |]
            InputStd = Tensor.ones [| inDim |]
            TargetMean = Tensor.zeros [| outDim |]
            TargetStd = Tensor.ones [| outDim |]
            Elites = Array.init (min s.EliteCount s.Members) id
        }

    let private inputs (m: DynamicsModel) (obs: Tensor) (act: Tensor) = (Tensor.concat -1 [| obs; act |] - m.InputMean) / m.InputStd

    /// Every member on every row: normalised mean and log-variance [M, N, o].
    let predictAll (m: DynamicsModel) (obs: Tensor) (act: Tensor) =
        let x = inputs m obs act
        let members = EnsembleMlp.members m.Net.Net
        let n, d = x.Shape.[0], x.Shape.[1]
        GaussianEnsemble.forward m.Net (Tensor.expand [| members; n; d |] x)

    /// The ensemble restricted to some members (their weights selected along the member axis);
    /// the ensemble itself, without copying, when the members are all of it in order.
    let private subset (members: int[]) (g: GaussianEnsemble) =
        if members = Array.init (EnsembleMlp.members g.Net) id then
            g
        else
            let pick (t: Tensor) = Tensor.indexSelect 0 members t

            { g with
                Net =
                    { g.Net with
                        Layers = g.Net.Layers |> Array.map (fun l -> { Weight = pick l.Weight; Bias = pick l.Bias })
                    }
            }

    /// s + (μ + σ·ε)·std + mean for the ensemble's raw outputs head [N, 2·out] (normalised means, then raw
    /// log-variances, bounded as GaussianEnsemble.forward does) and noise ε [N, out] drawn from key, in one fused
    /// operation; split into the next observation and, when the model predicts it, the reward [N].
    let private sampleNext (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (head: Tensor) =
        let eps = Tensor.randnOnDeviceOf head key [| head.Shape.[0]; head.Shape.[1] / 2 |]

        let sample =
            Tensor.gaussianHeadSample m.Net.MaxLogVar m.Net.MinLogVar head eps * m.TargetStd + m.TargetMean

        if m.PredictsReward then
            let o = obs.Shape.[1]
            let parts = Tensor.split -1 [| o; 1 |] sample
            obs + parts.[0], Some(Tensor.squeeze -1 parts.[1])
        else
            obs + sample, None

    /// One sampled model step, differentiable in obs and act: each row goes to one random elite
    /// member (rows permuted and split evenly; each member evaluates only its rows) and
    /// s' = s + μ + σ·ε, de-normalised. Returns s' and, when the model predicts it, the reward [N].
    let step (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (act: Tensor) =
        let kPerm, kNoise = RandomKey.split2 key
        let n = obs.Shape.[0]
        let e = m.Elites.Length
        let perRow = (n + e - 1) / e
        let perm = RandomKey.permutation n kPerm
        let padded = Array.init (perRow * e) (fun j -> perm.[j % n])
        let inverse = Array.zeroCreate n
        perm |> Array.iteri (fun j p -> inverse.[p] <- j)
        let x = inputs m obs act |> Tensor.indexSelect 0 padded
        let grouped = x |> Tensor.reshape [| e; perRow; x.Shape.[1] |]
        let out = EnsembleMlp.forward (subset m.Elites m.Net).Net grouped
        sampleNext m kNoise obs (out |> Tensor.reshape [| e * perRow; -1 |] |> Tensor.indexSelect 0 inverse)

    /// One sampled model step in which the rows come in one block per elite: with E elites and N rows, rows
    /// [i·N/E, (i+1)·N/E) go to elite i (N must be a multiple of E). All elites are evaluated together, in one
    /// batched pass. The noise ε is standard normal [N, out] drawn from key. Otherwise as step.
    let stepByBlocks (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (act: Tensor) =
        let n = obs.Shape.[0]
        let e = m.Elites.Length

        if n % e <> 0 then
            invalidArg "obs" (sprintf "stepByBlocks: %d rows do not split into one equal block for each of %d elites" n e)

        let x = inputs m obs act
        let out = EnsembleMlp.forward (subset m.Elites m.Net).Net (Tensor.reshape [| e; n / e; x.Shape.[1] |] x)
        sampleNext m key obs (Tensor.reshape [| n; -1 |] out)

    let private standardise (x: Tensor) =
        let mean = Tensor.meanAxis 0 false x
        let c = x - mean

        let std =
            Tensor.sqrt (Tensor.meanAxis 0 false (c * c) + 1e-8f) |> Tensor.maximum (Tensor.fullLike mean 1e-4f)

        mean, std

    /// Fits the ensemble on all transitions of a buffer: statistics recomputed, a hold-out split,
    /// a bootstrap resample of the rest per member, minibatch Adam on the Gaussian NLL with the
    /// log-variance bound penalty, stopping when no member's hold-out error improves by 1% for
    /// Patience epochs, then elites chosen by hold-out error.
    let fit (s: DynamicsSettings) (key: RandomKey) (m: DynamicsModel) (opt: AdamState) (data: Batch) =
        let n = data.Obs.Shape.[0]
        let ks = RandomKey.split 4 key
        let x = Tensor.concat -1 [| data.Obs; data.Action |]

        let y =
            if m.PredictsReward then
                Tensor.concat -1 [| data.NextObs - data.Obs; Tensor.unsqueeze -1 data.Reward |]
            else
                data.NextObs - data.Obs

        let inMean, inStd = standardise x
        let tMean, tStd = standardise y
        let m = { m with InputMean = inMean; InputStd = inStd; TargetMean = tMean; TargetStd = tStd }
        let xn, yn = (x - inMean) / inStd, (y - tMean) / tStd
        let order = RandomKey.permutation n ks.[0]
        let nHold = min (n / 2) (int (float n * s.HoldoutFraction))
        let holdIdx, trainIdx = order.[.. nHold - 1], order.[nHold..]
        let members = s.Members

        let boot =
            Array.init members (fun i ->
                RandomKey.integers trainIdx.Length trainIdx.Length (RandomKey.fold (int64 i) ks.[1])
                |> Array.map (fun j -> trainIdx.[j]))

        let cfg = { AdamConfig.WithLearningRate s.LearningRate with CheckFinite = false }
        let holdX = if nHold > 0 then Tensor.indexSelect 0 holdIdx xn else xn
        let holdY = if nHold > 0 then Tensor.indexSelect 0 holdIdx yn else yn

        let holdoutMse (net: GaussianEnsemble) =
            let mean, _ =
                GaussianEnsemble.forward net (Tensor.expand [| members; holdX.Shape.[0]; holdX.Shape.[1] |] holdX)

            let err = mean - Tensor.expand mean.Shape holdY
            (Tensor.meanAxis -1 false (Tensor.meanAxis -1 false (err * err))).ToArray()

        let batchesPerEpoch = max 1 ((trainIdx.Length + s.BatchSize - 1) / s.BatchSize)
        let mutable net, state = m.Net, opt
        let mutable best = holdoutMse net
        let mutable stale = 0
        let mutable epoch = 0
        let mutable lastLoss = nanf

        while epoch < s.MaxEpochs && stale < s.Patience do
            let shuffles =
                boot
                |> Array.mapi (fun i b ->
                    RandomKey.permutation b.Length (RandomKey.fold (int64 (epoch * members + i)) ks.[2])
                    |> Array.map (fun j -> b.[j]))
            // Losses are read once per epoch (with the hold-out error), not per minibatch: no wait for the device
            // inside the epoch. A non-finite loss still stops the fit, at the end of its epoch.
            let losses = Array.zeroCreate batchesPerEpoch

            for bi in 0 .. batchesPerEpoch - 1 do
                let size = min s.BatchSize (trainIdx.Length - bi * s.BatchSize) |> max 1

                let rows =
                    shuffles
                    |> Array.collect (fun sh -> Array.init size (fun j -> sh.[(bi * s.BatchSize + j) % sh.Length]))

                let bx = Tensor.indexSelect 0 rows xn |> Tensor.reshape [| members; size; -1 |]
                let by = Tensor.indexSelect 0 rows yn |> Tensor.reshape [| members; size; -1 |]
                // The minibatch's other tensors go back to the backend's pool as soon as it is done.
                let loss, st, p =
                    Tensor.releasing (fun (loss, st, p: GaussianEnsemble) -> Array.append [| loss |] (Adam.tensors (st, p))) (fun () ->
                        let loss, g = Maac.Diff.valueAndGradParams (fun p -> GaussianEnsemble.nll p bx by) net
                        let st, p = Adam.step cfg state net g
                        loss, st, p)

                losses.[bi] <- loss
                state <- st
                net <- p

            let values = Tensor.toScalars losses

            match values |> Array.tryFindIndex (Single.IsFinite >> not) with
            | Some bi ->
                raise (
                    NonFiniteException(
                        sprintf "dynamics model training: the loss became %g at minibatch %d of epoch %d" values.[bi] bi epoch
                    )
                )
            | None -> lastLoss <- Array.last values

            let mse = holdoutMse net
            let improved = Array.exists2 (fun (now: float32) (b: float32) -> now < 0.99f * b) mse best
            best <- Array.map2 min mse best
            stale <- if improved then 0 else stale + 1
            epoch <- epoch + 1

        let mse = holdoutMse net

        let elites =
            mse
            |> Array.indexed
            |> Array.sortBy snd
            |> Array.truncate (min s.EliteCount members)
            |> Array.map fst
            |> Array.sort

        { m with Net = net; Elites = elites }, state, { Epochs = epoch; HoldoutMse = mse; TrainLoss = lastLoss }
