/// Shared helpers: random tensors from seeds, property configuration, and the finite-difference check.
module Maac.Tests.Support

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors

/// Property tests use a fixed replay seed so that every run checks the same cases.
let config =
    { FsCheckConfig.defaultConfig with
        maxTest = 100
        replay = Some(0x5EEDUL, 0x9E3779B97F4A7C15UL, None)
    }

/// The same with fewer cases (for expensive properties).
let configFew = { config with maxTest = 25 }

let key (seed: int) = RandomKey.ofSeed (int64 seed)

/// A fresh folder in the system's temporary folder, named from prefix, deleted with everything in it when disposed
/// (a test's files do not outlive the test).
type TempFolder(prefix: string) =
    let folder = System.IO.Directory.CreateTempSubdirectory(prefix)

    /// The folder's full path.
    member _.Path = folder.FullName

    interface IDisposable with
        member _.Dispose() =
            if System.IO.Directory.Exists folder.FullName then
                System.IO.Directory.Delete(folder.FullName, true)

/// Adam's hyper-parameters at its first step (learning rate 1e-3, β = (0.9, 0.999), ε = 1e-8, bias corrections
/// 1 − β¹), for tests of the fused update.
let adamHyperAtStepOne =
    {
        LearningRate = 1e-3f
        Beta1 = 0.9f
        Beta2 = 0.999f
        Epsilon = 1e-8f
        Correction1 = 0.1f
        Correction2 = 0.001f
    }

/// Under CI a test that cannot run here is a failure, not a skip.
let skipOrFail (reason: string) =
    if Environment.GetEnvironmentVariable "CI" = "true" then
        failtestf "cannot run under CI: %s" reason
    else
        skiptest reason

/// The group a skipped test belongs to, named by what it needs and how to get it.
let skipGroup (reason: string) =
    let has (word: string) = reason.Contains(word, System.StringComparison.OrdinalIgnoreCase)

    if has "mujoco" then
        "need MuJoCo 2.2.2 (apt-get install libmujoco2.2.2 libmujoco-dev)"
    elif has "slurm" then
        "need Slurm (.ci/slurm-up)"
    elif has "GPU" then
        "need a machine without a GPU"
    else
        reason

/// "N skipped: 81 need MuJoCo 2.2.2 (…), 2 need Slurm (…)", largest group first; None when nothing was skipped.
let skipSummary (reasons: string list) =
    match reasons with
    | [] -> None
    | _ ->
        let groups =
            reasons
            |> List.countBy skipGroup
            |> List.sortBy (fun (group, n) -> -n, group)
            |> List.map (fun (group, n) -> sprintf "%d %s" n group)

        Some(sprintf "%d skipped: %s" reasons.Length (System.String.Join(", ", groups)))

let private standardErrorLock = obj ()

/// Runs f with the process's standard error captured (one capture at a time): its result and what it wrote. For
/// tests whose code warns on purpose, so that the suite's output shows no warning when nothing is wrong.
let capturingStandardError (f: unit -> 'T) =
    lock standardErrorLock (fun () ->
        let captured = new IO.StringWriter()
        let previous = Console.Error
        Console.SetError captured

        try
            let result = f ()
            result, captured.ToString()
        finally
            Console.SetError previous)

/// A tensor of the given shape with values uniform in [lo, hi).
let uniform (seed: int) (shape: int[]) (lo: float32) (hi: float32) = Tensor.rand (key seed) shape * (hi - lo) + lo

/// Shapes of rank 0..3 with dimensions 1..4.
let genShape =
    gen {
        let! rank = Gen.choose (0, 3)
        return! Gen.arrayOfLength rank (Gen.choose (1, 4))
    }

/// A shape and another that broadcasts against it (some dimensions set to 1, some leading ones dropped).
let genBroadcastPair =
    gen {
        let! a = genShape
        let! ones = Gen.arrayOfLength a.Length (Gen.elements [ false; false; true ])
        let b = Array.map2 (fun d one -> if one then 1 else d) a ones
        let! drop = Gen.choose (0, b.Length)
        let! swap = Gen.elements [ false; true ]
        let b' = b.[drop..]
        return if swap then (b', a) else (a, b')
    }

type ShapeSeed = { Shape: int[]; Seed: int }
type PairSeed = { A: int[]; B: int[]; Seed: int }

let arbShapeSeed =
    Arb.fromGen (
        gen {
            let! s = genShape
            let! seed = Gen.choose (0, 1_000_000)
            return { Shape = s; Seed = seed }
        }
    )

let arbPairSeed =
    Arb.fromGen (
        gen {
            let! (a, b) = genBroadcastPair
            let! seed = Gen.choose (0, 1_000_000)
            return { A = a; B = b; Seed = seed }
        }
    )

/// Sizes of a matrix product op(a)[m×k]·op(b)[k×n]: which operands are transposed, and 0 (unbatched) to 3 batches.
let genProduct (maxM: int) (maxK: int) (maxN: int) =
    gen {
        let! m = Gen.choose (1, maxM)
        let! k = Gen.choose (1, maxK)
        let! n = Gen.choose (1, maxN)
        let! ta = Gen.elements [ false; true ]
        let! tb = Gen.elements [ false; true ]
        let! batches = Gen.choose (0, 3)
        return m, k, n, ta, tb, batches
    }

let toF64 (t: Tensor) = t.ToArray() |> Array.map float

/// Element by element, actual is within the accuracy of expected; a failure names `what` and the element.
let expectAllClose (accuracy: Accuracy) (what: string) (actual: float32[]) (expected: float32[]) =
    Expect.equal actual.Length expected.Length (sprintf "%s: lengths" what)

    Array.iteri2
        (fun i (u: float32) (v: float32) -> Expect.floatClose accuracy (float u) (float v) (sprintf "%s, element %d" what i))
        actual
        expected

/// Checks reverse-mode gradients against a central finite difference along a random direction v.
///
/// The loss is L(x) = Σ w·f(x) with w ~ U(−1,1)/numel, so L and its derivatives are O(1). With step
/// h = 1e-2 in float32: the truncation error of the central difference is h²/6·|L'''| ≲ 1e-4·(|f'''| ≤ e²)
/// ≈ 1.2e-4, and rounding adds about ε_mach·|L|/h ≈ 1e-5 per evaluation. The tolerance
/// 2e-3 + 1e-2·|∇L·v| leaves a margin of about ten over both, while a wrong derivative (a sign, a
/// factor, a missed broadcast sum) produces errors of order |∇L·v| itself.
let checkGradient (name: string) (f: Tensor[] -> Tensor) (xs: Tensor[]) (seed: int) =
    let ks = RandomKey.split (xs.Length + 1) (key seed)
    let y0 = f xs
    let w = (Tensor.rand ks.[0] y0.Shape * 2.0f - 1.0f) / float32 (max 1 y0.Numel)
    let loss (ts: Tensor[]) = Tensor.sum (f ts * w)
    let vs = xs |> Array.mapi (fun i x -> Tensor.rand ks.[i + 1] x.Shape * 2.0f - 1.0f)
    let gs = Diff.grads loss xs

    let ad =
        Array.map2 (fun (g: Tensor) (v: Tensor) -> Array.map2 (*) (toF64 g) (toF64 v) |> Array.sum) gs vs
        |> Array.sum

    let h = 1e-2f
    let at (s: float32) = Array.map2 (fun (x: Tensor) (v: Tensor) -> x + s * v) xs vs |> loss |> Tensor.toScalar |> float
    let fd = (at h - at -h) / (2.0 * float h)
    let tol = 2e-3 + 1e-2 * max (abs ad) (abs fd)

    if not (abs (ad - fd) <= tol) then
        failtestf
            "%s: gradient along a random direction is %.6g by AD but %.6g by finite differences (tolerance %.3g, shapes %s)"
            name
            ad
            fd
            tol
            (String.Join(" ", xs |> Array.map (fun x -> Shape.show x.Shape)))

/// Moves values at least `gap` away from a kink at `at` (keeps finite differences on one side of it).
let awayFrom (at: float32) (gap: float32) (x: Tensor) =
    let v =
        x.ToArray()
        |> Array.map (fun e ->
            if abs (e - at) < gap then
                (if e >= at then at + gap else at - gap)
            else
                e)

    Tensor.ofArray x.Shape v

/// The bit patterns of a tensor's values (for bit-for-bit comparisons).
let tensorBits (t: Tensor) = t.ToArray() |> Array.map BitConverter.SingleToInt32Bits

/// A tensor released by its scope refuses to be read.
let expectReleased (t: RawTensor) (what: string) = Expect.throwsT<ObjectDisposedException> (fun () -> t.ToArray() |> ignore) what

/// What release scopes promise on any backend that has them (IReleasingBackend): nested scopes, a kept tensor
/// passing to the scope around it, a dropped one refusing every use once its scope ends, kept and earlier
/// tensors untouched. Tensors of `length` elements are made and released (a length other tests do not use).
let checkReleaseScopes (be: IBackend) (length: int) =
    let scoped = be :?> IReleasingBackend
    let before = be.Full([| 3 |], 1.0f)
    let mutable dropped = null
    let mutable kept = null
    let mutable innerKept = null

    do
        use outer = scoped.BeginScope()

        do
            use inner = scoped.BeginScope()
            innerKept <- be.Full([| length |], 4.0f)
            inner.Keep innerKept
            dropped <- be.Full([| length |], 2.0f)
        // Kept by the inner scope only: it passed to the outer one, which is still open.
        Expect.allEqual (innerKept.ToArray()) 4.0f "a tensor kept by the inner scope lives on in the outer one"
        expectReleased dropped "a dropped tensor is released when its scope ends"
        Expect.throwsT<ObjectDisposedException> (fun () -> be.Unary(Neg, dropped) |> ignore) "and no operation takes it"
        Expect.throwsT<ObjectDisposedException> (fun () -> be.Reshape(dropped, [| 1; length |]) |> ignore) "nor a view of it"
        kept <- be.Scalar(MulScalar 3.0f, be.Full([| 5 |], 1.0f))
        outer.Keep kept

    expectReleased innerKept "the outer scope did not keep it"
    Expect.allEqual (kept.ToArray()) 3.0f "a kept tensor keeps its values"
    Expect.allEqual (before.ToArray()) 1.0f "a tensor made before the scopes is untouched"

/// What a scope promises about tensors made before it and handed to it (IReleaseScope.Consume): released when it
/// ends unless kept; a kept one stays with its owner (the scope around does not take it); one that an outer scope
/// made too is released once, so its memory serves one new tensor, not two.
let checkConsumingScopes (be: IBackend) (length: int) =
    let scoped = be :?> IReleasingBackend
    let dropped = be.Full([| length |], 6.0f)
    let kept = be.Full([| length |], 7.0f)

    do
        use outer = scoped.BeginScope()
        let madeByOuter = be.Full([| length |], 8.0f)

        do
            use inner = scoped.BeginScope()
            inner.Consume dropped
            inner.Consume kept
            inner.Consume madeByOuter
            inner.Keep kept

        expectReleased dropped "a consumed tensor is released when the scope ends"
        expectReleased madeByOuter "so is one an outer scope made"
        Expect.allEqual (kept.ToArray()) 7.0f "a consumed tensor the scope keeps lives on"

    Expect.allEqual (kept.ToArray()) 7.0f "and the scope around did not take it"
    let first = be.Full([| length |], 1.0f)
    let second = be.Full([| length |], 2.0f)
    Expect.allEqual (first.ToArray()) 1.0f "memory released twice serves one new tensor, not two"
    Expect.allEqual (second.ToArray()) 2.0f "each new tensor has its own memory"

/// A small Pendulum MAAC agent (2×16 networks, an untrained model of 3 members), its model context and a batch of
/// 24 random transitions: the inputs of one whole agent update, its critic target STEVE's with horizon 2.
let smallMaacUpdate () =
    let settings =
        { Maac.Algorithms.Settings.forTask "Pendulum" "maac" with
            CriticHorizon = 2
            Hidden = [| 16; 16 |]
            ModelMembers = 3
            ModelElites = 2
            ModelHidden = [| 16 |]
            BatchSize = 24
        }

    let agent = Maac.Algorithms.Agent.init settings (key 11) 3 1 false

    let ctx: Maac.Rl.ModelContext =
        {
            Model = agent.Model
            Task = (Maac.Envs.Tasks.find "Pendulum").Functions
            ActionLow = Tensor.ofSeq [ -2.0f ]
            ActionHigh = Tensor.ofSeq [ 2.0f ]
            PathNoise = Maac.Rl.SampledNoise
        }

    let k = RandomKey.split 4 (key 12)

    let batch: Maac.Rl.Batch =
        {
            Obs = Tensor.rand k.[0] [| 24; 3 |] * 2.0f - 1.0f
            Action = Tensor.rand k.[1] [| 24; 1 |] * 2.0f - 1.0f
            Reward = Tensor.randn k.[2] [| 24 |]
            NextObs = Tensor.rand k.[3] [| 24; 3 |] * 2.0f - 1.0f
            Done = Tensor.zeros [| 24 |]
        }

    settings, agent, ctx, batch

/// log(1 + eˣ) in float64 to about 1e-15 relative (a series where eˣ is small, so that no rounding of 1 + eˣ enters).
let softplusReference (x: float) =
    let z = Math.Exp(-(abs x))

    let log1p =
        if z < 1e-5 then
            z - z * z / 2.0 + z * z * z / 3.0
        else
            Math.Log(1.0 + z)

    max x 0.0 + log1p

/// Softplus arguments from −87 (eˣ still a normal float32) to 30, including where 1 + eˣ rounds to 1 in float32.
let softplusGrid = Array.init 1171 (fun i -> -87.0f + 0.1f * float32 i)

/// The largest relative error of float32 softplus values against the float64 reference on the grid.
let softplusWorstError (values: float32[]) =
    Array.map2 (fun (x: float32) (y: float32) -> let r = softplusReference (float x) in abs (float y - r) / r) softplusGrid values
    |> Array.max

/// The repository root (the folder holding Maac.sln), found from the test assembly's folder.
let repoRoot () =
    let rec up (d: IO.DirectoryInfo) =
        if isNull d then
            failtest "Maac.sln not found above the test assembly"
        elif IO.File.Exists(IO.Path.Combine(d.FullName, "Maac.sln")) then
            d.FullName
        else
            up d.Parent

    up (IO.DirectoryInfo AppContext.BaseDirectory)
