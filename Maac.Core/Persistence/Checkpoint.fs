namespace Maac.Persistence

open Maac
open Maac.Algorithms

open System
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Text.Json.Nodes

/// A named float32 array with its shape.
type NamedArray = { Name: string; Shape: int[]; Values: float32[] }

/// Checkpoints in the safetensors layout (an 8-byte little-endian header length, a JSON header naming
/// each tensor's dtype, shape and byte range, then the raw little-endian data), so Python's
/// `safetensors` can read them. Non-tensor state goes in the header's "__metadata__" strings, with a SHA-256 of
/// each tensor's bytes ("sha256:NAME") and of the header itself ("sha256:header": the metadata and every tensor's
/// name, dtype and shape), so that no changed byte loads unnoticed. Files are written to a temporary name and
/// renamed, so a crash never leaves a half-written checkpoint; a stale temporary file is removed by the next write.
module Checkpoint =
    /// The format written now; files of the previous format (without checksums) still load, with every check
    /// but the checksums.
    [<Literal>]
    let Format = "maac-checkpoint-2"

    [<Literal>]
    let private PreviousFormat = "maac-checkpoint-1"

    [<Literal>]
    let private ChecksumPrefix = "sha256:"

    [<Literal>]
    let private HeaderChecksum = "sha256:header"

    let private hex (bytes: byte[]) = Convert.ToHexString(bytes).ToLowerInvariant()

    let private bytesOf (values: float32[]) =
        let bytes = Array.zeroCreate<byte>(4 * values.Length)
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length)
        bytes

    /// The header's checksum: SHA-256 of the metadata (checksum keys left out, keys in ordinal order) and of each
    /// tensor's name, dtype and shape in file order, one line each.
    let private headerDigest (metadata: (string * string) seq) (tensors: (string * int[]) seq) =
        let text = StringBuilder()

        for k, v in
            metadata
            |> Seq.filter (fun (k, _) -> not (k.StartsWith ChecksumPrefix))
            |> Seq.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b)) do
            text.Append("meta\t").Append(k).Append('\t').Append(v).Append('\n') |> ignore

        for name, shape in tensors do
            text.Append("tensor\t").Append(name).Append("\tF32\t").Append(String.Join(",", shape)).Append('\n')
            |> ignore

        hex (SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))

    /// Writes the file without checking values (the fuzzer writes non-finite tensors through it to test loading).
    let internal writeUnchecked (path: string) (arrays: NamedArray list) (metadata: Map<string, string>) =
        let header = JsonObject()
        let meta = JsonObject()
        let payloads = arrays |> List.map (fun a -> a, bytesOf a.Values)
        let checksums = payloads |> List.map (fun (a, b) -> ChecksumPrefix + a.Name, hex (SHA256.HashData b))
        let headerSum = headerDigest (Map.toSeq metadata) (arrays |> Seq.map (fun a -> a.Name, a.Shape))

        for k, v in Map.toList metadata @ checksums @ [ HeaderChecksum, headerSum ] do
            meta.[k] <- JsonValue.Create v

        header.["__metadata__"] <- meta
        let mutable offset = 0L

        for a in arrays do
            let entry = JsonObject()
            entry.["dtype"] <- JsonValue.Create "F32"
            entry.["shape"] <- JsonArray(a.Shape |> Array.map (fun d -> JsonValue.Create d :> JsonNode))
            let bytes = 4L * int64 a.Values.Length
            entry.["data_offsets"] <- JsonArray(JsonValue.Create offset :> JsonNode, JsonValue.Create(offset + bytes) :> JsonNode)
            header.[a.Name] <- entry
            offset <- offset + bytes

        let json = Encoding.UTF8.GetBytes(header.ToJsonString())
        let padded = Array.append json (Array.create ((8 - json.Length % 8) % 8) (byte ' '))
        let dir = Path.GetDirectoryName(Path.GetFullPath path)
        Directory.CreateDirectory dir |> ignore
        // Temporary files of writes that were killed (any process id) are removed before writing a new one.
        for stale in Directory.GetFiles(dir, sprintf ".%s.*.tmp" (Path.GetFileName path)) do
            File.Delete stale

        let temp = Path.Combine(dir, sprintf ".%s.%d.tmp" (Path.GetFileName path) Environment.ProcessId)

        do
            use f = new FileStream(temp, FileMode.Create, FileAccess.Write)
            use w = new BinaryWriter(f)
            w.Write(uint64 padded.Length)
            w.Write padded

            for _, bytes in payloads do
                w.Write bytes

            w.Flush()
            f.Flush(true)

        File.Move(temp, path, true)

    /// Writes tensors and metadata to path atomically. Every value must be finite and every shape must hold its
    /// values: nothing non-finite is ever written.
    let save (path: string) (arrays: NamedArray list) (metadata: Map<string, string>) =
        for a in arrays do
            if Array.fold (fun n d -> n * int64 d) 1L a.Shape <> int64 a.Values.Length then
                invalidArg
                    "arrays"
                    (sprintf
                        "checkpoint tensor '%s': shape %s does not hold %d values"
                        a.Name
                        (Maac.Tensors.Shape.show a.Shape)
                        a.Values.Length)

            a.Values
            |> Finite.require (fun i v ->
                sprintf "checkpoint tensor '%s' element %d is %g: nothing non-finite is written (%s was not replaced)" a.Name i v path)

        for k in metadata.Keys do
            if k.StartsWith ChecksumPrefix then
                invalidArg "metadata" (sprintf "metadata key '%s' is reserved for checksums" k)

        writeUnchecked path arrays metadata

    /// Raises the CheckpointException of a file whose content is wrong, the message formatted as by sprintf.
    let private corrupt (path: string) fmt =
        Printf.kprintf (fun m -> raise (CheckpointException(sprintf "checkpoint %s is corrupt or not a Maac checkpoint: %s" path m))) fmt

    /// The file's bytes; a missing or unreadable file is a CheckpointException naming it.
    let private readBytes (path: string) =
        if not (File.Exists path) then
            raise (CheckpointException(sprintf "checkpoint not found: %s" path))

        try
            File.ReadAllBytes path
        with
        | :? IOException
        | :? UnauthorizedAccessException as e -> raise (CheckpointException(sprintf "checkpoint %s cannot be read: %s" path e.Message))

    /// The header's JSON object and where the data starts: an 8-byte length, then that many bytes of UTF-8 JSON.
    let private readHeader (path: string) (bytes: byte[]) =
        if bytes.Length < 8 then
            corrupt path "the file has %d bytes, fewer than the 8 of the header length" bytes.Length

        let headerLength = BitConverter.ToUInt64(bytes, 0)

        if headerLength > uint64 (bytes.Length - 8) then
            corrupt path "the header claims %d bytes but the file has %d" headerLength bytes.Length

        let headerText =
            try
                UTF8Encoding(false, true).GetString(bytes, 8, int headerLength)
            with :? DecoderFallbackException ->
                corrupt path "the header is not valid UTF-8"

        let header =
            try
                match JsonNode.Parse headerText with
                | :? JsonObject as o ->
                    // A JsonObject reads its properties on first use: a repeated name surfaces here, not later.
                    o.Count |> ignore
                    o
                | _ -> corrupt path "the header is not a JSON object"
            with
            | :? CheckpointException -> reraise ()
            | :? ArgumentException as e -> corrupt path "the header names a key twice (%s)" e.Message
            | e -> corrupt path "the header is not JSON (%s)" e.Message

        header, 8L + int64 headerLength

    /// The header's __metadata__ object: string values only.
    let private readMetadata (path: string) (header: JsonObject) =
        match header.["__metadata__"] with
        | null -> Map.empty
        | :? JsonObject as m ->
            m
            |> Seq.map (fun kv ->
                match kv.Value with
                | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> kv.Key, v.GetValue<string>()
                | _ -> corrupt path "metadata '%s' is not a string" kv.Key)
            |> Map.ofSeq
        | _ -> corrupt path "__metadata__ is not an object"

    /// A shape's number of values, refused when it has a negative dimension or more values than a file can hold.
    let private valueCount (path: string) (name: string) (shape: int64[]) =
        if shape |> Array.exists (fun d -> d < 0L || d > int64 Int32.MaxValue) then
            corrupt path "tensor '%s' has shape [%s]: dimensions must be between 0 and %d" name (String.Join(", ", shape)) Int32.MaxValue

        let count =
            shape
            |> Array.fold
                (fun n d ->
                    if n = 0L || d <= (int64 Int32.MaxValue / 4L) / n then
                        n * d
                    else
                        Int64.MaxValue)
                1L

        if count > int64 Int32.MaxValue / 4L then
            corrupt path "tensor '%s' has shape [%s], more values than a checkpoint can hold" name (String.Join(", ", shape))

        count

    /// One tensor's header entry: (name, shape, first data byte, end data byte), its dtype F32 and its byte range
    /// inside the data and as long as its shape needs.
    let private readEntry (path: string) (dataLength: int64) (name: string) (node: JsonNode) =
        let o =
            match node with
            | :? JsonObject as o -> o
            | _ -> corrupt path "tensor '%s' is not described by an object" name

        let field (key: string) =
            match o.[key] with
            | null -> corrupt path "tensor '%s' has no %s" name key
            | v -> v

        let dtype =
            match field "dtype" with
            | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> v.GetValue<string>()
            | _ -> corrupt path "tensor '%s' has a dtype that is not a string" name

        if dtype <> "F32" then
            corrupt path "tensor '%s' has dtype %s, expected F32" name dtype

        let integers (key: string) =
            match field key with
            | :? JsonArray as a ->
                a
                |> Seq.map (fun d ->
                    match d with
                    | :? JsonValue as v when v.GetValueKind() = JsonValueKind.Number ->
                        match v.TryGetValue<int64>() with
                        | true, x -> x
                        | _ -> corrupt path "tensor '%s' has a %s entry that is not an integer" name key
                    | _ -> corrupt path "tensor '%s' has a %s entry that is not a number" name key)
                |> Seq.toArray
            | _ -> corrupt path "tensor '%s' has a %s that is not an array" name key

        let shape = integers "shape"
        let count = valueCount path name shape
        let offsets = integers "data_offsets"

        if offsets.Length <> 2 then
            corrupt path "tensor '%s' has %d data offsets, expected 2" name offsets.Length

        if offsets.[0] < 0L || offsets.[1] < offsets.[0] || offsets.[1] > dataLength then
            corrupt path "tensor '%s' has data range [%d, %d] outside the %d data bytes" name offsets.[0] offsets.[1] dataLength

        if offsets.[1] - offsets.[0] <> 4L * count then
            corrupt
                path
                "tensor '%s' has shape [%s] (%d bytes) but a data range of %d bytes"
                name
                (String.Join(", ", shape))
                (4L * count)
                (offsets.[1] - offsets.[0])

        name, Array.map int shape, offsets.[0], offsets.[1]

    /// Ranges in order, each starting where the previous ended, together covering the data exactly.
    let private checkCoverage (path: string) (dataLength: int64) entries =
        let covered =
            entries
            |> List.fold
                (fun expected (name, _, start, finish) ->
                    if start <> expected then
                        corrupt
                            path
                            "tensor '%s' starts at data byte %d where %d was expected (ranges overlap or leave a gap)"
                            name
                            start
                            expected

                    finish)
                0L

        if covered <> dataLength then
            corrupt path "the tensors cover %d data bytes but the file holds %d" covered dataLength

    /// Whether the file's format carries checksums; when it does, the header's checksum must match.
    let private checkHeaderChecksum (path: string) (metadata: Map<string, string>) entries =
        let checksummed = metadata.TryFind "format" <> Some PreviousFormat

        if not checksummed && metadata |> Map.exists (fun k _ -> k.StartsWith ChecksumPrefix) then
            corrupt path "the format says %s, which has no checksums, but the file holds checksums: the format was changed" PreviousFormat

        if checksummed then
            match metadata.TryFind HeaderChecksum with
            | None -> corrupt path "the header has no checksum (%s)" HeaderChecksum
            | Some expected ->
                let actual = headerDigest (Map.toSeq metadata) (entries |> Seq.map (fun (n, s, _, _) -> n, s))

                if actual <> expected then
                    corrupt path "the header's checksum does not match: its metadata or a tensor's name or shape was changed"

        checksummed

    /// One tensor's values, checked against its checksum (when the format has them) and for finiteness.
    let private readTensor (path: string) (bytes: byte[]) (dataStart: int64) checksummed (metadata: Map<string, string>) entry =
        let name, shape, start, finish = entry
        let length = int (finish - start)
        let offset = int (dataStart + start)

        if checksummed then
            match metadata.TryFind(ChecksumPrefix + name) with
            | None -> corrupt path "tensor '%s' has no checksum" name
            | Some expected ->
                if hex (SHA256.HashData(ReadOnlySpan<byte>(bytes, offset, length))) <> expected then
                    corrupt path "tensor '%s' does not match its checksum: its data was changed" name

        let values = Array.zeroCreate<float32>(length / 4)
        Buffer.BlockCopy(bytes, offset, values, 0, length)

        match Finite.firstNonFinite values with
        | Some i -> corrupt path "tensor '%s' element %d is %g (checkpoints hold finite values only)" name i values.[i]
        | None -> ()

        name, { Name = name; Shape = shape; Values = values }

    /// Reads a checkpoint and checks everything the file itself can show: its layout (header length, JSON, every
    /// entry's dtype, shape and byte range; ranges in order, contiguous, non-overlapping and covering the data
    /// exactly; shapes of non-negative dimensions whose products fit), the header's and every tensor's checksum, and
    /// that every value is finite. Any failure is a CheckpointException naming the file and the tensor or key.
    let load (path: string) : Map<string, NamedArray> * Map<string, string> =
        let bytes = readBytes path
        let header, dataStart = readHeader path bytes
        let dataLength = int64 bytes.Length - dataStart
        let metadata = readMetadata path header

        let entries =
            [
                for kv in header do
                    if kv.Key <> "__metadata__" then
                        yield readEntry path dataLength kv.Key kv.Value
            ]
            |> List.sortBy (fun (_, _, start, finish) -> start, finish)

        checkCoverage path dataLength entries
        let checksummed = checkHeaderChecksum path metadata entries
        let arrays = entries |> List.map (readTensor path bytes dataStart checksummed metadata) |> Map.ofList

        if checksummed then
            for k in metadata.Keys do
                if
                    k.StartsWith ChecksumPrefix
                    && k <> HeaderChecksum
                    && not (arrays.ContainsKey(k.Substring ChecksumPrefix.Length))
                then
                    corrupt path "metadata '%s' is the checksum of a tensor the file does not hold" k

        arrays, metadata |> Map.filter (fun k _ -> not (k.StartsWith ChecksumPrefix))
