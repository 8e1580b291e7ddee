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

/// How a model step draws the next state.
type PathNoise =
    /// s' = s + μ + σ·ε: the model's full predicted noise.
    | SampledNoise
    /// s' = s + μ: the mean prediction, no noise.
    | MeanPath

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
        /// Epochs without a 1% hold-out improvement before a member stops.
        Patience: int
        /// Seeds the assignment of the fitted rows to the hold-out set. A row's assignment depends only on this seed
        /// and its index, so it is the same at every fit: members warm-started from an earlier fit are never scored
        /// on rows they trained on.
        HoldoutSeed: int64
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

    /// The model reduced to its elites, in elite order (elite i becomes member i): stepping it gives exactly what
    /// stepping m gives, without selecting the elites' weights again on every step. Made once where many steps use
    /// one fitted model (a training step's updates).
    let elitesOnly (m: DynamicsModel) = { m with Net = subset m.Elites m.Net; Elites = Array.init m.Elites.Length id }

    /// s + (μ + σ·ε)·std + mean for the ensemble's raw outputs head [N, 2·out] (normalised means, then raw
    /// log-variances, bounded as GaussianEnsemble.forward does) and noise ε [N, out] drawn from key, in one fused
    /// operation (s + μ·std + mean with MeanPath); split into the next observation and, when the model predicts it,
    /// the reward [N].
    let private sampleNext (noise: PathNoise) (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (head: Tensor) =
        let normalised =
            match noise with
            | SampledNoise ->
                let eps = Tensor.randnOnDeviceOf head key [| head.Shape.[0]; head.Shape.[1] / 2 |]
                Tensor.gaussianHeadSample m.Net.MaxLogVar m.Net.MinLogVar head eps
            | MeanPath -> (Tensor.chunk -1 2 head).[0]

        let sample = normalised * m.TargetStd + m.TargetMean

        if m.PredictsReward then
            let o = obs.Shape.[1]
            let parts = Tensor.split -1 [| o; 1 |] sample
            obs + parts.[0], Some(Tensor.squeeze -1 parts.[1])
        else
            obs + sample, None

    /// One model step, differentiable in obs and act: each row goes to one random elite member (rows permuted and
    /// split evenly; each member evaluates only its rows) and s' = s + μ + σ·ε (or s + μ with MeanPath),
    /// de-normalised. Returns s' and, when the model predicts it, the reward [N].
    let stepWithNoise (noise: PathNoise) (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (act: Tensor) =
        let kPerm, kNoise = RandomKey.split2 key
        let n = obs.Shape.[0]
        let e = m.Elites.Length
        let perRow = (n + e - 1) / e
        let perm = RandomKey.permutation n kPerm

        let padded =
            if perRow * e = n then
                perm
            else
                Array.init (perRow * e) (fun j -> perm.[j % n])

        let inverse = Array.zeroCreate n
        perm |> Array.iteri (fun j p -> inverse.[p] <- j)
        let x = inputs m obs act |> Tensor.indexSelect 0 padded
        let grouped = x |> Tensor.reshape [| e; perRow; x.Shape.[1] |]
        let out = EnsembleMlp.forward (subset m.Elites m.Net).Net grouped
        sampleNext noise m kNoise obs (out |> Tensor.reshape [| e * perRow; -1 |] |> Tensor.indexSelect 0 inverse)

    /// One sampled model step (the model's full noise): stepWithNoise SampledNoise.
    let step (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (act: Tensor) = stepWithNoise SampledNoise m key obs act

    /// One model step in which the rows come in one block per elite: with E elites and N rows, rows
    /// [i·N/E, (i+1)·N/E) go to elite i (N must be a multiple of E). All elites are evaluated together, in one
    /// batched pass. The noise ε is standard normal [N, out] drawn from key. Otherwise as stepWithNoise.
    let stepByBlocksWithNoise (noise: PathNoise) (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (act: Tensor) =
        let n = obs.Shape.[0]
        let e = m.Elites.Length

        if n % e <> 0 then
            invalidArg "obs" (sprintf "stepByBlocks: %d rows do not split into one equal block for each of %d elites" n e)

        let x = inputs m obs act
        let out = EnsembleMlp.forward (subset m.Elites m.Net).Net (Tensor.reshape [| e; n / e; x.Shape.[1] |] x)
        sampleNext noise m key obs (Tensor.reshape [| n; -1 |] out)

    /// stepByBlocksWithNoise with the model's full noise.
    let stepByBlocks (m: DynamicsModel) (key: RandomKey) (obs: Tensor) (act: Tensor) = stepByBlocksWithNoise SampledNoise m key obs act

    let private standardise (x: Tensor) =
        let mean = Tensor.meanAxis 0 false x
        let c = x - mean

        let std =
            Tensor.sqrt (Tensor.meanAxis 0 false (c * c) + 1e-8f) |> Tensor.maximum (Tensor.fullLike mean 1e-4f)

        mean, std

    /// The rows [0, n) held out and the rows trained on: row i is held out when its uniform draw under the seed is
    /// below the fraction, so a row keeps its side at every fit however the data grows. Both sides are all rows
    /// when one of them would be empty (tiny data sets).
    let holdoutSplit (seed: int64) (fraction: float) (n: int) =
        let draws = Array.zeroCreate<float32> n
        RandomKey.fillUniform (RandomKey.ofSeed seed |> RandomKey.fold 0x401DL) (Span draws) 0
        let held, trained = Array.init n id |> Array.partition (fun i -> float draws.[i] < fraction)

        if held.Length = 0 || trained.Length = 0 then
            Array.init n id, Array.init n id
        else
            held, trained

    /// For every tensor whose leading axis is the members' ([M, …]), `updated`'s slices of the members where `take`
    /// is true and `kept`'s elsewhere; shared tensors (the log-variance bounds, [1, 1, out]) from `updated`. The masks
    /// are made once, when `take` is given.
    let private pickMembers (take: bool[]) : Tensor[] -> Tensor[] -> Tensor[] =
        if Array.forall id take then
            fun updated _ -> updated
        else
            let m = take.Length
            let mask = Tensor.ofArray [| m; 1; 1 |] (take |> Array.map (fun t -> if t then 1.0f else 0.0f))
            let rest = 1.0f - mask

            Array.map2 (fun (u: Tensor) (k: Tensor) ->
                if u.Shape.Length = 3 && u.Shape.[0] = m then
                    u * mask + k * rest
                else
                    u)

    /// Where a fit stands after some epochs: the weights being trained and their optimiser, each member's best
    /// hold-out error and the weights that reached it, and each member's epochs without a 1% improvement.
    type private FitProgress =
        {
            Net: GaussianEnsemble
            Opt: AdamState
            Best: GaussianEnsemble
            BestMse: float32[]
            Stale: int[]
            Epoch: int
            LastLoss: float32
        }

    /// What one fit trains on: the standardised inputs and targets, the hold-out rows, each member's bootstrap
    /// resample of the training rows, and the minibatch arithmetic.
    type private FitData =
        {
            Settings: DynamicsSettings
            Inputs: Tensor
            Targets: Tensor
            HoldoutInputs: Tensor
            HoldoutTargets: Tensor
            TrainRows: int
            Bootstrap: int[][]
            BatchesPerEpoch: int
            ShuffleKey: RandomKey
            Adam: AdamConfig
        }

    /// The model with the data's normalisation statistics, and the fit's data: inputs are observation and action,
    /// targets the change of observation (and the reward when the model predicts it).
    let private fitData (s: DynamicsSettings) (key: RandomKey) (m: DynamicsModel) (data: Batch) =
        let ks = RandomKey.split 4 key
        let x = Tensor.concat -1 [| data.Obs; data.Action |]

        let y =
            if m.PredictsReward then
                Tensor.concat -1 [| data.NextObs - data.Obs; Tensor.unsqueeze -1 data.Reward |]
            else
                data.NextObs - data.Obs

        let inMean, inStd = standardise x
        let tMean, tStd = standardise y
        let xn, yn = (x - inMean) / inStd, (y - tMean) / tStd
        let holdIdx, trainIdx = holdoutSplit s.HoldoutSeed s.HoldoutFraction data.Obs.Shape.[0]

        let bootstrap =
            Array.init s.Members (fun i ->
                RandomKey.integers trainIdx.Length trainIdx.Length (RandomKey.fold (int64 i) ks.[1])
                |> Array.map (fun j -> trainIdx.[j]))

        { m with InputMean = inMean; InputStd = inStd; TargetMean = tMean; TargetStd = tStd },
        {
            Settings = s
            Inputs = xn
            Targets = yn
            HoldoutInputs = Tensor.indexSelect 0 holdIdx xn
            HoldoutTargets = Tensor.indexSelect 0 holdIdx yn
            TrainRows = trainIdx.Length
            Bootstrap = bootstrap
            BatchesPerEpoch = max 1 ((trainIdx.Length + s.BatchSize - 1) / s.BatchSize)
            ShuffleKey = ks.[2]
            Adam = { AdamConfig.WithLearningRate s.LearningRate with CheckFinite = false }
        }

    /// Each member's mean squared error of its mean prediction on the hold-out rows.
    let private holdoutMse (d: FitData) (net: GaussianEnsemble) =
        let holdX = d.HoldoutInputs
        let members = d.Settings.Members

        let mean, _ =
            GaussianEnsemble.forward net (Tensor.expand [| members; holdX.Shape.[0]; holdX.Shape.[1] |] holdX)

        let err = mean - Tensor.expand mean.Shape d.HoldoutTargets
        (Tensor.meanAxis -1 false (Tensor.meanAxis -1 false (err * err))).ToArray()

    /// One minibatch step for the members still training; the stopped members' weights and moments stay. With
    /// `consume`, the memory of the weights and moments it replaces goes back to the pool when it returns
    /// (Tensor.replacing): for every minibatch but an epoch's first, whose input the epoch's progress may share.
    let private minibatch
        (d: FitData)
        (keepTraining: Tensor[] -> Tensor[] -> Tensor[])
        (shuffles: int[][])
        (consume: bool)
        (net: GaussianEnsemble, state: AdamState)
        (bi: int)
        =
        let s = d.Settings
        let size = min s.BatchSize (d.TrainRows - bi * s.BatchSize) |> max 1

        let rows =
            shuffles
            |> Array.collect (fun sh -> Array.init size (fun j -> sh.[(bi * s.BatchSize + j) % sh.Length]))

        let bx = Tensor.indexSelect 0 rows d.Inputs |> Tensor.reshape [| s.Members; size; -1 |]
        let by = Tensor.indexSelect 0 rows d.Targets |> Tensor.reshape [| s.Members; size; -1 |]
        // The minibatch's other tensors go back to the backend's pool as soon as it is done.
        let consumed = if consume then Adam.tensors (state, net) else [||]

        Tensor.replacing consumed (fun (loss, st, p: GaussianEnsemble) -> Array.append [| loss |] (Adam.tensors (st, p))) (fun () ->
            let loss, g = Maac.Diff.valueAndGradParams (fun p -> GaussianEnsemble.nll p bx by) net
            let st, p = Adam.step d.Adam state net g
            let p = Parameters.rebuild p (keepTraining (Parameters.tensors p) (Parameters.tensors net))
            let st = Parameters.rebuild st (keepTraining (Parameters.tensors st) (Parameters.tensors state))
            loss, st, p)

    /// One epoch over every member's shuffled bootstrap rows, then the hold-out error: a member whose error fell by
    /// 1% keeps these weights as its best; one that did not counts a stale epoch.
    let private epoch (d: FitData) (p: FitProgress) =
        let s = d.Settings
        let training = p.Stale |> Array.map (fun stale -> stale < s.Patience)
        let keepTraining = pickMembers training

        let shuffles =
            d.Bootstrap
            |> Array.mapi (fun i b ->
                RandomKey.permutation b.Length (RandomKey.fold (int64 (p.Epoch * s.Members + i)) d.ShuffleKey)
                |> Array.map (fun j -> b.[j]))
        // Losses are read once per epoch (with the hold-out error), not per minibatch: no wait for the device
        // inside the epoch. A non-finite loss still stops the fit, at the end of its epoch.
        let (net, opt), losses =
            Array.mapFold
                (fun state bi ->
                    let loss, st, net = minibatch d keepTraining shuffles (bi > 0) state bi
                    loss, (net, st))
                (p.Net, p.Opt)
                [| 0 .. d.BatchesPerEpoch - 1 |]
            |> fun (losses, state) -> state, Tensor.toScalars losses

        match losses |> Array.tryFindIndex (Single.IsFinite >> not) with
        | Some bi ->
            raise (
                NonFiniteException(sprintf "dynamics model training: the loss became %g at minibatch %d of epoch %d" losses.[bi] bi p.Epoch)
            )
        | None -> ()

        let mse = holdoutMse d net
        let improved = Array.map2 (fun (now: float32) (best: float32) -> now < 0.99f * best) mse p.BestMse

        let stale improved training stale =
            if improved then 0
            elif training then stale + 1
            else stale

        {
            Net = net
            Opt = opt
            Best = Parameters.rebuild net (pickMembers improved (Parameters.tensors net) (Parameters.tensors p.Best))
            BestMse = Array.map3 (fun i now best -> if i then now else best) improved mse p.BestMse
            Stale = Array.map3 stale improved training p.Stale
            Epoch = p.Epoch + 1
            LastLoss = Array.last losses
        }

    /// Fits the ensemble on all transitions of a buffer, as MBPO and mbrl-lib do: statistics recomputed, a fixed
    /// hold-out split (holdoutSplit), a bootstrap resample of the training rows per member, minibatch Adam on the
    /// Gaussian NLL with the log-variance bound penalty. Each member keeps the weights of its best hold-out error (a
    /// 1% improvement counts) and stops on its own after Patience epochs without one (its weights then stay fixed);
    /// the fit ends when every member has stopped or after MaxEpochs. Elites are the members with the lowest best
    /// hold-out error.
    let fit (s: DynamicsSettings) (key: RandomKey) (m: DynamicsModel) (opt: AdamState) (data: Batch) =
        let m, d = fitData s key m data

        let rec run (p: FitProgress) =
            if p.Epoch >= s.MaxEpochs || Array.forall (fun stale -> stale >= s.Patience) p.Stale then
                p
            else
                run (epoch d p)

        let final =
            run
                {
                    Net = m.Net
                    Opt = opt
                    Best = m.Net
                    BestMse = holdoutMse d m.Net
                    Stale = Array.zeroCreate s.Members
                    Epoch = 0
                    LastLoss = nanf
                }

        let elites =
            final.BestMse
            |> Array.indexed
            |> Array.sortBy snd
            |> Array.truncate (min s.EliteCount s.Members)
            |> Array.map fst
            |> Array.sort

        { m with Net = final.Best; Elites = elites },
        final.Opt,
        { Epochs = final.Epoch; HoldoutMse = final.BestMse; TrainLoss = final.LastLoss }
