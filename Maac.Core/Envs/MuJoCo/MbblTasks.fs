namespace Maac.Envs.MuJoCo

open Maac.Tensors
open Maac.Envs

/// The MAAC authors' tasks: the versions of the Model-Based RL Benchmark (MBBL, Wang et al. 2019) under names
/// ending in "-MBBL". Observations are qpos without the x position (and y for Ant) followed by the unclipped qvel;
/// episodes last 1000 steps with no early termination; the reward is MBBL's function of the observation *before*
/// the step and the action:
///   r(s, a) = s[velocity] − height coefficient · (s[height] − target)² − control coefficient · ‖a‖² + alive bonus.
/// The physics are gym's (v1/v2) model files, which equal the Gymnasium v5 models here except Walker2d's right foot
/// friction (0.9 in gym's walker2d.xml, 1.9 in walker2d_v5.xml). Resets follow gym's: MBBL resets through gym.
module MbblTasks =
    [<Literal>]
    let Definition = "MBBL"

    /// MBBL's reward terms for one task.
    type Reward =
        {
            VelocityIndex: int
            /// The height's index, its target and coefficient, for the tasks with the term.
            Height: (int * float32 * float32) option
            Control: float32
            Alive: float32
        }

        /// The reward of one transition from the observation before the step.
        member r.Scalar (obs: float32[]) (a: float32[]) =
            let height =
                match r.Height with
                | Some(i, target, c) -> -float c * (float obs.[i] - float target) ** 2.0
                | None -> 0.0

            float obs.[r.VelocityIndex] + height - float r.Control * MuJoCoSpec.squaredNorm a + float r.Alive

        /// The same over batches: observations [N, o], actions [N, a] → [N].
        member r.Tensor (obs: Tensor) (a: Tensor) =
            let basic =
                Indicators.column r.VelocityIndex obs - r.Control * Tensor.sumAxis -1 false (a * a) + r.Alive

            match r.Height with
            | Some(i, target, c) ->
                let dz = Indicators.column i obs - target
                basic - c * dz * dz
            | None -> basic

    let private task name frameSkip reset skip (reward: Reward) model obs act =
        {
            Spec =
                {
                    Name = name + "-MBBL"
                    FrameSkip = frameSkip
                    Reset = reset
                    Observe = (fun sim -> sim.PositionsAndVelocities skip)
                    Track = MuJoCoSpec.trackNothing
                    ContactForces = false
                    Reward = (fun t -> reward.Scalar t.Observation t.Action)
                    Terminated = fun _ -> false
                }
            Functions = { Reward = Some(fun o a _ -> reward.Tensor o a); Termination = None }
            Model = model
            ObservationDim = obs
            ActionDim = act
            EpisodeSteps = 1000
            Definition = Definition
        }

    /// gym_cheetah: velocity s[8], control 0.1, no height term, no alive bonus.
    let halfCheetah =
        let reward = { VelocityIndex = 8; Height = None; Control = 0.1f; Alive = 0.0f }
        task "HalfCheetah" 5 (MuJoCoReset.UniformPositionsNormalVelocities 0.1) 1 reward ("half_cheetah.xml", []) 17 6

    /// gym_hopper: velocity s[5], height s[0] towards 1.3 with coefficient 3, control 0.1, alive 1.
    let hopper =
        let reward = { VelocityIndex = 5; Height = Some(0, 1.3f, 3.0f); Control = 0.1f; Alive = 1.0f }
        task "Hopper" 4 (MuJoCoReset.Uniform 0.005) 1 reward ("hopper.xml", []) 11 3

    /// gym_walker2d: velocity s[8], height s[0] towards 1.3 with coefficient 3, control 0.1, alive 1; gym's model,
    /// whose right foot has friction 0.9.
    let walker2d =
        let reward = { VelocityIndex = 8; Height = Some(0, 1.3f, 3.0f); Control = 0.1f; Alive = 1.0f }
        let model = "walker2d.xml", [ ModelFiles.SetAttribute("geom", "foot_geom", "friction", "0.9") ]
        task "Walker2d" 4 (MuJoCoReset.Uniform 0.005) 1 reward model 17 6

    /// gym_ant: velocity s[13], height s[0] towards 0.57 with coefficient 3, control 0.1, alive 1; observation
    /// qpos[2:] + qvel (27, no contact forces).
    let ant =
        let reward = { VelocityIndex = 13; Height = Some(0, 0.57f, 3.0f); Control = 0.1f; Alive = 1.0f }
        task "Ant" 5 (MuJoCoReset.UniformPositionsNormalVelocities 0.1) 2 reward ("ant.xml", []) 27 8

    /// Every MBBL task.
    let all = [ halfCheetah; hopper; walker2d; ant ]
