namespace Maac.Cuda

open System

/// Raised when no usable GPU, driver or cuBLAS is found, with what was looked for.
type GpuUnavailableException(message: string, inner: exn) =
    inherit Exception(message, inner)
