namespace Maac;

/// <summary>Model-Augmented Actor-Critic: the policy is trained through H steps of the learned model closed by the terminal Q; critics learn from real and imagined data with STEVE targets.</summary>
public sealed class MaacAgent : Agent
{
    /// <summary>An agent for a built-in task (see the command line's <c>envs</c>).</summary>
    /// <param name="environment">The task's name, for example "Pendulum" or "HalfCheetah".</param>
    /// <param name="options">Settings; null for those the command line uses for this task (<see cref="MaacOptions.ForTask"/>).</param>
    public MaacAgent(string environment, MaacOptions? options = null)
        : base(Start(BuiltIn(environment), options ?? MaacOptions.ForTask(environment))) { }

    /// <summary>An agent for a user's environment; every instance comes from the factory (evaluation runs several at once).</summary>
    /// <param name="environmentFactory">Makes a fresh environment; the first one is checked by the environment checker.</param>
    /// <param name="options">Settings; null for the paper's.</param>
    /// <exception cref="ArgumentException">The environment failed the checks (every problem is listed).</exception>
    public MaacAgent(Func<IEnvironment> environmentFactory, MaacOptions? options = null)
        : base(StartCustom(environmentFactory, options ?? new MaacOptions())) { }

    internal MaacAgent(Training.RunSession session)
        : base(session) { }

    /// <summary>Opens a maac run folder of a built-in task.</summary>
    public static new MaacAgent Load(string runDirectory) => Load<MaacAgent>(runDirectory, null);

    /// <summary>Opens a maac run folder of a user's environment.</summary>
    public static new MaacAgent Load(string runDirectory, Func<IEnvironment> environmentFactory)
    {
        ArgumentNullException.ThrowIfNull(environmentFactory);
        return Load<MaacAgent>(runDirectory, environmentFactory);
    }
}

/// <summary>Soft actor-critic: model-free, one-step TD targets.</summary>
public sealed class SacAgent : Agent
{
    /// <summary>An agent for a built-in task (see the command line's <c>envs</c>).</summary>
    /// <param name="environment">The task's name, for example "Pendulum" or "HalfCheetah".</param>
    /// <param name="options">Settings; null for those the command line uses for this task (<see cref="SacOptions.ForTask"/>).</param>
    public SacAgent(string environment, SacOptions? options = null)
        : base(Start(BuiltIn(environment), options ?? SacOptions.ForTask(environment))) { }

    /// <summary>An agent for a user's environment; every instance comes from the factory (evaluation runs several at once).</summary>
    /// <param name="environmentFactory">Makes a fresh environment; the first one is checked by the environment checker.</param>
    /// <param name="options">Settings; null for the paper's.</param>
    /// <exception cref="ArgumentException">The environment failed the checks (every problem is listed).</exception>
    public SacAgent(Func<IEnvironment> environmentFactory, SacOptions? options = null)
        : base(StartCustom(environmentFactory, options ?? new SacOptions())) { }

    internal SacAgent(Training.RunSession session)
        : base(session) { }

    /// <summary>Opens a sac run folder of a built-in task.</summary>
    public static new SacAgent Load(string runDirectory) => Load<SacAgent>(runDirectory, null);

    /// <summary>Opens a sac run folder of a user's environment.</summary>
    public static new SacAgent Load(string runDirectory, Func<IEnvironment> environmentFactory)
    {
        ArgumentNullException.ThrowIfNull(environmentFactory);
        return Load<SacAgent>(runDirectory, environmentFactory);
    }
}

/// <summary>MBPO: SAC trained on real data and short rollouts of the learned model.</summary>
public sealed class MbpoAgent : Agent
{
    /// <summary>An agent for a built-in task (see the command line's <c>envs</c>).</summary>
    /// <param name="environment">The task's name, for example "Pendulum" or "HalfCheetah".</param>
    /// <param name="options">Settings; null for those the command line uses for this task (<see cref="MbpoOptions.ForTask"/>).</param>
    public MbpoAgent(string environment, MbpoOptions? options = null)
        : base(Start(BuiltIn(environment), options ?? MbpoOptions.ForTask(environment))) { }

    /// <summary>An agent for a user's environment; every instance comes from the factory (evaluation runs several at once).</summary>
    /// <param name="environmentFactory">Makes a fresh environment; the first one is checked by the environment checker.</param>
    /// <param name="options">Settings; null for the paper's.</param>
    /// <exception cref="ArgumentException">The environment failed the checks (every problem is listed).</exception>
    public MbpoAgent(Func<IEnvironment> environmentFactory, MbpoOptions? options = null)
        : base(StartCustom(environmentFactory, options ?? new MbpoOptions())) { }

    internal MbpoAgent(Training.RunSession session)
        : base(session) { }

    /// <summary>Opens a mbpo run folder of a built-in task.</summary>
    public static new MbpoAgent Load(string runDirectory) => Load<MbpoAgent>(runDirectory, null);

    /// <summary>Opens a mbpo run folder of a user's environment.</summary>
    public static new MbpoAgent Load(string runDirectory, Func<IEnvironment> environmentFactory)
    {
        ArgumentNullException.ThrowIfNull(environmentFactory);
        return Load<MbpoAgent>(runDirectory, environmentFactory);
    }
}

/// <summary>STEVE on SAC: critics trained with inverse-variance-weighted model expansions.</summary>
public sealed class SteveAgent : Agent
{
    /// <summary>An agent for a built-in task (see the command line's <c>envs</c>).</summary>
    /// <param name="environment">The task's name, for example "Pendulum" or "HalfCheetah".</param>
    /// <param name="options">Settings; null for those the command line uses for this task (<see cref="SteveOptions.ForTask"/>).</param>
    public SteveAgent(string environment, SteveOptions? options = null)
        : base(Start(BuiltIn(environment), options ?? SteveOptions.ForTask(environment))) { }

    /// <summary>An agent for a user's environment; every instance comes from the factory (evaluation runs several at once).</summary>
    /// <param name="environmentFactory">Makes a fresh environment; the first one is checked by the environment checker.</param>
    /// <param name="options">Settings; null for the paper's.</param>
    /// <exception cref="ArgumentException">The environment failed the checks (every problem is listed).</exception>
    public SteveAgent(Func<IEnvironment> environmentFactory, SteveOptions? options = null)
        : base(StartCustom(environmentFactory, options ?? new SteveOptions())) { }

    internal SteveAgent(Training.RunSession session)
        : base(session) { }

    /// <summary>Opens a steve run folder of a built-in task.</summary>
    public static new SteveAgent Load(string runDirectory) => Load<SteveAgent>(runDirectory, null);

    /// <summary>Opens a steve run folder of a user's environment.</summary>
    public static new SteveAgent Load(string runDirectory, Func<IEnvironment> environmentFactory)
    {
        ArgumentNullException.ThrowIfNull(environmentFactory);
        return Load<SteveAgent>(runDirectory, environmentFactory);
    }
}

/// <summary>SVG(1): the value gradient through one step of the learned model.</summary>
public sealed class Svg1Agent : Agent
{
    /// <summary>An agent for a built-in task (see the command line's <c>envs</c>).</summary>
    /// <param name="environment">The task's name, for example "Pendulum" or "HalfCheetah".</param>
    /// <param name="options">Settings; null for those the command line uses for this task (<see cref="Svg1Options.ForTask"/>).</param>
    public Svg1Agent(string environment, Svg1Options? options = null)
        : base(Start(BuiltIn(environment), options ?? Svg1Options.ForTask(environment))) { }

    /// <summary>An agent for a user's environment; every instance comes from the factory (evaluation runs several at once).</summary>
    /// <param name="environmentFactory">Makes a fresh environment; the first one is checked by the environment checker.</param>
    /// <param name="options">Settings; null for the paper's.</param>
    /// <exception cref="ArgumentException">The environment failed the checks (every problem is listed).</exception>
    public Svg1Agent(Func<IEnvironment> environmentFactory, Svg1Options? options = null)
        : base(StartCustom(environmentFactory, options ?? new Svg1Options())) { }

    internal Svg1Agent(Training.RunSession session)
        : base(session) { }

    /// <summary>Opens a svg1 run folder of a built-in task.</summary>
    public static new Svg1Agent Load(string runDirectory) => Load<Svg1Agent>(runDirectory, null);

    /// <summary>Opens a svg1 run folder of a user's environment.</summary>
    public static new Svg1Agent Load(string runDirectory, Func<IEnvironment> environmentFactory)
    {
        ArgumentNullException.ThrowIfNull(environmentFactory);
        return Load<Svg1Agent>(runDirectory, environmentFactory);
    }
}
