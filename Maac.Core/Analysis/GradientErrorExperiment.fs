namespace Maac.Analysis

open Maac.Tensors
open Maac.Optim
open Maac.Rl

/// Settings of the gradient-error experiment (paper Figure 3): a linear-Gaussian policy on the double
/// integrator, its exact policy gradient, and the MAAC estimate for each H with a learned Q and either the
/// true dynamics or a learned ensemble.
type GradientErrorSettings =
    {
        Horizons: int
        Seeds: int
        /// Start states per estimate (drawn from the block distribution of each H).
        Samples: int
        /// Transitions collected to learn Q.
        DataSize: int
        /// The first this many of them also train the model (a model fitted on little data, as early in training).
        ModelData: int
        /// Gradient steps of TD learning for Q.
        CriticSteps: int
        Hidden: int[]
        ModelMembers: int
        ModelEpochs: int
        Policy: float[,]
        /// Exploration noise of the data-collecting policy (the evaluated policy's noise is the problem's).
        ExplorationStd: float
    }

    /// The default budget: about 10 seconds per seed on two cores.
    static member Default =
        {
            Horizons = 15
            Seeds = 5
            Samples = 4096
            DataSize = 20_000
            ModelData = 1000
            CriticSteps = 15_000
            Hidden = [| 64; 64 |]
            ModelMembers = 5
            ModelEpochs = 50
            Policy = array2D [ [ -0.5; -0.8 ] ]
            ExplorationStd = 0.3
        }

/// One row of the experiment: for one seed and horizon, the L1 errors of the estimate against the exact gradient.
type GradientErrorRow =
    {
        Seed: int
        Horizon: int
        /// True dynamics, exact Q: Monte-Carlo noise only (the reference floor).
        ExactQ: float
        /// True dynamics, learned Q.
        TrueDynamics: float
        /// Learned ensemble, learned Q.
        LearnedDynamics: float
        /// ‖exact gradient‖₁, for scale.
        GradientNorm: float
    }

/// The gradient-error experiment.
module GradientErrorExperiment =
    /// The paper's problem: the double integrator (dt 0.05), reward −½(x² + v² + u²), γ 0.9, start (1, 1),
    /// policy noise σ = 0.1. The infinite discounted horizon replaces the paper's 25-step episodes
    /// (γ²⁵ ≈ 0.07), so that a stationary Q exists.
    let problem =
        {
            A = Maac.Envs.DoubleIntegrator.A
            B = Maac.Envs.DoubleIntegrator.B
            Q = Maac.Envs.DoubleIntegrator.Q
            R = Maac.Envs.DoubleIntegrator.R
            Gamma = 0.9
            NoiseStd = 0.1
            Start = Maac.Envs.DoubleIntegrator.Start
        }

    let private l1 (a: float[,]) (b: float[,]) = Seq.sum (Seq.map2 (fun x y -> abs (x - y)) (Seq.cast<float> a) (Seq.cast<float> b))

    /// Transitions of the exploring policy from block starts of all horizons (covering where estimates start and go).
    let private collect (p: LqProblem) (s: GradientErrorSettings) (key: RandomKey) =
        let ks = RandomKey.split 3 key

        let starts =
            LinearQuadratic.sampleBlockStarts { p with NoiseStd = s.ExplorationStd } s.Policy 0 ks.[0] s.DataSize

        let obs = starts |> Array.concat |> Array.map float32 |> Tensor.ofArray [| s.DataSize; p.StateDim |]

        let act =
            Tensor.matmulWith false true obs (Mat.toTensor s.Policy) None
            + float32 s.ExplorationStd * Tensor.randn ks.[1] [| s.DataSize; p.ActionDim |]

        let next, r, d = PathwiseGradient.trueStep p ks.[2] obs act
        { Obs = obs; Action = act; Reward = r; NextObs = next; Done = d }

    /// Twin critics trained by TD(0) on the data for the evaluated policy (its own noise), with Polyak targets.
    let learnQ (p: LqProblem) (s: GradientErrorSettings) (key: RandomKey) (data: Batch) =
        let ks = RandomKey.split 2 key
        let critics0 = Critics.init ks.[0] p.StateDim p.ActionDim s.Hidden
        let cfg = AdamConfig.WithLearningRate 1e-3f
        let kt = Mat.toTensor s.Policy
        let n = data.Obs.Shape.[0]

        let rec go (i: int) (c: Critics) (target: Critics) (opt: AdamState) =
            if i = s.CriticSteps then
                c
            else
                let k = RandomKey.fold (int64 i) ks.[1]
                let k1, k2 = RandomKey.split2 k
                let idx = RandomKey.integers 256 n k1
                let pick (t: Tensor) = Tensor.indexSelect 0 idx t
                let o, a, r, o2 = pick data.Obs, pick data.Action, pick data.Reward, pick data.NextObs
                let a2, _ = PathwiseGradient.linearPolicy (float32 p.NoiseStd) kt k2 o2
                let y = r + float32 p.Gamma * Critics.minQ target o2 a2
                let _, g = Maac.Diff.valueAndGradParams (Objectives.critic o a y) c
                let opt, c = Adam.step cfg opt c g
                go (i + 1) c (Polyak.update 0.01f target c) opt

        go 0 critics0 critics0 (Adam.init critics0)

    /// A probabilistic ensemble fitted to the data (state change only; the reward is the known quadratic).
    let learnModel (p: LqProblem) (s: GradientErrorSettings) (key: RandomKey) (data: Batch) =
        let ds =
            {
                Members = s.ModelMembers
                EliteCount = max 1 (s.ModelMembers - 1)
                Hidden = s.Hidden
                LearningRate = 1e-3f
                BatchSize = 256
                MaxEpochs = s.ModelEpochs
                HoldoutFraction = 0.2
                Patience = 5
                HoldoutSeed = 0L
            }

        let k1, k2 = RandomKey.split2 key
        let m0 = Dynamics.init k1 ds p.StateDim p.ActionDim false
        let m, _, report = Dynamics.fit ds k2 m0 (Adam.init m0.Net) data

        let reward: Maac.Envs.TaskFunctions =
            { Reward = Some(fun o a _ -> PathwiseGradient.reward p o a); Termination = None }

        {
            Model = m
            Task = reward
            ActionLow = Tensor.full [| p.ActionDim |] -1.0f
            ActionHigh = Tensor.full [| p.ActionDim |] 1.0f
            PathNoise = SampledNoise
        },
        report

    /// Runs one seed: learns Q and the model, then estimates the gradient for H = 0 … Horizons.
    let runSeed (s: GradientErrorSettings) (seed: int) =
        let p = problem
        let ks = RandomKey.split 4 (RandomKey.ofSeed (int64 seed))
        let data = collect p s ks.[0]
        let critics = learnQ p s ks.[1] data
        let first (t: Tensor) = Tensor.slice 0 0 (min s.ModelData s.DataSize) t

        let modelData =
            {
                Obs = first data.Obs
                Action = first data.Action
                Reward = first data.Reward
                NextObs = first data.NextObs
                Done = first data.Done
            }

        let ctx, _ = learnModel p s ks.[2] modelData
        let exact = LinearQuadratic.exactGradient p s.Policy
        let w = LinearQuadratic.qWeights p s.Policy
        let learnedQ = Critics.minQ critics

        [
            for h in 0 .. s.Horizons do
                let k1, k2 = RandomKey.split2 (RandomKey.fold (int64 h) ks.[3])

                let starts =
                    LinearQuadratic.sampleBlockStarts p s.Policy h k1 s.Samples
                    |> Array.concat
                    |> Array.map float32
                    |> Tensor.ofArray [| s.Samples; p.StateDim |]

                let estimate step terminal = PathwiseGradient.estimate p h step terminal s.Policy k2 starts

                yield
                    {
                        Seed = seed
                        Horizon = h
                        ExactQ = l1 (estimate (PathwiseGradient.trueStep p) (PathwiseGradient.quadraticValue w None)) exact
                        TrueDynamics = l1 (estimate (PathwiseGradient.trueStep p) learnedQ) exact
                        LearnedDynamics = l1 (estimate (Rollout.step ctx) learnedQ) exact
                        GradientNorm = Seq.sumBy abs (Seq.cast<float> exact)
                    }
        ]
