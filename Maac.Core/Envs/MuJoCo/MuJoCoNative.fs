namespace Maac.Envs.MuJoCo

open Maac

#nowarn "9"

open System
open System.Reflection
open System.Runtime.InteropServices
open Microsoft.FSharp.NativeInterop
open Maac.Envs

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
    extern void mj_rnePostConstraint(nativeint model, nativeint data)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern int mj_name2id(nativeint model, int objectType, [<MarshalAs(UnmanagedType.LPUTF8Str)>] string name)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern void mj_deleteData(nativeint data)

    [<DllImport(Lib, CallingConvention = CallingConvention.Cdecl)>]
    extern void mj_deleteModel(nativeint model)

/// Byte offsets of the fields Maac reads in MuJoCo 2.2.2's mjModel and mjData on 64-bit Linux (pointers to
/// arrays, except the counts, the time step and the time). A test compiles offsetof() against the installed
/// headers (libmujoco-dev) and compares every entry of `all`.
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
    let ModelNjnt = 20

    [<Literal>]
    let ModelNgeom = 24

    [<Literal>]
    let ModelNsite = 28

    [<Literal>]
    let ModelNsensordata = 224

    [<Literal>]
    let ModelTimestep = 232

    [<Literal>]
    let ModelGravity = 280

    [<Literal>]
    let ModelDensity = 352

    [<Literal>]
    let ModelViscosity = 360

    [<Literal>]
    let ModelIntegrator = 432

    [<Literal>]
    let ModelSolver = 448

    [<Literal>]
    let ModelIterations = 452

    [<Literal>]
    let ModelQpos0 = 1096

    [<Literal>]
    let ModelBodyParentid = 1112

    [<Literal>]
    let ModelBodyPos = 1208

    [<Literal>]
    let ModelBodyQuat = 1216

    [<Literal>]
    let ModelBodyIpos = 1224

    [<Literal>]
    let ModelBodyIquat = 1232

    [<Literal>]
    let ModelBodyMass = 1240

    [<Literal>]
    let ModelBodyInertia = 1256

    [<Literal>]
    let ModelJntType = 1280

    [<Literal>]
    let ModelJntQposadr = 1288

    [<Literal>]
    let ModelJntDofadr = 1296

    [<Literal>]
    let ModelJntBodyid = 1304

    [<Literal>]
    let ModelJntLimited = 1320

    [<Literal>]
    let ModelJntPos = 1344

    [<Literal>]
    let ModelJntAxis = 1352

    [<Literal>]
    let ModelJntStiffness = 1360

    [<Literal>]
    let ModelJntRange = 1368

    [<Literal>]
    let ModelDofArmature = 1456

    [<Literal>]
    let ModelDofDamping = 1464

    [<Literal>]
    let ModelGeomType = 1488

    [<Literal>]
    let ModelGeomContype = 1496

    [<Literal>]
    let ModelGeomConaffinity = 1504

    [<Literal>]
    let ModelGeomCondim = 1512

    [<Literal>]
    let ModelGeomBodyid = 1520

    [<Literal>]
    let ModelGeomSize = 1592

    [<Literal>]
    let ModelGeomPos = 1608

    [<Literal>]
    let ModelGeomQuat = 1616

    [<Literal>]
    let ModelGeomFriction = 1624

    [<Literal>]
    let ModelGeomMargin = 1632

    [<Literal>]
    let ModelActuatorTrntype = 2696

    [<Literal>]
    let ModelActuatorTrnid = 2728

    [<Literal>]
    let ModelActuatorCtrllimited = 2744

    [<Literal>]
    let ModelActuatorCtrlrange = 2792

    [<Literal>]
    let ModelActuatorGear = 2816

    [<Literal>]
    let DataNcon = 40332

    [<Literal>]
    let DataTime = 40336

    [<Literal>]
    let DataQpos = 40376

    [<Literal>]
    let DataQvel = 40384

    [<Literal>]
    let DataCtrl = 40408

    [<Literal>]
    let DataSensordata = 40472

    [<Literal>]
    let DataXpos = 40480

    [<Literal>]
    let DataXipos = 40504

    [<Literal>]
    let DataSiteXpos = 40552

    [<Literal>]
    let DataSubtreeCom = 40600

    [<Literal>]
    let DataCinert = 40616

    [<Literal>]
    let DataCvel = 40960

    [<Literal>]
    let DataQfrcActuator = 41088

    [<Literal>]
    let DataQfrcConstraint = 41136

    [<Literal>]
    let DataCfrcExt = 41168

    [<Literal>]
    let ModelNa = 12

    [<Literal>]
    let ModelNmocap = 156

    [<Literal>]
    let ModelNuserdata = 220

    [<Literal>]
    let DataAct = 40392

    [<Literal>]
    let DataQaccWarmstart = 40400

    [<Literal>]
    let DataQfrcApplied = 40416

    [<Literal>]
    let DataXfrcApplied = 40424

    [<Literal>]
    let DataMocapPos = 40432

    [<Literal>]
    let DataMocapQuat = 40440

    [<Literal>]
    let DataUserdata = 40464

    /// d->warning[mjWARN_BADQACC].number: MuJoCo counts (and recovers from, by resetting) NaN or huge accelerations here.
    [<Literal>]
    let DataWarningBadQaccNumber = 76

    /// The version these offsets belong to (mj_version() = 222).
    [<Literal>]
    let Version = 222

    /// Every offset with the C expression it stands for, as the layout test's probe prints them.
    let all =
        [
            "offsetof(mjModel, nq)", ModelNq
            "offsetof(mjModel, nv)", ModelNv
            "offsetof(mjModel, nu)", ModelNu
            "offsetof(mjModel, nbody)", ModelNbody
            "offsetof(mjModel, njnt)", ModelNjnt
            "offsetof(mjModel, ngeom)", ModelNgeom
            "offsetof(mjModel, nsite)", ModelNsite
            "offsetof(mjModel, nsensordata)", ModelNsensordata
            "offsetof(mjModel, opt.timestep)", ModelTimestep
            "offsetof(mjModel, opt.gravity)", ModelGravity
            "offsetof(mjModel, opt.density)", ModelDensity
            "offsetof(mjModel, opt.viscosity)", ModelViscosity
            "offsetof(mjModel, opt.integrator)", ModelIntegrator
            "offsetof(mjModel, opt.solver)", ModelSolver
            "offsetof(mjModel, opt.iterations)", ModelIterations
            "offsetof(mjModel, qpos0)", ModelQpos0
            "offsetof(mjModel, body_parentid)", ModelBodyParentid
            "offsetof(mjModel, body_pos)", ModelBodyPos
            "offsetof(mjModel, body_quat)", ModelBodyQuat
            "offsetof(mjModel, body_ipos)", ModelBodyIpos
            "offsetof(mjModel, body_iquat)", ModelBodyIquat
            "offsetof(mjModel, body_mass)", ModelBodyMass
            "offsetof(mjModel, body_inertia)", ModelBodyInertia
            "offsetof(mjModel, jnt_type)", ModelJntType
            "offsetof(mjModel, jnt_qposadr)", ModelJntQposadr
            "offsetof(mjModel, jnt_dofadr)", ModelJntDofadr
            "offsetof(mjModel, jnt_bodyid)", ModelJntBodyid
            "offsetof(mjModel, jnt_limited)", ModelJntLimited
            "offsetof(mjModel, jnt_pos)", ModelJntPos
            "offsetof(mjModel, jnt_axis)", ModelJntAxis
            "offsetof(mjModel, jnt_stiffness)", ModelJntStiffness
            "offsetof(mjModel, jnt_range)", ModelJntRange
            "offsetof(mjModel, dof_armature)", ModelDofArmature
            "offsetof(mjModel, dof_damping)", ModelDofDamping
            "offsetof(mjModel, geom_type)", ModelGeomType
            "offsetof(mjModel, geom_contype)", ModelGeomContype
            "offsetof(mjModel, geom_conaffinity)", ModelGeomConaffinity
            "offsetof(mjModel, geom_condim)", ModelGeomCondim
            "offsetof(mjModel, geom_bodyid)", ModelGeomBodyid
            "offsetof(mjModel, geom_size)", ModelGeomSize
            "offsetof(mjModel, geom_pos)", ModelGeomPos
            "offsetof(mjModel, geom_quat)", ModelGeomQuat
            "offsetof(mjModel, geom_friction)", ModelGeomFriction
            "offsetof(mjModel, geom_margin)", ModelGeomMargin
            "offsetof(mjModel, actuator_trntype)", ModelActuatorTrntype
            "offsetof(mjModel, actuator_trnid)", ModelActuatorTrnid
            "offsetof(mjModel, actuator_ctrllimited)", ModelActuatorCtrllimited
            "offsetof(mjModel, actuator_ctrlrange)", ModelActuatorCtrlrange
            "offsetof(mjModel, actuator_gear)", ModelActuatorGear
            "offsetof(mjData, ncon)", DataNcon
            "offsetof(mjData, time)", DataTime
            "offsetof(mjData, qpos)", DataQpos
            "offsetof(mjData, qvel)", DataQvel
            "offsetof(mjData, ctrl)", DataCtrl
            "offsetof(mjData, sensordata)", DataSensordata
            "offsetof(mjData, xpos)", DataXpos
            "offsetof(mjData, xipos)", DataXipos
            "offsetof(mjData, site_xpos)", DataSiteXpos
            "offsetof(mjData, subtree_com)", DataSubtreeCom
            "offsetof(mjData, cinert)", DataCinert
            "offsetof(mjData, cvel)", DataCvel
            "offsetof(mjData, qfrc_actuator)", DataQfrcActuator
            "offsetof(mjData, qfrc_constraint)", DataQfrcConstraint
            "offsetof(mjData, cfrc_ext)", DataCfrcExt
            "offsetof(mjData, warning) + mjWARN_BADQACC * sizeof(mjWarningStat) + offsetof(mjWarningStat, number)", DataWarningBadQaccNumber
            "mjVERSION_HEADER", Version
            "offsetof(mjModel, na)", ModelNa
            "offsetof(mjModel, nmocap)", ModelNmocap
            "offsetof(mjModel, nuserdata)", ModelNuserdata
            "offsetof(mjData, act)", DataAct
            "offsetof(mjData, qacc_warmstart)", DataQaccWarmstart
            "offsetof(mjData, qfrc_applied)", DataQfrcApplied
            "offsetof(mjData, xfrc_applied)", DataXfrcApplied
            "offsetof(mjData, mocap_pos)", DataMocapPos
            "offsetof(mjData, mocap_quat)", DataMocapQuat
            "offsetof(mjData, userdata)", DataUserdata
        ]

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
        lazy
            (let handle =
                candidates
                |> List.tryPick (fun name ->
                    match NativeLibrary.TryLoad(name) with
                    | true, h -> Some h
                    | _ -> None)

             match handle with
             | None ->
                 Error
                     "MuJoCo 2.2.2 was not found (tried libmujoco.so.2.2.2). Install the Debian package libmujoco2.2.2: apt-get install libmujoco2.2.2"
             | Some h ->
                 try
                     NativeLibrary.SetDllImportResolver(
                         Assembly.GetExecutingAssembly(),
                         fun name _ _ -> if name = Native.Lib then h else IntPtr.Zero
                     )

                     let v = Native.mj_version ()
                     Warnings.install h

                     if v <> Layout.Version then
                         Error(
                             sprintf
                                 "MuJoCo version %d was found, but Maac's binding reads the data layout of version %d (Debian package libmujoco2.2.2)"
                                 v
                                 Layout.Version
                         )
                     else
                         Ok()
                 with e ->
                     Error(sprintf "MuJoCo could not be loaded: %s. Install the Debian package libmujoco2.2.2" e.Message))

    /// True when MuJoCo 2.2.2 can be used on this machine.
    let isAvailable () =
        match load.Force() with
        | Ok() -> true
        | Error _ -> false

    /// Why MuJoCo cannot be used, or None when it can.
    let unavailableReason () =
        match load.Force() with
        | Ok() -> None
        | Error e -> Some e

    /// Raises MuJoCoUnavailableException (naming the package) unless MuJoCo 2.2.2 is usable.
    let ensure () =
        match load.Force() with
        | Ok() -> ()
        | Error e -> raise (MuJoCoUnavailableException e)

/// Quantities of the simulation's state beyond qpos and qvel, read from mjData (MuJoCo's names; sizes per row).
[<RequireQualifiedAccess>]
type SimQuantity =
    /// Body frame positions in world coordinates (nbody × 3).
    | Xpos
    /// Body centres of mass in world coordinates (nbody × 3).
    | Xipos
    /// Site positions in world coordinates (nsite × 3).
    | SiteXpos
    /// Centres of mass of each body's subtree (nbody × 3).
    | SubtreeCom
    /// Com-based body inertia and mass (nbody × 10).
    | Cinert
    /// Com-based body velocities, rotation then translation (nbody × 6).
    | Cvel
    /// Actuator forces in joint space (nv).
    | QfrcActuator
    /// Constraint forces in joint space (nv).
    | QfrcConstraint
    /// Com-based external forces on each body, from contacts (nbody × 6; computed after every step).
    | CfrcExt
    /// The model's sensor readings (nsensordata).
    | SensorData

/// MuJoCo's object types for name look-ups (mjtObj).
[<RequireQualifiedAccess>]
type MuJoCoObject =
    | Body = 1
    | Joint = 3
    | Geom = 5
    | Site = 6

/// A loaded model and its simulation data. Not thread-safe; dispose to free the native memory.
[<Sealed>]
type Simulation(xmlPath: string) =
    do Library.ensure ()

    let model =
        let err = Array.zeroCreate<byte> 1000
        let m = Native.mj_loadXML (xmlPath, IntPtr.Zero, err, err.Length)

        if m = IntPtr.Zero then
            let msg = Text.Encoding.UTF8.GetString(err).TrimEnd('\000')
            let version = Native.mj_version ()
            let installed = sprintf "%d.%d.%d" (version / 100) (version / 10 % 10) (version % 10)

            let tooNew =
                let m = msg.ToLowerInvariant()

                (m.Contains "unrecognized" || m.Contains "unknown")
                && (m.Contains "attribute" || m.Contains "element")

            if tooNew then
                invalidArg
                    "xmlPath"
                    (sprintf
                        "MuJoCo %s could not load %s: %s. The installed MuJoCo is %s (Debian package libmujoco2.2.2); this file uses a feature of a newer MuJoCo, so it needs a newer version or must be written without it"
                        installed
                        xmlPath
                        msg
                        installed)

            invalidArg "xmlPath" (sprintf "MuJoCo %s could not load %s: %s" installed xmlPath msg)

        m

    let data = Native.mj_makeData model
    let mutable disposed = false
    let readInt (p: nativeint) (offset: int) = Marshal.ReadInt32(p, offset)
    let pointer (p: nativeint) (offset: int) : nativeptr<float> = NativePtr.ofNativeInt (Marshal.ReadIntPtr(p, offset))

    let nq, nv, nu =
        readInt model Layout.ModelNq, readInt model Layout.ModelNv, readInt model Layout.ModelNu

    let nbody, nsite, nsensordata =
        readInt model Layout.ModelNbody, readInt model Layout.ModelNsite, readInt model Layout.ModelNsensordata

    let check () =
        if disposed then
            raise (ObjectDisposedException "Simulation")

    /// The state arrays after the time (SaveState), each with its mjData offset and size.
    let statePointers =
        let na, nmocap, nuserdata =
            readInt model Layout.ModelNa, readInt model Layout.ModelNmocap, readInt model Layout.ModelNuserdata

        [
            "qpos", Layout.DataQpos, nq
            "qvel", Layout.DataQvel, nv
            "act", Layout.DataAct, na
            "qaccWarmstart", Layout.DataQaccWarmstart, nv
            "ctrl", Layout.DataCtrl, nu
            "qfrcApplied", Layout.DataQfrcApplied, nv
            "xfrcApplied", Layout.DataXfrcApplied, 6 * nbody
            "mocapPos", Layout.DataMocapPos, 3 * nmocap
            "mocapQuat", Layout.DataMocapQuat, 4 * nmocap
            "userdata", Layout.DataUserdata, nuserdata
        ]

    let read (p: nativeptr<float>) n = Array.init n (fun i -> NativePtr.get p i)
    let write (p: nativeptr<float>) (values: float[]) = values |> Array.iteri (fun i v -> NativePtr.set p i v)

    let quantity (q: SimQuantity) =
        match q with
        | SimQuantity.Xpos -> Layout.DataXpos, 3 * nbody
        | SimQuantity.Xipos -> Layout.DataXipos, 3 * nbody
        | SimQuantity.SiteXpos -> Layout.DataSiteXpos, 3 * nsite
        | SimQuantity.SubtreeCom -> Layout.DataSubtreeCom, 3 * nbody
        | SimQuantity.Cinert -> Layout.DataCinert, 10 * nbody
        | SimQuantity.Cvel -> Layout.DataCvel, 6 * nbody
        | SimQuantity.QfrcActuator -> Layout.DataQfrcActuator, nv
        | SimQuantity.QfrcConstraint -> Layout.DataQfrcConstraint, nv
        | SimQuantity.CfrcExt -> Layout.DataCfrcExt, 6 * nbody
        | SimQuantity.SensorData -> Layout.DataSensordata, nsensordata

    /// The model file this simulation was loaded from.
    member _.Path = xmlPath
    member _.Nq = nq
    member _.Nv = nv
    member _.Nu = nu
    /// Number of bodies, the world body (0) included.
    member _.Nbody = nbody
    /// Number of sites.
    member _.Nsite = nsite
    /// The simulation time step in seconds.
    member _.Timestep = BitConverter.Int64BitsToDouble(Marshal.ReadInt64(model, Layout.ModelTimestep))

    /// The simulated time.
    member _.Time =
        check ()
        BitConverter.Int64BitsToDouble(Marshal.ReadInt64(data, Layout.DataTime))

    /// The model's reference configuration qpos0.
    member _.InitialQpos =
        check ()
        read (pointer model Layout.ModelQpos0) nq

    /// The bodies' masses (body_mass, nbody; the world's is 0).
    member _.BodyMasses =
        check ()
        read (pointer model Layout.ModelBodyMass) nbody

    /// The actuators' control ranges as (low, high) arrays.
    member _.ControlRange =
        check ()
        let r = read (pointer model Layout.ModelActuatorCtrlrange) (2 * nu)
        Array.init nu (fun i -> r.[2 * i]), Array.init nu (fun i -> r.[2 * i + 1])

    member _.Qpos =
        check ()
        read (pointer data Layout.DataQpos) nq

    /// qpos[skip..] followed by qvel, as float32, read straight from the simulation (one allocation).
    member _.PositionsAndVelocities(skip: int) =
        check ()
        let qp, qv = pointer data Layout.DataQpos, pointer data Layout.DataQvel
        let out = Array.zeroCreate<float32>(nq - skip + nv)

        for i in skip .. nq - 1 do
            out.[i - skip] <- float32 (NativePtr.get qp i)

        for i in 0 .. nv - 1 do
            out.[nq - skip + i] <- float32 (NativePtr.get qv i)

        out

    member _.Qvel =
        check ()
        read (pointer data Layout.DataQvel) nv

    /// qpos[i] without copying the rest.
    member _.QposAt(i: int) =
        check ()

        if i < 0 || i >= nq then
            raise (ArgumentOutOfRangeException("i", i, sprintf "qpos has %d elements" nq))

        NativePtr.get (pointer data Layout.DataQpos) i

    /// One of the state's derived quantities, row-major (see SimQuantity for the sizes).
    member _.Read(q: SimQuantity) =
        check ()
        let offset, n = quantity q
        read (pointer data offset) n

    /// Element i of a derived quantity, without copying the rest.
    member _.ReadAt(q: SimQuantity, i: int) =
        check ()
        let offset, n = quantity q

        if i < 0 || i >= n then
            raise (ArgumentOutOfRangeException("i", i, sprintf "%A has %d elements" q n))

        NativePtr.get (pointer data offset) i

    /// Contacts found in the last step (mjData.ncon).
    member _.ContactCount =
        check ()
        readInt data Layout.DataNcon

    /// The index of a named body, joint, geom or site; an error naming the model file when it has none.
    member _.IdOf(kind: MuJoCoObject, name: string) =
        check ()

        match Native.mj_name2id (model, int kind, name) with
        | -1 -> invalidArg "name" (sprintf "%s has no %O named '%s'" xmlPath kind name)
        | id -> id

    /// The native mjModel, for reading compiled model values (see ModelFacts).
    member internal _.ModelPointer =
        check ()
        model

    /// How many times MuJoCo has found NaN or huge accelerations (and reset the state) since the last reset.
    member _.UnstableCount =
        check ()
        Marshal.ReadInt32(data, Layout.DataWarningBadQaccNumber)

    /// Resets the data, sets positions and velocities, and recomputes derived quantities (as Gymnasium's set_state:
    /// mj_resetData, then mj_forward; contact forces read as zero until the next step).
    member _.SetState(qpos: float[], qvel: float[]) =
        check ()

        if qpos.Length <> nq || qvel.Length <> nv then
            invalidArg "qpos" (sprintf "state sizes %d/%d do not match the model's nq = %d, nv = %d" qpos.Length qvel.Length nq nv)

        Native.mj_resetData (model, data)
        write (pointer data Layout.DataQpos) qpos
        write (pointer data Layout.DataQvel) qvel
        Native.mj_forward (model, data)

    /// The parts of the simulation's state (SaveState) with their sizes, in order.
    member _.StateParts = [ "time", 1 ] @ (statePointers |> List.map (fun (name, _, n) -> name, n))

    /// Everything the next steps depend on: the time, qpos, qvel, act, qacc_warmstart (where the constraint solver
    /// starts), the controls, the applied forces, the mocap bodies' poses and userdata. Restored (RestoreState), the
    /// simulation steps on exactly as it would have from here.
    member _.SaveState() : EnvState =
        check ()

        ("time", [| BitConverter.Int64BitsToDouble(Marshal.ReadInt64(data, Layout.DataTime)) |])
        :: (statePointers |> List.map (fun (name, offset, n) -> name, read (pointer data offset) n))

    /// Returns to a state saved by SaveState from a simulation of the same model: checked whole first (an
    /// ArgumentException names the part), then mj_resetData, the parts written, mj_forward for the derived
    /// quantities, and the parts written again (mj_forward changes qacc_warmstart); the next step equals, bit for bit,
    /// the step the saved simulation would have taken.
    member this.RestoreState(owner: string, state: EnvState) =
        check ()
        let parts = this.StateParts |> List.map (fun (name, n) -> EnvState.part owner state name n)
        Native.mj_resetData (model, data)
        Marshal.WriteInt64(data, Layout.DataTime, BitConverter.DoubleToInt64Bits parts.Head.[0])

        let writeParts () =
            for (_, offset, _), values in List.zip statePointers parts.Tail do
                write (pointer data offset) values

        writeParts ()
        Native.mj_forward (model, data)
        // mj_forward's constraint solver leaves its own solution in qacc_warmstart; the saved one goes back, so that the
        // next step's solver starts where the saved simulation's would have (else contact-rich models drift in the last bits).
        writeParts ()

    /// Sets the controls and advances `frames` physics steps, then computes the contact forces (cfrc_ext) with
    /// mj_rnePostConstraint, as Gymnasium's MuJoCo environments do after every step.
    member this.Step(ctrl: float32[], frames: int) = this.Step(ctrl, frames, true)

    /// Sets the controls and advances `frames` physics steps; with `contactForces`, then computes cfrc_ext (and the
    /// other post-constraint quantities) with mj_rnePostConstraint, which only tasks that read them need.
    member this.Step(ctrl: float32[], frames: int, contactForces: bool) =
        this.StepPhysics(ctrl, frames)

        if contactForces then
            Native.mj_rnePostConstraint (model, data)

    /// Sets the controls and advances `frames` physics steps, nothing else: the bare loop `bench --env` compares with.
    member internal _.StepPhysics(ctrl: float32[], frames: int) =
        check ()
        let p = pointer data Layout.DataCtrl

        for i in 0 .. nu - 1 do
            NativePtr.set p i (float ctrl.[i])

        for _ in 1..frames do
            Native.mj_step (model, data)

    interface IDisposable with
        member _.Dispose() =
            if not disposed then
                disposed <- true
                Native.mj_deleteData data
                Native.mj_deleteModel model
