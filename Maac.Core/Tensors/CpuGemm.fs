namespace Maac.Tensors.Cpu

#nowarn "9"

open System
open System.Runtime.Intrinsics
open Microsoft.FSharp.NativeInterop

/// A matrix operand in a float array: element (r, c) of op(X) is Data[Offset + r*Ld + c],
/// or Data[Offset + c*Ld + r] when Trans.
[<Struct>]
type internal Operand = { Data: float32[]; Offset: int; Ld: int; Trans: bool; BatchStride: int }

/// Per-thread buffers for packed panels, grown on demand and kept for the thread's life.
type private Scratch =
    [<ThreadStatic; DefaultValue>]
    static val mutable private forA: float32[]

    [<ThreadStatic; DefaultValue>]
    static val mutable private forB: float32[]

    static member private Grow(current: float32[], n: int) =
        if isNull current || current.Length < n then
            GC.AllocateUninitializedArray<float32>(n)
        else
            current

    /// A buffer of at least n floats for packing A on this thread.
    static member A(n: int) =
        Scratch.forA <- Scratch.Grow(Scratch.forA, n)
        Scratch.forA

    /// A buffer of at least n floats for packing B on this thread.
    static member B(n: int) =
        Scratch.forB <- Scratch.Grow(Scratch.forB, n)
        Scratch.forB

/// Cache-blocked, multi-threaded single-precision matrix product (the GotoBLAS/BLIS scheme):
/// B is packed into NR-wide panels, A into MR-high panels, and a register-blocked micro-kernel
/// (8×32 with AVX-512, 6×16 with AVX2/other) accumulates with fused multiply-adds. Every output
/// element sums over k in the same order whatever the thread count, so results are bit-reproducible.
module internal Gemm =
    let wide = Vector512.IsHardwareAccelerated
    let MR = if wide then 8 else 6
    let NR = if wide then 32 else 16
    let KC = 256
    let MCMax = (144 / MR) * MR

    let inline private fma (a: Vector512<float32>) (b: Vector512<float32>) (c: Vector512<float32>) = Vector512.FusedMultiplyAdd(a, b, c)
    let inline private fma2 (a: Vector256<float32>) (b: Vector256<float32>) (c: Vector256<float32>) = Vector256.FusedMultiplyAdd(a, b, c)

    let inline private storeRow512
        (c: nativeptr<float32>)
        (acc: bool)
        (bias: nativeptr<float32>)
        (v0: Vector512<float32>)
        (v1: Vector512<float32>)
        =
        let p1 = NativePtr.add c 16

        if acc then
            Vector512.Store(Vector512.Load(c) + v0, c)
            Vector512.Store(Vector512.Load(p1) + v1, p1)
        elif not (NativePtr.isNullPtr bias) then
            Vector512.Store(Vector512.Load(bias) + v0, c)
            Vector512.Store(Vector512.Load(NativePtr.add bias 16) + v1, p1)
        else
            Vector512.Store(v0, c)
            Vector512.Store(v1, p1)

    let inline private storeRow256
        (c: nativeptr<float32>)
        (acc: bool)
        (bias: nativeptr<float32>)
        (v0: Vector256<float32>)
        (v1: Vector256<float32>)
        =
        let p1 = NativePtr.add c 8

        if acc then
            Vector256.Store(Vector256.Load(c) + v0, c)
            Vector256.Store(Vector256.Load(p1) + v1, p1)
        elif not (NativePtr.isNullPtr bias) then
            Vector256.Store(Vector256.Load(bias) + v0, c)
            Vector256.Store(Vector256.Load(NativePtr.add bias 8) + v1, p1)
        else
            Vector256.Store(v0, c)
            Vector256.Store(v1, p1)

    /// C[8×32] (+)= Apanel[kc×8]ᵀ · Bpanel[kc×32].
    let private kernel8x32
        (kc: int)
        (a: nativeptr<float32>)
        (b: nativeptr<float32>)
        (c: nativeptr<float32>)
        (ldc: int)
        (acc: bool)
        (bias: nativeptr<float32>)
        =
        let mutable c00 = Vector512<float32>.Zero
        let mutable c01 = Vector512<float32>.Zero
        let mutable c10 = Vector512<float32>.Zero
        let mutable c11 = Vector512<float32>.Zero
        let mutable c20 = Vector512<float32>.Zero
        let mutable c21 = Vector512<float32>.Zero
        let mutable c30 = Vector512<float32>.Zero
        let mutable c31 = Vector512<float32>.Zero
        let mutable c40 = Vector512<float32>.Zero
        let mutable c41 = Vector512<float32>.Zero
        let mutable c50 = Vector512<float32>.Zero
        let mutable c51 = Vector512<float32>.Zero
        let mutable c60 = Vector512<float32>.Zero
        let mutable c61 = Vector512<float32>.Zero
        let mutable c70 = Vector512<float32>.Zero
        let mutable c71 = Vector512<float32>.Zero
        let mutable pa = a
        let mutable pb = b

        for _ in 1..kc do
            let b0 = Vector512.Load(pb)
            let b1 = Vector512.Load(NativePtr.add pb 16)
            let mutable x = Vector512.Create(NativePtr.get pa 0)
            c00 <- fma x b0 c00
            c01 <- fma x b1 c01
            x <- Vector512.Create(NativePtr.get pa 1)
            c10 <- fma x b0 c10
            c11 <- fma x b1 c11
            x <- Vector512.Create(NativePtr.get pa 2)
            c20 <- fma x b0 c20
            c21 <- fma x b1 c21
            x <- Vector512.Create(NativePtr.get pa 3)
            c30 <- fma x b0 c30
            c31 <- fma x b1 c31
            x <- Vector512.Create(NativePtr.get pa 4)
            c40 <- fma x b0 c40
            c41 <- fma x b1 c41
            x <- Vector512.Create(NativePtr.get pa 5)
            c50 <- fma x b0 c50
            c51 <- fma x b1 c51
            x <- Vector512.Create(NativePtr.get pa 6)
            c60 <- fma x b0 c60
            c61 <- fma x b1 c61
            x <- Vector512.Create(NativePtr.get pa 7)
            c70 <- fma x b0 c70
            c71 <- fma x b1 c71
            pa <- NativePtr.add pa 8
            pb <- NativePtr.add pb 32

        storeRow512 c acc bias c00 c01
        storeRow512 (NativePtr.add c ldc) acc bias c10 c11
        storeRow512 (NativePtr.add c (2 * ldc)) acc bias c20 c21
        storeRow512 (NativePtr.add c (3 * ldc)) acc bias c30 c31
        storeRow512 (NativePtr.add c (4 * ldc)) acc bias c40 c41
        storeRow512 (NativePtr.add c (5 * ldc)) acc bias c50 c51
        storeRow512 (NativePtr.add c (6 * ldc)) acc bias c60 c61
        storeRow512 (NativePtr.add c (7 * ldc)) acc bias c70 c71

    /// C[6×16] (+)= Apanel[kc×6]ᵀ · Bpanel[kc×16].
    let private kernel6x16
        (kc: int)
        (a: nativeptr<float32>)
        (b: nativeptr<float32>)
        (c: nativeptr<float32>)
        (ldc: int)
        (acc: bool)
        (bias: nativeptr<float32>)
        =
        let mutable c00 = Vector256<float32>.Zero
        let mutable c01 = Vector256<float32>.Zero
        let mutable c10 = Vector256<float32>.Zero
        let mutable c11 = Vector256<float32>.Zero
        let mutable c20 = Vector256<float32>.Zero
        let mutable c21 = Vector256<float32>.Zero
        let mutable c30 = Vector256<float32>.Zero
        let mutable c31 = Vector256<float32>.Zero
        let mutable c40 = Vector256<float32>.Zero
        let mutable c41 = Vector256<float32>.Zero
        let mutable c50 = Vector256<float32>.Zero
        let mutable c51 = Vector256<float32>.Zero
        let mutable pa = a
        let mutable pb = b

        for _ in 1..kc do
            let b0 = Vector256.Load(pb)
            let b1 = Vector256.Load(NativePtr.add pb 8)
            let mutable x = Vector256.Create(NativePtr.get pa 0)
            c00 <- fma2 x b0 c00
            c01 <- fma2 x b1 c01
            x <- Vector256.Create(NativePtr.get pa 1)
            c10 <- fma2 x b0 c10
            c11 <- fma2 x b1 c11
            x <- Vector256.Create(NativePtr.get pa 2)
            c20 <- fma2 x b0 c20
            c21 <- fma2 x b1 c21
            x <- Vector256.Create(NativePtr.get pa 3)
            c30 <- fma2 x b0 c30
            c31 <- fma2 x b1 c31
            x <- Vector256.Create(NativePtr.get pa 4)
            c40 <- fma2 x b0 c40
            c41 <- fma2 x b1 c41
            x <- Vector256.Create(NativePtr.get pa 5)
            c50 <- fma2 x b0 c50
            c51 <- fma2 x b1 c51
            pa <- NativePtr.add pa 6
            pb <- NativePtr.add pb 16

        storeRow256 c acc bias c00 c01
        storeRow256 (NativePtr.add c ldc) acc bias c10 c11
        storeRow256 (NativePtr.add c (2 * ldc)) acc bias c20 c21
        storeRow256 (NativePtr.add c (3 * ldc)) acc bias c30 c31
        storeRow256 (NativePtr.add c (4 * ldc)) acc bias c40 c41
        storeRow256 (NativePtr.add c (5 * ldc)) acc bias c50 c51

    /// C tile (+)= A panel · B panel; when not accumulating, a non-null bias row (NR values) is added.
    let private kernel kc a b c ldc acc bias =
        if wide then
            kernel8x32 kc a b c ldc acc bias
        else
            kernel6x16 kc a b c ldc acc bias

    /// Packs rows [k0, k0+kc) × columns [j0, j0+NR) of op(B) into dst (kc×NR, zero-padded).
    let private packB (b: Operand) (batch: int) (k0: int) (kc: int) (j0: int) (cols: int) (dst: Span<float32>) =
        let src = b.Data
        let baseOff = b.Offset + batch * b.BatchStride

        if not b.Trans then
            for kk in 0 .. kc - 1 do
                let row = dst.Slice(kk * NR, NR)
                ReadOnlySpan<float32>(src, baseOff + (k0 + kk) * b.Ld + j0, cols).CopyTo(row)

                if cols < NR then
                    row.Slice(cols).Clear()
        else
            if cols < NR then
                dst.Slice(0, kc * NR).Clear()

            for c in 0 .. cols - 1 do
                let colStart = baseOff + (j0 + c) * b.Ld + k0

                for kk in 0 .. kc - 1 do
                    dst.[kk * NR + c] <- src.[colStart + kk]

    /// Packs rows [i0, i0+rows) × k-range [k0, k0+kc) of op(A) into MR-high panels (zero-padded).
    let private packA (a: Operand) (batch: int) (i0: int) (rows: int) (k0: int) (kc: int) (dst: Span<float32>) =
        let src = a.Data
        let baseOff = a.Offset + batch * a.BatchStride
        let panels = (rows + MR - 1) / MR

        for p in 0 .. panels - 1 do
            let panel = dst.Slice(p * kc * MR, kc * MR)
            let r0 = p * MR
            let prows = min MR (rows - r0)

            if prows < MR then
                panel.Clear()

            if a.Trans then
                for kk in 0 .. kc - 1 do
                    ReadOnlySpan<float32>(src, baseOff + (k0 + kk) * a.Ld + i0 + r0, prows).CopyTo(panel.Slice(kk * MR, prows))
            else
                for r in 0 .. prows - 1 do
                    let rowStart = baseOff + (i0 + r0 + r) * a.Ld + k0

                    for kk in 0 .. kc - 1 do
                        panel.[kk * MR + r] <- src.[rowStart + kk]

    /// For each batch index: C[m×n] = op(A)·op(B) (+ bias row), where C is dense with leading dimension n.
    /// bias is null, n values shared by every batch, or batches·n values (one row per batch).
    let run (batches: int) (m: int) (n: int) (k: int) (a: Operand) (b: Operand) (c: float32[]) (bias: float32[]) =
        let biasStride = if isNull bias || bias.Length = n then 0 else n
        let cStride = m * n

        if k = 0 || m = 0 || n = 0 then
            for bi in 0 .. batches - 1 do
                for row in 0 .. m - 1 do
                    if isNull bias then
                        Array.Clear(c, (bi * m + row) * n, n)
                    else
                        Array.Copy(bias, bi * biasStride, c, (bi * m + row) * n, n)
        else
            let nPanels = (n + NR - 1) / NR
            let mBlocks = (m + MCMax - 1) / MCMax
            let mc = ((m + mBlocks - 1) / mBlocks + MR - 1) / MR * MR
            let panelSize = KC * NR
            let packedB = Scratch.B(batches * nPanels * panelSize)
            let bigEnough = int64 batches * int64 m * int64 n * int64 k >= 300_000L
            let mutable k0 = 0

            while k0 < k do
                let kc = min KC (k - k0)
                let accHere = k0 > 0

                Workers.forEach (batches * nPanels) bigEnough (fun item ->
                    let bi, q = item / nPanels, item % nPanels
                    let j0 = q * NR
                    packB b bi k0 kc j0 (min NR (n - j0)) (Span<float32>(packedB, (bi * nPanels + q) * panelSize, panelSize)))

                Workers.forEach (batches * mBlocks) bigEnough (fun item ->
                    let bi, mb = item / mBlocks, item % mBlocks
                    let i0 = mb * mc
                    let rows = min mc (m - i0)
                    let packedA = Scratch.A(mc * kc)
                    packA a bi i0 rows k0 kc (Span<float32>(packedA))
                    use pA = fixed packedA
                    use pB = fixed packedB
                    use pC = fixed c
                    use pBias = fixed bias
                    let withBias = not accHere && not (isNull bias)
                    let tile = NativePtr.stackalloc<float32>(MR * NR)
                    let cBase = NativePtr.add pC (bi * cStride + i0 * n)

                    for q in 0 .. nPanels - 1 do
                        let j0 = q * NR
                        let cols = min NR (n - j0)
                        let bPanel = NativePtr.add pB ((bi * nPanels + q) * panelSize)
                        let mutable r0 = 0

                        while r0 < rows do
                            let prows = min MR (rows - r0)
                            let aPanel = NativePtr.add pA (r0 * kc)
                            let cTile = NativePtr.add cBase (r0 * n + j0)

                            let biasRow =
                                if withBias then
                                    NativePtr.add pBias (bi * biasStride + j0)
                                else
                                    NativePtr.nullPtr

                            if prows = MR && cols = NR then
                                kernel kc aPanel bPanel cTile n accHere biasRow
                            else
                                kernel kc aPanel bPanel tile NR false NativePtr.nullPtr

                                for r in 0 .. prows - 1 do
                                    for cc in 0 .. cols - 1 do
                                        let dst = NativePtr.add cTile (r * n + cc)
                                        let v = NativePtr.get tile (r * NR + cc)

                                        let baseValue =
                                            if accHere then NativePtr.read dst
                                            elif withBias then NativePtr.get biasRow cc
                                            else 0.0f

                                        NativePtr.write dst (baseValue + v)

                            r0 <- r0 + MR)

                k0 <- k0 + kc
