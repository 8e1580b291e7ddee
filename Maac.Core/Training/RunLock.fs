namespace Maac.Training

open System
open System.IO

/// A process's claim on a run folder for as long as it trains or writes into it: the file `run.lock` in the folder,
/// held open without sharing. On Linux and macOS .NET takes an advisory lock on it, which the operating system drops
/// when the holder ends however it ends (a killed run leaves no stale claim); on Windows the open handle itself
/// excludes others. A second claim on the same folder, from another process or from another session in this one, is
/// refused with an IOException naming the folder, before anything in it is read or written. The file stays in the
/// folder when released; it holds the last holder's process id, for a person looking at the folder.
[<Sealed>]
type RunLock private (stream: FileStream) =
    /// The name of the lock file inside a run folder.
    static member FileName = "run.lock"

    /// The lock file of a run folder.
    static member PathIn(dir: string) = Path.Combine(dir, RunLock.FileName)

    /// Claims an existing folder; IOException when another holder has it, DirectoryNotFoundException when the folder
    /// does not exist.
    static member Acquire(dir: string) =
        let path = RunLock.PathIn dir

        let stream =
            try
                new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
            with :? IOException as e when not (e :? DirectoryNotFoundException || e :? PathTooLongException) ->
                raise (
                    IOException(
                        sprintf
                            "the run folder %s is in use: another training process or agent holds %s; nothing in the folder was read or changed (let it finish, stop it or dispose the agent, then try again)"
                            dir
                            path,
                        e
                    )
                )

        try
            let text = Text.Encoding.UTF8.GetBytes(sprintf "%d\n" Environment.ProcessId)
            stream.SetLength 0L
            stream.Write(text, 0, text.Length)
            stream.Flush()
            new RunLock(stream)
        with _ ->
            stream.Dispose()
            reraise ()

    interface IDisposable with
        member _.Dispose() = stream.Dispose()
