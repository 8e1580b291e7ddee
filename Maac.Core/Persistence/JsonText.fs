namespace Maac.Persistence

open Maac.Algorithms

open System.Text.Json
open System.Text.Json.Nodes

/// Reading the JSON texts that settings files and checkpoints hold.
module JsonText =
    /// The JSON object a text holds, or why there is none ("not valid JSON (…)" or "not a JSON object").
    let parseObject (text: string) =
        try
            match JsonNode.Parse text with
            | :? JsonObject as o -> Ok o
            | _ -> Error "not a JSON object"
        with :? JsonException as e ->
            Error(sprintf "not valid JSON (%s)" e.Message)
