namespace Maac.Persistence

open Maac.Algorithms

open System
open System.IO

/// The few pieces of the protocol-buffers wire format that ONNX models and TensorBoard event files need: varint,
/// fixed-width and length-delimited fields.
module internal Protobuf =
    /// An encoded message being built.
    type Message = MemoryStream

    let private varint (m: Message) (value: uint64) =
        let mutable v = value

        while v >= 0x80UL do
            m.WriteByte(byte (v &&& 0x7FUL ||| 0x80UL))
            v <- v >>> 7

        m.WriteByte(byte v)

    let private key (m: Message) (field: int) (wire: int) = varint m (uint64 ((field <<< 3) ||| wire))

    /// A varint field (int64 values, written two's-complement as protobuf does).
    let int (field: int) (value: int64) (m: Message) =
        key m field 0
        varint m (uint64 value)

    /// A double field (wire type 1: 8 bytes, little-endian).
    let double (field: int) (value: float) (m: Message) =
        key m field 1
        let bytes = Array.zeroCreate<byte> 8
        Buffers.Binary.BinaryPrimitives.WriteDoubleLittleEndian(Span bytes, value)
        m.Write(bytes, 0, 8)

    /// A float field (wire type 5: 4 bytes, little-endian).
    let float32 (field: int) (value: float32) (m: Message) =
        key m field 5
        let bytes = Array.zeroCreate<byte> 4
        Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(Span bytes, value)
        m.Write(bytes, 0, 4)

    /// A length-delimited field holding bytes.
    let bytes (field: int) (value: byte[]) (m: Message) =
        key m field 2
        varint m (uint64 value.Length)
        m.Write(value, 0, value.Length)

    /// A string field (UTF-8).
    let string (field: int) (value: string) (m: Message) = bytes field (Text.Encoding.UTF8.GetBytes value) m

    /// A nested message field, built by the given writers.
    let message (field: int) (writers: (Message -> unit) list) (m: Message) =
        use inner = new MemoryStream()

        for w in writers do
            w inner

        bytes field (inner.ToArray()) m

    /// The bytes of a top-level message.
    let encode (writers: (Message -> unit) list) =
        use m = new MemoryStream()

        for w in writers do
            w m

        m.ToArray()
