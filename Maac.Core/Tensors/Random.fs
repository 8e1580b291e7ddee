namespace Maac.Tensors

open System

/// An immutable, splittable key for counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
/// Every random tensor is a pure function of its key and shape: element i depends only on (key, i),
/// so results never depend on thread count or scheduling, and a GPU backend can produce the same stream.
[<Struct; CustomEquality; NoComparison>]
type RandomKey =
    {
        K0: uint32
        K1: uint32
    }

    override k.Equals(o) =
        match o with
        | :? RandomKey as x -> x.K0 = k.K0 && x.K1 = k.K1
        | _ -> false

    override k.GetHashCode() = HashCode.Combine(k.K0, k.K1)
    override k.ToString() = sprintf "RandomKey(%08x%08x)" k.K1 k.K0

/// The Philox4x32-10 block function.
module Philox =
    [<Literal>]
    let private M0 = 0xD2511F53u

    [<Literal>]
    let private M1 = 0xCD9E8D57u

    [<Literal>]
    let private W0 = 0x9E3779B9u

    [<Literal>]
    let private W1 = 0xBB67AE85u

    /// Encrypts the 128-bit counter (c0..c3) under the 64-bit key (k0, k1) with ten Philox rounds.
    let block (k0: uint32) (k1: uint32) (c0: uint32) (c1: uint32) (c2: uint32) (c3: uint32) =
        let mutable x0 = c0
        let mutable x1 = c1
        let mutable x2 = c2
        let mutable x3 = c3
        let mutable a = k0
        let mutable b = k1

        for _ in 1..10 do
            let p0 = uint64 M0 * uint64 x0
            let p1 = uint64 M1 * uint64 x2
            let hi0, lo0 = uint32 (p0 >>> 32), uint32 p0
            let hi1, lo1 = uint32 (p1 >>> 32), uint32 p1
            x0 <- hi1 ^^^ x1 ^^^ a
            x1 <- lo1
            x2 <- hi0 ^^^ x3 ^^^ b
            x3 <- lo0
            a <- a + W0
            b <- b + W1

        struct (x0, x1, x2, x3)

/// Stream tags keep the counter spaces of different uses of one key apart.
module internal Streams =
    [<Literal>]
    let Values = 0u

    [<Literal>]
    let Split = 0x5EED5EEDu

    [<Literal>]
    let Fold = 0xF01DF01Du

/// Creating, splitting and drawing from random keys.
module RandomKey =
    /// A key from a 64-bit seed.
    let ofSeed (seed: int64) = { K0 = uint32 (uint64 seed); K1 = uint32 (uint64 seed >>> 32) }

    /// n independent keys derived from one (the key itself should not be used again).
    let split (n: int) (key: RandomKey) =
        Array.init n (fun i ->
            let struct (a, b, _, _) = Philox.block key.K0 key.K1 (uint32 i) 0u Streams.Split 0u
            { K0 = a; K1 = b })

    /// Two independent keys.
    let split2 (key: RandomKey) =
        let ks = split 2 key
        ks.[0], ks.[1]

    /// A key derived from this one and an integer (for example a step number).
    let fold (data: int64) (key: RandomKey) =
        let struct (a, b, _, _) =
            Philox.block key.K0 key.K1 (uint32 (uint64 data)) (uint32 (uint64 data >>> 32)) Streams.Fold 0u

        { K0 = a; K1 = b }

    /// Uniform in [0, 1) from the top 24 bits.
    let inline toUnit (u: uint32) = float32 (u >>> 8) * (1.0f / 16777216.0f)

    /// Uniform in (0, 1] from the top 24 bits (safe under log).
    let inline toUnitOpen (u: uint32) = float32 ((u >>> 8) + 1u) * (1.0f / 16777216.0f)

    /// Fills dst with the values at element indices start.. of a stream: each Philox block (counter
    /// = element index / 4, tagged by stream) becomes four values through convert.
    let inline private fillBlocks
        (key: RandomKey)
        (stream: uint32)
        (dst: Span<float32>)
        (start: int)
        ([<InlineIfLambda>] convert: uint32 -> uint32 -> uint32 -> uint32 -> struct (float32 * float32 * float32 * float32))
        =
        let mutable i = 0

        while i < dst.Length do
            let e = start + i
            let struct (a, b, c, d) = Philox.block key.K0 key.K1 (uint32 (e >>> 2)) 0u Streams.Values stream
            let struct (v0, v1, v2, v3) = convert a b c d
            let mutable w = e &&& 3

            while w < 4 && i < dst.Length do
                dst.[i] <-
                    (match w with
                     | 0 -> v0
                     | 1 -> v1
                     | 2 -> v2
                     | _ -> v3)

                w <- w + 1
                i <- i + 1

    /// Fills dst with the uniform [0, 1) values at element indices start.. of the key's stream.
    let fillUniform (key: RandomKey) (dst: Span<float32>) (start: int) =
        fillBlocks key 0u dst start (fun a b c d -> struct (toUnit a, toUnit b, toUnit c, toUnit d))

    /// Fills with standard normal values (Box-Muller over each Philox block: 4 uniforms give 4 normals;
    /// one SinCos per angle, which on glibc gives the bits of separate sin and cos calls at half their cost).
    let fillNormal (key: RandomKey) (dst: Span<float32>) (start: int) =
        fillBlocks key 1u dst start (fun a b c d ->
            let r1 = sqrt (-2.0 * log (float (toUnitOpen a)))
            let struct (sin1, cos1) = Math.SinCos(2.0 * Math.PI * float (toUnit b))
            let r2 = sqrt (-2.0 * log (float (toUnitOpen c)))
            let struct (sin2, cos2) = Math.SinCos(2.0 * Math.PI * float (toUnit d))
            struct (float32 (r1 * cos1), float32 (r1 * sin1), float32 (r2 * cos2), float32 (r2 * sin2)))

    /// A uniformly random permutation of 0..n-1 (sorting by Philox keys: a pure function of key and n). The keys
    /// live in a pooled array: only the permutation is new memory.
    let permutation (n: int) (key: RandomKey) =
        let sortKeys = Buffers.ArrayPool<uint64>.Shared.Rent n

        for i in 0 .. n - 1 do
            let struct (a, b, _, _) = Philox.block key.K0 key.K1 (uint32 i) 0u Streams.Values 2u
            sortKeys.[i] <- (uint64 a <<< 32) ||| uint64 b

        let idx = Array.init n id
        Array.Sort(sortKeys, idx, 0, n)
        Buffers.ArrayPool<uint64>.Shared.Return sortKeys
        idx

    /// n integers uniform in [0, bound).
    let integers (n: int) (bound: int) (key: RandomKey) =
        if bound <= 0 then
            invalidArg "bound" (sprintf "bound must be positive, got %d" bound)

        Array.init n (fun i ->
            let struct (a, b, _, _) = Philox.block key.K0 key.K1 (uint32 i) 0u Streams.Values 3u
            int ((((uint64 a <<< 32) ||| uint64 b) % uint64 bound)))
