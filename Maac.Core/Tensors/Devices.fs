namespace Maac.Tensors

open System
open System.Reflection
open Maac

/// What an optional backend package supplies: backends for the devices of one kind, created on first use.
/// The Maac.Cuda package implements it for CUDA devices (type Maac.Cuda.CudaProvider).
type IBackendProvider =
    /// A backend for this device index; GpuUnavailableException saying what is missing when it cannot be had.
    abstract Create: index: int -> IBackend

/// Choosing the device new tensors are created on, by name ("cpu", "cuda", "cuda:N"). The CUDA backend lives
/// in the optional Maac.Cuda package: it is found at run time when the application references it, and asking
/// for a CUDA device without it fails with a GpuUnavailableException naming the package.
module Devices =
    /// The assembly and type that supply CUDA backends when the Maac.Cuda package is referenced.
    [<Literal>]
    let CudaPackage = "Maac.Cuda"

    [<Literal>]
    let private CudaProviderType = "Maac.Cuda.CudaProvider"

    let private gate = obj ()
    let mutable private cudaProvider: IBackendProvider option = None

    /// Loads the provider type from an assembly by name; a clear error naming the package when it is absent.
    let internal loadProvider (assemblyName: string) (typeName: string) : IBackendProvider =
        let missing (inner: exn) =
            GpuUnavailableException(
                sprintf
                    "a CUDA device needs the %s package, which this application does not reference (add it: dotnet add package %s)"
                    assemblyName
                    assemblyName,
                inner
            )

        let assembly =
            try
                Assembly.Load(AssemblyName assemblyName)
            with
            | :? IO.FileNotFoundException
            | :? IO.FileLoadException
            | :? BadImageFormatException as e -> raise (missing e)

        match assembly.GetType(typeName, false) with
        | null -> raise (missing null)
        | t -> Activator.CreateInstance t :?> IBackendProvider

    /// Makes a provider of CUDA backends known explicitly (the Maac.Cuda package is otherwise found by name).
    let registerCuda (provider: IBackendProvider) =
        if isNull (box provider) then
            nullArg "provider"

        lock gate (fun () -> cudaProvider <- Some provider)

    let private cuda () =
        match cudaProvider with
        | Some p -> p
        | None ->
            let p = loadProvider CudaPackage CudaProviderType
            cudaProvider <- Some p
            p

    /// The device a name stands for: "cpu", "cuda" (the first GPU) or "cuda:N".
    let parse (spec: string) =
        let notADevice () = invalidArg "spec" (sprintf "'%s' is not a device: use cpu, cuda or cuda:N" spec)

        if isNull spec then
            nullArg "spec"

        match spec.Trim().ToLowerInvariant() with
        | "cpu" -> Device.Cpu
        | "cuda" -> Device.Cuda 0
        | s when s.StartsWith "cuda:" ->
            match Int32.TryParse(s.Substring 5) with
            | true, i when i >= 0 -> Device.Cuda i
            | _ -> notADevice ()
        | _ -> notADevice ()

    /// The backend of a device, created and registered on first use.
    let backend (device: Device) =
        lock gate (fun () ->
            match device with
            | Device.Cpu -> Backends.Get Device.Cpu
            | Device.Cuda index ->
                try
                    Backends.Get device
                with :? ArgumentException ->
                    let b = (cuda ()).Create index
                    Backends.Register b
                    b)

    /// Makes the named device the process-wide default for new tensors and returns it. On failure the default
    /// is left as it was.
    let select (spec: string) =
        let device = parse spec
        Backends.Default <- backend device
        device
