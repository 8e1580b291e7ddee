namespace Maac.Cuda

open Maac

open System
open ILGPU
open ILGPU.Runtime
open ILGPU.Runtime.Cuda
open ILGPU.Runtime.CPU
open ILGPU.Algorithms
open Maac.Tensors

/// Creating GPU backends.
module Gpu =
    // ILGPU.Algorithms supplies the PTX implementations of exp, log, tanh, sin, cos, pow and atan2 used by the kernels.
    let private context =
        lazy (Context.Create(fun b -> b.Default().EnableAlgorithms().Math(MathMode.Default) |> ignore))

    /// A backend on the NVIDIA GPU with this index; GpuUnavailableException naming what is missing otherwise.
    let cuda (index: int) =
        let devices =
            try
                let found = ResizeArray<CudaDevice>()

                for d in context.Value.GetCudaDevices() do
                    found.Add d

                found.ToArray()
            with e ->
                raise (GpuUnavailableException("no CUDA driver was found (libcuda from the NVIDIA driver is needed for --device cuda)", e))

        if devices.Length = 0 then
            raise (
                GpuUnavailableException(
                    "no NVIDIA GPU was found: CUDA reports no devices (is the NVIDIA driver installed and a GPU visible?)",
                    null
                )
            )

        if index < 0 || index >= devices.Length then
            raise (GpuUnavailableException(sprintf "CUDA device %d does not exist; this machine has %d" index devices.Length, null))

        Cublas.load ()
        new GpuBackend(devices.[index].CreateAccelerator(context.Value), Device.Cuda index)

    /// A backend that runs the GPU kernels on ILGPU's CPU accelerator (for tests without a GPU). It reports
    /// itself as device cuda:0, so it must not be registered beside a real CUDA backend.
    let cpuSimulator () =
        let cpu = context.Value.GetCPUDevices().[0]
        new GpuBackend(cpu.CreateAccelerator(context.Value), Device.Cuda 0)

/// Supplies CUDA backends to Maac.Core's device selection (Devices.select "cuda:N", ComputeDevice.Cuda), which
/// finds this type by name when an application references the Maac.Cuda package.
[<Sealed>]
type CudaProvider() =
    interface IBackendProvider with
        member _.Create index = Gpu.cuda index :> IBackend
