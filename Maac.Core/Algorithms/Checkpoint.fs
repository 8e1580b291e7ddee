namespace Maac.Algorithms

open Maac

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes

/// A named float32 array with its shape.
type NamedArray = { Name: string; Shape: int[]; Values: float32[] }

/// Checkpoints in the safetensors layout (an 8-byte little-endian header length, a JSON header naming
/// each tensor's dtype, shape and byte range, then the raw little-endian data), so Python's
/// `safetensors` can read them. Non-tensor state goes in the header's "__metadata__" strings.
/// Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint.
module Checkpoint =
    /// Writes tensors and metadata to path atomically.
    let save (path: string) (arrays: NamedArray list) (metadata: Map<string, string>) =
        let header = JsonObject()
        let meta = JsonObject()
        for KeyValue (k, v) in metadata do meta.[k] <- JsonValue.Create v
        header.["__metadata__"] <- meta
        let mutable offset = 0L
        for a in arrays do
            if Array.fold (*) 1 a.Shape <> a.Values.Length then
                invalidArg "arrays" (sprintf "checkpoint tensor '%s': shape %s does not hold %d values" a.Name (Maac.Tensors.Shape.show a.Shape) a.Values.Length)
            let entry = JsonObject()
            entry.["dtype"] <- JsonValue.Create "F32"
            entry.["shape"] <- JsonArray(a.Shape |> Array.map (fun d -> JsonValue.Create d :> JsonNode))
            let bytes = 4L * int64 a.Values.Length
            entry.["data_offsets"] <- JsonArray(JsonValue.Create offset :> JsonNode, JsonValue.Create(offset + bytes) :> JsonNode)
            header.[a.Name] <- entry
            offset <- offset + bytes
        let json = Text.Encoding.UTF8.GetBytes(header.ToJsonString())
        let padded = Array.append json (Array.create ((8 - json.Length % 8) % 8) (byte ' '))
        let dir = Path.GetDirectoryName(Path.GetFullPath path)
        Directory.CreateDirectory dir |> ignore
        let temp = Path.Combine(dir, sprintf ".%s.%d.tmp" (Path.GetFileName path) Environment.ProcessId)
        do
            use f = new FileStream(temp, FileMode.Create, FileAccess.Write)
            use w = new BinaryWriter(f)
            w.Write(uint64 padded.Length)
            w.Write padded
            for a in arrays do
                let bytes = Array.zeroCreate<byte> (4 * a.Values.Length)
                Buffer.BlockCopy(a.Values, 0, bytes, 0, bytes.Length)
                w.Write bytes
            w.Flush()
            f.Flush(true)
        File.Move(temp, path, true)

    /// Reads a checkpoint; a truncated or malformed file is refused with a CheckpointException naming it.
    let load (path: string) : Map<string, NamedArray> * Map<string, string> =
        let fail fmt = Printf.kprintf (fun m -> raise (CheckpointException(sprintf "checkpoint %s is corrupt or not a Maac checkpoint: %s" path m))) fmt
        if not (File.Exists path) then raise (CheckpointException(sprintf "checkpoint not found: %s" path))
        let bytes = File.ReadAllBytes path
        if bytes.Length < 8 then fail "the file has %d bytes" bytes.Length
        let headerLength = BitConverter.ToUInt64(bytes, 0)
        if headerLength > uint64 (bytes.Length - 8) then fail "the header claims %d bytes but the file has %d" headerLength bytes.Length
        let header =
            try JsonNode.Parse(ReadOnlySpan<byte>(bytes, 8, int headerLength)).AsObject()
            with e -> fail "the header is not JSON (%s)" e.Message
        let dataStart = 8 + int headerLength
        let mutable metadata = Map.empty
        let mutable arrays = Map.empty
        for KeyValue (name, node) in header do
            if name = "__metadata__" then
                for KeyValue (k, v) in node.AsObject() do metadata <- metadata.Add(k, v.GetValue<string>())
            else
                let o = node.AsObject()
                if o.["dtype"].GetValue<string>() <> "F32" then fail "tensor '%s' has dtype %s, expected F32" name (o.["dtype"].GetValue<string>())
                let shape = o.["shape"].AsArray() |> Seq.map (fun d -> d.GetValue<int>()) |> Seq.toArray
                let offsets = o.["data_offsets"].AsArray() |> Seq.map (fun d -> d.GetValue<int64>()) |> Seq.toArray
                let count = Array.fold (*) 1 shape
                if offsets.Length <> 2 || offsets.[1] - offsets.[0] <> 4L * int64 count || int64 dataStart + offsets.[1] > int64 bytes.Length then
                    fail "tensor '%s' (shape %s) has data range %s outside the file" name (Maac.Tensors.Shape.show shape) ("[" + String.Join(", ", offsets) + "]")
                let values = Array.zeroCreate<float32> count
                Buffer.BlockCopy(bytes, dataStart + int offsets.[0], values, 0, 4 * count)
                arrays <- arrays.Add(name, { Name = name; Shape = shape; Values = values })
        arrays, metadata
