// Rates of single matrix products on the CPU backend at one thread: a model layer's three products (forward, input
// gradient, weight gradient; 8 members, 256 rows, 200 units) and square-ish products that show the core's peak.
// Best of 15 rounds per product, the time per call in ms and GFLOP/s. Usage, after building the CLI:
//   dotnet build Maac.Cli -c Release && dotnet fsi --optimize+ scripts/product-rates.fsx
#r "../Maac.Cli/bin/Release/net10.0/System.Numerics.Tensors.dll"
#r "../Maac.Cli/bin/Release/net10.0/Maac.Core.dll"

open System.Diagnostics
open Maac.Tensors

Maac.Tensors.Cpu.CpuSettings.Threads <- 1
let keys = RandomKey.split 6 (RandomKey.ofSeed 1L)

/// Best seconds per call over 15 rounds of `calls` calls.
let bestSeconds (calls: int) (product: unit -> Tensor) =
    product () |> ignore

    [
        for _ in 1..15 ->
            let clock = Stopwatch.StartNew()

            for _ in 1..calls do
                product () |> ignore

            clock.Elapsed.TotalSeconds / float calls
    ]
    |> List.min

let report (name: string) (flop: float) (seconds: float) =
    printfn "%-46s %8.3f ms  %6.0f GFLOP/s" name (seconds * 1e3) (flop / seconds / 1e9)

let members, rows, units = 8, 256, 200
let x = Tensor.randn keys.[0] [| members; rows; units |]
let w = Tensor.randn keys.[1] [| members; units; units |]
let dy = Tensor.randn keys.[2] [| members; rows; units |]
let layerFlop = 2.0 * float members * float rows * float units * float units

for name, transA, transB, a, b in
    [
        "layer forward X·W (8×256×200 · 8×200×200)", false, false, x, w
        "layer input gradient dY·Wᵀ", false, true, dy, w
        "layer weight gradient Xᵀ·dY", true, false, x, dy
    ] do
    bestSeconds 40 (fun () -> Tensor.matmulWith transA transB a b None) |> report name layerFlop

for m, k, n in [ 1536, 256, 256; 1536, 512, 512; 2048, 1024, 1024 ] do
    let a = Tensor.randn keys.[3] [| m; k |]
    let b = Tensor.randn keys.[4] [| k; n |]
    let flop = 2.0 * float m * float k * float n
    bestSeconds 10 (fun () -> Tensor.matmul a b) |> report (sprintf "%d×%d · %d×%d" m k k n) flop
