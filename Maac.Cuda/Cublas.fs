namespace Maac.Cuda

open Maac

open System
open System.Runtime.InteropServices

/// The few cuBLAS entry points the backend calls (cublas_api.h, the _v2 ABI). The library name is resolved at
/// run time by Cublas.load, so that CUDA 11, 12 and 13 installs all work.
module internal CublasNative =
    [<Literal>]
    let Library = "maac-cublas"

    [<DllImport(Library)>]
    extern int cublasCreate_v2(nativeint& handle)

    [<DllImport(Library)>]
    extern int cublasDestroy_v2(nativeint handle)

    [<DllImport(Library)>]
    extern int cublasSetStream_v2(nativeint handle, nativeint stream)

    [<DllImport(Library)>]
    extern int cublasSgemmStridedBatched(
        nativeint handle,
        int transa,
        int transb,
        int m,
        int n,
        int k,
        float32& alpha,
        nativeint a,
        int lda,
        int64 strideA,
        nativeint b,
        int ldb,
        int64 strideB,
        float32& beta,
        nativeint c,
        int ldc,
        int64 strideC,
        int batchCount
    )

    [<DllImport(Library)>]
    extern int cublasSgemm_v2(
        nativeint handle,
        int transa,
        int transb,
        int m,
        int n,
        int k,
        float32& alpha,
        nativeint a,
        int lda,
        nativeint b,
        int ldb,
        float32& beta,
        nativeint c,
        int ldc
    )

/// Finding cuBLAS and calling its single-precision matrix products.
module Cublas =
    /// The file names tried, newest CUDA first, after the path in MAAC_CUBLAS when that is set.
    let libraryNames =
        [
            "libcublas.so.13"
            "libcublas.so.12"
            "libcublas.so.11"
            "libcublas.so"
            "cublas64_13.dll"
            "cublas64_12.dll"
        ]

    let private statusName (status: int) =
        match status with
        | 1 -> "CUBLAS_STATUS_NOT_INITIALIZED"
        | 3 -> "CUBLAS_STATUS_ALLOC_FAILED"
        | 7 -> "CUBLAS_STATUS_INVALID_VALUE"
        | 8 -> "CUBLAS_STATUS_ARCH_MISMATCH"
        | 11 -> "CUBLAS_STATUS_MAPPING_ERROR"
        | 13 -> "CUBLAS_STATUS_EXECUTION_FAILED"
        | 14 -> "CUBLAS_STATUS_INTERNAL_ERROR"
        | 15 -> "CUBLAS_STATUS_NOT_SUPPORTED"
        | 16 -> "CUBLAS_STATUS_LICENSE_ERROR"
        | s -> sprintf "cuBLAS status %d" s

    /// Raises when a cuBLAS call did not succeed, naming the call.
    let internal check (call: string) (status: int) =
        if status <> 0 then
            raise (InvalidOperationException(sprintf "%s failed: %s" call (statusName status)))

    type private Marker = class end

    /// The loaded library's handle, or the message saying what was looked for. The DllImport resolver of this
    /// assembly is installed once, on first use.
    let private loaded =
        lazy
            (let explicitPath = Environment.GetEnvironmentVariable "MAAC_CUBLAS"

             let candidates =
                 [
                     if not (String.IsNullOrWhiteSpace explicitPath) then
                         explicitPath
                 ]
                 @ libraryNames

             let found =
                 candidates
                 |> List.tryPick (fun name ->
                     match NativeLibrary.TryLoad name with
                     | true, h -> Some h
                     | _ -> None)

             match found with
             | Some handle ->
                 NativeLibrary.SetDllImportResolver(
                     typeof<Marker>.Assembly,
                     DllImportResolver(fun name _ _ -> if name = CublasNative.Library then handle else IntPtr.Zero)
                 )

                 Ok handle
             | None ->
                 Error(
                     sprintf
                         "cuBLAS was not found (looked for %s on the loader's path%s); install CUDA's cuBLAS (for example the Debian package libcublas12, or pip's nvidia-cublas) and add its folder to LD_LIBRARY_PATH, or set MAAC_CUBLAS to the library's path"
                         (String.Join(", ", candidates))
                         (if String.IsNullOrWhiteSpace explicitPath then
                              ""
                          else
                              ", MAAC_CUBLAS first")
                 ))

    /// Loads cuBLAS; GpuUnavailableException saying what was looked for when it cannot be found.
    let load () =
        match loaded.Value with
        | Ok _ -> ()
        | Error message -> raise (GpuUnavailableException(message, null))

    /// Whether cuBLAS can be loaded on this machine.
    let isAvailable () =
        match loaded.Value with
        | Ok _ -> true
        | Error _ -> false

/// A cuBLAS handle bound to one CUDA stream: products are queued on that stream, behind the kernels before them.
[<Sealed>]
type internal CublasHandle(stream: nativeint) =
    let handle =
        Cublas.load ()
        let mutable h = 0n
        CublasNative.cublasCreate_v2 (&h) |> Cublas.check "cublasCreate"
        CublasNative.cublasSetStream_v2 (h, stream) |> Cublas.check "cublasSetStream"
        h

    let mutable disposed = false

    /// Row-major C[b] = op(A[b]) · op(B[b]) (+ beta · C[b]) for `batches` products, where op(A) is m×k, op(B) is
    /// k×n, lda and ldb are the stored row lengths and the strides step between batches (0: shared by all).
    /// cuBLAS is column-major, so this computes Cᵀ = op(B)ᵀ · op(A)ᵀ with the operands swapped.
    member _.Gemm
        (
            transA: bool,
            transB: bool,
            m: int,
            n: int,
            k: int,
            a: nativeint,
            lda: int,
            strideA: int64,
            b: nativeint,
            ldb: int,
            strideB: int64,
            beta: float32,
            c: nativeint,
            batches: int
        ) =
        if disposed then
            raise (ObjectDisposedException "CublasHandle")

        let mutable alpha = 1.0f
        let mutable beta = beta
        let opB = if transB then 1 else 0
        let opA = if transA then 1 else 0

        if batches = 1 then
            CublasNative.cublasSgemm_v2 (handle, opB, opA, n, m, k, &alpha, b, ldb, a, lda, &beta, c, n)
            |> Cublas.check "cublasSgemm"
        else
            CublasNative.cublasSgemmStridedBatched (
                handle,
                opB,
                opA,
                n,
                m,
                k,
                &alpha,
                b,
                ldb,
                strideB,
                a,
                lda,
                strideA,
                &beta,
                c,
                n,
                int64 m * int64 n,
                batches
            )
            |> Cublas.check "cublasSgemmStridedBatched"

    interface IDisposable with
        member _.Dispose() =
            if not disposed then
                disposed <- true
                CublasNative.cublasDestroy_v2 handle |> ignore
