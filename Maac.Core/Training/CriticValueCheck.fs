namespace Maac.Training

open Maac
open Maac.Algorithms

open System
open Maac.Tensors
open Maac.Rl

/// Critics whose values have left what the rewards allow. A soft Q-function is bounded by the rewards it sums, so twin
/// critics that value the run's own real transitions above the most any policy could earn are diverging even while
/// every number stays finite (the divergence checks of a gradient step see only NaN and infinity).
module CriticValueCheck =
    /// The largest soft value Q(s, a) = r₀ + Σₜ≥₁ γᵗ (rₜ − α log π(aₜ|sₜ)) that a policy on actions in [−1, 1]^d can
    /// have when every reward is at most rMax and the temperature at most α, episodes ending whenever they may:
    /// rMax + γ max(0, rMax + α d ln 2) / (1 − γ). The expected −log π of a density on [−1, 1]^d (its entropy) is at
    /// most d ln 2, the uniform density's. Infinite for γ ≥ 1.
    let softValueBound (gamma: float32) (alpha: float32) (actionDim: int) (rMax: float32) =
        if gamma >= 1.0f then
            Single.PositiveInfinity
        else
            let perStep = rMax + alpha * float32 actionDim * MathF.Log 2.0f
            rMax + gamma * max 0.0f perStep / (1.0f - gamma)

    /// The mean critic value above which the critics are called diverging: max(bound, 0) + rAbs, for a soft value
    /// bound `bound` and rewards of magnitude at most rAbs. A critic starts near 0 (its initialisation) and moves
    /// toward values at most `bound`; while every reward is negative the bound is negative too, and a critic that has
    /// not yet learned how negative sits between its start and the truth: learning, not diverging. The largest reward
    /// magnitude, one step's worth of value, covers the start's offset from 0; a diverging critic leaves such a margin
    /// far behind (it grows on its own overestimates).
    let divergenceThreshold (bound: float32) (rAbs: float32) = max bound 0.0f + rAbs

    /// Real transitions the check values (all of them when the buffer holds fewer).
    [<Literal>]
    let SampleSize = 1000

    /// What a run's critics are checked against, from its buffers and temperatures so far.
    type Limits =
        {
            /// The largest reward in either buffer.
            RewardMax: float32
            /// The largest reward magnitude |r| in either buffer.
            RewardMagnitude: float32
            /// The largest temperature the critics may have learned with: the initial α = 1 and every α the metrics
            /// rows and the last gradient step recorded.
            Alpha: float32
            /// softValueBound of the above.
            Bound: float32
            /// divergenceThreshold of Bound and RewardMagnitude: the mean value a sound critic stays at or below.
            Threshold: float32
        }

    /// The limits for a run with `settings` in state `st` (γ < 1).
    let limits (settings: Settings) (st: TrainingState) =
        let alpha = st.Metrics |> List.fold (fun m r -> max m r.Alpha) (max 1.0f st.LastUpdate.Alpha)
        let rMax = max st.Real.MaxReward st.Imagined.MaxReward
        let rAbs = max st.Real.MaxRewardMagnitude st.Imagined.MaxRewardMagnitude
        let bound = softValueBound settings.Gamma alpha st.Real.ActDim rMax

        {
            RewardMax = rMax
            RewardMagnitude = rAbs
            Alpha = alpha
            Bound = bound
            Threshold = divergenceThreshold bound rAbs
        }

    /// Raises DivergenceException (part "critic") when the mean of min(Q1, Q2) over real transitions drawn with `key`
    /// exceeds the Threshold of `limits`; the message names the step, the mean, the threshold and what it was made
    /// of. Nothing is checked when the settings switch it off (CriticValueCheck), for γ ≥ 1 or before the first
    /// gradient step.
    let check (settings: Settings) (key: RandomKey) (st: TrainingState) =
        let trained = st.Step > settings.RandomSteps && st.Real.Count > 0

        if settings.CriticValueCheck && trained && settings.Gamma < 1.0f then
            let l = limits settings st
            let b = st.Real.Sample(key, min SampleSize st.Real.Count)
            let mean = Critics.minQ st.Agent.Critics b.Obs b.Action |> Tensor.mean |> Tensor.toScalar

            if not (mean <= l.Threshold) then
                raise (
                    DivergenceException(
                        "critic",
                        sprintf
                            "training diverged at step %d: the critics value %d real transitions at %g on average (the smaller of the twins), above %g: the larger of 0 and %g, the most any policy can be worth with rewards of at most %g, a temperature of at most %g, %d action dimensions and γ = %g, plus the largest reward magnitude %g (to train on regardless, resume with \"CriticValueCheck\": false in its config.json)"
                            st.Step
                            b.Obs.Shape.[0]
                            mean
                            l.Threshold
                            l.Bound
                            l.RewardMax
                            l.Alpha
                            st.Real.ActDim
                            settings.Gamma
                            l.RewardMagnitude
                    )
                )
