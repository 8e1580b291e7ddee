namespace Maac.Training

open Maac.Algorithms
open Maac.Persistence

open System

/// The samples a remaining-time estimate is made from: (environment step, seconds since the call began) at every
/// `Stride`-th step of the learning phase, newest first. Random-action steps are far faster than learning steps and
/// say nothing about them, so only the learning phase is sampled.
type RemainingTime =
    {
        /// The step the learning phase of this call starts from (the last random step, or the first step of a
        /// call that resumes a run already learning).
        LearningStart: int
        /// The step this call trains to.
        Until: int
        /// Steps between samples (about 200 samples over the learning phase).
        Stride: int
        /// Samples, newest first; the first is the learning phase's start once it was reached.
        Samples: struct (int * float) list
    }

/// Estimating a run's remaining time from the recent rate of its learning phase.
module RemainingTime =
    /// Learning steps a rate needs before it is shown: at least this many, and at least 1% of the phase.
    [<Literal>]
    let MinimumSteps = 10

    /// An estimator for a call training from `startStep` to `until` with the first `randomSteps` steps random.
    let create (randomSteps: int) (startStep: int) (until: int) =
        let learningStart = max randomSteps startStep

        {
            LearningStart = learningStart
            Until = until
            Stride = max 1 ((until - learningStart) / 200)
            Samples = []
        }

    /// The estimator after step `step` ended at `seconds` (steps come in order).
    let observe (step: int) (seconds: float) (r: RemainingTime) =
        if step = r.LearningStart || (step > r.LearningStart && (step - r.LearningStart) % r.Stride = 0) then
            { r with Samples = struct (step, seconds) :: r.Samples }
        else
            r

    /// The time left at step `step` and `seconds`, from the learning rate over the more recent half of the learning
    /// steps taken so far; None before the learning phase has a measured rate.
    let estimate (step: int) (seconds: float) (r: RemainingTime) =
        let learned = step - r.LearningStart
        let measured = learned >= max MinimumSteps ((r.Until - r.LearningStart) / 100)

        if not measured then
            None
        else
            let middle = r.LearningStart + learned / 2

            // The newest sample at or before the middle of the learning steps so far (the phase's start at worst).
            match r.Samples |> List.tryFind (fun (struct (s, _)) -> s <= middle) with
            | Some(struct (fromStep, fromSeconds)) when step > fromStep && seconds > fromSeconds ->
                Some(TimeSpan.FromSeconds(float (r.Until - step) * (seconds - fromSeconds) / float (step - fromStep)))
            | _ -> None
