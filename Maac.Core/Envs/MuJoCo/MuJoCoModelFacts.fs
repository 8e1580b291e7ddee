namespace Maac.Envs.MuJoCo

#nowarn "9"

open System
open System.Runtime.InteropServices
open System.Text.Json
open System.Text.Json.Nodes
open Microsoft.FSharp.NativeInterop

/// The compiled physics of a loaded model, as MuJoCo holds it after compiling the file: masses and inertias
/// (derived from geoms), joint, dof, geom and actuator parameters and the time step. Two model files that give
/// equal facts simulate identically; `envs --dump-model FILE` prints them so that a model can be compared with
/// a published one.
module ModelFacts =
    type private Kind =
        | Real
        | Int
        | Byte

    // (name, offset of the pointer in mjModel, element kind, count per row, rows: nbody/njnt/nv/ngeom/nu).
    let private fields =
        [
            "body_mass", Layout.ModelBodyMass, Real, 1, Layout.ModelNbody
            "body_inertia", Layout.ModelBodyInertia, Real, 3, Layout.ModelNbody
            "body_pos", Layout.ModelBodyPos, Real, 3, Layout.ModelNbody
            "body_quat", Layout.ModelBodyQuat, Real, 4, Layout.ModelNbody
            "body_ipos", Layout.ModelBodyIpos, Real, 3, Layout.ModelNbody
            "body_iquat", Layout.ModelBodyIquat, Real, 4, Layout.ModelNbody
            "body_parentid", Layout.ModelBodyParentid, Int, 1, Layout.ModelNbody
            "jnt_type", Layout.ModelJntType, Int, 1, Layout.ModelNjnt
            "jnt_bodyid", Layout.ModelJntBodyid, Int, 1, Layout.ModelNjnt
            "jnt_limited", Layout.ModelJntLimited, Byte, 1, Layout.ModelNjnt
            "jnt_pos", Layout.ModelJntPos, Real, 3, Layout.ModelNjnt
            "jnt_axis", Layout.ModelJntAxis, Real, 3, Layout.ModelNjnt
            "jnt_range", Layout.ModelJntRange, Real, 2, Layout.ModelNjnt
            "jnt_stiffness", Layout.ModelJntStiffness, Real, 1, Layout.ModelNjnt
            "dof_damping", Layout.ModelDofDamping, Real, 1, Layout.ModelNv
            "dof_armature", Layout.ModelDofArmature, Real, 1, Layout.ModelNv
            "geom_type", Layout.ModelGeomType, Int, 1, Layout.ModelNgeom
            "geom_bodyid", Layout.ModelGeomBodyid, Int, 1, Layout.ModelNgeom
            "geom_size", Layout.ModelGeomSize, Real, 3, Layout.ModelNgeom
            "geom_pos", Layout.ModelGeomPos, Real, 3, Layout.ModelNgeom
            "geom_quat", Layout.ModelGeomQuat, Real, 4, Layout.ModelNgeom
            "geom_friction", Layout.ModelGeomFriction, Real, 3, Layout.ModelNgeom
            "geom_condim", Layout.ModelGeomCondim, Int, 1, Layout.ModelNgeom
            "geom_contype", Layout.ModelGeomContype, Int, 1, Layout.ModelNgeom
            "geom_conaffinity", Layout.ModelGeomConaffinity, Int, 1, Layout.ModelNgeom
            "geom_margin", Layout.ModelGeomMargin, Real, 1, Layout.ModelNgeom
            "actuator_trntype", Layout.ModelActuatorTrntype, Int, 1, Layout.ModelNu
            "actuator_trnid", Layout.ModelActuatorTrnid, Int, 2, Layout.ModelNu
            "actuator_ctrllimited", Layout.ModelActuatorCtrllimited, Byte, 1, Layout.ModelNu
            "actuator_gear", Layout.ModelActuatorGear, Real, 6, Layout.ModelNu
            "actuator_ctrlrange", Layout.ModelActuatorCtrlrange, Real, 2, Layout.ModelNu
        ]

    /// The compiled values of a simulation's model, by MuJoCo's field names, in a fixed order (the options and
    /// the sizes first).
    let read (sim: Simulation) : (string * float[]) list =
        let m = sim.ModelPointer
        let count (offset: int) = Marshal.ReadInt32(m, offset)

        let array (offset: int) (kind: Kind) (n: int) =
            let p = Marshal.ReadIntPtr(m, offset)

            match kind with
            | Real -> let q: nativeptr<float> = NativePtr.ofNativeInt p in Array.init n (NativePtr.get q)
            | Int -> let q: nativeptr<int> = NativePtr.ofNativeInt p in Array.init n (fun i -> float (NativePtr.get q i))
            | Byte -> let q: nativeptr<byte> = NativePtr.ofNativeInt p in Array.init n (fun i -> float (NativePtr.get q i))

        let real (offset: int) = BitConverter.Int64BitsToDouble(Marshal.ReadInt64(m, offset))

        [
            "opt.timestep", [| sim.Timestep |]
            "opt.gravity", Array.init 3 (fun i -> real (Layout.ModelGravity + 8 * i))
            "opt.density", [| real Layout.ModelDensity |]
            "opt.viscosity", [| real Layout.ModelViscosity |]
            "opt.integrator", [| float (count Layout.ModelIntegrator) |]
            "opt.solver", [| float (count Layout.ModelSolver) |]
            "opt.iterations", [| float (count Layout.ModelIterations) |]
            for name, offset in
                [
                    "nq", Layout.ModelNq
                    "nv", Layout.ModelNv
                    "nu", Layout.ModelNu
                    "nbody", Layout.ModelNbody
                    "njnt", Layout.ModelNjnt
                    "ngeom", Layout.ModelNgeom
                ] do
                name, [| float (count offset) |]
            for name, offset, kind, width, rows in fields do
                name, array offset kind (width * count rows)
        ]

    /// The facts as a JSON object of arrays.
    let toJson (facts: (string * float[]) list) =
        let o = JsonObject()

        for name, values in facts do
            o.[name] <- JsonArray(values |> Array.map (fun v -> JsonValue.Create v :> JsonNode))

        o.ToJsonString(JsonSerializerOptions(WriteIndented = true))

    /// Facts read back from toJson's text.
    let ofJson (text: string) =
        let o = JsonNode.Parse(text).AsObject()

        [
            for kv in o -> kv.Key, kv.Value.AsArray() |> Seq.map (fun v -> v.GetValue<float>()) |> Seq.toArray
        ]

    /// Where two sets of facts differ beyond a relative tolerance (field, index, both values); empty when equal.
    let differences (tolerance: float) (expected: (string * float[]) list) (actual: (string * float[]) list) =
        let actualMap = Map.ofList actual

        [
            for name, e in expected do
                match actualMap.TryFind name with
                | None -> yield sprintf "%s: missing" name
                | Some a when a.Length <> e.Length -> yield sprintf "%s: %d values, expected %d" name a.Length e.Length
                | Some a ->
                    for i in 0 .. e.Length - 1 do
                        if abs (a.[i] - e.[i]) > tolerance * max 1.0 (abs e.[i]) then
                            yield sprintf "%s[%d]: %.17g, expected %.17g" name i a.[i] e.[i]
        ]
