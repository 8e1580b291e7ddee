namespace Maac.Tensors

open Maac

/// Parameters as data: a value that lists its tensors, with names, in a fixed order and can be
/// rebuilt from tensors of the same shapes in that order (the role a pytree plays in JAX).
/// Layers, networks and whole agents are records implementing it; ParameterDict is a named map that does.
type IParameters<'T> =
    /// The tensors with their names, in a fixed order.
    abstract Named: (string * Tensor)[]
    /// The same structure holding other tensors (same count and shapes, same order).
    abstract WithTensors: Tensor[] -> 'T

/// A parameter collection that can also list its tensors without naming them (optional, beside IParameters):
/// Parameters.tensors and Parameters.rebuild use it inside training steps, where names serve only error messages.
type IParameterTensors =
    /// The tensors in the order of IParameters.Named.
    abstract Tensors: Tensor[]

/// Functions over any parameter collection.
module Parameters =
    /// The tensors in order (without building their names where the collection implements IParameterTensors).
    let tensors (p: #IParameters<'T>) =
        match box p with
        | :? IParameterTensors as t -> t.Tensors
        | _ -> p.Named |> Array.map snd

    /// The names in order.
    let names (p: #IParameters<'T>) = p.Named |> Array.map fst
    /// Total number of scalar parameters.
    let count (p: #IParameters<'T>) = p.Named |> Array.sumBy (fun (_, t) -> t.Numel)

    /// Rebuilds p from tensors, checking count and shapes and naming the first one that does not fit.
    let rebuild (p: 'T :> IParameters<'T>) (ts: Tensor[]) : 'T =
        let current = tensors p

        if ts.Length <> current.Length then
            invalidArg "tensors" (sprintf "expected %d tensors for this parameter collection, got %d" current.Length ts.Length)

        for i in 0 .. ts.Length - 1 do
            let expected = current.[i].Primal.Shape

            if not (Shape.equal expected ts.[i].Primal.Shape) then
                raise (
                    ShapeException(
                        sprintf
                            "parameter '%s': expected shape %s, got %s"
                            (fst p.Named.[i])
                            (Shape.show expected)
                            (Shape.show ts.[i].Primal.Shape)
                    )
                )

        p.WithTensors ts

    /// Applies f to every tensor.
    let map (f: Tensor -> Tensor) (p: 'T :> IParameters<'T>) : 'T = tensors p |> Array.map f |> rebuild p

    /// Combines two collections of the same structure tensor by tensor.
    let map2 (f: Tensor -> Tensor -> Tensor) (a: 'T :> IParameters<'T>) (b: 'T) : 'T = Array.map2 f (tensors a) (tensors b) |> rebuild a

    /// Prefixes names (for nesting collections: "policy." + "layer0.weight").
    let prefixed (prefix: string) (named: (string * Tensor)[]) = named |> Array.map (fun (n, t) -> prefix + "." + n, t)

    /// Takes the next `part`-sized run of tensors from ts at offset and rebuilds part from it.
    let take (part: 'P :> IParameters<'P>) (ts: Tensor[]) (offset: int byref) : 'P =
        let n = (tensors part).Length
        let r = rebuild part ts.[offset .. offset + n - 1]
        offset <- offset + n
        r

/// One named part of a record of parameters: its tensors with their names, and the record with the part rebuilt from
/// tensors. A record declares its parts once, as a list (Parameters.namedOfParts, Parameters.withTensorsOfParts
/// follow it), so the order of its names and of its rebuilding can never differ.
type ParameterPart<'T> =
    {
        /// The part's tensors with their names (already prefixed).
        Named: 'T -> (string * Tensor)[]
        /// The part's tensors, in the same order, without names.
        Tensors: 'T -> Tensor[]
        /// The record with this part rebuilt from exactly its tensors.
        Rebuild: 'T -> Tensor[] -> 'T
    }

/// Declaring the parts of a record of parameters.
module ParameterPart =
    /// A part that is itself a parameter collection, its names prefixed with name + ".".
    let nested (name: string) (get: 'T -> 'P) (set: 'T -> 'P -> 'T) : ParameterPart<'T> when 'P :> IParameters<'P> =
        {
            Named = fun whole -> Parameters.prefixed name (get whole).Named
            Tensors = fun whole -> Parameters.tensors (get whole)
            Rebuild = fun whole ts -> set whole (Parameters.rebuild (get whole) ts)
        }

    /// A part that is one tensor, under this name.
    let tensor (name: string) (get: 'T -> Tensor) (set: 'T -> Tensor -> 'T) : ParameterPart<'T> =
        {
            Named = fun whole -> [| name, get whole |]
            Tensors = fun whole -> [| get whole |]
            Rebuild = fun whole ts -> set whole ts.[0]
        }

/// IParameters (and IParameterTensors) for records declared as parts.
module PartsOf =
    /// The tensors of every part with their names, in the order of the list.
    let named (parts: ParameterPart<'T> list) (whole: 'T) = parts |> List.toArray |> Array.collect (fun p -> p.Named whole)

    /// The tensors of every part, in the order of named.
    let tensors (parts: ParameterPart<'T> list) (whole: 'T) = parts |> List.map (fun p -> p.Tensors whole) |> Array.concat

    /// The record rebuilt from tensors in the order of named: each part takes its run of them.
    let withTensors (parts: ParameterPart<'T> list) (whole: 'T) (ts: Tensor[]) =
        let counts = parts |> List.map (fun p -> (p.Tensors whole).Length)
        let expected = List.sum counts

        if ts.Length <> expected then
            invalidArg "tensors" (sprintf "expected %d tensors for this parameter collection, got %d" expected ts.Length)

        List.zip parts counts
        |> List.fold (fun (rebuilt, offset) (part, n) -> part.Rebuild rebuilt ts.[offset .. offset + n - 1], offset + n) (whole, 0)
        |> fst

/// A named map of tensors (names in sorted order) usable wherever parameters are expected.
[<Sealed>]
type ParameterDict(entries: Map<string, Tensor>) =
    /// The entries.
    member _.Entries = entries

    /// The tensor with this name; a clear error when absent.
    member _.Item
        with get (name: string) =
            match entries.TryFind name with
            | Some t -> t
            | None -> invalidArg "name" (sprintf "no parameter named '%s' (have: %s)" name (System.String.Join(", ", entries.Keys)))

    /// A dictionary from name-tensor pairs.
    static member OfSeq(pairs: seq<string * Tensor>) = ParameterDict(Map.ofSeq pairs)

    interface IParameters<ParameterDict> with
        member _.Named = entries |> Map.toArray
        member _.WithTensors ts = ParameterDict(Seq.zip entries.Keys ts |> Map.ofSeq)

    interface IParameterTensors with
        member _.Tensors = entries.Values |> Seq.toArray
