/* Prints the offsets Maac's MuJoCo binding hard-codes (see Maac.Core/Envs/MuJoCoNative.fs, module Layout),
   computed from the installed headers, in the order the test compares them. */
#include <stdio.h>
#include <stddef.h>
#include <mujoco/mujoco.h>

int main(void) {
  printf("%zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %d\n",
    offsetof(mjModel, nq), offsetof(mjModel, nv), offsetof(mjModel, nu), offsetof(mjModel, nbody),
    offsetof(mjModel, opt.timestep), offsetof(mjModel, qpos0), offsetof(mjModel, actuator_ctrlrange),
    offsetof(mjData, time), offsetof(mjData, qpos), offsetof(mjData, qvel), offsetof(mjData, ctrl),
    offsetof(mjData, warning) + mjWARN_BADQACC * sizeof(mjWarningStat) + offsetof(mjWarningStat, number),
    mjVERSION_HEADER);
  return 0;
}
