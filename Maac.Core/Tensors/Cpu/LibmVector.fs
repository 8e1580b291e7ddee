namespace Maac.Tensors.Cpu

open System
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86

/// e^x and log x for sixteen floats at a time with the bits of the C library's expf and logf, which MathF.Exp and
/// MathF.Log call: the sampling formulas are defined by those (a run's results are the same on every backend that
/// keeps them), and one library call per element costs more than the rest of their arithmetic.
///
/// glibc 2.28 and later computes both in double precision from a short table and a polynomial (expf: x/ln 2 split
/// into k/32 + r, 2^(k/32) from a 32-entry table, a cubic in r; logf: x = 2^k·z with z near one of 16 table points c,
/// log c from the table, a cubic in z/c − 1), and on a processor with fused multiply-add runs a build that fuses its
/// multiply-adds. The functions below take the same steps with the same fused operations on eight doubles per vector,
/// the tables read by two-register permutes; the lanes that glibc sends to its special cases (|x| ≥ 88 and non-finite
/// x for exp; x below the smallest normal float, negative or non-finite for log) are computed by MathF itself.
/// `Enabled` is true only where the processor has AVX-512 and both functions give MathF's bits on a set of test values
/// at start-up; elsewhere the kernels call MathF element by element. A test holds both to MathF over every float.
module internal LibmVector =
    /// The doubles with the given 64-bit patterns.
    let private doubles (bits: uint64[]) = Array.map BitConverter.UInt64BitsToDouble bits

    // expf: 2^(i/32) with i·2^52/32 taken from its bits, so that adding k·2^47 scales it by 2^(k div 32).
    let private expTable =
        doubles
            [|
                0x3ff0000000000000UL
                0x3fefd9b0d3158574UL
                0x3fefb5586cf9890fUL
                0x3fef9301d0125b51UL
                0x3fef72b83c7d517bUL
                0x3fef54873168b9aaUL
                0x3fef387a6e756238UL
                0x3fef1e9df51fdee1UL
                0x3fef06fe0a31b715UL
                0x3feef1a7373aa9cbUL
                0x3feedea64c123422UL
                0x3feece086061892dUL
                0x3feebfdad5362a27UL
                0x3feeb42b569d4f82UL
                0x3feeab07dd485429UL
                0x3feea47eb03a5585UL
                0x3feea09e667f3bcdUL
                0x3fee9f75e8ec5f74UL
                0x3feea11473eb0187UL
                0x3feea589994cce13UL
                0x3feeace5422aa0dbUL
                0x3feeb737b0cdc5e5UL
                0x3feec49182a3f090UL
                0x3feed503b23e255dUL
                0x3feee89f995ad3adUL
                0x3feeff76f2fb5e47UL
                0x3fef199bdd85529cUL
                0x3fef3720dcef9069UL
                0x3fef5818dcfba487UL
                0x3fef7c97337b9b5fUL
                0x3fefa4afa2a490daUL
                0x3fefd0765b6e4540UL
            |]

    let private invLn2Times32 = BitConverter.UInt64BitsToDouble 0x40471547652b82feUL
    let private roundingShift = BitConverter.UInt64BitsToDouble 0x4338000000000000UL
    let private expC0 = BitConverter.UInt64BitsToDouble 0x3ebc6af84b912394UL
    let private expC1 = BitConverter.UInt64BitsToDouble 0x3f2ebfce50fac4f3UL
    let private expC2 = BitConverter.UInt64BitsToDouble 0x3f962e42ff0c52d6UL

    // logf: for each of 16 subintervals of [0x3f330000, 0x3fb30000) in float bits, 1/c and log c for a point c
    // near its middle: log x = log1p(z/c − 1) + log c + k·ln 2.
    let private logInvC =
        doubles
            [|
                0x3ff661ec79f8f3beUL
                0x3ff571ed4aaf883dUL
                0x3ff49539f0f010b0UL
                0x3ff3c995b0b80385UL
                0x3ff30d190c8864a5UL
                0x3ff25e227b0b8ea0UL
                0x3ff1bb4a4a1a343fUL
                0x3ff12358f08ae5baUL
                0x3ff0953f419900a7UL
                0x3ff0000000000000UL
                0x3fee608cfd9a47acUL
                0x3feca4b31f026aa0UL
                0x3feb2036576afce6UL
                0x3fe9c2d163a1aa2dUL
                0x3fe886e6037841edUL
                0x3fe767dcf5534862UL
            |]

    let private logC =
        doubles
            [|
                0xbfd57bf7808caadeUL
                0xbfd2bef0a7c06ddbUL
                0xbfd01eae7f513a67UL
                0xbfcb31d8a68224e9UL
                0xbfc6574f0ac07758UL
                0xbfc1aa2bc79c8100UL
                0xbfba4e76ce8c0e5eUL
                0xbfb1973c5a611cccUL
                0xbfa252f438e10c1eUL
                0x0000000000000000UL
                0x3faaa5aa5df25984UL
                0x3fbc5e53aa362eb4UL
                0x3fc526e57720db08UL
                0x3fcbc2860d224770UL
                0x3fd1058bc8a07ee1UL
                0x3fd4043057b6ee09UL
            |]

    let private ln2 = BitConverter.UInt64BitsToDouble 0x3fe62e42fefa39efUL
    let private logA0 = BitConverter.UInt64BitsToDouble 0xbfd00ea348b88334UL
    let private logA1 = BitConverter.UInt64BitsToDouble 0x3fd5575b0be00b6aUL
    let private logA2 = BitConverter.UInt64BitsToDouble 0xbfdffffef20a4123UL

    /// The table's eight doubles from first.
    let private eight (table: float[]) (first: int) = Vector512.Create<float>(ReadOnlySpan<float>(table, first, 8))

    let private exp0, exp1, exp2, exp3 =
        eight expTable 0, eight expTable 8, eight expTable 16, eight expTable 24

    let private invC0, invC1, logC0, logC1 = eight logInvC 0, eight logInvC 8, eight logC 0, eight logC 8

    /// The lanes where mask is set, recomputed one by one with f.
    let inline private scalarLanes
        (mask: Vector512<int>)
        (x: Vector512<float32>)
        (v: Vector512<float32>)
        ([<InlineIfLambda>] f: float32 -> float32)
        =
        if Vector512.EqualsAll(mask, Vector512<int>.Zero) then
            v
        else
            let mutable r = v

            for lane in 0..15 do
                if mask.GetElement lane <> 0 then
                    r <- r.WithElement(lane, f (x.GetElement lane))

            r

    /// expf's main path on eight doubles (float arguments, converted exactly).
    let inline private expOf (xd: Vector512<float>) =
        let shifted =
            Avx512F.FusedMultiplyAdd(Vector512.Create invLn2Times32, xd, Vector512.Create roundingShift)

        let ki = shifted.AsUInt64()
        let kd = Avx512F.Subtract(shifted, Vector512.Create roundingShift)
        let r = Avx512F.FusedMultiplySubtract(Vector512.Create invLn2Times32, xd, kd)
        // 2^(k mod 32 / 32): entries 0–15 or 16–31 by bit 4 of k, each half by its low four bits.
        let index = ki.AsInt64()
        let inUpperHalf = Vector512.Equals(Avx512F.And(ki, Vector512.Create 16UL), Vector512.Create 16UL)

        let entry =
            Vector512.ConditionalSelect(
                inUpperHalf.AsDouble(),
                Avx512F.PermuteVar8x64x2(exp2, index, exp3),
                Avx512F.PermuteVar8x64x2(exp0, index, exp1)
            )

        let scale = Avx512F.Add(entry.AsUInt64(), Avx512F.ShiftLeftLogical(ki, 47uy)).AsDouble()
        let z = Avx512F.FusedMultiplyAdd(r, Vector512.Create expC0, Vector512.Create expC1)
        let r2 = Avx512F.Multiply(r, r)
        let y = Avx512F.FusedMultiplyAdd(r, Vector512.Create expC2, Vector512.Create 1.0)
        Avx512F.Multiply(Avx512F.FusedMultiplyAdd(z, r2, y), scale)

    /// logf's main path on eight lanes: z = x/2^k in [0x3f330000, 0x3fb30000) as bits, k, and the table index.
    let inline private logOf (iz: Vector256<int>) (k: Vector256<int>) (index: Vector256<int>) =
        let at = Avx512F.ConvertToVector512Int64 index
        let z = Avx512F.ConvertToVector512Double(iz.AsSingle())
        let r = Avx512F.FusedMultiplyAdd(z, Avx512F.PermuteVar8x64x2(invC0, at, invC1), Vector512.Create(-1.0))

        let y0 =
            Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Double k, Vector512.Create ln2, Avx512F.PermuteVar8x64x2(logC0, at, logC1))

        let y = Avx512F.FusedMultiplyAdd(r, Vector512.Create logA1, Vector512.Create logA2)
        let r2 = Avx512F.Multiply(r, r)
        let p = Avx512F.Add(r, y0)
        Avx512F.FusedMultiplyAdd(Avx512F.FusedMultiplyAdd(r2, Vector512.Create logA0, y), r2, p)

    /// Sixteen floats from two vectors of eight doubles, each rounded to nearest.
    let inline private narrow (lower: Vector512<float>) (upper: Vector512<float>) =
        Vector512.Create(Avx512F.ConvertToVector256Single lower, Avx512F.ConvertToVector256Single upper)

    /// glibc's expf on each lane (AVX-512 only).
    let private vectorExp (x: Vector512<float32>) =
        let main =
            narrow (expOf (Avx512F.ConvertToVector512Double(x.GetLower()))) (expOf (Avx512F.ConvertToVector512Double(x.GetUpper())))

        // glibc's special cases: |x| ≥ 88 (bits 20–30 above 0x42a), infinities and NaN.
        let abstop = Avx512F.And(Avx512F.ShiftRightLogical(x.AsUInt32(), 20uy), Vector512.Create 0x7ffu)
        scalarLanes (Vector512.GreaterThan(abstop.AsInt32(), Vector512.Create 0x42a)) x main MathF.Exp

    /// glibc's logf on each lane (AVX-512 only).
    let private vectorLog (x: Vector512<float32>) =
        let ix = x.AsInt32()
        let tmp = Avx512F.Subtract(ix, Vector512.Create 0x3f330000)
        let index = Avx512F.And(Avx512F.ShiftRightLogical(tmp, 19uy), Vector512.Create 15)
        let k = Avx512F.ShiftRightArithmetic(tmp, 23uy)
        let iz = Avx512F.Subtract(ix, Avx512F.And(tmp, Vector512.Create(int 0xff800000u)))

        let main =
            narrow (logOf (iz.GetLower()) (k.GetLower()) (index.GetLower())) (logOf (iz.GetUpper()) (k.GetUpper()) (index.GetUpper()))

        // glibc's special cases: ix − 0x00800000 ≥ 0x7f000000 unsigned (subnormal, zero, negative, infinite, NaN).
        let offset = Avx512F.Subtract(ix, Vector512.Create 0x00800000).AsUInt32()
        scalarLanes (Vector512.GreaterThanOrEqual(offset, Vector512.Create 0x7f000000u).AsInt32()) x main MathF.Log

    /// Floats spread over every exponent and the special cases, for the start-up check.
    let private probes () =
        [|
            for e in 0..255 do
                for m in [ 0u; 1u; 0x2aaaaau; 0x400000u; 0x555555u; 0x7fffffu ] do
                    let bits = (uint32 e <<< 23) ||| m
                    yield BitConverter.UInt32BitsToSingle bits
                    yield BitConverter.UInt32BitsToSingle(bits ||| 0x80000000u)

            for i in 0..4095 do
                yield -20.0f + 40.0f * float32 i / 4096.0f
                yield 0.5f + float32 i / 4096.0f
        |]

    /// Whether f over the probes, sixteen at a time, gives g's bits.
    let private agrees (f: Vector512<float32> -> Vector512<float32>) (g: float32 -> float32) (xs: float32[]) =
        let same (x: float32) (y: float32) = BitConverter.SingleToUInt32Bits x = BitConverter.SingleToUInt32Bits y

        Seq.forall
            (fun start ->
                let v = f (Vector512.Create<float32>(ReadOnlySpan<float32>(xs, start, 16)))
                Seq.forall (fun lane -> same (v.GetElement lane) (g xs.[start + lane])) [ 0..15 ])
            [ 0..16 .. xs.Length - 16 ]

    /// True where exp and log may be called: AVX-512, and MathF's bits on the start-up probes.
    let Enabled =
        Avx512F.IsSupported
        && (let xs = probes ()
            agrees vectorExp MathF.Exp xs && agrees vectorLog MathF.Log xs)

    /// Whether the kernels call exp and log: Enabled, unless a test sets it false to run their element-by-element
    /// path (the same bits either way).
    let mutable InUse = Enabled

    /// e^x of each lane with MathF.Exp's bits (only where Enabled).
    let exp (x: Vector512<float32>) = vectorExp x

    /// log x of each lane with MathF.Log's bits (only where Enabled).
    let log (x: Vector512<float32>) = vectorLog x
