namespace Maac.Envs.MuJoCo

open Maac

#nowarn "9"

open System
open System.Reflection
open System.Runtime.InteropServices
open Microsoft.FSharp.NativeInterop

/// P/Invoke declarations for MuJoCo 2.2.2's C API (libmujoco.so.2.2.2, Debian package libmujoco2.2.2).
module internal Native =
    [<Literal>]
    let Lib = "mujoco"

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern int mj_version()

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern nativeint mj_loadXML([<MarshalAs(UnmanagedType.LPUTF8Str)>] string filename, nativeint vfs, byte[] error, int errorSize)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern nativeint mj_makeData(nativeint model)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern void mj_step(nativeint model, nativeint data)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern void mj_forward(nativeint model, nativeint data)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern void mj_resetData(nativeint model, nativeint data)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern void mj_deleteData(nativeint data)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern void mj_deleteModel(nativeint model)

/// Byte offsets of the fields Maac reads in MuJoCo 2.2.2's mjModel and mjData on 64-bit Linux.
/// A test compiles offsetof() against the installed headers (libmujoco-dev) and compares.
module Layout =
    [<Literal>]
    let ModelNq = 0
    [<Literal>]
    let ModelNv = 4
    [<Literal>]
    let ModelNu = 8
    [<Literal>]
    let ModelNbody = 16
    [<Literal>]
    let ModelTimestep = 232
    [<Literal>]
    let ModelQpos0 = 1096
    [<Literal>]
    let ModelActuatorCtrlrange = 2792
    [<Literal>]
    let DataTime = 40336
    [<Literal>]
    let DataQpos = 40376
    [<Literal>]
    let DataQvel = 40384
    [<Literal>]
    let DataCtrl = 40408
    /// d->warning[mjWARN_BADQACC].number: MuJoCo counts (and recovers from, by resetting) NaN or huge accelerations here.
    [<Literal>]
    let DataWarningBadQaccNumber = 76
    /// The version these offsets belong to (mj_version() = 222).
    [<Literal>]
    let Version = 222

/// MuJoCo's warnings (instability, buffer sizes) would go to the C library's stdout; Maac routes them
/// to standard error so that they never mix with a program's own output.
[<UnmanagedFunctionPointer(CallingConvention.Cdecl)>]
type internal WarningHandler = delegate of nativeint -> unit

module internal Warnings =
    let handler = WarningHandler(fun msg -> eprintfn "MuJoCo warning: %s" (Marshal.PtrToStringUTF8 msg))
    let pointer = Marshal.GetFunctionPointerForDelegate handler

    /// Points the library's mju_user_warning hook at the handler.
    let install (library: nativeint) =
        match NativeLibrary.TryGetExport(library, "mju_user_warning") with
        | true, slot -> Marshal.WriteIntPtr(slot, pointer)
        | _ -> ()

/// Loading the library once, with a clear error when it is missing or of another version.
module Library =
    let private candidates = [ "libmujoco.so.2.2.2"; "libmujoco.so"; "mujoco" ]

    let private load =
        lazy (
            let handle =
                candidates |> List.tryPick (fun name ->
                    match NativeLibrary.TryLoad(name) with
                    | true, h -> Some h
                    | _ -> None)
            match handle with
            | None -> Error "MuJoCo 2.2.2 was not found (tried libmujoco.so.2.2.2). Install the Debian package libmujoco2.2.2: apt-get install libmujoco2.2.2"
            | Some h ->
                try
                    NativeLibrary.SetDllImportResolver(Assembly.GetExecutingAssembly(), fun name _ _ ->
                        if name = Native.Lib then h else IntPtr.Zero)
                    let v = Native.mj_version ()
                    Warnings.install h
                    if v <> Layout.Version then
                        Error(sprintf "MuJoCo version %d was found, but Maac's binding reads the data layout of version %d (Debian package libmujoco2.2.2)" v Layout.Version)
                    else Ok()
                with e -> Error(sprintf "MuJoCo could not be loaded: %s. Install the Debian package libmujoco2.2.2" e.Message))

    /// True when MuJoCo 2.2.2 can be used on this machine.
    let isAvailable () = match load.Force() with Ok () -> true | Error _ -> false

    /// Why MuJoCo cannot be used, or None when it can.
    let unavailableReason () = match load.Force() with Ok () -> None | Error e -> Some e

    /// Raises MuJoCoUnavailableException (naming the package) unless MuJoCo 2.2.2 is usable.
    let ensure () = match load.Force() with Ok () -> () | Error e -> raise (MuJoCoUnavailableException e)

/// A loaded model and its simulation data. Not thread-safe; dispose to free the native memory.
[<Sealed>]
type Simulation(xmlPath: string) =
    do Library.ensure ()
    let model =
        let err = Array.zeroCreate<byte> 1000
        let m = Native.mj_loadXML(xmlPath, IntPtr.Zero, err, err.Length)
        if m = IntPtr.Zero then
            let msg = Text.Encoding.UTF8.GetString(err).TrimEnd('\000')
            invalidArg "xmlPath" (sprintf "MuJoCo could not load %s: %s" xmlPath msg)
        m
    let data = Native.mj_makeData model
    let mutable disposed = false
    let readInt (p: nativeint) (offset: int) = Marshal.ReadInt32(p, offset)
    let pointer (p: nativeint) (offset: int) : nativeptr<float> = NativePtr.ofNativeInt (Marshal.ReadIntPtr(p, offset))
    let nq, nv, nu = readInt model Layout.ModelNq, readInt model Layout.ModelNv, readInt model Layout.ModelNu
    let check () = if disposed then raise (ObjectDisposedException "Simulation")
    let read (p: nativeptr<float>) n = Array.init n (fun i -> NativePtr.get p i)
    let write (p: nativeptr<float>) (values: float[]) = values |> Array.iteri (fun i v -> NativePtr.set p i v)

    member _.Nq = nq
    member _.Nv = nv
    member _.Nu = nu
    /// The simulation time step in seconds.
    member _.Timestep = BitConverter.Int64BitsToDouble(Marshal.ReadInt64(model, Layout.ModelTimestep))
    /// The simulated time.
    member _.Time = check (); BitConverter.Int64BitsToDouble(Marshal.ReadInt64(data, Layout.DataTime))
    /// The model's reference configuration qpos0.
    member _.InitialQpos = check (); read (pointer model Layout.ModelQpos0) nq
    /// The actuators' control ranges as (low, high) arrays.
    member _.ControlRange =
        check ()
        let r = read (pointer model Layout.ModelActuatorCtrlrange) (2 * nu)
        Array.init nu (fun i -> r.[2 * i]), Array.init nu (fun i -> r.[2 * i + 1])
    member _.Qpos = check (); read (pointer data Layout.DataQpos) nq
    /// qpos[skip..] followed by qvel, as float32, read straight from the simulation (one allocation).
    member _.PositionsAndVelocities(skip: int) =
        check ()
        let qp, qv = pointer data Layout.DataQpos, pointer data Layout.DataQvel
        let out = Array.zeroCreate<float32> (nq - skip + nv)
        for i in skip .. nq - 1 do out.[i - skip] <- float32 (NativePtr.get qp i)
        for i in 0 .. nv - 1 do out.[nq - skip + i] <- float32 (NativePtr.get qv i)
        out
    member _.Qvel = check (); read (pointer data Layout.DataQvel) nv
    /// How many times MuJoCo has found NaN or huge accelerations (and reset the state) since the last reset.
    member _.UnstableCount = check (); Marshal.ReadInt32(data, Layout.DataWarningBadQaccNumber)
    /// Resets the data, sets positions and velocities, and recomputes derived quantities.
    member _.SetState(qpos: float[], qvel: float[]) =
        check ()
        if qpos.Length <> nq || qvel.Length <> nv then
            invalidArg "qpos" (sprintf "state sizes %d/%d do not match the model's nq = %d, nv = %d" qpos.Length qvel.Length nq nv)
        Native.mj_resetData(model, data)
        write (pointer data Layout.DataQpos) qpos
        write (pointer data Layout.DataQvel) qvel
        Native.mj_forward(model, data)
    /// Sets the controls and advances `frames` physics steps.
    member _.Step(ctrl: float32[], frames: int) =
        check ()
        let p = pointer data Layout.DataCtrl
        for i in 0 .. nu - 1 do NativePtr.set p i (float ctrl.[i])
        for _ in 1 .. frames do Native.mj_step(model, data)
    interface IDisposable with
        member _.Dispose() =
            if not disposed then
                disposed <- true
                Native.mj_deleteData data
                Native.mj_deleteModel model
