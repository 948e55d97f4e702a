"""The photometric optimisation: the coarse-to-fine rounds, one round's solver, the batch loss and checkpoints.

* :mod:`.rounds` -- runs the schedule (:func:`~.rounds.run_rounds`), the flow step before the first height
  round, checkpoints and resume.
* :mod:`.solver` -- one round: batches, Adam steps, rollback on divergence (:func:`~.solver.solve_round`).
* :mod:`.batching` -- a round's images and the running-average reconstruction (paper Eq. 12).
* :mod:`.loss` -- a batch's stitching loss (Eqs. 10-12).
* :mod:`.optimizer` -- parameter groups -> Adam.
* :mod:`.checkpoint` -- resumable checkpoint files.
"""
