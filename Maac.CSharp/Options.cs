using Maac.Algorithms;
using Maac.Persistence;
using Maac.Tensors;
using Maac.Training;
using SettingsDefaults = Maac.Algorithms.SettingsModule;

namespace Maac;

/// <summary>Where an agent's tensors live and are computed.</summary>
public enum ComputeDevice
{
    /// <summary>The managed CPU backend (SIMD kernels, blocked multi-threaded SGEMM).</summary>
    Cpu = 0,

    /// <summary>An NVIDIA GPU through the CUDA backend (ILGPU kernels, in the optional Maac.Cuda package); pick the GPU
    /// with <see cref="AgentOptions.DeviceIndex"/>.</summary>
    Cuda = 1,
}

/// <summary>Where the MAAC actor objective draws its samples per start state.</summary>
public enum ActorSamplePlacement
{
    /// <summary>Whole paths: every sample is its own imagined path, closed by its own terminal action.</summary>
    WholePaths = 0,

    /// <summary>One path per start state and the samples as actions at its last state, each critic averaged over them
    /// before the minimum (about as many times less policy and model work as there are samples).</summary>
    ActionsAtHorizon = 1,
}

/// <summary>Which actions of the MAAC actor's imagined paths pay the entropy term.</summary>
public enum ActorEntropy
{
    /// <summary>Every action along the path and at its end.</summary>
    EveryStep = 0,

    /// <summary>The first action only; the terminal value carries no entropy term.</summary>
    FirstAction = 1,
}

/// <summary>How the differentiable model paths (the actor objective, the critic targets' expansions) draw next states.</summary>
public enum ModelPathNoise
{
    /// <summary>With the model's full predicted noise.</summary>
    Sampled = 0,

    /// <summary>The model's mean prediction, without noise.</summary>
    Mean = 1,
}

/// <summary>
/// Settings shared by every agent. A new options object holds the MAAC paper's settings, made for the MuJoCo
/// locomotion tasks (HalfCheetah, Hopper, Walker2d, Ant): 200,000 steps, the first 5,000 of them random actions,
/// an evaluation every 5,000 steps, 8 gradient steps per environment step. For a small or a custom task use
/// <c>ForTask</c> (the command line's settings for a built-in task: smaller networks and budgets) or lower
/// RandomSteps and EvaluationInterval: a Train call that ends within the random steps learns nothing (a warning says so). Properties refuse out-of-range values with
/// an <see cref="ArgumentOutOfRangeException"/> naming the property.
/// </summary>
public abstract class AgentOptions
{
    // Every setting lives here so that one method turns options into the library's settings record;
    // each options class exposes the ones its algorithm uses.
    private protected long seed;
    private protected int totalSteps,
        batchSize,
        randomSteps,
        updatesPerStep,
        realCapacity,
        evalEvery,
        evalEpisodes;
    private protected bool criticValueCheck;
    private protected float gamma,
        tau,
        actorLr,
        criticLr,
        alphaLr;
    private protected int[] hidden;
    private protected int modelMembers,
        modelElites,
        modelBatchSize,
        modelMaxEpochs,
        modelTrainEvery;
    private protected float modelLr;
    private protected int[] modelHidden;
    private protected int rolloutStarts,
        rolloutLength,
        imaginedCapacity,
        actorHorizon,
        actorSamples,
        criticHorizon;
    private protected float realFraction;
    private protected string actorSamplesAt,
        actorEntropy,
        pathNoise;
    private int? threads;
    private int deviceIndex;

    private protected AgentOptions(Settings d)
    {
        seed = d.Seed;
        totalSteps = d.Steps;
        gamma = d.Gamma;
        tau = d.Tau;
        batchSize = d.BatchSize;
        hidden = (int[])d.Hidden.Clone();
        actorLr = d.ActorLearningRate;
        criticLr = d.CriticLearningRate;
        alphaLr = d.AlphaLearningRate;
        randomSteps = d.RandomSteps;
        updatesPerStep = d.UpdatesPerStep;
        realCapacity = d.RealCapacity;
        evalEvery = d.EvalEvery;
        evalEpisodes = d.EvalEpisodes;
        criticValueCheck = d.CriticValueCheck;
        modelMembers = d.ModelMembers;
        modelElites = d.ModelElites;
        modelHidden = (int[])d.ModelHidden.Clone();
        modelLr = d.ModelLearningRate;
        modelBatchSize = d.ModelBatchSize;
        modelMaxEpochs = d.ModelMaxEpochs;
        modelTrainEvery = d.ModelTrainEvery;
        rolloutStarts = d.RolloutStarts;
        rolloutLength = d.RolloutLength;
        imaginedCapacity = d.ImaginedCapacity;
        realFraction = d.RealFraction;
        actorHorizon = d.ActorHorizon;
        actorSamples = d.ActorSamples;
        criticHorizon = d.CriticHorizon;
        actorSamplesAt = d.ActorSamplesAt;
        actorEntropy = d.ActorEntropy;
        pathNoise = d.PathNoise;
    }

    /// <summary>The algorithm's name as the command line spells it (maac, sac, mbpo, steve, svg1).</summary>
    internal abstract string AlgorithmName { get; }

    /// <summary>The seed of every random draw of a run; equal seeds give equal runs on the CPU.</summary>
    public long Seed
    {
        get => seed;
        set => seed = value;
    }

    /// <summary>The training budget in environment steps (schedules such as MBPO's rollout length refer to it).</summary>
    public int TotalSteps
    {
        get => totalSteps;
        set => Set(ref totalSteps, value, "Steps", nameof(TotalSteps));
    }

    /// <summary>Discount factor γ in (0, 1].</summary>
    public float Gamma
    {
        get => gamma;
        set => Set(ref gamma, value, "Gamma", nameof(Gamma));
    }

    /// <summary>Target-network smoothing τ in (0, 1].</summary>
    public float Tau
    {
        get => tau;
        set => Set(ref tau, value, "Tau", nameof(Tau));
    }

    /// <summary>Transitions per gradient step.</summary>
    public int BatchSize
    {
        get => batchSize;
        set => Set(ref batchSize, value, "BatchSize", nameof(BatchSize));
    }

    /// <summary>Hidden layer widths of the policy and the critics.</summary>
    public int[] HiddenSizes
    {
        get => (int[])hidden.Clone();
        set => Set(ref hidden, Copy(value, nameof(HiddenSizes)), "Hidden", nameof(HiddenSizes));
    }

    /// <summary>Adam learning rate of the policy.</summary>
    public float ActorLearningRate
    {
        get => actorLr;
        set => Set(ref actorLr, value, "ActorLearningRate", nameof(ActorLearningRate));
    }

    /// <summary>Adam learning rate of the critics.</summary>
    public float CriticLearningRate
    {
        get => criticLr;
        set => Set(ref criticLr, value, "CriticLearningRate", nameof(CriticLearningRate));
    }

    /// <summary>Adam learning rate of the entropy temperature.</summary>
    public float TemperatureLearningRate
    {
        get => alphaLr;
        set => Set(ref alphaLr, value, "AlphaLearningRate", nameof(TemperatureLearningRate));
    }

    /// <summary>Environment steps with uniformly random actions before learning starts.</summary>
    public int RandomSteps
    {
        get => randomSteps;
        set => Set(ref randomSteps, value, "RandomSteps", nameof(RandomSteps));
    }

    /// <summary>Gradient steps per environment step.</summary>
    public int UpdatesPerStep
    {
        get => updatesPerStep;
        set => Set(ref updatesPerStep, value, "UpdatesPerStep", nameof(UpdatesPerStep));
    }

    /// <summary>Capacity of the buffer of real transitions.</summary>
    public int RealBufferCapacity
    {
        get => realCapacity;
        set => Set(ref realCapacity, value, "RealCapacity", nameof(RealBufferCapacity));
    }

    /// <summary>Environment steps between evaluations (each also writes a checkpoint when <see cref="RunDirectory"/> is set).</summary>
    public int EvaluationInterval
    {
        get => evalEvery;
        set => Set(ref evalEvery, value, "EvalEvery", nameof(EvaluationInterval));
    }

    /// <summary>Episodes per evaluation.</summary>
    public int EvaluationEpisodes
    {
        get => evalEpisodes;
        set => Set(ref evalEpisodes, value, "EvalEpisodes", nameof(EvaluationEpisodes));
    }

    /// <summary>
    /// Whether each evaluation stops training with a <see cref="DivergenceException"/> (part "critic") when the critics
    /// value real transitions above the most any policy could earn with the rewards seen, or above 0 when that is
    /// negative, by more than the largest reward magnitude seen (true, the default). It changes nothing training
    /// computes until it stops it.
    /// </summary>
    public bool CheckCriticValues
    {
        get => criticValueCheck;
        set => criticValueCheck = value;
    }

    /// <summary>
    /// The device that computes (see <see cref="ComputeDevice"/>). The choice is process-wide: new tensors are created
    /// on it. <see cref="ComputeDevice.Cuda"/> needs the Maac.Cuda package (<c>dotnet add package Maac.Cuda</c>), an NVIDIA
    /// GPU and its driver; without any of them, creating an agent fails with a <see cref="GpuUnavailableException"/>
    /// saying which is missing.
    /// </summary>
    public ComputeDevice Device { get; set; } = ComputeDevice.Cpu;

    /// <summary>
    /// Whether a user's environment whose seed does not fix an episode is refused (true) or accepted with a warning
    /// (false, the default: external simulators and hardware are rarely reproducible; runs then are not either).
    /// </summary>
    public bool StrictEnvironmentChecks { get; set; }

    /// <summary>Which GPU (0 = the first) when <see cref="Device"/> is <see cref="ComputeDevice.Cuda"/>.</summary>
    public int DeviceIndex
    {
        get => deviceIndex;
        set => deviceIndex = NonNegative(value, nameof(DeviceIndex));
    }

    /// <summary>
    /// Threads of the CPU backend; null leaves the current setting (the processor count by default).
    /// The setting is process-wide, and results do not depend on it.
    /// </summary>
    public int? Threads
    {
        get => threads;
        set => threads = value is null ? null : Positive(value.Value, nameof(Threads));
    }

    /// <summary>
    /// A folder to train into, laid out as the command line's run folders (config.json, metrics.csv,
    /// checkpoint.safetensors): a checkpoint is written at every evaluation and when training stops or is
    /// cancelled. It must not already hold a run, and the agent holds it (run.lock) until disposed: another agent or
    /// process opening it meanwhile is refused with an <see cref="System.IO.IOException"/>. Null keeps the agent in
    /// memory (use <see cref="Agent.Save"/>).
    /// </summary>
    public string? RunDirectory { get; set; }

    internal Settings ToSettings(string environment) =>
        new(
            env: environment,
            algorithm: AlgorithmName,
            seed: seed,
            steps: totalSteps,
            gamma: gamma,
            tau: tau,
            batchSize: batchSize,
            hidden: (int[])hidden.Clone(),
            actorLearningRate: actorLr,
            criticLearningRate: criticLr,
            alphaLearningRate: alphaLr,
            randomSteps: randomSteps,
            updatesPerStep: updatesPerStep,
            modelMembers: modelMembers,
            modelElites: modelElites,
            modelHidden: (int[])modelHidden.Clone(),
            modelLearningRate: modelLr,
            modelBatchSize: modelBatchSize,
            modelMaxEpochs: modelMaxEpochs,
            modelTrainEvery: modelTrainEvery,
            rolloutStarts: rolloutStarts,
            rolloutLength: rolloutLength,
            imaginedCapacity: imaginedCapacity,
            realCapacity: realCapacity,
            realFraction: realFraction,
            actorHorizon: actorHorizon,
            actorSamples: actorSamples,
            criticHorizon: criticHorizon,
            actorSamplesAt: actorSamplesAt,
            actorEntropy: actorEntropy,
            pathNoise: pathNoise,
            evalEvery: evalEvery,
            evalEpisodes: evalEpisodes,
            criticValueCheck: criticValueCheck
        );

    /// <summary>Applies the process-wide parts (threads, device).</summary>
    internal void ApplyRuntime() => Runtime.Apply(Device, deviceIndex, threads);

    private protected static Settings Paper(string algorithm) => SettingsDefaults.authors("", algorithm);

    private protected static Settings TaskSettings(string environment, string algorithm)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(environment);
        return SettingsDefaults.forTask(Envs.Tasks.find(environment).Name, algorithm);
    }

    /// <summary>The names a choice setting takes, in the order of its enum's values (the library's one list of them).</summary>
    private static string[] ChoiceNames(string setting) => SettingsDefaults.choices.First(c => c.Item1 == setting).Item2.ToArray();

    /// <summary>The enum value of a choice setting's name (the settings' names are checked where they are made).</summary>
    private protected static T FromName<T>(string name, string setting)
        where T : struct, Enum =>
        Array.IndexOf(ChoiceNames(setting), name) is var index and >= 0
            ? (T)Enum.ToObject(typeof(T), index)
            : throw new InvalidOperationException($"{setting} holds '{name}', which is not one of its names");

    /// <summary>The settings' name of a choice, refusing a value outside the enum.</summary>
    private protected static string ToName<T>(T value, string setting, string property)
        where T : struct, Enum
    {
        var names = ChoiceNames(setting);
        var index = Convert.ToInt32(value);
        return Enum.IsDefined(value) && index < names.Length
            ? names[index]
            : throw new ArgumentOutOfRangeException(property, value, $"is not a {typeof(T).Name} value");
    }

    /// <summary>
    /// Sets a field through the library's range check of its setting (the one check the command line and settings
    /// files use): a value out of range is refused with an <see cref="ArgumentOutOfRangeException"/> naming the
    /// property, and the field keeps its value.
    /// </summary>
    private protected void Set<T>(ref T field, T value, string setting, string property)
    {
        var previous = field;
        field = value;
        var problem = SettingsDefaults.problemOf(setting, property, ToSettings(environment: "options"));
        if (problem is null)
            return;
        field = previous;
        throw value is Array
            ? new ArgumentOutOfRangeException(property, problem)
            : new ArgumentOutOfRangeException(property, value, problem);
    }

    /// <summary>A copy of a list of layer widths (the options never share an array with the caller).</summary>
    private protected static int[] Copy(int[] value, string property)
    {
        ArgumentNullException.ThrowIfNull(value, property);
        return (int[])value.Clone();
    }

    private static int Positive(int value, string name) =>
        value > 0 ? value : throw new ArgumentOutOfRangeException(name, value, "must be positive");

    private static int NonNegative(int value, string name) =>
        value >= 0 ? value : throw new ArgumentOutOfRangeException(name, value, "must not be negative");
}

/// <summary>Options of <see cref="SacAgent"/>: soft actor-critic, model-free.</summary>
public sealed class SacOptions : AgentOptions
{
    /// <summary>The paper's settings.</summary>
    public SacOptions()
        : base(Paper("sac")) { }

    private SacOptions(Settings defaults)
        : base(defaults) { }

    /// <summary>The settings the command line uses for a built-in task.</summary>
    public static SacOptions ForTask(string environment) => new(TaskSettings(environment, "sac"));

    internal override string AlgorithmName => "sac";
}

/// <summary>Settings of agents that learn a probabilistic dynamics ensemble.</summary>
public abstract class ModelBasedOptions : AgentOptions
{
    private protected ModelBasedOptions(Settings defaults)
        : base(defaults) { }

    /// <summary>Members of the dynamics ensemble.</summary>
    public int ModelMembers
    {
        get => modelMembers;
        set => Set(ref modelMembers, value, "ModelMembers", nameof(ModelMembers));
    }

    /// <summary>Members with the lowest hold-out error used for rollouts (at most <see cref="ModelMembers"/>).</summary>
    public int ModelElites
    {
        get => modelElites;
        set => Set(ref modelElites, value, "ModelElites", nameof(ModelElites));
    }

    /// <summary>Hidden layer widths of each ensemble member.</summary>
    public int[] ModelHiddenSizes
    {
        get => (int[])modelHidden.Clone();
        set => Set(ref modelHidden, Copy(value, nameof(ModelHiddenSizes)), "ModelHidden", nameof(ModelHiddenSizes));
    }

    /// <summary>How the actor's imagined paths and the critic targets' model expansions draw next states (imagined
    /// training data is always sampled with the model's full noise).</summary>
    public ModelPathNoise PathNoise
    {
        get => FromName<ModelPathNoise>(pathNoise, "PathNoise");
        set => pathNoise = ToName(value, "PathNoise", nameof(PathNoise));
    }

    /// <summary>Adam learning rate of the model.</summary>
    public float ModelLearningRate
    {
        get => modelLr;
        set => Set(ref modelLr, value, "ModelLearningRate", nameof(ModelLearningRate));
    }

    /// <summary>Transitions per model gradient step.</summary>
    public int ModelBatchSize
    {
        get => modelBatchSize;
        set => Set(ref modelBatchSize, value, "ModelBatchSize", nameof(ModelBatchSize));
    }

    /// <summary>Most epochs of one model fit (it stops early when the hold-out loss stops improving).</summary>
    public int ModelMaxEpochs
    {
        get => modelMaxEpochs;
        set => Set(ref modelMaxEpochs, value, "ModelMaxEpochs", nameof(ModelMaxEpochs));
    }

    /// <summary>Environment steps between model fits.</summary>
    public int ModelTrainInterval
    {
        get => modelTrainEvery;
        set => Set(ref modelTrainEvery, value, "ModelTrainEvery", nameof(ModelTrainInterval));
    }
}

/// <summary>Settings of agents that also train on imagined transitions from model rollouts.</summary>
public abstract class ImaginedDataOptions : ModelBasedOptions
{
    private protected ImaginedDataOptions(Settings defaults)
        : base(defaults) { }

    /// <summary>Start states (from real data) of each refresh of imagined data.</summary>
    public int RolloutStarts
    {
        get => rolloutStarts;
        set => Set(ref rolloutStarts, value, "RolloutStarts", nameof(RolloutStarts));
    }

    /// <summary>Model steps from each start state.</summary>
    public int RolloutLength
    {
        get => rolloutLength;
        set => Set(ref rolloutLength, value, "RolloutLength", nameof(RolloutLength));
    }

    /// <summary>Capacity of the buffer of imagined transitions.</summary>
    public int ImaginedBufferCapacity
    {
        get => imaginedCapacity;
        set => Set(ref imaginedCapacity, value, "ImaginedCapacity", nameof(ImaginedBufferCapacity));
    }

    /// <summary>Share of real transitions in each batch, in (0, 1].</summary>
    public float RealDataFraction
    {
        get => realFraction;
        set => Set(ref realFraction, value, "RealFraction", nameof(RealDataFraction));
    }
}

/// <summary>Options of <see cref="MaacAgent"/>: the paper's algorithm.</summary>
public sealed class MaacOptions : ImaginedDataOptions
{
    /// <summary>The paper's settings (H = 4 model steps in the actor objective, K = 5 samples, STEVE horizon 2).</summary>
    public MaacOptions()
        : base(Paper("maac")) { }

    private MaacOptions(Settings defaults)
        : base(defaults) { }

    /// <summary>The settings the command line uses for a built-in task.</summary>
    public static MaacOptions ForTask(string environment) => new(TaskSettings(environment, "maac"));

    internal override string AlgorithmName => "maac";

    /// <summary>Model steps H of the actor objective before the terminal Q (0 gives SAC's actor loss).</summary>
    public int ActorHorizon
    {
        get => actorHorizon;
        set => Set(ref actorHorizon, value, "ActorHorizon", nameof(ActorHorizon));
    }

    /// <summary>Samples K per start state in the actor objective (see <see cref="ActorSamplePlacement"/>).</summary>
    public int ActorSamples
    {
        get => actorSamples;
        set => Set(ref actorSamples, value, "ActorSamples", nameof(ActorSamples));
    }

    /// <summary>Where the actor objective's samples are drawn: whole paths, or actions at the end of one path.</summary>
    public ActorSamplePlacement ActorSamplePlacement
    {
        get => FromName<ActorSamplePlacement>(actorSamplesAt, "ActorSamplesAt");
        set => actorSamplesAt = ToName(value, "ActorSamplesAt", nameof(ActorSamplePlacement));
    }

    /// <summary>Which actions of the actor's imagined paths pay the entropy term.</summary>
    public ActorEntropy ActorEntropy
    {
        get => FromName<ActorEntropy>(actorEntropy, "ActorEntropy");
        set => actorEntropy = ToName(value, "ActorEntropy", nameof(ActorEntropy));
    }

    /// <summary>Longest model expansion of the STEVE critic targets.</summary>
    public int CriticHorizon
    {
        get => criticHorizon;
        set => Set(ref criticHorizon, value, "CriticHorizon", nameof(CriticHorizon));
    }
}

/// <summary>Options of <see cref="MbpoAgent"/>: SAC on real and short imagined rollouts.</summary>
public sealed class MbpoOptions : ImaginedDataOptions
{
    /// <summary>The paper's settings.</summary>
    public MbpoOptions()
        : base(Paper("mbpo")) { }

    private MbpoOptions(Settings defaults)
        : base(defaults) { }

    /// <summary>The settings the command line uses for a built-in task.</summary>
    public static MbpoOptions ForTask(string environment) => new(TaskSettings(environment, "mbpo"));

    internal override string AlgorithmName => "mbpo";
}

/// <summary>Options of <see cref="SteveAgent"/>: SAC with STEVE's model-expanded critic targets.</summary>
public sealed class SteveOptions : ModelBasedOptions
{
    /// <summary>The paper's settings.</summary>
    public SteveOptions()
        : base(Paper("steve")) { }

    private SteveOptions(Settings defaults)
        : base(defaults) { }

    /// <summary>The settings the command line uses for a built-in task.</summary>
    public static SteveOptions ForTask(string environment) => new(TaskSettings(environment, "steve"));

    internal override string AlgorithmName => "steve";

    /// <summary>Longest model expansion of the critic targets.</summary>
    public int CriticHorizon
    {
        get => criticHorizon;
        set => Set(ref criticHorizon, value, "CriticHorizon", nameof(CriticHorizon));
    }
}

/// <summary>Options of <see cref="Svg1Agent"/>: the value gradient through one model step.</summary>
public sealed class Svg1Options : ModelBasedOptions
{
    /// <summary>The paper's settings.</summary>
    public Svg1Options()
        : base(Paper("svg1")) { }

    private Svg1Options(Settings defaults)
        : base(defaults) { }

    /// <summary>The settings the command line uses for a built-in task.</summary>
    public static Svg1Options ForTask(string environment) => new(TaskSettings(environment, "svg1"));

    internal override string AlgorithmName => "svg1";
}

/// <summary>Applying the process-wide device and thread settings.</summary>
internal static class Runtime
{
    /// <summary>Sets the CPU backend's threads (when given) and the device new tensors are created on.</summary>
    public static void Apply(ComputeDevice device, int deviceIndex, int? threads)
    {
        if (threads is int t)
            Tensors.Cpu.CpuSettings.Threads = t;
        Devices.select(
            device switch
            {
                ComputeDevice.Cpu => "cpu",
                ComputeDevice.Cuda => $"cuda:{deviceIndex}",
                _ => throw new ArgumentOutOfRangeException(nameof(device), device, "not a device"),
            }
        );
    }
}

/// <summary>Where a loaded agent computes: what <see cref="Agent.Load(string, LoadOptions)"/> may change about a saved run.</summary>
public sealed class LoadOptions
{
    private int deviceIndex;
    private int? threads;

    /// <summary>The device (see <see cref="AgentOptions.Device"/>).</summary>
    public ComputeDevice Device { get; set; } = ComputeDevice.Cpu;

    /// <summary>Which GPU when <see cref="Device"/> is <see cref="ComputeDevice.Cuda"/>.</summary>
    public int DeviceIndex
    {
        get => deviceIndex;
        set => deviceIndex = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(DeviceIndex), value, "must not be negative");
    }

    /// <summary>Threads of the CPU backend; null leaves the current setting.</summary>
    public int? Threads
    {
        get => threads;
        set =>
            threads =
                value is null || value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(Threads), value, "must be positive");
    }

    internal void Apply() => Runtime.Apply(Device, deviceIndex, threads);
}
