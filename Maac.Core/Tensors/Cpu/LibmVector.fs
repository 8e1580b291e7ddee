namespace Maac.Tensors.Cpu

open System
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86

/// e^x, log x and tanh x for sixteen floats at a time with the bits of the C library's expf, logf and tanhf, which
/// MathF.Exp, MathF.Log and MathF.Tanh call: the sampling formulas are defined by those (a run's results are the same
/// on every backend that keeps them), and one library call per element costs more than the rest of their arithmetic.
///
/// glibc 2.28 and later computes expf and logf in double precision from a short table and a polynomial (expf: x/ln 2
/// split into k/32 + r, 2^(k/32) from a 32-entry table, a cubic in r; logf: x = 2^k·z with z near one of 16 table
/// points c, log c from the table, a cubic in z/c − 1), and on a processor with fused multiply-add runs a build that
/// fuses its multiply-adds; its tanhf is fdlibm's, in float arithmetic through expm1f (a reduction by ln 2 and a
/// rational approximation, with a final step for each range of k). The functions below take the same steps with the
/// same operations, eight doubles or sixteen floats per vector, every branch computed and the lane's own selected,
/// the tables read by two-register permutes; the lanes that glibc sends to its special cases (|x| ≥ 88 and
/// non-finite x for exp; x below the smallest normal float, negative or non-finite for log; non-finite x for tanh)
/// are computed by MathF itself. `Enabled` is true only where the processor has AVX-512 and all three give MathF's
/// bits on a set of test values at start-up; elsewhere the kernels call MathF element by element. A test holds them
/// to MathF over every float of their main paths.
module internal LibmVector =
    /// The doubles whose 64-bit patterns the text lists in hexadecimal, separated by spaces or lines.
    let private doubles (hex: string) =
        hex.Split([| ' '; '\r'; '\n' |], StringSplitOptions.RemoveEmptyEntries)
        |> Array.map (fun bits -> BitConverter.UInt64BitsToDouble(Convert.ToUInt64(bits, 16)))

    // expf: 2^(i/32) with i·2^52/32 taken from its bits, so that adding k·2^47 scales it by 2^(k div 32).
    let private expTable =
        doubles
            """
            3ff0000000000000 3fefd9b0d3158574 3fefb5586cf9890f 3fef9301d0125b51
            3fef72b83c7d517b 3fef54873168b9aa 3fef387a6e756238 3fef1e9df51fdee1
            3fef06fe0a31b715 3feef1a7373aa9cb 3feedea64c123422 3feece086061892d
            3feebfdad5362a27 3feeb42b569d4f82 3feeab07dd485429 3feea47eb03a5585
            3feea09e667f3bcd 3fee9f75e8ec5f74 3feea11473eb0187 3feea589994cce13
            3feeace5422aa0db 3feeb737b0cdc5e5 3feec49182a3f090 3feed503b23e255d
            3feee89f995ad3ad 3feeff76f2fb5e47 3fef199bdd85529c 3fef3720dcef9069
            3fef5818dcfba487 3fef7c97337b9b5f 3fefa4afa2a490da 3fefd0765b6e4540
            """

    let private invLn2Times32 = BitConverter.UInt64BitsToDouble 0x40471547652b82feUL
    let private roundingShift = BitConverter.UInt64BitsToDouble 0x4338000000000000UL
    let private expC0 = BitConverter.UInt64BitsToDouble 0x3ebc6af84b912394UL
    let private expC1 = BitConverter.UInt64BitsToDouble 0x3f2ebfce50fac4f3UL
    let private expC2 = BitConverter.UInt64BitsToDouble 0x3f962e42ff0c52d6UL

    // logf: for each of 16 subintervals of [0x3f330000, 0x3fb30000) in float bits, 1/c and log c for a point c
    // near its middle: log x = log1p(z/c − 1) + log c + k·ln 2.
    let private logInvC =
        doubles
            """
            3ff661ec79f8f3be 3ff571ed4aaf883d 3ff49539f0f010b0 3ff3c995b0b80385
            3ff30d190c8864a5 3ff25e227b0b8ea0 3ff1bb4a4a1a343f 3ff12358f08ae5ba
            3ff0953f419900a7 3ff0000000000000 3fee608cfd9a47ac 3feca4b31f026aa0
            3feb2036576afce6 3fe9c2d163a1aa2d 3fe886e6037841ed 3fe767dcf5534862
            """

    let private logC =
        doubles
            """
            bfd57bf7808caade bfd2bef0a7c06ddb bfd01eae7f513a67 bfcb31d8a68224e9
            bfc6574f0ac07758 bfc1aa2bc79c8100 bfba4e76ce8c0e5e bfb1973c5a611ccc
            bfa252f438e10c1e 0000000000000000 3faaa5aa5df25984 3fbc5e53aa362eb4
            3fc526e57720db08 3fcbc2860d224770 3fd1058bc8a07ee1 3fd4043057b6ee09
            """

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

    /// glibc's expf on each lane: e^x with MathF.Exp's bits (only where Enabled).
    let exp (x: Vector512<float32>) =
        let main =
            narrow (expOf (Avx512F.ConvertToVector512Double(x.GetLower()))) (expOf (Avx512F.ConvertToVector512Double(x.GetUpper())))

        // glibc's special cases: |x| ≥ 88 (bits 20–30 above 0x42a), infinities and NaN.
        let abstop = Avx512F.And(Avx512F.ShiftRightLogical(x.AsUInt32(), 20uy), Vector512.Create 0x7ffu)
        scalarLanes (Vector512.GreaterThan(abstop.AsInt32(), Vector512.Create 0x42a)) x main MathF.Exp

    /// glibc's logf on each lane: log x with MathF.Log's bits (only where Enabled).
    let log (x: Vector512<float32>) =
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

    // tanhf and the expm1f it calls (fdlibm's, in float arithmetic without fused operations): constants by bits.
    let private float32Of (bits: uint32) = BitConverter.UInt32BitsToSingle bits
    let private invLn2 = float32Of 0x3fb8aa3bu
    let private ln2Hi = float32Of 0x3f317180u
    let private ln2Lo = float32Of 0x3717f7d1u
    let private expm1Q1 = float32Of 0xbd088889u
    let private expm1Q2 = float32Of 0x3ad00d01u
    let private expm1Q3 = float32Of 0xb8a670cdu
    let private expm1Q4 = float32Of 0x36867e54u
    let private expm1Q5 = float32Of 0xb457edbbu

    /// Lanes of v where mask (all bits set or none) is set, else of w.
    let inline private pick (mask: Vector512<int>) (v: Vector512<float32>) (w: Vector512<float32>) =
        Vector512.ConditionalSelect(mask.AsSingle(), v, w)

    /// glibc's expm1f on each lane below 27·ln 2 in magnitude or positive below 88.72 (the arguments tanhf gives it).
    let private expm1 (x: Vector512<float32>) =
        let c (v: float32) = Vector512.Create v
        let ci (v: int) = Vector512.Create v
        let hx = Vector512.BitwiseAnd(x.AsInt32(), ci 0x7fffffff)
        let negative = Vector512.LessThan(x.AsInt32(), Vector512<int>.Zero)
        // Reduction: x = k·ln 2 + reduced (+ c, the rounding of reduced): k = ±1 between 0.5 and 1.5 ln 2, else
        // the nearest integer to x/ln 2 above 1.5 ln 2, k = 0 below.
        let general = Vector512.GreaterThanOrEqual(hx, ci 0x3f851592)
        let reducedAtAll = Vector512.GreaterThan(hx, ci 0x3eb17218)

        let kGeneral =
            Avx512F.ConvertToVector512Int32WithTruncation(invLn2 * x + pick negative (c (-0.5f)) (c 0.5f))

        let t = Avx512F.ConvertToVector512Single kGeneral
        let hi = pick general (x - t * c ln2Hi) (pick negative (x + c ln2Hi) (x - c ln2Hi))
        let lo = pick general (t * c ln2Lo) (pick negative (c (-ln2Lo)) (c ln2Lo))

        let kNear =
            Vector512.ConditionalSelect(general, kGeneral, Vector512.ConditionalSelect(negative, ci (-1), ci 1))

        let k = Vector512.ConditionalSelect(reducedAtAll, kNear, Vector512<int>.Zero)
        let r = pick reducedAtAll (hi - lo) x
        let correction = (hi - r) - lo
        // The rational approximation on the reduced argument.
        let hfx = r * c 0.5f
        let hxs = r * hfx

        let r1 =
            ((((c expm1Q5 * hxs + c expm1Q4) * hxs + c expm1Q3) * hxs + c expm1Q2) * hxs + c expm1Q1) * hxs
            + c 1.0f

        let t3 = c 3.0f - hfx * r1
        let e0 = ((r1 - t3) / (c 6.0f - r * t3)) * hxs
        let atZero = r - (r * e0 - hxs)
        let e = ((r * (e0 - correction)) - correction) - hxs
        let atMinusOne = (r - e) * c 0.5f - c 0.5f

        let atOne =
            pick (Vector512.LessThan(r, c (-0.25f)).AsInt32()) (c (-2.0f) * (e - (r + c 0.5f))) ((r - e) + (r - e) + c 1.0f)

        let scaled (y: Vector512<float32>) = (y.AsInt32() + Vector512.ShiftLeft(k, 23)).AsSingle()
        let farOut = scaled (c 1.0f - (e - r)) - c 1.0f
        let twoPowMinusK = Vector512.ShiftLeft(ci 0x7f - k, 23).AsSingle()
        let upTo56 = scaled ((r - (e + twoPowMinusK)) + c 1.0f)

        let oneMinusTwoPowMinusK =
            (ci 0x3f800000 - Avx512F.ShiftRightArithmeticVariable(ci 0x1000000, k.AsUInt32())).AsSingle()

        let upTo22 = scaled (oneMinusTwoPowMinusK - (e - r))

        let byK =
            pick
                (Vector512.Equals(k, Vector512<int>.Zero))
                atZero
                (pick
                    (Vector512.Equals(k, ci (-1)))
                    atMinusOne
                    (pick
                        (Vector512.Equals(k, ci 1))
                        atOne
                        (pick
                            (Vector512.BitwiseOr(Vector512.LessThan(k, ci (-1)), Vector512.GreaterThan(k, ci 56)))
                            farOut
                            (pick (Vector512.GreaterThan(k, ci 22)) upTo56 upTo22))))

        // |x| below 2^−25: x itself; x at or below −27·ln 2: −1.
        pick
            (Vector512.LessThan(hx, ci 0x33000000))
            x
            (pick (Vector512.BitwiseAnd(negative, Vector512.GreaterThanOrEqual(hx, ci 0x4195b844))) (c (-1.0f)) byK)

    /// glibc's tanhf on each lane with MathF.Tanh's bits (only where Enabled): 1 − 2/(expm1(2|x|) + 2) from |x| = 1
    /// to 22, −t/(t + 2) with t = expm1(−2|x|) below, ±1 from 22 on, x·(1 + x) below 2^−55, the sign of x.
    let tanh (x: Vector512<float32>) =
        let c (v: float32) = Vector512.Create v
        let ix = Vector512.BitwiseAnd(x.AsInt32(), Vector512.Create 0x7fffffff)
        let ax = ix.AsSingle()
        let fromOne = Vector512.GreaterThanOrEqual(ix, Vector512.Create 0x3f800000)
        let t = expm1 (pick fromOne (ax + ax) (ax * c (-2.0f)))
        let z = pick fromOne (c 1.0f - c 2.0f / (t + c 2.0f)) (-t / (t + c 2.0f))
        let z = pick (Vector512.GreaterThanOrEqual(ix, Vector512.Create 0x41b00000)) (c 1.0f) z
        let signed = pick (Vector512.LessThan(x.AsInt32(), Vector512<int>.Zero)) -z z
        let result = pick (Vector512.LessThanOrEqual(ix, Vector512.Create 0x23ffffff)) (x * (c 1.0f + x)) signed
        scalarLanes (Vector512.GreaterThanOrEqual(ix, Vector512.Create 0x7f800000)) x result MathF.Tanh

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

    /// True where exp, log and tanh may be called: AVX-512, and MathF's bits on the start-up probes.
    let Enabled =
        Avx512F.IsSupported
        && (let xs = probes ()
            agrees exp MathF.Exp xs && agrees log MathF.Log xs && agrees tanh MathF.Tanh xs)

    /// Whether the kernels call exp, log and tanh: Enabled, unless a test sets it false to run their element-by-element
    /// path (the same bits either way).
    let mutable InUse = Enabled
