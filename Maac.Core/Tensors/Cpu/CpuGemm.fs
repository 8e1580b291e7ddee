namespace Maac.Tensors.Cpu

#nowarn "9"

open System
open System.Runtime.CompilerServices
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86
open Microsoft.FSharp.NativeInterop
open Maac.Tensors

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
/// (6 rows × 2 vectors: 6×32 with AVX-512, 6×16 with 256-bit vectors) accumulates with fused multiply-adds.
/// Every output element sums over k in the same order whatever the thread count and the vector width,
/// so results are bit-reproducible and the same on processors with and without AVX-512.
module internal Gemm =
    /// Whether this processor runs the 512-bit micro-kernel.
    let wide = Vector512.IsHardwareAccelerated
    /// Rows of the micro-kernel's tile: 12 accumulators, 2 B vectors and a broadcast fit the 16 registers of AVX2.
    let MR = 6
    /// Columns of the micro-kernel's tile (two vectors) for the 512-bit or the 256-bit kernel.
    let columns (wide: bool) = if wide then 32 else 16
    let NR = columns wide
    let KC = 256
    let MCMax = (144 / MR) * MR

    let inline private load (p: nativeptr<float32>) : 'V = Unsafe.ReadUnaligned<'V>(NativePtr.toVoidPtr p)
    let inline private store (p: nativeptr<float32>) (v: 'V) = Unsafe.WriteUnaligned<'V>(NativePtr.toVoidPtr p, v)

    /// One row of the tile, two vectors (the first alone when not two): added to C when accumulating, else to the bias
    /// row when there is one.
    let inline private storeRow (two: bool) (c: nativeptr<float32>) (acc: bool) (bias: nativeptr<float32>) (struct (v0: 'V, v1: 'V)) =
        let lanes = sizeof<'V> / sizeof<float32>
        let p1 = NativePtr.add c lanes

        if acc then
            store c (load c + v0)

            if two then
                store p1 (load p1 + v1)
        elif not (NativePtr.isNullPtr bias) then
            store c (load bias + v0)

            if two then
                store p1 (load (NativePtr.add bias lanes) + v1)
        else
            store c v0

            if two then
                store p1 v1

    /// C[6 × 2w] (+)= A[6×kc] · Bpanel[kc×2w] for vectors 'V of w floats (C[6 × w] with one vector per row when not
    /// two), given their broadcast and fused multiply-add; written once and inlined for each width. A's element (r, k)
    /// is read at a + r·rowStride + k·kStride: a packed panel (1, 6) or A where it is stored; B's rows are bStride
    /// floats apart. Each row's accumulators are one struct pair, which the JIT keeps in two registers (one when not
    /// two: the second stays unused and its code is dropped).
    let inline private microKernel
        (two: bool)
        ([<InlineIfLambda>] broadcast: float32 -> 'V)
        ([<InlineIfLambda>] mulAdd: 'V -> 'V -> 'V -> 'V)
        (bStride: int)
        (kc: int)
        (a: nativeptr<float32>)
        (rowStride: int)
        (kStride: int)
        (b: nativeptr<float32>)
        (c: nativeptr<float32>)
        (ldc: int)
        (acc: bool)
        (bias: nativeptr<float32>)
        =
        let lanes = sizeof<'V> / sizeof<float32>
        let zero = struct (Unchecked.defaultof<'V>, Unchecked.defaultof<'V>)
        let mutable row0, row1, row2, row3, row4, row5 = zero, zero, zero, zero, zero, zero
        let mutable pa = a
        let mutable pb = b

        for _ in 1..kc do
            let b0: 'V = load pb
            let b1: 'V = if two then load (NativePtr.add pb lanes) else b0

            let inline update (r: int) (struct (c0: 'V, c1: 'V)) =
                let x = broadcast (NativePtr.get pa (r * rowStride))
                struct (mulAdd x b0 c0, (if two then mulAdd x b1 c1 else c1))

            row0 <- update 0 row0
            row1 <- update 1 row1
            row2 <- update 2 row2
            row3 <- update 3 row3
            row4 <- update 4 row4
            row5 <- update 5 row5
            pa <- NativePtr.add pa kStride
            pb <- NativePtr.add pb bStride

        storeRow two c acc bias row0
        storeRow two (NativePtr.add c ldc) acc bias row1
        storeRow two (NativePtr.add c (2 * ldc)) acc bias row2
        storeRow two (NativePtr.add c (3 * ldc)) acc bias row3
        storeRow two (NativePtr.add c (4 * ldc)) acc bias row4
        storeRow two (NativePtr.add c (5 * ldc)) acc bias row5

    let inline private broadcast512 (x: float32) = Vector512.Create x
    let inline private mulAdd512 (x: Vector512<float32>) y z = Vector512.FusedMultiplyAdd(x, y, z)
    let inline private broadcast256 (x: float32) = Vector256.Create x
    let inline private mulAdd256 (x: Vector256<float32>) y z = Vector256.FusedMultiplyAdd(x, y, z)

    // Packed panels: their strides are constants the JIT folds into the addressing.
    let private kernel512 kc a b c ldc acc bias = microKernel true broadcast512 mulAdd512 (columns true) kc a 1 MR b c ldc acc bias
    let private kernel256 kc a b c ldc acc bias = microKernel true broadcast256 mulAdd256 (columns false) kc a 1 MR b c ldc acc bias
    // A read where it is stored.
    let private kernel512Direct kc a rs ks b c ldc acc bias =
        microKernel true broadcast512 mulAdd512 (columns true) kc a rs ks b c ldc acc bias

    let private kernel256Direct kc a rs ks b c ldc acc bias =
        microKernel true broadcast256 mulAdd256 (columns false) kc a rs ks b c ldc acc bias

    /// C tile (+)= A · B panel, A a packed panel (kStride = 0) or read in place with the given strides; when not
    /// accumulating, a non-null bias row (NR values) is added. Both read the same values in the same order.
    let private kernel wide kc a rowStride kStride b c ldc acc bias =
        match wide, kStride with
        | true, 0 -> kernel512 kc a b c ldc acc bias
        | false, 0 -> kernel256 kc a b c ldc acc bias
        | true, _ -> kernel512Direct kc a rowStride kStride b c ldc acc bias
        | false, _ -> kernel256Direct kc a rowStride kStride b c ldc acc bias

    /// The columns narrowKernel computes: one 256-bit vector.
    let private narrowColumns = Vector256<float32>.Count

    /// The first 8 columns of an edge tile, C[6 × 8] = A[6×kc] · B panel's first 8 columns (its rows nr floats apart),
    /// one 256-bit vector per row, written to the tile buffer (ldc apart) for storeEdge: for a panel with at most 8
    /// columns inside C (the last of a 200-column product, a critic's value), a quarter of the 512-bit tile's
    /// multiply-adds or half the 256-bit one's. Each element is the same chain of fused multiply-adds as in the full
    /// tile. A is read as by the full kernel (kStride 0: a packed panel).
    let private narrowKernel kc (a: nativeptr<float32>) rowStride kStride (b: nativeptr<float32>) nr (c: nativeptr<float32>) ldc =
        let rowStride, kStride = if kStride = 0 then 1, MR else rowStride, kStride
        microKernel false broadcast256 mulAdd256 nr kc a rowStride kStride b c ldc false NativePtr.nullPtr

    /// The 8 floats from p + k.
    let inline private eightAt (p: nativeptr<float32>) (k: int) : Vector256<float32> = load (NativePtr.add p k)

    /// The 8×8 transpose in registers of eight rows of 8 floats (row r from load r): emit i gets column i, the i-th
    /// value of each row.
    let inline private transpose8
        ([<InlineIfLambda>] load: int -> Vector256<float32>)
        ([<InlineIfLambda>] emit: int -> Vector256<float32> -> unit)
        =
        let x0, x1, x2, x3 = load 0, load 1, load 2, load 3
        let x4, x5, x6, x7 = load 4, load 5, load 6, load 7
        let t0, t1 = Avx.UnpackLow(x0, x1), Avx.UnpackHigh(x0, x1)
        let t2, t3 = Avx.UnpackLow(x2, x3), Avx.UnpackHigh(x2, x3)
        let t4, t5 = Avx.UnpackLow(x4, x5), Avx.UnpackHigh(x4, x5)
        let t6, t7 = Avx.UnpackLow(x6, x7), Avx.UnpackHigh(x6, x7)
        // Per 128-bit half: 0x44 takes elements 0, 1 of each operand, 0xEE elements 2, 3.
        let u0, u1 = Avx.Shuffle(t0, t2, 0x44uy), Avx.Shuffle(t0, t2, 0xEEuy)
        let u2, u3 = Avx.Shuffle(t1, t3, 0x44uy), Avx.Shuffle(t1, t3, 0xEEuy)
        let u4, u5 = Avx.Shuffle(t4, t6, 0x44uy), Avx.Shuffle(t4, t6, 0xEEuy)
        let u6, u7 = Avx.Shuffle(t5, t7, 0x44uy), Avx.Shuffle(t5, t7, 0xEEuy)
        // 0x20 joins the operands' low halves (columns 0–3), 0x31 their high halves (columns 4–7).
        emit 0 (Avx.Permute2x128(u0, u4, 0x20uy))
        emit 1 (Avx.Permute2x128(u1, u5, 0x20uy))
        emit 2 (Avx.Permute2x128(u2, u6, 0x20uy))
        emit 3 (Avx.Permute2x128(u3, u7, 0x20uy))
        emit 4 (Avx.Permute2x128(u0, u4, 0x31uy))
        emit 5 (Avx.Permute2x128(u1, u5, 0x31uy))
        emit 6 (Avx.Permute2x128(u2, u6, 0x31uy))
        emit 7 (Avx.Permute2x128(u3, u7, 0x31uy))

    /// Packs rows [k0, k0+kc) × columns [j0, j0+nr) of op(B) into dst (kc×nr, zero-padded).
    let private packB (nr: int) (b: Operand) (batch: int) (k0: int) (kc: int) (j0: int) (cols: int) (dst: nativeptr<float32>) =
        use pSrc = fixed b.Data
        let src = NativePtr.add pSrc (b.Offset + batch * b.BatchStride)

        if not b.Trans then
            // Row kk of the panel is a contiguous run of op(B)'s row k0 + kk: a whole one copied by vectors (a call
            // to a general copy costs as much as the copy at 32 floats), an edge one by that copy and zeros.
            for kk in 0 .. kc - 1 do
                let row = NativePtr.add dst (kk * nr)
                let from = NativePtr.add src ((k0 + kk) * b.Ld + j0)

                if cols = nr then
                    for v in 0..8 .. nr - 8 do
                        let x: Vector256<float32> = load (NativePtr.add from v)
                        store (NativePtr.add row v) x
                else
                    Buffer.MemoryCopy(NativePtr.toVoidPtr from, NativePtr.toVoidPtr row, int64 (4 * nr), int64 (4 * cols))

                    for c in cols .. nr - 1 do
                        NativePtr.set row c 0.0f
        else
            // op(B)'s (k0 + kk, j0 + c) is stored at (j0 + c)·Ld + k0 + kk: eight stored rows' next eight values,
            // transposed in registers, are eight panel rows' next eight columns. The rest goes one value at a time.
            let groups = if Avx.IsSupported then cols / 8 else 0
            let kVector = kc / 8 * 8

            for g in 0 .. groups - 1 do
                let c0 = 8 * g
                let row i = NativePtr.add src ((j0 + c0 + i) * b.Ld + k0)
                let mutable kk = 0

                while kk < kVector do
                    let panelRows = NativePtr.add dst (kk * nr + c0)
                    transpose8 (fun i -> eightAt (row i) kk) (fun i v -> store (NativePtr.add panelRows (i * nr)) v)

                    kk <- kk + 8

            for c in 0 .. cols - 1 do
                let from = NativePtr.add src ((j0 + c) * b.Ld + k0)

                for kk in (if c < 8 * groups then kVector else 0) .. kc - 1 do
                    NativePtr.set dst (kk * nr + c) (NativePtr.get from kk)

            for kk in 0 .. kc - 1 do
                for c in cols .. nr - 1 do
                    NativePtr.set dst (kk * nr + c) 0.0f

    /// Packs panel q (columns [q·nr, q·nr + nr) of n) of batch bi's op(B), rows [k0, k0+kc), into dst.
    let private packPanel (nr: int) (b: Operand) (bi: int) (n: int) (k0: int) (kc: int) (q: int) (dst: nativeptr<float32>) =
        let j0 = q * nr
        packB nr b bi k0 kc j0 (min nr (n - j0)) dst

    /// Packs the k-ranges [r·KC, r·KC + KC) for r in [first, first + ranges) of op(B) (k rows in all), for every batch,
    /// into consecutive KC×nr panels of dst (in parallel when worthwhile): panel q of batch bi in the range's i-th slot
    /// starts at ((i·batches + bi)·panels + q)·KC·nr.
    let private packAllB (nr: int) (b: Operand) (batches: int) (n: int) (k: int) (first: int) (ranges: int) (dst: float32[]) inParallel =
        let nPanels = (n + nr - 1) / nr
        let perRange = batches * nPanels

        Workers.forEach (ranges * perRange) inParallel (fun item ->
            let k0 = (first + item / perRange) * KC
            let bi, q = item % perRange / nPanels, item % nPanels
            use pB = fixed dst
            packPanel nr b bi n k0 (min KC (k - k0)) q (NativePtr.add pB (item * KC * nr)))

    /// Packs rows [i0, i0+rows) × k-range [k0, k0+kc) of op(A) into MR-high panels (kc×MR each, zero-padded): the
    /// micro-kernel reads a panel's MR values for one k together. Pure data movement: the panels hold A's values
    /// whichever path copies them.
    let private packA (a: Operand) (batch: int) (i0: int) (rows: int) (k0: int) (kc: int) (dst: nativeptr<float32>) =
        use pSrc = fixed a.Data
        let src = NativePtr.add pSrc (a.Offset + batch * a.BatchStride)
        let panels = (rows + MR - 1) / MR

        for p in 0 .. panels - 1 do
            let panel = NativePtr.add dst (p * kc * MR)
            let r0 = i0 + p * MR
            let prows = min MR (rows - p * MR)

            if a.Trans && prows = MR then
                // op(A)'s k-th column holds the MR values contiguously in the stored matrix's row k: 4 + 2 floats.
                for kk in 0 .. kc - 1 do
                    let from = NativePtr.add src ((k0 + kk) * a.Ld + r0)
                    let slot = NativePtr.add panel (kk * MR)
                    let four: Vector128<float32> = load from
                    let two: Vector64<float32> = load (NativePtr.add from 4)
                    store slot four
                    store (NativePtr.add slot 4) two
            elif a.Trans then
                for kk in 0 .. kc - 1 do
                    let from = NativePtr.add src ((k0 + kk) * a.Ld + r0)
                    let slot = NativePtr.add panel (kk * MR)

                    for r in 0 .. MR - 1 do
                        NativePtr.set slot r (if r < prows then NativePtr.get from r else 0.0f)
            else
                for kk in 0 .. kc - 1 do
                    let slot = NativePtr.add panel (kk * MR)

                    for r in 0 .. MR - 1 do
                        NativePtr.set
                            slot
                            r
                            (if r < prows then
                                 NativePtr.get src ((r0 + r) * a.Ld + k0 + kk)
                             else
                                 0.0f)

    /// The part of a full micro-kernel tile (MR × nr, computed into tile) that lies inside C at an edge: prows rows and
    /// cols columns, added to C when accumulating, else to the bias row when there is one (biasRow not null).
    let private storeEdge
        (tile: nativeptr<float32>)
        (nr: int)
        (cTile: nativeptr<float32>)
        (n: int)
        (prows: int)
        (cols: int)
        (acc: bool)
        (biasRow: nativeptr<float32>)
        =
        for r in 0 .. prows - 1 do
            for cc in 0 .. cols - 1 do
                let dst = NativePtr.add cTile (r * n + cc)

                let baseValue =
                    if acc then
                        NativePtr.read dst
                    elif not (NativePtr.isNullPtr biasRow) then
                        NativePtr.get biasRow cc
                    else
                        0.0f

                NativePtr.write dst (baseValue + NativePtr.get tile (r * nr + cc))

    /// Called on each finished block of C, whole rows and so contiguous: its first element's offset and its length.
    /// Blocks are disjoint and may be finished on different threads.
    type FinishBlock = int -> int -> unit

    /// C for an empty product (k = 0): each row is the bias row, or zeros without a bias.
    let private biasOnly (finish: FinishBlock voption) (batches: int) (m: int) (n: int) (biasStride: int) (c: float32[]) (bias: float32[]) =
        for bi in 0 .. batches - 1 do
            for row in 0 .. m - 1 do
                if isNull bias then
                    Array.Clear(c, (bi * m + row) * n, n)
                else
                    Array.Copy(bias, bi * biasStride, c, (bi * m + row) * n, n)

                match finish with
                | ValueSome f -> f ((bi * m + row) * n) n
                | ValueNone -> ()

    /// Where the micro-kernel reads op(A)'s rows [i, i + MR) from column k0 in place (aStored: the batch's stored
    /// matrix), with its strides: op(A)'s element (i, k) is stored at i·Ld + k, or at k·Ld + i when transposed.
    let private inPlace (a: Operand) (aStored: nativeptr<float32>) (i: int) (k0: int) =
        if a.Trans then
            struct (NativePtr.add aStored (k0 * a.Ld + i), 1, a.Ld)
        else
            struct (NativePtr.add aStored (i * a.Ld + k0), a.Ld, 1)

    /// Packs op(A)'s rows [i0, i0 + rows) of batch bi, k-range [k0, k0 + kc), into pA: all of them, or when readsInPlace
    /// only a ragged last panel (the whole 6-row panels are then read where A is stored). Returns how many rows are
    /// read in place.
    let private prepareA (a: Operand) bi i0 rows k0 kc (pA: nativeptr<float32>) readsInPlace =
        let fullRows = if readsInPlace then rows / MR * MR else 0

        if fullRows < rows then
            packA a bi (i0 + fullRows) (rows - fullRows) k0 kc (NativePtr.add pA (fullRows * kc))

        fullRows

    /// One MR × nr tile of C (+)= A · B panel: straight into C when the tile lies inside it, else computed into `tile`
    /// (its first 8 columns only, when no more lie inside C) and its inside part stored by storeEdge.
    let private multiplyTile wide kc (struct (aPanel, rowStride, kStride)) bPanel tile nr cTile n prows cols acc biasRow =
        if prows = MR && cols = nr then
            kernel wide kc aPanel rowStride kStride bPanel cTile n acc biasRow
        else
            if cols <= narrowColumns then
                narrowKernel kc aPanel rowStride kStride bPanel nr tile nr
            else
                kernel wide kc aPanel rowStride kStride bPanel tile nr false NativePtr.nullPtr

            storeEdge tile nr cTile n prows cols acc biasRow

    /// One product's operands and blocking, for the functions that run its pieces.
    type private Blocking =
        {
            Wide: bool
            Finish: FinishBlock voption
            M: int
            N: int
            K: int
            A: Operand
            B: Operand
            C: float32[]
            Bias: float32[]
            /// 0 when every batch shares the bias row, else n.
            BiasStride: int
            /// Panel width (columns of B per packed panel), panels per batch and floats per packed panel.
            Nr: int
            Panels: int
            PanelSize: int
            /// Rows per block of C, blocks per batch.
            Mc: int
            MBlocks: int
            /// Whether whole 6-row panels of A are read where A is stored rather than packed: always for A as stored
            /// (a panel's six rows are six runs of kc floats, read as well as a packed panel, so the copy is saved); for
            /// a transposed A, whose panel is kc short runs of six floats, only when one or two panels of B read it.
            ReadsAInPlace: bool
            /// Whether the pieces are split across threads.
            InParallel: bool
        }

    /// Block mb of batch bi's rows of C (+)= op(A) over the k-range [k0, k0 + kc) · that range's panels of the batch's
    /// B, packed in `packed` from `at` (panel q at at + q·PanelSize); finish is called on the block after the last range.
    let private multiplyBlock (p: Blocking) (bi: int) (mb: int) (k0: int) (kc: int) (packed: float32[]) (at: int) =
        let a, n = p.A, p.N
        let i0 = mb * p.Mc
        let rows = min p.Mc (p.M - i0)
        let accHere = k0 > 0
        use pA = fixed Scratch.A(p.Mc * kc)
        let fullRows = prepareA a bi i0 rows k0 kc pA p.ReadsAInPlace
        use pAStored = fixed a.Data
        let aStored = NativePtr.add pAStored (a.Offset + bi * a.BatchStride)
        use pB = fixed packed
        use pC = fixed p.C
        use pBias = fixed p.Bias
        let withBias = not accHere && not (isNull p.Bias)
        let tile = NativePtr.stackalloc<float32>(MR * p.Nr)
        let cBase = NativePtr.add pC (bi * p.M * n + i0 * n)

        for q in 0 .. p.Panels - 1 do
            let j0 = q * p.Nr
            let cols = min p.Nr (n - j0)
            let bPanel = NativePtr.add pB (at + q * p.PanelSize)
            let mutable r0 = 0

            while r0 < rows do
                let prows = min MR (rows - r0)
                let cTile = NativePtr.add cBase (r0 * n + j0)

                let aPanel =
                    if r0 < fullRows then
                        inPlace a aStored (i0 + r0) k0
                    else
                        struct (NativePtr.add pA (r0 * kc), 1, 0)

                let biasRow =
                    if withBias then
                        NativePtr.add pBias (bi * p.BiasStride + j0)
                    else
                        NativePtr.nullPtr

                multiplyTile p.Wide kc aPanel bPanel tile p.Nr cTile n prows cols accHere biasRow
                r0 <- r0 + MR

        match p.Finish with
        | ValueSome f when k0 + kc = p.K -> f (bi * p.M * n + i0 * n) (rows * n)
        | _ -> ()

    /// One piece per batch: its thread packs the batch's B one k-range at a time into its own buffer and multiplies
    /// every block of rows by it while the panels are in its cache.
    let private runPerBatch (p: Blocking) (batches: int) =
        Workers.forEach batches p.InParallel (fun bi ->
            let packed = Scratch.B(p.Panels * p.PanelSize)

            for k0 in 0..KC .. p.K - 1 do
                let kc = min KC (p.K - k0)

                do
                    use pB = fixed packed

                    for q in 0 .. p.Panels - 1 do
                        packPanel p.Nr p.B bi p.N k0 kc q (NativePtr.add pB (q * p.PanelSize))

                for mb in 0 .. p.MBlocks - 1 do
                    multiplyBlock p bi mb k0 kc packed 0)

    /// The most floats of packed B that runShared packs for every k-range at once (4 MB).
    let private allRangesLimit = 1 <<< 20

    /// Every batch's B packed in one loop, then one piece per (batch, block of rows): for all the k-ranges at once when
    /// their panels take at most allRangesLimit floats (each piece then runs its k-ranges in order: two loops for the
    /// product instead of two per k-range), else one k-range at a time.
    let private runShared (p: Blocking) (batches: int) =
        let kRanges = (p.K + KC - 1) / KC
        let perRange = batches * p.Panels * p.PanelSize

        let multiply (packed: float32[]) (first: int) (last: int) (item: int) =
            let bi, mb = item / p.MBlocks, item % p.MBlocks

            for r in first..last do
                let at = ((r - first) * batches + bi) * p.Panels * p.PanelSize
                multiplyBlock p bi mb (r * KC) (min KC (p.K - r * KC)) packed at

        let together = kRanges > 1 && kRanges * perRange <= allRangesLimit
        let packed = Scratch.B(if together then kRanges * perRange else perRange)

        if together then
            packAllB p.Nr p.B batches p.N p.K 0 kRanges packed p.InParallel
            Workers.forEach (batches * p.MBlocks) p.InParallel (multiply packed 0 (kRanges - 1))
        else
            for r in 0 .. kRanges - 1 do
                packAllB p.Nr p.B batches p.N p.K r 1 packed p.InParallel
                Workers.forEach (batches * p.MBlocks) p.InParallel (multiply packed r r)

    /// For each batch index: C[m×n] = op(A)·op(B) (+ bias row), where C is dense with leading dimension n, with the
    /// 512-bit micro-kernel when wide (emulated in software where the processor lacks AVX-512) or else the 256-bit one;
    /// finish, if given, is called on each block of C's rows (at most MCMax, contiguous) once its last sum is stored,
    /// while the block is in the cache: one pass rather than a call per micro-tile.
    /// bias is null, n values shared by every batch, or batches·n values (one row per batch). With at least two
    /// batches per thread each batch is a piece (runPerBatch), else each (batch, block of rows) is (runShared); each
    /// element sums its k-ranges in the same order either way.
    let private runFinishing
        (wide: bool)
        (finish: FinishBlock voption)
        (batches: int)
        (m: int)
        (n: int)
        (k: int)
        (a: Operand)
        (b: Operand)
        (c: float32[])
        (bias: float32[])
        =
        let biasStride = if isNull bias || bias.Length = n then 0 else n

        if k = 0 || m = 0 || n = 0 then
            biasOnly finish batches m n biasStride c bias
        else
            let nr = columns wide
            let panels = (n + nr - 1) / nr
            let mBlocks = (m + MCMax - 1) / MCMax

            let blocking =
                {
                    Wide = wide
                    Finish = finish
                    M = m
                    N = n
                    K = k
                    A = a
                    B = b
                    C = c
                    Bias = bias
                    BiasStride = biasStride
                    Nr = nr
                    Panels = panels
                    PanelSize = KC * nr
                    Mc = ((m + mBlocks - 1) / mBlocks + MR - 1) / MR * MR
                    MBlocks = mBlocks
                    ReadsAInPlace = not a.Trans || panels <= 2
                    InParallel = int64 batches * int64 m * int64 n * int64 k >= 300_000L
                }

            if batches >= 2 * CpuSettings.Threads then
                runPerBatch blocking batches
            else
                runShared blocking batches

    /// For each batch index: C[m×n] = op(A)·op(B) (+ bias row) with the 512-bit micro-kernel when wide (emulated in
    /// software where the processor lacks AVX-512) or else the 256-bit one; see runFinishing.
    let runWith wide batches m n k a b c bias = runFinishing wide ValueNone batches m n k a b c bias

    /// The micro-kernel for a product with n columns: the widest this processor runs, except that a product no wider
    /// than the 256-bit kernel's tile (a critic's value, a policy's head, a small model's output) takes that kernel,
    /// which computes and stores 16 columns per tile instead of 32 through an edge buffer (same bits: the kernels
    /// differ only in how many columns a tile holds).
    let private wideFor (n: int) = wide && n > columns false

    /// runWith for this processor's widest micro-kernel (see wideFor).
    let run batches m n k a b c bias = runWith (wideFor n) batches m n k a b c bias

    /// run, calling finish on each block of C's rows as soon as it holds the product (for an element-wise pass that
    /// then finds the block in the cache).
    let runThen (finish: FinishBlock) batches m n k a b c bias = runFinishing (wideFor n) (ValueSome finish) batches m n k a b c bias

    /// The operands of a planned product over the arrays of a and b.
    let operands (plan: MatMulPlan) (transA: bool) (transB: bool) (a: float32[]) (b: float32[]) =
        { Data = a; Offset = 0; Ld = plan.LdA; Trans = transA; BatchStride = plan.StrideA },
        { Data = b; Offset = 0; Ld = plan.LdB; Trans = transB; BatchStride = plan.StrideB }
