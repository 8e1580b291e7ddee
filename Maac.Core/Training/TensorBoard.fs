namespace Maac.Training

open Maac.Algorithms
open Maac.Persistence

open System
open System.IO
open System.Buffers.Binary
open System.Numerics

/// TensorBoard's event-file format: TFRecord framing (length, masked CRC32C of the length, the bytes, their masked
/// CRC32C) around `Event` messages (tensorflow/core/util/event.proto: wall_time = 1 double, step = 2 int64,
/// file_version = 3 string, summary = 5 Summary; Summary.value = 1 repeated Value; Value.tag = 1 string,
/// Value.simple_value = 2 float).
module TensorBoardFormat =
    /// CRC-32C (Castagnoli) of bytes: the initial value 0xFFFFFFFF, the hardware-backed update step, the final
    /// inversion. Its published check value: "123456789" → 0xE3069283.
    let crc32c (bytes: ReadOnlySpan<byte>) =
        let mutable crc = 0xFFFFFFFFu

        for i in 0 .. bytes.Length - 1 do
            crc <- BitOperations.Crc32C(crc, bytes.[i])

        ~~~crc

    /// The masked CRC TFRecord stores: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
    let masked (crc: uint32) = ((crc >>> 15) ||| (crc <<< 17)) + 0xa282ead8u

    /// One TFRecord: the length (uint64, little-endian), its masked CRC, the data, the data's masked CRC.
    let record (data: byte[]) =
        let out = Array.zeroCreate<byte>(data.Length + 16)
        BinaryPrimitives.WriteUInt64LittleEndian(Span(out, 0, 8), uint64 data.Length)
        BinaryPrimitives.WriteUInt32LittleEndian(Span(out, 8, 4), masked (crc32c (ReadOnlySpan(out, 0, 8))))
        data.CopyTo(out, 12)
        BinaryPrimitives.WriteUInt32LittleEndian(Span(out, data.Length + 12, 4), masked (crc32c (ReadOnlySpan data)))
        out

    /// The Event that opens every event file.
    let fileVersionEvent (wallTime: float) =
        Protobuf.encode [ Protobuf.double 1 wallTime; Protobuf.int 2 0L; Protobuf.string 3 "brain.Event:2" ]

    /// An Event holding one scalar summary value per (tag, value).
    let scalarsEvent (wallTime: float) (step: int64) (values: (string * float32) list) =
        Protobuf.encode
            [
                Protobuf.double 1 wallTime
                Protobuf.int 2 step
                Protobuf.message 5 [ for tag, v in values -> Protobuf.message 1 [ Protobuf.string 1 tag; Protobuf.float32 2 v ] ]
            ]

/// A TensorBoard log of one training run: an event file `events.out.tfevents.<seconds>.<host>` in its folder, with the
/// tags Stable-Baselines3 uses. At each evaluation: `eval/mean_reward`, `eval/std_reward`, `train/critic_loss`,
/// `train/actor_loss`, `train/ent_coef` (α) once a gradient step was made, and `time/fps`; at each finished training
/// episode `rollout/ep_rew_mean` and `rollout/ep_len_mean` (over the last 100 episodes, as SB3); at each model fit
/// `train/model_holdout_mse`. A new log (a resumed run, another call) opens a new file, as TensorBoard expects.
type TensorBoardLog(folder: string) =
    let stream =
        Directory.CreateDirectory folder |> ignore
        let seconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds()

        let name (n: int) =
            sprintf "events.out.tfevents.%d.%s%s" seconds Environment.MachineName (if n = 0 then "" else sprintf ".%d" n)
        // Two logs opened in the same second get distinct files.
        let path =
            Seq.initInfinite name |> Seq.map (fun f -> Path.Combine(folder, f)) |> Seq.find (File.Exists >> not)

        new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read)

    let now () = float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0

    let write (event: byte[]) =
        let r = TensorBoardFormat.record event
        stream.Write(r, 0, r.Length)
        stream.Flush()

    // The last 100 training episodes (return, length), newest first.
    let mutable episodes: (float * int) list = []

    do write (TensorBoardFormat.fileVersionEvent (now ()))

    /// The event file's path.
    member _.Path = stream.Name

    /// Writes scalars (tag, value) at a step; non-finite values are left out.
    member _.Scalars(step: int, values: (string * float) list) =
        match values |> List.filter (snd >> Double.IsFinite) with
        | [] -> ()
        | finite -> write (TensorBoardFormat.scalarsEvent (now ()) (int64 step) (finite |> List.map (fun (t, v) -> t, float32 v)))

    /// Writes what a training event says (see the type's summary for the tags).
    member this.Publish(e: TrainingEvent) =
        match e with
        | Evaluated row ->
            this.Scalars(
                row.Step,
                [
                    "eval/mean_reward", row.EvalReturnMean
                    "eval/std_reward", row.EvalReturnStd
                    "train/critic_loss", float row.CriticLoss
                    "train/actor_loss", float row.ActorLoss
                    "train/ent_coef", (if Single.IsNaN row.CriticLoss then nan else float row.Alpha)
                    "time/fps", float row.Step / max 1e-9 row.WallSeconds
                ]
            )
        | EpisodeEnded(step, ret, length) ->
            episodes <- List.truncate 100 ((ret, length) :: episodes)

            this.Scalars(
                step,
                [
                    "rollout/ep_rew_mean", List.averageBy fst episodes
                    "rollout/ep_len_mean", List.averageBy (snd >> float) episodes
                ]
            )
        | ModelFitted(step, mse) -> this.Scalars(step, [ "train/model_holdout_mse", float mse ])
        | Diverged _
        | Stepped _ -> ()

    interface IDisposable with
        member _.Dispose() = stream.Dispose()
