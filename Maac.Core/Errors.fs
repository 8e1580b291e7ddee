namespace Maac

open System

// The exceptions a user of Maac catches, in the root namespace so that `using Maac;` (or `open Maac`) reaches
// every one of them, whichever layer raises it.

/// Raised when the shapes of the tensors given to an operation do not fit it.
/// The message names the operation and every shape involved.
type ShapeException(message: string) =
    inherit ArgumentException(message)

/// Raised when a NaN or infinity appears where finite numbers are required; the message says where.
type NonFiniteException(message: string) =
    inherit ArithmeticException(message)

/// Raised when a checkpoint cannot be read or does not fit what it is loaded into; the message names the file.
type CheckpointException(message: string) =
    inherit Exception(message)

/// Raised when a loss, gradient, parameter or optimiser state becomes NaN or infinite; the message says where and at
/// which step, Part names the part of the agent that diverged ("policy", "critic", "temperature" or "model").
type DivergenceException(part: string, message: string) =
    inherit Exception(message)
    /// The part that diverged: "policy", "critic", "temperature" or "model".
    member _.Part = part

/// Raised when the system's MuJoCo library cannot be loaded; the message names the Debian package.
type MuJoCoUnavailableException(message: string) =
    inherit Exception(message)

/// Raised when a CUDA device is asked for and cannot be had: the Maac.Cuda package is not referenced, or no
/// usable GPU, driver or cuBLAS is found. The message says which, and what was looked for.
type GpuUnavailableException(message: string, inner: exn) =
    inherit Exception(message, inner)
    /// An exception without an inner cause.
    new(message: string) = GpuUnavailableException(message, null)

/// Finding NaNs and infinities in values.
module Finite =
    /// The index of the first NaN or infinity in values, if any.
    let firstNonFinite (values: float32[]) = Array.tryFindIndex (fun v -> not (Single.IsFinite v)) values

    /// The index of the first NaN or infinity in double values, if any.
    let firstNonFiniteDouble (values: float[]) = Array.tryFindIndex (fun v -> not (Double.IsFinite v)) values

    /// Raises NonFiniteException with describe(index, value) of the first NaN or infinity in values, if any.
    let require (describe: int -> float32 -> string) (values: float32[]) =
        match firstNonFinite values with
        | Some i -> raise (NonFiniteException(describe i values.[i]))
        | None -> ()
