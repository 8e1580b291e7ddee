/// The CPU backend's kernels against plain reference loops, the random generator, and determinism.
module Maac.Tests.EngineTests

open System
open System.Runtime.InteropServices
open System.Runtime.Intrinsics
open Expecto
open FsCheck
open FsCheck.FSharp
open Maac
open Maac.Tensors
open Maac.Tensors.Cpu
open Maac.Tests.Support

/// Reference product in float64, and the standard rounding bound for a float32 dot product of length k:
/// |fl(Σ aᵢbᵢ) − Σ aᵢbᵢ| ≤ γ_k·Σ|aᵢbᵢ| with γ_k = k·u/(1 − k·u), u = 2⁻²⁴ (Higham, Accuracy and Stability, §3.1).
let private checkProduct (ta: bool) (tb: bool) (batches: int) (m: int) (k: int) (n: int) (seed: int) =
    let shapeA = if ta then [| k; m |] else [| m; k |]
    let shapeB = if tb then [| n; k |] else [| k; n |]
    let withBatch s = if batches > 0 then Array.append [| batches |] s else s
    let a = uniform seed (withBatch shapeA) -1.0f 1.0f
    let b = uniform (seed + 1) (withBatch shapeB) -1.0f 1.0f
    let c = Tensor.matmulWith ta tb a b None
    let av, bv, cv = a.ToArray(), b.ToArray(), c.ToArray()
    let u = Math.Pow(2.0, -24.0)
    let gamma = float k * u / (1.0 - float k * u)

    for bi in 0 .. max 1 batches - 1 do
        for i in 0 .. m - 1 do
            for j in 0 .. n - 1 do
                let mutable exact = 0.0
                let mutable absSum = 0.0

                for p in 0 .. k - 1 do
                    let x = float av.[bi * m * k + (if ta then p * m + i else i * k + p)]
                    let y = float bv.[bi * k * n + (if tb then j * k + p else p * n + j)]
                    exact <- exact + x * y
                    absSum <- absSum + abs (x * y)

                let got = float cv.[(bi * m + i) * n + j]
                // The inputs themselves are exact float32 values, so only the summation rounds.
                if abs (got - exact) > gamma * absSum + 1e-30 then
                    failtestf
                        "product %dx%dx%d (batches %d, transA %b, transB %b): element (%d,%d) is %g, exact %g, bound %g"
                        m
                        k
                        n
                        batches
                        ta
                        tb
                        i
                        j
                        got
                        exact
                        (gamma * absSum)

/// The product through both micro-kernels on the same operands (the 512-bit one is emulated in software where the
/// processor lacks AVX-512), with a bias row in one case of two: the 512-bit and the 256-bit outputs, to be compared bit for bit.
let private bothWidths (ta: bool) (tb: bool) (batches: int) (m: int) (k: int) (n: int) (seed: int) =
    let count = max 1 batches
    let random s len = (uniform s [| len |] -1.0f 1.0f).ToArray()
    let a = random seed (count * m * k)
    let b = random (seed + 1) (count * k * n)
    let bias = if seed % 2 = 0 then random (seed + 2) n else null
    let operand data trans ld stride = { Data = data; Offset = 0; Ld = ld; Trans = trans; BatchStride = stride }
    let opA = operand a ta (if ta then m else k) (m * k)
    let opB = operand b tb (if tb then k else n) (k * n)

    let product wide =
        let c = Array.create (count * m * n) Single.NaN
        Gemm.runWith wide count m n k opA opB c bias
        c

    product true, product false

/// a op b by NumPy's broadcasting rule, element by element on the host: shapes aligned at the right, a dimension
/// of 1 (or a missing one) repeating its single entry.
let private broadcastReference (op: float32 -> float32 -> float32) (a: Tensor) (b: Tensor) =
    let sa, sb = a.Shape, b.Shape
    let rank = max sa.Length sb.Length
    let dim (s: int[]) i = if i < rank - s.Length then 1 else s.[i - (rank - s.Length)]
    let outShape = Array.init rank (fun i -> max (dim sa i) (dim sb i))
    let av, bv = a.ToArray(), b.ToArray()

    // The flat index in an operand of the output's multi-index (rank-aligned, 0 where the operand repeats).
    let flatIn (s: int[]) (index: int[]) =
        let mutable flat = 0

        for i in 0 .. rank - 1 do
            let d = dim s i
            flat <- flat * d + (if d = 1 then 0 else index.[i])

        flat

    let values =
        Array.init (Array.fold (*) 1 outShape) (fun o ->
            let index = Array.zeroCreate rank
            let mutable rest = o

            for i in rank - 1 .. -1 .. 0 do
                index.[i] <- rest % outShape.[i]
                rest <- rest / outShape.[i]

            op av.[flatIn sa index] bv.[flatIn sb index])

    outShape, values

/// Shapes of rank 0..4 with dimensions 1..11 and a partner that broadcasts against them: rows narrower and wider than a
/// vector, ragged tails, unit dimensions to drop and neighbours to merge.
let private genWideBroadcastPair =
    gen {
        let! rank = Gen.choose (0, 4)
        let! a = Gen.arrayOfLength rank (Gen.choose (1, 11))
        let! ones = Gen.arrayOfLength rank (Gen.elements [ false; true ])
        let b = Array.map2 (fun d one -> if one then 1 else d) a ones
        let! drop = Gen.choose (0, rank)
        let! swap = Gen.elements [ false; true ]
        let! seed = Gen.choose (0, 1_000_000)
        return (if swap then (b.[drop..], a) else (a, b.[drop..])), seed
    }

/// The first float among the bit patterns start, start + stride, … below start + count·stride where the sixteen-lane
/// f differs from the scalar g, if any (patterns taken sixteen at a time, both NaN counting as equal).
let private firstDifference
    (f: Vector512<float32> -> Vector512<float32>)
    (g: float32 -> float32)
    (stride: int64)
    (start: int64)
    (count: int64)
    =
    let lanes = Array.zeroCreate<float32> 16
    let expected = Array.zeroCreate<float32> 16
    let mutable found = None
    let mutable bits = start

    while found.IsNone && bits < start + count * stride do
        for j in 0..15 do
            lanes.[j] <- BitConverter.UInt32BitsToSingle(uint32 (bits + int64 j * stride))
            expected.[j] <- g lanes.[j]

        let v = f (Vector512.Create<float32>(ReadOnlySpan<float32>(lanes)))

        if not (Vector512.EqualsAll(v.AsInt32(), Vector512.Create<float32>(ReadOnlySpan<float32>(expected)).AsInt32())) then
            for j in 0..15 do
                let got = v.GetElement j

                if
                    found.IsNone
                    && BitConverter.SingleToInt32Bits got <> BitConverter.SingleToInt32Bits expected.[j]
                    && not (Single.IsNaN got && Single.IsNaN expected.[j])
                then
                    found <- Some(lanes.[j], got, expected.[j])

        bits <- bits + 16L * stride

    found

[<System.Runtime.InteropServices.DllImport("libc", EntryPoint = "gnu_get_libc_version")>]
extern nativeint private gnuLibcVersion()

let tests =
    testList
        "engine"
        [
            test "the vector exp, log and tanh are on with glibc and AVX-512, and give MathF's bits on every float of their main paths" {
                // The sampling kernels' formulas are defined by MathF (the C library's expf, logf and tanhf). The
                // vector functions take glibc's steps and are enabled where the start-up check finds MathF's bits;
                // here that must hold for every float glibc computes on its main path (exp: |x| < 88; log: normal
                // x > 0; tanh: 0 ≤ x < 22, through every branch of expm1), and every 101st bit pattern of the rest
                // (MathF lane by lane; tanh: ±1, below zero the same steps with the sign set).
                let glibc =
                    try
                        System.Version.Parse(Marshal.PtrToStringAnsi(gnuLibcVersion ())) >= System.Version(2, 28)
                    with
                    | :? DllNotFoundException
                    | :? EntryPointNotFoundException -> false

                Expect.equal LibmVector.Enabled (X86.Avx512F.IsSupported && glibc) "on exactly with glibc 2.28 or later and AVX-512"

                if LibmVector.Enabled then
                    let ranges =
                        [
                            "exp", LibmVector.exp, MathF.Exp, [ 1L, 0L, 0x42b00000L; 1L, 0x80000000L, 0x42b00000L ]
                            "exp",
                            LibmVector.exp,
                            MathF.Exp,
                            [ 101L, 0x42b00000L, 0x3d500000L / 101L; 101L, 0xc2b00000L, 0x3d500000L / 101L ]
                            "log", LibmVector.log, MathF.Log, [ 1L, 0x00800000L, 0x7f000000L ]
                            "log", LibmVector.log, MathF.Log, [ 101L, 0L, 0x800000L / 101L; 101L, 0x7f800000L, 0x80800000L / 101L ]
                            "tanh", LibmVector.tanh, MathF.Tanh, [ 1L, 0L, 0x41b00000L ]
                            "tanh", LibmVector.tanh, MathF.Tanh, [ 101L, 0x41b00000L, 0xbe500000L / 101L ]
                        ]

                    let pieces =
                        [|
                            for name, f, g, spans in ranges do
                                for stride, start, count in spans do
                                    let size = 1L <<< 24

                                    for first in 0L .. size .. count - 1L do
                                        yield name, f, g, stride, start + first * stride, min size (count - first)
                        |]

                    let failures =
                        pieces
                        |> Array.Parallel.choose (fun (name, f, g, stride, start, count) ->
                            firstDifference f g stride start count
                            |> Option.map (fun (x, got, expected) -> sprintf "%s(%g) is %g, MathF gives %g" name x got expected))

                    Expect.isEmpty failures (String.concat "; " failures)
            }
            test "softplus holds float32 accuracy over the whole range, down to x = -87 (CPU kernel and scalar formula)" {
                // A few float32 roundings: 4e-7 relative would do; 2e-6 leaves room for exp's and log's own error.
                // Without log1p, 1 + eˣ rounds to 1 for x ≤ -17 (softplus 0) and is 17% off at x = -15.
                let kernel = (Tensor.ofArray [| softplusGrid.Length |] softplusGrid |> Tensor.softplus).ToArray()
                Expect.isLessThan (softplusWorstError kernel) 2e-6 "CPU kernel"
                Expect.isLessThan (softplusWorstError (softplusGrid |> Array.map ScalarMath.Softplus)) 2e-6 "ScalarMath.Softplus"
                Expect.isGreaterThan (Tensor.softplus (Tensor.scalar -30.0f) |> Tensor.toScalar) 0.0f "no underflow to 0 at x = -30"
            }
            testPropertyWithConfig
                configFew
                "SGEMM matches the float64 product within the rounding bound (edge tiles, transposes, batches)"
                (fun () ->
                    Prop.forAll (Arb.fromGen (genProduct 40 40 70)) (fun (m, k, n, ta, tb, batches) ->
                        checkProduct ta tb batches m k n (m + 7 * k + 13 * n)))

            testPropertyWithConfig config "broadcast element-wise operations equal NumPy's rule applied element by element" (fun () ->
                Prop.forAll (Arb.fromGen genWideBroadcastPair) (fun ((shapeA, shapeB), seed) ->
                    let a = uniform seed shapeA 0.5f 2.0f
                    let b = uniform (seed + 1) shapeB 0.5f 2.0f
                    // One float32 operation per element on the same inputs: the same bits either way.
                    for name, op, reference in
                        [
                            "add", (+), (+)
                            "mul", (*), (*)
                            "div", (/), (/)
                            "maximum", Tensor.maximum, (fun (x: float32) y -> max x y)
                        ] do
                        let outShape, expected = broadcastReference reference a b
                        let got = op a b
                        let where = sprintf "%s of %A and %A" name shapeA shapeB
                        Expect.equal got.Shape outShape where
                        Expect.sequenceEqual (got.ToArray()) expected where))

            test "a narrow row repeated over many rows gives NumPy's result in every element, across pieces, on either side" {
                // [3001, D] against [D] runs as one flat walk split into pieces of 16,384 elements, which start inside
                // rows for these D (one of them wider than a vector, one narrower, one near the path's limit).
                for d in [ 6; 23; 63 ] do
                    let rows = uniform (100 + d) [| 3001; d |] 0.5f 2.0f
                    let row = uniform (200 + d) [| d |] 0.5f 2.0f

                    for name, op, reference in [ "sub", (-), (-); "div", (/), (/) ] do
                        for a, b in [ rows, row; row, rows ] do
                            let _, expected = broadcastReference reference a b
                            Expect.sequenceEqual ((op a b).ToArray()) expected (sprintf "%s of %A and %A" name a.Shape b.Shape)
            }

            test "SGEMM across several k-blocks and m-blocks, packed a k-range at a time or all at once" {
                checkProduct false false 0 300 530 45 1
                checkProduct true true 2 150 270 33 2
                // Batches enough for a piece per batch at two threads (each packing its own B, k-range by k-range).
                checkProduct false true 5 150 530 45 3
                // A weight gradient's shape: 5 k-ranges packed at once; then 32 panels over 6 k-ranges, too many floats
                // to pack at once.
                checkProduct true false 0 17 1280 256 4
                checkProduct true false 0 20 1300 1024 5
            }

            testSequenced
            <| test "a batched product gives the same bits handed out per batch or per block of rows" {
                // 5 batches are a piece each at 1 and 2 threads (at least two per thread) and pieces of (batch, block
                // of rows) at 3 and 8; 150 rows are two blocks, 530 k three ranges; bias, transposes and an activation
                // applied block by block as the product finishes them.
                let ks = RandomKey.split 3 (key 21)
                let a = Tensor.randn ks.[0] [| 5; 530; 150 |]
                let b = Tensor.randn ks.[1] [| 5; 45; 530 |]
                let bias = Tensor.randn ks.[2] [| 5; 1; 45 |]

                // A weight gradient's shape: all its k-ranges packed at once.
                let x = Tensor.randn ks.[0] [| 1280; 17 |]
                let dy = Tensor.randn ks.[1] [| 1280; 256 |]

                let products () =
                    [|
                        Tensor.matmulWith true true a b (Some bias)
                        Tensor.matmulActivationWith Silu true true a b (Some bias)
                        Tensor.matmulWith true false x dy None
                    |]
                    |> Array.collect tensorBits

                let before = CpuSettings.Threads

                try
                    let byThreads =
                        [ 1; 2; 3; 8 ]
                        |> List.map (fun threads ->
                            CpuSettings.Threads <- threads
                            threads, products ())

                    let one = snd byThreads.Head

                    for threads, bits in byThreads do
                        // The first differing element, not the whole arrays (a failure's message stays short).
                        match Array.tryFindIndex id (Array.map2 (<>) bits one) with
                        | Some i -> failtestf "%d threads against 1: element %d differs" threads i
                        | None -> ()
                finally
                    CpuSettings.Threads <- before
            }

            testPropertyWithConfig
                configFew
                "the 512-bit and 256-bit micro-kernels give the same bits (edge tiles, transposes, batches, bias)"
                (fun () ->
                    Prop.forAll (Arb.fromGen (genProduct 40 300 70)) (fun (m, k, n, ta, tb, batches) ->
                        let wide, narrow = bothWidths ta tb batches m k n (m + 7 * k + 13 * n)
                        // Each element is the same chain of fused multiply-adds over k in both, so no rounding differs.
                        let bits (x: float32[]) = x |> Array.map BitConverter.SingleToInt32Bits
                        Expect.sequenceEqual (bits wide) (bits narrow) (sprintf "%dx%dx%d, %d batches" m k n batches)))

            test "SGEMM reading A where it is stored gives the bits of packing A" {
                // A as stored is read in place; a transposed A is packed when more than two panels of B read it (136
                // columns) and read in place for one or two (the first 40). The product over A and the products over
                // a transposed copy of A, packed and in place, are the same fused multiply-adds in the same order.
                // 13 rows leave a ragged panel (packed in all), k = 300 two k-blocks, 150 rows two blocks of rows.
                let bits (x: Tensor) = x.ToArray() |> Array.map BitConverter.SingleToInt32Bits

                for tb, batches, m, k in [ false, 0, 13, 300; false, 2, 150, 37; true, 3, 13, 45 ] do
                    let withBatch (shape: int[]) =
                        if batches = 0 then
                            shape
                        else
                            Array.append [| batches |] shape

                    let a = uniform 21 (withBatch [| m; k |]) -1.0f 1.0f
                    let aStoredTransposed = Tensor.transpose a
                    let wide = uniform 22 (withBatch (if tb then [| 136; k |] else [| k; 136 |])) -1.0f 1.0f
                    let columnAxis = if tb then -2 else -1
                    let narrow = Tensor.slice (wide.Shape.Length + columnAxis) 0 40 wide
                    let firstColumns (c: Tensor) = Tensor.slice (c.Shape.Length - 1) 0 40 c
                    let asStored = Tensor.matmulWith false tb a wide None
                    let packed = Tensor.matmulWith true tb aStoredTransposed wide None
                    let transposedInPlace = Tensor.matmulWith true tb aStoredTransposed narrow None
                    let where = sprintf "transB %b, %d batches, %dx%d" tb batches m k
                    Expect.sequenceEqual (bits asStored) (bits packed) ("A as stored against A transposed, packed: " + where)

                    Expect.sequenceEqual
                        (bits transposedInPlace)
                        (bits (firstColumns packed))
                        ("A transposed, in place against packed: " + where)
            }

            test "an edge panel of at most 8 columns gives the bits of a whole panel" {
                // A panel with at most 8 columns inside C runs on an 8-column kernel; with B widened to whole panels
                // the same columns come from the full tile. 200 and 36 columns leave 8 and 4 in the last 32-column
                // panel, 1 column uses the 16-column panel; ragged rows (13, 150) and two k-ranges (300), with bias.
                let bits (x: Tensor) = x.ToArray() |> Array.map BitConverter.SingleToInt32Bits

                for n, whole, m, k in [ 200, 224, 13, 300; 36, 64, 150, 37; 1, 16, 150, 300 ] do
                    let a = uniform (n + 1) [| m; k |] -1.0f 1.0f
                    let wide = uniform (n + 2) [| k; whole |] -1.0f 1.0f
                    let bias = uniform (n + 3) [| whole |] -1.0f 1.0f
                    let first (x: Tensor) = Tensor.slice (x.Rank - 1) 0 n x
                    let edge = Tensor.matmulWith false false a (first wide) (Some(first bias))
                    let full = Tensor.matmulWith false false a wide (Some bias)
                    Expect.sequenceEqual (bits edge) (bits (first full)) (sprintf "%d of %d columns, %dx%d" n whole m k)
            }

            test "bias is added to every row of the fused product" {
                let x = uniform 3 [| 5; 4 |] -1.0f 1.0f
                let w = uniform 4 [| 4; 3 |] -1.0f 1.0f
                let b = Tensor.ofArray [| 3 |] [| 1.0f; -2.0f; 0.5f |]
                let fused = (Tensor.linear x w b).ToArray()
                let plain = (Tensor.matmul x w + b).ToArray()
                Expect.sequenceEqual fused plain "linear equals matmul + broadcast bias exactly"
            }

            test "Philox4x32-10 reproduces Random123's known-answer vectors" {
                let check (k0, k1) (c0, c1, c2, c3) expected =
                    let struct (a, b, c, d) = Philox.block k0 k1 c0 c1 c2 c3
                    Expect.equal [| a; b; c; d |] expected (sprintf "philox(%x,%x)" k0 k1)

                check (0u, 0u) (0u, 0u, 0u, 0u) [| 0x6627e8d5u; 0xe169c58du; 0xbc57ac4cu; 0x9b00dbd8u |]

                check
                    (0xffffffffu, 0xffffffffu)
                    (0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu)
                    [| 0x408f276du; 0x41c83b0eu; 0xa20bc7c6u; 0x6d5451fdu |]

                check
                    (0xa4093822u, 0x299f31d0u)
                    (0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u)
                    [| 0xd16cfe09u; 0x94fdccebu; 0x5001e420u; 0x24126ea1u |]
            }

            test "a stretch of random values is the same values whichever index it starts at" {
                // A Philox block gives four values: a stretch may start and end inside one, and every start and length
                // must give the values of one fill from index 0 (as the pieces of a parallel fill do).
                let k = key 77
                let all = Array.zeroCreate<float32> 300
                let uniformAll = Array.zeroCreate<float32> 300
                RandomKey.fillNormal k (Span all) 0
                RandomKey.fillUniform k (Span uniformAll) 0

                for start in [ 0; 1; 2; 3; 4; 5; 31; 33; 100 ] do
                    for length in [ 0; 1; 7; 31; 32; 33; 64; 150 ] do
                        let part = Array.zeroCreate<float32> length
                        RandomKey.fillNormal k (Span part) start
                        Expect.sequenceEqual part all.[start .. start + length - 1] (sprintf "normal from %d, %d values" start length)
                        RandomKey.fillUniform k (Span part) start

                        Expect.sequenceEqual
                            part
                            uniformAll.[start .. start + length - 1]
                            (sprintf "uniform from %d, %d values" start length)
            }

            test "random tensors: same key same values, split keys differ, moments are right" {
                let k = key 42
                Expect.sequenceEqual ((Tensor.randn k [| 1000 |]).ToArray()) ((Tensor.randn k [| 1000 |]).ToArray()) "same key, same values"
                let k1, k2 = RandomKey.split2 k

                Expect.notEqual
                    ((Tensor.randn k1 [| 8 |]).ToArray())
                    ((Tensor.randn k2 [| 8 |]).ToArray())
                    "split keys give different streams"

                let n = 200_000
                let z = (Tensor.randn k [| n |]).ToArray() |> Array.map float
                let mean = Array.average z
                let var = z |> Array.averageBy (fun x -> (x - mean) ** 2.0)
                // Standard errors: mean 1/√n ≈ 0.0022, variance √(2/n) ≈ 0.0032; allow five of them.
                Expect.isLessThan (abs mean) 0.011 "normal mean ≈ 0"
                Expect.isLessThan (abs (var - 1.0)) 0.016 "normal variance ≈ 1"
                let u = (Tensor.rand k [| n |]).ToArray()
                Expect.isTrue (u |> Array.forall (fun x -> x >= 0.0f && x < 1.0f)) "uniform in [0, 1)"
                Expect.isLessThan (abs (Array.averageBy float u - 0.5)) 0.0033 "uniform mean ≈ 1/2 (5 standard errors)"
                let prefix = (Tensor.randn k [| 13 |]).ToArray()
                Expect.sequenceEqual prefix ((Tensor.randn k [| 1000 |]).ToArray().[..12]) "element i depends only on (key, i)"
            }

            test "permutations are permutations" {
                let p = RandomKey.permutation 1000 (key 5)
                Expect.sequenceEqual (Array.sort p) [| 0..999 |] "every index once"
                Expect.notEqual p [| 0..999 |] "not the identity"
            }

            testSequenced
            <| test "same seed gives identical bits on 1 and 2 threads" {
                let workload () =
                    let k = key 11
                    let ks = RandomKey.split 4 k
                    let mlp = Maac.Nn.Mlp.init ks.[0] [| 37; 300; 129; 5 |] Maac.Nn.Activation.Silu
                    let x = Tensor.randn ks.[1] [| 513; 37 |]
                    let loss (p: Maac.Nn.Mlp) = Maac.Nn.Mlp.forward p x |> Tensor.tanh |> Tensor.mean
                    let v, g = Diff.valueAndGradParams loss mlp
                    let big = Tensor.randn ks.[2] [| 70_000 |]

                    let reductions =
                        [| Tensor.sum big; Tensor.sumAxis 0 false (Tensor.reshape [| 700; 100 |] big); Tensor.exp big |]

                    Array.concat [ [| v |]; Parameters.tensors g; reductions ]
                    |> Array.collect (fun t -> t.ToArray())
                    |> Array.map BitConverter.SingleToInt32Bits

                let before = CpuSettings.Threads

                try
                    CpuSettings.Threads <- 1
                    let one = workload ()
                    CpuSettings.Threads <- 2
                    let two = workload ()
                    Expect.sequenceEqual two one "bit-identical results"
                finally
                    CpuSettings.Threads <- before
            }

            test "CPU release scopes: what is not kept is released and refuses use, and its array serves the next tensor at once" {
                let be = Backends.Get Device.Cpu
                let length = 7_907 // a length no other test uses, above the pool's minimum
                checkReleaseScopes be length
                // Both arrays of `length` released above are in the pool: the next tensors of that length take them
                // instead of allocating (a fresh array alone would be 4·length bytes).
                let allocated = GC.GetAllocatedBytesForCurrentThread()
                let again = be.Full([| length |], 5.0f)
                Expect.isLessThan (GC.GetAllocatedBytesForCurrentThread() - allocated) (int64 length) "no fresh array"
                Expect.allEqual (again.ToArray()) 5.0f "with its own values"
                checkConsumingScopes be length
            }

            test "a worker team runs every piece of every loop exactly once, whoever claims it" {
                // Three helpers on however many cores: helpers woken late meet later loops and must claim only
                // pieces of the loop running then.
                let team = WorkerTeam(3)
                let rng = Random(7)

                for run in 1..3000 do
                    let count = rng.Next(2, 40)
                    let hits = Array.zeroCreate<int> count
                    let ran = team.TryRun(count, fun i -> Threading.Interlocked.Increment &hits.[i] |> ignore)
                    Expect.isTrue ran "an idle team takes the loop"

                    if hits |> Array.exists (fun h -> h <> 1) then
                        failtestf "loop %d of %d pieces ran them %A times" run count hits
            }

            test "a loop of more pieces than claims runs each piece once, in claims of consecutive pieces" {
                // At 2 threads a loop is handed out in at most 8 claims; 1,000 pieces make 8 claims of 125, 9 make 5
                // of 2 (the last of 1), and 8 stay one piece each.
                Expect.equal (Workers.claimsOf 1000 2) (struct (8, 125)) "1,000 pieces"
                Expect.equal (Workers.claimsOf 9 2) (struct (5, 2)) "9 pieces"
                Expect.equal (Workers.claimsOf 8 2) (struct (8, 1)) "8 pieces"
                let threads = CpuSettings.Threads

                try
                    CpuSettings.Threads <- 2

                    for count in [ 9; 17; 1000; 4099 ] do
                        let hits = Array.zeroCreate<int> count
                        Workers.runOnTeam count (fun i -> Threading.Interlocked.Increment &hits.[i] |> ignore)

                        if hits |> Array.exists (fun h -> h <> 1) then
                            failtestf "a loop of %d pieces ran them %A times" count hits
                finally
                    CpuSettings.Threads <- threads
            }
            test "a helper held after a piece that was not its loop's last does not end the next loop early" {
                // The interleaving that would let a two-thread run part from a one-thread run: a helper counts the
                // 2nd of 3 pieces done and is descheduled; the caller finishes the loop and starts one of 2 pieces; the
                // helper, back, must not take 2 = 2 for the end of that loop while it goes on to run its other piece.
                let wait (e: Threading.ManualResetEventSlim) what =
                    if not (e.Wait(TimeSpan.FromSeconds 10.0)) then
                        failtestf "timed out waiting until %s" what

                let helperHeld = new Threading.ManualResetEventSlim(false)
                let releaseHelper = new Threading.ManualResetEventSlim(false)
                let helperOnSecondLoop = new Threading.ManualResetEventSlim(false)
                let caller = Environment.CurrentManagedThreadId
                let helperCounts = ref 0

                let holdSecondCount =
                    Action(fun () ->
                        if Environment.CurrentManagedThreadId <> caller then
                            helperCounts.Value <- helperCounts.Value + 1

                            if helperCounts.Value = 2 then
                                helperHeld.Set()
                                wait releaseHelper "the test lets the helper go on")

                let team = WorkerTeam(1, holdSecondCount)
                // First loop: the caller's piece waits until the helper has run the other two and is held.
                let first =
                    team.TryRun(
                        3,
                        fun _ ->
                            if Environment.CurrentManagedThreadId = caller then
                                wait helperHeld "the helper has counted two pieces"
                    )

                Expect.isTrue first "an idle team takes the loop"
                // Second loop: the caller's piece lets the helper go and returns once the helper runs the other piece,
                // which ends only after the caller's TryRun should have waited for it.
                let finishedPieces = Array.zeroCreate<int> 2

                let second =
                    team.TryRun(
                        2,
                        fun piece ->
                            if Environment.CurrentManagedThreadId = caller then
                                releaseHelper.Set()
                                wait helperOnSecondLoop "the helper runs a piece of the second loop"
                            else
                                helperOnSecondLoop.Set()
                                Threading.Thread.Sleep 200

                            Threading.Volatile.Write(&finishedPieces.[piece], 1)
                    )

                Expect.isTrue second "the team takes the second loop"
                Expect.equal (Array.copy finishedPieces) [| 1; 1 |] "TryRun returned after both pieces had finished"
            }

            test "a worker team raises a failed piece's exception, stays usable, and runs a loop started inside a piece alone" {
                let team = WorkerTeam(2)

                let e =
                    Expect.throwsC
                        (fun () ->
                            team.TryRun(
                                50,
                                fun i ->
                                    if i = 17 then
                                        invalidOp "piece 17 failed"
                            )
                            |> ignore)
                        (fun e -> e)

                Expect.isTrue (e :? InvalidOperationException && e.Message = "piece 17 failed") "the piece's own exception"
                let nestedTaken = Array.zeroCreate<bool> 4
                let sums = Array.zeroCreate<int> 4

                let ran =
                    team.TryRun(
                        4,
                        fun i ->
                            nestedTaken.[i] <- team.TryRun(3, fun _ -> ())
                            sums.[i] <- i + 1
                    )

                Expect.isTrue ran "the team takes a loop after a failed one"
                Expect.equal sums [| 1; 2; 3; 4 |] "every piece ran"
                Expect.isFalse (Array.exists id nestedTaken) "a loop started inside a piece is refused (its caller runs it alone)"
            }

            test "parallel loops from several threads at once give the results of one thread" {
                let before = CpuSettings.Threads
                let x = uniform 3 [| 300_000 |] -2.0f 2.0f

                try
                    CpuSettings.Threads <- 1
                    let one = Tensor.tanh (x * 3.0f) |> tensorBits
                    CpuSettings.Threads <- 2

                    let results =
                        Array.init 4 (fun _ ->
                            Threading.Tasks.Task.Run(fun () -> Array.init 20 (fun _ -> Tensor.tanh (x * 3.0f) |> tensorBits)))
                        |> Array.collect (fun t -> t.Result)

                    for r in results do
                        Expect.sequenceEqual r one "bit-identical"
                finally
                    CpuSettings.Threads <- before
            }

            test "Tensor.replacing releases the state it consumes only when the step succeeds, and never what it returns" {
                use _ = Backends.Use(Backends.Get Device.Cpu)
                let length = 7_933 // a length no other test uses
                let state = Tensor.full [| length |] 3.0f
                let unchanged = Tensor.full [| 4 |] 1.0f

                Expect.throwsT<InvalidOperationException>
                    (fun () ->
                        Tensor.replacing [| state |] (fun (t: Tensor) -> [| t |]) (fun () -> invalidOp "the step failed")
                        |> ignore)
                    "the step's exception comes through"

                Expect.allEqual (state.ToArray()) 3.0f "a failed step leaves its input intact"

                let next, kept =
                    Tensor.replacing [| state; unchanged |] (fun (n, k) -> [| n; k |]) (fun () -> state + 1.0f, unchanged)

                expectReleased state.Primal "the consumed state is released"
                Expect.allEqual (next.ToArray()) 4.0f "the new state holds its values"
                Expect.allEqual (kept.ToArray()) 1.0f "a consumed tensor the new state still holds is not released"
            }

            test "the array pool keeps the lengths in use when others fill it: the least recently asked-for go first" {
                let floats n = 4L * int64 n
                let pool = SizedArrayPool(floats 10_000)
                let take n = pool.TryTake n
                let working, other = Array.zeroCreate<float32> 3_000, Array.zeroCreate<float32> 2_500
                // Both lengths asked for (the pool is empty) and given back: 5,500 floats wait.
                Expect.isNull (take 3_000) "an empty pool has nothing"
                Expect.isNull (take 2_500) "an empty pool has nothing"
                pool.Give working
                pool.Give other
                // 3,000 asked for again, more recently than 2,500, and given back.
                Expect.isTrue (obj.ReferenceEquals(take 3_000, working)) "a waiting array is handed out"
                pool.Give working
                // Lengths nobody asked for pass through: 9,500 floats fit, 11,500 do not. The never-asked 4,000 and
                // then the older 2,500 are dropped (to at most three quarters of the capacity, room made for the 2,000).
                pool.Give(Array.zeroCreate 4_000)
                pool.Give(Array.zeroCreate 2_000)
                Expect.isLessThanOrEqual pool.PooledBytes (floats 10_000) "within its capacity"
                Expect.isTrue (obj.ReferenceEquals(take 3_000, working)) "the length asked for last is kept"
                Expect.isNull (take 2_500) "the length asked for longest ago is dropped"
                Expect.isNull (take 4_000) "a length never asked for is dropped"
                Expect.equal (take 2_000).Length 2_000 "the array given last waits"
                Expect.equal pool.PooledBytes 0L "nothing else waits"
            }

            test "the counting backend counts each raw operation by kind and gives the inner backend's results" {
                let counter = CountingBackend(Backends.Get Device.Cpu)

                let valueAndGrad () =
                    let x = Tensor.ofArray [| 2; 3 |] [| 1.0f; -2.0f; 3.0f; 0.5f; -0.5f; 2.0f |]

                    Diff.valueAndGrad (fun x -> Tensor.sum (Tensor.exp x * x)) x
                    |> fun (v, g) -> Array.append (v.ToArray()) (g.ToArray())

                let plain = valueAndGrad ()
                let counted = using (Backends.Use counter) (fun _ -> valueAndGrad ())
                Expect.sequenceEqual counted plain "same values through the counter"
                let calls = counter.Counts |> Array.map (fun c -> c.Operation, c.Calls) |> Map.ofArray
                // Forward: ofArray, exp, mul, sumAll; backward: the seed (full), expand, two muls, exp's gradient, one add.
                Expect.equal
                    calls
                    (Map.ofList
                        [
                            "ofArray", 1L
                            "unary Exp", 1L
                            "binary mul", 3L
                            "sumAll", 1L
                            "full", 1L
                            "expand", 1L
                            "unaryGrad Exp", 1L
                            "binary add", 1L
                        ])
                    "calls by kind"

                Expect.equal counter.Total 10L "total"
                let expElements = counter.Counts |> Array.find (fun c -> c.Operation = "unary Exp")
                Expect.equal expElements.Elements 6L "elements of exp"
                counter.Reset()
                Expect.equal counter.Total 0L "reset"

                Expect.throwsT<ArgumentException>
                    (fun () -> (counter :> IBackend).Unary(Exp, (Backends.Get Device.Cpu).Full([| 1 |], 0.0f)) |> ignore)
                    "a tensor made outside the counter is refused"
            }

            test "the counting backend's product FLOPs include products inside fused operations" {
                let counter = CountingBackend(Backends.Get Device.Cpu)

                using (Backends.Use counter) (fun _ ->
                    let k = RandomKey.split 3 (RandomKey.ofSeed 5L)
                    let x, w = Tensor.randn k.[0] [| 5; 3 |], Tensor.randn k.[1] [| 3; 4 |]
                    let xs, ws = Tensor.randn k.[2] [| 2; 5; 3 |], Tensor.randn k.[0] [| 2; 3; 4 |]
                    Tensor.matmul x w |> ignore
                    Expect.equal counter.ProductFlops (2L * 5L * 4L * 3L) "a plain product: 2·m·n·k"
                    Tensor.bmm xs ws |> ignore
                    Expect.equal counter.ProductFlops (2L * 60L + 2L * 2L * 5L * 4L * 3L) "a batched product: times the batch"
                    counter.Reset()
                    Tensor.matmulActivationWith Relu false false x w None |> ignore

                    Expect.isTrue
                        (counter.Counts |> Array.exists (fun c -> c.Operation = "matmulActivationOnly"))
                        "ran fused (untracked: the activation alone)"

                    Expect.equal counter.ProductFlops 120L "a product with its activation, fused: the same 2·m·n·k"
                    counter.Reset()
                    // Its backward: the input gradient dY·Wᵀ (5×4·4×3) and the weight gradient Xᵀ·dY (3×5·5×4).
                    Diff.valueAndGrads (fun ps -> Tensor.sum (Tensor.matmulActivationWith Silu false false ps.[0] ps.[1] None)) [| x; w |]
                    |> ignore

                    Expect.equal counter.ProductFlops (120L + 120L + 120L) "forward and both gradient products"

                    Expect.isTrue
                        (counter.Counts |> Array.exists (fun c -> c.Operation = "matmulActivation"))
                        "tracked swish: the product kept for the gradient"

                    let shape batches m n k transA transB =
                        ({ Batches = batches; M = m; N = n; K = k; TransA = transA; TransB = transB }: ProductShape)

                    Expect.equal
                        (counter.Products |> Array.map (fun p -> p.Operation, p.Shape, p.Calls) |> Set.ofArray)
                        (Set.ofList
                            [
                                "matmulActivation", shape 1 5 4 3 false false, 1L
                                "matmul", shape 1 5 3 4 false true, 1L
                                "matmul", shape 1 3 4 5 true false, 1L
                            ])
                        "each product listed by shape, transposes included")
            }

            test "the counting backend's times are the operations' own: within the computation's, products in both lists" {
                let counter = CountingBackend(Backends.Get Device.Cpu)
                let clock = Diagnostics.Stopwatch.StartNew()

                using (Backends.Use counter) (fun _ ->
                    let k = RandomKey.split 2 (RandomKey.ofSeed 6L)
                    let x, w = Tensor.randn k.[0] [| 64; 32 |], Tensor.randn k.[1] [| 32; 48 |]

                    Diff.valueAndGrads (fun ps -> Tensor.sum (Tensor.matmulActivationWith Silu false false ps.[0] ps.[1] None)) [| x; w |]
                    |> ignore)

                let elapsed = clock.Elapsed.TotalSeconds
                let counts = counter.Counts
                Expect.all counts (fun c -> c.Seconds >= 0.0) "no negative time"
                Expect.isLessThanOrEqual (counts |> Array.sumBy (fun c -> c.Seconds)) elapsed "within the computation's time"
                let productKinds = counter.Products |> Array.map (fun p -> p.Operation) |> Set.ofArray

                let inKinds =
                    counts
                    |> Array.filter (fun c -> productKinds.Contains c.Operation)
                    |> Array.sumBy (fun c -> c.Seconds)

                // Every call of these kinds is a product, counted once in each list with the same ticks.
                Expect.floatClose
                    Accuracy.veryHigh
                    (counter.Products |> Array.sumBy (fun p -> p.Seconds))
                    inKinds
                    "the same time in both lists"
            }
        ]
