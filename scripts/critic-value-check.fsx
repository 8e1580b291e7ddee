// The critic-value check of each evaluation (Maac.Training.CriticValueCheck) on the checkpoints of run folders: passes,
// or the message a run would stop with. Usage, after building the CLI:
//   dotnet build Maac.Cli -c Release && dotnet fsi scripts/critic-value-check.fsx RUN_DIR...
#r "../Maac.Cli/bin/Release/net10.0/System.Numerics.Tensors.dll"
#r "../Maac.Cli/bin/Release/net10.0/Maac.Core.dll"

open Maac.Training

let runDirs = fsi.CommandLineArgs.[1..]

if runDirs.Length = 0 then
    failwith "usage: critic-value-check.fsx RUN_DIR..."

Maac.Tensors.Cpu.CpuSettings.Threads <- 1

for runDir in runDirs do
    use trainer = RunFolder.loadTrainer runDir
    let key = TrainingStep.keyOfSeed trainer.Settings.Seed KeyPurpose.CriticValueCheck trainer.Step

    try
        CriticValueCheck.check trainer.Settings key trainer.State
        printfn "%s (step %d): passes" runDir trainer.Step
    with :? Maac.DivergenceException as e ->
        printfn "%s: %s" runDir e.Message
