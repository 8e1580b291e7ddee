using Maac.Algorithms;
using Maac.Persistence;
using Maac.Tensors;
using Maac.Training;

namespace Maac;

/// <summary>
/// A reinforcement-learning agent bound to one environment: it trains, acts, evaluates, and saves to and
/// loads from run folders (the layout the command line writes). Use the algorithm classes
/// (<see cref="MaacAgent"/>, <see cref="SacAgent"/>, <see cref="MbpoAgent"/>, <see cref="SteveAgent"/>,
/// <see cref="Svg1Agent"/>) to create one, and <see cref="Load(string)"/> to open any saved run.
/// Dispose it to release its environments (MuJoCo tasks hold native memory).
/// </summary>
/// <remarks>
/// <see cref="Act(float[], bool)"/> and <see cref="Evaluate"/> may be called while training runs on another thread; they
/// see the parameters of the last finished gradient step. Only one Train call may run at a time.
/// </remarks>
public abstract class Agent : IDisposable
{
    private const long ActingStream = 0x4163_7473; // keys of stochastic Act calls, apart from training's
    private const int ProgressReports = 200; // per Train call, besides one per evaluation
    private readonly RunSession session; // the run and its folder, shared with the command line
    private readonly List<EvaluationRecord> evaluations = [];
    private long actCalls;
    private int training;
    private bool disposed;

    private protected Agent(RunSession session)
    {
        this.session = session;
        // A loaded agent's history is the run's: the evaluations its checkpoint carries.
        foreach (var row in trainer.Metrics)
            evaluations.Add(EvaluationRecord.Of(row));
    }

    private Trainer trainer => session.Trainer;

    /// <summary>Starts the run for a task and options, starting the run folder when one is asked for.</summary>
    private protected static RunSession Start(Envs.TaskInfo task, AgentOptions options)
    {
        options.ApplyRuntime();
        var settings = options.ToSettings(task.Name);
        if (settings.ModelElites > settings.ModelMembers)
            throw new ArgumentOutOfRangeException(
                nameof(ModelBasedOptions.ModelElites),
                settings.ModelElites,
                $"more elites than the {settings.ModelMembers} ensemble members"
            );
        var folder = options.RunDirectory is { } dir
            ? Microsoft.FSharp.Core.FSharpOption<string>.Some(dir)
            : Microsoft.FSharp.Core.FSharpOption<string>.None;
        return RunSession.Start(settings, Algorithms.Algorithms.find(settings.Algorithm), task, folder);
    }

    /// <summary>The library task of a built-in environment name; a clear error listing the names otherwise.</summary>
    private protected static Envs.TaskInfo BuiltIn(string environment)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(environment);
        try
        {
            return Envs.Tasks.find(environment);
        }
        catch (ArgumentException e)
        {
            throw ArgumentErrors.For(e, nameof(environment));
        }
    }

    /// <summary>The library task of a user's environment, checked by the environment checker.</summary>
    private protected static Envs.TaskInfo Custom(Func<IEnvironment> environmentFactory, bool strictChecks = false) =>
        EnvironmentAdapter.ToTask(environmentFactory, strictChecks);

    /// <summary>Starts the run for a user's environment, checked as the options ask.</summary>
    private protected static RunSession StartCustom(Func<IEnvironment> environmentFactory, AgentOptions options) =>
        Start(Custom(environmentFactory, options.StrictEnvironmentChecks), options);

    /// <summary>
    /// A folder for TensorBoard event files, as Stable-Baselines3's <c>tensorboard_log</c>: each call of Train writes a
    /// new file <c>events.out.tfevents.*</c> there with the evaluation returns, training episode returns and lengths,
    /// losses, α, the model's hold-out error and steps per second (SB3's tags: <c>eval/mean_reward</c>,
    /// <c>rollout/ep_rew_mean</c>, <c>train/critic_loss</c>, ...). View with <c>tensorboard --logdir</c>. Null (the
    /// default) writes none.
    /// </summary>
    public string? TensorBoardDirectory { get; set; }

    /// <summary>
    /// What the environment checker warned about when the agent was created (for example that a seed does not fix an
    /// episode); empty for built-in tasks. Each warning is also written to standard error once.
    /// </summary>
    public IReadOnlyList<string> EnvironmentWarnings => trainer.Task.Warnings.ToArray();

    /// <summary>The algorithm's name (maac, sac, mbpo, steve, svg1).</summary>
    public string Algorithm => trainer.Algorithm.Name;

    /// <summary>The environment's name.</summary>
    public string Environment => trainer.Task.Name;

    /// <summary>Environment steps trained so far.</summary>
    public int Step => trainer.Step;

    /// <summary>The training budget in environment steps.</summary>
    public int TotalSteps => trainer.Settings.Steps;

    /// <summary>The observation size <see cref="Act(float[], bool)"/> expects.</summary>
    public int ObservationSize => trainer.ObservationDim;

    /// <summary>The action space <see cref="Act(float[], bool)"/>'s actions lie in.</summary>
    public BoxSpace ActionSpace => BoxSpace.FromCore(trainer.ActionSpace);

    /// <summary>The run folder this agent trains into, or null when it lives in memory.</summary>
    public string? RunDirectory => session.Folder?.Value;

    /// <summary>The evaluations made during training by this object, oldest first.</summary>
    public IReadOnlyList<EvaluationRecord> Evaluations => evaluations.ToArray();

    /// <summary>
    /// Trains for <paramref name="steps"/> more environment steps, evaluating every EvaluationInterval steps. Beyond
    /// <see cref="TotalSteps"/> the budget is raised (as Stable-Baselines3's <c>learn(n, reset_num_timesteps=False)</c>):
    /// a loaded agent continues its run. Progress is reported at every evaluation and about 200 times in between.
    /// With a run folder, a checkpoint is written at every evaluation and when training stops. Callbacks see every
    /// evaluation, episode and checkpoint, and may stop training (Train then returns normally).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="steps"/> is not positive.</exception>
    /// <exception cref="OperationCanceledException">Cancelled: training stopped after the current step, leaving the agent valid (and a checkpoint in the run folder).</exception>
    /// <exception cref="DivergenceException">A loss, gradient or parameter became NaN or infinite; the last good checkpoint stays.</exception>
    public void Train(
        int steps,
        IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default,
        params ITrainingCallback[] callbacks
    )
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(steps);
        ArgumentNullException.ThrowIfNull(callbacks);
        if (Interlocked.Exchange(ref training, 1) == 1)
            throw new InvalidOperationException("this agent is already training");
        try
        {
            if (steps > TotalSteps - Step)
                session.SetBudget(Step + steps);
            WarnIfOnlyRandom(steps);
            var first = Step;
            var every = Math.Max(1, (steps + ProgressReports - 1) / ProgressReports);
            var evaluated = false;
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            using var log = TensorBoardDirectory is { } logDirectory ? new TensorBoardLog(logDirectory) : null;
            void Notify(Func<ITrainingCallback, bool> call)
            {
                foreach (var c in callbacks)
                    if (!call(c))
                        stop.Cancel();
            }
            void OnProgress(ProgressInfo p)
            {
                foreach (var c in callbacks)
                    c.OnStep(this, p.Step);
                if (progress is null || ((p.Step - first) % every != 0 && p.Step < p.TotalSteps && !evaluated))
                {
                    evaluated = false;
                    return;
                }
                evaluated = false;
                progress.Report(ProgressOf(p));
            }
            void OnEvent(TrainingEvent e)
            {
                log?.Publish(e);
                switch (e)
                {
                    case TrainingEvent.EpisodeEnded ended:
                        Notify(c =>
                            c.OnEpisode(this, new EpisodeRecord(ended.step, ended.episodeReturn, ended.length, trainer.State.WallSeconds))
                        );
                        break;
                    case TrainingEvent.Evaluated { Item: var row }:
                        var record = EvaluationRecord.Of(row);
                        evaluations.Add(record);
                        Notify(c => c.OnEvaluation(this, record));
                        evaluated = true; // the progress report of this step follows at once
                        break;
                    case TrainingEvent.Stepped { Item: var p }:
                        OnProgress(p);
                        break;
                }
            }
            void OnCheckpoint(string path)
            {
                foreach (var c in callbacks)
                    c.OnCheckpoint(this, path);
            }
            session.Train(Step + steps, FuncConvert<TrainingEvent>(OnEvent), FuncConvert<string>(OnCheckpoint), stop.Token);
            cancellationToken.ThrowIfCancellationRequested();
        }
        finally
        {
            Volatile.Write(ref training, 0);
        }
    }

    /// <summary>What a progress report says of a training step (null where a figure is not known yet).</summary>
    private static TrainingProgress ProgressOf(ProgressInfo p) =>
        new(
            p.Step,
            p.TotalSteps,
            p.StepsPerSecond,
            Known(p.LastEpisodeReturn),
            Known(p.LastEvalReturn),
            p.HasUpdated ? p.LastUpdate.CriticLoss : null,
            p.HasUpdated ? p.LastUpdate.ActorLoss : null,
            p.HasUpdated ? p.LastUpdate.Alpha : null,
            p.Remaining is null ? null : p.Remaining.Value
        );

    /// <summary>Warns on standard error when a Train call ends within the random steps (nothing would be learned).</summary>
    private void WarnIfOnlyRandom(int steps)
    {
        if (Step + steps <= trainer.Settings.RandomSteps)
            Console.Error.WriteLine(
                $"warning: {Algorithm} on {Environment}: Train({steps}) ends at step {Step + steps}, within the first {trainer.Settings.RandomSteps} steps of random actions (RandomSteps), so nothing is learned; lower RandomSteps in the options or train longer"
            );
    }

    /// <summary>Trains on a thread-pool thread; see <see cref="Train"/>.</summary>
    public Task TrainAsync(
        int steps,
        IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default,
        params ITrainingCallback[] callbacks
    ) => System.Threading.Tasks.Task.Run(() => Train(steps, progress, cancellationToken, callbacks), CancellationToken.None);

    /// <summary>The policy's action for an observation, in <see cref="ActionSpace"/>: its mean when
    /// <paramref name="deterministic"/>, otherwise a sample (a new one at every call, reproducible from the seed).</summary>
    /// <exception cref="ArgumentException">The observation has the wrong size or holds NaN or infinity.</exception>
    public float[] Act(float[] observation, bool deterministic = true)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentNullException.ThrowIfNull(observation);
        var key = RandomKeyModule.fold(
            Interlocked.Increment(ref actCalls),
            RandomKeyModule.fold(ActingStream, RandomKeyModule.ofSeed(trainer.Settings.Seed))
        );
        try
        {
            return trainer.Act(observation, deterministic, key);
        }
        catch (ArgumentException e)
        {
            throw ArgumentErrors.For(e, nameof(observation));
        }
    }

    /// <summary>
    /// Runs <paramref name="episodes"/> episodes in parallel with the deterministic policy (episode i seeded from i), on
    /// the agent's environment or on <paramref name="environment"/> (for example a wrapped copy of the same task);
    /// the result holds every episode's return and length.
    /// </summary>
    public EvaluationResult Evaluate(int episodes = 10, Func<IEnvironment>? environment = null)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(episodes);
        var onTask = environment is null ? null : EnvironmentAdapter.ToTask(environment);
        var results = trainer.EvaluateEpisodes(
            episodes,
            onTask is null
                ? Microsoft.FSharp.Core.FSharpOption<Envs.TaskInfo>.None
                : Microsoft.FSharp.Core.FSharpOption<Envs.TaskInfo>.Some(onTask)
        );
        return EvaluationResult.Of(results.Select(r => r.Return).ToArray(), results.Select(r => r.Length).ToArray());
    }

    /// <summary>The policy's actions for a batch of observations (one per row), in <see cref="ActionSpace"/>.</summary>
    /// <exception cref="ArgumentException">A row has the wrong size or holds NaN or infinity.</exception>
    public float[,] Act(float[,] observations, bool deterministic = true)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentNullException.ThrowIfNull(observations);
        var rows = new float[observations.GetLength(0)][];
        for (var r = 0; r < rows.Length; r++)
        {
            rows[r] = new float[observations.GetLength(1)];
            for (var c = 0; c < rows[r].Length; c++)
                rows[r][c] = observations[r, c];
        }
        var key = RandomKeyModule.fold(
            Interlocked.Increment(ref actCalls),
            RandomKeyModule.fold(ActingStream, RandomKeyModule.ofSeed(trainer.Settings.Seed))
        );
        float[][] actions;
        try
        {
            actions = trainer.ActBatch(rows, deterministic, key);
        }
        catch (ArgumentException e)
        {
            throw ArgumentErrors.For(e, nameof(observations));
        }
        var result = new float[rows.Length, ActionSpace.Dimension];
        for (var r = 0; r < rows.Length; r++)
        for (var c = 0; c < actions[r].Length; c++)
            result[r, c] = actions[r][c];
        return result;
    }

    /// <summary>
    /// Evaluates with test-time model-predictive control: at every step a CEM planner (256 candidates, horizon 5,
    /// 5 iterations, seeded from the policy) refines the action with the learned model and the terminal Q.
    /// </summary>
    /// <exception cref="InvalidOperationException">The agent has no fitted model (model-free, or not trained past RandomSteps).</exception>
    public EvaluationResult EvaluateWithPlanner(int episodes = 10)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(episodes);
        var (mean, std) = trainer.EvaluateWithPlanner(Rl.CemSettings.Paper, episodes);
        return new EvaluationResult(mean, std, episodes, [], []);
    }

    /// <summary>
    /// Writes the deterministic policy as an ONNX model (opset 13) that runs without Maac, for example with ONNX
    /// Runtime: input "observation" [batch, <see cref="ObservationSize"/>], output "action" [batch, action size] in
    /// <see cref="ActionSpace"/>; its actions equal <see cref="Act(float[], bool)"/>'s up to float32 rounding.
    /// </summary>
    public void ExportOnnx(string path)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        trainer.ExportOnnx(path);
    }

    /// <summary>
    /// Saves the agent as a run folder (config.json, checkpoint.safetensors, metrics.csv) that <see cref="Load(string)"/>
    /// and the command line's eval, plot and train --resume read. The checkpoint holds parameters, optimiser state and
    /// replay buffers, and is written to a temporary file and renamed.
    /// </summary>
    /// <param name="directory">The folder; created when missing.</param>
    /// <param name="overwrite">Replace a run already in the folder (otherwise that is refused with an <see cref="IOException"/>).</param>
    public void Save(string directory, bool overwrite = false)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        session.SaveTo(directory, overwrite);
    }

    /// <summary>
    /// Opens a run folder of a built-in task (written by <see cref="Save"/> or by the command line's train) as an agent of
    /// its algorithm. Training continues into the same folder, which the agent holds (run.lock) until disposed.
    /// </summary>
    /// <exception cref="CheckpointException">The folder is not a run folder, or its checkpoint is corrupt or does not fit.</exception>
    /// <exception cref="IOException">Another agent or process trains into the folder.</exception>
    public static Agent Load(string runDirectory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runDirectory);
        var settings = RunFolder.readSettings(runDirectory);
        Envs.TaskInfo task;
        try
        {
            task = Envs.Tasks.find(settings.Env);
        }
        catch (ArgumentException)
        {
            throw new ArgumentException(
                $"{runDirectory} holds a run on '{settings.Env}', which is not a built-in task; pass its environment factory to Load(runDirectory, environmentFactory)",
                nameof(runDirectory)
            );
        }
        return Open(runDirectory, task);
    }

    /// <summary>Opens a run folder (see <see cref="Load(string)"/>) on the device and threads of <paramref name="options"/>.</summary>
    public static Agent Load(string runDirectory, LoadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Apply();
        return Load(runDirectory);
    }

    /// <summary>Opens a run folder of a user's environment (see <see cref="Load(string)"/>) on the device and threads of <paramref name="options"/>.</summary>
    public static Agent Load(string runDirectory, Func<IEnvironment> environmentFactory, LoadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Apply();
        return Load(runDirectory, environmentFactory);
    }

    /// <summary>Opens a run folder of a user's environment; see <see cref="Load(string)"/>.</summary>
    public static Agent Load(string runDirectory, Func<IEnvironment> environmentFactory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runDirectory);
        return Open(runDirectory, Custom(environmentFactory));
    }

    /// <summary>A value the library marks as unknown with NaN, as null.</summary>
    private static double? Known(double value) => double.IsNaN(value) ? null : value;

    private static Agent Open(string runDirectory, Envs.TaskInfo task)
    {
        var session = RunSession.Open(runDirectory, task);
        return session.Trainer.Algorithm.Name switch
        {
            "maac" => new MaacAgent(session),
            "sac" => new SacAgent(session),
            "mbpo" => new MbpoAgent(session),
            "steve" => new SteveAgent(session),
            "svg1" => new Svg1Agent(session),
            var other => Refuse(session, other),
        };

        static Agent Refuse(RunSession session, string algorithm)
        {
            ((IDisposable)session).Dispose();
            throw new CheckpointException($"{session.Folder?.Value} holds a run of '{algorithm}', which has no agent class");
        }
    }

    /// <summary>Loads a run folder as the agent class <typeparamref name="TAgent"/>; a clear error for another algorithm.</summary>
    private protected static TAgent Load<TAgent>(string runDirectory, Func<IEnvironment>? environmentFactory)
        where TAgent : Agent
    {
        var agent = environmentFactory is null ? Load(runDirectory) : Load(runDirectory, environmentFactory);
        if (agent is TAgent typed)
            return typed;
        var algorithm = agent.Algorithm;
        agent.Dispose();
        throw new ArgumentException(
            $"{runDirectory} holds a {algorithm} run, not one for {typeof(TAgent).Name}; use Agent.Load to open any run",
            nameof(runDirectory)
        );
    }

    private static Microsoft.FSharp.Core.FSharpFunc<T, Microsoft.FSharp.Core.Unit> FuncConvert<T>(Action<T> action) =>
        Microsoft.FSharp.Core.FuncConvert.FromAction(action);

    /// <summary>Releases the agent's environments.</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        ((IDisposable)session).Dispose();
        GC.SuppressFinalize(this);
    }
}
