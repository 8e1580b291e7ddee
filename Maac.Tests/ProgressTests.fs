/// What a user watches during training: the remaining-time estimate through the random phase, the first model fit
/// and the learning phase, and the progress line's placeholders for values that do not exist yet.
module Maac.Tests.ProgressTests

open System
open Expecto
open Maac.Algorithms
open Maac.Persistence
open Maac.Training

/// A synthetic run of 5,000 steps: 500 random steps at 1 ms, the first model fit (4 s) at step 500, then learning
/// steps at 50 ms with a 1 s fit every 250 steps. The clock after each step.
let private clock =
    let cost step =
        if step <= 500 then
            0.001 + (if step = 500 then 4.0 else 0.0)
        else
            0.05 + (if (step - 500) % 250 = 0 then 1.0 else 0.0)

    Array.scan (fun t step -> t + cost step) 0.0 [| 1..5000 |]

let tests =
    testList
        "progress"
        [
            test "the remaining time: estimating through the random phase and the first fit, then within 25% from the learning rate" {
                let estimates =
                    [| 1..5000 |]
                    |> Array.scan
                        (fun (r, _) step ->
                            let r = RemainingTime.observe step clock.[step] r in r, RemainingTime.estimate step clock.[step] r)
                        (RemainingTime.create 500 0 5000, None)
                    |> Array.map snd

                for step in 1..500 do
                    Expect.isNone estimates.[step] (sprintf "no estimate in the random phase (step %d)" step)

                Expect.isNone estimates.[505] "none a few learning steps in: no measured rate yet"
                Expect.isSome estimates.[560] "an estimate once 1% of the learning phase has run"

                for step in [ 1000; 2750; 4000 ] do
                    let actual = clock.[5000] - clock.[step]
                    let estimated = estimates.[step].Value.TotalSeconds

                    Expect.isLessThan
                        (abs (estimated - actual) / actual)
                        0.25
                        (sprintf "step %d: estimated %.0f s, actually %.0f s left" step estimated actual)

                // The random phase's rate (1,000 steps/s) would have promised 4.5 s for the whole learning phase.
                Expect.isGreaterThan estimates.[2750].Value.TotalSeconds 100.0 "not the random phase's rate"
            }

            test "a call resumed inside the learning phase estimates from its own first steps" {
                let r0 = RemainingTime.create 500 3000 5000 |> RemainingTime.observe 3000 0.0

                let r =
                    [| 3001..3100 |]
                    |> Array.fold (fun r step -> RemainingTime.observe step (float (step - 3000) * 0.05) r) r0

                let estimate = (RemainingTime.estimate 3100 5.0 r).Value.TotalSeconds
                Expect.floatClose { absolute = 1e-6; relative = 1e-9 } estimate (1900.0 * 0.05) "1,900 steps at 50 ms"
            }

            test "the suite's skip summary groups skips by what they need, with the remedy" {
                let mujoco =
                    "MuJoCo 2.2.2 was not found (tried libmujoco.so.2.2.2). Install the Debian package libmujoco2.2.2: apt-get install libmujoco2.2.2"

                let headers = "the headers (Debian package libmujoco-dev) are not installed"

                let slurm =
                    "Slurm is not running here (no sbatch on PATH or sinfo fails); .ci/slurm-up starts a single-node cluster"

                Expect.equal
                    (Support.skipSummary [ mujoco; slurm; headers; mujoco ])
                    (Some "4 skipped: 3 need MuJoCo 2.2.2 (apt-get install libmujoco2.2.2 libmujoco-dev), 1 need Slurm (.ci/slurm-up)")
                    "grouped, largest first"

                Expect.equal (Support.skipSummary [ "something else" ]) (Some "1 skipped: 1 something else") "an unknown reason as it is"
                Expect.isNone (Support.skipSummary []) "nothing when nothing was skipped"
            }
        ]
