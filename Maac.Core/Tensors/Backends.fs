namespace Maac.Tensors

open System.Collections.Concurrent
open Maac.Tensors.Cpu

/// The registry of backends by device, and the default device for new tensors.
type Backends private () =
    static let registry = ConcurrentDictionary<Device, IBackend>()
    static let mutable defaultBackend: IBackend = CpuBackend.Instance :> IBackend
    static let scoped = System.Threading.AsyncLocal<IBackend>()
    static do registry.[Device.Cpu] <- CpuBackend.Instance

    /// Makes a backend available for its device (for example the CUDA backend when it starts).
    static member Register(backend: IBackend) = registry.[backend.Device] <- backend

    /// The backend for a device; a clear error when none is registered.
    static member Get(device: Device) =
        match registry.TryGetValue device with
        | true, b -> b
        | _ ->
            invalidArg
                "device"
                (sprintf "no backend is registered for device %O (registered: %s)" device (System.String.Join(", ", registry.Keys)))

    /// The backend that tensor-creating functions use when no device is named: the innermost Backends.Use
    /// of this thread or async flow, otherwise the process-wide setting (the CPU unless set).
    static member Default
        with get () = let b = scoped.Value in if isNull (box b) then defaultBackend else b
        and set (b: IBackend) = defaultBackend <- b

    /// Makes `backend` the default for this thread or async flow until the result is disposed (scopes nest).
    static member Use(backend: IBackend) =
        if isNull (box backend) then
            nullArg "backend"

        let previous = scoped.Value
        scoped.Value <- backend

        { new System.IDisposable with
            member _.Dispose() = scoped.Value <- previous
        }
