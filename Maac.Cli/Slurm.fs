/// The Slurm launcher: one sbatch array script per sweep (one array task per run), submitted with sbatch; each task
/// runs the ordinary `train` into its run folder on the shared filesystem, forwards SIGTERM (preemption, the time
/// limit's --signal) to it so that it writes a checkpoint and exits 143, and then requeues itself so that the next
/// start resumes with `train --resume`.
module Maac.Cli.Slurm

open System
open System.Diagnostics
open System.IO
open Maac.Cli.Sweep

/// What a cluster needs to know about the tasks.
type SlurmOptions =
    {
        Partition: string option
        /// sbatch's --time (for example 04:00:00).
        Time: string option
        CpusPerTask: int
        GpusPerTask: int option
        /// Seconds before the time limit at which the task is sent SIGTERM (sbatch --signal=B:TERM@N).
        SignalSeconds: int
        /// Further sbatch arguments, one per entry (for example --account=rl or --mem=8G).
        Extra: string list
    }

let scriptFile (dir: string) = Path.Combine(dir, "sweep.sbatch")

/// A word quoted for bash.
let private quote (s: string) = "'" + s.Replace("'", "'\\''") + "'"

/// The array script of a sweep: the #SBATCH header, then per task: its plan line, the status file, `train` (or
/// `train --resume`), SIGTERM forwarded, the exit code recorded, and a requeue after a signal.
let script (dir: string) (runs: RunSpec list) (options: SweepOptions) (slurm: SlurmOptions) (command: string list) =
    let dir = Path.GetFullPath dir
    let name = "maac-" + Path.GetFileName(dir.TrimEnd(Path.DirectorySeparatorChar))

    let sbatch =
        [
            yield sprintf "--job-name=%s" name
            yield sprintf "--array=0-%d" (runs.Length - 1)
            yield sprintf "--cpus-per-task=%d" slurm.CpusPerTask
            yield sprintf "--output=%s" (Path.Combine(dir, "logs", "%A_%a.out"))
            yield "--open-mode=append"
            yield "--requeue"
            yield sprintf "--signal=B:TERM@%d" slurm.SignalSeconds
            match slurm.Partition with
            | Some p -> yield sprintf "--partition=%s" p
            | None -> ()
            match slurm.Time with
            | Some t -> yield sprintf "--time=%s" t
            | None -> ()
            match slurm.GpusPerTask with
            | Some g -> yield sprintf "--gpus-per-task=%d" g
            | None -> ()
            yield! slurm.Extra
        ]

    let line (args: string list) = String.Join(" ", (command @ args) |> List.map quote)

    String.Join(
        "\n",
        [
            yield "#!/bin/bash"
            yield "# Written by maac experiment --launcher slurm: one array task per run of sweep.tsv."
            for a in sbatch -> "#SBATCH " + a
            yield "set -u"
            yield sprintf "sweep=%s" (quote dir)
            yield "task=$SLURM_ARRAY_TASK_ID"
            yield "status=\"$sweep/status/$task.txt\""
            yield "mkdir -p \"$sweep/status\""
            yield
                "echo \"running job ${SLURM_ARRAY_JOB_ID}_$task on $(hostname) restart ${SLURM_RESTART_COUNT:-0} $(date -u +%FT%TZ)\" > \"$status\""
            yield "# The run: a new train, or train --resume once its folder holds a run (decided when the task starts)."
            yield "folder=$(awk -F'\\t' -v i=\"$task\" '$1 == i { print $6 }' \"$sweep/sweep.tsv\")"
            yield
                "if [ -e \"$sweep/$folder/checkpoint.safetensors\" ] || [ -e \"$sweep/$folder/config.json\" ]; then resume=1; else resume=0; fi"
            yield "case \"$task:$resume\" in"
            for r in runs do
                yield sprintf "  %d:0) set -- %s ;;" r.Index (line (startArguments options r))
                yield sprintf "  %d:1) set -- %s ;;" r.Index (line (resumeArguments options r))
            yield "  *) echo \"no run $task in $sweep/sweep.tsv\" >&2; exit 2 ;;"
            yield "esac"
            yield "\"$@\" &"
            yield "child=$!"
            yield "trap 'kill -TERM $child 2>/dev/null' TERM"
            yield "wait $child; rc=$?"
            yield "# A trapped TERM interrupts wait; wait again for train's own exit code (143 after its checkpoint)."
            yield "while kill -0 $child 2>/dev/null; do wait $child; rc=$?; done"
            yield "echo \"exit $rc $(date -u +%FT%TZ)\" > \"$status\""
            yield "if [ $rc -eq 143 ] || [ $rc -eq 130 ]; then scontrol requeue \"${SLURM_ARRAY_JOB_ID}_$task\" || true; fi"
            yield "exit $rc"
        ]
    )
    + "\n"

/// Runs a Slurm command, returning its standard output; a clear error when it fails or is not installed.
let private slurmCommand (program: string) (args: string list) =
    let psi =
        ProcessStartInfo(program, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)

    for a in args do
        psi.ArgumentList.Add a

    let p =
        try
            Process.Start psi
        with :? ComponentModel.Win32Exception ->
            failwithf
                "%s was not found: the Slurm launcher needs Slurm's client commands on PATH (Debian: apt-get install slurm-client)"
                program

    let out = p.StandardOutput.ReadToEnd()
    let err = p.StandardError.ReadToEnd()
    p.WaitForExit()

    if p.ExitCode <> 0 then
        failwithf "%s %s failed (exit code %d): %s" program (String.Join(" ", args)) p.ExitCode (err.Trim())

    out

/// Writes the array script into the sweep folder, submits it and returns the job id (also written to slurm-job).
let submit (dir: string) (runs: RunSpec list) (options: SweepOptions) (slurm: SlurmOptions) (command: string list) =
    Directory.CreateDirectory(Path.Combine(dir, "logs")) |> ignore
    let file = scriptFile dir
    File.WriteAllText(file, script dir runs options slurm command)
    let id = (slurmCommand "sbatch" [ "--parsable"; file ]).Trim().Split(';').[0]
    File.WriteAllText(slurmJobFile dir, id + "\n")
    id

/// The Slurm state of each array task still known to the scheduler (index → state code: PD, R, CG, ...).
let queueStates (jobId: string) =
    let out =
        try
            slurmCommand "squeue" [ "-h"; "-r"; "-j"; jobId; "-o"; "%i %t" ]
        with _ ->
            ""

    out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    |> Array.choose (fun l ->
        match l.Trim().Split(' ') with
        | [| id; state |] when id.Contains '_' ->
            match Int32.TryParse(id.Substring(id.IndexOf '_' + 1)) with
            | true, i -> Some(i, state)
            | _ -> None
        | _ -> None)
    |> Map.ofArray
