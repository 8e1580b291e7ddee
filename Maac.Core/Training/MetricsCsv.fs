namespace Maac.Training

open Maac
open Maac.Algorithms
open Maac.Persistence

open System

/// A live view of training, reported after every environment step that a caller asks for.
type ProgressInfo =
    {
        /// Environment steps taken so far, and the run's budget.
        Step: int
        TotalSteps: int
        /// Environment steps per second of wall time since this call of Run began.
        StepsPerSecond: float
        /// Return of the last finished training episode (NaN before the first).
        LastEpisodeReturn: float
        /// Whether a training episode ended (terminated or truncated) at this step; cuts at checkpoints do not count.
        EpisodeEnded: bool
        /// Length of the last finished training episode (0 before the first).
        LastEpisodeLength: int
        /// Training time of the run so far (all calls of Run), in seconds.
        WallSeconds: float
        /// Mean return of the last evaluation (NaN before the first).
        LastEvalReturn: float
        /// Losses and temperature of the last gradient step (meaningful only once HasUpdated).
        LastUpdate: UpdateMetrics
        /// Whether a gradient step has been made (the losses and α of LastUpdate exist).
        HasUpdated: bool
        /// Estimated time to the end of this call of Run, from the recent rate of its learning phase; None before that
        /// phase has a measured rate (RemainingTime).
        Remaining: TimeSpan option
    }

/// One row of metrics.csv: written at every evaluation.
type MetricsRow =
    {
        Step: int
        EvalReturnMean: float
        EvalReturnStd: float
        CriticLoss: float32
        ActorLoss: float32
        Alpha: float32
        ModelHoldoutMse: float32
        WallSeconds: float
    }

/// metrics.csv's text: a header line and one line per MetricsRow (invariant culture, round-trip precision).
module MetricsCsv =
    /// The header line.
    let header =
        "step,eval_return_mean,eval_return_std,critic_loss,actor_loss,alpha,model_holdout_mse,wall_seconds"

    /// One row as a line.
    let line (r: MetricsRow) =
        let inv (x: float) = x.ToString("R", Globalization.CultureInfo.InvariantCulture)

        String.Join(
            ",",
            [
                string r.Step
                inv r.EvalReturnMean
                inv r.EvalReturnStd
                inv (float r.CriticLoss)
                inv (float r.ActorLoss)
                inv (float r.Alpha)
                inv (float r.ModelHoldoutMse)
                inv r.WallSeconds
            ]
        )

    /// The whole text of rows.
    let text (rows: MetricsRow seq) = String.Join("\n", Seq.append [ header ] (Seq.map line rows)) + "\n"

    /// Rows from a text written by `text`; `source` names it in errors (CheckpointException).
    let parse (source: string) (text: string) =
        let lines = text.Split('\n') |> Array.map (fun l -> l.Trim()) |> Array.filter (fun l -> l <> "")

        if lines.Length = 0 || lines.[0] <> header then
            raise (CheckpointException(sprintf "%s does not start with the metrics header" source))

        lines.[1..]
        |> Array.mapi (fun i l ->
            let c = l.Split(',')

            let number (k: int) =
                match Double.TryParse(c.[k], Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
                | true, v -> v
                | _ -> raise (CheckpointException(sprintf "%s: row %d, column %d is '%s', not a number" source (i + 1) (k + 1) c.[k]))

            if c.Length <> 8 then
                raise (CheckpointException(sprintf "%s: row %d has %d columns, expected 8" source (i + 1) c.Length))

            {
                Step = int (number 0)
                EvalReturnMean = number 1
                EvalReturnStd = number 2
                CriticLoss = float32 (number 3)
                ActorLoss = float32 (number 4)
                Alpha = float32 (number 5)
                ModelHoldoutMse = float32 (number 6)
                WallSeconds = number 7
            })
