namespace Maac.Training

open Maac
open Maac.Algorithms
open Maac.Persistence

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open Maac.Tensors

/// What loading a corrupted checkpoint did.
type FuzzOutcome =
    /// Refused with a CheckpointException naming the file: what must happen.
    | Refused of message: string
    /// Refused, but with another exception or a message that does not name the file.
    | Unclear of error: string
    /// Loaded as if nothing were wrong.
    | Loaded

/// One corrupted checkpoint: its family, what was done, and the outcome of loading it.
type FuzzCase = { Family: string; Description: string; Outcome: FuzzOutcome }

/// A fuzzer for checkpoints: from one valid checkpoint it makes corrupted copies (truncations, bit flips in the
/// header and the data, wrong offsets, shapes and dtypes, huge sizes, non-finite values written with valid
/// checksums, swapped tensors, and edits of counters, shapes and the running episode re-signed so that only the
/// meaning is wrong) and
/// loads each through the same path as `eval --run`. A correct loader refuses every case with a
/// CheckpointException naming the file.
module CheckpointFuzz =
    /// The families and how many cases each gets per 100 (the full set is about 300 cases).
    let private shares =
        [
            "truncation", 10
            "header bit flip", 18
            "data bit flip", 18
            "data offsets", 10
            "shape", 10
            "dtype", 5
            "huge size", 4
            "non-finite value (re-signed)", 10
            "swapped tensors", 5
            "meaning (re-signed)", 10
            "running episode (re-signed)", 6
            "repeated name", 4
        ]

    /// The header of a safetensors file as JSON, and where its data starts.
    let private parse (bytes: byte[]) =
        let length = int (BitConverter.ToUInt64(bytes, 0))
        JsonNode.Parse(ReadOnlySpan<byte>(bytes, 8, length)).AsObject(), 8 + length

    /// A file with another header text and the same data bytes.
    let private withHeaderText (text: string) (data: ReadOnlySpan<byte>) =
        let json = Encoding.UTF8.GetBytes text
        let padded = Array.append json (Array.create ((8 - json.Length % 8) % 8) (byte ' '))
        Array.concat [ BitConverter.GetBytes(uint64 padded.Length); padded; data.ToArray() ]

    /// A file with another header and the same data bytes.
    let private withHeader (header: JsonObject) (data: ReadOnlySpan<byte>) = withHeaderText (header.ToJsonString()) data

    let private tensorNames (header: JsonObject) =
        [|
            for kv in header do
                if kv.Key <> "__metadata__" then
                    yield kv.Key
        |]

    /// The valid checkpoint the corruptions start from, and the fuzzer's random source and scratch file.
    type private Original =
        {
            Bytes: byte[]
            Header: JsonObject
            DataStart: int
            Names: string[]
            Arrays: NamedArray list
            Meta: Map<string, string>
            Rng: Random
            Scratch: string
        }

        member o.Data = ReadOnlySpan<byte>(o.Bytes, o.DataStart, o.Bytes.Length - o.DataStart)
        member o.PickName() = o.Names.[o.Rng.Next o.Names.Length]

        member o.NonEmpty = o.Arrays |> List.filter (fun a -> a.Values.Length > 0) |> List.toArray

    /// One random bit flipped in bytes [lo, hi).
    let private flip (o: Original) (lo: int) (hi: int) =
        let bytes = Array.copy o.Bytes
        let at = lo + o.Rng.Next(hi - lo)
        let bit = o.Rng.Next 8
        bytes.[at] <- bytes.[at] ^^^ (1uy <<< bit)
        sprintf "bit %d of byte %d" bit at, bytes

    /// One random tensor's header entry edited by f (which says what it did); the data bytes unchanged.
    let private editEntry (o: Original) (f: JsonObject -> string) =
        let h = JsonNode.Parse(o.Header.ToJsonString()).AsObject()
        let name = o.PickName()
        let what = f (h.[name].AsObject())
        sprintf "tensor '%s': %s" name what, withHeader h o.Data

    /// A well-formed file with valid checksums holding these arrays and metadata: only the meaning is wrong.
    let private resigned (o: Original) (description: string) (arrays: NamedArray list) (meta: Map<string, string>) =
        Checkpoint.writeUnchecked o.Scratch arrays meta
        description, File.ReadAllBytes o.Scratch

    let private withValues (name: string) (f: NamedArray -> NamedArray) (arrays: NamedArray list) =
        arrays |> List.map (fun a -> if a.Name = name then f a else a)

    let private repeatedName (o: Original) =
        // A JSON object cannot hold a name twice, so the copy is added to the header's text.
        let name, other = o.PickName(), o.PickName()
        let json = o.Header.ToJsonString()

        let text =
            json.Substring(0, json.LastIndexOf '}')
            + sprintf ",\"%s\":%s}" name (o.Header.[other].ToJsonString())

        sprintf "tensor '%s' named twice, the second copy describing '%s'" name other, withHeaderText text o.Data

    let private dataOffsets (o: Original) =
        editEntry o (fun e ->
            let offsets = e.["data_offsets"].AsArray()
            let start, finish = offsets.[0].GetValue<int64>(), offsets.[1].GetValue<int64>()

            let s', f', label =
                match o.Rng.Next 5 with
                | 0 -> -4L, finish - start - 4L, "start -4"
                | 1 -> start + 4L, finish + 4L, "shifted by 4 bytes"
                | 2 -> finish, start, "start and end swapped"
                | 3 -> start, finish + int64 o.Bytes.Length, "end beyond the file"
                | _ -> max 0L (start - 8L), max 0L (finish - 8L), "overlapping the previous tensor"

            e.["data_offsets"] <- JsonArray(JsonValue.Create s' :> JsonNode, JsonValue.Create f' :> JsonNode)
            label)

    let private wrongShape (o: Original) =
        editEntry o (fun e ->
            let shape = e.["shape"].AsArray() |> Seq.map (fun d -> d.GetValue<int64>()) |> Seq.toArray

            let shape', label =
                match o.Rng.Next 5 with
                | 0 -> Array.append shape [| 1L |], "an extra dimension of 1"
                | 1 when shape.Length > 0 -> Array.updateAt 0 (shape.[0] + 1L) shape, "first dimension + 1"
                | 2 -> [| 65536L; 65536L |], "[65536, 65536]"
                | 3 -> Array.append shape [| -1L |], "a negative dimension"
                | _ -> [| 0L |], "[0]"

            e.["shape"] <- JsonArray(shape' |> Array.map (fun d -> JsonValue.Create d :> JsonNode))
            label)

    let private wrongDtype (o: Original) =
        editEntry o (fun e ->
            let dtype = [| "F16"; "F64"; "I32"; "f32"; "" |].[o.Rng.Next 5]
            e.["dtype"] <- JsonValue.Create dtype
            sprintf "dtype %s" dtype)

    let private hugeSize (o: Original) =
        let bytes = Array.copy o.Bytes
        let claimed = [| UInt64.MaxValue; uint64 Int32.MaxValue; uint64 o.Bytes.Length |].[o.Rng.Next 3]
        Buffer.BlockCopy(BitConverter.GetBytes claimed, 0, bytes, 0, 8)
        sprintf "header length %d" claimed, bytes

    let private nonFiniteValue (o: Original) =
        let nonEmpty = o.NonEmpty
        let target = nonEmpty.[o.Rng.Next nonEmpty.Length]
        let at = o.Rng.Next target.Values.Length
        let value = [| Single.NaN; Single.PositiveInfinity; Single.NegativeInfinity |].[o.Rng.Next 3]

        let arrays =
            o.Arrays |> withValues target.Name (fun a -> { a with Values = Array.updateAt at value a.Values })

        resigned o (sprintf "tensor '%s' element %d set to %g, checksums rewritten" target.Name at value) arrays o.Meta

    let private swappedTensors (o: Original) =
        // Two tensors of one shape and different values (two critics' layers, two moments, ...).
        let candidates =
            o.NonEmpty
            |> Array.groupBy (fun a -> a.Shape)
            |> Array.map snd
            |> Array.filter (fun g -> g.Length > 1 && g.[0].Values <> g.[1].Values)

        let g = candidates.[o.Rng.Next candidates.Length]
        let a, b = g.[0], g.[1]

        let range (n: string) =
            let r = o.Header.[n].["data_offsets"].AsArray() in int (r.[0].GetValue<int64>()), int (r.[1].GetValue<int64>())

        let (a0, a1), (b0, _) = range a.Name, range b.Name
        let bytes = Array.copy o.Bytes
        Buffer.BlockCopy(o.Bytes, o.DataStart + b0, bytes, o.DataStart + a0, a1 - a0)
        Buffer.BlockCopy(o.Bytes, o.DataStart + a0, bytes, o.DataStart + b0, a1 - a0)
        sprintf "data of '%s' and '%s' swapped" a.Name b.Name, bytes

    let private runningEpisode (o: Original) =
        // The checkpoint's running episode edited, or (a checkpoint written at an evaluation has none) a malformed one
        // added: loading must refuse either, however well-formed the JSON.
        let episode =
            match o.Meta.TryFind "runningEpisode" with
            | Some text -> JsonNode.Parse(text).AsObject()
            | None -> JsonNode.Parse("""{"observation":[0.0],"return":0.0,"length":1,"environment":{"elapsedSteps":[1.0]}}""").AsObject()

        let environment = episode.["environment"].AsObject()
        let firstPart = (Seq.head environment).Key

        let label =
            match o.Rng.Next 7 with
            | 0 ->
                episode.["observation"].AsArray().Add(JsonValue.Create 0.0)
                "an observation one value too long"
            | 1 ->
                episode.["observation"].AsArray().[0] <- JsonValue.Create 0.1
                "an observation value that is no float32 (0.1)"
            | 2 ->
                episode.["length"] <- JsonValue.Create 0
                "length 0"
            | 3 ->
                episode.["return"] <- JsonValue.Create "x"
                "return \"x\""
            | 4 ->
                environment.[firstPart].AsArray().Add(JsonValue.Create 0.0)
                sprintf "environment part '%s' one value too long" firstPart
            | 5 ->
                environment.Remove firstPart |> ignore
                sprintf "environment part '%s' left out" firstPart
            | _ ->
                environment.[firstPart].AsArray().[0] <- JsonValue.Create "NaN"
                sprintf "environment part '%s' element 0 \"NaN\"" firstPart

        resigned
            o
            (sprintf "metadata 'runningEpisode': %s, re-signed" label)
            o.Arrays
            (o.Meta.Add("runningEpisode", episode.ToJsonString()))

    /// Counters out of range, tensors short, missing or extra, elites and done flags wrong: well-formed and re-signed.
    let private wrongMeaning (o: Original) =
        let arrays, meta = o.Arrays, o.Meta

        let counters =
            meta
            |> Map.filter (fun k _ -> k.EndsWith "Count" || k.EndsWith "Head" || k = "step" || k = "episodes")
            |> Map.toArray

        match o.Rng.Next 6 with
        | 0 ->
            let k, _ = counters.[o.Rng.Next counters.Length]
            let v = [| "-1"; "2147483647"; "1e3"; "x" |].[o.Rng.Next 4]
            resigned o (sprintf "metadata '%s' set to %s, re-signed" k v) arrays (meta.Add(k, v))
        | 1 ->
            let nonEmpty = o.NonEmpty
            let target = nonEmpty.[o.Rng.Next nonEmpty.Length]

            let shorter =
                arrays
                |> withValues target.Name (fun a -> { a with Shape = [| a.Values.Length - 1 |]; Values = a.Values.[1..] })

            resigned o (sprintf "tensor '%s' one value short, re-signed" target.Name) shorter meta
        | 2 ->
            let target = arrays.[o.Rng.Next arrays.Length]
            resigned o (sprintf "tensor '%s' left out, re-signed" target.Name) (arrays |> List.filter (fun a -> a.Name <> target.Name)) meta
        | 3 ->
            let extra = { Name = "extra.weight"; Shape = [| 2 |]; Values = [| 1.0f; 2.0f |] }
            resigned o "a tensor 'extra.weight' added, re-signed" (arrays @ [ extra ]) meta
        | 4 -> resigned o "metadata 'elites' set to 99, re-signed" arrays (meta.Add("elites", "99"))
        | _ ->
            match arrays |> List.tryFind (fun a -> a.Name = "real.4" && a.Values.Length > 0) with
            | Some d ->
                let halfDone = arrays |> withValues d.Name (fun a -> { a with Values = Array.updateAt 0 0.5f a.Values })
                resigned o "real.4 (done flags) element 0 set to 0.5, re-signed" halfDone meta
            | None -> resigned o "metadata 'adamSteps' set to 1,2, re-signed" arrays (meta.Add("adamSteps", "1,2"))

    /// The corruptions of one family: (description, bytes of the corrupted file) for case index i, from the
    /// original file's bytes and the checkpoint's arrays and metadata (for the re-signed families).
    let private corrupt
        (family: string)
        (rng: Random)
        (original: byte[])
        (arrays: NamedArray list)
        (meta: Map<string, string>)
        (scratch: string)
        =
        let header, dataStart = parse original

        let o =
            {
                Bytes = original
                Header = header
                DataStart = dataStart
                Names = tensorNames header
                Arrays = arrays
                Meta = meta
                Rng = rng
                Scratch = scratch
            }

        match family with
        | "repeated name" -> repeatedName o
        | "truncation" ->
            let n = rng.Next original.Length
            sprintf "cut to %d of %d bytes" n original.Length, original.[.. n - 1]
        | "header bit flip" -> flip o 0 dataStart
        | "data bit flip" -> flip o dataStart original.Length
        | "data offsets" -> dataOffsets o
        | "shape" -> wrongShape o
        | "dtype" -> wrongDtype o
        | "huge size" -> hugeSize o
        | "non-finite value (re-signed)" -> nonFiniteValue o
        | "swapped tensors" -> swappedTensors o
        | "running episode (re-signed)" -> runningEpisode o
        | "meaning (re-signed)" -> wrongMeaning o
        | other -> invalidArg "family" (sprintf "no corruption family is called '%s'" other)

    /// The arrays of a checkpoint in file order, and its metadata (checksums left out).
    let private contents (path: string) =
        let arrays, meta = Checkpoint.load path
        let header, _ = parse (File.ReadAllBytes path)
        tensorNames header |> Array.toList |> List.map (fun n -> arrays.[n]), meta

    /// Runs `cases` corrupted copies of the checkpoint in run folder `runDir` (seeded by `seed`) through `openRun`
    /// (which loads a run folder, as `eval --run` does); every case is made in a scratch copy of the folder.
    let run (runDir: string) (cases: int) (seed: int) (openRun: string -> unit) =
        let checkpoint = RunFolder.checkpointFile runDir
        let original = File.ReadAllBytes checkpoint
        let arrays, meta = contents checkpoint
        let rng = Random seed
        let scratchDir = Directory.CreateTempSubdirectory("maac-fuzz").FullName

        try
            File.Copy(RunFolder.configFile runDir, RunFolder.configFile scratchDir)
            let target = RunFolder.checkpointFile scratchDir
            let resignScratch = Path.Combine(scratchDir, "resigned.safetensors")
            let total = shares |> List.sumBy snd

            [
                for family, share in shares do
                    let n = max 1 ((cases * share + total - 1) / total)

                    for _ in 1..n do
                        let description, bytes = corrupt family rng original arrays meta resignScratch
                        File.WriteAllBytes(target, bytes)

                        let outcome =
                            try
                                openRun scratchDir
                                Loaded
                            with
                            | :? CheckpointException as e when e.Message.Contains target -> Refused e.Message
                            | e -> Unclear(sprintf "%s: %s" (e.GetType().Name) e.Message)

                        yield { Family = family; Description = description; Outcome = outcome }
            ]
        finally
            Directory.Delete(scratchDir, true)
