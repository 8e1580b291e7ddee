namespace Maac.Algorithms

/// The named stages of training work: acting, the environment, the model fit, imagined rollouts, batch sampling,
/// each part of a gradient step, evaluation. Training runs them through an IStageClock, which the whole-step
/// benchmark (`maac bench --env TASK --algo A`) uses to time them; training itself runs each as it is.
module StageName =
    [<Literal>]
    let Acting = "acting"

    [<Literal>]
    let Environment = "environment"

    [<Literal>]
    let ModelFit = "model fit"

    [<Literal>]
    let ImaginedRollouts = "imagined rollouts"

    [<Literal>]
    let BatchSampling = "batch sampling"

    [<Literal>]
    let CriticTargets = "critic targets"

    [<Literal>]
    let CriticUpdate = "critic update"

    [<Literal>]
    let ActorUpdate = "actor update"

    [<Literal>]
    let Temperature = "temperature"

    [<Literal>]
    let ReadBackAndPolyak = "read-back and Polyak"

    [<Literal>]
    let Evaluation = "evaluation"

    /// Every stage, in the order of a training step.
    let all =
        [|
            Acting
            Environment
            ModelFit
            ImaginedRollouts
            BatchSampling
            CriticTargets
            CriticUpdate
            ActorUpdate
            Temperature
            ReadBackAndPolyak
            Evaluation
        |]

/// Observes the stages of training work (StageName); a stage may run inside another.
type IStageClock =
    /// Runs the work of the named stage and returns its result.
    abstract Stage<'T> : name: string * work: (unit -> 'T) -> 'T

/// Stage clocks.
module StageClock =
    /// Runs every stage as it is: what training uses.
    let untimed =
        { new IStageClock with
            member _.Stage(_, work) = work ()
        }
