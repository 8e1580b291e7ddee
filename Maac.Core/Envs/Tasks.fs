namespace Maac.Envs

open Maac

open System
open Maac.Tensors
open Maac.Envs.MuJoCo

/// A built-in task: its sizes, episode length, what it needs installed, and how to make it.
type TaskInfo =
    {
        Name: string
        ObservationDim: int
        ActionDim: int
        /// Steps per episode (the TimeLimit applied by Create).
        EpisodeSteps: int
        /// The Debian package the task needs, if any.
        Requires: string option
        /// The published definition the task follows ("Gymnasium v5", "MBBL", ...), or "built-in" for Maac's own.
        Definition: string
        /// Reward and termination as tensor functions, for model rollouts.
        Functions: TaskFunctions
        /// A new environment wrapped in its time limit.
        Create: unit -> IEnv
        /// What the environment checker warned about (a user's environment only; empty for built-in tasks).
        Warnings: string list
    }

/// The registry of built-in tasks.
module Tasks =
    let private managed name definition obs act steps functions (make: unit -> IEnv) =
        {
            Name = name
            ObservationDim = obs
            ActionDim = act
            EpisodeSteps = steps
            Requires = None
            Definition = definition
            Functions = functions
            Create = (fun () -> new TimeLimit(make (), steps) :> IEnv)
            Warnings = []
        }

    let private mujoco (task: MuJoCoTask) =
        let make () = MuJoCoTasks.create task :> IEnv

        { managed task.Spec.Name task.Definition task.ObservationDim task.ActionDim task.EpisodeSteps task.Functions make with
            Requires = Some "libmujoco2.2.2"
        }

    /// Every built-in task, managed ones first.
    let all =
        [
            managed "Pendulum" "Gymnasium Pendulum-v1" 3 1 200 Pendulum.Functions (fun () -> new Pendulum())
            managed "DoubleIntegrator" "MAAC paper (Fig. 3)" 2 1 25 DoubleIntegrator.Functions (fun () -> new DoubleIntegrator())
            managed "MountainCarContinuous" "built-in" 2 1 999 MountainCarContinuous.Functions (fun () -> new MountainCarContinuous())
            managed "CartPoleSwingUp" "built-in" 5 1 200 CartPoleSwingUp.Functions (fun () -> new CartPoleSwingUp())
        ]
        @ List.map mujoco (GymnasiumTasks.all @ MbblTasks.all)

    /// Whether the task can run on this machine.
    let isAvailable (t: TaskInfo) = t.Requires.IsNone || Library.isAvailable ()

    /// The task with this name (case-insensitive); a clear error listing the names otherwise.
    let find (name: string) =
        match all |> List.tryFind (fun t -> String.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase)) with
        | Some t -> t
        | None ->
            invalidArg "name" (sprintf "unknown task '%s'; built-in tasks: %s" name (String.Join(", ", all |> List.map (fun t -> t.Name))))

    /// A task for any environment (a user's own): `create` makes a fresh instance (training uses one,
    /// evaluation one per parallel episode); each is wrapped in a TimeLimit of `episodeSteps`. Reward and
    /// termination functions (null when absent) let model rollouts use the true reward; without a reward
    /// function the dynamics model learns it. One instance is made and checked with EnvChecker first (its
    /// reward and termination functions compared with Step on the sampled transitions), so a malformed environment
    /// is refused here with every problem listed once; `strictDeterminism` makes a seed that does not fix the
    /// episode a problem instead of a warning. Warnings are kept in the task's Warnings.
    let customWith
        (create: Func<IEnv>)
        (episodeSteps: int)
        (reward: Func<Tensor, Tensor, Tensor, Tensor>)
        (termination: Func<Tensor, Tensor, Tensor, Tensor>)
        (strictDeterminism: bool)
        =
        if isNull create then
            nullArg "create"

        if episodeSteps <= 0 then
            invalidArg "episodeSteps" (sprintf "the episode length must be positive, got %d" episodeSteps)

        let make () =
            let env = create.Invoke()

            if isNull (box env) then
                invalidOp "the environment factory returned null"

            env

        let lift (f: Func<Tensor, Tensor, Tensor, Tensor>) =
            if isNull f then
                None
            else
                Some(fun o a n -> f.Invoke(o, a, n))

        let functions = { Reward = lift reward; Termination = lift termination }
        use probe = make ()

        let warnings =
            EnvChecker.ensureWith { EnvChecker.defaults with StrictDeterminism = strictDeterminism; Functions = functions } probe

        {
            Name = probe.Name
            ObservationDim = probe.ObservationSpace.Dim
            ActionDim = probe.ActionSpace.Dim
            EpisodeSteps = episodeSteps
            Requires = None
            Definition = "user"
            Functions = functions
            Create = (fun () -> new TimeLimit(make (), episodeSteps) :> IEnv)
            Warnings = warnings
        }

    /// customWith, determinism a warning.
    let custom create episodeSteps reward termination = customWith create episodeSteps reward termination false

    /// A new environment for the named task (MuJoCoUnavailableException, naming the package, when it cannot run here).
    let make (name: string) =
        let t = find name

        if not (isAvailable t) then
            Library.ensure ()

        t.Create()
