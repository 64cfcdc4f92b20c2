"""Benchmarks: few-shot MetaWorld end to end on a CPU (``python -m lerobot_pirl.bench``), the cost of
πRL's sampling (``python -m lerobot_pirl.bench.sampling``) and transport / learner throughput
(``python -m lerobot_pirl.bench.transport``). Measured tables: ``benchmarks/README.md``.

Modules: ``setups`` (tasks and their fixed settings), ``stages`` (demos, SFT, evaluation, πRL, each a
process), ``report`` (result rows, results file, plots), ``cli`` (the command line).
"""
