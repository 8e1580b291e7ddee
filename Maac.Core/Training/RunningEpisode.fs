namespace Maac.Training

open Maac.Algorithms
open Maac.Persistence

open System
open System.Globalization
open System.Text.Json
open System.Text.Json.Nodes
open Maac.Envs

/// The training episode in progress: the observation to act on, and its return and length so far.
type RunningEpisode = { Observation: float32[]; Return: float; Length: int }

/// A running episode and its environment's state as the text a checkpoint holds (metadata "runningEpisode"), so that a
/// run stopped between evaluations resumes bit for bit: JSON numbers written as the shortest text that reads back to
/// the same double.
module RunningEpisode =
    /// The JSON text of an episode and its environment's state (every number finite: the caller checks).
    let toJson (episode: RunningEpisode) (environment: EnvState) =
        let numbers (values: float[]) = JsonArray(values |> Array.map (fun v -> JsonValue.Create v :> JsonNode))
        let env = JsonObject()

        for name, values in environment do
            env.[name] <- numbers values

        let o = JsonObject()
        o.["observation"] <- numbers (Array.map float episode.Observation)
        o.["return"] <- JsonValue.Create episode.Return
        o.["length"] <- JsonValue.Create episode.Length
        o.["environment"] <- env
        o.ToJsonString()

    /// Reads what toJson wrote: the episode (its observation of `obsDim` finite float32 values, a finite return, a
    /// length of at least 1) and the environment's state as saved (checked by the environment when restored). Anything
    /// else raises `refuse` with what is wrong.
    let ofJson (refuse: string -> exn) (obsDim: int) (text: string) =
        let fail fmt = Printf.kprintf (fun m -> raise (refuse m)) fmt

        let root =
            match JsonText.parseObject text with
            | Ok o -> o
            | Error why -> fail "is %s" why

        let field (name: string) =
            match root.[name] with
            | null -> fail "lacks '%s'" name
            | node -> node

        let number (where: string) (node: JsonNode) =
            match node with
            | :? JsonValue as v ->
                match v.TryGetValue<double>() with
                | true, x when Double.IsFinite x -> x
                | _ -> fail "%s is %s, not a finite number" where (node.ToJsonString())
            | null -> fail "%s is null, not a number" where
            | _ -> fail "%s is %s, not a number" where (node.ToJsonString())

        let numbers (where: string) (node: JsonNode) =
            match node with
            | :? JsonArray as a -> a |> Seq.mapi (fun i x -> number (sprintf "%s element %d" where i) x) |> Seq.toArray
            | _ -> fail "%s is not an array of numbers" where

        let observation = numbers "'observation'" (field "observation")

        if observation.Length <> obsDim then
            fail "'observation' has %d values where the task's observations have %d" observation.Length obsDim

        match observation |> Array.tryFindIndex (fun v -> float (float32 v) <> v) with
        | Some i -> fail "'observation' element %d is %s, not a float32" i (observation.[i].ToString("R", CultureInfo.InvariantCulture))
        | None -> ()

        let length = number "'length'" (field "length")

        if length <> Math.Floor length || length < 1.0 || length > float Int32.MaxValue then
            fail "'length' is %g, not a whole number of steps from 1" length

        let environment: EnvState =
            match field "environment" with
            | :? JsonObject as env ->
                [
                    for KeyValue(name, values) in env -> name, numbers (sprintf "'environment' part '%s'" name) values
                ]
            | _ -> fail "'environment' is not an object of named parts"

        {
            Observation = Array.map float32 observation
            Return = number "'return'" (field "return")
            Length = int length
        },
        environment
