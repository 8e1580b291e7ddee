namespace Maac.Tensors

open System.Collections.Concurrent
open Maac.Tensors.Cpu

/// The registry of backends by device, and the default device for new tensors.
type Backends private () =
    static let registry = ConcurrentDictionary<Device, IBackend>()
    static let mutable defaultBackend: IBackend = CpuBackend.Instance :> IBackend
    static do registry.[Device.Cpu] <- CpuBackend.Instance

    /// Makes a backend available for its device (for example the CUDA backend when it starts).
    static member Register(backend: IBackend) = registry.[backend.Device] <- backend

    /// The backend for a device; a clear error when none is registered.
    static member Get(device: Device) =
        match registry.TryGetValue device with
        | true, b -> b
        | _ -> invalidArg "device" (sprintf "no backend is registered for device %O (registered: %s)" device (System.String.Join(", ", registry.Keys)))

    /// The backend that tensor-creating functions use when no device is named.
    static member Default
        with get () = defaultBackend
        and set (b: IBackend) = defaultBackend <- b
