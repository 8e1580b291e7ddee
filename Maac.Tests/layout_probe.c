/* Prints each offset Maac's MuJoCo binding hard-codes (see Maac.Core/Envs/MuJoCoNative.fs, Layout.all) as the
   C expression and its value computed from the installed headers, one per line, in Layout.all's order. */
#include <stdio.h>
#include <stddef.h>
#include <mujoco/mujoco.h>

#define SHOW(expr) printf("%s %d\n", #expr, (int)(expr))

int main(void) {
  SHOW(offsetof(mjModel, nq)); SHOW(offsetof(mjModel, nv)); SHOW(offsetof(mjModel, nu));
  SHOW(offsetof(mjModel, nbody)); SHOW(offsetof(mjModel, njnt)); SHOW(offsetof(mjModel, ngeom));
  SHOW(offsetof(mjModel, nsite)); SHOW(offsetof(mjModel, nsensordata));
  SHOW(offsetof(mjModel, opt.timestep)); SHOW(offsetof(mjModel, opt.gravity));
  SHOW(offsetof(mjModel, opt.density)); SHOW(offsetof(mjModel, opt.viscosity));
  SHOW(offsetof(mjModel, opt.integrator)); SHOW(offsetof(mjModel, opt.solver));
  SHOW(offsetof(mjModel, opt.iterations)); SHOW(offsetof(mjModel, qpos0));
  SHOW(offsetof(mjModel, body_parentid)); SHOW(offsetof(mjModel, body_pos));
  SHOW(offsetof(mjModel, body_quat)); SHOW(offsetof(mjModel, body_ipos));
  SHOW(offsetof(mjModel, body_iquat)); SHOW(offsetof(mjModel, body_mass));
  SHOW(offsetof(mjModel, body_inertia)); SHOW(offsetof(mjModel, jnt_type));
  SHOW(offsetof(mjModel, jnt_qposadr)); SHOW(offsetof(mjModel, jnt_dofadr));
  SHOW(offsetof(mjModel, jnt_bodyid)); SHOW(offsetof(mjModel, jnt_limited));
  SHOW(offsetof(mjModel, jnt_pos)); SHOW(offsetof(mjModel, jnt_axis));
  SHOW(offsetof(mjModel, jnt_stiffness)); SHOW(offsetof(mjModel, jnt_range));
  SHOW(offsetof(mjModel, dof_armature)); SHOW(offsetof(mjModel, dof_damping));
  SHOW(offsetof(mjModel, geom_type)); SHOW(offsetof(mjModel, geom_contype));
  SHOW(offsetof(mjModel, geom_conaffinity)); SHOW(offsetof(mjModel, geom_condim));
  SHOW(offsetof(mjModel, geom_bodyid)); SHOW(offsetof(mjModel, geom_size));
  SHOW(offsetof(mjModel, geom_pos)); SHOW(offsetof(mjModel, geom_quat));
  SHOW(offsetof(mjModel, geom_friction)); SHOW(offsetof(mjModel, geom_margin));
  SHOW(offsetof(mjModel, actuator_trntype)); SHOW(offsetof(mjModel, actuator_trnid));
  SHOW(offsetof(mjModel, actuator_ctrllimited));
  SHOW(offsetof(mjModel, actuator_ctrlrange)); SHOW(offsetof(mjModel, actuator_gear));
  SHOW(offsetof(mjData, ncon)); SHOW(offsetof(mjData, time)); SHOW(offsetof(mjData, qpos));
  SHOW(offsetof(mjData, qvel)); SHOW(offsetof(mjData, ctrl)); SHOW(offsetof(mjData, sensordata));
  SHOW(offsetof(mjData, xpos)); SHOW(offsetof(mjData, xipos)); SHOW(offsetof(mjData, site_xpos));
  SHOW(offsetof(mjData, subtree_com)); SHOW(offsetof(mjData, cinert)); SHOW(offsetof(mjData, cvel));
  SHOW(offsetof(mjData, qfrc_actuator)); SHOW(offsetof(mjData, qfrc_constraint));
  SHOW(offsetof(mjData, cfrc_ext));
  SHOW(offsetof(mjData, warning) + mjWARN_BADQACC * sizeof(mjWarningStat) + offsetof(mjWarningStat, number));
  SHOW(mjVERSION_HEADER);
  SHOW(offsetof(mjModel, na)); SHOW(offsetof(mjModel, nmocap)); SHOW(offsetof(mjModel, nuserdata));
  SHOW(offsetof(mjData, act)); SHOW(offsetof(mjData, qacc_warmstart)); SHOW(offsetof(mjData, qfrc_applied));
  SHOW(offsetof(mjData, xfrc_applied)); SHOW(offsetof(mjData, mocap_pos)); SHOW(offsetof(mjData, mocap_quat));
  SHOW(offsetof(mjData, userdata));
  return 0;
}
