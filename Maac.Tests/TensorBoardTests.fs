/// TensorBoard event files: CRC-32C against its published check value, and the files of a short run read back by an
/// independent reader (the record framing and every CRC checked here; the Event and Summary messages decoded with
/// Google.Protobuf), their scalars equal to the run's metrics.
module Maac.Tests.TensorBoardTests

open System
open System.IO
open System.Text
open Expecto
open Google.Protobuf
open Maac.Algorithms
open Maac.Persistence
open Maac.Training
open Maac.Envs
open Maac.Tests.Support

/// One decoded Event.
type private Event = { WallTime: float; Step: int64; FileVersion: string option; Scalars: (string * float32) list }

/// The fields of a message: (field number, wire type, the stream positioned at the value) to a reader of the value.
let private fields (bytes: byte[]) (read: int -> CodedInputStream -> unit) =
    let input = new CodedInputStream(bytes)
    let mutable tag = input.ReadTag()

    while tag <> 0u do
        read (WireFormat.GetTagFieldNumber tag) input
        tag <- input.ReadTag()

let private decodeValue (bytes: byte[]) =
    let mutable tag, value = "", nanf

    fields bytes (fun field input ->
        match field with
        | 1 -> tag <- input.ReadString()
        | 2 -> value <- input.ReadFloat()
        | f -> failtestf "unexpected Summary.Value field %d" f)

    tag, value

let private decodeEvent (bytes: byte[]) =
    let mutable e = { WallTime = nan; Step = 0L; FileVersion = None; Scalars = [] }

    fields bytes (fun field input ->
        match field with
        | 1 -> e <- { e with WallTime = input.ReadDouble() }
        | 2 -> e <- { e with Step = input.ReadInt64() }
        | 3 -> e <- { e with FileVersion = Some(input.ReadString()) }
        | 5 ->
            let summary = input.ReadBytes().ToByteArray()

            fields summary (fun f i ->
                if f = 1 then
                    e <- { e with Scalars = e.Scalars @ [ decodeValue (i.ReadBytes().ToByteArray()) ] }
                else
                    failtestf "unexpected Summary field %d" f)
        | f -> failtestf "unexpected Event field %d" f)

    e

/// Every record of an event file, each CRC checked (a failure names the record and which CRC).
let private readEvents (path: string) =
    let bytes = File.ReadAllBytes path
    let u32 (at: int) = BitConverter.ToUInt32(bytes, at)
    let maskedCrc (at: int) (length: int) = TensorBoardFormat.masked (TensorBoardFormat.crc32c (ReadOnlySpan(bytes, at, length)))

    let rec records (at: int) (index: int) acc =
        if at = bytes.Length then
            List.rev acc
        else
            let length = int (BitConverter.ToUInt64(bytes, at))
            Expect.equal (u32 (at + 8)) (maskedCrc at 8) (sprintf "record %d: the length's CRC" index)
            Expect.equal (u32 (at + 12 + length)) (maskedCrc (at + 12) length) (sprintf "record %d: the data's CRC" index)
            records (at + 16 + length) (index + 1) (decodeEvent bytes.[at + 12 .. at + 11 + length] :: acc)

    records 0 0 []

let tests =
    testList
        "TensorBoard"
        [
            test "CRC-32C gives the published check value; the mask is TFRecord's" {
                Expect.equal (TensorBoardFormat.crc32c (ReadOnlySpan(Encoding.ASCII.GetBytes "123456789"))) 0xE3069283u "check value"
                Expect.equal (TensorBoardFormat.crc32c ReadOnlySpan.Empty) 0u "empty input"
                // ((crc >> 15) | (crc << 17)) + 0xa282ead8, by hand for 0xE3069283.
                Expect.equal (TensorBoardFormat.masked 0xE3069283u) (((0xE3069283u >>> 15) ||| (0xE3069283u <<< 17)) + 0xa282ead8u) "mask"
            }

            test "a short MBPO run's event file: file version first, scalars equal to metrics.csv, every CRC valid" {
                use folder = new TempFolder("maac-tensorboard")
                let dir = folder.Path

                try
                    let s = { RlTests.tiny "Pendulum" "mbpo" with Steps = 400 }
                    use trainer = new Trainer(s, Algorithms.mbpo, Tasks.find "Pendulum")

                    let path =
                        use log = new TensorBoardLog(dir)
                        trainer.Run(400, log.Publish, Threading.CancellationToken.None)
                        log.Path

                    Expect.stringStarts (Path.GetFileName path) "events.out.tfevents." "TensorBoard's file name"
                    let events = readEvents path
                    Expect.equal events.Head.FileVersion (Some "brain.Event:2") "the first event is the file version"

                    let scalars (tag: string) =
                        [
                            for e in events do
                                for t, v in e.Scalars do
                                    if t = tag then
                                        yield e.Step, v
                        ]

                    let rows = trainer.Metrics

                    Expect.equal
                        (scalars "eval/mean_reward")
                        [ for r in rows -> int64 r.Step, float32 r.EvalReturnMean ]
                        "evaluation returns"

                    Expect.equal (scalars "eval/std_reward") [ for r in rows -> int64 r.Step, float32 r.EvalReturnStd ] "their spread"
                    // Losses exist once learning started (100 random steps): both evaluations have them.
                    Expect.equal (scalars "train/critic_loss") [ for r in rows -> int64 r.Step, r.CriticLoss ] "critic losses"
                    Expect.equal (scalars "train/ent_coef") [ for r in rows -> int64 r.Step, r.Alpha ] "α"
                    Expect.equal (scalars "rollout/ep_len_mean") [ 200L, 200.0f; 400L, 200.0f ] "Pendulum's episodes of 200 steps"
                    Expect.equal (scalars "train/model_holdout_mse" |> List.map fst) [ 100L; 200L; 300L; 400L ] "a point per model fit"
                    Expect.isTrue (events |> List.forall (fun e -> e.WallTime > 1.7e9)) "wall times in Unix seconds"

                    // A second log in the same folder (a resumed run) adds a file beside the first.
                    (new TensorBoardLog(dir) :> IDisposable).Dispose()
                    Expect.equal (Directory.GetFiles(dir, "events.out.tfevents.*").Length) 2 "one file per log"

                    // The reader checks what it claims to: a flipped data byte fails its CRC.
                    let bytes = File.ReadAllBytes path
                    bytes.[bytes.Length - 6] <- bytes.[bytes.Length - 6] ^^^ 1uy
                    File.WriteAllBytes(path, bytes)

                    Expect.throwsT<Expecto.AssertException> (fun () -> readEvents path |> ignore) "a corrupted record is caught"
                finally
                    Directory.Delete(dir, true)
            }
        ]
