namespace Maac.Persistence

open Maac
open Maac.Algorithms

open System
open System.Text.Json
open System.Text.Json.Nodes
open Microsoft.FSharp.Reflection

/// Settings files (a run's config.json, `train --config FILE`): JSON objects whose keys are Settings' fields. A key
/// left out takes the task's documented default (Settings.forTask); an unknown key is refused with the nearest known
/// name; a value of the wrong type or out of range is refused naming the key and the file.
module SettingsFile =
    /// Every setting's name, in the record's order.
    let names = FSharpType.GetRecordFields typeof<Settings> |> Array.map (fun p -> p.Name)

    let private options = JsonSerializerOptions(WriteIndented = true)

    /// Levenshtein distance, case-insensitive.
    let private distance (a: string) (b: string) =
        let a, b = a.ToLowerInvariant(), b.ToLowerInvariant()

        let d =
            Array2D.init (a.Length + 1) (b.Length + 1) (fun i j ->
                if i = 0 then j
                elif j = 0 then i
                else 0)

        for i in 1 .. a.Length do
            for j in 1 .. b.Length do
                let cost = if a.[i - 1] = b.[j - 1] then 0 else 1
                d.[i, j] <- min (min (d.[i - 1, j] + 1) (d.[i, j - 1] + 1)) (d.[i - 1, j - 1] + cost)

        d.[a.Length, b.Length]

    /// The known setting nearest to a name.
    let nearest (name: string) = names |> Array.minBy (distance name)

    /// The settings as JSON (what config.json holds).
    let toJson (s: Settings) = JsonSerializer.Serialize(s, options)

    /// Settings from a file's text: `env` and `algorithm` (the command line's flags) win over the file's Env and
    /// Algorithm; the keys present replace the defaults of that task and algorithm. `source` names the file in
    /// errors (ArgumentException).
    let parse (source: string) (text: string) (env: string option) (algorithm: string option) =
        let fail fmt = Printf.kprintf (fun m -> raise (ArgumentException(sprintf "%s: %s" source m))) fmt

        let o =
            match JsonText.parseObject text with
            | Ok o -> o
            | Error why -> fail "%s; a settings file holds one JSON object" why

        for kv in o do
            if not (Array.contains kv.Key names) then
                fail "unknown setting '%s'; did you mean '%s'?" kv.Key (nearest kv.Key)

        let text (key: string) =
            match o.[key] with
            | null -> None
            | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> Some(v.GetValue<string>())
            | _ -> fail "setting '%s' must be a string" key

        let env =
            match env with
            | Some e -> e
            | None ->
                (match text "Env" with
                 | Some e -> e
                 | None -> fail "no Env is set (give it in the file or with --env)")

        let algorithm =
            match algorithm with
            | Some a -> a
            | None -> defaultArg (text "Algorithm") "maac"

        let merged = JsonSerializer.SerializeToNode(Settings.forTask env algorithm).AsObject()

        for kv in o do
            merged.[kv.Key] <-
                match kv.Value with
                | null -> null
                | v -> v.DeepClone()

        merged.["Env"] <- JsonValue.Create env
        merged.["Algorithm"] <- JsonValue.Create algorithm

        let s =
            try
                merged.Deserialize<Settings>()
            with :? JsonException as e ->
                fail
                    "setting '%s' has a value of the wrong type (%s)"
                    (e.Path |> Option.ofObj |> Option.map (fun p -> p.TrimStart('$', '.')) |> Option.defaultValue "?")
                    e.Message

        for name in names do
            match merged.[name] with
            | null -> fail "setting '%s' is null" name
            | _ -> ()

        match Settings.problems s with
        | [] -> s
        | problems -> fail "invalid settings:\n- %s" (String.Join("\n- ", problems))

    /// Each setting's name with its value as JSON text, in the record's order.
    let values (s: Settings) =
        let o = JsonSerializer.SerializeToNode(s).AsObject()
        names |> Array.map (fun name -> name, o.[name].ToJsonString())

    /// The settings a run may change when it is continued: the budget, and the safeguard that changes nothing computed.
    let private switchable = set [ "Steps"; "CriticValueCheck" ]

    /// What makes runs one configuration: every setting but the seed, the budget and the safeguard.
    let configuration (s: Settings) = values s |> Array.filter (fun (name, _) -> name <> "Seed" && not (switchable.Contains name))

    /// A short label for each configuration, in order: "task algorithm, N/step", then, where several configurations
    /// share the task, algorithm and update ratio, the settings in which they differ ("ActorHorizon=0").
    let labels (configurations: Settings list) =
        let family (s: Settings) = s.Env, s.Algorithm, s.UpdatesPerStep

        let varying =
            configurations
            |> List.groupBy family
            |> List.map (fun (key, members) ->
                let differing =
                    members
                    |> List.collect (configuration >> List.ofArray)
                    |> List.groupBy fst
                    |> List.filter (fun (_, vs) -> (vs |> List.map snd |> List.distinct).Length > 1)
                    |> List.map fst
                    |> set

                key, differing)
            |> Map.ofList

        configurations
        |> List.map (fun s ->
            let extra =
                configuration s
                |> Array.filter (fun (name, _) -> varying.[family s].Contains name)
                |> Array.map (fun (name, value) -> sprintf "%s=%s" name (value.Trim '"'))

            let head = sprintf "%s %s, %d/step" s.Env s.Algorithm s.UpdatesPerStep

            if extra.Length = 0 then
                head
            else
                head + ", " + String.Join(", ", extra))

    /// Where the settings of two runs differ, as "Name: a → b", the budget and the safeguard left out (a continued
    /// run may raise the one and switch the other).
    let differences (before: Settings) (after: Settings) =
        let a, b =
            JsonSerializer.SerializeToNode(before).AsObject(), JsonSerializer.SerializeToNode(after).AsObject()

        [
            for name in names do
                if not (switchable.Contains name) && not (JsonNode.DeepEquals(a.[name], b.[name])) then
                    yield sprintf "%s: %s → %s" name (a.[name].ToJsonString()) (b.[name].ToJsonString())
        ]
